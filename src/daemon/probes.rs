//! The daemon's probe tasks: one per uplink and address family it is probed in,
//! started, replaced and stopped to match the plan, each reporting every probe event
//! to the main loop.
//!
//! An uplink is probed in each family it is balanced in (its IPv4 side; its IPv6 side
//! when IPv6 is balanced) for which there are targets of that family. The two
//! families' verdicts are kept apart: an uplink whose IPv6 dies leaves the IPv6 round
//! only and goes on carrying IPv4 connections, as each family's connections only ever
//! use that family's path.
//!
//! An uplink that carries no new connections because of its role (a backup while a
//! primary works, a metered uplink with `metered = "never"`) is probed every
//! [`STANDBY_INTERVAL`] at most: its verdict matters only once the primaries fail, at
//! which point it is probed at the full pace again, and a metered one pays for every
//! probe (at the default pace, two targets in each family cost a few GB a month). A
//! policy that names it is using it, though: then it is probed at the full pace, so
//! that the policy's connections leave it as fast as any uplink's.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Daemon;
use crate::config::{Config, Mode};
use crate::health::{self, ProbeEvent, ProbeSpec, Prober};
use crate::model::Family;
use crate::plan::{Plan, PlannedUplink, Role};

/// The probe period of an uplink standing by (see the module's documentation), unless
/// `interval_ms` is longer.
pub const STANDBY_INTERVAL: Duration = Duration::from_secs(10);

/// One probe event, for the main loop.
pub(super) struct ProbeReport {
    pub iface: String,
    pub family: Family,
    pub generation: u64,
    pub event: ProbeEvent,
}

/// A running probe task.
pub(super) struct ProberHandle {
    pub spec: ProbeSpec,
    pub generation: u64,
    pub task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Probes exactly the uplinks (and families) of the plan; returns whether a
    /// verdict flipped.
    pub(super) fn sync_probers(&mut self, plan: &Plan) -> bool {
        let now = SystemTime::now();
        let configured = Duration::from_millis(self.config.health.interval_ms);
        let targets = health::targets(&self.config.health).unwrap_or_else(|e| {
            warn!("{e}");
            Vec::new()
        });
        {
            let mut board = self.shared.board.lock().expect("board lock");
            board.retain(|i| plan.uplinks.iter().any(|u| u.iface == i));
        }
        self.probers.retain(|(iface, family), p| {
            let keep = plan
                .uplinks
                .iter()
                .any(|u| &u.iface == iface && u.serves(*family));
            if !keep {
                debug!(iface, %family, "no longer probed");
                p.task.abort();
            }
            keep
        });
        for u in &plan.uplinks {
            self.shared
                .board
                .lock()
                .expect("board lock")
                .ensure(&u.iface, u.mark, now);
            let standby =
                !u.in_balance && u.role != Role::Primary && !named_by_a_policy(&self.config, u);
            let interval = if standby {
                configured.max(STANDBY_INTERVAL)
            } else {
                configured
            };
            let wait = health::answer_wait(&crate::config::HealthConfig {
                interval_ms: interval.as_millis() as u64,
                ..self.config.health.clone()
            });
            for family in Family::ALL {
                let key = (u.iface.clone(), family);
                let of_family: Vec<_> = targets
                    .iter()
                    .copied()
                    .filter(|t| t.family() == family)
                    .collect();
                let side = u.served_side(family);
                let (Some(side), false) = (side, of_family.is_empty()) else {
                    // Not balanced in this family, or nothing to probe there: that
                    // family counts as healthy.
                    if let Some(p) = self.probers.remove(&key) {
                        p.task.abort();
                    }
                    self.shared
                        .board
                        .lock()
                        .expect("board lock")
                        .untrack(&u.iface, family);
                    continue;
                };
                let reset = self.shared.board.lock().expect("board lock").track(
                    &u.iface,
                    family,
                    side.address,
                    u.mark,
                    now,
                );
                let spec = ProbeSpec {
                    iface: u.iface.clone(),
                    family,
                    source: side.address,
                    mark: u.mark,
                    targets: of_family,
                    interval,
                    wait,
                };
                if let Some(p) = self.probers.get(&key) {
                    if p.spec == spec && !reset {
                        continue;
                    }
                    p.task.abort();
                    self.probers.remove(&key);
                }
                self.generation += 1;
                info!(
                    iface = u.iface,
                    %family,
                    source = %side.address,
                    mark = format!("{:#x}", u.mark),
                    interval_ms = interval.as_millis() as u64,
                    "probing uplink"
                );
                let first_id = self
                    .shared
                    .board
                    .lock()
                    .expect("board lock")
                    .next_id(&u.iface, family);
                let task = tokio::spawn(probe_loop(
                    spec.clone(),
                    self.generation,
                    first_id,
                    self.probe_tx.clone(),
                ));
                self.probers.insert(
                    key,
                    ProberHandle {
                        spec,
                        generation: self.generation,
                        task,
                    },
                );
            }
        }
        self.apply_nm_connectivity()
    }
}

/// Whether a policy that routes through uplinks names `u` among them.
fn named_by_a_policy(config: &Config, u: &PlannedUplink) -> bool {
    config
        .policy
        .iter()
        .filter(|p| p.mode != Mode::Direct)
        .flat_map(|p| &p.uplinks)
        .any(|name| *name == u.connection_id || *name == u.iface)
}

pub(super) async fn probe_loop(
    spec: ProbeSpec,
    generation: u64,
    first_id: u64,
    tx: mpsc::Sender<ProbeReport>,
) {
    let ident = (std::process::id() as u16) ^ ((generation as u16) << 9) ^ (generation as u16);
    let report = |event| ProbeReport {
        iface: spec.iface.clone(),
        family: spec.family,
        generation,
        event,
    };
    // Until the socket can be made (an address not usable yet, a missing capability),
    // every interval counts as a lost probe, with the reason.
    let mut prober = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id = first_id;
    while prober.is_none() {
        tick.tick().await;
        match Prober::new(spec.clone(), ident) {
            Ok(p) => prober = Some(p),
            Err(e) => {
                if !warned {
                    warn!(iface = spec.iface, family = %spec.family, "cannot probe: {e}");
                    warned = true;
                }
                for event in [
                    ProbeEvent::Sent { id },
                    ProbeEvent::Lost {
                        id,
                        error: Some(e.to_string()),
                    },
                ] {
                    if tx.send(report(event)).await.is_err() {
                        return;
                    }
                }
                id += 1;
            }
        }
    }
    let Some(mut prober) = prober else { return };
    prober.skip_ids(id);
    loop {
        let event = prober.next().await;
        if tx.send(report(event)).await.is_err() {
            return;
        }
    }
}
