//! Reading NetworkManager over the system D-Bus (zbus): which devices are uplinks.
//! Reads only; never writes to NetworkManager.
//!
//! One `ObjectManager.GetManagedObjects` call reads every object NetworkManager exports
//! (devices, their `IP4Config`/`IP6Config`, active connections) at once: one round trip
//! and one consistent picture, where reading object by object took three rounds and
//! about three calls per device. A NetworkManager without an object manager is read
//! the old way: one `Properties.GetAll` per device and, for an activated device, one on
//! each of its `IP4Config` and `IP6Config` and one on its active connection (those
//! three concurrently), all devices concurrently after one `GetDevices`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::{debug, warn};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use crate::error::{Error, Result};
use crate::model::{DeviceRoute, Family, IpNet, IpSide, Lan, Uplink};

mod mirror;
pub use mirror::{Mirror, Signal};

const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const NM_IFACE: &str = "org.freedesktop.NetworkManager";
const DEVICE_IFACE: &str = "org.freedesktop.NetworkManager.Device";
const IP4CONFIG_IFACE: &str = "org.freedesktop.NetworkManager.IP4Config";
const IP6CONFIG_IFACE: &str = "org.freedesktop.NetworkManager.IP6Config";
const ACTIVE_IFACE: &str = "org.freedesktop.NetworkManager.Connection.Active";
const SETTINGS_CONNECTION_IFACE: &str = "org.freedesktop.NetworkManager.Settings.Connection";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER_IFACE: &str = "org.freedesktop.DBus.ObjectManager";
/// Where NetworkManager exports its object manager.
const OBJECT_MANAGER_PATH: &str = "/org/freedesktop";

/// `NM_DEVICE_STATE_PREPARE`: the first state of an activation.
pub const DEVICE_STATE_PREPARE: u32 = 40;
/// `NM_DEVICE_STATE_ACTIVATED`.
pub const DEVICE_STATE_ACTIVATED: u32 = 100;
/// `NM_DEVICE_TYPE_LOOPBACK`.
pub const DEVICE_TYPE_LOOPBACK: u32 = 32;
/// The main routing table; NetworkManager leaves `table` out of `RouteData` for it.
const MAIN_TABLE: u32 = 254;

/// How long one D-Bus call may take before we give up on NetworkManager.
const METHOD_TIMEOUT: Duration = crate::bus::DBUS_TIMEOUT;

/// The properties of one D-Bus object, as `Properties.GetAll` returns them.
type Props = HashMap<String, OwnedValue>;

/// Every exported object: path -> interface -> properties (`GetManagedObjects`).
type Objects = HashMap<OwnedObjectPath, HashMap<String, Props>>;

/// The view of one snapshot, with the LAN candidates not yet known to be shared.
type ViewAndLans = (NmView, Vec<(Lan, Option<OwnedObjectPath>)>);

/// A connection to NetworkManager on the system bus, reading it directly or, in the
/// daemon, from a [`Mirror`] its signals keep current.
pub struct NetworkManager {
    conn: zbus::Connection,
    mirror: Option<Arc<Mirror>>,
}

/// What we read of one NetworkManager device.
#[derive(Debug)]
struct Device {
    path: OwnedObjectPath,
    props: Props,
}

impl Device {
    /// The IP interface, falling back to the device's own interface name.
    fn iface(&self) -> String {
        let ip_iface = str_prop(&self.props, "IpInterface").unwrap_or_default();
        if ip_iface.is_empty() {
            str_prop(&self.props, "Interface")
                .unwrap_or_default()
                .to_string()
        } else {
            ip_iface.to_string()
        }
    }

    fn u32(&self, name: &str) -> Option<u32> {
        u32_prop(&self.props, name)
    }

    fn is_loopback(&self) -> bool {
        self.u32("DeviceType") == Some(DEVICE_TYPE_LOOPBACK) || self.iface() == "lo"
    }

    /// An object path property, `None` when unset ("/").
    fn object(&self, name: &str) -> Option<OwnedObjectPath> {
        let path = self.props.get(name)?.downcast_ref::<ObjectPath>().ok()?;
        (path.as_str() != "/").then(|| path.into())
    }
}

impl NetworkManager {
    /// Connects to the system bus (honours `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn connect() -> Result<Self> {
        // Within crate::bus::DBUS_TIMEOUT, as every later call.
        let conn = crate::bus::system(METHOD_TIMEOUT).await?;
        Ok(NetworkManager { conn, mirror: None })
    }

    /// Reads NetworkManager through an existing bus connection (the daemon's).
    pub fn with_connection(conn: zbus::Connection) -> Self {
        NetworkManager { conn, mirror: None }
    }

    /// Reads NetworkManager from `mirror`, which the caller keeps current by feeding it
    /// every signal NetworkManager sends on `conn` (see [`Mirror`]); a snapshot is
    /// taken through `conn` when the mirror holds none.
    pub fn mirrored(conn: zbus::Connection, mirror: Arc<Mirror>) -> Self {
        NetworkManager {
            conn,
            mirror: Some(mirror),
        }
    }

    /// The underlying bus connection, e.g. to subscribe to NetworkManager's signals.
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// Every device in the activated state whose Ip4Config or Ip6Config holds a default
    /// route, skipping loopback. Errors name the object that could not be read.
    pub async fn uplinks(&self) -> Result<Vec<Uplink>> {
        Ok(self.view().await?.uplinks)
    }

    /// The uplinks, whether NetworkManager is still starting up, and every device's
    /// state, from one consistent reading where NetworkManager allows it.
    pub async fn view(&self) -> Result<NmView> {
        let read = match &self.mirror {
            // Computed once per change NetworkManager announces.
            Some(mirror) => {
                mirror.ensure(|| self.managed_objects()).await?;
                match mirror.read_cached(|o| (view_of(o), lan_candidates(o))) {
                    Some(read) => Some(read),
                    None => self.read_view().await?,
                }
            }
            None => self.read_view().await?,
        };
        let mut view = match read {
            Some((mut view, candidates)) => {
                view.lans = self.lans(candidates, &view.uplinks).await;
                view
            }
            None => {
                let devices = self.devices().await?;
                let reads = devices.iter().map(|d| self.uplink_of(d));
                let mut uplinks = Vec::new();
                for read in join_all(reads).await {
                    uplinks.extend(read?);
                }
                // Without an object manager (NetworkManager before 1.16) no LAN is
                // seen: router mode needs a newer NetworkManager.
                NmView {
                    uplinks,
                    lans: Vec::new(),
                    starting: self.starting().await,
                    devices: devices
                        .iter()
                        .filter(|d| !d.is_loopback())
                        .map(|d| (d.iface(), d.u32("State").unwrap_or(0)))
                        .collect(),
                }
            }
        };
        view.uplinks.sort_by(|a, b| a.iface.cmp(&b.iface));
        Ok(view)
    }

    /// The view and LAN candidates from one `GetManagedObjects`.
    async fn read_view(&self) -> Result<Option<ViewAndLans>> {
        Ok(self
            .managed_objects()
            .await?
            .map(|(o, _, _)| (view_of(&o), lan_candidates(&o))))
    }

    /// Every activated device that is not an uplink, with its networks and whether its
    /// connection is shared (one `GetSettings` each, concurrently: the method is a
    /// setting, not a property of any object the snapshot holds).
    async fn lans(
        &self,
        candidates: Vec<(Lan, Option<OwnedObjectPath>)>,
        uplinks: &[Uplink],
    ) -> Vec<Lan> {
        let candidates: Vec<(Lan, Option<OwnedObjectPath>)> = candidates
            .into_iter()
            .filter(|(lan, _)| !uplinks.iter().any(|u| u.iface == lan.iface))
            .collect();
        let reads = candidates.iter().map(|(_, path)| async move {
            match path {
                Some(path) => self.shared(path).await,
                None => false,
            }
        });
        let shared = join_all(reads).await;
        candidates
            .into_iter()
            .zip(shared)
            .map(|((mut lan, _), shared)| {
                lan.shared = shared;
                lan
            })
            .collect()
    }

    /// Whether the connection at `path` has `ipv4.method` or `ipv6.method` `shared`
    /// (false when it cannot be read: a connection that vanished shares nothing).
    async fn shared(&self, path: &ObjectPath<'_>) -> bool {
        let reply = self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                path,
                Some(SETTINGS_CONNECTION_IFACE),
                "GetSettings",
                &(),
            )
            .await;
        let settings = match reply {
            Ok(r) => r.body().deserialize::<HashMap<String, Props>>(),
            Err(e) => {
                debug!(%path, error = %e, "cannot read a connection's settings");
                return false;
            }
        };
        match settings {
            Ok(settings) => is_shared(&settings),
            Err(e) => {
                debug!(%path, error = %e, "unexpected settings");
                false
            }
        }
    }

    /// NetworkManager's `Startup` property (false when it cannot be read).
    pub async fn starting(&self) -> bool {
        if self.mirror.is_some()
            && let Ok(Some(s)) = self.with_objects(|o| manager_flag_of(o, "Startup")).await
        {
            return s;
        }
        self.manager_flag("Startup").await
    }

    /// A boolean property of NetworkManager itself (false when it cannot be read).
    async fn manager_flag(&self, name: &str) -> bool {
        let reply = self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                NM_PATH,
                Some(PROPERTIES_IFACE),
                "Get",
                &(NM_IFACE, name),
            )
            .await;
        reply
            .ok()
            .and_then(|r| r.body().deserialize::<OwnedValue>().ok())
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(false)
    }

    /// Calls `f` with every object NetworkManager exports: from the mirror when there
    /// is one (taking a snapshot if it holds none), else from one `GetManagedObjects`.
    /// `None` when NetworkManager has no object manager.
    async fn with_objects<R>(&self, f: impl FnOnce(&Objects) -> R) -> Result<Option<R>> {
        if let Some(mirror) = &self.mirror {
            mirror.ensure(|| self.managed_objects()).await?;
            // `f` is handed over only if the snapshot is there; otherwise (dropped
            // meanwhile, or NetworkManager changed too much while it was read) read
            // directly below.
            let mut f = Some(f);
            if let Some(r) = mirror.read(|o| f.take().map(|f| f(o))) {
                return Ok(r);
            }
            if let Some(f) = f {
                return Ok(self.managed_objects().await?.map(|(o, _, _)| f(&o)));
            }
            return Ok(None);
        }
        Ok(self.managed_objects().await?.map(|(o, _, _)| f(&o)))
    }

    /// Every object NetworkManager exports, in one call, with the replying unique name
    /// and the reply's serial (see [`Mirror`]); `None` when it has no object manager
    /// (then objects are read one by one).
    async fn managed_objects(&self) -> Result<Option<(Objects, String, u32)>> {
        let reply = match self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                OBJECT_MANAGER_PATH,
                Some(OBJECT_MANAGER_IFACE),
                "GetManagedObjects",
                &(),
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) if is_vanished(&e) => {
                debug!(error = %e, "no object manager; reading objects one by one");
                return Ok(None);
            }
            Err(e) => return Err(not_reachable(&e, "GetManagedObjects", OBJECT_MANAGER_PATH)),
        };
        let owner = reply
            .header()
            .sender()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let serial = reply.primary_header().serial_num().get();
        reply
            .body()
            .deserialize::<Objects>()
            .map(|o| Some((o, owner, serial)))
            .map_err(|e| {
                Error::NetworkManager(format!(
                    "unexpected reply to {OBJECT_MANAGER_IFACE}.GetManagedObjects on \
                 {OBJECT_MANAGER_PATH}: {e}"
                ))
            })
    }

    /// NetworkManager's IPv4 connectivity verdict (`Ip4Connectivity`: 0 unknown, 1 none,
    /// 2 portal, 3 limited, 4 full) of every device with an interface, by interface.
    /// Loopback is left out.
    pub async fn ip4_connectivity(&self) -> Result<BTreeMap<String, u32>> {
        // The daemon asks before every reconcile: computed once per change.
        if let Some(mirror) = &self.mirror {
            mirror.ensure(|| self.managed_objects()).await?;
            if let Some(c) = mirror.read_cached(connectivity_of) {
                return Ok(c);
            }
        }
        if self.mirror.is_some()
            && let Some(c) = self.with_objects(connectivity_of).await?
        {
            return Ok(c);
        }
        Ok(self
            .devices()
            .await?
            .iter()
            .filter(|d| !d.is_loopback())
            .filter_map(|d| Some((d.iface(), d.u32("Ip4Connectivity")?)))
            .filter(|(iface, _)| !iface.is_empty())
            .collect())
    }

    /// [`Self::ip4_connectivity`] when NetworkManager's connectivity check is available
    /// and enabled; `None` when it is not (every device then reports a connectivity that
    /// says nothing about its upstream).
    pub async fn checked_connectivity(&self) -> Result<Option<BTreeMap<String, u32>>> {
        let (available, enabled) = match self.mirror.is_some() {
            true => self
                .with_objects(|o| {
                    (
                        manager_flag_of(o, "ConnectivityCheckAvailable"),
                        manager_flag_of(o, "ConnectivityCheckEnabled"),
                    )
                })
                .await?
                .unwrap_or_default(),
            false => {
                futures::join!(
                    self.manager_flag("ConnectivityCheckAvailable"),
                    self.manager_flag("ConnectivityCheckEnabled")
                )
            }
        };
        if !(available && enabled) {
            return Ok(None);
        }
        self.ip4_connectivity().await.map(Some)
    }

    /// Lists the devices and reads each one's properties, concurrently. Devices that
    /// vanish while we read are left out.
    async fn devices(&self) -> Result<Vec<Device>> {
        let paths = self.device_paths().await?;
        let reads = paths.into_iter().map(|path| async move {
            let props = self.get_all(&path, DEVICE_IFACE).await;
            (path, props)
        });
        let mut devices = Vec::new();
        for (path, props) in join_all(reads).await {
            match props {
                Ok(Some(props)) => devices.push(Device { path, props }),
                Ok(None) => debug!(device = %path, "device vanished while reading it"),
                Err(e) => return Err(e),
            }
        }
        Ok(devices)
    }

    async fn device_paths(&self) -> Result<Vec<OwnedObjectPath>> {
        let reply = self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                NM_PATH,
                Some(NM_IFACE),
                "GetDevices",
                &(),
            )
            .await
            .map_err(|e| not_reachable(&e, "GetDevices", NM_PATH))?;
        reply.body().deserialize().map_err(|e| {
            Error::NetworkManager(format!(
                "unexpected reply to {NM_IFACE}.GetDevices on {NM_PATH}: {e}"
            ))
        })
    }

    /// All properties of `interface` on the object `path`; `None` when the object is
    /// gone (NetworkManager removed it after listing it).
    async fn get_all(&self, path: &ObjectPath<'_>, interface: &str) -> Result<Option<Props>> {
        let reply = match self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                path,
                Some(PROPERTIES_IFACE),
                "GetAll",
                &(interface,),
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) if is_vanished(&e) => return Ok(None),
            Err(e) => {
                return Err(Error::NetworkManager(format!(
                    "cannot read {interface} properties of {path}: {e}; \
                     is NetworkManager still running?"
                )));
            }
        };
        reply.body().deserialize::<Props>().map(Some).map_err(|e| {
            Error::NetworkManager(format!(
                "unexpected reply reading {interface} properties of {path}: {e}"
            ))
        })
    }

    /// The uplink a device makes, if it is one.
    async fn uplink_of(&self, device: &Device) -> Result<Option<Uplink>> {
        let Some(paths) = config_paths(device) else {
            return Ok(None);
        };
        let (ip4, ip6, active) = futures::join!(
            self.get_all_opt(paths.ip4.as_ref(), IP4CONFIG_IFACE),
            self.get_all_opt(paths.ip6.as_ref(), IP6CONFIG_IFACE),
            self.get_all(&paths.active, ACTIVE_IFACE)
        );
        Ok(uplink_from_configs(
            device,
            ip4?.as_ref(),
            ip6?.as_ref(),
            active?.as_ref(),
        ))
    }

    /// The id of every connection profile NetworkManager has, active or not
    /// (`Settings.ListConnections`, then `GetSettings` of each, concurrently).
    pub async fn connection_ids(&self) -> Result<Vec<String>> {
        let settings =
            ObjectPath::try_from("/org/freedesktop/NetworkManager/Settings").expect("a valid path");
        let reply = self
            .conn
            .call_method(
                Some(NM_BUS_NAME),
                &settings,
                Some("org.freedesktop.NetworkManager.Settings"),
                "ListConnections",
                &(),
            )
            .await
            .map_err(|e| not_reachable(&e, "ListConnections", settings.as_str()))?;
        let paths: Vec<OwnedObjectPath> = reply.body().deserialize().map_err(|e| {
            Error::NetworkManager(format!("unexpected reply to ListConnections: {e}"))
        })?;
        let reads = paths.iter().map(|path| async move {
            let reply = self
                .conn
                .call_method(
                    Some(NM_BUS_NAME),
                    path,
                    Some("org.freedesktop.NetworkManager.Settings.Connection"),
                    "GetSettings",
                    &(),
                )
                .await
                .ok()?;
            let all: HashMap<String, HashMap<String, OwnedValue>> =
                reply.body().deserialize().ok()?;
            let id = all.get("connection")?.get("id")?;
            id.downcast_ref::<&str>().ok().map(str::to_string)
        });
        Ok(join_all(reads).await.into_iter().flatten().collect())
    }

    /// `get_all` of an optional object: `None` when there is no object or it vanished.
    async fn get_all_opt(
        &self,
        path: Option<&OwnedObjectPath>,
        interface: &str,
    ) -> Result<Option<Props>> {
        match path {
            Some(path) => self.get_all(path, interface).await,
            None => Ok(None),
        }
    }
}

/// What one reading of NetworkManager shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NmView {
    pub uplinks: Vec<Uplink>,
    /// Every activated device that is not an uplink (which are LANs, the planner
    /// decides).
    pub lans: Vec<Lan>,
    /// NetworkManager is still activating its initial connections (its `Startup`
    /// property): devices it re-assumes after a restart are not activated yet.
    pub starting: bool,
    /// Every device's state (`NMDeviceState`) by interface, loopback left out.
    pub devices: BTreeMap<String, u32>,
}

impl NmView {
    /// Whether NetworkManager is (re)activating the device on `iface` (prepare ..
    /// secondaries) or starting up: then its view of the device says nothing about the
    /// kernel's. (A device it deactivates is going away: nothing to wait for.)
    pub fn in_transition(&self, iface: &str) -> bool {
        self.starting
            || self
                .devices
                .get(iface)
                .is_some_and(|s| (DEVICE_STATE_PREPARE..DEVICE_STATE_ACTIVATED).contains(s))
    }
}

/// The view of NetworkManager in one `GetManagedObjects` snapshot: the uplinks among
/// the devices it lists (its `Devices` property, as `GetDevices` returns them).
fn view_of(objects: &Objects) -> NmView {
    let props = |path: &ObjectPath<'_>, iface: &str| {
        objects
            .get(&OwnedObjectPath::from(path.to_owned()))
            .and_then(|o| o.get(iface))
    };
    let Some(root) = ObjectPath::try_from(NM_PATH)
        .ok()
        .and_then(|p| props(&p, NM_IFACE))
    else {
        warn!("NetworkManager exports no {NM_IFACE} object; no uplinks");
        return NmView::default();
    };
    let mut view = NmView {
        starting: root
            .get("Startup")
            .and_then(|v| v.downcast_ref::<bool>().ok())
            .unwrap_or(false),
        ..NmView::default()
    };
    let paths: Vec<OwnedObjectPath> = root
        .get("Devices")
        .and_then(|v| Vec::<OwnedObjectPath>::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default();
    for path in paths {
        let Some(device_props) = props(&path, DEVICE_IFACE) else {
            debug!(device = %path, "device listed but not exported");
            continue;
        };
        // A device's own properties are copied (a few dozen); its configuration objects
        // are only borrowed.
        let device = Device {
            path: path.clone(),
            props: device_props
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.try_clone().ok()?)))
                .collect(),
        };
        if !device.is_loopback() {
            view.devices
                .insert(device.iface(), device.u32("State").unwrap_or(0));
        }
        let Some(paths) = config_paths(&device) else {
            continue;
        };
        let ip4 = paths.ip4.as_ref().and_then(|p| props(p, IP4CONFIG_IFACE));
        let ip6 = paths.ip6.as_ref().and_then(|p| props(p, IP6CONFIG_IFACE));
        let active = props(&paths.active, ACTIVE_IFACE);
        view.uplinks
            .extend(uplink_from_configs(&device, ip4, ip6, active));
    }
    view
}

/// A boolean property of NetworkManager itself in a snapshot (false when absent).
fn manager_flag_of(objects: &Objects, name: &str) -> bool {
    ObjectPath::try_from(NM_PATH)
        .ok()
        .and_then(|p| objects.get(&OwnedObjectPath::from(p)))
        .and_then(|o| o.get(NM_IFACE))
        .and_then(|p| p.get(name))
        .and_then(|v| v.downcast_ref::<bool>().ok())
        .unwrap_or(false)
}

/// [`NetworkManager::ip4_connectivity`] from a snapshot.
fn connectivity_of(objects: &Objects) -> BTreeMap<String, u32> {
    objects
        .iter()
        .filter_map(|(path, interfaces)| {
            let props = interfaces.get(DEVICE_IFACE)?;
            let device = Device {
                path: path.clone(),
                props: ["Interface", "IpInterface", "DeviceType", "Ip4Connectivity"]
                    .into_iter()
                    .filter_map(|k| Some((k.to_string(), props.get(k)?.try_clone().ok()?)))
                    .collect(),
            };
            if device.is_loopback() {
                return None;
            }
            let iface = device.iface();
            (!iface.is_empty()).then_some((iface, device.u32("Ip4Connectivity")?))
        })
        .collect()
}

/// Whether connection settings (`GetSettings`) share the machine's uplinks.
fn is_shared(settings: &HashMap<String, Props>) -> bool {
    ["ipv4", "ipv6"].iter().any(|family| {
        settings
            .get(*family)
            .and_then(|s| str_prop(s, "method"))
            .is_some_and(|m| m == "shared")
    })
}

/// Every activated device with an IP configuration, as a LAN (not yet known to be
/// shared), with the path of its connection's settings.
fn lan_candidates(objects: &Objects) -> Vec<(Lan, Option<OwnedObjectPath>)> {
    let props = |path: &ObjectPath<'_>, iface: &str| {
        objects
            .get(&OwnedObjectPath::from(path.to_owned()))
            .and_then(|o| o.get(iface))
    };
    let mut out = Vec::new();
    for (path, interfaces) in objects {
        let Some(device_props) = interfaces.get(DEVICE_IFACE) else {
            continue;
        };
        let device = Device {
            path: path.clone(),
            props: device_props
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.try_clone().ok()?)))
                .collect(),
        };
        let Some(paths) = config_paths(&device) else {
            continue;
        };
        let Some(active) = props(&paths.active, ACTIVE_IFACE) else {
            continue;
        };
        let mut networks = Vec::new();
        for (config, family, iface) in [
            (&paths.ip4, Family::V4, IP4CONFIG_IFACE),
            (&paths.ip6, Family::V6, IP6CONFIG_IFACE),
        ] {
            let Some(config) = config.as_ref().and_then(|p| props(p, iface)) else {
                continue;
            };
            for entry in dict_array(config, "AddressData").unwrap_or_default() {
                if let Some((addr, prefix)) = parse_address(&entry, family) {
                    let net = IpNet::new(addr, prefix);
                    if !IpNet::link_local6().contains(addr) && !networks.contains(&net) {
                        networks.push(net);
                    }
                }
            }
        }
        let settings = active
            .get("Connection")
            .and_then(|v| v.downcast_ref::<ObjectPath>().ok())
            .filter(|p| p.as_str() != "/")
            .map(OwnedObjectPath::from);
        out.push((
            Lan {
                iface: device.iface(),
                connection_id: str_prop(active, "Id").unwrap_or_default().to_string(),
                shared: false,
                networks,
            },
            settings,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The objects holding an activated device's configuration.
struct ConfigPaths {
    active: OwnedObjectPath,
    ip4: Option<OwnedObjectPath>,
    ip6: Option<OwnedObjectPath>,
}

/// Where to read a device's configuration; `None` (with the reason logged) when the
/// device cannot be an uplink whatever its configuration says.
fn config_paths(device: &Device) -> Option<ConfigPaths> {
    let skip = |why: &str| {
        debug!(device = %device.path, iface = device.iface(), state = device.u32("State"),
               device_type = device.u32("DeviceType"), "not an uplink: {why}");
        None
    };
    if device.is_loopback() {
        return skip("loopback");
    }
    if device.u32("State").unwrap_or(0) != DEVICE_STATE_ACTIVATED {
        return skip("not activated");
    }
    let Some(active) = device.object("ActiveConnection") else {
        return skip("no active connection");
    };
    let ip4 = device.object("Ip4Config");
    let ip6 = device.object("Ip6Config");
    if ip4.is_none() && ip6.is_none() {
        return skip("no IP configuration");
    }
    Some(ConfigPaths { active, ip4, ip6 })
}

/// The uplink an activated device makes from its configuration objects (`None` for
/// one that vanished while we read).
fn uplink_from_configs(
    device: &Device,
    ip4: Option<&Props>,
    ip6: Option<&Props>,
    active: Option<&Props>,
) -> Option<Uplink> {
    let iface = device.iface();
    let device_type = device.u32("DeviceType").unwrap_or(0);
    let skip = |why: &str| {
        debug!(device = %device.path, iface, device_type, "not an uplink: {why}");
        None
    };
    let Some(active) = active else {
        return skip("its active connection vanished while reading it");
    };
    // Each family on its own: a device may be an uplink in one, the other or both.
    let side = |family: Family, why: NotUplink| match why {
        NotUplink::NoDefaultRoute => {
            debug!(device = %device.path, iface, "no {family} default route in the main table")
        }
        NotUplink::NoAddress => {
            debug!(device = %device.path, iface, "no global {family} address")
        }
        NotUplink::Malformed(what) => {
            warn!(device = %device.path, iface, "ignoring its {family} side: malformed {what}")
        }
    };
    let ipv4 = ip4.and_then(|p| {
        side_from(p, Family::V4)
            .map_err(|e| side(Family::V4, e))
            .ok()
    });
    let ipv6 = ip6.and_then(|p| {
        side_from(p, Family::V6)
            .map_err(|e| side(Family::V6, e))
            .ok()
    });
    match uplink_from(&iface, active, ipv4, ipv6) {
        Some(mut uplink) => {
            uplink.metered = is_metered(device.u32("Metered"));
            debug!(device = %device.path, device_type, ?uplink, "uplink");
            Some(uplink)
        }
        None => skip("no default route with an address in either family"),
    }
}

/// A failed call that leaves us without NetworkManager's state.
fn not_reachable(e: &zbus::Error, method: &str, path: &str) -> Error {
    if is_service_unknown(e) {
        Error::NetworkManager(format!(
            "NetworkManager is not running: nobody owns {NM_BUS_NAME} on the system bus \
             ({e}); start NetworkManager"
        ))
    } else {
        Error::NetworkManager(format!(
            "cannot read NetworkManager's state ({method} on {path}): {e}; is \
             NetworkManager running and are we allowed to talk to it?"
        ))
    }
}

/// Why one family of a device's configuration makes no uplink.
#[derive(Debug, PartialEq, Eq)]
enum NotUplink {
    NoDefaultRoute,
    NoAddress,
    Malformed(&'static str),
}

/// One entry of `RouteData`, of the family asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    dest: IpAddr,
    prefix: u8,
    next_hop: Option<IpAddr>,
    metric: u32,
    table: u32,
    /// `unicast` unless NetworkManager says otherwise (`blackhole`, `local`, ...).
    kind: String,
}

impl Route {
    fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

/// An uplink from its active connection and the sides found; `None` without any.
/// Pure, so that it is tested without a bus.
fn uplink_from(
    iface: &str,
    active: &Props,
    ipv4: Option<IpSide>,
    ipv6: Option<IpSide>,
) -> Option<Uplink> {
    if ipv4.is_none() && ipv6.is_none() {
        return None;
    }
    Some(Uplink {
        iface: iface.to_string(),
        connection_id: str_prop(active, "Id").unwrap_or_default().to_string(),
        connection_uuid: str_prop(active, "Uuid").unwrap_or_default().to_string(),
        ipv4,
        ipv6,
        metered: false,
    })
}

/// NetworkManager's `NMMetered` of a device: 0 unknown, 1 yes, 2 no, 3 guess-yes,
/// 4 guess-no. Yes and guess-yes count: NetworkManager guesses yes for mobile
/// broadband, Bluetooth tethering and phones that announce themselves as metered
/// (the `ANDROID_METERED` DHCP option of USB and Wi-Fi tethering).
pub fn is_metered(value: Option<u32>) -> bool {
    matches!(value, Some(METERED_YES | METERED_GUESS_YES))
}

/// `NM_METERED_YES`.
const METERED_YES: u32 = 1;
/// `NM_METERED_GUESS_YES`.
const METERED_GUESS_YES: u32 = 3;

/// An entry of `AddressData`: address and prefix length.
type Address = (IpAddr, u8);

/// Routes and addresses of an `IP4Config` or `IP6Config`.
fn routes_and_addresses(
    config: &Props,
    family: Family,
) -> Result<(Vec<Route>, Vec<Address>), NotUplink> {
    let routes = dict_array(config, "RouteData")
        .ok_or(NotUplink::Malformed("RouteData"))?
        .iter()
        .map(|r| parse_route(r, family))
        .collect::<Option<Vec<Route>>>()
        .ok_or(NotUplink::Malformed("RouteData entry"))?;
    let addresses = dict_array(config, "AddressData")
        .ok_or(NotUplink::Malformed("AddressData"))?
        .iter()
        .map(|a| parse_address(a, family))
        .collect::<Option<Vec<Address>>>()
        .ok_or(NotUplink::Malformed("AddressData entry"))?;
    Ok((routes, addresses))
}

/// The main table's unicast default route with the lowest metric.
fn default_route(routes: &[Route]) -> Result<&Route, NotUplink> {
    routes
        .iter()
        .filter(|r| r.is_default() && r.table == MAIN_TABLE && r.kind == "unicast")
        .min_by_key(|r| r.metric)
        .ok_or(NotUplink::NoDefaultRoute)
}

/// The main table's other routes: destinations reached directly, never balanced.
/// Host routes to the device's own addresses are left out.
fn other_routes<'a>(
    routes: &'a [Route],
    addresses: &'a [Address],
) -> impl Iterator<Item = &'a Route> + 'a {
    let full = |r: &Route| match r.dest {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    routes
        .iter()
        .filter(|r| !r.is_default() && r.table == MAIN_TABLE && r.kind != "local")
        .filter(move |r| !(r.prefix == full(r) && addresses.iter().any(|(a, _)| *a == r.dest)))
}

/// One family's side of a device, from its `IP4Config` or `IP6Config` properties.
/// Pure.
///
/// Only global addresses count (a link-local one cannot be the source of a connection
/// beyond the link); link-local and multicast routes are left out of `routes`, being
/// never balanced anyway.
fn side_from(config: &Props, family: Family) -> Result<IpSide, NotUplink> {
    let (routes, addresses) = routes_and_addresses(config, family)?;
    let default = default_route(&routes)?;
    let special = |a: IpAddr| IpNet::link_local6().contains(a) || IpNet::multicast6().contains(a);
    let is_global = |a: IpAddr| !a.is_unspecified() && !a.is_loopback() && !special(a);
    let &(address, prefix) = addresses
        .iter()
        .find(|(a, _)| is_global(*a))
        .ok_or(NotUplink::NoAddress)?;
    let mut device_routes: Vec<DeviceRoute> = other_routes(&routes, &addresses)
        .filter(|r| !special(r.dest))
        .map(|r| DeviceRoute {
            dst: IpNet::new(r.dest, r.prefix),
            via: r.next_hop,
        })
        .collect();
    device_routes.sort();
    device_routes.dedup_by(|a, b| a.dst == b.dst);
    Ok(IpSide {
        address,
        subnet: IpNet::new(address, prefix),
        gateway: default.next_hop,
        metric: default.metric,
        routes: device_routes,
        dns: name_servers(config, family),
    })
}

/// The name servers of an `IP4Config` (`NameserverData`, `aa{sv}` with "address";
/// older NetworkManagers: `Nameservers`, `au` in network order) or `IP6Config`
/// (`Nameservers`, `aay`). Unreadable entries are left out: a missing server only
/// means its queries are balanced like any destination.
fn name_servers(config: &Props, family: Family) -> Vec<IpAddr> {
    let mut out = Vec::new();
    match family {
        Family::V4 => {
            if let Some(entries) = dict_array(config, "NameserverData") {
                out.extend(
                    entries
                        .iter()
                        .filter_map(|e| parse_ip(str_prop(e, "address")?, family)),
                );
            }
            if out.is_empty()
                && let Some(raw) = config
                    .get("Nameservers")
                    .and_then(|v| v.try_clone().ok())
                    .and_then(|v| Vec::<u32>::try_from(v).ok())
            {
                out.extend(
                    raw.into_iter()
                        .map(|n| IpAddr::from(std::net::Ipv4Addr::from(u32::from_be(n)))),
                );
            }
        }
        Family::V6 => {
            if let Some(raw) = config
                .get("Nameservers")
                .and_then(|v| v.try_clone().ok())
                .and_then(|v| Vec::<Vec<u8>>::try_from(v).ok())
            {
                out.extend(raw.into_iter().filter_map(|b| {
                    let octets: [u8; 16] = b.try_into().ok()?;
                    Some(IpAddr::from(std::net::Ipv6Addr::from(octets)))
                }));
            }
        }
    }
    out.retain(|a| !a.is_unspecified());
    out.dedup();
    out
}

fn parse_route(entry: &Props, family: Family) -> Option<Route> {
    let dest = parse_ip(str_prop(entry, "dest")?, family)?;
    let prefix = parse_prefix(entry, family)?;
    let next_hop = match str_prop(entry, "next-hop") {
        None => None,
        Some(s) => Some(parse_ip(s, family)?).filter(|a| !a.is_unspecified()),
    };
    let table = match u32_prop(entry, "table") {
        None | Some(0) => MAIN_TABLE,
        Some(t) => t,
    };
    Some(Route {
        dest,
        prefix,
        next_hop,
        metric: u32_prop(entry, "metric").unwrap_or(0),
        table,
        kind: str_prop(entry, "type").unwrap_or("unicast").to_string(),
    })
}

/// An address of `family`; anything else (another family, garbage) is malformed.
fn parse_ip(s: &str, family: Family) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .filter(|a| Family::of(*a) == family)
}

fn parse_prefix(entry: &Props, family: Family) -> Option<u8> {
    let max = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    u8::try_from(u32_prop(entry, "prefix")?)
        .ok()
        .filter(|p| *p <= max)
}

fn parse_address(entry: &Props, family: Family) -> Option<Address> {
    let address = parse_ip(str_prop(entry, "address")?, family)?;
    Some((address, parse_prefix(entry, family)?))
}

fn str_prop<'a>(props: &'a Props, name: &str) -> Option<&'a str> {
    props.get(name)?.downcast_ref::<&str>().ok()
}

fn u32_prop(props: &Props, name: &str) -> Option<u32> {
    props.get(name)?.downcast_ref::<u32>().ok()
}

/// An `aa{sv}` property such as `AddressData`; `None` if it has another type. A missing
/// property counts as empty.
fn dict_array(props: &Props, name: &str) -> Option<Vec<Props>> {
    match props.get(name) {
        None => Some(Vec::new()),
        Some(v) => Vec::<Props>::try_from(v.try_clone().ok()?).ok(),
    }
}

fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

/// The object was removed between listing and reading it.
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

fn is_service_unknown(e: &zbus::Error) -> bool {
    matches!(
        error_name(e),
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    fn side4(p: &Props) -> Result<IpSide, NotUplink> {
        side_from(p, Family::V4)
    }

    fn side6(p: &Props) -> Result<IpSide, NotUplink> {
        side_from(p, Family::V6)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn props(entries: Vec<(&str, Value<'static>)>) -> Props {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    fn route(dest: &str, prefix: u32, next_hop: Option<&str>, metric: u32) -> Props {
        let mut entries = vec![
            ("dest", Value::from(dest.to_string())),
            ("prefix", Value::from(prefix)),
            ("metric", Value::from(metric)),
        ];
        if let Some(nh) = next_hop {
            entries.push(("next-hop", Value::from(nh.to_string())));
        }
        props(entries)
    }

    fn address(addr: &str, prefix: u32) -> Props {
        props(vec![
            ("address", Value::from(addr.to_string())),
            ("prefix", Value::from(prefix)),
        ])
    }

    fn ip4(addresses: Vec<Props>, routes: Vec<Props>) -> Props {
        props(vec![
            ("AddressData", Value::from(addresses)),
            ("RouteData", Value::from(routes)),
            ("Gateway", Value::from("")),
        ])
    }

    fn active(id: &str) -> Props {
        props(vec![
            ("Id", Value::from(id.to_string())),
            ("Uuid", Value::from("5f1c0a52-0000-4000-8000-000000000001")),
        ])
    }

    /// One `GetManagedObjects` snapshot: only the devices NetworkManager lists count,
    /// loopback and devices that are not activated are no uplinks, configuration
    /// objects are found by the paths the device names.
    #[test]
    fn uplinks_from_one_snapshot() {
        fn path(p: &str) -> OwnedObjectPath {
            OwnedObjectPath::try_from(p.to_string()).unwrap()
        }
        fn obj(iface: &str, p: Props) -> HashMap<String, Props> {
            HashMap::from([(iface.to_string(), p)])
        }
        let device = |name: &str, state: u32, dtype: u32, n: u32| {
            let ip4 = format!("/org/freedesktop/NetworkManager/IP4Config/{n}");
            let ac = format!("/org/freedesktop/NetworkManager/ActiveConnection/{n}");
            props(vec![
                ("Interface", Value::from(name.to_string())),
                ("IpInterface", Value::from(name.to_string())),
                ("State", Value::from(state)),
                ("DeviceType", Value::from(dtype)),
                // NetworkManager's guess for a tethered phone: metered.
                ("Metered", Value::from(if n == 2 { 3u32 } else { 4u32 })),
                ("Ip4Config", Value::from(ObjectPath::try_from(ip4).unwrap())),
                ("Ip6Config", Value::from(ObjectPath::try_from("/").unwrap())),
                (
                    "ActiveConnection",
                    Value::from(ObjectPath::try_from(ac).unwrap()),
                ),
            ])
        };
        let dev_paths: Vec<ObjectPath<'static>> = (1..=4)
            .map(|n| {
                ObjectPath::try_from(format!("/org/freedesktop/NetworkManager/Devices/{n}"))
                    .unwrap()
            })
            .collect();
        let mut objects: Objects = HashMap::new();
        objects.insert(
            path(NM_PATH),
            obj(NM_IFACE, props(vec![("Devices", Value::from(dev_paths))])),
        );
        objects.insert(
            path("/org/freedesktop/NetworkManager/Devices/1"),
            obj(DEVICE_IFACE, device("lo", 100, 32, 1)),
        );
        objects.insert(
            path("/org/freedesktop/NetworkManager/Devices/2"),
            obj(DEVICE_IFACE, device("eth0", 100, 1, 2)),
        );
        objects.insert(
            path("/org/freedesktop/NetworkManager/Devices/3"),
            obj(DEVICE_IFACE, device("eth1", 30, 1, 3)),
        );
        // Devices/4 is listed but not exported (it went away): skipped.
        // Devices/5 is exported but not listed (an unrealized one): not an uplink.
        objects.insert(
            path("/org/freedesktop/NetworkManager/Devices/5"),
            obj(DEVICE_IFACE, device("eth9", 100, 1, 5)),
        );
        for n in [1, 2, 3, 5] {
            objects.insert(
                path(&format!("/org/freedesktop/NetworkManager/IP4Config/{n}")),
                obj(
                    IP4CONFIG_IFACE,
                    ip4(
                        vec![address(&format!("10.0.{n}.2"), 24)],
                        vec![route("0.0.0.0", 0, Some(&format!("10.0.{n}.1")), 100)],
                    ),
                ),
            );
            objects.insert(
                path(&format!(
                    "/org/freedesktop/NetworkManager/ActiveConnection/{n}"
                )),
                obj(ACTIVE_IFACE, active(&format!("conn{n}"))),
            );
        }
        let ups = view_of(&objects).uplinks;
        assert_eq!(ups.len(), 1, "{ups:?}");
        assert_eq!(ups[0].iface, "eth0");
        assert_eq!(ups[0].connection_id, "conn2");
        assert_eq!(ups[0].ipv4.as_ref().unwrap().gateway, Some(ip("10.0.2.1")));
        assert!(ups[0].ipv6.is_none());
        assert!(ups[0].metered, "Metered guess-yes counts");
        // No root object: no uplinks, no panic.
        objects.remove(&path(NM_PATH));
        assert!(view_of(&objects).uplinks.is_empty());
    }

    /// What NetworkManager 1.42 reports for a static connection with a gateway.
    #[test]
    fn gateway_uplink() {
        let ip4 = ip4(
            vec![address("10.71.1.2", 24)],
            vec![
                route("10.71.1.0", 24, None, 100),
                route("0.0.0.0", 0, Some("10.71.1.1"), 100),
                route("192.0.2.0", 24, Some("10.71.1.1"), 100),
                route("10.71.1.2", 32, None, 100),
            ],
        );
        let v4 = side4(&ip4).unwrap();
        let u = uplink_from("eth0", &active("wired \"$(reboot)\""), Some(v4), None).unwrap();
        assert_eq!(
            u,
            Uplink {
                iface: "eth0".into(),
                connection_id: "wired \"$(reboot)\"".into(),
                connection_uuid: "5f1c0a52-0000-4000-8000-000000000001".into(),
                ipv4: Some(IpSide {
                    address: ip("10.71.1.2"),
                    subnet: net("10.71.1.0/24"),
                    gateway: Some(ip("10.71.1.1")),
                    metric: 100,
                    dns: vec![],
                    routes: vec![
                        DeviceRoute {
                            dst: net("10.71.1.0/24"),
                            via: None
                        },
                        DeviceRoute {
                            dst: net("192.0.2.0/24"),
                            via: Some(ip("10.71.1.1"))
                        },
                    ],
                }),
                ipv6: None,
                metered: false,
            }
        );
    }

    #[test]
    fn metered_is_yes_or_guess_yes() {
        let m: Vec<bool> = [None, Some(0), Some(1), Some(2), Some(3), Some(4), Some(9)]
            .into_iter()
            .map(is_metered)
            .collect();
        assert_eq!(m, [false, false, true, false, true, false, false]);
    }

    #[test]
    fn point_to_point_has_no_gateway() {
        for next_hop in [None, Some("0.0.0.0")] {
            let ip4 = ip4(
                vec![address("100.64.0.7", 32)],
                vec![route("0.0.0.0", 0, next_hop, 50)],
            );
            let u = side4(&ip4).unwrap();
            assert_eq!(u.gateway, None);
            assert_eq!(u.metric, 50);
            assert_eq!(u.subnet, net("100.64.0.7/32"));
            assert!(u.routes.is_empty());
        }
    }

    /// `ipv4.never-default`: only the prefix route, so not an uplink.
    #[test]
    fn never_default_is_not_an_uplink() {
        let ip4 = ip4(
            vec![address("10.71.3.2", 24)],
            vec![route("10.71.3.0", 24, None, 101)],
        );
        assert_eq!(side4(&ip4), Err(NotUplink::NoDefaultRoute));
        // and with no other family, no uplink at all
        assert_eq!(uplink_from("eth2", &active("lan"), None, None), None);
    }

    #[test]
    fn lowest_metric_default_route_wins_and_other_tables_do_not_count() {
        let mut other_table = route("0.0.0.0", 0, Some("10.0.0.9"), 1);
        other_table.insert("table".into(), OwnedValue::from(100u32));
        let mut blackhole = route("0.0.0.0", 0, None, 0);
        blackhole.insert(
            "type".into(),
            OwnedValue::try_from(Value::from("blackhole")).unwrap(),
        );
        let ip4 = ip4(
            vec![address("10.0.0.2", 24), address("10.0.1.2", 24)],
            vec![
                other_table,
                blackhole,
                route("0.0.0.0", 0, Some("10.0.0.1"), 300),
                route("0.0.0.0", 0, Some("10.0.0.254"), 200),
            ],
        );
        let u = side4(&ip4).unwrap();
        assert_eq!(u.gateway, Some(ip("10.0.0.254")));
        assert_eq!(u.metric, 200);
        assert_eq!(u.address, ip("10.0.0.2"));
    }

    #[test]
    fn default_route_without_address_is_not_an_uplink() {
        let ip4 = ip4(vec![], vec![route("0.0.0.0", 0, Some("10.0.0.1"), 100)]);
        assert_eq!(side4(&ip4), Err(NotUplink::NoAddress));
    }

    #[test]
    fn malformed_entries_are_reported() {
        let ip4 = ip4(
            vec![address("10.0.0.2", 24)],
            vec![route("not-an-address", 0, None, 1)],
        );
        assert_eq!(side4(&ip4), Err(NotUplink::Malformed("RouteData entry")));
        let wrong_type = props(vec![("RouteData", Value::from("x"))]);
        assert_eq!(side4(&wrong_type), Err(NotUplink::Malformed("RouteData")));
    }

    /// What NetworkManager reports for router advertisements: a link-local router, the
    /// on-link prefix, the device's link-local address listed too, multicast and
    /// link-local routes.
    #[test]
    fn ipv6_from_router_advertisements() {
        let ip6 = ip4(
            vec![
                address("fe80::5054:ff:fe12:3456", 64),
                address("2001:db8:2:0:5054:ff:fe12:3456", 64),
            ],
            vec![
                route("2001:db8:2::", 64, None, 100),
                route("::", 0, Some("fe80::1"), 100),
                route("fe80::", 64, None, 1024),
                route("ff00::", 8, None, 256),
                route("2001:db8:2:0:5054:ff:fe12:3456", 128, None, 0),
                route("2001:db8:99::", 48, Some("fe80::1"), 100),
            ],
        );
        let u = side6(&ip6).unwrap();
        assert_eq!(
            u,
            IpSide {
                address: ip("2001:db8:2:0:5054:ff:fe12:3456"),
                subnet: net("2001:db8:2::/64"),
                gateway: Some(ip("fe80::1")),
                metric: 100,
                dns: vec![],
                routes: vec![
                    DeviceRoute {
                        dst: net("2001:db8:2::/64"),
                        via: None
                    },
                    DeviceRoute {
                        dst: net("2001:db8:99::/48"),
                        via: Some(ip("fe80::1"))
                    },
                ],
            }
        );
        // A dual-stack device is one uplink with both sides.
        let v4 = side4(&ip4(
            vec![address("10.0.0.2", 24)],
            vec![route("0.0.0.0", 0, Some("10.0.0.1"), 100)],
        ))
        .unwrap();
        let both = uplink_from("eth0", &active("x"), Some(v4), Some(u.clone())).unwrap();
        assert!(both.ipv4.is_some() && both.ipv6 == Some(u.clone()));
        // IPv6 only is an uplink too.
        let only6 = uplink_from("wwan0", &active("x"), None, Some(u)).unwrap();
        assert!(only6.ipv4.is_none());
    }

    /// A connection shares the machine's uplinks when either family's method is
    /// `shared`; auto, manual, disabled or no IP settings at all do not.
    #[test]
    fn shared_connections_are_lans() {
        let settings = |v4: Option<&'static str>, v6: Option<&'static str>| {
            let mut s: HashMap<String, Props> = HashMap::new();
            s.insert("connection".into(), props(vec![("id", Value::from("lan"))]));
            if let Some(m) = v4 {
                s.insert("ipv4".into(), props(vec![("method", Value::from(m))]));
            }
            if let Some(m) = v6 {
                s.insert("ipv6".into(), props(vec![("method", Value::from(m))]));
            }
            s
        };
        assert!(is_shared(&settings(Some("shared"), Some("disabled"))));
        assert!(is_shared(&settings(Some("manual"), Some("shared"))));
        assert!(!is_shared(&settings(Some("auto"), Some("auto"))));
        assert!(!is_shared(&settings(Some("manual"), None)));
        assert!(!is_shared(&settings(None, None)));
    }

    #[test]
    fn ipv6_needs_a_global_address_and_a_default_route() {
        let link_local_only = ip4(
            vec![address("fe80::1:2", 64)],
            vec![route("::", 0, Some("fe80::1"), 100)],
        );
        assert_eq!(side6(&link_local_only), Err(NotUplink::NoAddress));
        // A static address and prefix route, but no router: a LAN, not an uplink.
        let no_default = ip4(
            vec![address("2001:db8:3::2", 64)],
            vec![route("2001:db8:3::", 64, None, 100)],
        );
        assert_eq!(side6(&no_default), Err(NotUplink::NoDefaultRoute));
        // Static, with a global gateway; a DHCPv6 /128 keeps its prefix length.
        let static6 = ip4(
            vec![address("2001:db8:4::2", 128)],
            vec![route("::", 0, Some("2001:db8:4::1"), 50)],
        );
        let u = side6(&static6).unwrap();
        assert_eq!(u.gateway, Some("2001:db8:4::1".parse().unwrap()));
        assert_eq!(u.subnet.prefix(), 128);
        assert!(u.routes.is_empty());
        // An address of the other family is malformed, either way round.
        let bad = ip4(vec![address("10.0.0.2", 24)], vec![]);
        assert_eq!(side6(&bad), Err(NotUplink::Malformed("AddressData entry")));
        let bad = ip4(vec![address("2001:db8::2", 64)], vec![]);
        assert_eq!(side4(&bad), Err(NotUplink::Malformed("AddressData entry")));
    }
}
