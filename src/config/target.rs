//! A health-probe target as the config writes it (`health.targets`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

/// Something probed through every uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// ICMP echo to this address (`"1.1.1.1"` or `"icmp:1.1.1.1"` in the config).
    Icmp(Ipv4Addr),
    /// A TCP connection to this address and port (`"tcp:198.51.100.10:7000"`);
    /// succeeds when the handshake completes.
    Tcp(SocketAddrV4),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("tcp:") {
            return rest.parse::<SocketAddrV4>().map(Target::Tcp).map_err(|_| {
                format!(
                    "{s:?}: expected tcp:ADDRESS:PORT with an IPv4 address, e.g. tcp:192.0.2.1:443"
                )
            });
        }
        let addr = s.strip_prefix("icmp:").unwrap_or(s);
        match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Ok(Target::Icmp(a)),
            Ok(std::net::IpAddr::V6(_)) => Err(format!(
                "{s:?}: IPv6 targets are not supported (uplinks are balanced for IPv4 only)"
            )),
            Err(_) => Err(format!(
                "{s:?} is not an IPv4 address (or icmp:ADDRESS, tcp:ADDRESS:PORT)"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Icmp(a) => write!(f, "{a}"),
            Target::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}
