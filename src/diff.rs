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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::plan::plan;
    use crate::testing::{facts, uplink};

    fn two() -> Plan {
        plan(
            &Config::default(),
            &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
        )
    }

    /// What the kernel holds once `plan` has been applied.
    fn applied(plan: &Plan) -> Observed {
        Observed {
            routes: plan.routes.clone(),
            rules: plan.rules.clone(),
            sysctls: plan
                .sysctls
                .iter()
                .map(|s| (s.path(), s.value.clone()))
                .collect(),
            sysctl_originals: plan
                .sysctls
                .iter()
                .map(|s| (s.path(), "1".to_string()))
                .collect(),
            firewall_current: true,
            stale_backends: vec![],
            kept: plan.keep.iter().copied().collect(),
        }
    }

    fn position(changes: &[Change], pred: impl Fn(&Change) -> bool) -> usize {
        changes
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no such change in {changes:#?}"))
    }

    #[test]
    fn an_applied_plan_needs_nothing() {
        let p = two();
        assert_eq!(diff(&p, &applied(&p)), []);
    }

    #[test]
    fn from_nothing_routes_and_rules_come_before_the_firewall() {
        let p = two();
        let empty = Observed::default();
        let changes = diff(&p, &empty);
        let adds = changes
            .iter()
            .filter(|c| matches!(c, Change::AddRoute(_) | Change::AddRule(_)))
            .count();
        assert_eq!(adds, p.routes.len() + p.rules.len());
        let firewall = position(&changes, |c| *c == Change::InstallFirewall);
        assert!(
            changes[..firewall]
                .iter()
                .filter(|c| matches!(c, Change::AddRoute(_) | Change::AddRule(_)))
                .count()
                == adds,
            "every route and rule is added before the firewall marks for them: {changes:#?}"
        );
        // Nothing to take away from an empty kernel.
        assert!(!changes.iter().any(|c| matches!(
            c,
            Change::DelRule(_) | Change::DelRoute(_) | Change::Release(_)
        )));
    }

    #[test]
    fn an_uplink_leaving_removes_its_rules_and_routes_after_the_firewall() {
        let before = two();
        let after = plan(&Config::default(), &facts(vec![uplink("eth0", 1)]));
        let mut observed = applied(&before);
        // The installed firewall is the old plan's.
        observed.firewall_current = false;
        let changes = diff(&after, &observed);
        let firewall = position(&changes, |c| *c == Change::InstallFirewall);
        let first_delete = position(&changes, |c| matches!(c, Change::DelRule(_)));
        assert!(firewall < first_delete, "{changes:#?}");
        let wlan_table = before.uplink("wlan0").unwrap().table;
        let deleted_routes: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::DelRoute(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(!deleted_routes.is_empty());
        assert!(deleted_routes.iter().all(|r| r.table == wlan_table));
        // eth0's routes and rules are left as they are.
        let eth_table = before.uplink("eth0").unwrap().table;
        assert!(!changes.iter().any(|c| match c {
            Change::DelRule(r) => r.table == eth_table,
            Change::DelRoute(r) => r.table == eth_table,
            _ => false,
        }));
    }

    #[test]
    fn a_changed_gateway_is_replaced_not_deleted() {
        let p = two();
        let mut observed = applied(&p);
        let moved = observed
            .routes
            .iter_mut()
            .find(|r| r.gateway.is_some())
            .unwrap();
        moved.gateway = Some("203.0.113.99".parse().unwrap());
        let changes = diff(&p, &observed);
        // The planned route is added (with "replace"), and the old one, which has the
        // same table and destination, is not deleted after it: that would delete the
        // replacement.
        assert!(changes.iter().any(|c| matches!(c, Change::AddRoute(_))));
        assert!(
            !changes.iter().any(|c| matches!(c, Change::DelRoute(_))),
            "{changes:#?}"
        );
    }

    #[test]
    fn sysctls_record_their_original_once_and_are_restored_when_no_longer_wanted() {
        let p = two();
        let path = p.sysctls[0].path();
        let mut observed = applied(&p);
        observed.sysctl_originals.clear();
        observed.sysctls.insert(path.clone(), "0".into());
        let changes = diff(&p, &observed);
        assert!(changes.contains(&Change::SetSysctl {
            path: path.clone(),
            value: p.sysctls[0].value.clone(),
            original: Some("0".into()),
        }));

        // Recorded already: not recorded again (a second run must not record our own
        // value as the original).
        observed.sysctl_originals.insert(path.clone(), "0".into());
        let changes = diff(&p, &observed);
        assert!(changes.contains(&Change::SetSysctl {
            path: path.clone(),
            value: p.sysctls[0].value.clone(),
            original: None,
        }));

        // A sysctl no plan wants goes back to its original.
        let mut observed = applied(&p);
        observed
            .sysctl_originals
            .insert("/proc/sys/net/ipv4/conf/gone0/rp_filter".into(), "2".into());
        let changes = diff(&p, &observed);
        assert_eq!(
            changes,
            [Change::RestoreSysctl {
                path: "/proc/sys/net/ipv4/conf/gone0/rp_filter".into(),
                value: "2".into()
            }]
        );
    }

    #[test]
    fn a_sysctl_of_a_vanished_interface_is_left_alone() {
        let p = two();
        let mut observed = applied(&p);
        observed.sysctls.remove(&p.sysctls[0].path());
        assert_eq!(diff(&p, &observed), []);
    }

    #[test]
    fn addresses_are_kept_before_anything_is_taken_away_and_released_last() {
        let before = two();
        let mut after = plan(&Config::default(), &facts(vec![uplink("eth0", 1)]));
        let departed: IpAddr = "192.0.2.222".parse().unwrap();
        let stale: IpAddr = "192.0.2.223".parse().unwrap();
        after.keep = vec![departed];
        let mut observed = applied(&before);
        observed.kept = [stale].into();
        observed.stale_backends = vec![Backend::Iptables];
        let changes = diff(&after, &observed);
        let keep = position(&changes, |c| *c == Change::Keep(departed));
        let first_delete = position(&changes, |c| matches!(c, Change::DelRule(_)));
        let release = position(&changes, |c| *c == Change::Release(stale));
        let remove = position(&changes, |c| {
            *c == Change::RemoveFirewall(Backend::Iptables)
        });
        assert!(remove < keep && keep < first_delete, "{changes:#?}");
        assert_eq!(release, changes.len() - 1, "{changes:#?}");
    }
}
