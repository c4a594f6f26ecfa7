//! Reading NetworkManager over the system D-Bus (zbus): which devices are uplinks.
//! Reads only; never writes to NetworkManager.
//!
//! Per device this costs one `Properties.GetAll` on the device and, for an activated
//! device with IPv4, one on its `IP4Config` and one on its active connection (those two
//! concurrently); all devices are read concurrently after one `GetDevices`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::future::join_all;
use tracing::{debug, warn};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use crate::error::{Error, Result};
use crate::model::{Ipv4Net, Uplink};

const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";
const NM_IFACE: &str = "org.freedesktop.NetworkManager";
const DEVICE_IFACE: &str = "org.freedesktop.NetworkManager.Device";
const IP4CONFIG_IFACE: &str = "org.freedesktop.NetworkManager.IP4Config";
const ACTIVE_IFACE: &str = "org.freedesktop.NetworkManager.Connection.Active";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

/// `NM_DEVICE_STATE_ACTIVATED`.
pub const DEVICE_STATE_ACTIVATED: u32 = 100;
/// `NM_DEVICE_TYPE_LOOPBACK`.
pub const DEVICE_TYPE_LOOPBACK: u32 = 32;
/// The main routing table; NetworkManager leaves `table` out of `RouteData` for it.
const MAIN_TABLE: u32 = 254;

/// How long one D-Bus call may take before we give up on NetworkManager.
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

/// The properties of one D-Bus object, as `Properties.GetAll` returns them.
type Props = HashMap<String, OwnedValue>;

/// A connection to NetworkManager on the system bus.
pub struct NetworkManager {
    conn: zbus::Connection,
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
        let conn = async {
            zbus::connection::Builder::system()?
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
        }
        .await
        .map_err(|e| {
            Error::NetworkManager(format!(
                "cannot reach the system D-Bus: {e}; is dbus running (and, if set, does \
                 DBUS_SYSTEM_BUS_ADDRESS name the right bus)?"
            ))
        })?;
        Ok(NetworkManager { conn })
    }

    /// The underlying bus connection, e.g. to subscribe to NetworkManager's signals.
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// Every device in the activated state whose Ip4Config holds a default route,
    /// skipping loopback. Errors name the object that could not be read.
    pub async fn uplinks(&self) -> Result<Vec<Uplink>> {
        let devices = self.devices().await?;
        let reads = devices.iter().map(|d| self.uplink_of(d));
        let mut uplinks = Vec::new();
        for read in join_all(reads).await {
            if let Some(uplink) = read? {
                uplinks.push(uplink);
            }
        }
        uplinks.sort_by(|a, b| a.iface.cmp(&b.iface));
        Ok(uplinks)
    }

    /// NetworkManager's IPv4 connectivity verdict (`Ip4Connectivity`: 0 unknown, 1 none,
    /// 2 portal, 3 limited, 4 full) of every device with an interface, by interface.
    /// Loopback is left out.
    pub async fn ip4_connectivity(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .devices()
            .await?
            .iter()
            .filter(|d| !d.is_loopback())
            .filter_map(|d| Some((d.iface(), d.u32("Ip4Connectivity")?)))
            .filter(|(iface, _)| !iface.is_empty())
            .collect())
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
            .map_err(|e| {
                if is_service_unknown(&e) {
                    Error::NetworkManager(format!(
                        "NetworkManager is not running: nobody owns {NM_BUS_NAME} on the \
                         system bus ({e}); start NetworkManager"
                    ))
                } else {
                    Error::NetworkManager(format!(
                        "cannot list devices ({NM_IFACE}.GetDevices on {NM_PATH}): {e}; \
                         is NetworkManager running and are we allowed to talk to it?"
                    ))
                }
            })?;
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
        let iface = device.iface();
        let state = device.u32("State").unwrap_or(0);
        let device_type = device.u32("DeviceType").unwrap_or(0);
        let skip = |why: &str| {
            debug!(device = %device.path, iface, state, device_type, "not an uplink: {why}");
            Ok(None)
        };
        if device.is_loopback() {
            return skip("loopback");
        }
        if state != DEVICE_STATE_ACTIVATED {
            return skip("not activated");
        }
        let Some(ip4_path) = device.object("Ip4Config") else {
            return skip("no IPv4 configuration");
        };
        let Some(active_path) = device.object("ActiveConnection") else {
            return skip("no active connection");
        };
        let (ip4, active) = futures::join!(
            self.get_all(&ip4_path, IP4CONFIG_IFACE),
            self.get_all(&active_path, ACTIVE_IFACE)
        );
        let (Some(ip4), Some(active)) = (ip4?, active?) else {
            return skip("its configuration vanished while reading it");
        };
        match uplink_from(&iface, &ip4, &active) {
            Ok(uplink) => {
                debug!(device = %device.path, device_type, ?uplink, "uplink");
                Ok(Some(uplink))
            }
            Err(NotUplink::NoDefaultRoute) => skip("no IPv4 default route in the main table"),
            Err(NotUplink::NoAddress) => skip("no IPv4 address"),
            Err(NotUplink::Malformed(what)) => {
                warn!(device = %device.path, iface, "ignoring device: malformed {what}");
                Ok(None)
            }
        }
    }
}

/// Why a device's IPv4 configuration makes no uplink.
#[derive(Debug, PartialEq, Eq)]
enum NotUplink {
    NoDefaultRoute,
    NoAddress,
    Malformed(&'static str),
}

/// One entry of `RouteData`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    dest: Ipv4Net,
    next_hop: Option<Ipv4Addr>,
    metric: u32,
    table: u32,
    /// `unicast` unless NetworkManager says otherwise (`blackhole`, `local`, ...).
    kind: String,
}

impl Route {
    fn is_default(&self) -> bool {
        self.dest.prefix == 0
    }
}

/// Builds an uplink from the properties of a device's `IP4Config` and active
/// connection. Pure, so that it is tested without a bus.
fn uplink_from(iface: &str, ip4: &Props, active: &Props) -> Result<Uplink, NotUplink> {
    let routes = dict_array(ip4, "RouteData")
        .ok_or(NotUplink::Malformed("RouteData"))?
        .iter()
        .map(parse_route)
        .collect::<Option<Vec<Route>>>()
        .ok_or(NotUplink::Malformed("RouteData entry"))?;
    let addresses = dict_array(ip4, "AddressData")
        .ok_or(NotUplink::Malformed("AddressData"))?
        .iter()
        .map(parse_address)
        .collect::<Option<Vec<(Ipv4Addr, u8)>>>()
        .ok_or(NotUplink::Malformed("AddressData entry"))?;

    let default = routes
        .iter()
        .filter(|r| r.is_default() && r.table == MAIN_TABLE && r.kind == "unicast")
        .min_by_key(|r| r.metric)
        .ok_or(NotUplink::NoDefaultRoute)?;
    let &(address, prefix) = addresses.first().ok_or(NotUplink::NoAddress)?;

    let is_local_host_route =
        |r: &Route| r.dest.prefix == 32 && addresses.iter().any(|(a, _)| *a == r.dest.addr);
    let mut local_routes: Vec<Ipv4Net> = routes
        .iter()
        .filter(|r| !r.is_default() && r.table == MAIN_TABLE && r.kind != "local")
        .filter(|r| !is_local_host_route(r))
        .map(|r| r.dest)
        .collect();
    local_routes.sort();
    local_routes.dedup();

    Ok(Uplink {
        iface: iface.to_string(),
        connection_id: str_prop(active, "Id").unwrap_or_default().to_string(),
        connection_uuid: str_prop(active, "Uuid").unwrap_or_default().to_string(),
        address,
        subnet: Ipv4Net::new(address, prefix),
        gateway: default.next_hop,
        metric: default.metric,
        local_routes,
    })
}

fn parse_route(entry: &Props) -> Option<Route> {
    let dest: Ipv4Addr = str_prop(entry, "dest")?.parse().ok()?;
    let prefix = u8::try_from(u32_prop(entry, "prefix")?)
        .ok()
        .filter(|p| *p <= 32)?;
    let next_hop = match str_prop(entry, "next-hop") {
        None => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().ok()?).filter(|a| !a.is_unspecified()),
    };
    let table = match u32_prop(entry, "table") {
        None | Some(0) => MAIN_TABLE,
        Some(t) => t,
    };
    Some(Route {
        dest: Ipv4Net::new(dest, prefix),
        next_hop,
        metric: u32_prop(entry, "metric").unwrap_or(0),
        table,
        kind: str_prop(entry, "type").unwrap_or("unicast").to_string(),
    })
}

fn parse_address(entry: &Props) -> Option<(Ipv4Addr, u8)> {
    let address = str_prop(entry, "address")?.parse().ok()?;
    let prefix = u8::try_from(u32_prop(entry, "prefix")?)
        .ok()
        .filter(|p| *p <= 32)?;
    Some((address, prefix))
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
        let u = uplink_from("eth0", &ip4, &active("wired \"$(reboot)\"")).unwrap();
        assert_eq!(
            u,
            Uplink {
                iface: "eth0".into(),
                connection_id: "wired \"$(reboot)\"".into(),
                connection_uuid: "5f1c0a52-0000-4000-8000-000000000001".into(),
                address: Ipv4Addr::new(10, 71, 1, 2),
                subnet: Ipv4Net::new(Ipv4Addr::new(10, 71, 1, 0), 24),
                gateway: Some(Ipv4Addr::new(10, 71, 1, 1)),
                metric: 100,
                local_routes: vec![
                    Ipv4Net::new(Ipv4Addr::new(10, 71, 1, 0), 24),
                    Ipv4Net::new(Ipv4Addr::new(192, 0, 2, 0), 24),
                ],
            }
        );
    }

    #[test]
    fn point_to_point_has_no_gateway() {
        for next_hop in [None, Some("0.0.0.0")] {
            let ip4 = ip4(
                vec![address("100.64.0.7", 32)],
                vec![route("0.0.0.0", 0, next_hop, 50)],
            );
            let u = uplink_from("ppp0", &ip4, &active("isp")).unwrap();
            assert_eq!(u.gateway, None);
            assert_eq!(u.metric, 50);
            assert_eq!(u.subnet, Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 7), 32));
            assert!(u.local_routes.is_empty());
        }
    }

    /// `ipv4.never-default`: only the prefix route, so not an uplink.
    #[test]
    fn never_default_is_not_an_uplink() {
        let ip4 = ip4(
            vec![address("10.71.3.2", 24)],
            vec![route("10.71.3.0", 24, None, 101)],
        );
        assert_eq!(
            uplink_from("eth2", &ip4, &active("lan")),
            Err(NotUplink::NoDefaultRoute)
        );
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
        let u = uplink_from("eth1", &ip4, &active("x")).unwrap();
        assert_eq!(u.gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(u.metric, 200);
        assert_eq!(u.address, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn default_route_without_address_is_not_an_uplink() {
        let ip4 = ip4(vec![], vec![route("0.0.0.0", 0, Some("10.0.0.1"), 100)]);
        assert_eq!(
            uplink_from("eth0", &ip4, &active("x")),
            Err(NotUplink::NoAddress)
        );
    }

    #[test]
    fn malformed_entries_are_reported() {
        let ip4 = ip4(
            vec![address("10.0.0.2", 24)],
            vec![route("not-an-address", 0, None, 1)],
        );
        assert_eq!(
            uplink_from("eth0", &ip4, &active("x")),
            Err(NotUplink::Malformed("RouteData entry"))
        );
        let wrong_type = props(vec![("RouteData", Value::from("x"))]);
        assert_eq!(
            uplink_from("eth0", &wrong_type, &active("x")),
            Err(NotUplink::Malformed("RouteData"))
        );
    }
}
