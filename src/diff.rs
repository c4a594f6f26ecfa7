//! The difference between the plan and what the kernel holds, as an ordered list of
//! changes. Pure: the reconcile applies the list, `status` only asks whether it is
//! empty.
//!
//! The order keeps every moment of a run safe: routes and rules exist before the
//! firewall marks for them, the firewall is replaced in one step, departed addresses
//! are kept before anything is taken away, and stale rules and routes go only once
//! nothing marks for them any more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::kernel::firewall::Backend;
use crate::kernel::{Route, Rule};
use crate::plan::Plan;

/// What the kernel holds of ours, read at the start of a run.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    /// Current value of every sysctl the plan wants or we changed earlier (missing:
    /// the interface is gone).
    pub sysctls: BTreeMap<String, String>,
    /// Values the sysctls had before we changed them.
    pub sysctl_originals: BTreeMap<String, String>,
    /// Whether the chosen backend holds exactly the plan's firewall.
    pub firewall_current: bool,
    /// Other backends that hold objects of ours.
    pub stale_backends: Vec<Backend>,
    /// Addresses on our dummy interface.
    pub kept: BTreeSet<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    AddRoute(Route),
    AddRule(Rule),
    /// Set a sysctl; `original` is recorded first (when not recorded yet) so that a
    /// crash right after still lets flush put it back.
    SetSysctl {
        path: String,
        value: String,
        original: Option<String>,
    },
    InstallFirewall,
    RemoveFirewall(Backend),
    Keep(IpAddr),
    DelRule(Rule),
    DelRoute(Route),
    RestoreSysctl {
        path: String,
        value: String,
    },
    Release(IpAddr),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::AddRoute(r) => write!(f, "add route {r}"),
            Change::AddRule(r) => write!(f, "add rule {r}"),
            Change::SetSysctl { path, value, .. } => write!(f, "set {path} = {value}"),
            Change::InstallFirewall => f.write_str("install the firewall"),
            Change::RemoveFirewall(b) => write!(f, "remove the {b} firewall"),
            Change::Keep(a) => write!(f, "keep departed address {a}"),
            Change::DelRule(r) => write!(f, "delete rule {r}"),
            Change::DelRoute(r) => write!(f, "delete route {r}"),
            Change::RestoreSysctl { path, value } => write!(f, "restore {path} = {value}"),
            Change::Release(a) => write!(f, "release departed address {a}"),
        }
    }
}

/// The changes that take the kernel from `observed` to `plan`, in a safe order.
pub fn diff(plan: &Plan, observed: &Observed) -> Vec<Change> {
    let mut changes = Vec::new();
    let desired_routes: BTreeSet<&Route> = plan.routes.iter().collect();
    let current_routes: BTreeSet<&Route> = observed.routes.iter().collect();
    let desired_rules: BTreeSet<&Rule> = plan.rules.iter().collect();
    let current_rules: BTreeSet<&Rule> = observed.rules.iter().collect();

    // Routes are added with "replace": one with the same table and destination is
    // updated in place.
    for r in desired_routes.difference(&current_routes) {
        changes.push(Change::AddRoute((*r).clone()));
    }
    for r in desired_rules.difference(&current_rules) {
        changes.push(Change::AddRule((*r).clone()));
    }

    let wanted: BTreeMap<String, &str> = plan
        .sysctls
        .iter()
        .map(|s| (s.path(), s.value.as_str()))
        .collect();
    for (path, value) in &wanted {
        let Some(current) = observed.sysctls.get(path) else {
            continue; // the interface went away
        };
        if current != value {
            changes.push(Change::SetSysctl {
                path: path.clone(),
                value: value.to_string(),
                original: (!observed.sysctl_originals.contains_key(path)).then(|| current.clone()),
            });
        }
    }

    if !observed.firewall_current {
        changes.push(Change::InstallFirewall);
    }
    for b in &observed.stale_backends {
        changes.push(Change::RemoveFirewall(*b));
    }

    let keep: BTreeSet<IpAddr> = plan.keep.iter().copied().collect();
    for a in keep.difference(&observed.kept) {
        changes.push(Change::Keep(*a));
    }

    for r in current_rules.difference(&desired_rules) {
        changes.push(Change::DelRule((*r).clone()));
    }
    let desired_keys: BTreeSet<_> = plan.routes.iter().map(Route::key).collect();
    for r in current_routes.difference(&desired_routes) {
        if !desired_keys.contains(&r.key()) {
            changes.push(Change::DelRoute((*r).clone()));
        }
    }
    for (path, original) in &observed.sysctl_originals {
        if !wanted.contains_key(path) {
            changes.push(Change::RestoreSysctl {
                path: path.clone(),
                value: original.clone(),
            });
        }
    }
    for a in observed.kept.difference(&keep) {
        changes.push(Change::Release(*a));
    }
    changes
}
