//! The one reconcile: read NetworkManager and the kernel, plan, apply the difference.
//! Every trigger (dispatcher event, `apply`, the daemon) runs exactly this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::Result;
use crate::firewall::Firewall;
use crate::firewall::iptables::Iptables;
use crate::model::Family;
use crate::netlink::Netlink;
use crate::nm::NetworkManager;
use crate::plan::{self, Facts, Namespace, Plan, RouteSpec, SysctlSpec};
use crate::state::{RunLock, State};

/// What one reconcile changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Changes {
    pub routes_added: usize,
    pub routes_deleted: usize,
    pub rules_added: usize,
    pub rules_deleted: usize,
    pub sysctls_set: usize,
    pub sysctls_restored: usize,
    pub firewall_rebuilt: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.routes_added
            + self.routes_deleted
            + self.rules_added
            + self.rules_deleted
            + self.sysctls_set
            + self.sysctls_restored
            == 0
            && !self.firewall_rebuilt
    }
}

/// Facts read from NetworkManager and the kernel, before planning.
pub struct Observed {
    pub facts: Facts,
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<plan::RuleSpec>,
}

/// Reads everything the planner needs. Writes nothing. `fw` is the IPv4 firewall,
/// `fw6` the IPv6 one.
pub async fn observe(
    config: &Config,
    nm: &NetworkManager,
    nl: &Netlink,
    fw: &dyn Firewall,
    fw6: &dyn Firewall,
    state: &State,
    health: &BTreeMap<String, bool>,
) -> Result<Observed> {
    let ns = Namespace::from_config(config);
    // iptables-save and ip6tables-save run while we read NetworkManager and netlink.
    fw.prefetch();
    fw6.prefetch();
    let uplinks = nm.uplinks().await?;
    let routes = nl.routes(&ns).await?;
    let rules = nl.rules(&ns).await?;
    let mut existing_ids = state.ids.clone();
    // The firewall and then the routes are the freshest evidence of who has which id.
    // A machine without ip6tables (or without IPv6) has no IPv6 evidence, which is fine:
    // its IPv4 side, or the routes, tell the same ids.
    let marks6 = fw6.installed_marks().unwrap_or_else(|e| {
        debug!(error = %e, "cannot read the IPv6 firewall");
        BTreeMap::new()
    });
    for (iface, mark) in marks6.into_iter().chain(fw.installed_marks()?) {
        let id = (mark & ns.mark_mask) >> ns.shift();
        if (1..=ns.max_uplinks()).contains(&id) {
            existing_ids.insert(iface, id);
        }
    }
    for r in &routes {
        if let Some(id) = ns.id_of_table(r.table) {
            existing_ids.insert(r.oif.clone(), id);
        }
    }
    Ok(Observed {
        facts: Facts {
            uplinks,
            health: health.clone(),
            existing_ids,
        },
        routes,
        rules,
    })
}

/// Runs one reconcile under the run lock and returns the plan it applied.
pub async fn reconcile(
    config: &Config,
    run_dir: &Path,
    health: &BTreeMap<String, bool>,
) -> Result<(Plan, Changes)> {
    let _lock = RunLock::acquire(run_dir, Duration::from_secs(60))?;
    let fw = Iptables::default();
    let fw6 = Iptables::new(Family::V6);
    // The rulesets are read while we connect to the bus and read NetworkManager.
    fw.prefetch();
    fw6.prefetch();
    let nm = NetworkManager::connect().await?;
    let nl = Netlink::connect().await?;
    let mut state = State::load(run_dir);
    let ns = Namespace::from_config(config);
    let mut changes = Changes::default();

    // The namespace changed since the last run: our old objects live elsewhere.
    if let Some(old) = state.namespace
        && old != ns
    {
        info!(?old, new = ?ns, "namespace changed; removing objects of the old one");
        remove_kernel_objects(&nl, &old, &mut changes).await?;
        state.ids.clear();
    }

    let observed = observe(config, &nm, &nl, &fw, &fw6, &state, health).await?;
    let plan = plan::plan(config, &observed.facts);
    for w in &plan.warnings {
        warn!("{w}");
    }

    // Record the namespace before creating anything in it, so that a crash right
    // after is still cleaned up by flush.
    state.namespace = Some(ns);
    state.save(run_dir)?;

    // Add before remove: new routes and rules exist before the firewall marks for
    // them, and stale ones go only after nothing marks for them any more.
    let desired_routes: BTreeSet<&RouteSpec> = plan.routes.iter().collect();
    let current_routes: BTreeSet<&RouteSpec> = observed.routes.iter().collect();
    for r in desired_routes.difference(&current_routes) {
        debug!(?r, "adding route");
        nl.add_route(r).await?;
        changes.routes_added += 1;
    }
    let desired_rules: BTreeSet<_> = plan.rules.iter().collect();
    let current_rules: BTreeSet<_> = observed.rules.iter().collect();
    for r in desired_rules.difference(&current_rules) {
        debug!(?r, "adding rule");
        nl.add_rule(r).await?;
        changes.rules_added += 1;
    }

    apply_sysctls(&plan.sysctls, &mut state, run_dir, &mut changes)?;

    if !fw.is_current(&plan.firewall)? {
        let created = fw.apply(&plan.firewall)?;
        changes.firewall_rebuilt = true;
        if !created.is_empty() {
            state.created_tables.extend(created);
            state.save(run_dir)?;
        }
    }
    match &plan.firewall6 {
        Some(p6) => {
            if !fw6.is_current(p6)? {
                let created = fw6.apply(p6)?;
                changes.firewall_rebuilt = true;
                if !created.is_empty() {
                    state.created_tables6.extend(created);
                    state.save(run_dir)?;
                }
            }
        }
        // IPv6 balancing is off: nothing of ours may stay in IPv6's tables, and tables
        // that exist only because we created them go too.
        None => {
            if remove_firewall6(&fw6, &state)? {
                changes.firewall_rebuilt = true;
            }
            if !state.created_tables6.is_empty() {
                state.created_tables6.clear();
                state.save(run_dir)?;
            }
        }
    }

    for r in current_rules.difference(&desired_rules) {
        debug!(?r, "deleting rule");
        nl.del_rule(r).await?;
        changes.rules_deleted += 1;
    }
    // Routes are replaced in place (same table and destination), so only delete
    // those whose key is no longer wanted at all.
    let desired_keys: BTreeSet<_> = plan.routes.iter().map(route_key).collect();
    for r in current_routes.difference(&desired_routes) {
        if !desired_keys.contains(&route_key(r)) {
            debug!(?r, "deleting route");
            nl.del_route(r).await?;
            changes.routes_deleted += 1;
        }
    }

    state.ids = plan
        .uplinks
        .iter()
        .map(|u| (u.iface.clone(), u.id))
        .collect();
    state.save(run_dir)?;
    Ok((plan, changes))
}

/// Logs a reconcile's outcome. "Nothing changed" is worth telling a person who ran
/// `apply`, not repeating in a daemon's log every minute.
pub fn log_outcome(
    trigger: &dyn std::fmt::Debug,
    plan: &Plan,
    changes: &Changes,
    unchanged_level: tracing::Level,
) {
    let uplinks: Vec<&str> = plan
        .uplinks
        .iter()
        .filter(|u| u.in_balance)
        .map(|u| u.iface.as_str())
        .collect();
    if !changes.is_empty() {
        info!(?trigger, ?uplinks, ?changes, "reconciled");
    } else if unchanged_level == tracing::Level::INFO {
        info!(?trigger, ?uplinks, "in sync; nothing to change");
    } else {
        debug!(?trigger, ?uplinks, "in sync; nothing to change");
    }
}

fn route_key(r: &RouteSpec) -> (u32, crate::model::IpNet) {
    (r.table, r.dst)
}

/// Sets the sysctls the plan needs, remembering each original value first, and puts
/// back those no longer needed.
fn apply_sysctls(
    wanted: &[SysctlSpec],
    state: &mut State,
    run_dir: &Path,
    changes: &mut Changes,
) -> Result<()> {
    let wanted_paths: BTreeMap<String, &SysctlSpec> =
        wanted.iter().map(|s| (s.path(), s)).collect();
    for (path, spec) in &wanted_paths {
        let Ok(current) = std::fs::read_to_string(path) else {
            warn!(path, "sysctl not readable; interface gone?");
            continue;
        };
        let current = current.trim().to_string();
        if current == spec.value {
            continue;
        }
        if !state.sysctls.contains_key(path) {
            state.sysctls.insert(path.clone(), current);
            state.save(run_dir)?;
        }
        write_sysctl(path, &spec.value);
        changes.sysctls_set += 1;
    }
    let stale: Vec<String> = state
        .sysctls
        .keys()
        .filter(|p| !wanted_paths.contains_key(*p))
        .cloned()
        .collect();
    for path in stale {
        let original = state.sysctls.remove(&path).unwrap_or_default();
        if std::path::Path::new(&path).exists() {
            write_sysctl(&path, &original);
            changes.sysctls_restored += 1;
        }
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        warn!(path, value, error = %e, "cannot write sysctl");
    }
}

/// Removes our IPv6 chains (and the empty tables we created) if there are any; whether
/// anything was there. A machine whose IPv6 firewall cannot even be read (no ip6tables,
/// IPv6 disabled in the kernel) cannot hold any of ours.
fn remove_firewall6(fw6: &dyn Firewall, state: &State) -> Result<bool> {
    let installed = match fw6.installed() {
        Ok(installed) => installed,
        Err(e) => {
            debug!(error = %e, "cannot read the IPv6 firewall: nothing of ours there");
            return Ok(false);
        }
    };
    if installed || !state.created_tables6.is_empty() {
        let created: Vec<String> = state.created_tables6.iter().cloned().collect();
        fw6.flush(&created)?;
    }
    Ok(installed)
}

async fn remove_kernel_objects(nl: &Netlink, ns: &Namespace, changes: &mut Changes) -> Result<()> {
    for r in nl.rules(ns).await? {
        nl.del_rule(&r).await?;
        changes.rules_deleted += 1;
    }
    for r in nl.routes(ns).await? {
        nl.del_route(&r).await?;
        changes.routes_deleted += 1;
    }
    Ok(())
}

/// Removes everything nm-multiwan installed: chains and jumps, rules, routes, and
/// puts back the sysctls. Works without NetworkManager.
pub async fn flush(config: &Config, run_dir: &Path) -> Result<Changes> {
    let _lock = RunLock::acquire(run_dir, Duration::from_secs(60))?;
    let nl = Netlink::connect().await?;
    let mut state = State::load(run_dir);
    let mut changes = Changes::default();
    // Firewall first: stop marking before the rules and tables go.
    let created: Vec<String> = state.created_tables.iter().cloned().collect();
    Iptables::default().flush(&created)?;
    remove_firewall6(&Iptables::new(Family::V6), &state)?;
    changes.firewall_rebuilt = true;
    let ns = Namespace::from_config(config);
    let mut spaces = vec![ns];
    if let Some(old) = state.namespace
        && old != ns
    {
        spaces.push(old);
    }
    for space in &spaces {
        remove_kernel_objects(&nl, space, &mut changes).await?;
    }
    apply_sysctls(&[], &mut state, run_dir, &mut changes)?;
    State::remove(run_dir)?;
    Ok(changes)
}
