//! The kernel, in our words: what nm-multiwan installs there, and the modules that read
//! and write it. The planner builds these values; the reconcile diffs them against what
//! these modules read back and applies the difference. Nothing here knows about
//! NetworkManager or the config.
//!
//! - [`routing`]: our routes and `ip rule`s over rtnetlink, the interfaces' addresses;
//! - [`sysctl`]: the per-interface sysctls we need;
//! - [`firewall`]: marking and NAT, one trait with an nftables and an iptables backend;
//! - [`conntrack`]: the connection tracking table over netlink;
//! - [`keeper`]: departed uplink addresses kept alive for the connections still using them;
//! - [`sockets`]: aborting the machine's own TCP sockets of connections that cannot work;
//! - [`cgroup`]: the cgroups of `run --via`.

pub mod cgroup;
pub mod conntrack;
mod dump;
pub mod firewall;
pub mod keeper;
pub mod nft;
pub mod routing;
pub mod sockets;
pub mod sysctl;

use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Family, IpNet};

/// A route in one of our tables. The family is that of `dst`; `gateway` and `prefsrc`
/// are of the same family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Route {
    pub table: u32,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: String,
    pub prefsrc: Option<IpAddr>,
    /// Scope link (directly reachable) rather than universe. IPv4 only: the kernel
    /// keeps every IPv6 route at scope universe.
    pub scope_link: bool,
    /// Gateway outside every on-link prefix of the device (point-to-point style).
    pub onlink: bool,
}

impl Route {
    pub fn family(&self) -> Family {
        self.dst.family()
    }

    /// What identifies a route in the kernel: a replace with the same key updates it.
    pub fn key(&self) -> (u32, IpNet) {
        (self.table, self.dst)
    }
}

impl std::fmt::Display for Route {
    /// As `ip route` would print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {} table {}", self.oif, self.table)?;
        if self.scope_link {
            f.write_str(" scope link")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

/// An `ip rule` of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Rule {
    /// IPv4 and IPv6 rules live in separate lists in the kernel.
    pub family: Family,
    pub priority: u32,
    pub fwmark: u32,
    pub fwmask: u32,
    /// `iif lo`: only packets this machine sends (and reverse-path lookups).
    pub iif: Option<String>,
    pub table: u32,
    /// `lookup main suppress_prefixlength 0`: use the main table unless its answer
    /// is a default route.
    pub suppress_prefixlength: Option<u32>,
}

impl std::fmt::Display for Rule {
    /// As `ip rule` would print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.family == Family::V6 {
            f.write_str("-6 ")?;
        }
        write!(
            f,
            "priority {} fwmark {:#x}/{:#x}",
            self.priority, self.fwmark, self.fwmask
        )?;
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        if self.table == crate::namespace::MAIN_TABLE {
            f.write_str(" lookup main")?;
        } else {
            write!(f, " lookup {}", self.table)?;
        }
        if let Some(len) = self.suppress_prefixlength {
            write!(f, " suppress_prefixlength {len}")?;
        }
        Ok(())
    }
}

/// A per-interface IPv4 sysctl value we need (`net/ipv4/conf/IFACE/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sysctl {
    pub iface: String,
    pub name: String,
    pub value: String,
}

impl Sysctl {
    pub fn path(&self) -> String {
        sysctl::conf_path(&self.iface, &self.name)
    }
}
