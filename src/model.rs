//! Facts about the machine's uplinks, as read from NetworkManager. Plain data: the
//! planner turns them into the desired kernel state. Both address families share one
//! shape ([`IpSide`]); only the address type differs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// An address family. The kernel keeps a separate routing policy, routing tables and
/// conntrack/NAT per family, so much of what we install exists once per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address length in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
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

/// A prefix of either family such as 192.0.2.0/24 or 2001:db8::/64, host bits cleared.
/// Serialises as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` bits (clamped to the family's length).
    pub fn new(addr: IpAddr, prefix: u8) -> IpNet {
        let family = Family::of(addr);
        let prefix = prefix.min(family.bits());
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        IpNet { addr, prefix }
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet::new(addr, Family::of(addr).bits())
    }

    /// 0.0.0.0/0 or ::/0.
    pub fn default_route(family: Family) -> IpNet {
        IpNet::new(family.unspecified(), 0)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    pub fn is_host(&self) -> bool {
        self.prefix == self.family().bits()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && IpNet::new(ip, self.prefix).addr == self.addr
    }

    /// The last address of the prefix (for ranges, e.g. nftables intervals).
    pub fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
            }
            IpAddr::V6(a) => {
                let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
            }
        }
    }

    /// fe80::/10: link-local unicast, only meaningful together with an interface.
    pub fn link_local6() -> IpNet {
        IpNet::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10)
    }

    /// ff00::/8: multicast (neighbour discovery, router advertisements, MLD, mDNS ...).
    pub fn multicast6() -> IpNet {
        IpNet::new(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8)
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    /// `ADDRESS/PREFIX`, or an address alone (a host prefix). Host bits must be clear.
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or prefix"))?;
        let bits = Family::of(addr).bits();
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={bits}"))?,
        };
        let net = IpNet::new(addr, prefix);
        if net.addr != addr {
            return Err(format!("{s:?} has host bits set (did you mean {net}?)"));
        }
        Ok(net)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A route NetworkManager installed for a device in the main table, other than its
/// default route: a destination reached through this device (on-link when `via` is
/// `None`, as a prefix from a router advertisement or a DHCPv6 link's /64).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
}

/// What an uplink has of one address family: an address and a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSide {
    /// The address used as source on this uplink (IPv6: the first global one
    /// NetworkManager lists).
    pub address: IpAddr,
    /// The network of `address` (a /128 when an IPv6 address came alone, as from
    /// DHCPv6; the on-link prefix is then among `routes`).
    pub subnet: IpNet,
    /// Next hop of the default route; `None` on point-to-point links. An IPv6 router
    /// is usually a link-local address, which is why every route through it names the
    /// interface.
    pub gateway: Option<IpAddr>,
    /// Metric of the default route in the main table (lower is preferred there).
    pub metric: u32,
    /// The device's other main-table routes, link-local and multicast ones left out:
    /// destinations reached through it directly, never balanced, and copied into the
    /// uplink's own table so that replies to them leave the right way.
    pub routes: Vec<DeviceRoute>,
    /// The name servers NetworkManager learned on this uplink in this family (DHCP,
    /// router advertisements, the connection's settings): reached through it.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

impl IpSide {
    pub fn family(&self) -> Family {
        Family::of(self.address)
    }

    /// Destinations this side reaches directly: its subnet (unless a host prefix, which
    /// the machine's own address covers) and its other routes.
    pub fn networks(&self) -> impl Iterator<Item = IpNet> + '_ {
        (!self.subnet.is_host())
            .then_some(self.subnet)
            .into_iter()
            .chain(self.routes.iter().map(|r| r.dst))
    }
}

/// One NetworkManager device that is activated and has a default route in at least one
/// family. Its identity (id, mark, table number) is shared by both families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// The IP interface (`IpInterface`), e.g. `eth0`, `wlan0`, `ppp0`.
    pub iface: String,
    /// NetworkManager connection id (its name, e.g. "Wired connection 1").
    pub connection_id: String,
    /// NetworkManager connection UUID: stable across NetworkManager restarts and
    /// interface renames, so our identity of an uplink is keyed by it.
    pub connection_uuid: String,
    pub ipv4: Option<IpSide>,
    pub ipv6: Option<IpSide>,
    /// NetworkManager says the connection is metered (its device's `Metered` is yes or
    /// guess-yes: `connection.metered yes`, or a tethered phone or mobile-broadband
    /// modem it recognised). Such an uplink is a backup by default.
    #[serde(default)]
    pub metered: bool,
}

impl Uplink {
    pub fn side(&self, family: Family) -> Option<&IpSide> {
        match family {
            Family::V4 => self.ipv4.as_ref(),
            Family::V6 => self.ipv6.as_ref(),
        }
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4.iter().chain(&self.ipv6).map(|s| s.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_clear_host_bits_in_both_families() {
        assert_eq!(IpNet::new(ip("10.1.2.3"), 24).to_string(), "10.1.2.0/24");
        assert_eq!(IpNet::new(ip("10.1.2.3"), 0).to_string(), "0.0.0.0/0");
        assert_eq!(IpNet::new(ip("10.1.2.3"), 99).prefix(), 32);
        let a = ip("2001:db8:1:0:a:b:c:d");
        assert_eq!(IpNet::new(a, 64).to_string(), "2001:db8:1::/64");
        assert_eq!(IpNet::new(a, 0).to_string(), "::/0");
        assert_eq!(IpNet::new(a, 200).prefix(), 128);
        assert!(IpNet::link_local6().contains(ip("fe80::1")));
        assert!(IpNet::link_local6().contains(ip("febf::1")));
        assert!(!IpNet::link_local6().contains(ip("fec0::1")));
        assert!(!IpNet::link_local6().contains(ip("10.0.0.1")));
        assert!(IpNet::multicast6().contains(ip("ff02::1")));
        assert_eq!(IpNet::default_route(Family::V6).to_string(), "::/0");
        assert_eq!(IpNet::default_route(Family::V4).to_string(), "0.0.0.0/0");
        assert_eq!(IpNet::new(ip("10.1.2.3"), 24).last(), ip("10.1.2.255"));
        assert_eq!(IpNet::new(ip("2001:db8::"), 127).last(), ip("2001:db8::1"));
        assert!(IpNet::host(ip("2001:db8::5")).is_host());
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!("10.0.0.0/8".parse::<IpNet>().unwrap().prefix(), 8);
        assert_eq!("192.0.2.7".parse::<IpNet>().unwrap().prefix(), 32);
        assert_eq!("2001:db8::/32".parse::<IpNet>().unwrap().prefix(), 32);
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "banana",
            "",
            "::/129",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let j = serde_json::to_string(&IpNet::new(ip("10.0.0.0"), 8)).unwrap();
        assert_eq!(j, "\"10.0.0.0/8\"");
        assert_eq!(
            serde_json::from_str::<IpNet>(&j).unwrap(),
            IpNet::new(ip("10.0.0.0"), 8)
        );
    }
}
