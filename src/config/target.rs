//! A health-probe target as the config writes it (`health.targets`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::model::Family;

/// Something probed through every uplink, in the target's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// ICMP (ICMPv6) echo to this address (`"1.1.1.1"`, `"2620:fe::fe"` or
    /// `"icmp:1.1.1.1"` in the config).
    Icmp(IpAddr),
    /// A TCP connection to this address and port (`"tcp:198.51.100.10:7000"`,
    /// `"tcp:[2001:db8::1]:443"`); succeeds when the handshake completes.
    Tcp(SocketAddr),
}

impl Target {
    /// The family an uplink is probed in with this target.
    pub fn family(&self) -> Family {
        match self {
            Target::Icmp(a) => Family::of(*a),
            Target::Tcp(a) => Family::of(a.ip()),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("tcp:") {
            return rest.parse::<SocketAddr>().map(Target::Tcp).map_err(|_| {
                format!(
                    "{s:?}: expected tcp:ADDRESS:PORT, e.g. tcp:192.0.2.1:443 or \
                     tcp:[2001:db8::1]:443 (an IPv6 address in brackets)"
                )
            });
        }
        let addr = s.strip_prefix("icmp:").unwrap_or(s);
        match addr.parse::<IpAddr>() {
            Ok(a) if a.is_unspecified() || a.is_multicast() => Err(format!(
                "{s:?}: not an address one host answers from (unspecified or multicast)"
            )),
            Ok(a) => Ok(Target::Icmp(a)),
            Err(_) => Err(format!(
                "{s:?} is not an IPv4 or IPv6 address (or icmp:ADDRESS, tcp:ADDRESS:PORT)"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Icmp(a) => write!(f, "{a}"),
            // SocketAddr writes IPv6 in brackets, as the config takes it.
            Target::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}
