//! `nm-multiwan notify`: desktop notifications of the daemon's `UplinksChanged`
//! signal. Runs in the user's session (the packages' XDG autostart entry starts it),
//! listens on the system bus for the signal and calls
//! `org.freedesktop.Notifications.Notify` on the session bus: one notification per
//! uplink change ("Wi-Fi lost its internet" — "Balancing over Wired connection 1 and
//! Phone."), each replacing the previous one about the same uplink. Nothing is shown
//! while all is well: the daemon only signals changes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt as _;
use tracing::{debug, info, warn};
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, MessageStream};

use crate::daemon::{BUS_NAME, INTERFACE, OBJECT_PATH};
use crate::error::{Error, Result};
use crate::events::{self, ChangeKind, ChangeWire, StateWire, UplinkChange, UplinkState};

const NOTIFICATIONS_BUS: &str = "org.freedesktop.Notifications";
const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";
const APP_NAME: &str = "nm-multiwan";
/// The autostart entry's name, for servers that group notifications by application.
const DESKTOP_ENTRY: &str = "nm-multiwan-notify";
/// Longest wait between attempts to reach the system bus again.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub summary: String,
    pub body: String,
    /// A freedesktop icon name.
    pub icon: &'static str,
    /// A freedesktop notification category.
    pub category: &'static str,
}

/// The notification for one change, naming uplinks as the user knows them
/// (NetworkManager connection ids) and saying where new connections go now.
pub fn notification(change: &UplinkChange, uplinks: &[UplinkState]) -> Notification {
    let name = change.name();
    let (summary, icon, category) = match change.kind {
        ChangeKind::Unhealthy => (
            format!("{name} lost its internet"),
            "network-error",
            "network.error",
        ),
        ChangeKind::Healthy => (
            format!("{name} is back online"),
            "network-transmit-receive",
            "network.connected",
        ),
        ChangeKind::Joined => (
            format!("{name} joined"),
            "network-transmit-receive",
            "network.connected",
        ),
        ChangeKind::Left => (
            format!("{name} left"),
            "network-offline",
            "network.disconnected",
        ),
        ChangeKind::Role => (
            format!("{name} is now {}", change.detail),
            "network-transmit-receive",
            "network",
        ),
    };
    let mut body = balance_sentence(uplinks);
    if change.kind == ChangeKind::Unhealthy && !change.detail.is_empty() {
        body.push_str(&format!("\n({})", change.detail));
    }
    Notification {
        summary,
        body,
        icon,
        category,
    }
}

/// Where new connections go now, in one sentence.
pub fn balance_sentence(uplinks: &[UplinkState]) -> String {
    let using: Vec<&str> = uplinks
        .iter()
        .filter(|u| u.in_balance && u.healthy)
        .map(UplinkState::name)
        .collect();
    match using.as_slice() {
        [] if uplinks.iter().any(|u| u.in_balance) => {
            "No uplink reaches the internet; new connections use all of them until one answers."
                .into()
        }
        [] if uplinks.is_empty() => "No uplink is left.".into(),
        [] => "No uplink is in use.".into(),
        [one] => format!("All new connections go through {one}."),
        [first @ .., last] => format!("Balancing over {} and {last}.", first.join(", ")),
    }
}

/// Runs until the session ends. A system bus out of reach at the start is an error
/// (exit code 3, with the reason); lost later, it is reconnected.
pub async fn run() -> Result<()> {
    let session = crate::bus::session(crate::bus::DBUS_TIMEOUT).await?;
    let mut shown: BTreeMap<String, u32> = BTreeMap::new();
    let mut system = Some(crate::bus::system(crate::bus::DBUS_TIMEOUT).await?);
    let mut delay = Duration::from_millis(200);
    loop {
        let conn = match system.take() {
            Some(c) => c,
            None => match crate::bus::system(crate::bus::DBUS_TIMEOUT).await {
                Ok(c) => c,
                Err(e) => {
                    warn!("{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    continue;
                }
            },
        };
        match follow(&conn, &session, &mut shown).await {
            Ok(Ended::Session) => {
                info!("the session bus closed: the session is over");
                return Ok(());
            }
            Ok(Ended::System) => warn!("lost the system bus; reconnecting"),
            Err(e) => warn!("system bus: {e}; retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

enum Ended {
    System,
    Session,
}

/// Turns signals into notifications until either bus goes away.
async fn follow(
    system: &Connection,
    session: &Connection,
    shown: &mut BTreeMap<String, u32>,
) -> zbus::Result<Ended> {
    // The bus delivers only what the owner of our well-known name sends, and only
    // root may own it (the D-Bus policy): nobody else can make us notify.
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)?
        .path(OBJECT_PATH)?
        .interface(INTERFACE)?
        .member(events::SIGNAL)?
        .build();
    let mut signals = MessageStream::for_match_rule(rule, system, Some(64)).await?;
    // Ends when the session bus drops.
    let mut session_messages = MessageStream::from(session);
    info!("waiting for nm-multiwan's daemon to report uplink changes");
    loop {
        tokio::select! {
            m = signals.next() => match m {
                Some(Ok(msg)) => {
                    match msg.body().deserialize::<(Vec<ChangeWire>, Vec<StateWire>)>() {
                        Ok((changes, uplinks)) => notify_all(session, shown, changes, uplinks).await,
                        Err(e) => warn!("unreadable {} signal: {e}", events::SIGNAL),
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(Ended::System),
            },
            m = session_messages.next() => if m.is_none() {
                return Ok(Ended::Session);
            },
        }
    }
}

async fn notify_all(
    session: &Connection,
    shown: &mut BTreeMap<String, u32>,
    changes: Vec<ChangeWire>,
    uplinks: Vec<StateWire>,
) {
    let uplinks: Vec<UplinkState> = uplinks.into_iter().map(UplinkState::from_wire).collect();
    for change in changes.into_iter().filter_map(UplinkChange::from_wire) {
        let n = notification(&change, &uplinks);
        let replaces = shown.get(&change.iface).copied().unwrap_or(0);
        match show(session, &n, replaces).await {
            Ok(id) => {
                info!(uplink = change.iface, summary = n.summary, "notified");
                shown.insert(change.iface.clone(), id);
            }
            Err(e) => warn!(
                uplink = change.iface,
                "cannot show a notification ({e}); is a notification server running?"
            ),
        }
    }
}

/// `org.freedesktop.Notifications.Notify`; returns the notification's id.
async fn show(session: &Connection, n: &Notification, replaces: u32) -> Result<u32> {
    let hints: HashMap<&str, Value<'_>> = HashMap::from([
        ("urgency", Value::U8(1)),
        ("category", Value::from(n.category)),
        ("desktop-entry", Value::from(DESKTOP_ENTRY)),
    ]);
    let actions: Vec<&str> = Vec::new();
    let reply = session
        .call_method(
            Some(NOTIFICATIONS_BUS),
            NOTIFICATIONS_PATH,
            Some(NOTIFICATIONS_BUS),
            "Notify",
            &(
                APP_NAME,
                replaces,
                n.icon,
                n.summary.as_str(),
                n.body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        )
        .await
        .map_err(|e| Error::Bus(format!("Notify: {e}")))?;
    let id: u32 = reply
        .body()
        .deserialize()
        .map_err(|e| Error::Bus(format!("unexpected reply to Notify: {e}")))?;
    debug!(id, replaces, "notification shown");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink(iface: &str, conn: &str, in_balance: bool, healthy: bool) -> UplinkState {
        UplinkState {
            iface: iface.into(),
            connection: conn.into(),
            in_balance,
            healthy,
            role: String::new(),
        }
    }

    fn change(iface: &str, conn: &str, kind: ChangeKind, detail: &str) -> UplinkChange {
        UplinkChange {
            iface: iface.into(),
            connection: conn.into(),
            kind,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_lost_uplink_is_named_and_the_balance_said() {
        let uplinks = [
            uplink("eth0", "Wired", true, true),
            uplink("wlan0", "Wi-Fi", false, false),
            uplink("usb0", "Phone", true, true),
        ];
        let n = notification(
            &change(
                "wlan0",
                "Wi-Fi",
                ChangeKind::Unhealthy,
                "3 probe rounds lost",
            ),
            &uplinks,
        );
        assert_eq!(n.summary, "Wi-Fi lost its internet");
        assert_eq!(
            n.body,
            "Balancing over Wired and Phone.\n(3 probe rounds lost)"
        );
        assert_eq!(n.icon, "network-error");
        let healed = [
            uplink("eth0", "Wired", true, true),
            uplink("wlan0", "Wi-Fi", true, true),
            uplink("usb0", "Phone", true, true),
        ];
        let n = notification(&change("wlan0", "Wi-Fi", ChangeKind::Healthy, ""), &healed);
        assert_eq!(n.summary, "Wi-Fi is back online");
        assert_eq!(n.body, "Balancing over Wired, Wi-Fi and Phone.");
    }

    #[test]
    fn joins_leaves_roles_and_the_corner_cases() {
        let one = [uplink("eth0", "Wired connection 1", true, true)];
        let n = notification(&change("wlan0", "Wi-Fi", ChangeKind::Left, ""), &one);
        assert_eq!(n.summary, "Wi-Fi left");
        assert_eq!(n.body, "All new connections go through Wired connection 1.");
        let n = notification(&change("eth1", "", ChangeKind::Joined, ""), &one);
        assert_eq!(n.summary, "eth1 joined", "no connection id: the interface");
        let n = notification(&change("eth0", "Wired", ChangeKind::Role, "backup"), &one);
        assert_eq!(n.summary, "Wired is now backup");
        // Every uplink dead: the planner balances over all of them.
        let dead = [
            uplink("eth0", "Wired", true, false),
            uplink("wlan0", "Wi-Fi", true, false),
        ];
        assert!(balance_sentence(&dead).starts_with("No uplink reaches the internet"));
        assert_eq!(balance_sentence(&[]), "No uplink is left.");
    }
}
