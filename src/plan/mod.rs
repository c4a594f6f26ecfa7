//! The planner: a pure function from facts (uplinks, config, health, the ids already
//! given) to the desired kernel state. No I/O here, so it is tested without root, a bus
//! or a network.

pub mod ids;
pub mod ladder;
pub mod round;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{Config, Metered, UplinkRole};
use crate::kernel::firewall::{Cgroup, FirewallPlan, FwLan, FwUplink, Protocol, Round};
use crate::kernel::{Route, Rule, Sysctl};
#[cfg(test)]
use crate::model::DeviceRoute;
use crate::model::{Family, IpNet, IpSide, Lan, Uplink};
use crate::namespace::{MAIN_TABLE, Namespace};

pub use ids::KnownIds;
pub use round::weighted_round;

/// The daemon's verdict on one uplink, per address family: whether it may carry new
/// connections of that family. A family the daemon does not probe counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Verdict {
    pub const HEALTHY: Verdict = Verdict {
        ipv4: true,
        ipv6: true,
    };

    pub fn family(self, family: Family) -> bool {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }

    pub fn set(&mut self, family: Family, healthy: bool) {
        match family {
            Family::V4 => self.ipv4 = healthy,
            Family::V6 => self.ipv6 = healthy,
        }
    }

    /// Healthy in both families.
    pub fn healthy(self) -> bool {
        self.ipv4 && self.ipv6
    }
}

impl From<bool> for Verdict {
    /// The same verdict for both families.
    fn from(healthy: bool) -> Self {
        Verdict {
            ipv4: healthy,
            ipv6: healthy,
        }
    }
}

impl<'de> Deserialize<'de> for Verdict {
    /// `{"ipv4": .., "ipv6": ..}`, or a bare boolean for both families (what a daemon
    /// of an earlier version published).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Both(bool),
            Each { ipv4: bool, ipv6: bool },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Both(b) => b.into(),
            Raw::Each { ipv4, ipv6 } => Verdict { ipv4, ipv6 },
        })
    }
}

/// Health verdicts by interface; an uplink missing here counts as healthy.
pub type Verdicts = BTreeMap<String, Verdict>;

/// What an uplink is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Balanced over whenever it is healthy.
    Primary,
    /// Carries new connections of a family only while no primary of that family is
    /// usable.
    Backup,
    /// Never given new connections (a metered uplink with `metered = "never"`).
    Never,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Never => "never",
        }
    }
}

/// An uplink's role: its own `role` key first, else what `metered` says of a metered
/// one; primary otherwise.
pub fn role_of(configured: Option<UplinkRole>, metered: bool, policy: Metered) -> Role {
    match (configured, metered, policy) {
        (Some(UplinkRole::Primary), _, _) => Role::Primary,
        (Some(UplinkRole::Backup), _, _) => Role::Backup,
        (None, false, _) | (None, true, Metered::Balance) => Role::Primary,
        (None, true, Metered::Backup) => Role::Backup,
        (None, true, Metered::Never) => Role::Never,
    }
}

/// Facts the planner works from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Active uplinks from NetworkManager.
    pub uplinks: Vec<Uplink>,
    /// Every other activated NetworkManager device: the shared ones and those the
    /// config names are LANs ([`lans`]).
    pub lans: Vec<Lan>,
    /// Health verdicts by interface; an uplink missing here counts as healthy.
    pub health: Verdicts,
    /// Ids already given, so that identity survives every rebalance and restart.
    pub ids: KnownIds,
    /// Tracked connections whose source address was translated: (original source,
    /// our outbound mark). `None` when not read: conntrack is read only while an
    /// address departed or one we keep belongs to no primary uplink any more.
    pub translated: Option<Vec<(IpAddr, u32)>>,
    /// Addresses the last run's uplinks had that no uplink has now.
    pub departed: BTreeSet<IpAddr>,
    /// Addresses on our keeper interface now.
    pub kept: BTreeSet<IpAddr>,
    /// Every address configured on the machine (our own keeper interface left out).
    pub local: BTreeSet<IpAddr>,
    /// Every interface's addresses, as the kernel holds them (bound sources).
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// The addresses of the policies' host names, resolved for this run (a name
    /// missing here did not resolve).
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// The uids of the user names the policies name.
    pub users: BTreeMap<String, u32>,
    /// The cgroups of `run --via` that exist: (interface, cgroup).
    pub via: Vec<(String, Cgroup)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedUplink {
    pub id: u32,
    pub iface: String,
    pub connection_id: String,
    pub connection_uuid: String,
    /// The IPv4 side, if the uplink has an IPv4 default route (IPv4 is always balanced).
    pub ipv4: Option<IpSide>,
    /// The IPv6 side, if the uplink has an IPv6 default route (shown even when IPv6
    /// balancing is off).
    pub ipv6: Option<IpSide>,
    /// Whether the uplink takes part in IPv6 balancing: it has an IPv6 side and IPv6
    /// balancing is on. Then its IPv6 table, rules and NAT exist.
    pub ipv6_balanced: bool,
    /// The same mark and table number serve both families (the kernel keeps IPv4 and
    /// IPv6 tables apart), so one id is all an uplink needs.
    pub mark: u32,
    pub inbound_mark: u32,
    pub table: u32,
    pub weight: u32,
    /// NetworkManager calls it metered.
    pub metered: bool,
    pub role: Role,
    /// The daemon's verdict per family (healthy in both without a daemon).
    pub verdict: Verdict,
    /// Healthy in every family it serves.
    pub healthy: bool,
    /// Whether new connections may be given to this uplink right now (in at least
    /// one family).
    pub in_balance: bool,
    /// The families whose rounds give it new connections now.
    pub balanced: Vec<Family>,
}

impl PlannedUplink {
    /// Whether this uplink has a table, rules and NAT in `family`.
    pub fn serves(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.ipv4.is_some(),
            Family::V6 => self.ipv6_balanced,
        }
    }

    /// Whether `family`'s round gives it new connections now.
    pub fn balanced_in(&self, family: Family) -> bool {
        self.balanced.contains(&family)
    }

    /// The side of `family` this uplink is balanced over.
    pub fn served_side(&self, family: Family) -> Option<&IpSide> {
        match family {
            Family::V4 => self.ipv4.as_ref(),
            Family::V6 => self.ipv6.as_ref().filter(|_| self.ipv6_balanced),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub namespace: Namespace,
    /// Whether IPv6 connections are balanced (config `ipv6`, or automatic).
    pub ipv6: bool,
    pub uplinks: Vec<PlannedUplink>,
    /// Routes and rules of both families.
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    /// Marking and NAT, both families.
    pub firewall: FirewallPlan,
    pub sysctls: Vec<Sysctl>,
    /// Addresses to keep on our keeper interface, so that they stay local whatever
    /// their uplink does: the primary uplink's (every unbound local socket takes it as
    /// source, and leaves through any uplink, translated), and departed ones that
    /// connections through other uplinks still use. The kernel sends from local
    /// addresses only; a kept copy means the primary leaving costs those connections
    /// nothing.
    pub keep: Vec<IpAddr>,
    /// The LANs whose connections to the outside are balanced (router mode).
    pub lans: Vec<Lan>,
    /// Things the user should know (uplinks left out, and why).
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn uplink(&self, iface: &str) -> Option<&PlannedUplink> {
        self.uplinks.iter().find(|u| u.iface == iface)
    }
}

/// Whether IPv6 balancing is on: as configured, or, when the config says nothing, as
/// soon as two uplinks could share IPv6 connections (with one there is nothing to
/// balance, and NAT66 would only change the machine's behaviour).
pub fn ipv6_enabled(config: &Config, uplinks: &[&Uplink]) -> bool {
    config
        .ipv6
        .unwrap_or_else(|| uplinks.iter().filter(|u| u.ipv6.is_some()).count() >= 2)
}

/// Whether the config's `lan` names this interface or connection.
fn named_lan(config: &Config, iface: &str, connection_id: &str) -> bool {
    config
        .lan
        .iter()
        .any(|n| n == iface || (!connection_id.is_empty() && n == connection_id))
}

/// The LANs (router mode): every shared connection, and every device the config's
/// `lan` names, an uplink among them (a LAN is never an uplink: it loses its default
/// route's role and keeps its networks). Sorted by interface.
pub fn lans(config: &Config, facts: &Facts) -> Vec<Lan> {
    let mut out: Vec<Lan> = facts
        .lans
        .iter()
        .filter(|l| l.shared || named_lan(config, &l.iface, &l.connection_id))
        .cloned()
        .collect();
    for u in &facts.uplinks {
        if named_lan(config, &u.iface, &u.connection_id) && !out.iter().any(|l| l.iface == u.iface)
        {
            out.push(Lan {
                iface: u.iface.clone(),
                connection_id: u.connection_id.clone(),
                shared: false,
                networks: Family::ALL
                    .into_iter()
                    .filter_map(|f| u.side(f))
                    .map(|s| s.subnet)
                    .collect(),
            });
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.iface == b.iface);
    out
}

/// Computes the desired state. Pure and deterministic.
pub fn plan(config: &Config, facts: &Facts) -> Plan {
    let ns = config.namespace();
    let mut warnings = Vec::new();
    let lans = lans(config, facts);
    for name in &config.lan {
        if !lans
            .iter()
            .any(|l| &l.iface == name || &l.connection_id == name)
        {
            warnings.push(format!(
                "lan {name:?}: no activated NetworkManager device or connection has this name"
            ));
        }
    }

    // Uplinks the config allows, one per interface, in a stable order.
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<(&Uplink, crate::config::UplinkConfig)> = Vec::new();
    let mut sorted: Vec<&Uplink> = facts.uplinks.iter().collect();
    sorted.sort_by(|a, b| a.iface.cmp(&b.iface));
    for u in sorted {
        if !seen.insert(u.iface.as_str()) {
            continue;
        }
        if lans.iter().any(|l| l.iface == u.iface) {
            warnings.push(format!("{} left out: it is a LAN", u.iface));
            continue;
        }
        let uc = config.uplink(&u.connection_id, &u.iface);
        if uc.enabled {
            candidates.push((u, uc.clone()));
        }
    }
    let ipv6 = ipv6_enabled(
        config,
        &candidates.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
    );
    // An uplink needs an id when it has a family we balance.
    candidates.retain(|(u, _)| {
        let keep = u.ipv4.is_some() || (ipv6 && u.ipv6.is_some());
        if !keep {
            warnings.push(format!(
                "{} left out: it has only IPv6 and IPv6 balancing is off",
                u.iface
            ));
        }
        keep
    });

    let names: Vec<(&str, &str)> = candidates
        .iter()
        .map(|(u, _)| (u.iface.as_str(), u.connection_uuid.as_str()))
        .collect();
    let ids = ids::assign(&names, &facts.ids, ns.max_uplinks());

    let mut uplinks = Vec::new();
    for (u, uc) in &candidates {
        let Some(&id) = ids.get(u.iface.as_str()) else {
            warnings.push(format!(
                "{} left out: mark_mask {:#x} has room for {} uplinks only",
                u.iface,
                ns.mark_mask,
                ns.max_uplinks()
            ));
            continue;
        };
        let verdict = facts
            .health
            .get(&u.iface)
            .copied()
            .unwrap_or(Verdict::HEALTHY);
        let ipv6_balanced = ipv6 && u.ipv6.is_some();
        let healthy = (u.ipv4.is_none() || verdict.ipv4) && (!ipv6_balanced || verdict.ipv6);
        uplinks.push(PlannedUplink {
            id,
            iface: u.iface.clone(),
            connection_id: u.connection_id.clone(),
            connection_uuid: u.connection_uuid.clone(),
            ipv4: u.ipv4.clone(),
            ipv6: u.ipv6.clone(),
            ipv6_balanced,
            mark: ns.mark(id),
            inbound_mark: ns.inbound_mark(id),
            table: ns.table(id),
            weight: uc.weight,
            metered: u.metered,
            role: role_of(uc.role, u.metered, config.metered),
            verdict,
            healthy,
            in_balance: false,
            balanced: Vec::new(),
        });
    }
    uplinks.sort_by_key(|u| u.id);
    for family in Family::ALL.into_iter().filter(|f| *f == Family::V4 || ipv6) {
        let (members, fallback) = balance(&uplinks, family);
        if let Some(why) = fallback {
            warnings.push(why);
        }
        for i in members {
            uplinks[i].balanced.push(family);
            uplinks[i].in_balance = true;
        }
    }

    let mut routes = Vec::new();
    let mut rules = Vec::new();
    let mut sysctls = Vec::new();
    // Link-local and multicast destinations are never balanced: neighbour discovery,
    // router advertisements, MLD and DHCPv6 belong to one link whatever we mark.
    let mut exclude: BTreeSet<IpNet> = BTreeSet::new();
    if ipv6 {
        exclude.extend([IpNet::link_local6(), IpNet::multicast6()]);
    }
    for u in &uplinks {
        for family in Family::ALL {
            let Some(side) = u.served_side(family) else {
                continue;
            };
            rules.extend(uplink_rules(&ns, u, family));
            routes.extend(uplink_routes(u, side));
            exclude.extend(side.networks());
        }
        if let Some(v4) = &u.ipv4 {
            // Reverse-path filtering consults the connection's mark, so strict rp_filter
            // accepts replies arriving on the uplink we chose. (IPv6 has no rp_filter.)
            sysctls.push(Sysctl {
                iface: u.iface.clone(),
                name: "src_valid_mark".into(),
                value: "1".into(),
            });
            // Two uplinks in one subnet: each must answer ARP only for its own address,
            // or the gateway sends both uplinks' downloads down one link (ARP flux).
            // IPv6 needs nothing alike: the kernel answers neighbour solicitations
            // only on the interface that holds the address.
            let shares_subnet = uplinks.iter().any(|o| {
                o.id != u.id
                    && o.ipv4
                        .as_ref()
                        .is_some_and(|o4| o4.subnet.contains(v4.address))
            });
            if shares_subnet {
                for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                    sysctls.push(Sysctl {
                        iface: u.iface.clone(),
                        name: name.into(),
                        value: value.into(),
                    });
                }
            }
        }
    }
    rules.sort();
    routes.sort();
    sysctls.sort();
    // A LAN's own networks are never balanced, from the machine or from another LAN.
    for lan in &lans {
        exclude.extend(
            lan.networks
                .iter()
                .filter(|n| n.family() == Family::V4 || ipv6)
                .copied(),
        );
    }

    let mut firewall = firewall_plan(&ns, &uplinks, ipv6, exclude);
    firewall.ladder = ladder::ladder(
        config,
        facts,
        &uplinks,
        &firewall.families,
        &lans,
        &mut warnings,
    );
    firewall.lans = lans
        .iter()
        .map(|l| FwLan {
            iface: l.iface.clone(),
            networks: l.networks.clone(),
        })
        .collect();
    let keep = addresses_to_keep(facts, &uplinks);
    Plan {
        namespace: ns,
        ipv6,
        uplinks,
        routes,
        rules,
        firewall,
        sysctls,
        keep: keep.into_iter().collect(),
        lans,
        warnings,
    }
}

/// The primary uplink's address in each family where another uplink could carry its
/// connections, and the departed addresses connections still use (see
/// [`Plan::keep`]).
fn addresses_to_keep(facts: &Facts, uplinks: &[PlannedUplink]) -> Vec<IpAddr> {
    let mut keep = BTreeSet::new();
    for family in Family::ALL {
        // What the main table prefers: the lowest metric among all of NetworkManager's
        // uplinks, balanced or not.
        let primary = facts
            .uplinks
            .iter()
            .filter_map(|u| u.side(family))
            .min_by_key(|s| s.metric);
        if let Some(primary) = primary
            && uplinks.iter().any(|u| {
                u.served_side(family)
                    .is_some_and(|s| s.address != primary.address)
            })
        {
            keep.insert(primary.address);
        }
    }
    let ours: BTreeSet<IpAddr> = facts.uplinks.iter().flat_map(Uplink::addresses).collect();
    match &facts.translated {
        Some(translated) => {
            let marks: BTreeSet<u32> = uplinks.iter().map(|u| u.mark).collect();
            // Only the machine's own addresses (departed or kept): a forwarded
            // connection's source is a LAN host's, never ours to hold.
            keep.extend(
                translated
                    .iter()
                    .filter(|(src, mark)| {
                        marks.contains(mark)
                            && !ours.contains(src)
                            && (facts.departed.contains(src) || facts.kept.contains(src))
                    })
                    .map(|(src, _)| *src),
            );
        }
        // Not read (or not readable): what departed or is kept and is no uplink's stays,
        // rather than break the connections that may still use it.
        None => keep.extend(
            facts
                .departed
                .iter()
                .chain(&facts.kept)
                .filter(|a| !ours.contains(a)),
        ),
    }
    keep.into_iter().collect()
}

/// The three rules of an uplink in one family.
fn uplink_rules(ns: &Namespace, u: &PlannedUplink, family: Family) -> [Rule; 3] {
    [
        // Connections that came in through this uplink are answered through it,
        // whoever the peer is. Only for what this machine sends (`iif lo`, which
        // reverse-path lookups use too): a forwarded connection (a port forwarded to a
        // container) still reaches its destination the main table's way.
        Rule {
            family,
            priority: ns.prio_inbound(),
            fwmark: u.inbound_mark,
            fwmask: ns.mark_mask,
            iif: Some("lo".into()),
            table: u.table,
            suppress_prefixlength: None,
        },
        // Both directions (the mask leaves out the inbound flag): whatever the main
        // table routes more specifically than by a default route (LANs, VPNs,
        // container bridges) goes where the main table says ...
        Rule {
            family,
            priority: ns.prio_suppress(),
            fwmark: u.mark,
            fwmask: ns.id_mask(),
            iif: None,
            table: MAIN_TABLE,
            suppress_prefixlength: Some(0),
        },
        // ... and everything else leaves through this uplink.
        Rule {
            family,
            priority: ns.prio_outbound(),
            fwmark: u.mark,
            fwmask: ns.id_mask(),
            iif: None,
            table: u.table,
            suppress_prefixlength: None,
        },
    ]
}

/// The uplinks (indices into `uplinks`) whose round in `family` gives them new
/// connections, and a warning when that is a fallback. In order of preference: the
/// healthy primaries; else the healthy backups (no primary of the family is usable);
/// else, every uplink of the family being unhealthy, all primaries (or all backups
/// when there is no primary): balancing over dead uplinks beats blackholing the
/// machine. Uplinks whose role is `never` take part in no round.
pub fn balance(uplinks: &[PlannedUplink], family: Family) -> (Vec<usize>, Option<String>) {
    let of = |role: Role, healthy: Option<bool>| -> Vec<usize> {
        uplinks
            .iter()
            .enumerate()
            .filter(|(_, u)| u.serves(family) && u.role == role)
            .filter(|(_, u)| healthy.is_none_or(|h| u.verdict.family(family) == h))
            .map(|(i, _)| i)
            .collect()
    };
    for role in [Role::Primary, Role::Backup] {
        let healthy = of(role, Some(true));
        if !healthy.is_empty() {
            return (healthy, None);
        }
    }
    for role in [Role::Primary, Role::Backup] {
        let all = of(role, None);
        if !all.is_empty() {
            let what = match role {
                Role::Primary => "uplink",
                _ => "uplink (all of them backups)",
            };
            return (
                all,
                Some(format!(
                    "every {family} {what} is unhealthy: balancing {family} over all of them"
                )),
            );
        }
    }
    (Vec::new(), None)
}

/// The marking and NAT: exact rounds per family and protocol over the uplinks in the
/// balance, inbound marks and masquerading for every uplink serving a family (in the
/// balance or not, so that its existing and inbound connections go on working).
fn firewall_plan(
    ns: &Namespace,
    uplinks: &[PlannedUplink],
    ipv6: bool,
    exclude: BTreeSet<IpNet>,
) -> FirewallPlan {
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| *f == Family::V4 || ipv6)
        .collect();
    let mut rounds = Vec::new();
    for &family in &families {
        let balanced: Vec<&PlannedUplink> =
            uplinks.iter().filter(|u| u.balanced_in(family)).collect();
        let order = weighted_round(&balanced.iter().map(|u| u.weight).collect::<Vec<_>>());
        if order.is_empty() {
            continue;
        }
        let slots: Vec<u32> = order.iter().map(|&i| balanced[i].mark).collect();
        for protocol in Protocol::ALL {
            rounds.push(Round {
                family,
                protocol,
                slots: slots.clone(),
            });
        }
    }
    FirewallPlan {
        mark_mask: ns.mark_mask,
        inbound_flag: ns.inbound_flag(),
        families: families.clone(),
        uplinks: uplinks
            .iter()
            .map(|u| FwUplink {
                iface: u.iface.clone(),
                mark: u.mark,
                inbound_mark: u.inbound_mark,
                families: families.iter().copied().filter(|f| u.serves(*f)).collect(),
            })
            .collect(),
        exclude: exclude.into_iter().collect(),
        lans: Vec::new(),
        rounds,
        ladder: Vec::new(),
    }
}

/// An uplink's table in one family: its on-link network, every route NetworkManager
/// gave the device (so that replies to a host on any of its networks, even one it
/// reaches through a router, leave the right way), and its default route.
///
/// IPv4 routes carry the uplink's address as preferred source and on-link ones scope
/// link. IPv6 routes carry no source: source selection on the chosen interface already
/// picks one of its addresses, and knows better than we do which are deprecated or
/// temporary; a fixed one would also vanish with a privacy address.
fn uplink_routes(u: &PlannedUplink, side: &IpSide) -> Vec<Route> {
    let v4 = side.family() == Family::V4;
    let prefsrc = v4.then_some(side.address);
    let route = |dst: IpNet, gateway, scope_link, onlink| Route {
        table: u.table,
        dst,
        gateway,
        oif: u.iface.clone(),
        prefsrc,
        scope_link: v4 && scope_link,
        onlink,
    };
    let mut routes = Vec::new();
    // IPv4 keeps its subnet route even for a /32 (point-to-point), as the kernel does.
    if v4 || !side.subnet.is_host() {
        routes.push(route(side.subnet, None, true, false));
    }
    for r in &side.routes {
        // NetworkManager lists the subnet's own route too: the first one stays.
        if !routes.iter().any(|have: &Route| have.dst == r.dst) {
            routes.push(route(r.dst, r.via, r.via.is_none(), false));
        }
    }
    // A gateway outside every on-link network of the device must be declared on-link,
    // or the kernel refuses the route; IPv6 link-local routers always are on-link.
    let on_link = |gw: IpAddr| {
        IpNet::link_local6().contains(gw)
            || side.subnet.contains(gw)
            || side
                .routes
                .iter()
                .any(|r| r.via.is_none() && r.dst.contains(gw))
    };
    let onlink = side.gateway.is_some_and(|gw| !on_link(gw));
    if let (Some(gw), true, true) = (side.gateway, onlink, v4) {
        routes.push(route(IpNet::host(gw), None, true, false));
    }
    routes.push(route(
        IpNet::default_route(side.family()),
        side.gateway,
        side.gateway.is_none(),
        onlink,
    ));
    routes
}

#[cfg(test)]
mod tests;
