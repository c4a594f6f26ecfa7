//! Facts about the machine's uplinks, as read from NetworkManager. Plain data: the
//! planner turns them into the desired kernel state.

use std::net::Ipv4Addr;

use serde::Serialize;

/// An IPv4 prefix such as 192.0.2.0/24 (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// Builds the network containing `addr`, clearing host bits.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Net::new(ip, self.prefix).addr == self.addr
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One NetworkManager device that is activated and has an IPv4 default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    /// The IP interface (`IpInterface`), e.g. `eth0`, `wlan0`, `ppp0`.
    pub iface: String,
    /// NetworkManager connection id (its name, e.g. "Wired connection 1").
    pub connection_id: String,
    pub connection_uuid: String,
    /// Address used as source on this uplink.
    pub address: Ipv4Addr,
    /// The on-link network of `address`.
    pub subnet: Ipv4Net,
    /// Next hop of the default route; `None` on point-to-point links.
    pub gateway: Option<Ipv4Addr>,
    /// Metric of the default route in the main table (lower is preferred there).
    pub metric: u32,
    /// Other routes NetworkManager installed for this device (not the default route):
    /// destinations reached directly, never balanced.
    pub local_routes: Vec<Ipv4Net>,
}
