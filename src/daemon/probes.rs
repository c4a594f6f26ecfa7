//! The daemon's probe tasks: one per uplink, started, replaced and stopped to match the
//! plan, each reporting every round to the main loop.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Daemon;
use crate::health::{self, ProbeSpec, Prober, RoundOutcome};
use crate::plan::Plan;

/// One probe round's outcome, for the main loop.
pub(super) struct ProbeReport {
    pub iface: String,
    pub generation: u64,
    pub outcome: RoundOutcome,
}

/// A running probe task.
pub(super) struct ProberHandle {
    pub spec: ProbeSpec,
    pub generation: u64,
    pub task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Probes exactly the uplinks of the plan; returns whether a verdict flipped.
    pub(super) fn sync_probers(&mut self, plan: &Plan) -> bool {
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

pub(super) async fn probe_loop(
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
