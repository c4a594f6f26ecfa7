//! `status` and `plan`: what is in use and what would be, for people and for scripts.
//! Read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Result;
use crate::firewall::Firewall;
use crate::firewall::iptables::Iptables;
use crate::health::HealthReport;
use crate::model::Family;
use crate::netlink::Netlink;
use crate::nm::NetworkManager;
use crate::plan::{self, Plan};
use crate::reconcile::observe;
use crate::state::{self, State};

/// Version of the `status --json` format; bumped only on incompatible changes.
pub const STATUS_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub format: u32,
    /// Whether the kernel holds exactly the plan (routes, rules, chains).
    pub in_sync: bool,
    pub mark_mask: String,
    /// Whether IPv6 connections are balanced (config `ipv6`, or automatic).
    pub ipv6: bool,
    pub uplinks: Vec<UplinkStatus>,
    pub warnings: Vec<String>,
    /// The daemon's probes (`null` when no daemon answered): targets, thresholds and,
    /// per uplink, consecutive successes/failures, last RTT and last change.
    #[serde(default)]
    pub health: Option<HealthReport>,
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

/// The plan as it would be applied now, computed from live facts. Writes nothing.
pub async fn current_plan(config: &Config, health: &BTreeMap<String, bool>) -> Result<Plan> {
    let nm = NetworkManager::connect().await?;
    let nl = Netlink::connect().await?;
    let fw = Iptables::default();
    let fw6 = Iptables::new(Family::V6);
    let state = State::load(&state::run_dir());
    let observed = observe(config, &nm, &nl, &fw, &fw6, &state, health).await?;
    Ok(plan::plan(config, &observed.facts))
}

/// Reads the live state. `health` holds the verdicts of a running daemon (empty
/// without one: every uplink then counts as healthy and `healthy` is `null`).
pub async fn gather(config: &Config, health: &BTreeMap<String, bool>) -> Result<StatusReport> {
    let nm = NetworkManager::connect().await?;
    let nl = Netlink::connect().await?;
    let fw = Iptables::default();
    let fw6 = Iptables::new(Family::V6);
    let state = State::load(&state::run_dir());
    let observed = observe(config, &nm, &nl, &fw, &fw6, &state, health).await?;
    let plan = plan::plan(config, &observed.facts);
    let firewall6_ok = match &plan.firewall6 {
        Some(p6) => fw6.is_current(p6)?,
        // Off: in sync when nothing of ours is there (or cannot be: no ip6tables).
        None => !fw6.installed().unwrap_or(false),
    };
    let in_sync = observed.routes.iter().collect::<BTreeSet<_>>()
        == plan.routes.iter().collect::<BTreeSet<_>>()
        && observed.rules.iter().collect::<BTreeSet<_>>()
            == plan.rules.iter().collect::<BTreeSet<_>>()
        && fw.is_current(&plan.firewall)?
        && firewall6_ok;
    let counters = fw.counters().unwrap_or_default();
    let counters6 = if plan.ipv6 {
        fw6.counters().unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let conns = conntrack_by_id(config, Family::V4);
    let conns6 = conntrack_by_id(config, Family::V6);
    let ns = plan.namespace;
    let uplinks = plan
        .uplinks
        .iter()
        .map(|u| {
            let count = |c: &Option<BTreeMap<u32, u64>>| {
                c.as_ref().map(|c| c.get(&u.id).copied().unwrap_or(0))
            };
            let new4 = counters.get(&u.mark).map_or(0, |c| c.new_connections);
            let new6 = counters6.get(&u.mark).map_or(0, |c| c.new_connections);
            let (c4, c6) = (count(&conns), count(&conns6));
            UplinkStatus {
                iface: u.iface.clone(),
                parent: crate::split::parent_of(&u.iface),
                connection: u.connection_id.clone(),
                connection_uuid: u.connection_uuid.clone(),
                address: u
                    .ipv4
                    .as_ref()
                    .map(|v4| format!("{}/{}", v4.address, v4.subnet.prefix)),
                gateway: u
                    .ipv4
                    .as_ref()
                    .and_then(|v4| v4.gateway)
                    .map(|g| g.to_string()),
                address6: u
                    .ipv6
                    .as_ref()
                    .map(|v6| format!("{}/{}", v6.address, v6.subnet.prefix)),
                gateway6: u
                    .ipv6
                    .as_ref()
                    .and_then(|v6| v6.gateway)
                    .map(|g| g.to_string()),
                ipv6_balanced: u.ipv6_balanced,
                mark: format!("{:#x}/{:#x}", u.mark, ns.mark_mask),
                table: u.table,
                weight: u.weight,
                in_balance: u.in_balance,
                healthy: health.get(&u.iface).copied(),
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
        ipv6: plan.ipv6,
        uplinks,
        warnings: plan.warnings,
        health: None,
    })
}

fn read_counter(iface: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Connections of one family per uplink id, from `conntrack -L`; `None` when conntrack
/// is missing.
fn conntrack_by_id(config: &Config, family: Family) -> Option<BTreeMap<u32, u64>> {
    let family = match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    let out = Command::new(crate::firewall::iptables::find_program("conntrack"))
        .args(["-L", "-f", family])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let ns = crate::plan::Namespace::from_config(config);
    let shift = ns.shift();
    let id_bits = ns.mark_mask & !ns.inbound_flag();
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mark = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mark="))
            .and_then(|m| m.parse::<u32>().ok());
        if let Some(m) = mark {
            let id = (m & id_bits) >> shift;
            if id != 0 {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
    }
    Some(counts)
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
    if r.uplinks.is_empty() {
        return "no uplinks: no active NetworkManager device has an IPv4 or IPv6 default route"
            .into();
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
    let mut s = table(
        &[
            "IFACE",
            "CONNECTION",
            "GATEWAY",
            "IPV6",
            "MARK",
            "TABLE",
            "WEIGHT",
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
        "health: probes to {} every {} ms; out after {} failures, back after {} successes",
        if h.targets.is_empty() {
            "nothing (probing off)".to_string()
        } else {
            h.targets.join(", ")
        },
        h.interval_ms,
        h.down_after,
        h.up_after
    );
    let rows: Vec<Vec<String>> = h
        .uplinks
        .iter()
        .map(|(iface, u)| {
            let ago = (now - u.last_change).max(0.0);
            vec![
                iface.clone(),
                if u.healthy { "ok" } else { "DOWN" }.to_string(),
                u.last_rtt_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
                if u.consecutive_failures > 0 {
                    format!("{} lost in a row", u.consecutive_failures)
                } else {
                    format!("{} ok in a row", u.consecutive_successes)
                },
                format!("{ago:.0} s ago"),
                match (&u.nm_connectivity, &u.last_error) {
                    (Some(c), _) if !u.probes_healthy || !u.healthy => {
                        format!("NetworkManager: {c}")
                    }
                    (_, Some(e)) => e.clone(),
                    (Some(c), None) => format!("NetworkManager: {c}"),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        s.push('\n');
        s.push_str(
            table(
                &["  IFACE", "HEALTH", "RTT", "PROBES", "CHANGED", "NOTE"],
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

/// The plan for people; `firewall` and `firewall6` are the rendered chains of each
/// family (`firewall6` `None` when IPv6 balancing is off).
pub fn render_plan(p: &Plan, firewall: &str, firewall6: Option<&str>) -> String {
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
            let _ = writeln!(s, "#    ipv4 {}/{}{via}", v4.address, v4.subnet.prefix);
        }
        if let Some(v6) = &u.ipv6 {
            let via = v6.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let off = if u.ipv6_balanced {
                ""
            } else {
                " (IPv6 not balanced)"
            };
            let _ = writeln!(s, "#    ipv6 {}/{}{via}{off}", v6.address, v6.subnet.prefix);
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
        let target = if r.table == plan::MAIN_TABLE {
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
    let _ = writeln!(s, "# firewall (iptables-restore --noflush)");
    s.push_str(firewall);
    if let Some(firewall6) = firewall6 {
        let _ = writeln!(s, "# firewall IPv6 (ip6tables-restore --noflush)");
        s.push_str(firewall6);
    }
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
            ipv6: false,
            uplinks: vec![],
            warnings: vec![],
            health: None,
        };
        assert!(render(&r).contains("no uplinks"));
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
            ipv6: false,
            uplinks: vec![uplink("eth0", None), uplink("eth0-v1", Some("eth0"))],
            warnings: vec![],
            health: None,
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
                },
            )]),
        };
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(112);
        let text = render_health(&h, now);
        assert!(text.contains("every 500 ms"), "{text}");
        assert!(text.contains("eth1") && text.contains("DOWN"), "{text}");
        assert!(
            text.contains("7 lost in a row") && text.contains("12 s ago"),
            "{text}"
        );
    }
}
