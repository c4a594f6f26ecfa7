//! Health of each uplink, as the daemon sees it: probes that leave through the uplink
//! under test whatever the balancing does, and the hysteresis that turns probe results
//! into a verdict (in the balance or out of it).
//!
//! A probe round sends one probe to every target at once and succeeds as soon as any
//! target answers within the timeout (shorter than the probe interval, so rounds never
//! overlap). Probes carry the uplink's mark (`SO_MARK`, which our `ip rule`s route
//! through the uplink's table and our mangle chain leaves alone), are bound to its
//! device (`SO_BINDTODEVICE`) and use its address as source, so an uplink that is out of
//! the balance is still probed through itself and can come back.
//!
//! The hysteresis ([`Hysteresis`], [`Board`]) is pure and unit-tested; only [`Prober`]
//! touches the network.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::config::HealthConfig;
use crate::error::{Error, Result};

/// Something probed through every uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// ICMP echo to this address (`"1.1.1.1"` or `"icmp:1.1.1.1"` in the config).
    Icmp(Ipv4Addr),
    /// A TCP connection to this address and port (`"tcp:198.51.100.10:7000"`);
    /// succeeds when the handshake completes.
    Tcp(SocketAddrV4),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("tcp:") {
            return rest.parse::<SocketAddrV4>().map(Target::Tcp).map_err(|_| {
                format!(
                    "{s:?}: expected tcp:ADDRESS:PORT with an IPv4 address, e.g. tcp:192.0.2.1:443"
                )
            });
        }
        let addr = s.strip_prefix("icmp:").unwrap_or(s);
        match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Ok(Target::Icmp(a)),
            Ok(std::net::IpAddr::V6(_)) => Err(format!(
                "{s:?}: IPv6 targets are not supported (uplinks are balanced for IPv4 only)"
            )),
            Err(_) => Err(format!(
                "{s:?} is not an IPv4 address (or icmp:ADDRESS, tcp:ADDRESS:PORT)"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Icmp(a) => write!(f, "{a}"),
            Target::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Parses the configured targets (already validated by the config, so errors are rare).
pub fn targets(config: &HealthConfig) -> Result<Vec<Target>> {
    config
        .targets
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: String| Error::Other(format!("health.targets: {e}")))
        })
        .collect()
}

/// How long a probe round waits for an answer: four fifths of the interval, so that
/// rounds never overlap, between 40 ms and 3 s.
pub fn round_timeout(interval: Duration) -> Duration {
    (interval * 4 / 5).clamp(Duration::from_millis(40), Duration::from_secs(3))
}

/// Consecutive results needed to change a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub down_after: u32,
    pub up_after: u32,
}

impl From<&HealthConfig> for Thresholds {
    fn from(c: &HealthConfig) -> Self {
        Thresholds {
            down_after: c.down_after.max(1),
            up_after: c.up_after.max(1),
        }
    }
}

/// The hysteresis of one uplink. A new uplink starts healthy (it is in the balance
/// from the moment NetworkManager activates it, as without the daemon), leaves after
/// `down_after` failed rounds in a row and returns after `up_after` good ones in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hysteresis {
    pub healthy: bool,
    /// Consecutive successful rounds (0 after a failure).
    pub successes: u32,
    /// Consecutive failed rounds (0 after a success).
    pub failures: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            healthy: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl Hysteresis {
    /// Feeds one round's result. Returns the new verdict when it flips.
    pub fn record(&mut self, success: bool, t: Thresholds) -> Option<bool> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if !self.healthy && self.successes >= t.up_after {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.healthy && self.failures >= t.down_after {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// NetworkManager's connectivity states (`NMConnectivityState`).
pub mod nm_connectivity {
    pub const UNKNOWN: u32 = 0;
    pub const NONE: u32 = 1;
    pub const PORTAL: u32 = 2;
    pub const LIMITED: u32 = 3;
    pub const FULL: u32 = 4;

    pub fn name(c: u32) -> &'static str {
        match c {
            NONE => "none",
            PORTAL => "portal",
            LIMITED => "limited",
            FULL => "full",
            _ => "unknown",
        }
    }
}

/// One probe round's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    pub success: bool,
    /// Round-trip time of the first answer.
    pub rtt: Option<Duration>,
    /// Why the round failed, when there is more to say than "no answer".
    pub error: Option<String>,
}

/// Everything the daemon knows about one uplink's health.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkHealth {
    /// What the probes were set up with; a change starts the uplink afresh.
    pub source: Ipv4Addr,
    pub mark: u32,
    pub probes: Hysteresis,
    /// NetworkManager's `Ip4Connectivity` for the device, when its connectivity check
    /// is enabled; NONE or LIMITED there counts as a failed health signal.
    pub nm_connectivity: Option<u32>,
    pub last_rtt: Option<Duration>,
    pub last_error: Option<String>,
    /// When the verdict last changed (or probing started).
    pub last_change: SystemTime,
    pub rounds: u64,
    pub rounds_failed: u64,
}

impl UplinkHealth {
    fn new(source: Ipv4Addr, mark: u32, now: SystemTime) -> Self {
        UplinkHealth {
            source,
            mark,
            probes: Hysteresis::default(),
            nm_connectivity: None,
            last_rtt: None,
            last_error: None,
            last_change: now,
            rounds: 0,
            rounds_failed: 0,
        }
    }

    /// NetworkManager says this device has no or limited connectivity.
    pub fn nm_says_down(&self) -> bool {
        matches!(
            self.nm_connectivity,
            Some(nm_connectivity::NONE | nm_connectivity::LIMITED)
        )
    }

    /// The verdict the planner gets.
    pub fn healthy(&self) -> bool {
        self.probes.healthy && !self.nm_says_down()
    }
}

/// The health of every uplink the daemon probes, keyed by interface.
#[derive(Debug, Clone, Default)]
pub struct Board {
    uplinks: BTreeMap<String, UplinkHealth>,
}

impl Board {
    /// Starts tracking `iface` (healthy), or starts it afresh when its address or mark
    /// changed (another network behind the same device). Returns whether it was reset.
    pub fn track(&mut self, iface: &str, source: Ipv4Addr, mark: u32, now: SystemTime) -> bool {
        match self.uplinks.get(iface) {
            Some(h) if h.source == source && h.mark == mark => false,
            _ => {
                let nm = self.uplinks.get(iface).and_then(|h| h.nm_connectivity);
                let mut h = UplinkHealth::new(source, mark, now);
                h.nm_connectivity = nm;
                self.uplinks.insert(iface.to_string(), h);
                true
            }
        }
    }

    /// Forgets uplinks that are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.uplinks.retain(|k, _| keep(k));
    }

    /// Feeds a probe round. Returns the new verdict when the uplink's verdict flips.
    pub fn record(
        &mut self,
        iface: &str,
        outcome: &RoundOutcome,
        t: Thresholds,
        now: SystemTime,
    ) -> Option<bool> {
        let h = self.uplinks.get_mut(iface)?;
        let before = h.healthy();
        h.rounds += 1;
        if outcome.success {
            h.last_rtt = outcome.rtt;
            h.last_error = None;
        } else {
            h.rounds_failed += 1;
            h.last_error = outcome.error.clone();
        }
        h.probes.record(outcome.success, t);
        Self::flipped(h, before, now)
    }

    /// Sets NetworkManager's connectivity for `iface` (`None`: unknown or its check is
    /// not configured). Returns the new verdict when it flips.
    pub fn set_nm_connectivity(
        &mut self,
        iface: &str,
        connectivity: Option<u32>,
        now: SystemTime,
    ) -> Option<bool> {
        let h = self.uplinks.get_mut(iface)?;
        let before = h.healthy();
        h.nm_connectivity = connectivity;
        Self::flipped(h, before, now)
    }

    fn flipped(h: &mut UplinkHealth, before: bool, now: SystemTime) -> Option<bool> {
        let after = h.healthy();
        (after != before).then(|| {
            h.last_change = now;
            after
        })
    }

    pub fn get(&self, iface: &str) -> Option<&UplinkHealth> {
        self.uplinks.get(iface)
    }

    pub fn ifaces(&self) -> impl Iterator<Item = &str> {
        self.uplinks.keys().map(String::as_str)
    }

    /// Interface -> verdict, for the planner.
    pub fn verdicts(&self) -> BTreeMap<String, bool> {
        self.uplinks
            .iter()
            .map(|(k, h)| (k.clone(), h.healthy()))
            .collect()
    }

    /// The `health` section of `status --json`.
    pub fn report(&self, config: &HealthConfig) -> HealthReport {
        HealthReport {
            targets: config.targets.clone(),
            interval_ms: config.interval_ms,
            down_after: config.down_after,
            up_after: config.up_after,
            uplinks: self
                .uplinks
                .iter()
                .map(|(k, h)| {
                    (
                        k.clone(),
                        UplinkHealthReport {
                            healthy: h.healthy(),
                            probes_healthy: h.probes.healthy,
                            consecutive_successes: h.probes.successes,
                            consecutive_failures: h.probes.failures,
                            last_rtt_ms: h.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                            last_change: unix_seconds(h.last_change),
                            last_error: h.last_error.clone(),
                            nm_connectivity: h
                                .nm_connectivity
                                .map(|c| nm_connectivity::name(c).to_string()),
                            rounds: h.rounds,
                            rounds_failed: h.rounds_failed,
                        },
                    )
                })
                .collect(),
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The `health` section of the status document (only when a daemon answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub targets: Vec<String>,
    pub interval_ms: u64,
    pub down_after: u32,
    pub up_after: u32,
    pub uplinks: BTreeMap<String, UplinkHealthReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkHealthReport {
    /// The verdict: probes healthy and NetworkManager not saying NONE/LIMITED.
    pub healthy: bool,
    /// The probes' verdict alone.
    pub probes_healthy: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_rtt_ms: Option<f64>,
    /// Unix time (seconds) of the last verdict change, or of the start of probing.
    pub last_change: f64,
    pub last_error: Option<String>,
    /// NetworkManager's `Ip4Connectivity` when its connectivity check is enabled.
    pub nm_connectivity: Option<String>,
    pub rounds: u64,
    pub rounds_failed: u64,
}

// ---------------------------------------------------------------------------------
// Verdicts shared with other runs of nm-multiwan.

const HEALTH_FILE: &str = "health.json";
const DAEMON_LOCK: &str = "daemon.lock";

#[derive(Debug, Serialize, Deserialize)]
struct Published {
    pid: u32,
    verdicts: BTreeMap<String, bool>,
}

/// Held by the running daemon for its whole life: at most one daemon per run
/// directory, and other runs (`apply`, the dispatcher) know whether its published
/// verdicts are live. The kernel drops it when the daemon dies.
pub struct DaemonLock {
    _file: std::fs::File,
    dir: PathBuf,
}

impl DaemonLock {
    pub fn acquire(dir: &Path) -> Result<DaemonLock> {
        let (path, file) = crate::state::open_lock_file(dir, DAEMON_LOCK)?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock {
                _file: file,
                dir: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Other(format!(
                "another nm-multiwan daemon is running (it holds {})",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
    }

    /// Publishes the verdicts for `apply` and dispatcher runs (atomically replaced).
    pub fn publish(&self, verdicts: &BTreeMap<String, bool>) -> Result<()> {
        let text = serde_json::to_string(&Published {
            pid: std::process::id(),
            verdicts: verdicts.clone(),
        })
        .expect("verdicts serialise");
        let tmp = self.dir.join("health.json.tmp");
        let path = self.dir.join(HEALTH_FILE);
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    }

    /// Removes the published verdicts (the daemon stops; they are no longer live).
    pub fn withdraw(&self) {
        let _ = std::fs::remove_file(self.dir.join(HEALTH_FILE));
    }
}

/// The verdicts a running daemon published, so that `apply` and the dispatcher reach
/// the same result as the daemon instead of putting a dead uplink back in the balance.
/// Empty when no daemon runs (every uplink then counts as healthy).
pub fn published_verdicts(dir: &Path) -> BTreeMap<String, bool> {
    let Ok(file) = std::fs::File::open(dir.join(DAEMON_LOCK)) else {
        return BTreeMap::new();
    };
    match file.try_lock_shared() {
        // Nobody holds it: no daemon, whatever a stale file says.
        Ok(()) => return BTreeMap::new(),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return BTreeMap::new(),
    }
    let path = dir.join(HEALTH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Published>(&text) {
            Ok(p) => p.verdicts,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring unreadable health verdicts");
                BTreeMap::new()
            }
        },
        Err(_) => BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------------
// Probes.

/// What to probe through one uplink, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub iface: String,
    pub source: Ipv4Addr,
    pub mark: u32,
    pub targets: Vec<Target>,
    pub timeout: Duration,
}

/// Probes one uplink. Owns a raw ICMP socket (CAP_NET_RAW) bound to the uplink's
/// device and address, carrying its mark.
pub struct Prober {
    spec: ProbeSpec,
    icmp: Option<AsyncFd<socket2::Socket>>,
    ident: u16,
    seq: u16,
}

impl Prober {
    pub fn new(spec: ProbeSpec, ident: u16) -> Result<Prober> {
        let icmp = if spec.targets.iter().any(|t| matches!(t, Target::Icmp(_))) {
            Some(icmp_socket(&spec)?)
        } else {
            None
        };
        Ok(Prober {
            spec,
            icmp,
            ident,
            seq: 0,
        })
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// One round: probes every target at once; succeeds with the first answer.
    pub async fn round(&mut self) -> RoundOutcome {
        self.seq = self.seq.wrapping_add(1);
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.spec.timeout);
        let mut errors = Vec::new();

        let icmp_targets: Vec<Ipv4Addr> = self
            .spec
            .targets
            .iter()
            .filter_map(|t| match t {
                Target::Icmp(a) => Some(*a),
                Target::Tcp(_) => None,
            })
            .collect();
        let mut icmp_sent = 0;
        if let Some(sock) = &self.icmp {
            let packet = echo_request(self.ident, self.seq);
            for a in &icmp_targets {
                let to = socket2::SockAddr::from(SocketAddrV4::new(*a, 0));
                match sock.get_ref().send_to(&packet, &to) {
                    Ok(_) => icmp_sent += 1,
                    Err(e) => errors.push(format!("ping {a}: {e}")),
                }
            }
        }

        let tcp_targets: Vec<SocketAddrV4> = self
            .spec
            .targets
            .iter()
            .filter_map(|t| match t {
                Target::Tcp(a) => Some(*a),
                Target::Icmp(_) => None,
            })
            .collect();
        let spec = &self.spec;
        let tcp = async {
            if tcp_targets.is_empty() {
                return Err(String::new());
            }
            let connects = tcp_targets
                .iter()
                .map(|a| Box::pin(tcp_probe(spec, *a, deadline)));
            futures::future::select_ok(connects).await.map(|_| ())
        };
        let (ident, seq) = (self.ident, self.seq);
        let icmp = async {
            match &self.icmp {
                Some(sock) if icmp_sent > 0 => {
                    wait_echo_reply(sock, ident, seq, &icmp_targets, deadline).await
                }
                _ => Err(String::new()),
            }
        };
        // The first answer of either kind wins.
        use futures::FutureExt as _;
        let result = futures::future::select_ok([icmp.boxed(), tcp.boxed()])
            .await
            .map(|_| ());
        match result {
            Ok(()) => RoundOutcome {
                success: true,
                rtt: Some(start.elapsed()),
                error: None,
            },
            Err(e) => {
                if !e.is_empty() {
                    errors.push(e);
                }
                RoundOutcome {
                    success: false,
                    rtt: None,
                    error: (!errors.is_empty()).then(|| errors.join("; ")),
                }
            }
        }
    }
}

fn icmp_socket(spec: &ProbeSpec) -> Result<AsyncFd<socket2::Socket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |what: &str, e| Error::io(format!("{what} for probes on {}", spec.iface), e);
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(|e| ctx("raw ICMP socket (needs CAP_NET_RAW)", e))?;
    s.set_nonblocking(true)
        .map_err(|e| ctx("non-blocking", e))?;
    s.bind_device(Some(spec.iface.as_bytes()))
        .map_err(|e| ctx("SO_BINDTODEVICE", e))?;
    s.set_mark(spec.mark)
        .map_err(|e| ctx("SO_MARK (needs CAP_NET_ADMIN)", e))?;
    s.bind(&SocketAddrV4::new(spec.source, 0).into())
        .map_err(|e| ctx(&format!("binding to {}", spec.source), e))?;
    // SAFETY: the socket owns its descriptor, and the AsyncFd owns the socket: the
    // descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
        .map_err(|e| ctx("registering the socket", e.into()))
}

async fn tcp_probe(
    spec: &ProbeSpec,
    to: SocketAddrV4,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("tcp {to}: {e}");
    let s = tokio::net::TcpSocket::new_v4().map_err(fail)?;
    s.bind_device(Some(spec.iface.as_bytes())).map_err(fail)?;
    socket2::SockRef::from(&s)
        .set_mark(spec.mark)
        .map_err(fail)?;
    s.bind(SocketAddr::V4(SocketAddrV4::new(spec.source, 0)))
        .map_err(fail)?;
    match tokio::time::timeout_at(deadline, s.connect(SocketAddr::V4(to))).await {
        Ok(Ok(stream)) => {
            // Close with a reset: no TIME_WAIT here, and conntrack forgets the probe in
            // seconds instead of two minutes.
            let _ = stream.set_zero_linger();
            Ok(())
        }
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(format!("tcp {to}: no answer")),
    }
}

async fn wait_echo_reply(
    sock: &AsyncFd<socket2::Socket>,
    ident: u16,
    seq: u16,
    from: &[Ipv4Addr],
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut buf = [0u8; 1500];
    loop {
        let mut guard = match tokio::time::timeout_at(deadline, sock.readable()).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err(format!("waiting for echo replies: {e}")),
            Err(_) => return Err(String::new()),
        };
        match guard.try_io(|s| s.get_ref().read(&mut buf)) {
            Ok(Ok(n)) => {
                if is_echo_reply(&buf[..n], ident, seq, from) {
                    return Ok(());
                }
            }
            Ok(Err(e)) => return Err(format!("reading echo replies: {e}")),
            Err(_would_block) => continue,
        }
    }
}

/// An ICMP echo request with our identifier and sequence number and a checksum.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"nm-multiwan health probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (an IPv4 datagram as a raw socket reads it) is the echo reply to
/// our request `ident`/`seq` from one of the targets.
pub fn is_echo_reply(packet: &[u8], ident: u16, seq: u16, from: &[Ipv4Addr]) -> bool {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 1 {
        return false;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let Some(icmp) = packet.get(ihl..) else {
        return false;
    };
    if icmp.len() < 8 || icmp[0] != 0 || icmp[1] != 0 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
        && from.contains(&src)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        down_after: 3,
        up_after: 2,
    };

    fn ok() -> RoundOutcome {
        RoundOutcome {
            success: true,
            rtt: Some(Duration::from_millis(5)),
            error: None,
        }
    }

    fn lost() -> RoundOutcome {
        RoundOutcome {
            success: false,
            rtt: None,
            error: None,
        }
    }

    #[test]
    fn hysteresis_needs_consecutive_results() {
        let mut h = Hysteresis::default();
        assert!(h.healthy);
        // Two failures, a success: the run of failures starts over.
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(true, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(false, T), Some(false));
        assert!(!h.healthy);
        assert_eq!(h.failures, 3);
        // More failures change nothing.
        assert_eq!(h.record(false, T), None);
        // One success then a failure: not back yet.
        assert_eq!(h.record(true, T), None);
        assert_eq!(h.record(false, T), None);
        assert_eq!(h.record(true, T), None);
        assert_eq!(h.record(true, T), Some(true));
        assert_eq!(h.successes, 2);
        assert_eq!(h.record(true, T), None);
    }

    #[test]
    fn thresholds_of_one_flip_at_once() {
        let t = Thresholds {
            down_after: 1,
            up_after: 1,
        };
        let mut h = Hysteresis::default();
        assert_eq!(h.record(false, t), Some(false));
        assert_eq!(h.record(true, t), Some(true));
    }

    #[test]
    fn board_tracks_resets_and_reports() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = now + Duration::from_secs(5);
        let a = Ipv4Addr::new(10, 0, 1, 2);
        let mut b = Board::default();
        assert!(b.track("eth0", a, 0x100, now));
        assert!(!b.track("eth0", a, 0x100, now));
        assert_eq!(b.verdicts(), BTreeMap::from([("eth0".to_string(), true)]));
        // Unknown interfaces are ignored.
        assert_eq!(b.record("wlan0", &lost(), T, now), None);
        assert_eq!(b.record("eth0", &lost(), T, now), None);
        assert_eq!(b.record("eth0", &lost(), T, now), None);
        assert_eq!(b.record("eth0", &lost(), T, later), Some(false));
        let h = b.get("eth0").unwrap();
        assert_eq!((h.rounds, h.rounds_failed), (3, 3));
        assert_eq!(h.last_change, later);
        let r = b.report(&HealthConfig::default());
        assert!(!r.uplinks["eth0"].healthy);
        assert_eq!(r.uplinks["eth0"].consecutive_failures, 3);
        assert_eq!(r.uplinks["eth0"].last_change, 1005.0);
        // A new address is another network: start afresh, healthy.
        assert!(b.track("eth0", Ipv4Addr::new(10, 0, 9, 2), 0x100, later));
        assert!(b.verdicts()["eth0"]);
        b.retain(|i| i != "eth0");
        assert!(b.verdicts().is_empty());
    }

    #[test]
    fn nm_connectivity_overrides_probes() {
        let now = SystemTime::UNIX_EPOCH;
        let mut b = Board::default();
        b.track("wlan0", Ipv4Addr::new(10, 0, 2, 2), 0x200, now);
        assert_eq!(b.record("wlan0", &ok(), T, now), None);
        assert_eq!(
            b.set_nm_connectivity("wlan0", Some(nm_connectivity::LIMITED), now),
            Some(false)
        );
        assert_eq!(
            b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now),
            None
        );
        // Probes stay healthy underneath; the verdict follows NetworkManager back.
        assert!(b.get("wlan0").unwrap().probes.healthy);
        assert_eq!(
            b.set_nm_connectivity("wlan0", Some(nm_connectivity::PORTAL), now),
            Some(true)
        );
        assert_eq!(b.set_nm_connectivity("wlan0", None, now), None);
        // The NetworkManager verdict survives a reset of the probes.
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now);
        b.track("wlan0", Ipv4Addr::new(10, 0, 3, 2), 0x200, now);
        assert!(!b.verdicts()["wlan0"]);
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "1.1.1.1".parse::<Target>().unwrap(),
            Target::Icmp(Ipv4Addr::new(1, 1, 1, 1))
        );
        assert_eq!(
            "icmp:9.9.9.9".parse::<Target>().unwrap(),
            Target::Icmp(Ipv4Addr::new(9, 9, 9, 9))
        );
        assert_eq!(
            "tcp:198.51.100.10:7000".parse::<Target>().unwrap(),
            Target::Tcp("198.51.100.10:7000".parse().unwrap())
        );
        assert_eq!(
            Target::Tcp("198.51.100.10:7000".parse().unwrap()).to_string(),
            "tcp:198.51.100.10:7000"
        );
        for bad in [
            "nope",
            "::1",
            "tcp:1.2.3.4",
            "tcp:[::1]:80",
            "udp:1.2.3.4:53",
            "",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn timeout_is_shorter_than_interval() {
        assert_eq!(
            round_timeout(Duration::from_millis(500)),
            Duration::from_millis(400)
        );
        assert_eq!(
            round_timeout(Duration::from_millis(50)),
            Duration::from_millis(40)
        );
        assert_eq!(
            round_timeout(Duration::from_secs(60)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn echo_packets_round_trip() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
        // Build the reply as the kernel would deliver it: IPv4 header + ICMP type 0.
        let mut reply = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 10, 10, 0, 1, 2,
        ];
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        let from = [Ipv4Addr::new(198, 51, 100, 10)];
        assert!(is_echo_reply(&reply, 0x1234, 7, &from));
        assert!(!is_echo_reply(&reply, 0x1234, 8, &from));
        assert!(!is_echo_reply(&reply, 0x4321, 7, &from));
        assert!(!is_echo_reply(
            &reply,
            0x1234,
            7,
            &[Ipv4Addr::new(192, 0, 2, 1)]
        ));
        assert!(!is_echo_reply(&reply[..24], 0x1234, 7, &from));
        // Our own request looped back is not an answer.
        let mut looped = reply.clone();
        looped[20] = 8;
        assert!(!is_echo_reply(&looped, 0x1234, 7, &from));
    }

    #[test]
    fn published_verdicts_need_a_live_daemon() {
        let dir = std::env::temp_dir().join(format!("nmmw-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(published_verdicts(&dir).is_empty());
        let lock = DaemonLock::acquire(&dir).unwrap();
        assert!(DaemonLock::acquire(&dir).is_err(), "one daemon per run dir");
        let v = BTreeMap::from([("eth0".to_string(), false), ("wlan0".to_string(), true)]);
        lock.publish(&v).unwrap();
        assert_eq!(published_verdicts(&dir), v);
        drop(lock);
        // The file is still there, but nobody holds the lock: not live.
        assert!(published_verdicts(&dir).is_empty());
        let lock = DaemonLock::acquire(&dir).unwrap();
        lock.withdraw();
        assert!(published_verdicts(&dir).is_empty());
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
