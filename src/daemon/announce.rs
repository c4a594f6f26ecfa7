//! The `UplinksChanged` signal: after each reconcile, what changed in the uplinks (one
//! joined or left, its health or role changed) since the last one, for listeners such
//! as `nm-multiwan notify`. The first reconcile after start is the baseline: nothing
//! is announced while all is as it was found.

use std::time::Duration;

use tracing::{debug, warn};
use zbus::object_server::SignalEmitter;

use super::service::Service;
use super::{Daemon, OBJECT_PATH};
use crate::events::{self, UplinkChange, UplinkState};
use crate::health::nm_connectivity;
use crate::model::Family;
use crate::plan::{Plan, Role};

/// Longest the main loop waits for a signal to be written to the bus.
const EMIT_TIMEOUT: Duration = Duration::from_secs(1);

/// What was last announced, and the uplinks of the last plan applied.
#[derive(Debug, Default)]
pub(super) struct Announced {
    /// `None` until the first reconcile (the baseline).
    last: Option<Vec<UplinkState>>,
    /// (iface, connection id, in the balance, role) of the last plan.
    uplinks: Vec<(String, String, bool, Role)>,
}

impl Daemon {
    /// Announces what changed since the last announcement. `plan`: the plan just
    /// applied, or `None` when the reconcile failed (the uplinks stay as they were,
    /// but a verdict may have flipped).
    pub(super) async fn announce(&mut self, plan: Option<&Plan>) {
        // Before the first plan there are no uplinks to compare with: a failed first
        // reconcile must not make every uplink "join" at the next one.
        if plan.is_none() && self.announced.last.is_none() {
            return;
        }
        if let Some(plan) = plan {
            self.announced.uplinks = plan
                .uplinks
                .iter()
                .map(|u| {
                    (
                        u.iface.clone(),
                        u.connection_id.clone(),
                        u.in_balance,
                        u.role,
                    )
                })
                .collect();
        }
        let (now, details) = {
            let board = self.shared.board.lock().expect("board lock");
            let now: Vec<UplinkState> = self
                .announced
                .uplinks
                .iter()
                .map(|(iface, connection, in_balance, role)| UplinkState {
                    iface: iface.clone(),
                    connection: connection.clone(),
                    in_balance: *in_balance,
                    healthy: board.get(iface).is_none_or(|h| h.verdict().healthy()),
                    role: role.name().to_string(),
                })
                .collect();
            let details: Vec<(String, String)> = now
                .iter()
                .filter(|u| !u.healthy)
                .filter_map(|u| Some((u.iface.clone(), why_down(board.get(&u.iface)?))))
                .collect();
            (now, details)
        };
        let Some(before) = self.announced.last.replace(now.clone()) else {
            return;
        };
        let changes = events::changes(&before, &now, |iface| {
            details
                .iter()
                .find(|(i, _)| i == iface)
                .map(|(_, d)| d.clone())
                .unwrap_or_default()
        });
        if changes.is_empty() {
            return;
        }
        let conn = self.shared.bus.lock().expect("bus lock").clone();
        let Some(conn) = conn else {
            debug!(?changes, "not on the bus: UplinksChanged not sent");
            return;
        };
        match tokio::time::timeout(EMIT_TIMEOUT, emit(&conn, &changes, &now)).await {
            Ok(Ok(())) => debug!(?changes, "UplinksChanged sent"),
            Ok(Err(e)) => warn!("cannot send UplinksChanged: {e}"),
            Err(_) => {
                warn!("cannot send UplinksChanged: the bus took longer than {EMIT_TIMEOUT:?}")
            }
        }
    }
}

/// Why an uplink is unhealthy, in a few words.
fn why_down(h: &crate::health::UplinkHealth) -> String {
    if h.nm_says_down() {
        return format!(
            "NetworkManager says connectivity {}",
            nm_connectivity::name(h.nm_connectivity.unwrap_or(0))
        );
    }
    // The first family that is out, and why (dead, lossy, slow).
    Family::ALL
        .into_iter()
        .find_map(|f| h.reason(f).map(|r| format!("{f}: {r}")))
        .unwrap_or_default()
}

async fn emit(
    conn: &zbus::Connection,
    changes: &[UplinkChange],
    uplinks: &[UplinkState],
) -> zbus::Result<()> {
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
    Service::uplinks_changed(
        &emitter,
        changes.iter().map(UplinkChange::to_wire).collect(),
        uplinks.iter().map(UplinkState::to_wire).collect(),
    )
    .await
}
