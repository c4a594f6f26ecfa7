//! `nm-multiwan explain DEST [PORT]`: where the next such connection goes now, and
//! why. It walks the ladder the firewall renders (`plan::ladder`), over the same
//! data, with the live counters of the rounds and the live sticky entries.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

use crate::kernel::firewall::{Action, Counters, Protocol, RoundOf, Rung, StickyEntry, Why};
use crate::model::{Family, IpNet, Uplink};
use crate::plan::{Plan, ladder};

/// The connection asked about.
#[derive(Debug, Clone)]
pub struct Query {
    pub destination: IpAddr,
    /// The name given, when the destination was a host name.
    pub name: Option<String>,
    pub port: Option<u16>,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// The socket's owner.
    pub uid: u32,
    /// A source address the application binds to.
    pub from: Option<IpAddr>,
    /// A device the application binds to (SO_BINDTODEVICE).
    pub device: Option<String>,
    /// Started with `run --via IFACE`.
    pub via: Option<String>,
}

/// What the machine holds now, beyond the plan.
pub struct Live<'a> {
    pub uplinks: &'a [Uplink],
    pub local: &'a BTreeSet<IpAddr>,
    /// The main table's routes other than default ones: (destination, device).
    pub main_routes: &'a [(IpNet, String)],
    /// `None`: the counters could not be read (why).
    pub counters: Result<&'a Counters, String>,
    pub sticky: &'a [StickyEntry],
}

/// Where the connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "goes", rename_all = "snake_case")]
pub enum Verdict {
    /// Through this uplink.
    Uplink {
        iface: String,
        connection: String,
    },
    /// Where the main table routes it (this device, if known), unmarked.
    MainTable {
        device: Option<String>,
    },
    Dropped,
    /// The next slot of a round whose position could not be read.
    Unknown,
}

/// The answer, in words and as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub destination: IpAddr,
    pub name: Option<String>,
    pub protocol: String,
    pub port: Option<u16>,
    /// The rung that decided (1..=6).
    pub rung: u8,
    /// Why, in a few words: "local", "network of eth0", "bound source",
    /// "bound device", "run --via", "DNS of eth0", "policy NAME", "round".
    pub reason: String,
    /// The policy that matched, if one did.
    pub policy: Option<String>,
    /// Seconds a sticky destination keeps its uplink, unless renewed.
    pub sticky_for: Option<u64>,
    /// The round's slot the connection takes, and the round's length.
    pub slot: Option<(u64, usize)>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The sentence `explain` prints.
    pub words: String,
}

fn protocol_name(p: u8) -> &'static str {
    if p == 17 { "udp" } else { "tcp" }
}

fn round_protocol(p: u8) -> Protocol {
    match p {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => Protocol::Other,
    }
}

/// Walks the ladder for `q`.
pub fn explain(plan: &Plan, live: &Live<'_>, q: &Query) -> Answer {
    let family = Family::of(q.destination);
    let fw = &plan.firewall;
    let mut answer = Answer {
        destination: q.destination,
        name: q.name.clone(),
        protocol: protocol_name(q.protocol).into(),
        port: q.port,
        rung: 2,
        reason: String::new(),
        policy: None,
        sticky_for: None,
        slot: None,
        verdict: Verdict::MainTable { device: None },
        words: String::new(),
    };
    let main_device = main_device(plan, live, q.destination);
    let uplink = |mark: u32| -> Verdict {
        let up = plan.uplinks.iter().find(|u| u.mark == mark);
        Verdict::Uplink {
            iface: up.map_or_else(|| format!("{mark:#x}"), |u| u.iface.clone()),
            connection: up.map_or_else(String::new, |u| u.connection_id.clone()),
        }
    };
    // Rung 2: not ours to balance.
    let not_ours = if !fw.has(family) {
        Some(format!("{family} is not balanced"))
    } else if live.local.contains(&q.destination) {
        Some("a local address".into())
    } else if q.destination.is_multicast() || q.destination == IpAddr::from([255, 255, 255, 255]) {
        Some("multicast or broadcast".into())
    } else if let Some(net) = fw.exclude_of(family).find(|n| n.contains(q.destination)) {
        let owner = plan.uplinks.iter().find(|u| {
            u.served_side(family)
                .is_some_and(|s| s.networks().any(|n| n == *net))
        });
        Some(match owner {
            Some(u) => format!("on the network of {} ({net})", u.iface),
            None => format!("never balanced ({net})"),
        })
    } else {
        live.main_routes
            .iter()
            .filter(|(n, _)| n.contains(q.destination))
            .max_by_key(|(n, _)| n.prefix())
            .map(|(n, dev)| format!("the main table routes {n} through {dev}"))
    };
    if let Some(why) = not_ours {
        answer.reason = why;
        answer.verdict = Verdict::MainTable {
            device: main_device,
        };
        return finish(answer);
    }
    // Rungs 3 to 5, in order.
    for rung in fw.ladder_of(family) {
        if !matches(rung, q) {
            continue;
        }
        answer.rung = match rung.why {
            Why::BoundSource { .. } | Why::BoundDevice { .. } | Why::Via { .. } => 3,
            Why::Dns { .. } => 4,
            Why::Policy { .. } => 5,
        };
        answer.reason = match &rung.why {
            Why::BoundSource { iface } => format!("a source address of {iface} (bound)"),
            Why::BoundDevice { iface } => format!("bound to the device {iface}"),
            Why::Via { iface } => format!("run --via {iface}"),
            Why::Dns { iface } => format!("a name server of {iface}"),
            Why::Policy { name, .. } => {
                answer.policy = Some(name.clone());
                format!("policy {name:?}")
            }
        };
        match &rung.action {
            Action::Uplink { mark, .. } => answer.verdict = uplink(*mark),
            Action::Drop => answer.verdict = Verdict::Dropped,
            Action::Direct => {
                answer.verdict = Verdict::MainTable {
                    device: main_device,
                }
            }
            Action::General => {
                answer
                    .reason
                    .push_str(", none of its uplinks usable: the general round");
                round(
                    &mut answer,
                    plan,
                    live,
                    RoundOf::General,
                    family,
                    q.protocol,
                    None,
                    &uplink,
                );
            }
            Action::Balance {
                rounds, members, ..
            } => {
                let index = rung.policy().expect("a policy's action");
                let stuck = live.sticky.iter().find(|s| {
                    s.policy == index && s.destination == q.destination && members.contains(&s.mark)
                });
                if let Some(s) = stuck {
                    answer.sticky_for = Some(s.expires_in);
                    answer.verdict = uplink(s.mark);
                    answer.reason.push_str(", sticky");
                } else {
                    let slots = rounds
                        .iter()
                        .find(|r| r.protocol == round_protocol(q.protocol))
                        .map(|r| r.slots.clone());
                    round(
                        &mut answer,
                        plan,
                        live,
                        RoundOf::Policy(index),
                        family,
                        q.protocol,
                        slots,
                        &uplink,
                    );
                }
            }
        }
        return finish(answer);
    }
    answer.rung = 6;
    answer.reason = "the round".into();
    round(
        &mut answer,
        plan,
        live,
        RoundOf::General,
        family,
        q.protocol,
        None,
        &uplink,
    );
    finish(answer)
}

/// The next slot of a round.
#[allow(clippy::too_many_arguments)]
fn round(
    answer: &mut Answer,
    plan: &Plan,
    live: &Live<'_>,
    of: RoundOf,
    family: Family,
    protocol: u8,
    slots: Option<Vec<u32>>,
    uplink: &dyn Fn(u32) -> Verdict,
) {
    let p = round_protocol(protocol);
    let slots = slots.unwrap_or_else(|| {
        plan.firewall
            .rounds_of(family)
            .find(|r| r.protocol == p)
            .map(|r| r.slots.clone())
            .unwrap_or_default()
    });
    if slots.is_empty() {
        answer.verdict = Verdict::MainTable { device: None };
        return;
    }
    match &live.counters {
        Ok(c) => {
            let dealt = c.dealt.get(&(of, family, p)).copied().unwrap_or(0);
            let k = dealt % slots.len() as u64;
            answer.slot = Some((k, slots.len()));
            answer.verdict = uplink(slots[k as usize]);
        }
        Err(why) => {
            answer
                .reason
                .push_str(&format!(" (its position is unknown: {why})"));
            answer.verdict = Verdict::Unknown;
        }
    }
}

/// Whether a rung's matches hold for the query.
fn matches(rung: &Rung, q: &Query) -> bool {
    let m = &rung.matches;
    if let Some(cg) = &m.cgroup {
        let Why::Via { iface } = &rung.why else {
            return false;
        };
        if q.via.as_deref() != Some(iface.as_str()) || cg.path.is_empty() {
            return false;
        }
    }
    if let Some(oif) = &m.oif
        && q.device.as_deref() != Some(oif.as_str())
    {
        return false;
    }
    if let Some(uid) = m.uid
        && uid != q.uid
    {
        return false;
    }
    if !m.sources.is_empty()
        && !q
            .from
            .is_some_and(|f| m.sources.iter().any(|n| n.contains(f)))
    {
        return false;
    }
    if !m.destinations.is_empty() && !m.destinations.iter().any(|n| n.contains(q.destination)) {
        return false;
    }
    if !m.protocols.is_empty() && !m.protocols.contains(&q.protocol) {
        return false;
    }
    if !m.ports.is_empty()
        && !q
            .port
            .is_some_and(|p| m.ports.iter().any(|(a, b)| (*a..=*b).contains(&p)))
    {
        return false;
    }
    true
}

/// The device the main table would use: its most specific route, else the preferred
/// default route's uplink.
fn main_device(plan: &Plan, live: &Live<'_>, dest: IpAddr) -> Option<String> {
    let family = Family::of(dest);
    live.main_routes
        .iter()
        .filter(|(n, _)| n.contains(dest))
        .max_by_key(|(n, _)| n.prefix())
        .map(|(_, d)| d.clone())
        .or_else(|| {
            let facts = crate::plan::Facts {
                uplinks: live.uplinks.to_vec(),
                ..Default::default()
            };
            let primaries = ladder::primaries(&facts, family);
            plan.uplinks
                .iter()
                .map(|u| u.iface.clone())
                .chain(live.uplinks.iter().map(|u| u.iface.clone()))
                .find(|i| primaries.contains(i))
        })
}

fn finish(mut a: Answer) -> Answer {
    let what = match (&a.name, a.port) {
        (Some(n), Some(p)) => format!("{n} ({}) {} port {p}", a.destination, a.protocol),
        (Some(n), None) => format!("{n} ({}) {}", a.destination, a.protocol),
        (None, Some(p)) => format!("{} {} port {p}", a.destination, a.protocol),
        (None, None) => format!("{} {}", a.destination, a.protocol),
    };
    let goes = match &a.verdict {
        Verdict::Uplink { iface, connection } if connection.is_empty() => {
            format!("through {iface}")
        }
        Verdict::Uplink { iface, connection } => format!("through {iface} ({connection})"),
        Verdict::MainTable { device: Some(d) } => format!("the main table's way, through {d}"),
        Verdict::MainTable { device: None } => "the main table's way".into(),
        Verdict::Dropped => "dropped".into(),
        Verdict::Unknown => "to the round's next slot".into(),
    };
    let mut why = format!("rung {}: {}", a.rung, a.reason);
    if let Some(secs) = a.sticky_for {
        why.push_str(&format!(" for {secs} s more (until {})", clock_in(secs)));
    }
    if let Some((k, n)) = a.slot {
        why.push_str(&format!(", slot {} of {n}", k + 1));
    }
    a.words = format!("{what}: {goes}\n  why: {why}");
    a
}

/// The UTC time of day `secs` from now, HH:MM:SS.
fn clock_in(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = (now + secs) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", t / 3600, t / 60 % 60, t % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::plan::plan;
    use crate::testing::{facts, uplink};

    fn query(dest: &str, port: Option<u16>) -> Query {
        Query {
            destination: dest.parse().unwrap(),
            name: None,
            port,
            protocol: 6,
            uid: 1000,
            from: None,
            device: None,
            via: None,
        }
    }

    #[test]
    fn walks_the_ladder_like_the_firewall() {
        let config = Config::parse(
            "[[policy]]\nname = \"web\"\nto = [\"192.0.2.0/24\"]\nports = [\"443\"]\n\
             uplinks = [\"wlan0\"]\nmode = \"failover\"\n\
             [[policy]]\nname = \"sticky\"\nto = [\"198.51.100.0/24\"]\nsticky = \"10m\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let mut f = facts(vec![
            uplink("eth0", 1),
            uplink("wlan0", 2),
            uplink("usb0", 3),
        ]);
        f.uplinks[1].ipv4.as_mut().unwrap().dns = vec!["192.0.2.53".parse().unwrap()];
        let p = plan(&config, &f);
        let counters = Counters {
            dealt: [
                ((RoundOf::General, Family::V4, Protocol::Tcp), 4),
                ((RoundOf::Policy(1), Family::V4, Protocol::Tcp), 2),
            ]
            .into(),
            ..Default::default()
        };
        let local = BTreeSet::from(["10.0.1.2".parse().unwrap()]);
        let sticky = vec![StickyEntry {
            policy: 1,
            destination: "198.51.100.7".parse().unwrap(),
            mark: p.uplink("wlan0").unwrap().mark,
            expires_in: 300,
        }];
        let live = Live {
            uplinks: &f.uplinks,
            local: &local,
            main_routes: &[],
            counters: Ok(&counters),
            sticky: &sticky,
        };
        let to = |a: &Answer| match &a.verdict {
            Verdict::Uplink { iface, .. } => iface.clone(),
            other => format!("{other:?}"),
        };
        // The round (ids by interface: eth0, usb0, wlan0): 4 dealt of 3 slots, the
        // next is the second.
        let a = explain(&p, &live, &query("203.0.113.9", Some(80)));
        assert_eq!((a.rung, to(&a), a.slot), (6, "usb0".into(), Some((1, 3))));
        // A name server of wlan0.
        let a = explain(&p, &live, &query("192.0.2.53", Some(53)));
        assert_eq!((a.rung, to(&a)), (4, "wlan0".into()));
        // The policy needs port 443.
        let a = explain(&p, &live, &query("192.0.2.80", Some(443)));
        assert_eq!((a.rung, to(&a)), (5, "wlan0".into()));
        assert_eq!(a.policy.as_deref(), Some("web"));
        let a = explain(&p, &live, &query("192.0.2.80", Some(80)));
        assert_eq!(a.rung, 6);
        // Sticky, then the policy's own round (2 dealt: the third of eth0, usb0, wlan0).
        let a = explain(&p, &live, &query("198.51.100.7", Some(80)));
        assert_eq!((to(&a), a.sticky_for), ("wlan0".into(), Some(300)));
        assert!(a.words.contains("for 300 s more"), "{}", a.words);
        let a = explain(&p, &live, &query("198.51.100.8", Some(80)));
        assert_eq!((to(&a), a.slot), ("wlan0".into(), Some((2, 3))));
        // A bound source of usb0 (not the primary, eth0).
        let mut q = query("203.0.113.9", Some(80));
        q.from = Some("10.0.3.2".parse().unwrap());
        assert_eq!(
            (explain(&p, &live, &q).rung, to(&explain(&p, &live, &q))),
            (3, "usb0".into())
        );
        q.from = Some("10.0.1.2".parse().unwrap());
        assert_eq!(explain(&p, &live, &q).rung, 6);
        // Not ours: local, an uplink's network.
        assert_eq!(
            explain(&p, &live, &query("10.0.1.2", None)).reason,
            "a local address"
        );
        let a = explain(&p, &live, &query("10.0.2.9", None));
        assert!(a.reason.contains("network of wlan0"), "{}", a.reason);
        // No counters: the position is unknown, not guessed.
        let live = Live {
            counters: Err("needs root".into()),
            ..live
        };
        let a = explain(&p, &live, &query("203.0.113.9", Some(80)));
        assert_eq!(a.verdict, Verdict::Unknown);
    }
}
