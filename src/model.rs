//! Facts about the machine's uplinks, as read from NetworkManager. Plain data: the
//! planner turns them into the desired kernel state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// An IPv6 prefix such as 2001:db8::/64 (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
    /// Builds the network containing `addr`, clearing host bits.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Self {
        let prefix = prefix.min(128);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        Ipv6Net {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        Ipv6Net::new(ip, self.prefix).addr == self.addr
    }

    /// fe80::/10: link-local unicast, only meaningful together with an interface.
    pub const LINK_LOCAL: Ipv6Net = Ipv6Net {
        addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        prefix: 10,
    };
    /// ff00::/8: multicast (neighbour discovery, router advertisements, MLD, mDNS ...).
    pub const MULTICAST: Ipv6Net = Ipv6Net {
        addr: Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        prefix: 8,
    };
}

impl std::fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A prefix of either family, for what is shared between them (routes, exclusions).
/// Serialises like the prefix it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum IpNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl IpNet {
    pub fn family(&self) -> Family {
        match self {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            IpNet::V4(n) => n.addr.into(),
            IpNet::V6(n) => n.addr.into(),
        }
    }

    pub fn prefix(&self) -> u8 {
        match self {
            IpNet::V4(n) => n.prefix,
            IpNet::V6(n) => n.prefix,
        }
    }

    /// The default route's destination of a family (0.0.0.0/0 or ::/0).
    pub fn default_route(family: Family) -> IpNet {
        match family {
            Family::V4 => Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).into(),
            Family::V6 => Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).into(),
        }
    }
}

impl From<Ipv4Net> for IpNet {
    fn from(n: Ipv4Net) -> Self {
        IpNet::V4(n)
    }
}

impl From<Ipv6Net> for IpNet {
    fn from(n: Ipv6Net) -> Self {
        IpNet::V6(n)
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpNet::V4(n) => n.fmt(f),
            IpNet::V6(n) => n.fmt(f),
        }
    }
}

/// An address family. The kernel keeps a separate routing policy, routing tables and
/// netfilter tables per family, so most of what we install exists once per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One NetworkManager device that is activated and has a default route in at least one
/// family. Its identity (id, mark, table number) is shared by both families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    /// The IP interface (`IpInterface`), e.g. `eth0`, `wlan0`, `ppp0`.
    pub iface: String,
    /// NetworkManager connection id (its name, e.g. "Wired connection 1").
    pub connection_id: String,
    pub connection_uuid: String,
    /// The IPv4 side, when the device has an IPv4 default route. Serialised inline, so
    /// an IPv4 uplink reads as it always did.
    #[serde(flatten)]
    pub ipv4: Option<Ip4Uplink>,
    /// The IPv6 side, when the device has an IPv6 default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ip6Uplink>,
}

/// What an uplink has of IPv4: an address and a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ip4Uplink {
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

/// What an uplink has of IPv6: a global address and a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ip6Uplink {
    /// A global address of the device (the first one NetworkManager lists).
    pub address: Ipv6Addr,
    /// The on-link network of `address` (a /128 when the address came alone, as from
    /// DHCPv6; the on-link prefix is then among `local_routes`).
    pub subnet: Ipv6Net,
    /// Next hop of the default route, usually the router's link-local address (which is
    /// why every route through it names the interface); `None` on point-to-point links.
    pub gateway: Option<Ipv6Addr>,
    /// Metric of the default route in the main table.
    pub metric: u32,
    /// Other routes NetworkManager installed for this device, link-local and multicast
    /// ones left out (those are never balanced anyway).
    pub local_routes: Vec<Ipv6Net>,
}

impl Uplink {
    /// An uplink with an IPv4 side only (what every uplink was before IPv6 balancing).
    pub fn v4(iface: &str, connection_id: &str, connection_uuid: &str, ipv4: Ip4Uplink) -> Uplink {
        Uplink {
            iface: iface.into(),
            connection_id: connection_id.into(),
            connection_uuid: connection_uuid.into(),
            ipv4: Some(ipv4),
            ipv6: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_prefixes_clear_host_bits() {
        let a: Ipv6Addr = "2001:db8:1:0:a:b:c:d".parse().unwrap();
        assert_eq!(Ipv6Net::new(a, 64).to_string(), "2001:db8:1::/64");
        assert_eq!(Ipv6Net::new(a, 0).to_string(), "::/0");
        assert_eq!(Ipv6Net::new(a, 200).prefix, 128);
        assert!(Ipv6Net::LINK_LOCAL.contains("fe80::1".parse().unwrap()));
        assert!(Ipv6Net::LINK_LOCAL.contains("febf::1".parse().unwrap()));
        assert!(!Ipv6Net::LINK_LOCAL.contains("fec0::1".parse().unwrap()));
        assert!(Ipv6Net::MULTICAST.contains("ff02::1".parse().unwrap()));
        assert_eq!(IpNet::default_route(Family::V6).to_string(), "::/0");
        assert_eq!(IpNet::default_route(Family::V4).to_string(), "0.0.0.0/0");
    }

    #[test]
    fn v4_uplink_serialises_as_before() {
        let u = Uplink::v4(
            "eth0",
            "c",
            "u",
            Ip4Uplink {
                address: Ipv4Addr::new(10, 0, 0, 2),
                subnet: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24),
                gateway: None,
                metric: 1,
                local_routes: vec![],
            },
        );
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["address"], "10.0.0.2");
        assert_eq!(v["subnet"]["prefix"], 24);
        assert!(v.get("ipv6").is_none());
    }
}
