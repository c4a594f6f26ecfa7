//! Our D-Bus service, `net.nmmultiwan.Daemon1`, and the client side `status` uses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, warn};
use zbus::Connection;
use zbus::message::Header;
use zbus::names::BusName;

use super::*;

/// Our well-known name on the system bus.
pub const BUS_NAME: &str = "net.nmmultiwan.Daemon1";
pub const OBJECT_PATH: &str = "/net/nmmultiwan/Daemon1";
pub const INTERFACE: &str = "net.nmmultiwan.Daemon1";

/// `net.nmmultiwan.Daemon1` at `/net/nmmultiwan/Daemon1`.
pub(super) struct Service {
    pub shared: Arc<Shared>,
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
        let traffic = self.shared.traffic.lock().expect("traffic lock").report();
        let report = StatusReport {
            health: Some(health),
            config_error,
            ..report
        }
        .with_traffic(traffic);
        serde_json::to_string(&report).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// Sent after a reconcile in which an uplink joined or left, or its health or role
    /// changed: `changes` as `(iface, connection, what, detail)` with `what` one of
    /// joined, left, unhealthy, healthy, role; `uplinks` as `(iface, connection,
    /// in_balance, healthy, role)`, all of them as they are now (see [`crate::events`]).
    #[zbus(signal)]
    pub(super) async fn uplinks_changed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        changes: Vec<crate::events::ChangeWire>,
        uplinks: Vec<crate::events::StateWire>,
    ) -> zbus::Result<()>;

    /// Re-reads the configuration and reconciles. Root only, whatever the bus policy.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<()> {
        authorize_caller(&hdr, conn, "Reload").await?;
        self.ask(|reply| Control::Reload { reply }).await
    }

    /// Reconciles now (as `nm-multiwan apply` does, with the daemon's view of
    /// NetworkManager and its health verdicts) and returns when done, with how long
    /// it took in microseconds (what `bench/run` reports) and how many changes it
    /// applied (0: all was in place). Root only.
    async fn reconcile(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<(u64, u32)> {
        authorize_caller(&hdr, conn, "Reconcile").await?;
        self.ask(|reply| Control::Reconcile { reply }).await
    }
}

impl Service {
    /// Hands a request to the main loop and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<std::result::Result<T, String>>) -> Control,
    ) -> zbus::fdo::Result<T> {
        let (reply, answer) = oneshot::channel();
        let stopping = || zbus::fdo::Error::Failed("the daemon is stopping".into());
        self.shared
            .control
            .send(request(reply))
            .await
            .map_err(|_| stopping())?;
        answer
            .await
            .map_err(|_| stopping())?
            .map_err(zbus::fdo::Error::Failed)
    }
}

/// Refuses a caller that is not root.
async fn authorize_caller(
    hdr: &Header<'_>,
    conn: &Connection,
    method: &str,
) -> zbus::fdo::Result<()> {
    let sender = hdr
        .sender()
        .ok_or_else(|| zbus::fdo::Error::AccessDenied("caller unknown".into()))?;
    let uid = zbus::fdo::DBusProxy::new(conn)
        .await?
        .get_connection_unix_user(BusName::Unique(sender.clone()))
        .await?;
    authorize_reload(uid).inspect_err(|_| {
        warn!(%sender, uid, method, "refused a call from a non-root caller");
    })
}

/// Only root may act on the daemon.
pub(super) fn authorize_reload(uid: u32) -> zbus::fdo::Result<()> {
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
    Ok(status_on(&conn, timeout).await)
}

/// Asks a running daemon for its status on an open system-bus connection; `None` when
/// none answers within `timeout` (`top` asks every second on one connection).
pub async fn status_on(conn: &Connection, timeout: Duration) -> Option<StatusReport> {
    let ask = async {
        let reply = conn
            .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), "Status", &())
            .await?;
        let text: String = reply.body().deserialize()?;
        Ok::<_, zbus::Error>(text)
    };
    match tokio::time::timeout(timeout, ask).await {
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
    }
}
