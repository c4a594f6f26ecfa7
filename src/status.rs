//! `status` and `plan`: what is in use and what would be, for people and for scripts.
//! Read-only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{self, Config};
use crate::diff;
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::kernel::firewall::{self, Firewall};
use crate::kernel::routing::Routing;
use crate::model::Family;
use crate::namespace::MAIN_TABLE;
use crate::nm::NetworkManager;
use crate::plan::{self, Plan, Role, Verdicts};
use crate::reconcile::{observe, observe_for};
use crate::state::{self, State};

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
}

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
    /// Whether new connections are given to it right now.
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
}

/// The plan as it would be applied now, computed from live facts, with the backend
/// that would apply it and whether the kernel holds it. Writes nothing.
pub async fn current_plan(
    config: &Config,
    health: &Verdicts,
) -> Result<(Plan, Box<dyn Firewall>, bool)> {
    let fw = firewall::backend(firewall::resolve(config.firewall));
    fw.prefetch();
    let nm = NetworkManager::connect().await?;
    let routing = Routing::connect().await?;
    let state = State::load(&state::run_dir());
    let view = observe(config, &nm, &routing, &state, health).await?;
    let plan = plan::plan(config, &view.facts);
    let mut observed = view.observed;
    observe_for(&plan, &mut observed, fw.as_ref(), &state)?;
    let in_sync = diff::diff(&plan, &observed).is_empty();
    Ok((plan, fw, in_sync))
}

/// Reads the live state. `health` holds the verdicts of a running daemon (empty
/// without one: every uplink then counts as healthy and `healthy` is `null`).
pub async fn gather(config: &Config, health: &Verdicts) -> Result<StatusReport> {
    let (plan, fw, in_sync) = current_plan(config, health).await?;
    let counters = fw.counters().unwrap_or_default();
    let conns = conntrack_by_id(config, Family::V4).await;
    let conns6 = conntrack_by_id(config, Family::V6).await;
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
                rx_bytes: read_counter(&u.iface, "rx_bytes"),
                tx_bytes: read_counter(&u.iface, "tx_bytes"),
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
        config_error: None,
    })
}

fn primary() -> Role {
    Role::Primary
}

fn read_counter(iface: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
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

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
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
    let rows: Vec<Vec<String>> = r
        .uplinks
        .iter()
        .map(|u| {
            vec![
                match &u.parent {
                    Some(p) => format!("{} (on {p})", u.iface),
                    None => u.iface.clone(),
                },
                u.connection.clone(),
                u.gateway.clone().unwrap_or_else(|| "-".into()),
                match (&u.address6, u.ipv6_balanced) {
                    (Some(a), true) => a.split('/').next().unwrap_or("").to_string(),
                    (Some(_), false) => "(off)".into(),
                    (None, _) => "-".into(),
                },
                u.mark.split('/').next().unwrap_or("").to_string(),
                u.table.to_string(),
                u.weight.to_string(),
                match (u.role, u.metered) {
                    (Role::Primary, false) => "primary".to_string(),
                    (role, true) => format!("{} (metered)", role.name()),
                    (role, false) => role.name().to_string(),
                },
                match (u.in_balance, u.healthy) {
                    (true, Some(false)) => "active (unhealthy)".into(),
                    (true, _) => "active".into(),
                    (false, Some(false)) => "down".into(),
                    (false, _) => "standby".into(),
                },
                u.connections.map_or_else(|| "-".into(), |c| c.to_string()),
                u.new_connections.to_string(),
                human_bytes(u.rx_bytes),
                human_bytes(u.tx_bytes),
            ]
        })
        .collect();
    s += &table(
        &[
            "IFACE",
            "CONNECTION",
            "GATEWAY",
            "IPV6",
            "MARK",
            "TABLE",
            "WEIGHT",
            "ROLE",
            "STATE",
            "CONNS",
            "NEW",
            "RX",
            "TX",
        ],
        &rows,
    );
    let _ = write!(
        s,
        "{}",
        if r.in_sync {
            "kernel state: in sync"
        } else {
            "kernel state: OUT OF SYNC (run `nm-multiwan apply`)"
        }
    );
    if let Some(h) = &r.health {
        let _ = write!(s, "\n{}", render_health(h, std::time::SystemTime::now()));
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

/// The daemon's health section, for people.
pub fn render_health(h: &HealthReport, now: std::time::SystemTime) -> String {
    let now = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut s = format!(
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
    );
    let rows: Vec<Vec<String>> = h
        .uplinks
        .iter()
        .map(|(iface, u)| {
            let ago = (now - u.last_change).max(0.0);
            let down: Vec<String> = u
                .families
                .iter()
                .filter(|(_, f)| !f.healthy)
                .map(|(family, _)| family.to_string())
                .collect();
            vec![
                iface.clone(),
                if u.healthy {
                    "ok".to_string()
                } else if down.is_empty() || down.len() == u.families.len() {
                    "DOWN".to_string()
                } else {
                    format!("DOWN ({})", down.join(", "))
                },
                u.median_rtt_ms
                    .or(u.last_rtt_ms)
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
                u.loss_percent
                    .map_or_else(|| "-".into(), |l| format!("{l:.0}%")),
                if u.consecutive_failures > 1 {
                    format!("{} unanswered", u.consecutive_failures - 1)
                } else {
                    format!("{} ok in a row", u.consecutive_successes)
                },
                format!("{ago:.0} s ago"),
                match (&u.reason, &u.nm_connectivity, &u.last_error) {
                    (Some(r), _, _) => r.clone(),
                    (None, _, Some(e)) => e.clone(),
                    (None, Some(c), None) => format!("NetworkManager: {c}"),
                    (None, None, None) => String::new(),
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        s.push('\n');
        s.push_str(
            table(
                &[
                    "  IFACE", "HEALTH", "RTT", "LOSS", "PROBES", "CHANGED", "NOTE",
                ],
                &rows
                    .into_iter()
                    .map(|mut r| {
                        r[0] = format!("  {}", r[0]);
                        r
                    })
                    .collect::<Vec<_>>(),
            )
            .trim_end(),
        );
    }
    s
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
    let _ = writeln!(s, "# firewall ({backend})");
    s.push_str(firewall);
    for w in &p.warnings {
        let _ = writeln!(s, "# warning: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_bytes_are_human() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn empty_status_says_why() {
        let r = StatusReport {
            format: STATUS_FORMAT,
            in_sync: true,
            mark_mask: "0x3f000000".into(),
            firewall: "nftables".into(),
            ipv6: false,
            uplinks: vec![],
            warnings: vec![],
            health: None,
            config_error: None,
        };
        assert!(render(&r).contains("no uplinks"));
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
        let r = StatusReport {
            format: STATUS_FORMAT,
            in_sync: true,
            mark_mask: "0x3f000000".into(),
            firewall: "nftables".into(),
            ipv6: false,
            uplinks: vec![],
            warnings: vec![],
            health: None,
            config_error: Some(ConfigErrorReport::new(&error, "the built-in defaults")),
        };
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
        let uplink = |iface: &str, parent: Option<&str>| UplinkStatus {
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
        };
        let r = StatusReport {
            format: STATUS_FORMAT,
            in_sync: true,
            mark_mask: "0x3f000000".into(),
            firewall: "nftables".into(),
            ipv6: false,
            uplinks: vec![uplink("eth0", None), uplink("eth0-v1", Some("eth0"))],
            warnings: vec![],
            health: None,
            config_error: None,
        };
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
    fn health_renders() {
        use crate::health::UplinkHealthReport;
        let h = HealthReport {
            targets: vec!["198.51.100.10".into()],
            interval_ms: 500,
            down_after: 3,
            up_after: 3,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            uplinks: BTreeMap::from([(
                "eth1".to_string(),
                UplinkHealthReport {
                    healthy: false,
                    probes_healthy: false,
                    consecutive_successes: 0,
                    consecutive_failures: 7,
                    last_rtt_ms: Some(0.42),
                    last_change: 100.0,
                    last_error: None,
                    nm_connectivity: None,
                    rounds: 20,
                    rounds_failed: 7,
                    reason: Some("IPv4: dead: no answer to the last 6 probes".into()),
                    loss_percent: Some(4.0),
                    median_rtt_ms: Some(12.5),
                    times_out: 1,
                    families: BTreeMap::new(),
                },
            )]),
        };
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(112);
        let text = render_health(&h, now);
        assert!(text.contains("every 500 ms"), "{text}");
        assert!(text.contains("eth1") && text.contains("DOWN"), "{text}");
        assert!(
            text.contains("6 unanswered") && text.contains("12 s ago"),
            "{text}"
        );
        assert!(text.contains("12.5 ms") && text.contains("4%"), "{text}");
        assert!(
            text.contains("dead: no answer to the last 6 probes"),
            "{text}"
        );
    }
}
