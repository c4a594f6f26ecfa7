//! The one reconcile: read NetworkManager and the kernel, plan, apply the difference.
//! Every trigger (dispatcher event, `apply`, the daemon) runs exactly this.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::diff::{self, Change, Observed};
use crate::error::{Error, Result};
use crate::kernel::firewall::{self, Backend, Firewall};
use crate::kernel::routing::{Routing, RoutingState};
use crate::kernel::{conntrack, keeper, sysctl};
use crate::model::Uplink;
use crate::namespace::Namespace;
use crate::nm::{NetworkManager, NmView};
use crate::plan::{self, Facts, Plan, Verdicts};
use crate::state::{RunLock, State};

/// Longest a run waits for NetworkManager's view of a device to agree with the kernel
/// (an address or gateway in flux, as right after `nmcli device reapply`).
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// What one reconcile did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub plan: Plan,
    pub changes: Vec<Change>,
    /// Uplinks left out of this run because they could not be applied (or
    /// NetworkManager's view of them never settled), with the reason; everything else
    /// was applied. Worth a retry.
    pub failed: BTreeMap<String, String>,
    /// Uplinks kept as they were because NetworkManager is (re)activating their device
    /// while the kernel still holds their configuration. Worth another look once it
    /// has settled.
    pub held: Vec<String>,
}

impl Outcome {
    /// Whether this run left something to look at again later.
    pub fn unsettled(&self) -> bool {
        !self.failed.is_empty() || !self.held.is_empty()
    }
}

/// Everything a run reads before planning.
pub struct View {
    pub facts: Facts,
    pub observed: Observed,
    pub routing: RoutingState,
    /// Uplinks whose NetworkManager view never agreed with the kernel.
    pub unsettled: BTreeMap<String, String>,
    /// Uplinks of the last run kept while NetworkManager (re)activates their device.
    pub held: Vec<String>,
}

/// Reads NetworkManager and the kernel. Writes nothing.
///
/// NetworkManager's view is taken as it is, except:
/// - an uplink whose address or gateway NetworkManager reports differently from the
///   kernel is read again (for at most [`SETTLE_WAIT`]) before it counts;
/// - while NetworkManager starts up or re-assumes a device, an uplink of the last run
///   whose device still holds its address and default route stays as it was.
pub async fn observe(
    config: &Config,
    nm: &NetworkManager,
    routing: &Routing,
    state: &State,
    health: &Verdicts,
) -> Result<View> {
    let ns = config.namespace();
    let started = Instant::now();
    let (nm_view, kernel) = loop {
        let (nm_view, kernel) = futures::try_join!(nm.view(), routing.read(&ns))?;
        let flux = disagreements(&nm_view, &kernel);
        if flux.is_empty() || started.elapsed() >= SETTLE_WAIT {
            break (nm_view, kernel);
        }
        debug!(
            ?flux,
            "NetworkManager and the kernel disagree; reading again"
        );
        tokio::time::sleep(SETTLE_POLL).await;
    };
    let unsettled = disagreements(&nm_view, &kernel);
    let mut uplinks: Vec<Uplink> = nm_view
        .uplinks
        .iter()
        .filter(|u| !unsettled.contains_key(&u.iface))
        .cloned()
        .collect();
    let mut held = Vec::new();
    for u in held_uplinks(&nm_view, &kernel, &state.uplinks) {
        info!(
            iface = u.iface,
            "NetworkManager is (re)activating this device while it keeps its addresses \
             and default route: keeping it as it was"
        );
        held.push(u.iface.clone());
        uplinks.push(u);
    }

    let mut ids = state.ids.clone();
    for r in &kernel.routes {
        if let Some(id) = ns.id_of_table(r.table) {
            ids.kernel.insert(r.oif.clone(), id);
        }
    }

    let local: BTreeSet<IpAddr> = kernel
        .addresses
        .iter()
        .filter(|(iface, _)| iface.as_str() != keeper::DUMMY_NAME)
        .flat_map(|(_, addrs)| addrs.iter().copied())
        .collect();
    let kept: BTreeSet<IpAddr> = kernel
        .addresses
        .get(keeper::DUMMY_NAME)
        .into_iter()
        .flatten()
        .copied()
        .collect();
    // Connections still using a departed uplink's address: looked for only when an
    // address departed or is kept, so that a quiet run never reads conntrack.
    let departed = state
        .uplinks
        .iter()
        .flat_map(Uplink::addresses)
        .any(|a| !local.contains(&a));
    let translated = if departed || !kept.is_empty() {
        translated_sources(&ns).await
    } else {
        Vec::new()
    };

    let facts = Facts {
        uplinks,
        health: health.clone(),
        ids,
        translated,
        local,
    };
    let observed = Observed {
        routes: kernel.routes.clone(),
        rules: kernel.rules.clone(),
        sysctls: BTreeMap::new(),
        sysctl_originals: state.sysctls.clone(),
        firewall_current: false,
        stale_backends: Vec::new(),
        kept,
    };
    Ok(View {
        facts,
        observed,
        routing: kernel,
        unsettled,
        held,
    })
}

/// Completes `observed` for `plan`: the sysctls it wants, whether the firewall holds
/// it, and which other backend still holds something of ours.
pub fn observe_for(
    plan: &Plan,
    observed: &mut Observed,
    fw: &dyn Firewall,
    state: &State,
) -> Result<()> {
    observed.sysctls = sysctl::read(
        plan.sysctls
            .iter()
            .map(|s| s.path())
            .chain(state.sysctls.keys().cloned()),
    );
    observed.firewall_current = fw.is_current(&plan.firewall)?;
    observed.stale_backends = stale_backends(fw.backend(), state);
    Ok(())
}

/// Other backends that may hold objects of ours: those the state records, or all of
/// them when the state predates the choice of backend; each asked once.
fn stale_backends(chosen: Backend, state: &State) -> Vec<Backend> {
    let candidates: Vec<Backend> = match &state.firewall {
        Some(set) => set.iter().copied().filter(|b| *b != chosen).collect(),
        None => Backend::ALL.into_iter().filter(|b| *b != chosen).collect(),
    };
    candidates
        .into_iter()
        .filter(|b| {
            firewall::backend(*b).installed().unwrap_or_else(|e| {
                debug!(backend = %b, error = %e, "cannot read that backend: nothing of ours there");
                false
            })
        })
        .collect()
}

/// Uplinks whose address or gateway NetworkManager reports otherwise than the kernel
/// holds: interface -> what disagrees.
fn disagreements(nm: &NmView, kernel: &RoutingState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in &nm.uplinks {
        for a in u.addresses() {
            if !kernel.holds(&u.iface, a) {
                out.insert(
                    u.iface.clone(),
                    format!(
                        "NetworkManager reports address {a} and a default route on {}; \
                         the kernel does not hold both",
                        u.iface
                    ),
                );
            }
        }
    }
    out
}

/// Uplinks of the last run that NetworkManager does not list as activated now, but
/// whose device it is (re)activating while the kernel still holds their addresses and
/// default routes: they stay as they were.
fn held_uplinks(nm: &NmView, kernel: &RoutingState, last: &[Uplink]) -> Vec<Uplink> {
    last.iter()
        .filter(|u| !nm.uplinks.iter().any(|n| n.iface == u.iface))
        .filter(|u| nm.in_transition(&u.iface))
        .filter(|u| u.addresses().all(|a| kernel.holds(&u.iface, a)))
        .cloned()
        .collect()
}

/// Original sources of translated connections carrying one of our outbound marks:
/// (source, mark). A failure to read conntrack keeps nothing, which is logged.
async fn translated_sources(ns: &Namespace) -> Vec<(IpAddr, u32)> {
    // The kernel filters on `mark & mask == value`, which cannot say "any id": the
    // inbound flag clear is the narrowest one filter can ask for.
    let entries = match conntrack::Conntrack::open() {
        Ok(mut ct) => {
            ct.dump(&conntrack::Filter::mark(0, ns.inbound_flag()))
                .await
        }
        Err(e) => Err(e),
    };
    match entries {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| ns.decode(e.mark).is_some_and(|m| !m.inbound))
            .filter(|e| e.orig.src != e.reply.dst)
            .map(|e| (e.orig.src, e.mark & ns.id_mask()))
            .collect(),
        Err(e) => {
            warn!("cannot read conntrack: {e}; departed addresses are not kept");
            Vec::new()
        }
    }
}

/// Runs one reconcile under the run lock.
pub async fn reconcile(config: &Config, run_dir: &Path, health: &Verdicts) -> Result<Outcome> {
    let _lock = RunLock::acquire(run_dir, Duration::from_secs(60))?;
    let backend = firewall::resolve(config.firewall);
    let fw = firewall::backend(backend);
    // The firewall is read while we connect to the bus and read NetworkManager.
    fw.prefetch();
    let nm = NetworkManager::connect().await?;
    let routing = Routing::connect().await?;
    let mut state = State::load(run_dir);
    let ns = config.namespace();
    let mut done = Vec::new();

    // The namespace changed since the last run: our old objects live elsewhere.
    if let Some(old) = state.namespace
        && old != ns
    {
        info!(?old, new = ?ns, "namespace changed; removing objects of the old one");
        remove_routing(&routing, &old, &mut done).await?;
        state.ids = Default::default();
    }

    let view = observe(config, &nm, &routing, &state, health).await?;
    let mut failed = view.unsettled.clone();
    let held = view.held.clone();
    let mut facts = view.facts;
    let mut observed = view.observed;
    // Record what we are about to create before creating it, so that a crash right
    // after is still cleaned up by flush.
    state.namespace = Some(ns);
    state
        .firewall
        .get_or_insert_with(|| Backend::ALL.into_iter().collect())
        .insert(backend);
    state.save(run_dir)?;

    // An uplink whose routes or rules the kernel refuses is left out and the rest
    // planned again, so that nothing ever marks for a half-built table.
    let plan = loop {
        facts.uplinks.retain(|u| !failed.contains_key(&u.iface));
        let plan = plan::plan(config, &facts);
        for w in &plan.warnings {
            warn!("{w}");
        }
        observe_for(&plan, &mut observed, fw.as_ref(), &state)?;
        let changes = diff::diff(&plan, &observed);
        match apply(&changes, &plan, fw.as_ref(), &routing, &mut state, run_dir).await {
            Ok(applied) => {
                done.extend(applied);
                break plan;
            }
            Err(Failure::Uplink {
                iface,
                error,
                applied,
            }) => {
                warn!(
                    iface,
                    "{error}; leaving this uplink out and applying the others"
                );
                done.extend(applied);
                failed.insert(iface, error.to_string());
                let (routes, rules) = futures::try_join!(routing.routes(&ns), routing.rules(&ns))?;
                observed.routes = routes;
                observed.rules = rules;
            }
            Err(Failure::Run(e)) => return Err(e),
        }
    };

    state.ids.remember(
        plan.uplinks
            .iter()
            .map(|u| (u.iface.as_str(), u.connection_uuid.as_str(), u.id)),
    );
    state.uplinks = facts.uplinks.clone();
    state.firewall = Some([backend].into_iter().collect());
    state.save(run_dir)?;
    Ok(Outcome {
        plan,
        changes: done,
        failed,
        held,
    })
}

enum Failure {
    /// Applying something of one uplink failed; what was applied before stays.
    Uplink {
        iface: String,
        error: Error,
        applied: Vec<Change>,
    },
    Run(Error),
}

impl<E: Into<Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Run(e.into())
    }
}

/// Applies the changes in order; returns those applied.
async fn apply(
    changes: &[Change],
    plan: &Plan,
    fw: &dyn Firewall,
    routing: &Routing,
    state: &mut State,
    run_dir: &Path,
) -> std::result::Result<Vec<Change>, Failure> {
    let mut applied = Vec::new();
    for change in changes {
        debug!(%change, "applying");
        let uplink_of = |e: Error, iface: &str, applied: &Vec<Change>| Failure::Uplink {
            iface: iface.to_string(),
            error: e,
            applied: applied.clone(),
        };
        match change {
            Change::AddRoute(r) => {
                if let Err(e) = routing.add_route(r).await {
                    return Err(uplink_of(e, &r.oif, &applied));
                }
            }
            Change::AddRule(r) => {
                if let Err(e) = routing.add_rule(r).await {
                    let iface = plan
                        .uplinks
                        .iter()
                        .find(|u| u.table == r.table || u.mark == r.fwmark)
                        .map_or("?", |u| u.iface.as_str());
                    return Err(uplink_of(e, iface, &applied));
                }
            }
            Change::SetSysctl {
                path,
                value,
                original,
            } => {
                if let Some(original) = original {
                    state.sysctls.insert(path.clone(), original.clone());
                    state.save(run_dir)?;
                }
                if !sysctl::write(path, value) {
                    continue;
                }
            }
            Change::InstallFirewall => {
                let created = fw.apply(&plan.firewall, &state.created)?;
                if created != state.created {
                    state.created = created;
                    state.save(run_dir)?;
                }
            }
            Change::RemoveFirewall(b) => {
                firewall::backend(*b).flush(&state.created)?;
                if *b == Backend::Iptables {
                    state.created.clear();
                    state.save(run_dir)?;
                }
            }
            Change::Keep(a) => keeper::Keeper::connect().await?.keep(*a).await?,
            Change::DelRule(r) => routing.del_rule(r).await?,
            Change::DelRoute(r) => routing.del_route(r).await?,
            Change::RestoreSysctl { path, value } => {
                state.sysctls.remove(path);
                if sysctl::exists(path) {
                    sysctl::write(path, value);
                }
            }
            Change::Release(a) => {
                let k = keeper::Keeper::connect().await?;
                k.release(*a).await?;
                if k.kept().await?.is_empty() {
                    k.remove_dummy().await?;
                }
            }
        }
        applied.push(change.clone());
    }
    Ok(applied)
}

/// Logs a reconcile's outcome. "Nothing changed" is worth telling a person who ran
/// `apply`, not repeating in a daemon's log every minute.
pub fn log_outcome(trigger: &dyn std::fmt::Debug, outcome: &Outcome, unchanged: tracing::Level) {
    let uplinks: Vec<&str> = outcome
        .plan
        .uplinks
        .iter()
        .filter(|u| u.in_balance)
        .map(|u| u.iface.as_str())
        .collect();
    let changes: Vec<String> = outcome.changes.iter().map(|c| c.to_string()).collect();
    if !changes.is_empty() {
        info!(?trigger, ?uplinks, ?changes, "reconciled");
    } else if unchanged == tracing::Level::INFO {
        info!(?trigger, ?uplinks, "in sync; nothing to change");
    } else {
        debug!(?trigger, ?uplinks, "in sync; nothing to change");
    }
    for (iface, why) in &outcome.failed {
        warn!(iface, "not applied: {why}");
    }
}

async fn remove_routing(routing: &Routing, ns: &Namespace, done: &mut Vec<Change>) -> Result<()> {
    for r in routing.rules(ns).await? {
        routing.del_rule(&r).await?;
        done.push(Change::DelRule(r));
    }
    for r in routing.routes(ns).await? {
        routing.del_route(&r).await?;
        done.push(Change::DelRoute(r));
    }
    Ok(())
}

/// Removes everything nm-multiwan installed: firewall (every backend), rules, routes,
/// kept addresses, and puts back the sysctls. Works without NetworkManager.
pub async fn flush(config: &Config, run_dir: &Path) -> Result<Vec<Change>> {
    let _lock = RunLock::acquire(run_dir, Duration::from_secs(60))?;
    let routing = Routing::connect().await?;
    let state = State::load(run_dir);
    let mut done = Vec::new();
    // Firewall first: stop marking before the rules and tables go.
    let created = &state.created;
    for b in Backend::ALL {
        let fw = firewall::backend(b);
        let present = fw.installed().unwrap_or_else(|e| {
            debug!(backend = %b, error = %e, "cannot read that backend: nothing of ours there");
            false
        });
        if present || (b == Backend::Iptables && !created.is_empty()) {
            fw.flush(created)?;
            done.push(Change::RemoveFirewall(b));
        }
    }
    let ns = config.namespace();
    let mut spaces = vec![ns];
    if let Some(old) = state.namespace
        && old != ns
    {
        spaces.push(old);
    }
    for space in &spaces {
        remove_routing(&routing, space, &mut done).await?;
    }
    let k = keeper::Keeper::connect().await?;
    for a in k.kept().await? {
        k.release(a).await?;
        done.push(Change::Release(a));
    }
    k.remove_dummy().await?;
    for (path, value) in &state.sysctls {
        if sysctl::exists(path) && sysctl::write(path, value) {
            done.push(Change::RestoreSysctl {
                path: path.clone(),
                value: value.clone(),
            });
        }
    }
    State::remove(run_dir)?;
    Ok(done)
}
