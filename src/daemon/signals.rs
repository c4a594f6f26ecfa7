//! The system bus: NetworkManager's signals in, our service out, on one connection
//! rebuilt whenever the bus drops.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use zbus::names::BusName;
use zbus::zvariant::Value;
use zbus::{MatchRule, MessageStream};

use super::service::Service;
use super::*;
use crate::nm::Signal;

// ---------------------------------------------------------------------------------
// The system bus: NetworkManager's signals in, our service out.

pub(super) async fn bus_task(shared: Arc<Shared>, nm_tx: mpsc::Sender<String>) {
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
        // Signals sent while we are off the bus are lost: read afresh next time.
        shared.nm_mirror.drop_snapshot("lost the system bus");
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
    // Everything NetworkManager signals, on one stream so that the mirror sees it in
    // the order it was sent: its objects under /org/freedesktop/NetworkManager and its
    // object manager's InterfacesAdded/Removed on /org/freedesktop.
    let nm_rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(NM_BUS)?
        .path_namespace("/org/freedesktop")?
        .build();
    let mut nm_signals = MessageStream::for_match_rule(nm_rule, &conn, Some(512)).await?;
    // Subscribed before any snapshot is taken on this connection: nothing falls between.
    shared.nm_mirror.drop_snapshot("a new bus connection");
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
                    if let Some(signal) = Signal::from_message(&msg) {
                        shared.nm_mirror.apply(signal);
                    }
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
                    shared.nm_mirror.drop_snapshot("NetworkManager's bus name changed hands");
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
pub(super) fn nm_signal_reason(msg: &zbus::Message) -> Option<String> {
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

/// What the daemon reads of NetworkManager besides the uplinks.
pub(super) struct NmFacts {
    /// NetworkManager is still activating its initial connections (`Startup`).
    pub starting: bool,
    /// Interface -> `Ip4Connectivity`; `None` for every device when NetworkManager's
    /// connectivity check is off or not configured (its answers then say nothing
    /// about the upstream).
    pub connectivity: BTreeMap<String, Option<u32>>,
}

pub(super) async fn nm_facts(nm: &NetworkManager) -> Result<NmFacts> {
    let starting = nm.starting().await;
    let connectivity = match nm.checked_connectivity().await? {
        Some(c) => c.into_iter().map(|(iface, c)| (iface, Some(c))).collect(),
        // Every device then reports a connectivity that says nothing about its upstream.
        None => nm
            .ip4_connectivity()
            .await?
            .into_keys()
            .map(|iface| (iface, None))
            .collect(),
    };
    Ok(NmFacts {
        starting,
        connectivity,
    })
}
