//! Virtual uplinks on one wire (`split IFACE N`, `unsplit IFACE`).
//!
//! On a network that gives every device its own address (DHCP per MAC address) and caps
//! each address on its own, one cable can carry several addresses: one macvlan interface
//! per address, each with its own locally administered MAC address. `split` keeps exactly
//! N such NetworkManager connections on IFACE; to the balancer they are ordinary uplinks.
//!
//! The connections we create carry a marker in NetworkManager's `user` setting
//! ([`MARKER_PARENT`], [`MARKER_INDEX`]), which nmcli cannot edit: only connections with
//! the marker are ever changed or deleted. Planning the difference is the pure function
//! [`plan`]; the rest of the module talks to NetworkManager's settings over D-Bus.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use tracing::{debug, info, warn};
use zbus::zvariant::{DynamicType, ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::error::{Error, Result};
use crate::nm::NetworkManager;

/// At most this many virtual uplinks per interface. Each one is another MAC address in
/// the NIC's unicast filter (many NICs hold 8 to 16 exactly before falling back to
/// promiscuous mode), another lease taken from a shared DHCP pool, another uplink id (31
/// with the default mark mask) and another probe for the daemon; the dormitory setups
/// this comes from use 4 to 6.
pub const MAX_VIRTUAL_UPLINKS: u32 = 8;

/// `user.data` key naming the parent interface of a connection `split` created.
pub const MARKER_PARENT: &str = "nm-multiwan.split-parent";
/// `user.data` key holding the virtual uplink's number (1, 2, ...) on its parent.
pub const MARKER_INDEX: &str = "nm-multiwan.split-index";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// How long one D-Bus call to NetworkManager may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long new virtual uplinks may take to activate (NetworkManager's DHCP timeout is
/// 45 s; a healthy network answers in well under a second).
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(45);
/// How long NetworkManager may take to remove a deleted connection's interface.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(10);

const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const NM_IFACE: &str = "org.freedesktop.NetworkManager";
const SETTINGS_PATH: &str = "/org/freedesktop/NetworkManager/Settings";
const SETTINGS_IFACE: &str = "org.freedesktop.NetworkManager.Settings";
const CONNECTION_IFACE: &str = "org.freedesktop.NetworkManager.Settings.Connection";
const DEVICE_IFACE: &str = "org.freedesktop.NetworkManager.Device";
const ACTIVE_IFACE: &str = "org.freedesktop.NetworkManager.Connection.Active";
const IP4CONFIG_IFACE: &str = "org.freedesktop.NetworkManager.IP4Config";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

/// `NM_SETTINGS_ADD_CONNECTION2_FLAG_TO_DISK`: the profile survives a reboot.
const ADD_TO_DISK: u32 = 0x1;
/// `NM_SETTINGS_ADD_CONNECTION2_FLAG_BLOCK_AUTOCONNECT`: we activate it ourselves, so
/// autoconnect must not race us for it; activating it unblocks it.
const ADD_BLOCK_AUTOCONNECT: u32 = 0x20;
/// `NM_ACTIVE_CONNECTION_STATE_ACTIVATED`.
const ACTIVE_STATE_ACTIVATED: u32 = 2;
/// `NM_DEVICE_STATE_UNMANAGED`.
const DEVICE_STATE_UNMANAGED: u32 = 10;
/// `macvlan.mode` bridge: the usual mode; the virtual uplinks may reach each other.
const MACVLAN_MODE_BRIDGE: u32 = 2;

/// `NMDeviceType` values we tell apart.
mod device_type {
    pub const ETHERNET: u32 = 1;
    pub const WIFI: u32 = 2;
    pub const MACVLAN: u32 = 18;
    pub const VETH: u32 = 20;
}

/// A connection `split` created earlier (it carries our marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The connection's D-Bus object path.
    pub path: String,
    pub uuid: String,
    /// Connection id (name).
    pub id: String,
    /// Interface name (`connection.interface-name`).
    pub iface: String,
    /// Its number on the parent, from the marker; `None` when unreadable.
    pub index: Option<u32>,
    /// Its MAC address (`ethernet.cloned-mac-address`), if set.
    pub mac: Option<String>,
}

/// What `split IFACE N` changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SplitPlan {
    /// Marked connections that stay.
    pub keep: Vec<Existing>,
    /// Marked connections to deactivate and delete.
    pub delete: Vec<Existing>,
    /// Numbers of the virtual uplinks to create.
    pub create: Vec<u32>,
}

/// The difference between the marked connections of one parent and `count` of them.
/// Pure. The existing ones with the lowest numbers stay (so that a smaller N removes the
/// last ones and a larger N keeps every address in use); duplicates and unnumbered ones
/// go first; new ones take the lowest free numbers.
pub fn plan(mut existing: Vec<Existing>, count: u32) -> SplitPlan {
    existing.sort_by(|a, b| {
        (a.index.is_none(), a.index, &a.uuid).cmp(&(b.index.is_none(), b.index, &b.uuid))
    });
    let mut seen = BTreeSet::new();
    let (mut keep, mut delete) = (Vec::new(), Vec::new());
    for e in existing {
        let fresh = e.index.is_some_and(|i| i >= 1 && seen.insert(i));
        if fresh && keep.len() < count as usize {
            keep.push(e);
        } else {
            delete.push(e);
        }
    }
    let used: BTreeSet<u32> = keep.iter().filter_map(|e| e.index).collect();
    let missing = (count as usize).saturating_sub(keep.len());
    let create = (1..).filter(|i| !used.contains(i)).take(missing).collect();
    SplitPlan {
        keep,
        delete,
        create,
    }
}

/// Interface (and connection) name of virtual uplink `index` on `parent`: `eth0-v1`, ...
/// A parent name too long for the suffix is shortened (interface names have at most 15
/// characters).
pub fn virtual_iface(parent: &str, index: u32) -> String {
    let suffix = format!("-v{index}");
    let room = IFNAME_MAX.saturating_sub(suffix.len());
    let stem: String = parent.chars().take(room).collect();
    format!("{stem}{suffix}")
}

/// A locally administered unicast MAC address from six random bytes: the first octet's
/// bit 1 set (locally administered), bit 0 clear (unicast).
pub fn local_mac(mut bytes: [u8; 6]) -> [u8; 6] {
    bytes[0] = (bytes[0] | 0x02) & !0x01;
    bytes
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A version 4 UUID from 16 random bytes.
fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("reading /dev/urandom for a MAC address", e))?;
    Ok(b)
}

/// What NetworkManager tells about the interface to split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentDevice {
    pub iface: String,
    /// `NMDeviceType`.
    pub device_type: u32,
    pub managed: bool,
    pub state: u32,
}

/// Why `parent` cannot carry virtual uplinks, if it cannot. Pure.
pub fn refusal(parent: &ParentDevice) -> Option<String> {
    let iface = &parent.iface;
    if !parent.managed || parent.state == DEVICE_STATE_UNMANAGED {
        return Some(format!(
            "{iface} is not managed by NetworkManager: virtual uplinks are NetworkManager \
             connections on a device it manages (`nmcli device set {iface} managed yes`)"
        ));
    }
    match parent.device_type {
        // A veth's peer is the wire in containers and test networks.
        device_type::ETHERNET | device_type::VETH => None,
        device_type::WIFI => Some(format!(
            "{iface} is a Wi-Fi interface: in client mode most Wi-Fi drivers cannot send \
             from more than the one MAC address the access point associated, so virtual \
             uplinks cannot work on it; split a wired interface instead"
        )),
        device_type::MACVLAN => Some(format!(
            "{iface} is itself a virtual interface (macvlan); split the interface it sits on"
        )),
        other => Some(format!(
            "{iface} is a {} device, not a wired Ethernet port: virtual uplinks go on the \
             interface the cable is plugged into",
            type_name(other)
        )),
    }
}

fn type_name(device_type: u32) -> String {
    match device_type {
        5 => "Bluetooth".into(),
        8 => "modem".into(),
        9 => "InfiniBand".into(),
        10 => "bond (virtual)".into(),
        11 => "VLAN (virtual)".into(),
        13 => "bridge (virtual)".into(),
        14 => "generic".into(),
        15 => "team (virtual)".into(),
        16 => "tun/tap (virtual)".into(),
        17 => "IP tunnel (virtual)".into(),
        19 => "VXLAN (virtual)".into(),
        22 => "dummy (virtual)".into(),
        23 => "PPP".into(),
        29 => "WireGuard (virtual)".into(),
        32 => "loopback".into(),
        n => format!("type {n} (NMDeviceType)"),
    }
}

/// `ipv6.method` of a virtual uplink, following its parent's connection: the same way of
/// getting IPv6 from the network, or none. A static parent cannot be copied; the network
/// may still advertise a prefix.
pub fn ipv6_method(parent_method: Option<&str>) -> &'static str {
    match parent_method {
        Some("disabled") => "disabled",
        Some("ignore") => "ignore",
        Some("link-local") => "link-local",
        Some("dhcp") => "dhcp",
        _ => "auto",
    }
}

/// A virtual uplink to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUplink {
    pub parent: String,
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub mac: String,
    pub autoconnect: bool,
    pub ipv6_method: &'static str,
}

/// The connection settings (`a{sa{sv}}`) of a new virtual uplink.
fn settings(u: &NewUplink) -> HashMap<&'static str, HashMap<&'static str, Value<'static>>> {
    let marker: HashMap<String, String> = HashMap::from([
        (MARKER_PARENT.to_string(), u.parent.clone()),
        (MARKER_INDEX.to_string(), u.index.to_string()),
    ]);
    HashMap::from([
        (
            "connection",
            HashMap::from([
                ("id", Value::from(u.name.clone())),
                ("uuid", Value::from(u.uuid.clone())),
                ("type", Value::from("macvlan")),
                ("interface-name", Value::from(u.name.clone())),
                ("autoconnect", Value::from(u.autoconnect)),
            ]),
        ),
        (
            "macvlan",
            HashMap::from([
                ("parent", Value::from(u.parent.clone())),
                ("mode", Value::from(MACVLAN_MODE_BRIDGE)),
            ]),
        ),
        (
            "802-3-ethernet",
            HashMap::from([("assigned-mac-address", Value::from(u.mac.clone()))]),
        ),
        (
            "ipv4",
            HashMap::from([
                ("method", Value::from("auto")),
                // The address is the point: activation waits for it.
                ("may-fail", Value::from(false)),
                // The network must see each virtual uplink as a device of its own, whatever
                // the machine's default client id.
                ("dhcp-client-id", Value::from("mac")),
            ]),
        ),
        (
            "ipv6",
            if u.ipv6_method == "disabled" || u.ipv6_method == "ignore" {
                HashMap::from([("method", Value::from(u.ipv6_method))])
            } else {
                HashMap::from([
                    ("method", Value::from(u.ipv6_method)),
                    // A DUID from the link-layer address, not the machine-wide one.
                    ("dhcp-duid", Value::from("ll")),
                ])
            },
        ),
        ("user", HashMap::from([("data", Value::from(marker))])),
    ])
}

/// One virtual uplink after `split`, as printed and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualUplink {
    pub name: String,
    pub mac: Option<String>,
    /// IPv4 address/prefix when activated.
    pub address: Option<String>,
    pub activated: bool,
    /// What this run did: created, activated, kept.
    pub change: &'static str,
}

/// What `split` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SplitReport {
    pub parent: String,
    pub uplinks: Vec<VirtualUplink>,
    pub removed: Vec<String>,
}

/// One line per virtual uplink (and per removed one), aligned.
pub fn render(r: &SplitReport) -> String {
    let mut rows: Vec<[String; 4]> = r
        .uplinks
        .iter()
        .map(|u| {
            let state = if u.activated {
                "activated"
            } else {
                "NOT ACTIVATED"
            };
            [
                u.name.clone(),
                u.mac.clone().unwrap_or_else(|| "-".into()),
                u.address.clone().unwrap_or_else(|| "-".into()),
                match u.change {
                    "kept" => state.to_string(),
                    change => format!("{state} ({change})"),
                },
            ]
        })
        .collect();
    rows.extend(
        r.removed
            .iter()
            .map(|n| [n.clone(), "-".into(), "-".into(), "removed".into()]),
    );
    if rows.is_empty() {
        return format!("{}: no virtual uplinks", r.parent);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The interface a stacked interface (macvlan, VLAN, ...) sits on, from sysfs: its one
/// `lower_*` link, unless that is a port of it (a bridge or bond lists its ports so).
pub fn parent_of(iface: &str) -> Option<String> {
    parent_in(Path::new("/sys/class/net"), iface)
}

fn parent_in(class_net: &Path, iface: &str) -> Option<String> {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    let dir = class_net.join(iface);
    let lowers: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("lower_").map(str::to_string))
        .collect();
    match lowers.as_slice() {
        [lower] if !dir.join(format!("lower_{lower}")).join("master").exists() => {
            Some(lower.clone())
        }
        _ => None,
    }
}

// --- NetworkManager over D-Bus --------------------------------------------------------

/// The properties of one D-Bus object.
type Props = HashMap<String, OwnedValue>;
/// A connection's settings, `a{sa{sv}}`.
type Settings = HashMap<String, HashMap<String, OwnedValue>>;

/// A settings profile, as far as `split` cares.
#[derive(Debug, Clone)]
struct Profile {
    path: OwnedObjectPath,
    uuid: String,
    id: String,
    kind: String,
    iface: Option<String>,
    user_data: HashMap<String, String>,
    mac: Option<String>,
}

impl Profile {
    fn from_settings(path: OwnedObjectPath, s: &Settings) -> Profile {
        let get = |setting: &str, key: &str| s.get(setting).and_then(|m| m.get(key));
        let string = |setting: &str, key: &str| {
            get(setting, key).and_then(|v| v.downcast_ref::<&str>().ok().map(str::to_string))
        };
        let user_data = get("user", "data")
            .and_then(|v| HashMap::<String, String>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        // NetworkManager reads it back in capitals.
        let mac = string("802-3-ethernet", "assigned-mac-address")
            .map(|m| m.to_ascii_lowercase())
            .or_else(|| {
                get("802-3-ethernet", "cloned-mac-address")
                    .and_then(|v| Vec::<u8>::try_from(v.try_clone().ok()?).ok())
                    .filter(|b| b.len() == 6)
                    .map(|b| format_mac(&b.try_into().expect("six bytes")))
            });
        Profile {
            path,
            uuid: string("connection", "uuid").unwrap_or_default(),
            id: string("connection", "id").unwrap_or_default(),
            kind: string("connection", "type").unwrap_or_default(),
            iface: string("connection", "interface-name"),
            user_data,
            mac,
        }
    }

    /// The parent named by our marker, if the profile carries it.
    fn marked_parent(&self) -> Option<&str> {
        self.user_data.get(MARKER_PARENT).map(String::as_str)
    }

    fn existing(&self) -> Existing {
        Existing {
            path: self.path.to_string(),
            uuid: self.uuid.clone(),
            id: self.id.clone(),
            iface: self.iface.clone().unwrap_or_default(),
            index: self
                .user_data
                .get(MARKER_INDEX)
                .and_then(|i| i.parse().ok()),
            mac: self.mac.clone(),
        }
    }
}

struct Bus {
    conn: zbus::Connection,
}

fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

fn is_vanished(e: &zbus::Error) -> bool {
    matches!(
        error_name(e),
        Some(
            "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownInterface"
        )
    )
}

/// A failed call: NetworkManager gone or silent is "unreachable" (exit 3); a refusal
/// from a running NetworkManager is a failure (exit 1).
fn call_error(what: &str, e: zbus::Error) -> Error {
    match error_name(&e) {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner") => Error::NetworkManager(format!(
            "NetworkManager is not running: nobody owns {NM_BUS_NAME} on the system bus \
             ({what}: {e}); start NetworkManager"
        )),
        Some(_) => Error::Other(format!("NetworkManager refused {what}: {e}")),
        None => Error::NetworkManager(format!(
            "{what}: {e}; is NetworkManager running and are we allowed to talk to it?"
        )),
    }
}

impl Bus {
    /// One method call, given [`CALL_TIMEOUT`] to answer.
    async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> std::result::Result<zbus::Message, CallFailed>
    where
        B: serde::Serialize + DynamicType,
    {
        let call = self
            .conn
            .call_method(Some(NM_BUS_NAME), path, Some(interface), method, body);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(CallFailed::Error(e)),
            Err(_) => Err(CallFailed::Timeout),
        }
    }

    /// Like `call`, with a failure turned into our error naming `what`.
    async fn call_ok<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message>
    where
        B: serde::Serialize + DynamicType,
    {
        let what = format!("{interface}.{method} on {path}");
        self.call(path, interface, method, body)
            .await
            .map_err(|f| f.into_error(&what))
    }

    async fn get_all(&self, path: &str, interface: &str) -> Result<Option<Props>> {
        match self
            .call(path, PROPERTIES_IFACE, "GetAll", &(interface,))
            .await
        {
            Ok(reply) => decode(&reply, &format!("{interface} properties of {path}")).map(Some),
            Err(CallFailed::Error(e)) if is_vanished(&e) => Ok(None),
            Err(f) => Err(f.into_error(&format!("reading {interface} properties of {path}"))),
        }
    }

    /// Every settings profile (connections that vanish while we read are left out).
    async fn profiles(&self) -> Result<Vec<Profile>> {
        let reply = self
            .call_ok(SETTINGS_PATH, SETTINGS_IFACE, "ListConnections", &())
            .await?;
        let paths: Vec<OwnedObjectPath> = decode(&reply, "ListConnections")?;
        let reads = paths.into_iter().map(|path| async move {
            let r = self
                .call(path.as_str(), CONNECTION_IFACE, "GetSettings", &())
                .await;
            (path, r)
        });
        let mut profiles = Vec::new();
        for (path, r) in join_all(reads).await {
            match r {
                Ok(reply) => {
                    let s: Settings = decode(&reply, &format!("GetSettings of {path}"))?;
                    profiles.push(Profile::from_settings(path, &s));
                }
                Err(CallFailed::Error(e)) if is_vanished(&e) => {
                    debug!(connection = %path, "connection vanished while reading it")
                }
                Err(f) => return Err(f.into_error(&format!("GetSettings on {path}"))),
            }
        }
        Ok(profiles)
    }

    async fn settings_of(&self, path: &str) -> Result<Option<Settings>> {
        match self.call(path, CONNECTION_IFACE, "GetSettings", &()).await {
            Ok(reply) => decode(&reply, &format!("GetSettings of {path}")).map(Some),
            Err(CallFailed::Error(e)) if is_vanished(&e) => Ok(None),
            Err(f) => Err(f.into_error(&format!("GetSettings on {path}"))),
        }
    }

    /// The device NetworkManager knows under this interface name, if any.
    async fn device(&self, iface: &str) -> Result<Option<(OwnedObjectPath, Props)>> {
        let path: OwnedObjectPath = match self
            .call(NM_PATH, NM_IFACE, "GetDeviceByIpIface", &(iface,))
            .await
        {
            Ok(reply) => decode(&reply, "GetDeviceByIpIface")?,
            Err(CallFailed::Error(e))
                if error_name(&e) == Some("org.freedesktop.NetworkManager.UnknownDevice") =>
            {
                return Ok(None);
            }
            Err(f) => return Err(f.into_error(&format!("GetDeviceByIpIface({iface})"))),
        };
        Ok(self
            .get_all(path.as_str(), DEVICE_IFACE)
            .await?
            .map(|p| (path, p)))
    }

    /// Interface names of every device NetworkManager knows.
    async fn device_names(&self) -> Result<BTreeSet<String>> {
        let reply = self
            .call_ok(NM_PATH, NM_IFACE, "GetAllDevices", &())
            .await?;
        let paths: Vec<OwnedObjectPath> = decode(&reply, "GetAllDevices")?;
        let reads = paths.iter().map(|p| self.get_all(p.as_str(), DEVICE_IFACE));
        let mut names = BTreeSet::new();
        for props in join_all(reads).await {
            if let Some(name) = props?.as_ref().and_then(|p| str_prop(p, "Interface")) {
                names.insert(name.to_string());
            }
        }
        Ok(names)
    }

    /// Active connections by the settings profile they activate: (active path, state).
    async fn active_by_profile(&self) -> Result<BTreeMap<String, (OwnedObjectPath, u32)>> {
        let Some(nm) = self.get_all(NM_PATH, NM_IFACE).await? else {
            return Err(Error::NetworkManager(format!(
                "NetworkManager exports no {NM_PATH}"
            )));
        };
        let actives: Vec<OwnedObjectPath> = nm
            .get("ActiveConnections")
            .and_then(|v| Vec::<OwnedObjectPath>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        let reads = actives
            .iter()
            .map(|a| async move { (a, self.get_all(a.as_str(), ACTIVE_IFACE).await) });
        let mut by_profile = BTreeMap::new();
        for (active, props) in join_all(reads).await {
            let Some(props) = props? else { continue };
            if let (Some(profile), Some(state)) =
                (object_prop(&props, "Connection"), u32_prop(&props, "State"))
            {
                by_profile.insert(profile.to_string(), (active.clone(), state));
            }
        }
        Ok(by_profile)
    }

    /// The first IPv4 address/prefix of an active connection.
    async fn ipv4_of(&self, active: &str) -> Result<Option<String>> {
        let Some(props) = self.get_all(active, ACTIVE_IFACE).await? else {
            return Ok(None);
        };
        let Some(ip4) = object_prop(&props, "Ip4Config") else {
            return Ok(None);
        };
        let Some(config) = self.get_all(ip4.as_str(), IP4CONFIG_IFACE).await? else {
            return Ok(None);
        };
        let first = config
            .get("AddressData")
            .and_then(|v| Vec::<Props>::try_from(v.try_clone().ok()?).ok())
            .and_then(|a| a.into_iter().next());
        Ok(first.and_then(|a| {
            Some(format!(
                "{}/{}",
                str_prop(&a, "address")?,
                u32_prop(&a, "prefix")?
            ))
        }))
    }
}

enum CallFailed {
    Error(zbus::Error),
    Timeout,
}

impl CallFailed {
    fn into_error(self, what: &str) -> Error {
        match self {
            CallFailed::Error(e) => call_error(what, e),
            CallFailed::Timeout => Error::NetworkManager(format!(
                "NetworkManager did not answer {what} within {} s",
                CALL_TIMEOUT.as_secs()
            )),
        }
    }
}

fn decode<T>(reply: &zbus::Message, what: &str) -> Result<T>
where
    T: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    reply
        .body()
        .deserialize::<T>()
        .map_err(|e| Error::NetworkManager(format!("unexpected reply to {what}: {e}")))
}

fn str_prop<'a>(props: &'a Props, name: &str) -> Option<&'a str> {
    props.get(name)?.downcast_ref::<&str>().ok()
}

fn u32_prop(props: &Props, name: &str) -> Option<u32> {
    props.get(name)?.downcast_ref::<u32>().ok()
}

fn bool_prop(props: &Props, name: &str) -> Option<bool> {
    props.get(name)?.downcast_ref::<bool>().ok()
}

/// An object path property, `None` when unset ("/").
fn object_prop(props: &Props, name: &str) -> Option<OwnedObjectPath> {
    let path = props.get(name)?.downcast_ref::<ObjectPath>().ok()?;
    (path.as_str() != "/").then(|| path.into())
}

fn refused(msg: String) -> Error {
    Error::Refused(msg)
}

/// Checks what can be checked without NetworkManager: root, the count, the name.
fn check_request(iface: &str, count: u32) -> Result<()> {
    if iface.is_empty()
        || iface.len() > IFNAME_MAX
        || iface.contains(['/', ':'])
        || iface.chars().any(char::is_whitespace)
    {
        return Err(refused(format!(
            "'{iface}' is not an interface name (1 to {IFNAME_MAX} characters, no '/', ':' \
             or blanks)"
        )));
    }
    if count > MAX_VIRTUAL_UPLINKS {
        return Err(refused(format!(
            "{count} virtual uplinks on {iface}: at most {MAX_VIRTUAL_UPLINKS} (each is one \
             more MAC address for the NIC's filter and one more lease from the network's \
             pool; see the README)"
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(refused(
            "changing NetworkManager connections needs root: run it with sudo".into(),
        ));
    }
    Ok(())
}

/// `split IFACE COUNT`: keep exactly `count` virtual uplinks on `iface`, bring them up,
/// and report them. `count == 0` removes every one `split` created there.
pub async fn split(iface: &str, count: u32) -> Result<SplitReport> {
    check_request(iface, count)?;
    let conn = NetworkManager::connect().await?.connection().clone();
    let bus = Bus { conn };
    let profiles = bus.profiles().await?;
    let ours: Vec<Existing> = profiles
        .iter()
        .filter(|p| p.kind == "macvlan" && p.marked_parent() == Some(iface))
        .map(Profile::existing)
        .collect();
    let plan = plan(ours, count);
    debug!(?plan, "split plan");

    // Everything that could refuse the request is checked before anything changes.
    let mut new_uplinks = Vec::new();
    if count > 0 {
        if let Some(p) = profiles
            .iter()
            .find(|p| p.marked_parent().is_some() && p.iface.as_deref() == Some(iface))
        {
            return Err(refused(format!(
                "{iface} is itself a virtual uplink (on {}); split that interface instead",
                p.marked_parent().unwrap_or("?")
            )));
        }
        let Some((device_path, device)) = bus.device(iface).await? else {
            return Err(refused(format!(
                "NetworkManager has no device {iface} (see `nmcli device`)"
            )));
        };
        let parent = ParentDevice {
            iface: iface.to_string(),
            device_type: u32_prop(&device, "DeviceType").unwrap_or(0),
            managed: bool_prop(&device, "Managed").unwrap_or(false),
            state: u32_prop(&device, "State").unwrap_or(0),
        };
        if let Some(why) = refusal(&parent) {
            return Err(refused(why));
        }
        if !plan.create.is_empty() {
            let (autoconnect, v6) = parent_settings(&bus, iface, &device_path, &device).await?;
            check_names(&bus, &profiles, &plan, iface).await?;
            let mut macs: BTreeSet<String> =
                plan.keep.iter().filter_map(|e| e.mac.clone()).collect();
            for &index in &plan.create {
                let mac = loop {
                    let mac = format_mac(&local_mac(random_bytes()?));
                    if macs.insert(mac.clone()) {
                        break mac;
                    }
                };
                new_uplinks.push(NewUplink {
                    parent: iface.to_string(),
                    index,
                    name: virtual_iface(iface, index),
                    uuid: uuid_v4(random_bytes()?),
                    mac,
                    autoconnect,
                    ipv6_method: ipv6_method(v6.as_deref()),
                });
            }
        }
    }

    let mut report = SplitReport {
        parent: iface.to_string(),
        ..Default::default()
    };
    for e in &plan.delete {
        bus.call_ok(&e.path, CONNECTION_IFACE, "Delete", &())
            .await?;
        info!(
            connection = e.id,
            uuid = e.uuid,
            parent = iface,
            "virtual uplink deleted"
        );
        report.removed.push(e.id.clone());
    }
    // NetworkManager removes the interface of a deleted software connection on its own.
    let deadline = Instant::now() + REMOVAL_TIMEOUT;
    for e in &plan.delete {
        while !e.iface.is_empty() && Path::new("/sys/class/net").join(&e.iface).exists() {
            if Instant::now() > deadline {
                warn!(
                    iface = e.iface,
                    "interface still there after its connection was deleted"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut created: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for u in &new_uplinks {
        let reply = bus
            .call_ok(
                SETTINGS_PATH,
                SETTINGS_IFACE,
                "AddConnection2",
                &(
                    settings(u),
                    ADD_TO_DISK | ADD_BLOCK_AUTOCONNECT,
                    HashMap::<&str, Value>::new(),
                ),
            )
            .await?;
        let (path, _): (OwnedObjectPath, HashMap<String, OwnedValue>) =
            decode(&reply, "AddConnection2")?;
        info!(
            connection = u.name,
            mac = u.mac,
            parent = iface,
            "virtual uplink created"
        );
        created.insert(path.to_string(), (u.name.clone(), Some(u.mac.clone())));
    }

    if count == 0 {
        return Ok(report);
    }
    // Bring up every one of ours that is not active: the new ones and any taken down.
    let mut wanted: Vec<(String, String, Option<String>, &'static str)> = plan
        .keep
        .iter()
        .map(|e| (e.path.clone(), e.id.clone(), e.mac.clone(), "kept"))
        .collect();
    wanted.extend(
        created
            .into_iter()
            .map(|(path, (name, mac))| (path, name, mac, "created")),
    );
    let active = bus.active_by_profile().await?;
    let mut pending: BTreeMap<String, OwnedObjectPath> = BTreeMap::new();
    let mut changes: BTreeMap<String, &'static str> = BTreeMap::new();
    for (path, _, _, change) in &wanted {
        if let Some((a, _)) = active.get(path) {
            pending.insert(path.clone(), a.clone());
            continue;
        }
        let reply = bus
            .call_ok(
                NM_PATH,
                NM_IFACE,
                "ActivateConnection",
                &(
                    ObjectPath::try_from(path.as_str())
                        .map_err(|e| Error::Other(format!("bad connection path {path}: {e}")))?,
                    ObjectPath::from_static_str_unchecked("/"),
                    ObjectPath::from_static_str_unchecked("/"),
                ),
            )
            .await?;
        let a: OwnedObjectPath = decode(&reply, "ActivateConnection")?;
        pending.insert(path.clone(), a);
        if *change == "kept" {
            changes.insert(path.clone(), "activated");
        }
    }
    let activated = wait_activated(&bus, &pending).await?;
    let mut failed = Vec::new();
    for (path, name, mac, change) in wanted {
        let is_up = activated.contains(&path);
        let address = match pending.get(&path) {
            Some(a) if is_up => bus.ipv4_of(a.as_str()).await?,
            _ => None,
        };
        if !is_up {
            failed.push(name.clone());
        }
        report.uplinks.push(VirtualUplink {
            name,
            mac,
            address,
            activated: is_up,
            change: changes.get(&path).copied().unwrap_or(change),
        });
    }
    report.uplinks.sort_by(|a, b| a.name.cmp(&b.name));
    if !failed.is_empty() {
        return Err(Error::Other(format!(
            "{}\nnot activated within {} s: {} (no DHCP answer on {iface}'s network? the \
             connections stay and NetworkManager keeps trying; `nm-multiwan unsplit {iface}` \
             removes them)",
            render(&report),
            ACTIVATION_TIMEOUT.as_secs(),
            failed.join(", ")
        )));
    }
    Ok(report)
}

/// The parent's connection settings the virtual uplinks follow: autoconnect and the
/// IPv6 method. The parent must have an active connection.
async fn parent_settings(
    bus: &Bus,
    iface: &str,
    device_path: &OwnedObjectPath,
    device: &Props,
) -> Result<(bool, Option<String>)> {
    let no_connection = || {
        refused(format!(
            "{iface} has no active connection: bring it up first (`nmcli device connect \
             {iface}`), so that its virtual uplinks can follow its settings"
        ))
    };
    let active = object_prop(device, "ActiveConnection").ok_or_else(no_connection)?;
    let props = bus
        .get_all(active.as_str(), ACTIVE_IFACE)
        .await?
        .ok_or_else(no_connection)?;
    let profile = object_prop(&props, "Connection").ok_or_else(no_connection)?;
    let settings = bus
        .settings_of(profile.as_str())
        .await?
        .ok_or_else(no_connection)?;
    let get = |setting: &str, key: &str| settings.get(setting).and_then(|m| m.get(key));
    let autoconnect = get("connection", "autoconnect")
        .and_then(|v| v.downcast_ref::<bool>().ok())
        .unwrap_or(true);
    let v6 = get("ipv6", "method")
        .and_then(|v| v.downcast_ref::<&str>().ok())
        .map(str::to_string);
    debug!(device = %device_path, autoconnect, ipv6_method = ?v6, "parent connection");
    Ok((autoconnect, v6))
}

/// Refuses names already taken by a connection or device that is not ours.
async fn check_names(bus: &Bus, profiles: &[Profile], plan: &SplitPlan, iface: &str) -> Result<()> {
    let ours: BTreeSet<&str> = plan
        .keep
        .iter()
        .chain(&plan.delete)
        .flat_map(|e| [e.iface.as_str(), e.id.as_str()])
        .collect();
    let devices = bus.device_names().await?;
    for &index in &plan.create {
        let name = virtual_iface(iface, index);
        if let Some(p) = profiles.iter().find(|p| {
            p.marked_parent() != Some(iface)
                && (p.id == name || p.iface.as_deref() == Some(name.as_str()))
        }) {
            return Err(refused(format!(
                "the name {name} is taken by connection '{}' ({}), which nm-multiwan did not \
                 create for {iface}; rename or delete it first",
                p.id, p.uuid
            )));
        }
        if devices.contains(&name) && !ours.contains(name.as_str()) {
            return Err(refused(format!(
                "an interface named {name} exists already (not a virtual uplink of {iface}); \
                 remove or rename it first"
            )));
        }
    }
    Ok(())
}

/// Waits until every pending activation is done; returns the profiles activated.
async fn wait_activated(
    bus: &Bus,
    pending: &BTreeMap<String, OwnedObjectPath>,
) -> Result<BTreeSet<String>> {
    let deadline = Instant::now() + ACTIVATION_TIMEOUT;
    let mut done = BTreeSet::new();
    loop {
        for (profile, active) in pending {
            if done.contains(profile) {
                continue;
            }
            let state = bus
                .get_all(active.as_str(), ACTIVE_IFACE)
                .await?
                .and_then(|p| u32_prop(&p, "State"));
            if state == Some(ACTIVE_STATE_ACTIVATED) {
                done.insert(profile.clone());
            }
        }
        if done.len() == pending.len() || Instant::now() > deadline {
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(index: Option<u32>, uuid: &str) -> Existing {
        Existing {
            path: format!("/org/freedesktop/NetworkManager/Settings/{uuid}"),
            uuid: uuid.into(),
            id: index.map_or("odd".into(), |i| virtual_iface("eth0", i)),
            iface: index.map_or("odd".into(), |i| virtual_iface("eth0", i)),
            index,
            mac: None,
        }
    }

    fn indices(v: &[Existing]) -> Vec<Option<u32>> {
        v.iter().map(|e| e.index).collect()
    }

    #[test]
    fn plan_from_nothing_creates_one_to_n() {
        let p = plan(vec![], 3);
        assert_eq!(p.create, vec![1, 2, 3]);
        assert!(p.keep.is_empty() && p.delete.is_empty());
        assert_eq!(plan(vec![], 0), SplitPlan::default());
    }

    #[test]
    fn plan_is_idempotent_and_adds_or_removes_the_difference() {
        let three = vec![ex(Some(2), "b"), ex(Some(1), "a"), ex(Some(3), "c")];
        let same = plan(three.clone(), 3);
        assert!(same.create.is_empty() && same.delete.is_empty());
        assert_eq!(indices(&same.keep), vec![Some(1), Some(2), Some(3)]);
        let more = plan(three.clone(), 5);
        assert_eq!(more.create, vec![4, 5]);
        assert!(more.delete.is_empty());
        let fewer = plan(three.clone(), 1);
        assert_eq!(indices(&fewer.keep), vec![Some(1)]);
        assert_eq!(indices(&fewer.delete), vec![Some(2), Some(3)]);
        assert!(fewer.create.is_empty());
        let none = plan(three, 0);
        assert_eq!(none.delete.len(), 3);
        assert!(none.keep.is_empty() && none.create.is_empty());
    }

    /// A gap (one deleted by hand) is filled, not renumbered: kept ones keep their
    /// address; duplicates and unnumbered ones are removed before numbered ones.
    #[test]
    fn plan_fills_gaps_and_drops_duplicates_first() {
        let gap = vec![ex(Some(1), "a"), ex(Some(3), "c")];
        let p = plan(gap.clone(), 2);
        assert!(p.create.is_empty() && p.delete.is_empty());
        let p = plan(gap, 3);
        assert_eq!(p.create, vec![2]);
        let messy = vec![
            ex(Some(1), "a"),
            ex(None, "z"),
            ex(Some(1), "b"),
            ex(Some(0), "y"),
            ex(Some(2), "c"),
        ];
        let p = plan(messy, 2);
        assert_eq!(indices(&p.keep), vec![Some(1), Some(2)]);
        assert_eq!(p.keep[0].uuid, "a");
        let mut gone: Vec<&str> = p.delete.iter().map(|e| e.uuid.as_str()).collect();
        gone.sort();
        assert_eq!(gone, vec!["b", "y", "z"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        assert_eq!(virtual_iface("eth0", 1), "eth0-v1");
        assert_eq!(virtual_iface("enp0s31f6", 8), "enp0s31f6-v8");
        let long = virtual_iface("enx00e04c680b1a", 3);
        assert_eq!(long, "enx00e04c680-v3");
        assert_eq!(long.len(), 15);
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        for first in [0x00u8, 0x01, 0x03, 0xff, 0xfe, 0x5d] {
            let mac = local_mac([first, 1, 2, 3, 4, 5]);
            assert_eq!(mac[0] & 0x02, 0x02, "{first:#x}");
            assert_eq!(mac[0] & 0x01, 0, "{first:#x}");
            assert_eq!(&mac[1..], &[1, 2, 3, 4, 5]);
        }
        assert_eq!(format_mac(&local_mac([0xff; 6])), "fe:ff:ff:ff:ff:ff");
        let u = uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_v4([0; 16]);
        assert_eq!(u, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn refusals_name_the_reason() {
        let dev = |device_type, managed, state| ParentDevice {
            iface: "x0".into(),
            device_type,
            managed,
            state,
        };
        assert_eq!(refusal(&dev(1, true, 100)), None);
        assert_eq!(refusal(&dev(20, true, 30)), None);
        assert!(refusal(&dev(1, false, 10)).unwrap().contains("not managed"));
        assert!(refusal(&dev(2, true, 100)).unwrap().contains("Wi-Fi"));
        assert!(refusal(&dev(18, true, 100)).unwrap().contains("virtual"));
        assert!(refusal(&dev(11, true, 100)).unwrap().contains("VLAN"));
        assert!(refusal(&dev(29, true, 100)).unwrap().contains("WireGuard"));
    }

    #[test]
    fn ipv6_follows_the_parent() {
        assert_eq!(ipv6_method(Some("disabled")), "disabled");
        assert_eq!(ipv6_method(Some("ignore")), "ignore");
        assert_eq!(ipv6_method(Some("dhcp")), "dhcp");
        assert_eq!(ipv6_method(Some("auto")), "auto");
        assert_eq!(ipv6_method(Some("manual")), "auto");
        assert_eq!(ipv6_method(None), "auto");
    }

    /// The settings NetworkManager gets carry the marker, the MAC and DHCP, and read back
    /// as one of ours.
    #[test]
    fn settings_carry_the_marker_and_read_back() {
        let u = NewUplink {
            parent: "eth0".into(),
            index: 2,
            name: "eth0-v2".into(),
            uuid: uuid_v4([7; 16]),
            mac: "06:00:00:00:00:01".into(),
            autoconnect: true,
            ipv6_method: "disabled",
        };
        let s = settings(&u);
        let owned: Settings = s
            .into_iter()
            .map(|(k, m)| {
                (
                    k.to_string(),
                    m.into_iter()
                        .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
                        .collect(),
                )
            })
            .collect();
        let path = OwnedObjectPath::try_from("/org/freedesktop/NetworkManager/Settings/9").unwrap();
        let p = Profile::from_settings(path, &owned);
        assert_eq!(p.kind, "macvlan");
        assert_eq!(p.marked_parent(), Some("eth0"));
        assert_eq!(p.iface.as_deref(), Some("eth0-v2"));
        let e = p.existing();
        assert_eq!(e.index, Some(2));
        assert_eq!(e.mac.as_deref(), Some("06:00:00:00:00:01"));
        assert_eq!(e.uuid, u.uuid);
        let get = |s: &str, k: &str| owned[s][k].downcast_ref::<&str>().unwrap().to_string();
        assert_eq!(get("macvlan", "parent"), "eth0");
        assert_eq!(get("ipv4", "method"), "auto");
        assert_eq!(get("ipv4", "dhcp-client-id"), "mac");
        assert_eq!(get("ipv6", "method"), "disabled");
    }

    #[test]
    fn bad_requests_are_refused_before_anything_else() {
        for (iface, count) in [("", 1), ("a/b", 1), ("eth0", MAX_VIRTUAL_UPLINKS + 1)] {
            let e = check_request(iface, count).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{iface} {count}: {e}");
        }
        let e = check_request("eth0", 100).unwrap_err().to_string();
        assert!(e.contains("at most 8"), "{e}");
    }

    #[test]
    fn report_renders_aligned() {
        let r = SplitReport {
            parent: "eth0".into(),
            uplinks: vec![
                VirtualUplink {
                    name: "eth0-v1".into(),
                    mac: Some("06:00:00:00:00:01".into()),
                    address: Some("10.0.0.7/24".into()),
                    activated: true,
                    change: "kept",
                },
                VirtualUplink {
                    name: "eth0-v2".into(),
                    mac: Some("06:00:00:00:00:02".into()),
                    address: None,
                    activated: false,
                    change: "created",
                },
            ],
            removed: vec!["eth0-v3".into()],
        };
        assert_eq!(
            render(&r),
            "eth0-v1  06:00:00:00:00:01  10.0.0.7/24  activated\n\
             eth0-v2  06:00:00:00:00:02  -            NOT ACTIVATED (created)\n\
             eth0-v3  -                  -            removed"
        );
        let empty = SplitReport {
            parent: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(render(&empty), "eth0: no virtual uplinks");
    }

    #[test]
    fn parent_from_a_sysfs_tree() {
        let root = std::env::temp_dir().join(format!("nmmw-split-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        // A macvlan on eth0: one lower link, eth0 is not its port.
        mk("eth0-v1/lower_eth0");
        // A bridge: its port has a `master` link back to it.
        mk("br0/lower_eth1/master");
        // A bond over two.
        mk("bond0/lower_eth2");
        mk("bond0/lower_eth3");
        mk("eth0");
        assert_eq!(parent_in(&root, "eth0-v1"), Some("eth0".into()));
        assert_eq!(parent_in(&root, "br0"), None);
        assert_eq!(parent_in(&root, "bond0"), None);
        assert_eq!(parent_in(&root, "eth0"), None);
        assert_eq!(parent_in(&root, "missing"), None);
        assert_eq!(parent_in(&root, "../etc"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
