//! Verdicts: the hysteresis that turns probe rounds (and NetworkManager's connectivity
//! check) into "in the balance" or "out of it". Pure, unit-tested.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;

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
