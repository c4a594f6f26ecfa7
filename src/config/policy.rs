//! `[[policy]]`: the user's own rungs of the ladder (which destinations, ports,
//! protocol and user go where), parsed and checked here; the planner turns them into
//! rungs (`plan::ladder`).

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::IpNet;

/// The longest `sticky` time: a day.
pub const STICKY_MAX_SECS: u64 = 86_400;

/// One `[[policy]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Shown by `status` and `explain`; unique.
    pub name: String,
    /// Destinations: prefixes or addresses of either family, or host names (resolved
    /// at each reconcile). Empty: any destination.
    #[serde(default)]
    pub to: Vec<String>,
    /// Destination ports or ranges (`"443"`, `"8000-8100"`). Empty: any.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// `tcp`, `udp`, `icmp`, ... or a protocol number. Absent: any.
    #[serde(default)]
    pub protocol: Option<ProtocolSpec>,
    /// A local user name or uid: connections of that user's sockets.
    #[serde(default)]
    pub user: Option<UserSpec>,
    /// Uplinks by connection id or interface, in order. Empty: every uplink.
    #[serde(default)]
    pub uplinks: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    /// `"10m"`: a destination keeps its uplink this long after its last new connection.
    #[serde(default)]
    pub sticky: Option<String>,
    /// When none of its uplinks is usable: `true` falls back to the general balance,
    /// `false` drops its new connections.
    #[serde(default = "yes")]
    pub fallback: bool,
}

fn yes() -> bool {
    true
}

/// How a policy uses its uplinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its own exact rounds over its usable uplinks.
    #[default]
    Balance,
    /// The first usable uplink, in the order listed.
    Failover,
    /// No balancing: the main table's route, as if nm-multiwan were not there.
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Balance => "balance",
            Mode::Failover => "failover",
            Mode::Direct => "direct",
        }
    }
}

/// A port or range, written as a string (`"443"`, `"8000-8100"`) or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Text(String),
}

impl PortSpec {
    /// The inclusive range, or why not.
    pub fn range(&self) -> Result<(u16, u16), String> {
        let port = |s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .map(|p| p as u16)
                .ok_or_else(|| format!("{s:?} is not a port 1..=65535"))
        };
        match self {
            PortSpec::Number(n) => u16::try_from(*n)
                .ok()
                .filter(|p| *p >= 1)
                .map(|p| (p, p))
                .ok_or_else(|| format!("{n} is not a port 1..=65535")),
            PortSpec::Text(t) => match t.split_once('-') {
                None => port(t).map(|p| (p, p)),
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        Err(format!(
                            "the range {t:?} is upside down (did you mean {b}-{a}?)"
                        ))
                    } else {
                        Ok((a, b))
                    }
                }
            },
        }
    }
}

/// An IP protocol, by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProtocolSpec {
    Number(i64),
    Name(String),
}

/// The protocol names a policy accepts, with their numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("tcp", 6),
    ("udp", 17),
    ("icmp", 1),
    ("icmpv6", 58),
    ("sctp", 132),
    ("dccp", 33),
    ("udplite", 136),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
];

/// Protocols with ports.
pub const WITH_PORTS: &[u8] = &[6, 17, 132, 33, 136];

impl ProtocolSpec {
    pub fn number(&self) -> Result<u8, String> {
        match self {
            ProtocolSpec::Number(n) => {
                u8::try_from(*n).map_err(|_| format!("{n} is not a protocol number 0..=255"))
            }
            ProtocolSpec::Name(s) => {
                let lower = s.trim().to_ascii_lowercase();
                PROTOCOLS
                    .iter()
                    .find(|(n, _)| *n == lower)
                    .map(|(_, p)| *p)
                    .or_else(|| lower.parse().ok())
                    .ok_or_else(|| format!("unknown protocol {s:?}"))
            }
        }
    }
}

/// A user, by name or uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserSpec {
    Uid(i64),
    Name(String),
}

impl UserSpec {
    /// Whether it is written right: a uid, or a name as user names go. Whether the
    /// user exists is the machine's business at each reconcile (a warning then).
    pub fn check(&self) -> Result<(), String> {
        match self {
            UserSpec::Uid(n) => u32::try_from(*n)
                .map(|_| ())
                .map_err(|_| format!("{n} is not a uid 0..=4294967295")),
            UserSpec::Name(s) => {
                let ok = !s.is_empty()
                    && s.len() <= 256
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
                    && !s.starts_with('-');
                if ok {
                    Ok(())
                } else {
                    Err(format!("{s:?} is not a user name"))
                }
            }
        }
    }

    /// The uid: a number, or a name looked up in the user database.
    pub fn uid(&self) -> Result<u32, String> {
        match self {
            UserSpec::Uid(n) => {
                u32::try_from(*n).map_err(|_| format!("{n} is not a uid 0..=4294967295"))
            }
            UserSpec::Name(s) => match s.parse::<u32>() {
                Ok(uid) => Ok(uid),
                Err(_) => uid_of(s).ok_or_else(|| format!("no local user {s:?}")),
            },
        }
    }
}

/// A user's uid from the user database (getpwnam_r).
pub fn uid_of(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the result points into `pwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// One entry of `to`: a prefix (or address) or a host name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    Net(IpNet),
    Host(String),
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Destination, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("an empty destination".into());
        }
        let looks_numeric =
            t.contains('/') || t.contains(':') || t.chars().all(|c| c.is_ascii_digit() || c == '.');
        if looks_numeric {
            return t.parse::<IpNet>().map(Destination::Net);
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = t.strip_suffix('.').unwrap_or(t);
        if name.len() <= 253 && name.split('.').all(label_ok) {
            Ok(Destination::Host(name.to_ascii_lowercase()))
        } else {
            Err(format!("{s:?} is neither a prefix nor a host name"))
        }
    }
}

/// `"30s"`, `"10m"`, `"2h"`, `"1d"` or bare seconds, in seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a time such as \"30s\", \"10m\" or \"2h\""))?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too long"))
}

impl PolicyConfig {
    /// The destinations, parsed (valid after [`super::Config::parse`]).
    pub fn destinations(&self) -> Vec<Destination> {
        self.to.iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// The host names among the destinations.
    pub fn host_names(&self) -> Vec<String> {
        self.destinations()
            .into_iter()
            .filter_map(|d| match d {
                Destination::Host(h) => Some(h),
                Destination::Net(_) => None,
            })
            .collect()
    }

    pub fn port_ranges(&self) -> Vec<(u16, u16)> {
        self.ports.iter().filter_map(|p| p.range().ok()).collect()
    }

    pub fn protocol_number(&self) -> Option<u8> {
        self.protocol.as_ref().and_then(|p| p.number().ok())
    }

    pub fn sticky_secs(&self) -> Option<u64> {
        self.sticky.as_deref().and_then(|s| parse_duration(s).ok())
    }
}

/// Resolves a host name to its addresses (both families), through the system's
/// resolver (`getaddrinfo`: /etc/hosts, then DNS, as every program on the machine).
pub fn resolve(name: &str) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<IpAddr> = (name, 0).to_socket_addrs()?.map(|a| a.ip()).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(PortSpec::Text("443".into()).range(), Ok((443, 443)));
        assert_eq!(PortSpec::Text("8000-8100".into()).range(), Ok((8000, 8100)));
        assert_eq!(PortSpec::Number(53).range(), Ok((53, 53)));
        assert!(
            PortSpec::Text("9000-8000".into())
                .range()
                .unwrap_err()
                .contains("upside down")
        );
        for bad in ["0", "65536", "", "http", "1-", "-5"] {
            assert!(PortSpec::Text(bad.into()).range().is_err(), "{bad}");
        }
        assert!(PortSpec::Number(0).range().is_err());
        assert!(PortSpec::Number(70000).range().is_err());
    }

    #[test]
    fn destinations_are_prefixes_or_names() {
        assert_eq!(
            "10.0.0.0/8".parse::<Destination>(),
            Ok(Destination::Net("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            "Portal.Example.edu.".parse::<Destination>(),
            Ok(Destination::Host("portal.example.edu".into()))
        );
        assert!(matches!(
            "2001:db8::/32".parse::<Destination>(),
            Ok(Destination::Net(_))
        ));
        for bad in [
            "",
            "  ",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0",
            "a..b",
            "-x.org",
            "a_b",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protocols_and_durations() {
        assert_eq!(ProtocolSpec::Name("TCP".into()).number(), Ok(6));
        assert_eq!(ProtocolSpec::Name("icmp".into()).number(), Ok(1));
        assert_eq!(ProtocolSpec::Number(47).number(), Ok(47));
        assert!(ProtocolSpec::Name("tcpp".into()).number().is_err());
        assert!(ProtocolSpec::Number(256).number().is_err());
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert!(parse_duration("10 minutes").is_err());
        assert_eq!(parse_duration("10 min"), Ok(600));
        assert!(parse_duration("").is_err());
        assert_eq!(UserSpec::Name("root".into()).uid(), Ok(0));
        assert_eq!(UserSpec::Uid(1000).uid(), Ok(1000));
        assert!(UserSpec::Name("no-such-user-here".into()).uid().is_err());
    }
}
