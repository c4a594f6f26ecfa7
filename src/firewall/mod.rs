//! The firewall side: our own chains that mark, restore and save connection marks and
//! masquerade. Behind a small trait so that another backend (nftables) can follow.

pub mod iptables;

use std::collections::BTreeMap;

use crate::error::Result;
use crate::plan::FirewallPlan;

/// Per-uplink packet and byte counters read from our chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// New connections placed on the uplink since the chain was last rebuilt.
    pub new_connections: u64,
}

pub trait Firewall {
    /// Starts reading the kernel's ruleset in the background, so that it overlaps with
    /// the other reads of a run; the calls below then use that reading. Optional.
    fn prefetch(&self) {}
    /// The plan in this backend's own syntax, for `nm-multiwan plan`.
    fn render(&self, plan: &FirewallPlan) -> String;
    /// Whether the kernel already holds exactly this plan (chains and jumps).
    fn is_current(&self, plan: &FirewallPlan) -> Result<bool>;
    /// Installs the plan in one atomic step: no new connection meets a half-built chain.
    /// Returns the tables that did not exist before (so that flush can remove them).
    fn apply(&self, plan: &FirewallPlan) -> Result<Vec<String>>;
    /// Removes our chains and the jumps to them, and the `created` tables if they are
    /// empty; nothing else. Idempotent.
    fn flush(&self, created: &[String]) -> Result<()>;
    /// Whether any chain of ours, or a jump to one, exists.
    fn installed(&self) -> Result<bool>;
    /// Interface -> mark of the uplinks our chains currently masquerade, so that
    /// identity can be recovered from the kernel.
    fn installed_marks(&self) -> Result<BTreeMap<String, u32>>;
    /// Counters of the nth slots, by mark.
    fn counters(&self) -> Result<BTreeMap<u32, Counters>>;
}
