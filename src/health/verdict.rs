//! Verdicts: how probes (and NetworkManager's connectivity check) become "in the
//! balance" or "out of it", per uplink and address family. Pure, unit-tested.
//!
//! Every probe of one uplink and family has an id (in the order sent) and one fate:
//! answered (however late, within [`answer_wait`]) or lost. Three judgements come
//! from them:
//!
//! - **dead**: `down_after` probes in a row have had at least one interval each and
//!   nothing has answered since (any answer, even a late one to an older probe, shows
//!   the path alive). This is the fast one: out within `(down_after + 1)` intervals of
//!   the last answer.
//! - **lossy**: over the window (the last `window` probes sent at least the wait ago,
//!   whose fate is therefore known), more than `max_loss` percent lost, judged once
//!   the window is half full. The probes of
//!   an outage (a run that made the uplink dead) are not counted: an outage says
//!   nothing about the loss of the path when it works, and an uplink back from one
//!   should not wait for the window to forget it.
//! - **slow**: the median round-trip time of the window's answers above `max_rtt`,
//!   judged once a quarter of the window has answered.
//!
//! An uplink out of the balance returns after `up_after` probes answered in a row,
//! when its loss and median round-trip time over the window, and the median of those
//! last answers, are at most half of their limits (the hysteresis that keeps a
//! borderline uplink from flapping, and an uplink that went silent because its round
//! trip jumped from coming back before the window has noticed).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::model::Family;
use crate::plan::{Verdict, Verdicts};

/// How long a probe's answer is waited for: twice `max_rtt_ms`, so that round-trip
/// times above the limit are measured rather than lost, and at least two intervals.
pub fn answer_wait(config: &HealthConfig) -> Duration {
    Duration::from_millis(
        config
            .max_rtt_ms
            .saturating_mul(2)
            .max(config.interval_ms.saturating_mul(2)),
    )
}

/// The limits verdicts are judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub down_after: u32,
    pub up_after: u32,
    /// Percent of the window's probes.
    pub max_loss: f64,
    pub max_rtt: Duration,
    /// Probes.
    pub window: u64,
    /// The wait for an answer ([`answer_wait`]), in probes.
    pub wait_probes: u64,
}

impl From<&HealthConfig> for Thresholds {
    fn from(c: &HealthConfig) -> Self {
        Thresholds {
            down_after: c.down_after.max(1),
            up_after: c.up_after.max(1),
            max_loss: f64::from(c.max_loss.clamp(1, 100)),
            max_rtt: Duration::from_millis(c.max_rtt_ms.max(1)),
            window: u64::from(c.window.max(2)),
            wait_probes: (answer_wait(c).as_millis() as u64).div_ceil(c.interval_ms.max(1)),
        }
    }
}

/// What the prober says of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Probe `id` went out (ids count up from 0, one per interval).
    Sent { id: u64 },
    /// Probe `id` was answered after `rtt` (the first answer of any target).
    Answered { id: u64, rtt: Duration },
    /// Nothing answered probe `id` in time, or it could not be sent.
    Lost { id: u64, error: Option<String> },
}

/// Why an uplink is (still) out of the balance in a family.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Nothing answered the last `unanswered` probes.
    Dead { unanswered: u32 },
    /// `percent` of the window's probes were lost; back at `back` or less.
    Loss { percent: f64, limit: f64, back: f64 },
    /// The median round-trip time; back at `back` or less.
    Slow {
        median: Duration,
        limit: Duration,
        back: Duration,
    },
    /// Good again, waiting for `needed` answers in a row.
    Recovering { answered: u32, needed: u32 },
    /// NetworkManager's connectivity check says NONE or LIMITED.
    NetworkManager { connectivity: u32 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Dead { unanswered } => {
                write!(f, "dead: no answer to the last {unanswered} probes")
            }
            Reason::Loss {
                percent,
                limit,
                back,
            } => write!(
                f,
                "lossy: {percent:.0}% of probes lost (out above {limit:.0}%, back at {back:.0}%)"
            ),
            Reason::Slow {
                median,
                limit,
                back,
            } => write!(
                f,
                "slow: median round trip {} ms (out above {} ms, back at {} ms)",
                median.as_millis(),
                limit.as_millis(),
                back.as_millis()
            ),
            Reason::Recovering { answered, needed } => {
                write!(
                    f,
                    "recovering: {answered} of {needed} probes answered in a row"
                )
            }
            Reason::NetworkManager { connectivity } => write!(
                f,
                "NetworkManager's connectivity check: {}",
                nm_connectivity::name(*connectivity)
            ),
        }
    }
}

/// Loss and round-trip time over the window, once there is enough to judge.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Percent of the probes with a fate; `None` before half the window has one.
    pub loss: Option<f64>,
    /// `None` before a quarter of the window has answered.
    pub median_rtt: Option<Duration>,
    /// Probes of the window with a fate (answered or lost).
    pub samples: u64,
}

/// The health of one uplink in one address family, from its probes.
#[derive(Debug, Clone, PartialEq)]
pub struct Quality {
    pub healthy: bool,
    /// Why it is out (`None` while healthy).
    pub reason: Option<Reason>,
    /// Probes sent since the last answer (the newest has not had its interval yet).
    pub unanswered: u32,
    /// Probes answered in a row, by id.
    pub answered_in_a_row: u32,
    pub last_rtt: Option<Duration>,
    pub last_error: Option<String>,
    pub sent: u64,
    pub lost: u64,
    /// The fates known of recent probes, by id: the round-trip time, or `None` lost.
    /// Those sent at least the wait ago (all of whose fates are known) are the window.
    window: BTreeMap<u64, Option<Duration>>,
    newest: Option<u64>,
    last_answered: Option<u64>,
    /// The first probe sent after the last answer.
    first_unanswered: Option<u64>,
    /// The probes of the last outage (`end` `None` while it lasts): left out of the
    /// window.
    outage: Option<(u64, Option<u64>)>,
}

impl Default for Quality {
    /// A new uplink starts healthy: it is in the balance from the moment
    /// NetworkManager activates it, as without the daemon.
    fn default() -> Self {
        Quality {
            healthy: true,
            reason: None,
            unanswered: 0,
            answered_in_a_row: 0,
            last_rtt: None,
            last_error: None,
            sent: 0,
            lost: 0,
            window: BTreeMap::new(),
            newest: None,
            last_answered: None,
            first_unanswered: None,
            outage: None,
        }
    }
}

impl Quality {
    /// The id for the next probe: ids go on counting across a prober that is replaced
    /// (new settings), so that the window and the runs stay in order.
    pub fn next_id(&self) -> u64 {
        self.newest.map_or(0, |n| n + 1)
    }

    /// Whether any probe was ever answered.
    pub fn ever_answered(&self) -> bool {
        self.last_answered.is_some()
    }

    /// Feeds one probe's fate; returns the new verdict when it flips.
    pub fn record(&mut self, event: &ProbeEvent, t: &Thresholds) -> Option<bool> {
        match event {
            ProbeEvent::Sent { id } => self.sent(*id, t),
            ProbeEvent::Answered { id, rtt } => self.answered(*id, *rtt, t),
            ProbeEvent::Lost { id, error } => self.lost(*id, error.clone(), t),
        }
        self.judge(t)
    }

    fn sent(&mut self, id: u64, t: &Thresholds) {
        self.sent += 1;
        self.newest = Some(self.newest.map_or(id, |n| n.max(id)));
        while let Some((&k, _)) = self.window.first_key_value() {
            if !self.too_old(k, t) {
                break;
            }
            self.window.pop_first();
        }
        if self.unanswered == 0 {
            self.first_unanswered = Some(id);
        }
        self.unanswered = self.unanswered.saturating_add(1);
        if self.is_dead(t) && self.outage.is_none_or(|(_, end)| end.is_some()) {
            let start = self.first_unanswered.unwrap_or(id);
            self.outage = Some((start, None));
            // Answers after an outage start a new run.
            self.answered_in_a_row = 0;
            // What the window holds of it so far goes too.
            self.window.retain(|k, _| *k < start);
        }
    }

    /// Records a probe's fate.
    fn remember(&mut self, id: u64, fate: Option<Duration>, t: &Thresholds) {
        if !self.in_outage(id) && !self.too_old(id, t) {
            self.window.entry(id).or_insert(fate);
        }
    }

    /// Older than the window will ever look at.
    fn too_old(&self, id: u64, t: &Thresholds) -> bool {
        self.newest
            .is_some_and(|n| id.saturating_add(t.window + t.wait_probes) <= n)
    }

    /// The ids of the window: the last `window` probes sent at least the wait ago.
    fn window_ids(&self, t: &Thresholds) -> Option<std::ops::RangeInclusive<u64>> {
        let settled = self.newest?.checked_sub(t.wait_probes)?;
        Some(settled.saturating_sub(t.window - 1)..=settled)
    }

    fn answered(&mut self, id: u64, rtt: Duration, t: &Thresholds) {
        if let Some((start, None)) = self.outage {
            // The path answers again: the outage is over.
            self.outage = Some((start, Some(id.max(start))));
        }
        self.unanswered = 0;
        self.first_unanswered = None;
        self.last_rtt = Some(rtt);
        self.last_error = None;
        match self.last_answered {
            Some(last) if id == last + 1 => {
                self.answered_in_a_row = self.answered_in_a_row.saturating_add(1)
            }
            Some(last) if id <= last => {} // a late answer to an older probe
            _ => self.answered_in_a_row = 1,
        }
        self.last_answered = Some(self.last_answered.map_or(id, |l| l.max(id)));
        self.remember(id, Some(rtt), t);
    }

    fn lost(&mut self, id: u64, error: Option<String>, t: &Thresholds) {
        self.lost += 1;
        if error.is_some() {
            self.last_error = error;
        }
        self.remember(id, None, t);
    }

    fn in_outage(&self, id: u64) -> bool {
        self.outage
            .is_some_and(|(start, end)| id >= start && end.is_none_or(|e| id < e))
    }

    /// The median round-trip time of the newest `n` answers.
    fn recent_median(&self, n: usize) -> Option<Duration> {
        let mut rtts: Vec<Duration> = self
            .window
            .values()
            .rev()
            .flatten()
            .take(n)
            .copied()
            .collect();
        rtts.sort();
        rtts.get(rtts.len() / 2).copied()
    }

    fn is_dead(&self, t: &Thresholds) -> bool {
        self.unanswered > t.down_after
    }

    /// Loss and median round-trip time over the window.
    pub fn stats(&self, t: &Thresholds) -> Stats {
        let Some(ids) = self.window_ids(t) else {
            return Stats::default();
        };
        let fates: Vec<Option<Duration>> = self.window.range(ids).map(|(_, f)| *f).collect();
        let samples = fates.len() as u64;
        let mut rtts: Vec<Duration> = fates.into_iter().flatten().collect();
        let lost = samples - rtts.len() as u64;
        let loss =
            (samples > 0 && samples * 2 >= t.window).then(|| lost as f64 * 100.0 / samples as f64);
        rtts.sort();
        let median_rtt =
            (!rtts.is_empty() && rtts.len() as u64 * 4 >= t.window).then(|| rtts[rtts.len() / 2]);
        Stats {
            loss,
            median_rtt,
            samples,
        }
    }

    /// What is wrong now, judged by the limits to leave (`back` false) or those to
    /// return (`back` true).
    fn wrong(&self, t: &Thresholds, back: bool) -> Option<Reason> {
        if self.is_dead(t) {
            return Some(Reason::Dead {
                unanswered: self.unanswered - 1,
            });
        }
        let s = self.stats(t);
        let (loss_back, rtt_back) = (t.max_loss / 2.0, t.max_rtt / 2);
        let loss_limit = if back { loss_back } else { t.max_loss };
        let rtt_limit = if back { rtt_back } else { t.max_rtt };
        if let Some(percent) = s.loss.filter(|l| *l > loss_limit) {
            return Some(Reason::Loss {
                percent,
                limit: t.max_loss,
                back: loss_back,
            });
        }
        // To return, the answers of the run that brings it back count too: the window
        // may still be full of an earlier, better path.
        let recent = back
            .then(|| self.recent_median(t.up_after as usize))
            .flatten();
        if let Some(median) = s
            .median_rtt
            .into_iter()
            .chain(recent)
            .find(|m| *m > rtt_limit)
        {
            return Some(Reason::Slow {
                median,
                limit: t.max_rtt,
                back: rtt_back,
            });
        }
        None
    }

    fn judge(&mut self, t: &Thresholds) -> Option<bool> {
        if self.healthy {
            let why = self.wrong(t, false)?;
            self.healthy = false;
            self.reason = Some(why);
            return Some(false);
        }
        match self.wrong(t, true) {
            Some(why) => self.reason = Some(why),
            None if self.answered_in_a_row >= t.up_after => {
                self.healthy = true;
                self.reason = None;
                return Some(true);
            }
            None => {
                self.reason = Some(Reason::Recovering {
                    answered: self.answered_in_a_row,
                    needed: t.up_after,
                })
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

/// One family of an uplink as the daemon probes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// The address the probes leave from; another one starts the family afresh.
    pub source: IpAddr,
    pub quality: Quality,
}

/// Everything the daemon knows about one uplink's health.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkHealth {
    /// The mark the probes carry; another one starts the uplink afresh.
    pub mark: u32,
    /// The families it is probed in.
    pub families: BTreeMap<Family, Probed>,
    /// NetworkManager's `Ip4Connectivity` for the device, when its connectivity check
    /// is enabled; NONE or LIMITED takes the uplink out in both families.
    pub nm_connectivity: Option<u32>,
    /// When a verdict last changed (or probing started).
    pub last_change: SystemTime,
    /// How many times a verdict took it out of the balance (in either family).
    pub times_out: u64,
}

impl UplinkHealth {
    fn new(mark: u32, now: SystemTime) -> Self {
        UplinkHealth {
            mark,
            families: BTreeMap::new(),
            nm_connectivity: None,
            last_change: now,
            times_out: 0,
        }
    }

    /// NetworkManager says this device has no or limited connectivity.
    pub fn nm_says_down(&self) -> bool {
        matches!(
            self.nm_connectivity,
            Some(nm_connectivity::NONE | nm_connectivity::LIMITED)
        )
    }

    /// The verdict the planner gets: per family, the probes' (healthy when not
    /// probed), and NetworkManager's connectivity check for both.
    pub fn verdict(&self) -> Verdict {
        let mut v = Verdict::from(!self.nm_says_down());
        for (family, p) in &self.families {
            if !p.quality.healthy {
                v.set(*family, false);
            }
        }
        v
    }

    /// Why it is out in `family`, if it is.
    pub fn reason(&self, family: Family) -> Option<Reason> {
        if self.nm_says_down() {
            return Some(Reason::NetworkManager {
                connectivity: self.nm_connectivity.unwrap_or(0),
            });
        }
        self.families
            .get(&family)
            .and_then(|p| p.quality.reason.clone())
    }
}

/// A verdict of one uplink that flipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    pub family: Family,
    pub healthy: bool,
    pub reason: Option<Reason>,
    /// The probes of this family were answered at some point since they started: the
    /// path worked, and connections on it are worth resetting now that it does not.
    /// (Probes never answered say more about the targets than about the uplink.)
    pub worked: bool,
}

/// The health of every uplink the daemon probes, keyed by interface.
#[derive(Debug, Clone, Default)]
pub struct Board {
    uplinks: BTreeMap<String, UplinkHealth>,
}

impl Board {
    /// Starts probing `iface` in `family` from `source` (healthy), or starts it
    /// afresh when its mark or that family's address changed (another network behind
    /// the same device). Returns whether the family was (re)started.
    pub fn track(
        &mut self,
        iface: &str,
        family: Family,
        source: IpAddr,
        mark: u32,
        now: SystemTime,
    ) -> bool {
        let h = self
            .uplinks
            .entry(iface.to_string())
            .or_insert_with(|| UplinkHealth::new(mark, now));
        if h.mark != mark {
            let nm = h.nm_connectivity;
            *h = UplinkHealth::new(mark, now);
            h.nm_connectivity = nm;
        }
        match h.families.get(&family) {
            Some(p) if p.source == source => false,
            _ => {
                h.families.insert(
                    family,
                    Probed {
                        source,
                        quality: Quality::default(),
                    },
                );
                true
            }
        }
    }

    /// Keeps `iface` on the board without probes in `family` (no targets of that
    /// family, or it no longer has that side).
    pub fn untrack(&mut self, iface: &str, family: Family) {
        if let Some(h) = self.uplinks.get_mut(iface) {
            h.families.remove(&family);
        }
    }

    /// The id the next probe of `iface` in `family` takes.
    pub fn next_id(&self, iface: &str, family: Family) -> u64 {
        self.uplinks
            .get(iface)
            .and_then(|h| h.families.get(&family))
            .map_or(0, |p| p.quality.next_id())
    }

    /// Makes sure `iface` is on the board (for NetworkManager's verdict) even when
    /// nothing is probed.
    pub fn ensure(&mut self, iface: &str, mark: u32, now: SystemTime) {
        self.uplinks
            .entry(iface.to_string())
            .or_insert_with(|| UplinkHealth::new(mark, now));
    }

    /// Forgets uplinks that are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.uplinks.retain(|k, _| keep(k));
    }

    /// Feeds a probe event of `iface` in `family`. Returns the flip when that
    /// family's verdict changes.
    pub fn record(
        &mut self,
        iface: &str,
        family: Family,
        event: &ProbeEvent,
        t: &Thresholds,
        now: SystemTime,
    ) -> Option<Flip> {
        let h = self.uplinks.get_mut(iface)?;
        let before = h.verdict().family(family);
        let q = &mut h.families.get_mut(&family)?.quality;
        q.record(event, t);
        let worked = q.ever_answered();
        let after = h.verdict().family(family);
        (after != before).then(|| {
            h.last_change = now;
            h.times_out += u64::from(!after);
            Flip {
                family,
                healthy: after,
                reason: h.reason(family),
                worked,
            }
        })
    }

    /// Sets NetworkManager's connectivity for `iface` (`None`: unknown or its check is
    /// not configured). Returns the flips it causes.
    pub fn set_nm_connectivity(
        &mut self,
        iface: &str,
        connectivity: Option<u32>,
        now: SystemTime,
    ) -> Vec<Flip> {
        let Some(h) = self.uplinks.get_mut(iface) else {
            return Vec::new();
        };
        let before = h.verdict();
        h.nm_connectivity = connectivity;
        let after = h.verdict();
        let flips: Vec<Flip> = Family::ALL
            .into_iter()
            .filter(|f| before.family(*f) != after.family(*f))
            .map(|family| Flip {
                family,
                healthy: after.family(family),
                reason: h.reason(family),
                // NetworkManager's own check found it without connectivity.
                worked: true,
            })
            .collect();
        if !flips.is_empty() {
            h.last_change = now;
            h.times_out += u64::from(flips.iter().any(|f| !f.healthy));
        }
        flips
    }

    pub fn get(&self, iface: &str) -> Option<&UplinkHealth> {
        self.uplinks.get(iface)
    }

    pub fn ifaces(&self) -> impl Iterator<Item = &str> {
        self.uplinks.keys().map(String::as_str)
    }

    /// Interface -> verdict, for the planner.
    pub fn verdicts(&self) -> Verdicts {
        self.uplinks
            .iter()
            .map(|(k, h)| (k.clone(), h.verdict()))
            .collect()
    }

    /// The `health` section of `status --json`.
    pub fn report(&self, config: &HealthConfig) -> HealthReport {
        let t = Thresholds::from(config);
        HealthReport {
            targets: config.targets.clone(),
            interval_ms: config.interval_ms,
            down_after: config.down_after,
            up_after: config.up_after,
            max_loss: config.max_loss,
            max_rtt_ms: config.max_rtt_ms,
            window: config.window,
            uplinks: self
                .uplinks
                .iter()
                .map(|(k, h)| (k.clone(), uplink_report(h, &t)))
                .collect(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn family_report(h: &UplinkHealth, family: Family, p: &Probed, t: &Thresholds) -> FamilyReport {
    let q = &p.quality;
    let s = q.stats(t);
    FamilyReport {
        source: p.source.to_string(),
        healthy: h.verdict().family(family),
        probes_healthy: q.healthy,
        reason: h.reason(family).map(|r| r.to_string()),
        unanswered: q.unanswered,
        answered_in_a_row: q.answered_in_a_row,
        last_rtt_ms: q.last_rtt.map(ms),
        median_rtt_ms: s.median_rtt.map(ms),
        loss_percent: s.loss,
        window_samples: s.samples,
        sent: q.sent,
        lost: q.lost,
        last_error: q.last_error.clone(),
    }
}

fn uplink_report(h: &UplinkHealth, t: &Thresholds) -> UplinkHealthReport {
    let families: BTreeMap<Family, FamilyReport> = h
        .families
        .iter()
        .map(|(f, p)| (*f, family_report(h, *f, p, t)))
        .collect();
    let all = || families.values();
    // The first family's figures (IPv4 when probed) where one number stands for all.
    let first = all().next();
    UplinkHealthReport {
        healthy: h.verdict().healthy(),
        probes_healthy: h.families.values().all(|p| p.quality.healthy),
        consecutive_successes: all().map(|f| f.answered_in_a_row).min().unwrap_or(0),
        consecutive_failures: all().map(|f| f.unanswered).max().unwrap_or(0),
        last_rtt_ms: first.and_then(|f| f.last_rtt_ms),
        last_change: unix_seconds(h.last_change),
        last_error: all().find_map(|f| f.last_error.clone()),
        nm_connectivity: h
            .nm_connectivity
            .map(|c| nm_connectivity::name(c).to_string()),
        rounds: all().map(|f| f.sent).sum(),
        rounds_failed: all().map(|f| f.lost).sum(),
        reason: Family::ALL
            .into_iter()
            .find_map(|f| h.reason(f).map(|r| format!("{f}: {r}"))),
        loss_percent: all().filter_map(|f| f.loss_percent).reduce(f64::max),
        median_rtt_ms: all().filter_map(|f| f.median_rtt_ms).reduce(f64::max),
        times_out: h.times_out,
        families,
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
    #[serde(default)]
    pub max_loss: u32,
    #[serde(default)]
    pub max_rtt_ms: u64,
    #[serde(default)]
    pub window: u32,
    pub uplinks: BTreeMap<String, UplinkHealthReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkHealthReport {
    /// The verdict in every family: probes healthy and NetworkManager not saying
    /// NONE/LIMITED.
    pub healthy: bool,
    /// The probes' verdict alone, every family.
    pub probes_healthy: bool,
    /// The fewest probes answered in a row of its families.
    pub consecutive_successes: u32,
    /// The most probes unanswered since the last answer of its families.
    pub consecutive_failures: u32,
    pub last_rtt_ms: Option<f64>,
    /// Unix time (seconds) of the last verdict change, or of the start of probing.
    pub last_change: f64,
    pub last_error: Option<String>,
    /// NetworkManager's `Ip4Connectivity` when its connectivity check is enabled.
    pub nm_connectivity: Option<String>,
    pub rounds: u64,
    pub rounds_failed: u64,
    /// Why it is out of the balance (the first family that is), `null` when it is not.
    #[serde(default)]
    pub reason: Option<String>,
    /// The worst loss of its families over the window, percent.
    #[serde(default)]
    pub loss_percent: Option<f64>,
    /// The worst median round-trip time of its families over the window.
    #[serde(default)]
    pub median_rtt_ms: Option<f64>,
    /// How many times a verdict took it out of the balance since probing started.
    #[serde(default)]
    pub times_out: u64,
    /// Each probed family: "ipv4", "ipv6".
    #[serde(default)]
    pub families: BTreeMap<Family, FamilyReport>,
}

/// One family of an uplink in the status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyReport {
    /// The address the probes leave from.
    pub source: String,
    /// The verdict in this family.
    pub healthy: bool,
    pub probes_healthy: bool,
    pub reason: Option<String>,
    /// Probes sent since the last answer.
    pub unanswered: u32,
    pub answered_in_a_row: u32,
    pub last_rtt_ms: Option<f64>,
    pub median_rtt_ms: Option<f64>,
    pub loss_percent: Option<f64>,
    /// Probes of the window with a fate.
    pub window_samples: u64,
    pub sent: u64,
    pub lost: u64,
    pub last_error: Option<String>,
}
