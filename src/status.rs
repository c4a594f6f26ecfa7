//! `status` and `plan`: what is in use and what would be, for people and for scripts.
//! Read-only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use tracing::debug;

use crate::config::{self, Config, FirewallChoice as Choice};
use crate::diff;
use crate::error::{Error, Result};
use crate::health::{HealthReport, UplinkHealthReport, nm_connectivity};
use crate::kernel::firewall::{self, Backend, Firewall};
use crate::kernel::routing::Routing;
use crate::model::Family;
use crate::namespace::MAIN_TABLE;
use crate::nm::NetworkManager;
use crate::plan::{self, Plan, Role, Verdicts};
use crate::reconcile::{observe, observe_for, observe_sysctls};
use crate::state::{self, State};
use crate::traffic::{TrafficReport, human_bytes, human_rate};

/// Version of the `status --json` format; bumped only on incompatible changes.
pub const STATUS_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub format: u32,
    /// Whether the kernel holds exactly the plan (routes, rules, chains).
    pub in_sync: bool,
    pub mark_mask: String,
    /// The firewall backend in use: "nftables" or "iptables".
    #[serde(default)]
    pub firewall: String,
    /// Whether IPv6 connections are balanced (config `ipv6`, or automatic).
    pub ipv6: bool,
    pub uplinks: Vec<UplinkStatus>,
    pub warnings: Vec<String>,
    /// The daemon's probes (`null` when no daemon answered): targets, thresholds and,
    /// per uplink, consecutive successes/failures, last RTT and last change.
    #[serde(default)]
    pub health: Option<HealthReport>,
    /// Why the config file is not in use (`null` when it is): everything above then
    /// comes from the configuration named in `using`.
    #[serde(default)]
    pub config_error: Option<ConfigErrorReport>,
    /// What could not be read, and why (a user without `CAP_NET_ADMIN`: the firewall
    /// and conntrack); empty when everything was.
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// The daemon's sampling of the uplinks' byte counters (`null` when no daemon
    /// answered): rates and the last minute of them.
    #[serde(default)]
    pub traffic: Option<TrafficReport>,
    /// The policies, in order, with their hits and live sticky entries.
    #[serde(default)]
    pub policies: Vec<PolicyStatus>,
    /// Router mode: the LANs whose connections to the outside are balanced.
    #[serde(default)]
    pub lans: Vec<LanStatus>,
}

/// A LAN (router mode) as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanStatus {
    pub iface: String,
    pub connection: String,
    /// A NetworkManager shared connection (else named by the config's `lan`).
    pub shared: bool,
    pub networks: Vec<String>,
    /// Tracked connections from it per uplink it leaves through (`null` when
    /// conntrack cannot be read).
    pub forwarded: Option<BTreeMap<String, u64>>,
}

/// One `[[policy]]` as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub name: String,
    /// "balance", "failover" or "direct".
    pub mode: String,
    /// What it does now, in words ("balance over eth0, wlan0", "through usb0",
    /// "general balance (no usable uplink)", "dropped (no usable uplink)", ...), per
    /// family it matches in.
    pub now: Vec<String>,
    /// New connections it matched since the firewall was last installed.
    pub hits: u64,
    /// Destinations it keeps on one uplink now.
    pub sticky: Vec<StickyStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickyStatus {
    pub destination: String,
    pub uplink: String,
    /// Seconds left unless a new connection renews it.
    pub expires_in: u64,
}

/// The policies' part of the report.
pub fn policies(
    config: &Config,
    plan: &Plan,
    counters: &firewall::Counters,
    sticky: &[firewall::StickyEntry],
) -> Vec<PolicyStatus> {
    use crate::kernel::firewall::Action;
    let name_of = |mark: u32| {
        plan.uplinks
            .iter()
            .find(|u| u.mark == mark)
            .map_or_else(|| format!("{mark:#x}"), |u| u.iface.clone())
    };
    config
        .policies()
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let now = plan
                .firewall
                .ladder
                .iter()
                .filter(|r| r.policy() == Some(index))
                .map(|r| {
                    let what = match &r.action {
                        Action::Uplink { iface, .. } => format!("through {iface}"),
                        Action::Balance {
                            members, sticky, ..
                        } => {
                            let names: Vec<String> = members.iter().map(|m| name_of(*m)).collect();
                            match sticky {
                                Some(s) => {
                                    format!("balance over {}, sticky {s} s", names.join(", "))
                                }
                                None => format!("balance over {}", names.join(", ")),
                            }
                        }
                        Action::General => "general balance (no usable uplink)".into(),
                        Action::Direct => "main table (direct)".into(),
                        Action::Drop => "dropped (no usable uplink, fallback = false)".into(),
                    };
                    format!("{}: {what}", r.family)
                })
                .collect();
            PolicyStatus {
                name: p.name.clone(),
                mode: p.mode.name().into(),
                now,
                hits: counters.hits.get(&index).copied().unwrap_or(0),
                sticky: sticky
                    .iter()
                    .filter(|s| s.policy == index)
                    .map(|s| StickyStatus {
                        destination: s.destination.to_string(),
                        uplink: name_of(s.mark),
                        expires_in: s.expires_in,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The policies' section of the status, for people.
pub fn render_policies(policies: &[PolicyStatus]) -> String {
    let mut s = String::from("policies (in order; the first that matches decides):");
    for p in policies {
        let _ = write!(
            s,
            "\n  {:?} ({}): {} new connections; {}",
            p.name,
            p.mode,
            p.hits,
            if p.now.is_empty() {
                "matches nothing now".to_string()
            } else {
                p.now.join("; ")
            }
        );
        for st in &p.sticky {
            let _ = write!(
                s,
                "\n    sticky {} -> {} for {} s more",
                st.destination, st.uplink, st.expires_in
            );
        }
    }
    s
}

/// Part of the status that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// [`UNREADABLE_FIREWALL`] or [`UNREADABLE_CONNTRACK`].
    pub what: String,
    pub why: String,
}

/// Our firewall (nf_tables or iptables): whether it is in sync, and its counters.
pub const UNREADABLE_FIREWALL: &str = "firewall";
/// The connection tracking table: `connections`.
pub const UNREADABLE_CONNTRACK: &str = "conntrack";
const NEEDS_CAP_NET_ADMIN: &str = "needs CAP_NET_ADMIN (root)";

/// A config file that failed to load, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigErrorReport {
    /// The error as logged: `FILE:LINE:COLUMN: KEY: what was found; expects ...`.
    pub message: String,
    pub file: String,
    /// 1-based; `null` when there is no position (an unreadable file).
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key the error is about (`uplinks.wired.weight`), `null` for none.
    pub key: Option<String>,
    /// What is used instead, in words (the last good configuration and where it is
    /// kept, or the defaults).
    pub using: String,
}

impl ConfigErrorReport {
    pub fn new(error: &Error, using: impl Into<String>) -> Self {
        let (file, line, column, key) = match error {
            Error::Config {
                path,
                line,
                column,
                key,
                ..
            } => (
                path.display().to_string(),
                (*line > 0).then_some(*line),
                (*column > 0).then_some(*column),
                key.clone(),
            ),
            Error::ConfigRead { path, .. } => (path.display().to_string(), None, None, None),
            _ => (String::new(), None, None, None),
        };
        ConfigErrorReport {
            message: error.to_string(),
            file,
            line,
            column,
            key,
            using: using.into(),
        }
    }

    /// The error of a configuration that fell back, if it did.
    pub fn from_loaded(loaded: &config::Loaded) -> Option<Self> {
        loaded
            .error
            .as_ref()
            .map(|e| ConfigErrorReport::new(e, loaded.fallback()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub iface: String,
    /// The interface a virtual uplink (macvlan, VLAN) sits on; `null` for others.
    #[serde(default)]
    pub parent: Option<String>,
    pub connection: String,
    pub connection_uuid: String,
    /// IPv4 address/prefix; `null` for an uplink with IPv6 only.
    pub address: Option<String>,
    /// IPv4 gateway; `null` on point-to-point links and IPv6-only uplinks.
    pub gateway: Option<String>,
    /// IPv6 address/prefix; `null` when the uplink has no IPv6 default route.
    pub address6: Option<String>,
    /// IPv6 gateway, often the router's link-local address.
    pub gateway6: Option<String>,
    /// Whether the uplink takes part in IPv6 balancing.
    pub ipv6_balanced: bool,
    pub mark: String,
    pub table: u32,
    pub weight: u32,
    /// `primary`, `backup` (new connections only while no primary is usable) or
    /// `never` (a metered uplink with `metered = "never"`).
    #[serde(default = "primary")]
    pub role: Role,
    /// NetworkManager calls it metered.
    #[serde(default)]
    pub metered: bool,
    /// Whether new connections are given to it right now (in at least one family).
    pub in_balance: bool,
    /// Health verdict: `null` when no daemon probes, else true/false.
    pub healthy: Option<bool>,
    /// Tracked connections carrying this uplink's mark, both families (`null` without
    /// conntrack).
    pub connections: Option<u64>,
    /// The IPv6 part of `connections`.
    pub connections6: Option<u64>,
    /// New connections the nth rounds gave it since the chains were last rebuilt, both
    /// families.
    pub new_connections: u64,
    /// The IPv6 part of `new_connections`.
    pub new_connections6: u64,
    /// Interface byte counters.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Bytes per second received over the last second, when a daemon samples the
    /// counters (`null` otherwise).
    #[serde(default)]
    pub rx_rate: Option<u64>,
    /// Bytes per second sent, likewise.
    #[serde(default)]
    pub tx_rate: Option<u64>,
    /// NetworkManager's connectivity check for the device ("full", "limited", "none",
    /// "portal", "unknown"); `null` when the check is off.
    #[serde(default)]
    pub nm_connectivity: Option<String>,
}

/// The plan as it would be applied now, computed from live facts, with the backend
/// that would apply it and whether the kernel holds it. Writes nothing. Without
/// `CAP_NET_ADMIN` the firewall cannot be read: whether the kernel holds the plan is
/// then judged on routes, rules and sysctls alone.
pub async fn current_plan(
    config: &Config,
    health: &Verdicts,
) -> Result<(Plan, Box<dyn Firewall>, bool)> {
    let nm = NetworkManager::connect().await?;
    let c = current(config, health, &nm, crate::privilege::has_net_admin()).await?;
    Ok((c.plan, c.fw, c.in_sync))
}

/// The plan as it would be applied now, with what it was made from.
pub struct Current {
    pub plan: Plan,
    pub fw: Box<dyn Firewall>,
    /// Whether the kernel holds exactly the plan.
    pub in_sync: bool,
    pub facts: plan::Facts,
    pub routing: crate::kernel::routing::RoutingState,
    /// Why the configuration given was refused by the facts (a policy names an
    /// uplink nobody knows); the plan is then the last good configuration's.
    pub refused: Option<Error>,
}

/// Reads NetworkManager and the kernel and plans, writing nothing.
pub async fn current(
    config: &Config,
    health: &Verdicts,
    nm: &NetworkManager,
    privileged: bool,
) -> Result<Current> {
    let state = State::load(&state::run_dir());
    let fw = firewall::backend(backend_for(config.firewall, privileged, &state));
    if privileged {
        fw.prefetch();
    }
    let routing = Routing::connect().await?;
    let view = observe(config, nm, &routing, &state, health).await?;
    // A configuration the facts refuse is not what runs: the last good one is (see
    // `reconcile::reconcile_or`), so that is the plan to show.
    let refused = crate::reconcile::check_policy_uplinks(config, nm, &view.known)
        .await
        .err();
    let fallback;
    let config = if refused.is_some() {
        fallback = config::last_good_or_defaults(&state::run_dir()).0;
        &fallback
    } else {
        config
    };
    let plan = plan::plan(config, &view.facts);
    let mut observed = view.observed;
    if privileged {
        observe_for(&plan, &mut observed, fw.as_ref(), &state)?;
    } else {
        observe_sysctls(&plan, &mut observed, &state);
        // Not readable: it counts as holding the plan, and the report says so.
        observed.firewall_current = true;
    }
    let in_sync = diff::diff(&plan, &observed).is_empty();
    Ok(Current {
        plan,
        fw,
        in_sync,
        facts: view.facts,
        routing: view.routing,
        refused,
    })
}

/// The backend `choice` means here. Without the privilege to ask the kernel whether
/// it has nf_tables, `auto` is the backend the last run recorded.
fn backend_for(choice: Choice, privileged: bool, state: &State) -> Backend {
    if !privileged
        && choice == Choice::Auto
        && let Some(recorded) = state.firewall.as_ref().filter(|s| s.len() == 1)
    {
        return *recorded.iter().next().expect("one");
    }
    firewall::resolve(choice)
}

/// Reads the live state. `health` holds the verdicts of a running daemon (empty
/// without one: every uplink then counts as healthy and `healthy` is `null`).
/// Without `CAP_NET_ADMIN` the firewall and conntrack are left out and listed in
/// `unreadable`; everything else (NetworkManager, routes, rules, counters) needs no
/// privilege.
pub async fn gather(config: &Config, health: &Verdicts) -> Result<StatusReport> {
    let privileged = crate::privilege::has_net_admin();
    let nm = NetworkManager::connect().await?;
    let Current {
        plan,
        fw,
        in_sync,
        refused,
        ..
    } = current(config, health, &nm, privileged).await?;
    let mut unreadable = Vec::new();
    let (counters, sticky, conns, conns6) = if privileged {
        (
            fw.counters().unwrap_or_default(),
            fw.sticky(&plan.firewall).unwrap_or_default(),
            conntrack_by_id(config, Family::V4).await,
            conntrack_by_id(config, Family::V6).await,
        )
    } else {
        for what in [UNREADABLE_CONNTRACK, UNREADABLE_FIREWALL] {
            unreadable.push(Unreadable {
                what: what.into(),
                why: NEEDS_CAP_NET_ADMIN.into(),
            });
        }
        (firewall::Counters::default(), Vec::new(), None, None)
    };
    let policies = policies(config, &plan, &counters, &sticky);
    let forwarded = if privileged && !plan.lans.is_empty() {
        forwarded_by_lan(&plan).await
    } else {
        None
    };
    let lans = plan
        .lans
        .iter()
        .map(|l| LanStatus {
            iface: l.iface.clone(),
            connection: l.connection_id.clone(),
            shared: l.shared,
            networks: l.networks.iter().map(|n| n.to_string()).collect(),
            forwarded: forwarded
                .as_ref()
                .map(|f| f.get(&l.iface).cloned().unwrap_or_default()),
        })
        .collect();
    let connectivity = nm.checked_connectivity().await.unwrap_or_else(|e| {
        debug!("cannot read NetworkManager's connectivity: {e}");
        None
    });
    let ns = plan.namespace;
    let uplinks = plan
        .uplinks
        .iter()
        .map(|u| {
            let count = |c: &Option<BTreeMap<u32, u64>>| {
                c.as_ref().map(|c| c.get(&u.id).copied().unwrap_or(0))
            };
            let placed = |f| counters.placed.get(&(f, u.mark)).copied().unwrap_or(0);
            let (new4, new6) = (placed(Family::V4), placed(Family::V6));
            let (c4, c6) = (count(&conns), count(&conns6));
            let bytes = crate::traffic::read_counters(&u.iface).unwrap_or_default();
            UplinkStatus {
                iface: u.iface.clone(),
                parent: crate::split::parent_of(&u.iface),
                connection: u.connection_id.clone(),
                connection_uuid: u.connection_uuid.clone(),
                address: u
                    .ipv4
                    .as_ref()
                    .map(|v4| format!("{}/{}", v4.address, v4.subnet.prefix())),
                gateway: u
                    .ipv4
                    .as_ref()
                    .and_then(|v4| v4.gateway)
                    .map(|g| g.to_string()),
                address6: u
                    .ipv6
                    .as_ref()
                    .map(|v6| format!("{}/{}", v6.address, v6.subnet.prefix())),
                gateway6: u
                    .ipv6
                    .as_ref()
                    .and_then(|v6| v6.gateway)
                    .map(|g| g.to_string()),
                ipv6_balanced: u.ipv6_balanced,
                mark: format!("{:#x}/{:#x}", u.mark, ns.mark_mask),
                table: u.table,
                weight: u.weight,
                role: u.role,
                metered: u.metered,
                in_balance: u.in_balance,
                healthy: health
                    .get(&u.iface)
                    .map(|v| (u.ipv4.is_none() || v.ipv4) && (!u.ipv6_balanced || v.ipv6)),
                connections: c4.map(|c4| c4 + c6.unwrap_or(0)),
                connections6: c6,
                new_connections: new4 + new6,
                new_connections6: new6,
                rx_bytes: bytes.rx_bytes,
                tx_bytes: bytes.tx_bytes,
                rx_rate: None,
                tx_rate: None,
                nm_connectivity: connectivity.as_ref().map(|c| {
                    nm_connectivity::name(c.get(&u.iface).copied().unwrap_or(0)).to_string()
                }),
            }
        })
        .collect();
    Ok(StatusReport {
        format: STATUS_FORMAT,
        in_sync,
        mark_mask: format!("{:#x}", ns.mark_mask),
        firewall: fw.backend().to_string(),
        ipv6: plan.ipv6,
        uplinks,
        warnings: plan.warnings,
        health: None,
        config_error: refused.map(|e| ConfigErrorReport::new(&e, "the last good configuration")),
        unreadable,
        traffic: None,
        policies,
        lans,
    })
}

/// Tracked connections from each LAN (its networks as original source) per uplink
/// whose mark they carry; `None` when conntrack cannot be read.
async fn forwarded_by_lan(plan: &Plan) -> Option<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut ct = crate::kernel::conntrack::Conntrack::open().ok()?;
    let entries = ct
        .dump(&crate::kernel::conntrack::Filter::default())
        .await
        .ok()?;
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = plan
        .lans
        .iter()
        .map(|l| (l.iface.clone(), BTreeMap::new()))
        .collect();
    for e in entries {
        let Some(lan) = plan
            .lans
            .iter()
            .find(|l| l.networks.iter().any(|n| n.contains(e.orig.src)))
        else {
            continue;
        };
        let id = e.mark & plan.namespace.id_mask();
        let Some(u) = plan.uplinks.iter().find(|u| u.mark == id) else {
            continue;
        };
        *out.entry(lan.iface.clone())
            .or_default()
            .entry(u.iface.clone())
            .or_default() += 1;
    }
    Some(out)
}

impl StatusReport {
    /// Adds sampled traffic: the `traffic` section and each uplink's current rates.
    pub fn with_traffic(mut self, traffic: TrafficReport) -> Self {
        for u in &mut self.uplinks {
            let t = traffic.uplinks.get(&u.iface);
            u.rx_rate = t.map(|t| t.rx_rate);
            u.tx_rate = t.map(|t| t.tx_rate);
        }
        self.traffic = Some(traffic);
        self
    }

    /// Whether part of the report could not be read.
    pub fn could_not_read(&self, what: &str) -> bool {
        self.unreadable.iter().any(|u| u.what == what)
    }
}

fn primary() -> Role {
    Role::Primary
}

/// Tracked connections of one family per uplink id (both directions), read over
/// netlink; `None` when conntrack cannot be read (no privilege, no conntrack).
async fn conntrack_by_id(config: &Config, family: Family) -> Option<BTreeMap<u32, u64>> {
    let ns = config.namespace();
    let mut ct = crate::kernel::conntrack::Conntrack::open().ok()?;
    let counts = ct.count_by_mark(Some(family), ns.id_mask()).await.ok()?;
    let mut by_id = BTreeMap::new();
    for (mark, n) in counts {
        if let Some(m) = ns.decode(mark) {
            *by_id.entry(m.id).or_insert(0) += n;
        }
    }
    Some(by_id)
}

/// Renders rows as an aligned table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(&mut s, header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(&mut s, r.clone());
    }
    s
}

/// An uplink's health as one cell and its round-trip time, from the freshest source:
/// the daemon's verdict, else NetworkManager's connectivity check, else `-`. An uplink
/// down in some of its families only says which (`DOWN (IPv6)`). The RTT (the median
/// of the window, else the last answer's) is shown while the probes answer: an old
/// figure for a dead uplink misleads, but a slow or lossy one's is why it is out.
pub fn health_cells(r: &StatusReport, u: &UplinkStatus) -> (String, String) {
    let probed = r.health.as_ref().and_then(|h| h.uplinks.get(&u.iface));
    match probed {
        // Tracked but neither probed (probing off) nor checked by NetworkManager:
        // no figure at all.
        Some(h) if h.rounds > 0 || h.nm_connectivity.is_some() => {
            let health = down_families(h).map_or_else(
                || "ok".to_string(),
                |down| match down.as_slice() {
                    [] => "DOWN".to_string(),
                    some => format!("DOWN ({})", some.join(", ")),
                },
            );
            let answering = if h.healthy {
                true
            } else {
                h.reason.as_deref().is_some_and(|r| {
                    ["lossy", "slow", "recovering"]
                        .iter()
                        .any(|w| r.contains(&format!(": {w}:")))
                })
            };
            let rtt = match h.median_rtt_ms.or(h.last_rtt_ms) {
                Some(ms) if answering => format!("{ms:.1} ms"),
                _ => "-".into(),
            };
            (health, rtt)
        }
        _ => {
            let health = match u.nm_connectivity.as_deref() {
                Some("full") => "ok",
                Some("limited" | "none") => "DOWN",
                Some("portal") => "portal",
                _ => "-",
            };
            (health.into(), "-".into())
        }
    }
}

/// `None` for a healthy uplink; else the families it is down in when that is not
/// all of its probed families (empty: all of them, or NetworkManager's verdict).
fn down_families(h: &UplinkHealthReport) -> Option<Vec<String>> {
    if h.healthy {
        return None;
    }
    let down: Vec<String> = h
        .families
        .iter()
        .filter(|(_, f)| !f.healthy)
        .map(|(family, _)| family.to_string())
        .collect();
    Some(if down.len() == h.families.len() {
        Vec::new()
    } else {
        down
    })
}

/// Whether new connections go to an uplink: `active` (all of them do when every uplink
/// is down, hence the health beside it), `standby` (a backup waiting for the primaries
/// to fail) or `out`.
pub fn state_cell(u: &UplinkStatus) -> &'static str {
    match (u.in_balance, u.role, u.healthy) {
        (true, _, _) => "active",
        (false, Role::Backup, h) if h != Some(false) => "standby",
        (false, _, _) => "out",
    }
}

/// An uplink's role as the table shows it: `backup (metered)`.
fn role_cell(u: &UplinkStatus) -> String {
    match (u.role, u.metered) {
        (role, true) => format!("{} (metered)", role.name()),
        (role, false) => role.name().to_string(),
    }
}

/// The status table for people: one row per uplink, health and traffic included.
pub fn render(r: &StatusReport) -> String {
    // A broken config file comes first: everything below is from another configuration.
    let mut s = match &r.config_error {
        Some(e) => format!(
            "CONFIG ERROR: {}\n  nm-multiwan goes on with {}; fix the file, then \
             `nm-multiwan apply` (or reload the daemon)\n\n",
            e.message, e.using
        ),
        None => String::new(),
    };
    if r.uplinks.is_empty() {
        s.push_str("no uplinks: no active NetworkManager device has an IPv4 or IPv6 default route");
        return s;
    }
    // Rates when a daemon samples the counters, totals since the interface came up
    // otherwise; the IPv6 column only when IPv6 is balanced.
    let rates = r.traffic.is_some();
    let ipv6 = r.ipv6;
    let mut header = vec![
        "IFACE",
        "CONNECTION",
        "STATE",
        "ROLE",
        "HEALTH",
        "RTT",
        "CONNS",
    ];
    header.extend(if rates {
        ["DOWNLOAD", "UPLOAD"]
    } else {
        ["RECEIVED", "SENT"]
    });
    header.push("GATEWAY");
    if ipv6 {
        header.push("IPV6");
    }
    header.extend(["WEIGHT", "MARK", "TABLE"]);
    let rows: Vec<Vec<String>> = r
        .uplinks
        .iter()
        .map(|u| {
            let (health, rtt) = health_cells(r, u);
            let mut row = vec![
                match &u.parent {
                    Some(p) => format!("{} (on {p})", u.iface),
                    None => u.iface.clone(),
                },
                u.connection.clone(),
                state_cell(u).to_string(),
                role_cell(u),
                health,
                rtt,
                u.connections.map_or_else(|| "-".into(), |c| c.to_string()),
            ];
            if rates {
                let rate = |r: Option<u64>| r.map_or_else(|| "-".into(), human_rate);
                row.extend([rate(u.rx_rate), rate(u.tx_rate)]);
            } else {
                row.extend([human_bytes(u.rx_bytes), human_bytes(u.tx_bytes)]);
            }
            row.push(u.gateway.clone().unwrap_or_else(|| "-".into()));
            if ipv6 {
                row.push(match (&u.address6, u.ipv6_balanced) {
                    (Some(a), true) => a.split('/').next().unwrap_or("").to_string(),
                    (Some(_), false) => "(off)".into(),
                    (None, _) => "-".into(),
                });
            }
            row.extend([
                u.weight.to_string(),
                u.mark.split('/').next().unwrap_or("").to_string(),
                u.table.to_string(),
            ]);
            row
        })
        .collect();
    s += &table(&header, &rows);
    let firewall_unread = r.could_not_read(UNREADABLE_FIREWALL);
    let _ = write!(
        s,
        "{}",
        match (r.in_sync, firewall_unread) {
            (true, false) => "kernel state: in sync",
            (true, true) => "kernel state: routes and rules in sync (the firewall was not read)",
            (false, _) => "kernel state: OUT OF SYNC (run `nm-multiwan apply`)",
        }
    );
    let _ = write!(s, "\n{}", health_line(r, std::time::SystemTime::now()));
    let _ = write!(s, "\n{}", traffic_line(r));
    if !r.unreadable.is_empty() {
        let _ = write!(s, "\n{}", unreadable_line(&r.unreadable));
    }
    if !r.policies.is_empty() {
        let _ = write!(s, "\n{}", render_policies(&r.policies));
    }
    for l in &r.lans {
        let _ = write!(s, "\n{}", lan_line(l));
    }
    if !r.ipv6 && r.uplinks.iter().any(|u| u.address6.is_some()) {
        let _ = write!(
            s,
            "\nipv6: not balanced (config `ipv6 = false`, or fewer than two IPv6 uplinks)"
        );
    }
    for w in &r.warnings {
        let _ = write!(s, "\nwarning: {w}");
    }
    s
}

/// A LAN in one line: what it is and the connections it has through each uplink.
fn lan_line(l: &LanStatus) -> String {
    let kind = if l.shared { "shared" } else { "routed" };
    let mut s = format!(
        "lan {} ({}, {kind}): {}",
        l.iface,
        l.connection,
        l.networks.join(", ")
    );
    match &l.forwarded {
        None => s.push_str("; forwarded connections: - (conntrack not read)"),
        Some(f) if f.is_empty() => s.push_str("; no forwarded connections"),
        Some(f) => {
            let per: Vec<String> = f.iter().map(|(u, n)| format!("{u} {n}")).collect();
            let _ = write!(s, "; forwarded connections: {}", per.join(", "));
        }
    }
    s
}

/// Where the HEALTH column comes from, and a line per uplink that is down saying why.
fn health_line(r: &StatusReport, now: std::time::SystemTime) -> String {
    let Some(h) = &r.health else {
        return if r.uplinks.iter().any(|u| u.nm_connectivity.is_some()) {
            "health: NetworkManager's connectivity check (no daemon probes the uplinks)".into()
        } else {
            "health: - (no daemon probes the uplinks; NetworkManager's connectivity check is off)"
                .into()
        };
    };
    let mut s = render_health(h);
    for u in &r.uplinks {
        if let Some(d) = h.uplinks.get(&u.iface).filter(|d| !d.healthy) {
            let _ = write!(s, "\n  {}", down_detail(&u.iface, d, now));
        }
    }
    s
}

/// Why an uplink is down, in one line.
fn down_detail(iface: &str, d: &UplinkHealthReport, now: std::time::SystemTime) -> String {
    let now = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let ago = (now - d.last_change).max(0.0);
    let mut why = Vec::new();
    match &d.reason {
        Some(r) => why.push(r.clone()),
        None if !d.probes_healthy || d.consecutive_failures > 1 => why.push(format!(
            "{} probes unanswered in a row",
            d.consecutive_failures
        )),
        None => {}
    }
    if let Some(e) = &d.last_error {
        why.push(e.clone());
    }
    if let Some(c) = &d.nm_connectivity
        && (c == "none" || c == "limited")
    {
        why.push(format!("NetworkManager says connectivity {c}"));
    }
    let down = match down_families(d).as_deref() {
        Some([]) | None => "DOWN".to_string(),
        Some(some) => format!("DOWN ({})", some.join(", ")),
    };
    format!("{iface}: {down} for {ago:.0} s: {}", why.join("; "))
}

/// What the traffic columns show.
fn traffic_line(r: &StatusReport) -> String {
    match &r.traffic {
        Some(t) => {
            let sum = |f: fn(&UplinkStatus) -> Option<u64>| -> u64 {
                r.uplinks.iter().filter_map(f).sum()
            };
            format!(
                "traffic: {} down, {} up in all (rates over the last {} s, sampled by the \
                 daemon)",
                human_rate(sum(|u| u.rx_rate)),
                human_rate(sum(|u| u.tx_rate)),
                t.interval_ms as f64 / 1000.0
            )
        }
        None => "traffic: totals since each interface came up (rates: with the daemon \
                 running, or `nm-multiwan top`)"
            .into(),
    }
}

/// The one line naming what could not be read, and why.
fn unreadable_line(unreadable: &[Unreadable]) -> String {
    let shown: Vec<&str> = unreadable
        .iter()
        .map(|u| match u.what.as_str() {
            UNREADABLE_CONNTRACK => "tracked connections (CONNS)",
            UNREADABLE_FIREWALL => "whether the firewall is in sync",
            other => other,
        })
        .collect();
    let mut whys: Vec<&str> = unreadable.iter().map(|u| u.why.as_str()).collect();
    whys.dedup();
    if whys == [NEEDS_CAP_NET_ADMIN] {
        format!(
            "not shown without root: {} (they need CAP_NET_ADMIN; a running daemon shows \
             them)",
            shown.join(", ")
        )
    } else {
        format!("not shown: {} ({})", shown.join(", "), whys.join("; "))
    }
}

/// The daemon's probe settings, for people.
pub fn render_health(h: &HealthReport) -> String {
    format!(
        "health: probes to {} every {} ms; out after {} unanswered, above {}% loss or \
         {} ms median round trip (last {} probes); back after {} answered",
        if h.targets.is_empty() {
            "nothing (probing off)".to_string()
        } else {
            h.targets.join(", ")
        },
        h.interval_ms,
        h.down_after,
        h.max_loss,
        h.max_rtt_ms,
        h.window,
        h.up_after
    )
}

/// The plan for people; `firewall` is the firewall as the backend renders it.
pub fn render_plan(p: &Plan, backend: firewall::Backend, firewall: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# uplinks (mark mask {:#x}, tables {}+id, rule priorities {}-{})",
        p.namespace.mark_mask,
        p.namespace.table_base,
        p.namespace.rule_priority,
        p.namespace.rule_priority + 2
    );
    for u in &p.uplinks {
        let _ = writeln!(
            s,
            "#  {} ({}): id {} mark {:#x} inbound {:#x} table {} weight {}{}",
            u.iface,
            u.connection_id,
            u.id,
            u.mark,
            u.inbound_mark,
            u.table,
            u.weight,
            if u.in_balance {
                ""
            } else {
                " (out of balance)"
            }
        );
        if let Some(v4) = &u.ipv4 {
            let via = v4.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let _ = writeln!(s, "#    ipv4 {}/{}{via}", v4.address, v4.subnet.prefix());
        }
        if let Some(v6) = &u.ipv6 {
            let via = v6.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let off = if u.ipv6_balanced {
                ""
            } else {
                " (IPv6 not balanced)"
            };
            let _ = writeln!(
                s,
                "#    ipv6 {}/{}{via}{off}",
                v6.address,
                v6.subnet.prefix()
            );
        }
    }
    let _ = writeln!(s, "# ipv6 balancing: {}", if p.ipv6 { "on" } else { "off" });
    let _ = writeln!(s, "# routes");
    for r in &p.routes {
        let ip = match r.family() {
            Family::V4 => "ip",
            Family::V6 => "ip -6",
        };
        let mut line = format!("{ip} route replace {} ", r.dst);
        if let Some(gw) = r.gateway {
            let _ = write!(line, "via {gw} ");
        }
        let _ = write!(line, "dev {} table {}", r.oif, r.table);
        if let Some(src) = r.prefsrc {
            let _ = write!(line, " src {src}");
        }
        if r.scope_link {
            line.push_str(" scope link");
        }
        if r.onlink {
            line.push_str(" onlink");
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "# rules");
    for r in &p.rules {
        let target = if r.table == MAIN_TABLE {
            "main".to_string()
        } else {
            r.table.to_string()
        };
        let suppress = r
            .suppress_prefixlength
            .map(|n| format!(" suppress_prefixlength {n}"))
            .unwrap_or_default();
        let iif = r
            .iif
            .as_ref()
            .map(|i| format!(" iif {i}"))
            .unwrap_or_default();
        let ip = match r.family {
            Family::V4 => "ip",
            Family::V6 => "ip -6",
        };
        let _ = writeln!(
            s,
            "{ip} rule add priority {} fwmark {:#x}/{:#x}{iif} lookup {target}{suppress}",
            r.priority, r.fwmark, r.fwmask
        );
    }
    let _ = writeln!(s, "# sysctls");
    for c in &p.sysctls {
        let _ = writeln!(s, "net.ipv4.conf.{}.{} = {}", c.iface, c.name, c.value);
    }
    for a in &p.keep {
        let _ = writeln!(s, "# keep departed address {a} on nmmw0");
    }
    if !p.firewall.ladder.is_empty() {
        let _ = writeln!(s, "# ladder (rungs 3-5, first match wins; then the rounds)");
        for r in &p.firewall.ladder {
            let _ = writeln!(s, "#  {}", describe_rung(r));
        }
    }
    let _ = writeln!(s, "# firewall ({backend})");
    s.push_str(firewall);
    for w in &p.warnings {
        let _ = writeln!(s, "# warning: {w}");
    }
    s
}

/// A rung in one line: family, who chose, what it matches, what it does.
pub fn describe_rung(r: &crate::kernel::firewall::Rung) -> String {
    use crate::kernel::firewall::{Action, Why};
    let who = match &r.why {
        Why::BoundSource { iface } => format!("bound source of {iface}"),
        Why::BoundDevice { iface } => format!("bound to device {iface}"),
        Why::Via { iface } => format!("run --via {iface}"),
        Why::Dns { iface } => format!("name servers of {iface}"),
        Why::Policy { index, name } => format!("policy {index} {name:?}"),
    };
    let m = &r.matches;
    let mut what = Vec::new();
    if !m.sources.is_empty() {
        what.push(format!("from {}", join(&m.sources)));
    }
    if let Some(o) = &m.oif {
        what.push(format!("routed out of {o}"));
    }
    if let Some(c) = &m.cgroup {
        what.push(format!("cgroup {}", c.path));
    }
    if let Some(u) = m.uid {
        what.push(format!("uid {u}"));
    }
    if !m.destinations.is_empty() {
        what.push(format!("to {}", join(&m.destinations)));
    }
    if !m.protocols.is_empty() {
        what.push(format!("protocol {}", join(&m.protocols)));
    }
    if !m.ports.is_empty() {
        let ports: Vec<String> = m
            .ports
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        what.push(format!("port {}", ports.join(",")));
    }
    let action = match &r.action {
        Action::Uplink { iface, .. } => format!("through {iface}"),
        Action::Balance { rounds, sticky, .. } => {
            let slots = rounds.first().map_or(0, |r| r.slots.len());
            match sticky {
                Some(s) => format!("own round of {slots}, sticky {s} s"),
                None => format!("own round of {slots}"),
            }
        }
        Action::General => "the general round".into(),
        Action::Direct => "main table".into(),
        Action::Drop => "drop".into(),
    };
    format!(
        "{} {who}: {} -> {action}",
        r.family,
        if what.is_empty() {
            "everything".to_string()
        } else {
            what.join(" ")
        }
    )
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::UplinkHealthReport;
    use crate::traffic::UplinkTraffic;

    fn report(uplinks: Vec<UplinkStatus>) -> StatusReport {
        StatusReport {
            format: STATUS_FORMAT,
            in_sync: true,
            mark_mask: "0x3f000000".into(),
            firewall: "nftables".into(),
            ipv6: false,
            uplinks,
            warnings: vec![],
            health: None,
            config_error: None,
            unreadable: vec![],
            traffic: None,
            policies: vec![],
            lans: vec![],
        }
    }

    fn uplink(iface: &str, parent: Option<&str>) -> UplinkStatus {
        UplinkStatus {
            iface: iface.into(),
            parent: parent.map(str::to_string),
            connection: iface.into(),
            connection_uuid: String::new(),
            address: None,
            gateway: None,
            address6: None,
            gateway6: None,
            ipv6_balanced: false,
            mark: "0x1000000/0x3f000000".into(),
            table: 6101,
            weight: 1,
            role: Role::Primary,
            metered: false,
            in_balance: true,
            healthy: None,
            connections: None,
            connections6: None,
            new_connections: 0,
            new_connections6: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_rate: None,
            tx_rate: None,
            nm_connectivity: None,
        }
    }

    fn probed(healthy: bool, rtt: f64, failures: u32, last_change: f64) -> UplinkHealthReport {
        UplinkHealthReport {
            healthy,
            probes_healthy: healthy,
            consecutive_successes: if healthy { 118 } else { 0 },
            consecutive_failures: failures,
            last_rtt_ms: Some(rtt),
            last_change,
            last_error: None,
            nm_connectivity: None,
            rounds: 120,
            rounds_failed: u64::from(failures),
            reason: (!healthy)
                .then(|| format!("IPv4: dead: no answer to the last {failures} probes")),
            loss_percent: Some(0.0),
            median_rtt_ms: None,
            times_out: u64::from(!healthy),
            families: BTreeMap::new(),
        }
    }

    /// The table's header line.
    fn header(text: &str) -> Vec<&str> {
        text.lines()
            .find(|l| l.starts_with("IFACE"))
            .unwrap_or_else(|| panic!("no header in\n{text}"))
            .split_whitespace()
            .collect()
    }

    /// The cells of `iface`'s row (cells hold no double spaces).
    fn row<'a>(text: &'a str, iface: &str) -> Vec<&'a str> {
        text.lines()
            .find(|l| l.starts_with(&format!("{iface} ")))
            .unwrap_or_else(|| panic!("no row {iface} in\n{text}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn table_aligns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn empty_status_says_why() {
        assert!(render(&report(vec![])).contains("no uplinks"));
    }

    #[test]
    fn with_the_daemon_one_table_holds_health_and_rates() {
        let mut eth0 = uplink("eth0", None);
        eth0.connection = "Wired connection 1".into();
        eth0.connections = Some(14);
        eth0.new_connections = 31;
        let mut wlan0 = uplink("wlan0", None);
        wlan0.connection = "campus-wifi".into();
        wlan0.in_balance = false;
        wlan0.connections = Some(2);
        let mut r = report(vec![eth0, wlan0]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        r.health = Some(HealthReport {
            targets: vec!["198.51.100.10".into()],
            interval_ms: 500,
            down_after: 3,
            up_after: 3,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            uplinks: BTreeMap::from([
                ("eth0".to_string(), probed(true, 11.8, 0, now - 300.0)),
                // Its last answer long ago: no RTT shown.
                ("wlan0".to_string(), probed(false, 0.42, 9, now - 9.0)),
            ]),
        });
        let t = |rx, tx| UplinkTraffic {
            rx_rate: rx,
            tx_rate: tx,
            rx_history: vec![rx],
            tx_history: vec![tx],
        };
        let r = r.with_traffic(TrafficReport {
            interval_ms: 1000,
            uplinks: BTreeMap::from([
                ("eth0".to_string(), t(1_175_000, 26_250)),
                ("wlan0".to_string(), t(0, 0)),
            ]),
        });
        let text = render(&r);
        assert_eq!(
            header(&text),
            [
                "IFACE",
                "CONNECTION",
                "STATE",
                "ROLE",
                "HEALTH",
                "RTT",
                "CONNS",
                "DOWNLOAD",
                "UPLOAD",
                "GATEWAY",
                "WEIGHT",
                "MARK",
                "TABLE"
            ],
            "{text}"
        );
        assert_eq!(
            row(&text, "eth0")[..9],
            [
                "eth0",
                "Wired connection 1",
                "active",
                "primary",
                "ok",
                "11.8 ms",
                "14",
                "9.4 Mbit/s",
                "210 kbit/s"
            ],
            "{text}"
        );
        assert_eq!(
            row(&text, "wlan0")[..9],
            [
                "wlan0",
                "campus-wifi",
                "out",
                "primary",
                "DOWN",
                "-",
                "2",
                "0 bit/s",
                "0 bit/s"
            ],
            "{text}"
        );
        assert!(
            text.contains("health: probes to 198.51.100.10 every 500 ms"),
            "{text}"
        );
        assert!(
            text.contains("\n  wlan0: DOWN for 9 s: IPv4: dead: no answer to the last 9 probes"),
            "{text}"
        );
        assert!(
            text.contains("traffic: 9.4 Mbit/s down, 210 kbit/s up in all"),
            "{text}"
        );
        assert!(!text.contains("not shown"), "{text}");
        // Machine-readable: the rates, and the counter the table no longer shows.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["uplinks"][0]["rx_rate"], 1_175_000);
        assert_eq!(json["uplinks"][0]["new_connections"], 31);
        assert_eq!(
            json["traffic"]["uplinks"]["eth0"]["rx_history"][0],
            1_175_000
        );
        assert_eq!(json["unreadable"], serde_json::json!([]));
    }

    fn family(healthy: bool, reason: Option<&str>) -> crate::health::FamilyReport {
        crate::health::FamilyReport {
            source: "192.0.2.7".into(),
            healthy,
            probes_healthy: healthy,
            reason: reason.map(str::to_string),
            unanswered: 0,
            answered_in_a_row: 40,
            last_rtt_ms: Some(12.0),
            median_rtt_ms: Some(12.0),
            loss_percent: Some(0.0),
            window_samples: 100,
            sent: 200,
            lost: 0,
            last_error: None,
        }
    }

    #[test]
    fn roles_families_and_quality_show_in_the_table() {
        let eth0 = uplink("eth0", None);
        let mut usb0 = uplink("usb0", None);
        (usb0.role, usb0.metered, usb0.in_balance, usb0.healthy) =
            (Role::Backup, true, false, Some(true));
        let mut wlan0 = uplink("wlan0", None);
        (wlan0.in_balance, wlan0.healthy) = (false, Some(false));
        let mut lte0 = uplink("lte0", None);
        (lte0.in_balance, lte0.healthy) = (true, Some(false));
        let mut r = report(vec![eth0, usb0, wlan0, lte0]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // wlan0 answers late: out, with its round trip shown; lte0 lost its IPv6 only.
        let mut slow = probed(false, 1480.0, 1, now - 20.0);
        slow.reason = Some("IPv4: slow: median round trip 1502 ms (out above 1000 ms)".into());
        slow.median_rtt_ms = Some(1502.0);
        let mut v6_down = probed(false, 30.0, 0, now - 5.0);
        v6_down.reason = Some("IPv6: dead: no answer to the last 7 probes".into());
        v6_down.families = BTreeMap::from([
            (Family::V4, family(true, None)),
            (
                Family::V6,
                family(false, Some("dead: no answer to the last 7 probes")),
            ),
        ]);
        r.health = Some(HealthReport {
            targets: vec!["198.51.100.10".into(), "2001:db8:100::10".into()],
            interval_ms: 250,
            down_after: 5,
            up_after: 12,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            uplinks: BTreeMap::from([
                ("eth0".to_string(), probed(true, 11.8, 0, now - 300.0)),
                ("usb0".to_string(), probed(true, 48.2, 0, now - 300.0)),
                ("wlan0".to_string(), slow),
                ("lte0".to_string(), v6_down),
            ]),
        });
        let text = render(&r);
        let cells = |iface| row(&text, iface)[2..6].to_vec();
        assert_eq!(
            cells("eth0"),
            ["active", "primary", "ok", "11.8 ms"],
            "{text}"
        );
        assert_eq!(
            cells("usb0"),
            ["standby", "backup (metered)", "ok", "48.2 ms"],
            "{text}"
        );
        assert_eq!(
            cells("wlan0"),
            ["out", "primary", "DOWN", "1502.0 ms"],
            "{text}"
        );
        assert_eq!(
            cells("lte0"),
            ["active", "primary", "DOWN (IPv6)", "-"],
            "{text}"
        );
        assert!(
            text.contains("\n  wlan0: DOWN for 20 s: IPv4: slow: median round trip 1502 ms"),
            "{text}"
        );
        assert!(
            text.contains("\n  lte0: DOWN (IPv6) for 5 s: IPv6: dead: no answer"),
            "{text}"
        );
        assert!(
            text.contains(
                "every 250 ms; out after 5 unanswered, above 20% loss or 1000 ms median round \
                 trip (last 100 probes); back after 12 answered"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["uplinks"][1]["role"], "backup");
        assert_eq!(json["uplinks"][1]["metered"], true);
        // A report without the fields (an older daemon's) reads as a primary.
        let mut v = json.clone();
        for k in ["role", "metered"] {
            v["uplinks"][1].as_object_mut().unwrap().remove(k);
        }
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(
            (back.uplinks[1].role, back.uplinks[1].metered),
            (Role::Primary, false)
        );
    }

    #[test]
    fn without_the_daemon_totals_and_networkmanagers_check_and_what_is_unreadable() {
        let mut eth0 = uplink("eth0", None);
        eth0.rx_bytes = 1_288_490_188;
        eth0.tx_bytes = 42_048_716;
        eth0.nm_connectivity = Some("full".into());
        let mut wlan0 = uplink("wlan0", None);
        wlan0.nm_connectivity = Some("limited".into());
        let mut r = report(vec![eth0, wlan0]);
        r.unreadable = vec![
            Unreadable {
                what: UNREADABLE_CONNTRACK.into(),
                why: NEEDS_CAP_NET_ADMIN.into(),
            },
            Unreadable {
                what: UNREADABLE_FIREWALL.into(),
                why: NEEDS_CAP_NET_ADMIN.into(),
            },
        ];
        let text = render(&r);
        let h = header(&text);
        assert!(h.contains(&"RECEIVED") && h.contains(&"SENT"), "{text}");
        assert!(!h.contains(&"NEW") && !h.contains(&"DOWNLOAD"), "{text}");
        assert_eq!(
            row(&text, "eth0")[..9],
            [
                "eth0", "eth0", "active", "primary", "ok", "-", "-", "1.2 GiB", "40.1 MiB"
            ],
            "{text}"
        );
        assert_eq!(row(&text, "wlan0")[4], "DOWN", "{text}");
        assert!(
            text.contains("health: NetworkManager's connectivity check (no daemon probes"),
            "{text}"
        );
        assert!(
            text.contains("traffic: totals since each interface came up"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nnot shown without root: tracked connections (CONNS), whether the \
                 firewall is in sync (they need CAP_NET_ADMIN"
            ),
            "{text}"
        );
        assert!(
            text.contains("kernel state: routes and rules in sync (the firewall was not read)"),
            "{text}"
        );
        assert_eq!(
            text.matches("not shown").count(),
            1,
            "one line says it: {text}"
        );
        // No check, no daemon: no health figure at all.
        for u in &mut r.uplinks {
            u.nm_connectivity = None;
        }
        let text = render(&r);
        assert_eq!(row(&text, "eth0")[4], "-", "{text}");
        assert!(text.contains("health: - (no daemon probes"), "{text}");
    }

    #[test]
    fn the_ipv6_column_only_when_ipv6_is_balanced() {
        let mut eth0 = uplink("eth0", None);
        eth0.address6 = Some("2001:db8:20::7/64".into());
        eth0.ipv6_balanced = true;
        let mut r = report(vec![eth0]);
        assert!(!header(&render(&r)).contains(&"IPV6"));
        r.ipv6 = true;
        let text = render(&r);
        assert!(header(&text).contains(&"IPV6"), "{text}");
        assert!(row(&text, "eth0").contains(&"2001:db8:20::7"), "{text}");
    }

    #[test]
    fn older_and_newer_reports_read_both_ways() {
        let r = report(vec![uplink("eth0", None)]);
        let mut v = serde_json::to_value(&r).unwrap();
        // An older daemon's document: none of the added fields.
        for k in ["unreadable", "traffic", "config_error"] {
            v.as_object_mut().unwrap().remove(k);
        }
        for k in ["rx_rate", "tx_rate", "nm_connectivity", "parent"] {
            v["uplinks"][0].as_object_mut().unwrap().remove(k);
        }
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert!(back.unreadable.is_empty() && back.traffic.is_none());
        assert_eq!(back.uplinks[0].rx_rate, None);
        assert_eq!(back.format, 1, "fields were only added");
    }

    #[test]
    fn a_config_error_comes_first() {
        let error = Error::Config {
            path: "/etc/nm-multiwan/config.toml".into(),
            line: 3,
            column: 1,
            key: Some("uplinks.wired.wieght".into()),
            reason: "unknown key; the keys of uplinks.wired are weight, enabled".into(),
        };
        let mut r = report(vec![]);
        r.config_error = Some(ConfigErrorReport::new(&error, "the built-in defaults"));
        let text = render(&r);
        assert!(
            text.starts_with(
                "CONFIG ERROR: /etc/nm-multiwan/config.toml:3:1: uplinks.wired.wieght: unknown key"
            ),
            "{text}"
        );
        assert!(
            text.contains("goes on with the built-in defaults"),
            "{text}"
        );
        assert!(text.contains("no uplinks"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["config_error"]["key"], "uplinks.wired.wieght");
        assert_eq!(json["config_error"]["line"], 3);
        // An older daemon's report, without the field, still reads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("config_error");
        let back: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.config_error, None);
    }

    #[test]
    fn virtual_uplinks_show_their_parent() {
        let r = report(vec![uplink("eth0", None), uplink("eth0-v1", Some("eth0"))]);
        let text = render(&r);
        assert!(text.contains("\neth0-v1 (on eth0)  "), "{text}");
        assert!(text.contains("\neth0  "), "{text}");
        // A report without the field (an older daemon's) still reads.
        let mut v = serde_json::to_value(&r).unwrap();
        v["uplinks"][1].as_object_mut().unwrap().remove("parent");
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.uplinks[1].parent, None);
    }

    #[test]
    fn probe_settings_render() {
        let h = HealthReport {
            targets: vec![],
            interval_ms: 500,
            down_after: 3,
            up_after: 2,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            uplinks: BTreeMap::new(),
        };
        assert_eq!(
            render_health(&h),
            "health: probes to nothing (probing off) every 500 ms; out after 3 unanswered, \
             above 20% loss or 1000 ms median round trip (last 100 probes); back after 2 answered"
        );
    }
}
