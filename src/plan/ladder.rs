//! Where a new connection goes: one ladder, first rung that answers wins. Every
//! backend renders the same ordered decision for a connection's first packet, and
//! `explain` walks the same list:
//!
//! 1. already marked (its connection's mark, or a mark another program set): kept;
//! 2. not ours to balance: local, broadcast, multicast, an uplink's own networks, a
//!    more specific route in the main table;
//! 3. the application chose: a source address bound to an uplink's address, a device
//!    bound with SO_BINDTODEVICE, a program started with `run --via`;
//! 4. the network chose: the name servers an uplink brought go through that uplink;
//! 5. the user chose: the policies, in order (the global `sticky` last);
//! 6. the round: one exact weighted counter per family and protocol.
//!
//! Rungs 1, 2 and 6 are fixed parts of every rendering; this module builds rungs 3 to
//! 5 as data ([`Rung`]), from the facts and the config. Pure.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::policy::{Destination, StickyBy};
use crate::config::{Config, Mode, PolicyConfig};
use crate::kernel::firewall::{Action, Matches, Protocol, Round, Rung, Why};
use crate::model::{Family, IpNet, Lan};

use super::{Facts, PlannedUplink, weighted_round};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Rungs 3 to 5, in order, for the families balanced.
pub fn ladder(
    config: &Config,
    facts: &Facts,
    uplinks: &[PlannedUplink],
    families: &[Family],
    lans: &[Lan],
    warnings: &mut Vec<String>,
) -> Vec<Rung> {
    let mut rungs = Vec::new();
    for &family in families {
        rungs.extend(application(facts, uplinks, family));
    }
    for &family in families {
        rungs.extend(name_servers(uplinks, family));
    }
    for (index, policy) in config.policy.iter().enumerate() {
        rungs.extend(policy_rungs(
            index, policy, facts, uplinks, families, warnings,
        ));
    }
    if let Some(global) = global_sticky(config, lans) {
        rungs.extend(policy_rungs(
            config.policy.len(),
            &global,
            facts,
            uplinks,
            families,
            warnings,
        ));
    }
    rungs
}

/// The global `sticky` as the last policy, matching what it applies to: by client,
/// the connections from the LANs' networks (none without a LAN: the machine's own
/// connections share one source address and keep balancing); by destination, all.
fn global_sticky(config: &Config, lans: &[Lan]) -> Option<PolicyConfig> {
    let mut policy = config.global_sticky_policy()?;
    if policy.sticky_by == StickyBy::Client {
        policy.from = lans
            .iter()
            .flat_map(|l| &l.networks)
            .map(|n| n.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if policy.from.is_empty() {
            return None;
        }
    }
    Some(policy)
}

/// The interfaces whose default route the main table prefers in `family`: an unbound
/// socket takes their address, so a source address of theirs says nothing about the
/// application's choice.
pub fn primaries(facts: &Facts, family: Family) -> BTreeSet<String> {
    let metrics: Vec<(&str, u32)> = facts
        .uplinks
        .iter()
        .filter_map(|u| Some((u.iface.as_str(), u.side(family)?.metric)))
        .collect();
    let best = metrics.iter().map(|(_, m)| *m).min();
    metrics
        .into_iter()
        .filter(|(_, m)| Some(*m) == best)
        .map(|(i, _)| i.to_string())
        .collect()
}

/// Rung 3: bound sources and devices of every uplink but the primary, and the
/// programs of `run --via`.
fn application(facts: &Facts, uplinks: &[PlannedUplink], family: Family) -> Vec<Rung> {
    let mut rungs = Vec::new();
    let primary = primaries(facts, family);
    for u in uplinks.iter().filter(|u| u.serves(family)) {
        if primary.contains(&u.iface) {
            continue;
        }
        let side = u.served_side(family).expect("serves the family");
        let mut sources: BTreeSet<IpAddr> = facts
            .addresses
            .get(&u.iface)
            .into_iter()
            .flatten()
            .copied()
            .filter(|a| Family::of(*a) == family && is_global(*a))
            .collect();
        sources.insert(side.address);
        let action = Action::Uplink {
            iface: u.iface.clone(),
            mark: u.mark,
        };
        rungs.push(Rung {
            family,
            why: Why::BoundSource {
                iface: u.iface.clone(),
            },
            matches: Matches {
                sources: sources.into_iter().map(IpNet::host).collect(),
                ..Matches::default()
            },
            action: action.clone(),
        });
        rungs.push(Rung {
            family,
            why: Why::BoundDevice {
                iface: u.iface.clone(),
            },
            matches: Matches {
                oif: Some(u.iface.clone()),
                ..Matches::default()
            },
            action,
        });
    }
    for (iface, cgroup) in &facts.via {
        // The application chose: its uplink even out of balance; gone, nothing.
        let action = match uplinks.iter().find(|u| &u.iface == iface) {
            Some(u) if u.serves(family) => Action::Uplink {
                iface: u.iface.clone(),
                mark: u.mark,
            },
            _ => Action::Drop,
        };
        rungs.push(Rung {
            family,
            why: Why::Via {
                iface: iface.clone(),
            },
            matches: Matches {
                cgroup: Some(cgroup.clone()),
                ..Matches::default()
            },
            action,
        });
    }
    rungs
}

fn is_global(a: IpAddr) -> bool {
    !a.is_loopback()
        && !a.is_unspecified()
        && !IpNet::link_local6().contains(a)
        && !IpNet::multicast6().contains(a)
}

/// Rung 4: each uplink's name servers through it (a server two uplinks learned: the
/// first one's).
fn name_servers(uplinks: &[PlannedUplink], family: Family) -> Vec<Rung> {
    let mut taken = BTreeSet::new();
    let mut rungs = Vec::new();
    for u in uplinks {
        let Some(side) = u.served_side(family) else {
            continue;
        };
        let servers: Vec<IpNet> = side
            .dns
            .iter()
            .filter(|a| Family::of(**a) == family && taken.insert(**a))
            .map(|a| IpNet::host(*a))
            .collect();
        if servers.is_empty() {
            continue;
        }
        rungs.push(Rung {
            family,
            why: Why::Dns {
                iface: u.iface.clone(),
            },
            matches: Matches {
                destinations: servers,
                ..Matches::default()
            },
            action: Action::Uplink {
                iface: u.iface.clone(),
                mark: u.mark,
            },
        });
    }
    rungs
}

/// The planned uplinks a policy names, in its order (connection id first, then
/// interface); all of them, by id, when it names none.
pub fn members<'a>(policy: &PolicyConfig, uplinks: &'a [PlannedUplink]) -> Vec<&'a PlannedUplink> {
    if policy.uplinks.is_empty() {
        return uplinks.iter().collect();
    }
    policy
        .uplinks
        .iter()
        .filter_map(|name| {
            uplinks
                .iter()
                .find(|u| &u.connection_id == name)
                .or_else(|| uplinks.iter().find(|u| &u.iface == name))
        })
        .collect()
}

/// The members of a policy that may take its new connections of `family` now, in its
/// order. A policy that names its uplinks chose them, metered or not: the daemon's
/// verdict alone counts (and when every uplink of the family is unhealthy, as the
/// general balance does, all of them rather than none). A policy that names none
/// follows the general balance of the family (roles included: a metered backup stands
/// by).
fn usable<'a>(
    policy: &PolicyConfig,
    members: &[&'a PlannedUplink],
    uplinks: &[PlannedUplink],
    family: Family,
) -> Vec<&'a PlannedUplink> {
    let serving = members.iter().copied().filter(|u| u.serves(family));
    if policy.uplinks.is_empty() {
        return serving.filter(|u| u.balanced_in(family)).collect();
    }
    let all_unhealthy = !uplinks
        .iter()
        .any(|u| u.serves(family) && u.verdict.family(family));
    serving
        .filter(|u| all_unhealthy || u.verdict.family(family))
        .collect()
}

/// Rung 5: one policy, one rung per family it can match there.
fn policy_rungs(
    index: usize,
    policy: &PolicyConfig,
    facts: &Facts,
    uplinks: &[PlannedUplink],
    families: &[Family],
    warnings: &mut Vec<String>,
) -> Vec<Rung> {
    let why = Why::Policy {
        index,
        name: policy.name.clone(),
    };
    let destinations = policy.destinations();
    let mut unresolved = Vec::new();
    let mut addresses: Vec<IpNet> = Vec::new();
    for d in &destinations {
        match d {
            Destination::Net(n) => addresses.push(*n),
            Destination::Host(h) => match facts.resolved.get(h) {
                Some(found) if !found.is_empty() => {
                    addresses.extend(found.iter().map(|a| IpNet::host(*a)))
                }
                _ => unresolved.push(h.as_str()),
            },
        }
    }
    if !unresolved.is_empty() {
        warnings.push(format!(
            "policy {:?}: {} did not resolve; the rest of the policy applies",
            policy.name,
            unresolved.join(", ")
        ));
    }
    let uid = match &policy.user {
        None => None,
        Some(spec) => {
            let text = match spec {
                crate::config::policy::UserSpec::Uid(n) => n.to_string(),
                crate::config::policy::UserSpec::Name(s) => s.clone(),
            };
            match text
                .parse::<u32>()
                .ok()
                .or_else(|| facts.users.get(&text).copied())
            {
                Some(uid) => Some(uid),
                None => {
                    warnings.push(format!(
                        "policy {:?}: no local user {text:?}; the policy matches nothing",
                        policy.name
                    ));
                    return Vec::new();
                }
            }
        }
    };
    let ports = policy.port_ranges();
    let protocols: Vec<u8> = match policy.protocol_number() {
        Some(p) => vec![p],
        None if !ports.is_empty() => vec![TCP, UDP],
        None => Vec::new(),
    };
    let members = members(policy, uplinks);
    let mut rungs = Vec::new();
    for &family in families {
        let dests: Vec<IpNet> = addresses
            .iter()
            .copied()
            .filter(|n| n.family() == family)
            .collect();
        if !destinations.is_empty() && dests.is_empty() {
            continue;
        }
        let sources: Vec<IpNet> = policy
            .sources()
            .into_iter()
            .filter(|n| n.family() == family)
            .collect();
        if !policy.from.is_empty() && sources.is_empty() {
            continue;
        }
        // ICMP lives in IPv4, ICMPv6 in IPv6.
        if protocols == [ICMP] && family == Family::V6
            || protocols == [ICMPV6] && family == Family::V4
        {
            continue;
        }
        let usable = usable(policy, &members, uplinks, family);
        let fallback = if policy.fallback {
            Action::General
        } else {
            Action::Drop
        };
        let action = match policy.mode {
            Mode::Direct => Action::Direct,
            Mode::Failover => match usable.first() {
                Some(u) => Action::Uplink {
                    iface: u.iface.clone(),
                    mark: u.mark,
                },
                None => fallback,
            },
            Mode::Balance if usable.is_empty() => fallback,
            Mode::Balance => {
                let order = weighted_round(&usable.iter().map(|u| u.weight).collect::<Vec<_>>());
                let slots: Vec<u32> = order.iter().map(|&i| usable[i].mark).collect();
                Action::Balance {
                    rounds: round_protocols(&protocols)
                        .into_iter()
                        .map(|protocol| Round {
                            family,
                            protocol,
                            slots: slots.clone(),
                        })
                        .collect(),
                    members: usable.iter().map(|u| u.mark).collect(),
                    sticky: policy.sticky_secs(),
                    sticky_by: policy.sticky_by,
                }
            }
        };
        rungs.push(Rung {
            family,
            why: why.clone(),
            matches: Matches {
                sources,
                destinations: dests,
                protocols: protocols.clone(),
                ports: ports.clone(),
                uid,
                ..Matches::default()
            },
            action,
        });
    }
    if rungs.is_empty() && !destinations.is_empty() && unresolved.len() == destinations.len() {
        warnings.push(format!(
            "policy {:?} matches nothing until its names resolve",
            policy.name
        ));
    }
    rungs
}

/// The rounds a policy needs: those of the protocols it can match.
fn round_protocols(protocols: &[u8]) -> Vec<Protocol> {
    if protocols.is_empty() {
        return Protocol::ALL.to_vec();
    }
    let mut out: Vec<Protocol> = protocols
        .iter()
        .map(|p| match *p {
            TCP => Protocol::Tcp,
            UDP => Protocol::Udp,
            _ => Protocol::Other,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Names a policy lists that are neither a planned uplink's connection id or
/// interface nor in `known` (every interface and connection NetworkManager knows):
/// (policy index, position in its list, name).
pub fn unknown_uplinks(config: &Config, known: &BTreeSet<String>) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (i, p) in config.policy.iter().enumerate() {
        for (j, name) in p.uplinks.iter().enumerate() {
            if !known.contains(name) && !config.uplinks.contains_key(name) {
                out.push((i, j, name.clone()));
            }
        }
    }
    out
}
