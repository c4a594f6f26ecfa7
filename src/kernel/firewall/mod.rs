//! Marking and NAT: the firewall side of the balance, in our words.
//!
//! The planner describes what the firewall must do as a [`FirewallPlan`] covering both
//! address families; a backend renders it into its own objects and installs it in one
//! atomic step. [`select`] picks the backend from the config (nftables wherever the
//! kernel has nf_tables); the reconcile only ever talks to the [`Firewall`] trait.

pub mod iptables;
pub mod nftables;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::FirewallChoice as Choice;
use crate::error::Result;
use crate::model::{Family, IpNet};

/// Which backend, as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Nftables, Backend::Iptables];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Test hook: with `NM_MULTIWAN_FAULT=firewall-refused` in its environment a backend
/// adds one rule the kernel refuses (a jump to a chain that does not exist) to its
/// batch, so that the suite can show a refused batch changes nothing. Read per call,
/// never set by nm-multiwan itself.
pub fn fault_injected() -> bool {
    std::env::var_os("NM_MULTIWAN_FAULT").is_some_and(|v| v == "firewall-refused")
}

/// The backend `choice` means on this machine: `auto` asks the kernel whether it has
/// nf_tables (not whether an `nft` binary exists: we never run it).
pub fn resolve(choice: Choice) -> Backend {
    match choice {
        Choice::Nftables => Backend::Nftables,
        Choice::Iptables => Backend::Iptables,
        Choice::Auto if crate::kernel::nft::available() => Backend::Nftables,
        Choice::Auto => Backend::Iptables,
    }
}

/// A backend, ready for one run (it may cache what it read until it writes).
pub fn backend(which: Backend) -> Box<dyn Firewall> {
    match which {
        Backend::Nftables => Box::new(nftables::Nftables::new()),
        Backend::Iptables => Box::new(iptables::Iptables::new()),
    }
}

/// The protocols that each get a round of their own, so that one kind of traffic
/// never shifts another's: a name look-up over UDP before every TCP connection would
/// otherwise land all TCP on the same uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Everything else (ICMP echo, SCTP, ...).
    Other,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Other];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other => "other",
        }
    }
}

/// An uplink as the firewall knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FwUplink {
    pub iface: String,
    /// Mark of the connections we send out through it.
    pub mark: u32,
    /// Mark of the connections that came in through it.
    pub inbound_mark: u32,
    /// The families it has a table and rules in: we mark and masquerade for it there.
    pub families: Vec<Family>,
}

impl FwUplink {
    pub fn serves(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// A LAN as the firewall knows it: new connections arriving on it are balanced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FwLan {
    pub iface: String,
    /// Its networks, both families.
    pub networks: Vec<IpNet>,
}

/// One exact round: new connections of `family` and `protocol` take the slots' marks in
/// turn (a weight is a number of slots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Round {
    pub family: Family,
    pub protocol: Protocol,
    pub slots: Vec<u32>,
}

/// Who chose where a new connection goes, on a rung of the ladder (rungs 3 to 5; rung 1,
/// an existing mark, rung 2, what is not ours to balance, and rung 6, the rounds, are
/// fixed parts of every rendering).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// The application bound its socket to one of this uplink's addresses.
    BoundSource { iface: String },
    /// The application bound its socket to this uplink's device (SO_BINDTODEVICE): the
    /// kernel routed its first packet out of that device.
    BoundDevice { iface: String },
    /// A program started with `nm-multiwan run --via IFACE` (its cgroup).
    Via { iface: String },
    /// A name server NetworkManager learned on this uplink.
    Dns { iface: String },
    /// The config's policy number `index` (from 0, in file order).
    Policy { index: usize, name: String },
}

/// A cgroup v2 directory of ours, as the firewall matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cgroup {
    /// Relative to the cgroup2 root, e.g. `nm-multiwan/via-eth0`.
    pub path: String,
    /// The directory's inode number (what `socket cgroupv2` compares).
    pub id: u64,
    /// Its depth below the root (`nm-multiwan/via-eth0`: 2).
    pub level: u32,
}

/// What a rung looks at; every field given must hold (an empty list: anything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matches {
    /// Source addresses (one family: the rung's).
    pub sources: Vec<IpNet>,
    /// Destinations (the rung's family).
    pub destinations: Vec<IpNet>,
    /// The device the kernel routed the first packet out of, before our mark.
    pub oif: Option<String>,
    /// IP protocol numbers.
    pub protocols: Vec<u8>,
    /// Destination port ranges (inclusive); `protocols` then holds only protocols
    /// with ports (TCP, UDP, SCTP, DCCP, UDP-Lite).
    pub ports: Vec<(u16, u16)>,
    /// The socket's owner.
    pub uid: Option<u32>,
    /// The socket's cgroup (v2).
    pub cgroup: Option<Cgroup>,
}

/// What a rung does with a new connection it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Out through this uplink: its mark (a `FwUplink` serving the rung's family).
    Uplink { iface: String, mark: u32 },
    /// A policy's own rounds over its usable uplinks (the rung's family, one per
    /// protocol), optionally remembering each destination's uplink for `sticky`
    /// seconds after its last new connection; `members` lists the marks the rounds use.
    Balance {
        rounds: Vec<Round>,
        members: Vec<u32>,
        sticky: Option<u64>,
        /// What `sticky` remembers: destinations or clients (source addresses).
        sticky_by: crate::config::policy::StickyBy,
    },
    /// The general rounds (a policy whose uplinks are all down or out of balance).
    General,
    /// Unmarked: the main table's route, no NAT of ours.
    Direct,
    /// Dropped (a policy with `fallback = false` and no usable uplink, a program of
    /// `run --via` whose uplink is gone).
    Drop,
}

/// One rung of the ladder, in one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rung {
    pub family: Family,
    pub why: Why,
    pub matches: Matches,
    pub action: Action,
}

impl Rung {
    /// The policy index of a policy's rung.
    pub fn policy(&self) -> Option<usize> {
        match self.why {
            Why::Policy { index, .. } => Some(index),
            _ => None,
        }
    }
}

/// What our firewall does, in both families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallPlan {
    /// Our mark bits; every mark operation is masked with them.
    pub mark_mask: u32,
    /// The mask's top bit: set on connections that came in through an uplink.
    pub inbound_flag: u32,
    /// The families we balance: IPv4 always, IPv6 when on. Nothing of ours exists in a
    /// family that is not here.
    pub families: Vec<Family>,
    pub uplinks: Vec<FwUplink>,
    /// Destinations never balanced, both families: every uplink's networks and the
    /// routes NetworkManager gave it, and for IPv6 link-local and multicast.
    pub exclude: Vec<IpNet>,
    /// The LANs whose new connections to the outside are balanced (router mode), both
    /// families; their networks are in `exclude` too.
    pub lans: Vec<FwLan>,
    /// The rounds, one per family and protocol (empty when no uplink serves the family).
    pub rounds: Vec<Round>,
    /// Rungs 3 to 5 of the ladder, in the order they are checked (first match wins),
    /// between what is not ours to balance and the rounds.
    pub ladder: Vec<Rung>,
}

impl FirewallPlan {
    pub fn has(&self, family: Family) -> bool {
        self.families.contains(&family)
    }

    pub fn exclude_of(&self, family: Family) -> impl Iterator<Item = &IpNet> {
        self.exclude.iter().filter(move |n| n.family() == family)
    }

    pub fn rounds_of(&self, family: Family) -> impl Iterator<Item = &Round> {
        self.rounds.iter().filter(move |r| r.family == family)
    }

    /// Whether anything arrives from a LAN to be balanced.
    pub fn routes_lans(&self) -> bool {
        !self.lans.is_empty()
    }

    pub fn uplinks_of(&self, family: Family) -> impl Iterator<Item = &FwUplink> {
        self.uplinks.iter().filter(move |u| u.serves(family))
    }

    pub fn ladder_of(&self, family: Family) -> impl Iterator<Item = &Rung> {
        self.ladder.iter().filter(move |r| r.family == family)
    }

    /// The uplink with this mark.
    pub fn uplink_by_mark(&self, mark: u32) -> Option<&FwUplink> {
        self.uplinks.iter().find(|u| u.mark == mark)
    }

    /// A stable fingerprint of the plan for `backend`: stored with what the backend
    /// installs, so that a no-op reconcile reads it back and writes nothing. The
    /// backend's rendering version is part of it, so that a new rendering replaces
    /// an old one on upgrade.
    pub fn fingerprint(&self, backend: Backend, rendering: u32) -> String {
        // Every reconcile asks for the fingerprint of a plan that is, most of the time,
        // the one of the last run: comparing costs a fraction of serialising.
        type Last = Option<(Backend, u32, FirewallPlan, String)>;
        static LAST: std::sync::Mutex<Last> = std::sync::Mutex::new(None);
        if let Some((b, r, plan, fp)) = &*LAST.lock().expect("fingerprint cache lock")
            && (*b, *r) == (backend, rendering)
            && plan == self
        {
            return fp.clone();
        }
        let fp = self.compute_fingerprint(backend, rendering);
        *LAST.lock().expect("fingerprint cache lock") =
            Some((backend, rendering, self.clone(), fp.clone()));
        fp
    }

    fn compute_fingerprint(&self, backend: Backend, rendering: u32) -> String {
        let text = serde_json::to_string(self).expect("plan serialises");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in backend
            .name()
            .bytes()
            .chain(rendering.to_le_bytes())
            .chain(text.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Which round a counter belongs to: the general one, or a policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RoundOf {
    General,
    Policy(usize),
}

/// Counters read from our objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// New connections each mark was given by the rounds since the firewall was last
    /// installed, by family.
    pub placed: BTreeMap<(Family, u32), u64>,
    /// New connections each round has dealt out since it was installed: its next slot
    /// is this count modulo its length.
    pub dealt: BTreeMap<(RoundOf, Family, Protocol), u64>,
    /// New connections each policy matched, by policy index, both families.
    pub hits: BTreeMap<usize, u64>,
}

/// A destination a policy keeps on one uplink for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickyEntry {
    pub policy: usize,
    pub destination: std::net::IpAddr,
    pub mark: u32,
    /// Seconds left before it is forgotten, unless a new connection renews it.
    pub expires_in: u64,
}

pub trait Firewall {
    fn backend(&self) -> Backend;
    /// Starts reading the kernel in the background so that it overlaps with the run's
    /// other reads; later calls use that reading. Optional.
    fn prefetch(&self) {}
    /// Whether anything of ours (a table, a chain, a jump) is installed.
    fn installed(&self) -> Result<bool>;
    /// Whether exactly `plan` is installed, whole (nothing added or removed by hand).
    fn is_current(&self, plan: &FirewallPlan) -> Result<bool>;
    /// Installs `plan` (both families) in one atomic step: no new connection meets a
    /// half-built ruleset, and a refused batch changes nothing. `created` names the
    /// containers earlier runs created (which flush removes once empty); returns that
    /// set as it is now. Before creating a container, the backend hands `record` the
    /// set with it added, so that a run killed right after still has flush remove it.
    fn apply(
        &self,
        plan: &FirewallPlan,
        created: &BTreeSet<String>,
        record: &mut dyn FnMut(&BTreeSet<String>) -> Result<()>,
    ) -> Result<BTreeSet<String>>;
    /// Removes everything of ours (and those of the `created` containers that are this
    /// backend's and left empty); nothing else. Idempotent. Returns what is left of
    /// `created`.
    fn flush(&self, created: &BTreeSet<String>) -> Result<BTreeSet<String>>;
    fn counters(&self) -> Result<Counters>;
    /// The live sticky entries of the policies installed now (those whose uplink is
    /// still usable for them).
    fn sticky(&self, plan: &FirewallPlan) -> Result<Vec<StickyEntry>>;
    /// The plan in this backend's own syntax, as its tools would print it.
    fn render(&self, plan: &FirewallPlan) -> String;
}
