//! `nm-multiwan daemon`: follows NetworkManager on D-Bus, probes every uplink and takes
//! dead ones out of the balance, through the same reconcile as `apply`.
//!
//! One task owns the state and runs every reconcile ([`Daemon::run_loop`]); around it:
//! - the bus task: one system-bus connection that carries both the subscription to
//!   NetworkManager's signals and our own D-Bus service, rebuilt whenever the bus drops;
//! - one probe task per uplink ([`health::Prober`]), reporting every round;
//! - Unix signals: SIGTERM/SIGINT stop, SIGHUP reloads.
//!
//! Triggers are coalesced: NetworkManager signals wait [`NM_DEBOUNCE`] (a burst of
//! them costs one reconcile), health verdicts and reloads go at once, and a safety
//! reconcile runs every [`SAFETY_INTERVAL`]. Reconcile is level-triggered and takes
//! the same run lock as `apply` and the dispatcher, so they never fight; the daemon
//! also publishes its verdicts (`health.json` in the run directory) so that their
//! reconciles reach the same result. The lock is held only while reconciling.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, MessageStream};

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::health::{self, Board, DaemonLock, ProbeSpec, Prober, RoundOutcome, Thresholds};
use crate::nm::NetworkManager;
use crate::plan::Plan;
use crate::reconcile;
use crate::status::{self, ConfigErrorReport, StatusReport};

/// Our well-known name on the system bus.
pub const BUS_NAME: &str = "net.nmmultiwan.Daemon1";
pub const OBJECT_PATH: &str = "/net/nmmultiwan/Daemon1";
pub const INTERFACE: &str = "net.nmmultiwan.Daemon1";

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
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }
}

enum Control {
    Reload {
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
}

struct ProbeReport {
    iface: String,
    generation: u64,
    outcome: RoundOutcome,
}

struct ProberHandle {
    spec: ProbeSpec,
    generation: u64,
    task: tokio::task::JoinHandle<()>,
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
    probers: BTreeMap<String, ProberHandle>,
    generation: u64,
    probe_tx: mpsc::Sender<ProbeReport>,
    pending: Option<Pending>,
    failures: u32,
    /// NetworkManager's connectivity per interface, from the last read.
    nm_connectivity: BTreeMap<String, Option<u32>>,
    /// Since when NetworkManager says it is starting up.
    nm_starting_since: Option<Instant>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<()> {
    // A broken config file never stops us: the last good configuration (or the
    // defaults) runs, and the error is logged at every reconcile and shown by `status`.
    let loaded = config::load_or_last_good(&opts.config_path, &opts.run_dir);
    loaded.log_error();
    let lock = DaemonLock::acquire(&opts.run_dir)?;
    if let Err(e) = loaded.keep_as_last_good(&opts.run_dir) {
        warn!("cannot keep the configuration as the last good one: {e}");
    }
    let config_error = ConfigErrorReport::from_loaded(&loaded);
    let config = loaded.config;
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
    });
    info!(
        config = %opts.config_path.display(),
        run_dir = %opts.run_dir.display(),
        targets = ?config.health.targets,
        interval_ms = config.health.interval_ms,
        down_after = config.health.down_after,
        up_after = config.health.up_after,
        "daemon starting"
    );
    let bus_task = tokio::spawn(bus_task(shared.clone(), nm_tx));

    let mut d = Daemon {
        opts,
        config,
        shared,
        lock,
        probers: BTreeMap::new(),
        generation: 0,
        probe_tx,
        pending: None,
        failures: 0,
        nm_connectivity: BTreeMap::new(),
        nm_starting_since: None,
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
        if self
            .probers
            .get(&r.iface)
            .is_none_or(|p| p.generation != r.generation)
        {
            return; // a round of a prober that has been replaced
        }
        let t = Thresholds::from(&self.config.health);
        let flipped = {
            let mut board = self.shared.board.lock().expect("board lock");
            let flipped = board.record(&r.iface, &r.outcome, t, SystemTime::now());
            if let Some(h) = board.get(&r.iface) {
                debug!(
                    iface = r.iface,
                    success = r.outcome.success,
                    rtt_ms = r.outcome.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    error = r.outcome.error.as_deref(),
                    successes = h.probes.successes,
                    failures = h.probes.failures,
                    "probe round"
                );
            }
            flipped
        };
        match flipped {
            Some(false) => {
                warn!(
                    iface = r.iface,
                    error = r.outcome.error.as_deref(),
                    "uplink unhealthy: {} probe rounds failed in a row; taking it out of the balance",
                    t.down_after
                );
                self.publish();
                self.schedule(Instant::now(), format!("health: {} down", r.iface));
            }
            Some(true) => {
                info!(
                    iface = r.iface,
                    "uplink healthy again: {} probe rounds answered in a row; back in the balance",
                    t.up_after
                );
                self.publish();
                self.schedule(Instant::now(), format!("health: {} up", r.iface));
            }
            None => {}
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
        if let Err(e) = loaded.keep_as_last_good(&self.opts.run_dir) {
            warn!("cannot keep the configuration as the last good one: {e}");
        }
        *self.shared.config_error.lock().expect("config error lock") = None;
        let config = loaded.config;
        let probes_changed = config.health.targets != self.config.health.targets
            || config.health.interval_ms != self.config.health.interval_ms;
        self.config = Arc::new(config);
        *self.shared.config.write().expect("config lock") = self.config.clone();
        if probes_changed {
            for (_, p) in std::mem::take(&mut self.probers) {
                p.task.abort();
            }
        }
        info!(trigger = why, "configuration reloaded");
        self.schedule(Instant::now(), why.to_string());
        self.reconcile_now().await
    }

    /// Runs the pending reconcile now.
    async fn reconcile_now(&mut self) -> std::result::Result<(), String> {
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
                return Ok(());
            }
        } else {
            self.nm_starting_since = None;
        }
        let verdicts = self.shared.board.lock().expect("board lock").verdicts();
        if let Err(e) = self.lock.publish(&verdicts) {
            warn!("cannot publish health verdicts: {e}");
        }
        let (config, run_dir) = (self.config.clone(), self.opts.run_dir.clone());
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            handle.block_on(reconcile::reconcile(&config, &run_dir, &verdicts))
        })
        .await
        .unwrap_or_else(|e| Err(Error::Other(format!("reconcile task: {e}"))));
        match result {
            Ok(outcome) => {
                reconcile::log_outcome(&reasons, &outcome, tracing::Level::DEBUG);
                // Uplinks left out of this run (NetworkManager's view in flux, or the
                // kernel refused them) or held while NetworkManager re-activates them
                // are looked at again like after a failed run.
                let unsettled = outcome.unsettled();
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
                self.publish();
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                let delay = retry_delay(self.failures);
                warn!(trigger = ?reasons, "reconcile failed: {e}; retrying in {delay:?}");
                self.schedule(Instant::now() + delay, "retry".into());
                Err(e.to_string())
            }
        }
    }

    /// Reads NetworkManager's per-device connectivity and feeds it to the board.
    /// Returns whether NetworkManager is still starting up.
    async fn refresh_nm(&mut self) -> bool {
        let conn = self.shared.bus.lock().expect("bus lock").clone();
        let Some(conn) = conn else { return false };
        let mut starting = false;
        match tokio::time::timeout(Duration::from_secs(2), nm_facts(&conn)).await {
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
        let mut board = self.shared.board.lock().expect("board lock");
        let ifaces: Vec<String> = board.ifaces().map(str::to_string).collect();
        let mut flipped = false;
        for iface in ifaces {
            let c = self.nm_connectivity.get(&iface).copied().flatten();
            if let Some(v) = board.set_nm_connectivity(&iface, c, SystemTime::now()) {
                flipped = true;
                if v {
                    info!(iface, "NetworkManager reports connectivity again");
                } else {
                    warn!(
                        iface,
                        connectivity = health::nm_connectivity::name(c.unwrap_or(0)),
                        "NetworkManager's connectivity check fails on this uplink; \
                         taking it out of the balance"
                    );
                }
            }
        }
        flipped
    }

    /// Probes exactly the uplinks of the plan; returns whether a verdict flipped.
    fn sync_probers(&mut self, plan: &Plan) -> bool {
        let now = SystemTime::now();
        let interval = Duration::from_millis(self.config.health.interval_ms);
        let targets = health::targets(&self.config.health).unwrap_or_else(|e| {
            warn!("{e}");
            Vec::new()
        });
        {
            let mut board = self.shared.board.lock().expect("board lock");
            board.retain(|i| plan.uplinks.iter().any(|u| u.iface == i));
        }
        self.probers.retain(|iface, p| {
            let keep = plan.uplinks.iter().any(|u| &u.iface == iface);
            if !keep {
                debug!(iface, "no longer an uplink; probing stops");
                p.task.abort();
            }
            keep
        });
        for u in &plan.uplinks {
            // Probes are IPv4 (ICMP echo or TCP): an uplink with IPv6 only is not probed
            // and counts as healthy.
            let Some(std::net::IpAddr::V4(address)) = u.ipv4.as_ref().map(|v4| v4.address) else {
                debug!(iface = u.iface, "no IPv4 address: not probed");
                continue;
            };
            let reset = self
                .shared
                .board
                .lock()
                .expect("board lock")
                .track(&u.iface, address, u.mark, now);
            let spec = ProbeSpec {
                iface: u.iface.clone(),
                source: address,
                mark: u.mark,
                targets: targets.clone(),
                timeout: health::round_timeout(interval),
            };
            if let Some(p) = self.probers.get(&u.iface) {
                if p.spec == spec && !reset {
                    continue;
                }
                p.task.abort();
                self.probers.remove(&u.iface);
            }
            if targets.is_empty() {
                continue; // probing off: NetworkManager's connectivity only
            }
            self.generation += 1;
            info!(
                iface = u.iface,
                source = %address,
                mark = format!("{:#x}", u.mark),
                "probing uplink"
            );
            let task = tokio::spawn(probe_loop(
                spec.clone(),
                interval,
                self.generation,
                self.probe_tx.clone(),
            ));
            self.probers.insert(
                u.iface.clone(),
                ProberHandle {
                    spec,
                    generation: self.generation,
                    task,
                },
            );
        }
        self.apply_nm_connectivity()
    }
}

/// 1 s, 2 s, 4 s ... up to [`MAX_RETRY`].
fn retry_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_RETRY)
}

async fn probe_loop(
    spec: ProbeSpec,
    interval: Duration,
    generation: u64,
    tx: mpsc::Sender<ProbeReport>,
) {
    let ident = (std::process::id() as u16) ^ ((generation as u16) << 9) ^ (generation as u16);
    let mut prober: Option<Prober> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = match &mut prober {
            Some(p) => p.round().await,
            None => match Prober::new(spec.clone(), ident) {
                Ok(mut p) => {
                    let o = p.round().await;
                    prober = Some(p);
                    o
                }
                Err(e) => {
                    if !warned {
                        warn!(iface = spec.iface, "cannot probe: {e}");
                        warned = true;
                    }
                    RoundOutcome {
                        success: false,
                        rtt: None,
                        error: Some(e.to_string()),
                    }
                }
            },
        };
        let report = ProbeReport {
            iface: spec.iface.clone(),
            generation,
            outcome,
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// The system bus: NetworkManager's signals in, our service out.

async fn bus_task(shared: Arc<Shared>, nm_tx: mpsc::Sender<String>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match bus_session(&shared, &nm_tx).await {
            Ok(()) => {
                warn!("lost the system bus; reconnecting");
                delay = Duration::from_millis(200);
            }
            Err(e) => warn!("system bus: {e}; retrying in {delay:?}"),
        }
        *shared.bus.lock().expect("bus lock") = None;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BUS_RETRY);
    }
}

/// One connection's life: serve, subscribe, forward signals until the bus drops.
async fn bus_session(shared: &Arc<Shared>, nm_tx: &mpsc::Sender<String>) -> zbus::Result<()> {
    let service = Service {
        shared: shared.clone(),
    };
    // Bounded like every other wait on the bus: a bus that never answers is retried.
    let conn = crate::bus::system(crate::bus::DBUS_TIMEOUT)
        .await
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    conn.object_server().at(OBJECT_PATH, service).await?;
    let nm_rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(NM_BUS)?
        .path_namespace(NM_PATH)?
        .build();
    let mut nm_signals = MessageStream::for_match_rule(nm_rule, &conn, Some(512)).await?;
    let owner_rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .arg(0, NM_BUS)?
        .build();
    let mut owner_changes = MessageStream::for_match_rule(owner_rule, &conn, Some(64)).await?;
    match conn.request_name(BUS_NAME).await {
        Ok(()) => info!(name = BUS_NAME, "D-Bus service ready"),
        Err(e) => warn!(
            name = BUS_NAME,
            "cannot own the D-Bus name ({e}); Status and Reload are unavailable \
             (is dbus/{BUS_NAME}.conf installed in /usr/share/dbus-1/system.d?)"
        ),
    }
    let nm_present = zbus::fdo::DBusProxy::new(&conn)
        .await?
        .name_has_owner(BusName::try_from(NM_BUS)?)
        .await
        .unwrap_or(false);
    if nm_present {
        info!("connected to the system bus; following NetworkManager");
    } else {
        warn!("connected to the system bus, but NetworkManager is not running; waiting for it");
    }
    *shared.bus.lock().expect("bus lock") = Some(conn.clone());
    let _ = nm_tx.try_send("connected to the system bus".into());

    loop {
        tokio::select! {
            m = nm_signals.next() => match m {
                Some(Ok(msg)) => {
                    if let Some(why) = nm_signal_reason(&msg) {
                        debug!(signal = why, "NetworkManager signal");
                        // A full queue already holds a trigger: dropping this one loses nothing.
                        let _ = nm_tx.try_send(why);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            m = owner_changes.next() => match m {
                Some(Ok(msg)) => {
                    let (_, old, new): (String, String, String) =
                        msg.body().deserialize().unwrap_or_default();
                    if new.is_empty() {
                        warn!(old, "NetworkManager left the bus; keeping the current state until it returns");
                    } else {
                        info!(new, "NetworkManager is on the bus");
                        let _ = nm_tx.try_send("NetworkManager (re)started".into());
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

/// Why a NetworkManager signal matters, or `None` when it cannot change the uplinks.
fn nm_signal_reason(msg: &zbus::Message) -> Option<String> {
    let h = msg.header();
    let member = h.member()?.to_string();
    let interface = h.interface()?.to_string();
    let path = h.path().map(|p| p.to_string()).unwrap_or_default();
    let short = match path.strip_prefix(NM_PATH) {
        Some("") => "NetworkManager",
        Some(rest) => rest,
        None => &path,
    };
    if interface == "org.freedesktop.DBus.Properties" && member == "PropertiesChanged" {
        let body = msg.body();
        let (changed_in, changed, _invalidated): (String, HashMap<String, Value<'_>>, Vec<String>) =
            body.deserialize().ok()?;
        if !RELEVANT_INTERFACES.contains(&changed_in.as_str()) {
            return None;
        }
        let mut keys: Vec<&str> = changed.keys().map(String::as_str).collect();
        keys.sort_unstable();
        return Some(format!("{short} {}", keys.join(",")));
    }
    matches!(
        member.as_str(),
        "StateChanged" | "DeviceAdded" | "DeviceRemoved"
    )
    .then(|| format!("{short} {member}"))
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager",
    gen_blocking = false
)]
trait NmManager {
    #[zbus(property)]
    fn startup(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn connectivity_check_available(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn connectivity_check_enabled(&self) -> zbus::Result<bool>;
}

/// What the daemon reads of NetworkManager besides the uplinks.
struct NmFacts {
    /// NetworkManager is still activating its initial connections (`Startup`).
    starting: bool,
    /// Interface -> `Ip4Connectivity`; `None` for every device when NetworkManager's
    /// connectivity check is off or not configured (its answers then say nothing
    /// about the upstream).
    connectivity: BTreeMap<String, Option<u32>>,
}

async fn nm_facts(conn: &Connection) -> Result<NmFacts> {
    let nm = NmManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| Error::NetworkManager(e.to_string()))?;
    let starting = nm
        .startup()
        .await
        .map_err(|e| Error::NetworkManager(format!("reading Startup: {e}")))?;
    let checking = nm.connectivity_check_available().await.unwrap_or(false)
        && nm.connectivity_check_enabled().await.unwrap_or(false);
    let connectivity = NetworkManager::with_connection(conn.clone())
        .ip4_connectivity()
        .await?
        .into_iter()
        .map(|(iface, c)| (iface, checking.then_some(c)))
        .collect();
    Ok(NmFacts {
        starting,
        connectivity,
    })
}

/// `net.nmmultiwan.Daemon1` at `/net/nmmultiwan/Daemon1`.
struct Service {
    shared: Arc<Shared>,
}

#[zbus::interface(name = "net.nmmultiwan.Daemon1")]
impl Service {
    /// The `status --json` document, with each uplink's `healthy` and the `health`
    /// section filled in. Anyone may call it.
    async fn status(&self) -> zbus::fdo::Result<String> {
        let config = self.shared.config();
        let (verdicts, health) = {
            let board = self.shared.board.lock().expect("board lock");
            (board.verdicts(), board.report(&config.health))
        };
        let handle = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || {
            handle.block_on(status::gather(&config, &verdicts))
        })
        .await
        .map_err(|e| zbus::fdo::Error::Failed(format!("status task: {e}")))?
        .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let config_error = self
            .shared
            .config_error
            .lock()
            .expect("config error lock")
            .clone();
        let report = StatusReport {
            health: Some(health),
            config_error,
            ..report
        };
        serde_json::to_string(&report).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// Re-reads the configuration and reconciles. Root only, whatever the bus policy.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<()> {
        let sender = hdr
            .sender()
            .ok_or_else(|| zbus::fdo::Error::AccessDenied("caller unknown".into()))?;
        let uid = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(BusName::Unique(sender.clone()))
            .await?;
        authorize_reload(uid).inspect_err(|_| {
            warn!(%sender, uid, "refused Reload from a non-root caller");
        })?;
        let (reply, answer) = oneshot::channel();
        self.shared
            .control
            .send(Control::Reload { reply })
            .await
            .map_err(|_| zbus::fdo::Error::Failed("the daemon is stopping".into()))?;
        answer
            .await
            .map_err(|_| zbus::fdo::Error::Failed("the daemon is stopping".into()))?
            .map_err(zbus::fdo::Error::Failed)
    }
}

/// Only root may act on the daemon.
fn authorize_reload(uid: u32) -> zbus::fdo::Result<()> {
    if uid == 0 {
        Ok(())
    } else {
        Err(zbus::fdo::Error::AccessDenied(format!(
            "only root may reload nm-multiwan (caller uid {uid})"
        )))
    }
}

/// How long `status` waits for a running daemon's answer before reading the state
/// itself.
pub const STATUS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks a running daemon for its status over the system bus. `Ok(None)` when no daemon
/// answers within `timeout` (none running, or an error): callers then gather the
/// status themselves. A bus that cannot be reached within [`crate::bus::DBUS_TIMEOUT`]
/// is an error: without it there is no NetworkManager to read either.
pub async fn query_status(timeout: Duration) -> Result<Option<StatusReport>> {
    let conn = crate::bus::system(timeout).await?;
    let ask = async {
        let reply = conn
            .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), "Status", &())
            .await?;
        let text: String = reply.body().deserialize()?;
        Ok::<_, zbus::Error>(text)
    };
    Ok(match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(text)) => match serde_json::from_str(&text) {
            Ok(report) => Some(report),
            Err(e) => {
                debug!("daemon status unreadable: {e}");
                None
            }
        },
        Ok(Err(e)) => {
            debug!("no daemon status: {e}");
            None
        }
        Err(_) => {
            debug!("no daemon status within {timeout:?}");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_may_reload() {
        assert!(authorize_reload(0).is_ok());
        for uid in [1, 65534, 1000] {
            assert!(matches!(
                authorize_reload(uid),
                Err(zbus::fdo::Error::AccessDenied(_))
            ));
        }
    }

    #[test]
    fn bursts_coalesce_into_one_reconcile_at_the_earliest_time() {
        let t = Instant::now();
        let mut p = None;
        coalesce(&mut p, t + NM_DEBOUNCE, "a".into());
        // A burst of signals keeps the first deadline: never postponed.
        for i in 0..20 {
            coalesce(
                &mut p,
                t + NM_DEBOUNCE + Duration::from_millis(i * 10),
                "a".into(),
            );
        }
        assert_eq!(p.as_ref().unwrap().at, t + NM_DEBOUNCE);
        assert_eq!(p.as_ref().unwrap().reasons, vec!["a".to_string()]);
        // A health verdict goes at once and joins the same reconcile.
        coalesce(&mut p, t, "health".into());
        let p = p.unwrap();
        assert_eq!(p.at, t);
        assert_eq!(p.reasons, vec!["a".to_string(), "health".to_string()]);
        let mut q = None;
        for i in 0..20 {
            coalesce(&mut q, t, format!("r{i}"));
        }
        assert_eq!(
            q.unwrap().reasons.len(),
            8,
            "the log keeps a few reasons only"
        );
    }

    #[test]
    fn retries_back_off() {
        let d: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    fn signal(path: &str, iface: &str, member: &str) -> zbus::Message {
        zbus::Message::signal(path, iface, member)
            .unwrap()
            .sender(":1.7")
            .unwrap()
            .build(&())
            .unwrap()
    }

    fn props_changed(path: &str, of: &str, keys: &[&str]) -> zbus::Message {
        let changed: HashMap<&str, Value<'_>> =
            keys.iter().map(|k| (*k, Value::from(1u32))).collect();
        zbus::Message::signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .unwrap()
            .build(&(of, changed, Vec::<String>::new()))
            .unwrap()
    }

    #[test]
    fn relevant_signals_are_picked() {
        let dev = "/org/freedesktop/NetworkManager/Devices/3";
        assert_eq!(
            nm_signal_reason(&signal(
                dev,
                "org.freedesktop.NetworkManager.Device",
                "StateChanged"
            ))
            .as_deref(),
            Some("/Devices/3 StateChanged")
        );
        assert!(
            nm_signal_reason(&signal(
                NM_PATH,
                "org.freedesktop.NetworkManager",
                "DeviceAdded"
            ))
            .as_deref()
                == Some("NetworkManager DeviceAdded")
        );
        assert_eq!(
            nm_signal_reason(&props_changed(
                dev,
                "org.freedesktop.NetworkManager.Device",
                &["State", "Ip4Connectivity"]
            ))
            .as_deref(),
            Some("/Devices/3 Ip4Connectivity,State")
        );
        // Wi-Fi scans and statistics cannot change the uplinks.
        assert!(
            nm_signal_reason(&props_changed(
                "/org/freedesktop/NetworkManager/AccessPoint/7",
                "org.freedesktop.NetworkManager.AccessPoint",
                &["Strength"]
            ))
            .is_none()
        );
        assert!(
            nm_signal_reason(&props_changed(
                dev,
                "org.freedesktop.NetworkManager.Device.Statistics",
                &["RxBytes"]
            ))
            .is_none()
        );
        assert!(
            nm_signal_reason(&signal(
                NM_PATH,
                "org.freedesktop.NetworkManager",
                "CheckPermissions"
            ))
            .is_none()
        );
    }
}
