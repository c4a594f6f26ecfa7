//! The daemon's traffic sampling: the byte counters of every uplink of the last plan,
//! once a second, with a minute of rates kept for `Status` (`status`, `top`).

use std::sync::Arc;

use tokio::time::Instant;

use super::{Daemon, Shared};
use crate::plan::Plan;
use crate::traffic::{SAMPLE_INTERVAL, Traffic, TrafficReport, read_counters};

/// The interfaces sampled and their meters.
#[derive(Debug, Default)]
pub(super) struct Sampling {
    ifaces: Vec<String>,
    traffic: Traffic,
}

impl Sampling {
    pub fn report(&self) -> TrafficReport {
        self.traffic.report()
    }
}

impl Daemon {
    /// From now on, samples the uplinks of `plan`.
    pub(super) fn watch_traffic(&self, plan: &Plan) {
        let mut s = self.shared.traffic.lock().expect("traffic lock");
        s.ifaces = plan.uplinks.iter().map(|u| u.iface.clone()).collect();
    }
}

/// Samples every [`SAMPLE_INTERVAL`] until aborted. Reading sysfs takes microseconds:
/// done under the lock, in the runtime.
pub(super) async fn sample_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut s = shared.traffic.lock().expect("traffic lock");
        let Sampling { ifaces, traffic } = &mut *s;
        traffic.sample(
            ifaces.iter().map(String::as_str),
            Instant::now().into_std(),
            read_counters,
        );
    }
}
