//! Uplink events: what the daemon's `UplinksChanged` D-Bus signal carries. The daemon
//! computes them from one view of its uplinks to the next ([`changes`]);
//! `nm-multiwan notify` turns them into desktop notifications. Pure.
//!
//! On the bus the signal is `UplinksChanged(a(ssss) changes, a(ssbbs) uplinks)`:
//! each change is `(iface, connection, what, detail)` ([`ChangeWire`]), each uplink
//! `(iface, connection, in_balance, healthy, role)` ([`StateWire`]).

/// The signal's member name on `net.nmmultiwan.Daemon1`.
pub const SIGNAL: &str = "UplinksChanged";

/// `(iface, connection, what, detail)`.
pub type ChangeWire = (String, String, String, String);
/// `(iface, connection, in_balance, healthy, role)`.
pub type StateWire = (String, String, bool, bool, String);

/// One uplink as the daemon sees it after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkState {
    pub iface: String,
    /// The NetworkManager connection id ("Wired connection 1"), as the user knows it.
    pub connection: String,
    /// New connections go there.
    pub in_balance: bool,
    /// The daemon's verdict (true for an uplink it does not probe).
    pub healthy: bool,
    /// The uplink's role: `primary`, `backup` or `never` (empty from a daemon that
    /// predates roles).
    pub role: String,
}

impl UplinkState {
    /// The name people know it by: the connection id, else the interface.
    pub fn name(&self) -> &str {
        if self.connection.is_empty() {
            &self.iface
        } else {
            &self.connection
        }
    }

    pub fn to_wire(&self) -> StateWire {
        (
            self.iface.clone(),
            self.connection.clone(),
            self.in_balance,
            self.healthy,
            self.role.clone(),
        )
    }

    pub fn from_wire((iface, connection, in_balance, healthy, role): StateWire) -> Self {
        UplinkState {
            iface,
            connection,
            in_balance,
            healthy,
            role,
        }
    }
}

/// What happened to an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It became an uplink (NetworkManager activated it).
    Joined,
    /// It is no longer an uplink.
    Left,
    /// Its upstream stopped answering (or NetworkManager's check says so).
    Unhealthy,
    /// It answers again.
    Healthy,
    /// Its role changed (the new one is the detail).
    Role,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Joined => "joined",
            ChangeKind::Left => "left",
            ChangeKind::Unhealthy => "unhealthy",
            ChangeKind::Healthy => "healthy",
            ChangeKind::Role => "role",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "joined" => ChangeKind::Joined,
            "left" => ChangeKind::Left,
            "unhealthy" => ChangeKind::Unhealthy,
            "healthy" => ChangeKind::Healthy,
            "role" => ChangeKind::Role,
            _ => return None,
        })
    }
}

/// One change of one uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkChange {
    pub iface: String,
    pub connection: String,
    pub kind: ChangeKind,
    /// Why it went down (the probes' last error, NetworkManager's verdict), or the new
    /// role; may be empty.
    pub detail: String,
}

impl UplinkChange {
    pub fn name(&self) -> &str {
        if self.connection.is_empty() {
            &self.iface
        } else {
            &self.connection
        }
    }

    pub fn to_wire(&self) -> ChangeWire {
        (
            self.iface.clone(),
            self.connection.clone(),
            self.kind.as_str().to_string(),
            self.detail.clone(),
        )
    }

    /// `None` for a kind this version does not know (a newer daemon's).
    pub fn from_wire((iface, connection, what, detail): ChangeWire) -> Option<Self> {
        Some(UplinkChange {
            iface,
            connection,
            kind: ChangeKind::parse(&what)?,
            detail,
        })
    }
}

/// What changed from `before` to `after`, at most one change per uplink (health
/// before role), in `after`'s order, departures last. `detail` says why an uplink
/// is unhealthy, by interface.
pub fn changes(
    before: &[UplinkState],
    after: &[UplinkState],
    detail: impl Fn(&str) -> String,
) -> Vec<UplinkChange> {
    let change = |u: &UplinkState, kind, detail: String| UplinkChange {
        iface: u.iface.clone(),
        connection: u.connection.clone(),
        kind,
        detail,
    };
    let mut out = Vec::new();
    for u in after {
        match before.iter().find(|b| b.iface == u.iface) {
            None => out.push(change(u, ChangeKind::Joined, String::new())),
            Some(b) if b.healthy && !u.healthy => {
                out.push(change(u, ChangeKind::Unhealthy, detail(&u.iface)))
            }
            Some(b) if !b.healthy && u.healthy => {
                out.push(change(u, ChangeKind::Healthy, String::new()))
            }
            Some(b) if b.role != u.role => out.push(change(u, ChangeKind::Role, u.role.clone())),
            Some(_) => {}
        }
    }
    for b in before {
        if !after.iter().any(|u| u.iface == b.iface) {
            out.push(change(b, ChangeKind::Left, String::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(iface: &str, conn: &str, healthy: bool) -> UplinkState {
        UplinkState {
            iface: iface.into(),
            connection: conn.into(),
            in_balance: healthy,
            healthy,
            role: String::new(),
        }
    }

    #[test]
    fn one_change_per_uplink_that_changed() {
        let before = [
            up("eth0", "Wired connection 1", true),
            up("wlan0", "Wi-Fi", true),
            up("usb0", "Phone", false),
        ];
        let after = [
            up("eth0", "Wired connection 1", true),
            up("wlan0", "Wi-Fi", false),
            up("usb0", "Phone", true),
            up("eth1", "", true),
        ];
        let c = changes(&before, &after, |i| format!("{i}: no answer"));
        let got: Vec<(&str, ChangeKind, &str)> = c
            .iter()
            .map(|c| (c.iface.as_str(), c.kind, c.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("wlan0", ChangeKind::Unhealthy, "wlan0: no answer"),
                ("usb0", ChangeKind::Healthy, ""),
                ("eth1", ChangeKind::Joined, ""),
            ]
        );
        assert_eq!(c[2].name(), "eth1", "no connection id: the interface");
        assert_eq!(c[0].name(), "Wi-Fi");
        let gone = changes(&after, &after[..1], |_| String::new());
        assert_eq!(gone.len(), 3);
        assert!(gone.iter().all(|c| c.kind == ChangeKind::Left));
        assert!(changes(&after, &after, |_| String::new()).is_empty());
    }

    #[test]
    fn health_wins_over_role_and_in_balance_alone_is_no_event() {
        let before = [up("eth0", "Wired", true)];
        let mut after = before.clone();
        after[0].role = "backup".into();
        after[0].healthy = false;
        let c = changes(&before, &after, |_| String::new());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ChangeKind::Unhealthy);
        after[0].healthy = true;
        let c = changes(&before, &after, |_| String::new());
        assert_eq!(
            (c[0].kind, c[0].detail.as_str()),
            (ChangeKind::Role, "backup")
        );
        let mut out_only = before.clone();
        out_only[0].in_balance = false;
        assert!(changes(&before, &out_only, |_| String::new()).is_empty());
    }

    #[test]
    fn wire_round_trip() {
        let s = up("wlan0", "Wi-Fi", false);
        assert_eq!(UplinkState::from_wire(s.to_wire()), s);
        let c = UplinkChange {
            iface: "wlan0".into(),
            connection: "Wi-Fi".into(),
            kind: ChangeKind::Unhealthy,
            detail: "no answer".into(),
        };
        assert_eq!(UplinkChange::from_wire(c.to_wire()), Some(c));
        assert_eq!(
            UplinkChange::from_wire(("a".into(), "b".into(), "exploded".into(), String::new())),
            None
        );
    }
}
