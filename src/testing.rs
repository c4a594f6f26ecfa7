//! Fixtures shared by unit tests: uplinks as NetworkManager would describe them.

use std::net::IpAddr;

use crate::config::Config;
use crate::model::{DeviceRoute, IpNet, IpSide, Uplink};
use crate::plan::{Facts, Plan, plan};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 10.0.N.2/24 via 10.0.N.1, metric 100+N.
pub fn v4(n: u8) -> IpSide {
    IpSide {
        address: ip(&format!("10.0.{n}.2")),
        subnet: IpNet::new(ip(&format!("10.0.{n}.0")), 24),
        gateway: Some(ip(&format!("10.0.{n}.1"))),
        metric: 100 + u32::from(n),
        dns: vec![],
        routes: vec![],
    }
}

/// 2001:db8:N::2/64 with a link-local router, as router advertisements give it (the
/// prefix route listed too, as NetworkManager does).
pub fn v6(n: u8) -> IpSide {
    let prefix = IpNet::new(ip(&format!("2001:db8:{n:x}::")), 64);
    IpSide {
        address: ip(&format!("2001:db8:{n:x}::2")),
        subnet: prefix,
        gateway: Some(ip("fe80::1")),
        metric: 100 + u32::from(n),
        dns: vec![],
        routes: vec![DeviceRoute {
            dst: prefix,
            via: None,
        }],
    }
}

/// An IPv4 uplink: interface, connection `conn-IFACE`, UUID `uuid-IFACE`.
pub fn uplink(iface: &str, n: u8) -> Uplink {
    Uplink {
        iface: iface.into(),
        connection_id: format!("conn-{iface}"),
        connection_uuid: format!("uuid-{iface}"),
        ipv4: Some(v4(n)),
        ipv6: None,
        metered: false,
    }
}

pub fn dual(iface: &str, n: u8) -> Uplink {
    Uplink {
        ipv6: Some(v6(n)),
        ..uplink(iface, n)
    }
}

pub fn v6_only(iface: &str, n: u8) -> Uplink {
    Uplink {
        ipv4: None,
        ..dual(iface, n)
    }
}

pub fn facts(uplinks: Vec<Uplink>) -> Facts {
    Facts {
        uplinks,
        ..Default::default()
    }
}

/// eth0 and wlan0, dual-stack, planned with the default config.
pub fn two_dual_uplinks() -> Plan {
    plan(
        &Config::default(),
        &facts(vec![dual("eth0", 1), dual("wlan0", 2)]),
    )
}
