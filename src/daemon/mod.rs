//! `nm-multiwan daemon`: follows NetworkManager on D-Bus, probes every uplink and takes
//! dead ones out of the balance, through the same reconcile as `apply`.
//!
//! One task owns the state and runs every reconcile (here, [`run`]); around it:
//! - [`signals`]: one system-bus connection that carries both the subscription to
//!   NetworkManager's signals and our own D-Bus service ([`service`]), rebuilt whenever
//!   the bus drops;
//! - [`probes`]: one probe task per uplink and family ([`health::Prober`]), reporting
//!   every probe's fate;
//! - [`reset`]: the connections of an uplink the probes took out are reset right
//!   after the reconcile that took it out, so that applications reconnect at once;
//! - Unix signals: SIGTERM/SIGINT stop, SIGHUP reloads.
//!
//! Triggers are coalesced: NetworkManager signals wait [`NM_DEBOUNCE`] (a burst of
//! them costs one reconcile), health verdicts and reloads go at once, and a safety
//! reconcile runs every [`SAFETY_INTERVAL`]. Reconcile is level-triggered and takes
//! the same run lock as `apply` and the dispatcher, so they never fight; the daemon
//! also publishes its verdicts (`health.json` in the run directory) so that their
//! reconciles reach the same result. The lock is held only while reconciling.

mod announce;
mod probes;
mod reset;
mod sampling;
mod service;
mod signals;
#[cfg(test)]
mod tests;

pub use service::{
    BUS_NAME, INTERFACE, OBJECT_PATH, STATUS_QUERY_TIMEOUT, query_status, status_on,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use zbus::Connection;

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::health::{Board, DaemonLock, Flip, Thresholds};
use crate::model::Family;
use crate::nm::NetworkManager;
use crate::plan::Plan;
use crate::reconcile;
use crate::status::{self, ConfigErrorReport, StatusReport};

use probes::{ProbeReport, ProberHandle};
use signals::{bus_task, nm_facts};

const NM_BUS: &str = "org.freedesktop.NetworkManager";
const NM_PATH: &str = "/org/freedesktop/NetworkManager";

/// How long a NetworkManager signal waits for the rest of its burst.
pub const NM_DEBOUNCE: Duration = Duration::from_millis(150);
/// A reconcile this often whatever happens (repairs what someone else changed).
pub const SAFETY_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a reconcile waits for NetworkManager to finish starting up.
const NM_STARTUP_WAIT: Duration = Duration::from_secs(20);
/// Longest wait between retries of a failing reconcile.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between attempts to reach the system bus.
const MAX_BUS_RETRY: Duration = Duration::from_secs(5);

/// Properties whose change can change the uplinks (the interface named in
/// `PropertiesChanged`); Wi-Fi scans, statistics and the like are ignored.
const RELEVANT_INTERFACES: &[&str] = &[
    "org.freedesktop.NetworkManager",
    "org.freedesktop.NetworkManager.Device",
    "org.freedesktop.NetworkManager.IP4Config",
    "org.freedesktop.NetworkManager.IP6Config",
    "org.freedesktop.NetworkManager.Connection.Active",
];

pub struct Options {
    pub config_path: PathBuf,
    pub run_dir: PathBuf,
    /// Remove everything we installed on SIGTERM/SIGINT instead of leaving it in place.
    pub flush_on_exit: bool,
}

/// What the D-Bus service and the main loop share.
struct Shared {
    config: RwLock<Arc<Config>>,
    /// Why the config file is not in use (it failed at start or at the last reload).
    config_error: Mutex<Option<ConfigErrorReport>>,
    board: Mutex<Board>,
    control: mpsc::Sender<Control>,
    /// The live system-bus connection, when there is one.
    bus: Mutex<Option<Connection>>,
    /// NetworkManager's objects, kept current by its signals on that connection:
    /// reconciles read NetworkManager from here.
    nm_mirror: Arc<crate::nm::Mirror>,
    /// The uplinks' byte counters, sampled every second.
    traffic: Mutex<sampling::Sampling>,
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// NetworkManager, read from the mirror over the live bus connection; `None`
    /// while the bus is down.
    fn nm(&self) -> Option<NetworkManager> {
        let conn = self.bus.lock().expect("bus lock").clone()?;
        Some(NetworkManager::mirrored(conn, self.nm_mirror.clone()))
    }
}

enum Control {
    Reload {
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    /// Answered with the reconcile's duration in microseconds and how many changes
    /// it applied.
    Reconcile {
        reply: oneshot::Sender<std::result::Result<(u64, u32), String>>,
    },
}

/// A reconcile asked for, not run yet.
#[derive(Debug)]
struct Pending {
    at: Instant,
    reasons: Vec<String>,
}

/// Adds a trigger to the pending reconcile: one reconcile at the earliest time asked
/// for (a burst never postpones it), with the first few distinct reasons for the log.
fn coalesce(pending: &mut Option<Pending>, at: Instant, why: String) {
    match pending {
        Some(p) => {
            p.at = p.at.min(at);
            if p.reasons.len() < 8 && !p.reasons.contains(&why) {
                p.reasons.push(why);
            }
        }
        None => {
            *pending = Some(Pending {
                at,
                reasons: vec![why],
            })
        }
    }
}

struct Daemon {
    opts: Options,
    config: Arc<Config>,
    shared: Arc<Shared>,
    lock: DaemonLock,
    probers: BTreeMap<(String, Family), ProberHandle>,
    generation: u64,
    /// Uplinks (and families) a health verdict took out whose connections are to be
    /// reset once the reconcile has taken them out of the rounds.
    resets: BTreeSet<(String, Family)>,
    probe_tx: mpsc::Sender<ProbeReport>,
    pending: Option<Pending>,
    failures: u32,
    /// NetworkManager's connectivity per interface, from the last read.
    nm_connectivity: BTreeMap<String, Option<u32>>,
    /// Since when NetworkManager says it is starting up.
    nm_starting_since: Option<Instant>,
    /// What `UplinksChanged` last said.
    announced: announce::Announced,
    /// The configuration loaded from the file, kept as the last good one once a
    /// reconcile has applied it (one the facts refuse never becomes the fallback).
    unkept: Option<config::Loaded>,
    /// Whether `config_error` shows a refusal by the facts (cleared once the
    /// configuration applies), not a file that fails to load.
    refusal_shown: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<()> {
    // A broken config file never stops us: the last good configuration (or the
    // defaults) runs, and the error is logged at every reconcile and shown by `status`.
    let loaded = config::load_or_last_good(&opts.config_path, &opts.run_dir);
    loaded.log_error();
    let lock = DaemonLock::acquire(&opts.run_dir)?;
    let config_error = ConfigErrorReport::from_loaded(&loaded);
    let config = loaded.config.clone();
    let sig = |kind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("installing the {name} handler"), e))
    };
    let mut sigterm = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = sig(SignalKind::hangup(), "SIGHUP")?;

    let (nm_tx, mut nm_rx) = mpsc::channel::<String>(64);
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeReport>(256);
    let (control_tx, mut control_rx) = mpsc::channel::<Control>(8);
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        config: RwLock::new(config.clone()),
        config_error: Mutex::new(config_error),
        board: Mutex::new(Board::default()),
        control: control_tx,
        bus: Mutex::new(None),
        nm_mirror: Arc::default(),
        traffic: Mutex::default(),
    });
    info!(
        config = %opts.config_path.display(),
        run_dir = %opts.run_dir.display(),
        targets = ?config.health.targets,
        interval_ms = config.health.interval_ms,
        down_after = config.health.down_after,
        up_after = config.health.up_after,
        max_loss = config.health.max_loss,
        max_rtt_ms = config.health.max_rtt_ms,
        window = config.health.window,
        "daemon starting"
    );
    let bus_task = tokio::spawn(bus_task(shared.clone(), nm_tx));
    let sample_task = tokio::spawn(sampling::sample_loop(shared.clone()));

    let mut d = Daemon {
        opts,
        config,
        shared,
        lock,
        probers: BTreeMap::new(),
        generation: 0,
        resets: BTreeSet::new(),
        probe_tx,
        pending: None,
        failures: 0,
        nm_connectivity: BTreeMap::new(),
        nm_starting_since: None,
        announced: Default::default(),
        unkept: Some(loaded),
        refusal_shown: false,
    };
    d.schedule(Instant::now(), "start".into());
    let mut safety = tokio::time::interval_at(Instant::now() + SAFETY_INTERVAL, SAFETY_INTERVAL);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let deadline = d
            .pending
            .as_ref()
            .map_or_else(|| Instant::now() + Duration::from_secs(3600), |p| p.at);
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                if let Err(e) = d.reload("SIGHUP").await {
                    error!("reload failed, keeping the previous configuration: {e}");
                }
            }
            Some(c) = control_rx.recv() => match c {
                Control::Reload { reply } => {
                    let r = d.reload("D-Bus Reload").await;
                    if let Err(e) = &r {
                        error!("reload failed: {e}");
                    }
                    let _ = reply.send(r);
                }
                Control::Reconcile { reply } => {
                    let started = Instant::now();
                    d.schedule(started, "D-Bus Reconcile".into());
                    let r = d.reconcile_now().await;
                    let took = started.elapsed().as_micros() as u64;
                    let _ = reply.send(r.map(|n| (took, n as u32)));
                }
            },
            Some(why) = nm_rx.recv() => d.schedule(Instant::now() + NM_DEBOUNCE, why),
            Some(report) = probe_rx.recv() => d.on_probe(report),
            _ = safety.tick() => d.schedule(Instant::now(), "periodic check".into()),
            _ = tokio::time::sleep_until(deadline), if d.pending.is_some() => {
                let _ = d.reconcile_now().await; // failures are logged and retried
            }
        }
    }

    bus_task.abort();
    sample_task.abort();
    for p in d.probers.values() {
        p.task.abort();
    }
    d.lock.withdraw();
    if d.opts.flush_on_exit {
        let (config, run_dir) = (d.config.clone(), d.opts.run_dir.clone());
        let handle = tokio::runtime::Handle::current();
        let r = tokio::task::spawn_blocking(move || {
            handle.block_on(reconcile::flush(&config, &run_dir))
        })
        .await
        .map_err(|e| Error::Other(format!("flush task: {e}")))?;
        let done: Vec<String> = r?.iter().map(|c| c.to_string()).collect();
        info!(changes = ?done, "flushed on exit (--flush-on-exit)");
    } else {
        info!(
            "stopped; the balanced state stays in place (--flush-on-exit removes it; \
             the next `apply` or dispatcher event balances over every uplink again)"
        );
    }
    Ok(())
}

impl Daemon {
    /// Asks for a reconcile at `at` at the latest (earlier requests win).
    fn schedule(&mut self, at: Instant, why: String) {
        coalesce(&mut self.pending, at, why);
    }

    fn on_probe(&mut self, r: ProbeReport) {
        let key = (r.iface.clone(), r.family);
        if self
            .probers
            .get(&key)
            .is_none_or(|p| p.generation != r.generation)
        {
            return; // an event of a prober that has been replaced
        }
        let t = Thresholds::from(&self.config.health);
        let flip = {
            let mut board = self.shared.board.lock().expect("board lock");
            let flip = board.record(&r.iface, r.family, &r.event, &t, SystemTime::now());
            if let Some(q) = board
                .get(&r.iface)
                .and_then(|h| h.families.get(&r.family))
                .map(|p| &p.quality)
            {
                tracing::trace!(
                    iface = r.iface,
                    family = %r.family,
                    event = ?r.event,
                    unanswered = q.unanswered,
                    answered_in_a_row = q.answered_in_a_row,
                    "probe"
                );
            }
            flip
        };
        if let Some(flip) = flip {
            self.on_flip(&r.iface, &flip);
        }
    }

    /// A verdict changed: log it, publish it, reconcile at once; a verdict that takes
    /// an uplink out also has its connections reset after that reconcile.
    fn on_flip(&mut self, iface: &str, flip: &Flip) {
        let family = flip.family;
        let why = flip
            .reason
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default();
        if flip.healthy {
            info!(iface, %family, "uplink healthy again in {family}: back in the balance");
            self.resets.remove(&(iface.to_string(), family));
        } else {
            warn!(
                iface,
                %family,
                reason = why,
                "uplink unhealthy in {family} ({why}): taking it out of the balance"
            );
            if flip.worked {
                self.resets.insert((iface.to_string(), family));
            } else {
                warn!(
                    iface,
                    %family,
                    "no probe was ever answered through it (are the targets reachable from \
                     this network?): its connections are left alone"
                );
            }
        }
        self.publish();
        let state = if flip.healthy { "up" } else { "down" };
        self.schedule(Instant::now(), format!("health: {iface} {family} {state}"));
    }

    /// Resets the connections of the uplinks a health verdict took out of a family's
    /// round, now that the reconcile has taken them out. An uplink still in the round
    /// (every uplink of the family is down, so all are balanced over) waits until it
    /// leaves it; one that is healthy again or gone has nothing to reset.
    async fn reset_connections(&mut self, plan: &Plan) {
        let pending = std::mem::take(&mut self.resets);
        if !self.config.health.reset_connections {
            return;
        }
        for (iface, family) in pending {
            let Some(u) = plan.uplink(&iface) else {
                continue;
            };
            if !u.serves(family) || u.verdict.family(family) {
                continue;
            }
            if u.balanced_in(family) {
                self.resets.insert((iface, family));
                continue;
            }
            let why = self
                .shared
                .board
                .lock()
                .expect("board lock")
                .get(&iface)
                .and_then(|h| h.reason(family))
                .map_or_else(|| "unhealthy".to_string(), |r| r.to_string());
            match reset::reset(&plan.namespace, u.mark, family).await {
                Ok(r) => reset::log(&iface, family, &why, &r),
                Err(e) => warn!(
                    iface,
                    %family,
                    "cannot reset the connections of an unhealthy uplink: {e}; they \
                     go on until their own timeouts"
                ),
            }
        }
    }

    fn publish(&self) {
        let verdicts = self.shared.board.lock().expect("board lock").verdicts();
        if let Err(e) = self.lock.publish(&verdicts) {
            warn!("cannot publish health verdicts: {e}");
        }
    }

    /// Re-reads the configuration; on success reconciles with it at once. A file that
    /// fails keeps the running configuration, and `status` shows the error.
    async fn reload(&mut self, why: &str) -> std::result::Result<(), String> {
        let loaded = config::load_or_last_good(&self.opts.config_path, &self.opts.run_dir);
        if let Some(e) = &loaded.error {
            *self.shared.config_error.lock().expect("config error lock") = Some(
                ConfigErrorReport::new(e, "the configuration the daemon ran before"),
            );
            return Err(e.to_string());
        }
        *self.shared.config_error.lock().expect("config error lock") = None;
        // Probes whose settings changed are restarted by the next reconcile's
        // sync_probers; new limits apply to the next probe event.
        let config = loaded.config.clone();
        self.unkept = Some(loaded);
        self.config = Arc::new(config);
        *self.shared.config.write().expect("config lock") = self.config.clone();
        info!(trigger = why, "configuration reloaded");
        self.schedule(Instant::now(), why.to_string());
        self.reconcile_now().await.map(drop)
    }

    /// Runs the pending reconcile now; returns how many changes it applied.
    async fn reconcile_now(&mut self) -> std::result::Result<usize, String> {
        let reasons = self.pending.take().map(|p| p.reasons).unwrap_or_default();
        if let Some(e) = &*self.shared.config_error.lock().expect("config error lock") {
            error!(
                "{}; going on with {} until a reload succeeds",
                e.message, e.using
            );
        }
        // While NetworkManager (re)starts, its devices are not activated yet: planning
        // then would tear every uplink down for a moment. Wait (boundedly) for it.
        if self.refresh_nm().await {
            let since = *self.nm_starting_since.get_or_insert_with(Instant::now);
            if since.elapsed() < NM_STARTUP_WAIT {
                debug!("NetworkManager is starting up; reconcile postponed");
                for r in reasons {
                    self.schedule(Instant::now() + Duration::from_millis(250), r);
                }
                return Ok(0);
            }
        } else {
            self.nm_starting_since = None;
        }
        let verdicts = self.shared.board.lock().expect("board lock").verdicts();
        if let Err(e) = self.lock.publish(&verdicts) {
            warn!("cannot publish health verdicts: {e}");
        }
        let (config, run_dir) = (self.config.clone(), self.opts.run_dir.clone());
        let nm = self.shared.nm();
        // Awaited here, on the main loop: the probes and the bus run on the runtime's
        // workers meanwhile.
        let result = reconcile::reconcile_or(
            &config,
            || config::last_good_or_defaults(&run_dir).0,
            &run_dir,
            &verdicts,
            nm.as_ref(),
        )
        .await;
        match result {
            Ok((outcome, refused)) => {
                match refused {
                    // The facts refuse the configuration (a policy names an uplink
                    // nobody knows): the last good one ran instead; `status` says so.
                    Some(e) => {
                        let e = match &self.unkept {
                            Some(l) => l.locate(e),
                            None => e,
                        };
                        error!("{e}; following NetworkManager with the last good configuration");
                        *self.shared.config_error.lock().expect("config error lock") =
                            Some(ConfigErrorReport::new(&e, "the last good configuration"));
                        self.refusal_shown = true;
                    }
                    None => {
                        if std::mem::take(&mut self.refusal_shown) {
                            *self.shared.config_error.lock().expect("config error lock") = None;
                        }
                        if let Some(l) = self.unkept.take()
                            && let Err(e) = l.keep_as_last_good(&self.opts.run_dir)
                        {
                            warn!("cannot keep the configuration as the last good one: {e}");
                        }
                    }
                }
                reconcile::log_outcome(&reasons, &outcome, tracing::Level::DEBUG);
                // Uplinks left out of this run (NetworkManager's view in flux, or the
                // kernel refused them) or held while NetworkManager re-activates them
                // are looked at again like after a failed run.
                let unsettled = outcome.unsettled();
                let applied = outcome.changes.len();
                let plan = outcome.plan;
                if !unsettled {
                    self.failures = 0;
                } else {
                    self.failures += 1;
                    let delay = retry_delay(self.failures);
                    self.schedule(Instant::now() + delay, "retry left-out uplinks".into());
                }
                for w in &plan.warnings {
                    debug!("plan: {w}");
                }
                if self.sync_probers(&plan) {
                    // A new uplink NetworkManager already calls dead: plan again.
                    self.schedule(Instant::now(), "NetworkManager connectivity".into());
                }
                self.reset_connections(&plan).await;
                self.publish();
                self.watch_traffic(&plan);
                self.announce(Some(&plan)).await;
                Ok(applied)
            }
            Err(e) => {
                self.failures += 1;
                let delay = retry_delay(self.failures);
                warn!(trigger = ?reasons, "reconcile failed: {e}; retrying in {delay:?}");
                self.schedule(Instant::now() + delay, "retry".into());
                self.announce(None).await;
                Err(e.to_string())
            }
        }
    }

    /// Reads NetworkManager's per-device connectivity and feeds it to the board.
    /// Returns whether NetworkManager is still starting up.
    async fn refresh_nm(&mut self) -> bool {
        let Some(nm) = self.shared.nm() else {
            return false;
        };
        let mut starting = false;
        match tokio::time::timeout(Duration::from_secs(2), nm_facts(&nm)).await {
            Ok(Ok(facts)) => {
                starting = facts.starting;
                self.nm_connectivity = facts.connectivity;
            }
            Ok(Err(e)) => debug!("cannot read NetworkManager's connectivity: {e}"),
            Err(_) => debug!("reading NetworkManager's connectivity timed out"),
        }
        self.apply_nm_connectivity();
        starting
    }

    /// Returns whether a verdict flipped.
    fn apply_nm_connectivity(&mut self) -> bool {
        let mut flips: Vec<(String, Flip)> = Vec::new();
        {
            let mut board = self.shared.board.lock().expect("board lock");
            let ifaces: Vec<String> = board.ifaces().map(str::to_string).collect();
            for iface in ifaces {
                let c = self.nm_connectivity.get(&iface).copied().flatten();
                for flip in board.set_nm_connectivity(&iface, c, SystemTime::now()) {
                    flips.push((iface.clone(), flip));
                }
            }
        }
        for (iface, flip) in &flips {
            if flip.healthy {
                info!(iface, family = %flip.family, "NetworkManager reports connectivity again");
                self.resets.remove(&(iface.clone(), flip.family));
            } else {
                warn!(
                    iface,
                    family = %flip.family,
                    "NetworkManager's connectivity check fails on this uplink; \
                     taking it out of the balance"
                );
                self.resets.insert((iface.clone(), flip.family));
            }
        }
        !flips.is_empty()
    }
}

/// 1 s, 2 s, 4 s ... up to [`MAX_RETRY`].
fn retry_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_RETRY)
}
