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
use crate::kernel::{cgroup, conntrack, keeper, sysctl};
use crate::model::Uplink;
use crate::namespace::Namespace;
use crate::nm::{NetworkManager, NmView};
use crate::plan::{self, Facts, Plan, Verdicts};
use crate::state::{RunLock, State};
use futures::future::join_all;

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
    /// Every interface and active connection NetworkManager knows (for policies).
    pub known: BTreeSet<String>,
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
    let now: BTreeSet<IpAddr> = uplinks.iter().flat_map(Uplink::addresses).collect();
    let departed: BTreeSet<IpAddr> = state
        .uplinks
        .iter()
        .flat_map(Uplink::addresses)
        .filter(|a| !now.contains(a))
        .collect();
    // Conntrack is read only when an address departed or one we keep is no uplink's
    // any more: a quiet run never reads it.
    let translated = if !departed.is_empty() || kept.iter().any(|a| !now.contains(a)) {
        translated_sources(&ns).await
    } else {
        None
    };

    let mut known: BTreeSet<String> = nm_view.devices.keys().cloned().collect();
    known.extend(nm_view.uplinks.iter().map(|u| u.connection_id.clone()));
    let facts = Facts {
        uplinks,
        lans: nm_view.lans.clone(),
        health: health.clone(),
        ids,
        translated,
        departed,
        kept: kept.clone(),
        local,
        addresses: kernel
            .addresses
            .iter()
            .filter(|(iface, _)| iface.as_str() != keeper::DUMMY_NAME)
            .map(|(i, a)| (i.clone(), a.clone()))
            .collect(),
        resolved: resolve_names(config),
        users: users(config),
        via: cgroup::existing(),
    };
    let observed = Observed {
        routes: kernel.routes.clone(),
        rules: kernel.rules.clone(),
        // The per-interface IPv4 values came with the link dump; others are read
        // once the plan names them.
        sysctls: kernel.ipv4_conf.clone(),
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
        known,
    })
}

/// The addresses of every host name the policies name, resolved now (the system's
/// resolver: /etc/hosts, then DNS). A name that does not resolve is left out: the
/// planner warns, the rest of its policy applies.
pub fn resolve_names(config: &Config) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out = BTreeMap::new();
    for name in config.policy.iter().flat_map(|p| p.host_names()) {
        if out.contains_key(&name) {
            continue;
        }
        match crate::config::policy::resolve(&name) {
            Ok(addrs) if !addrs.is_empty() => {
                debug!(name, ?addrs, "resolved a policy's host name");
                out.insert(name, addrs);
            }
            Ok(_) => warn!(name, "a policy's host name has no address"),
            Err(e) => warn!(name, "cannot resolve a policy's host name: {e}"),
        }
    }
    out
}

/// The uids of the user names the policies name.
fn users(config: &Config) -> BTreeMap<String, u32> {
    config
        .policy
        .iter()
        .filter_map(|p| match p.user.as_ref()? {
            crate::config::policy::UserSpec::Name(n) => {
                Some((n.clone(), crate::config::policy::uid_of(n)?))
            }
            crate::config::policy::UserSpec::Uid(_) => None,
        })
        .collect()
}

/// Completes `observed` for `plan`: the sysctls it wants, whether the firewall holds
/// it, and which other backend still holds something of ours.
pub fn observe_for(
    plan: &Plan,
    observed: &mut Observed,
    fw: &dyn Firewall,
    state: &State,
) -> Result<()> {
    observe_sysctls(plan, observed, state);
    observed.firewall_current = fw.is_current(&plan.firewall)?;
    observed.stale_backends = stale_backends(fw.backend(), state);
    Ok(())
}

/// The sysctls part of [`observe_for`], which needs no privilege (`status` as a user).
pub fn observe_sysctls(plan: &Plan, observed: &mut Observed, state: &State) {
    // What the link dump did not carry (an interface that appeared since, or a
    // sysctl it has no field for) is read from /proc.
    let missing: Vec<String> = plan
        .sysctls
        .iter()
        .map(|s| s.path())
        .chain(state.sysctls.keys().cloned())
        .filter(|p| !observed.sysctls.contains_key(p))
        .collect();
    observed.sysctls.extend(sysctl::read(missing));
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
/// (source, mark); `None` when conntrack cannot be read (logged).
async fn translated_sources(ns: &Namespace) -> Option<Vec<(IpAddr, u32)>> {
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
        Ok(entries) => Some(
            entries
                .into_iter()
                .filter(|e| ns.decode(e.mark).is_some_and(|m| !m.inbound))
                .filter(|e| e.orig.src != e.reply.dst)
                .map(|e| (e.orig.src, e.mark & ns.id_mask()))
                .collect(),
        ),
        Err(e) => {
            warn!("cannot read conntrack: {e}; keeping every departed address for now");
            None
        }
    }
}

/// Runs one reconcile under the run lock, reading NetworkManager through `nm` (the
/// daemon's, which reads its mirror) or a connection of its own.
pub async fn reconcile(
    config: &Config,
    run_dir: &Path,
    health: &Verdicts,
    nm: Option<&NetworkManager>,
) -> Result<Outcome> {
    let _lock = RunLock::acquire(run_dir, Duration::from_secs(60))?;
    let backend = firewall::resolve(config.firewall);
    let fw = firewall::backend(backend);
    // The firewall is read while we connect to the bus and read NetworkManager.
    fw.prefetch();
    let own;
    let nm = match nm {
        Some(nm) => nm,
        None => {
            own = NetworkManager::connect().await?;
            &own
        }
    };
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

    // The cgroups of `run --via` programs that have all exited go first.
    cgroup::remove_unused();
    let view = observe(config, nm, &routing, &state, health).await?;
    check_policy_uplinks(config, nm, &view.known).await?;
    let mut failed = view.unsettled.clone();
    let held = view.held.clone();
    let mut facts = view.facts;
    let mut observed = view.observed;
    // Record what we are about to create before creating it, so that a crash right
    // after is still cleaned up by flush (saved by `apply` before its first change).
    state.namespace = Some(ns);
    state
        .firewall
        .get_or_insert_with(|| Backend::ALL.into_iter().collect())
        .insert(backend);

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
                observed.routes = routing.routes(&ns).await?;
                observed.rules = routing.rules(&ns).await?;
                // Some may have been written meanwhile: read them again.
                observed.sysctls.clear();
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

/// Reconciles with `config`; when the facts refuse it (a policy names an uplink
/// NetworkManager does not know: a typo, or a profile deleted since), with
/// `fallback()` instead, and with the defaults if that is refused too, so that the
/// balance keeps following NetworkManager, as with a file that fails to load. Returns
/// the outcome and the refusal, if any, for the caller to report.
pub async fn reconcile_or(
    config: &Config,
    fallback: impl FnOnce() -> Config,
    run_dir: &Path,
    health: &Verdicts,
    nm: Option<&NetworkManager>,
) -> Result<(Outcome, Option<Error>)> {
    let refused = match reconcile(config, run_dir, health, nm).await {
        Err(e @ Error::UnknownUplinks(_)) => e,
        other => return other.map(|o| (o, None)),
    };
    let fallback = fallback();
    let outcome = match reconcile(&fallback, run_dir, health, nm).await {
        Err(Error::UnknownUplinks(_)) => reconcile(&Config::default(), run_dir, health, nm).await?,
        other => other?,
    };
    Ok((outcome, Some(refused)))
}

/// Every uplink a policy names must be a connection or interface NetworkManager knows
/// (active or not): a typo is an error before anything changes. The profiles are read
/// only when a name is not an interface or an active connection.
pub async fn check_policy_uplinks(
    config: &Config,
    nm: &NetworkManager,
    known: &BTreeSet<String>,
) -> Result<()> {
    let unknown = plan::ladder::unknown_uplinks(config, known);
    if unknown.is_empty() {
        return Ok(());
    }
    let ids: BTreeSet<String> = nm.connection_ids().await?.into_iter().collect();
    let unknown: Vec<_> = unknown
        .into_iter()
        .filter(|(_, _, name)| !ids.contains(name))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::UnknownUplinks(unknown))
    }
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
    // What the run is about to create (namespace, backend: see `reconcile`) and the
    // original of every sysctl it is about to change are recorded first, in one write
    // of the state file (a crash after any change still cleans up and restores).
    for change in changes {
        if let Change::SetSysctl {
            path,
            original: Some(original),
            ..
        } = change
        {
            state.sysctls.insert(path.clone(), original.clone());
        }
    }
    state.save(run_dir)?;
    let mut i = 0;
    while i < changes.len() {
        let uplink_of = |e: Error, iface: &str, applied: &Vec<Change>| Failure::Uplink {
            iface: iface.to_string(),
            error: e,
            applied: applied.clone(),
        };
        // A run of route (or rule) additions goes to the kernel at once, each request
        // answered in turn: the order within a run does not matter, and one round trip
        // per route costs more than the route.
        let run = addition_run(&changes[i..]);
        if run > 0 {
            let additions = &changes[i..i + run];
            i += run;
            let results = join_all(additions.iter().map(|c| add(routing, c))).await;
            let mut failed = None;
            for (change, result) in additions.iter().zip(results) {
                debug!(%change, "applied");
                match result {
                    Ok(()) => applied.push(change.clone()),
                    Err(e) => {
                        failed.get_or_insert((e, uplink_of_addition(plan, change)));
                    }
                }
            }
            if let Some((e, iface)) = failed {
                return Err(uplink_of(e, &iface, &applied));
            }
            continue;
        }
        let change = &changes[i];
        i += 1;
        debug!(%change, "applying");
        match change {
            Change::AddRoute(_) | Change::AddRule(_) => unreachable!("applied above"),
            Change::SetSysctl { path, value, .. } => {
                if !sysctl::write(path, value) {
                    continue;
                }
            }
            Change::InstallFirewall => {
                // The addresses to keep that follow go to the kernel on another thread
                // while it takes the firewall on this one: independent work, each a
                // few milliseconds when a run starts from nothing.
                let keeps: Vec<IpAddr> = changes[i..]
                    .iter()
                    .map_while(|c| match c {
                        Change::Keep(a) => Some(*a),
                        _ => None,
                    })
                    .collect();
                let keeping = (!keeps.is_empty()).then(|| tokio::spawn(keep(keeps.clone())));
                let before = state.created.clone();
                let installed = fw.apply(&plan.firewall, &before, &mut |created| {
                    state.created = created.clone();
                    state.save(run_dir)
                });
                let kept = match keeping {
                    Some(keeping) => keeping
                        .await
                        .unwrap_or_else(|e| Err(Error::Other(format!("keeping addresses: {e}")))),
                    None => Ok(()),
                };
                // What the firewall created is recorded even when keeping failed.
                let created = installed?;
                if created != state.created {
                    state.created = created;
                    state.save(run_dir)?;
                }
                kept?;
                applied.push(change.clone());
                applied.extend(keeps.iter().map(|a| Change::Keep(*a)));
                i += keeps.len();
                continue;
            }
            Change::RemoveFirewall(b) => {
                let created = firewall::backend(*b).flush(&state.created)?;
                if created != state.created {
                    state.created = created;
                    state.save(run_dir)?;
                }
            }
            Change::Keep(a) => keep(vec![*a]).await?,
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

/// Keeps each address on our keeper interface, in order.
async fn keep(addresses: Vec<IpAddr>) -> Result<()> {
    let k = keeper::Keeper::connect().await?;
    for a in addresses {
        k.keep(a).await?;
    }
    Ok(())
}

/// How many changes at the head of `changes` are additions of one kind: routes, or
/// rules (0 when the first is neither).
fn addition_run(changes: &[Change]) -> usize {
    let kind = |c: &Change| match c {
        Change::AddRoute(_) => 1,
        Change::AddRule(_) => 2,
        _ => 0,
    };
    match changes.first().map(kind) {
        Some(k) if k > 0 => changes.iter().take_while(|c| kind(c) == k).count(),
        _ => 0,
    }
}

/// Applies one addition of [`addition_run`].
async fn add(routing: &Routing, change: &Change) -> Result<()> {
    match change {
        Change::AddRoute(r) => routing.add_route(r).await,
        Change::AddRule(r) => routing.add_rule(r).await,
        other => unreachable!("not an addition: {other}"),
    }
}

/// The uplink an addition the kernel refused belongs to ("?" when none does).
fn uplink_of_addition(plan: &Plan, change: &Change) -> String {
    match change {
        Change::AddRoute(r) => r.oif.clone(),
        Change::AddRule(r) => plan
            .uplinks
            .iter()
            .find(|u| u.table == r.table || u.mark == r.fwmark)
            .map_or("?", |u| u.iface.as_str())
            .to_string(),
        _ => "?".to_string(),
    }
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
    let mut created = state.created.clone();
    for b in Backend::ALL {
        let fw = firewall::backend(b);
        let present = fw.installed().unwrap_or_else(|e| {
            debug!(backend = %b, error = %e, "cannot read that backend: nothing of ours there");
            false
        });
        if present || !created.is_empty() {
            created = fw.flush(&created)?;
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
