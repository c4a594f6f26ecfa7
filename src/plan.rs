//! The planner: a pure function from facts (uplinks, config, health, the ids already
//! in the kernel) to the desired kernel state. No I/O here, so it is tested without
//! root, a bus or a network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::config::Config;
use crate::model::{Family, Ip4Uplink, Ip6Uplink, IpNet, Ipv4Net, Ipv6Net, Uplink};

/// The part of the kernel that is ours: mark bits, table range, rule priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Namespace {
    pub mark_mask: u32,
    pub table_base: u32,
    pub rule_priority: u32,
}

impl Namespace {
    pub fn from_config(c: &Config) -> Self {
        Namespace {
            mark_mask: c.mark_mask,
            table_base: c.table_base,
            rule_priority: c.rule_priority,
        }
    }

    pub fn shift(&self) -> u32 {
        self.mark_mask.trailing_zeros()
    }

    pub fn inbound_flag(&self) -> u32 {
        1 << (31 - self.mark_mask.leading_zeros())
    }

    pub fn max_uplinks(&self) -> u32 {
        (1u32 << (self.mark_mask.count_ones() - 1)) - 1
    }

    /// Mark given to connections we send out through uplink `id`.
    pub fn mark(&self, id: u32) -> u32 {
        id << self.shift()
    }

    /// Mark given to connections that came in through uplink `id`.
    pub fn inbound_mark(&self, id: u32) -> u32 {
        self.mark(id) | self.inbound_flag()
    }

    pub fn table(&self, id: u32) -> u32 {
        self.table_base + id
    }

    /// The uplink id a table of ours belongs to.
    pub fn id_of_table(&self, table: u32) -> Option<u32> {
        let id = table.checked_sub(self.table_base)?;
        (1..=self.max_uplinks()).contains(&id).then_some(id)
    }

    /// Rule priorities, in the order the kernel consults them.
    pub fn prio_inbound(&self) -> u32 {
        self.rule_priority
    }
    pub fn prio_suppress(&self) -> u32 {
        self.rule_priority + 1
    }
    pub fn prio_outbound(&self) -> u32 {
        self.rule_priority + 2
    }
    /// Every priority we use (`RULE_PRIORITIES` of them, which the config validates).
    pub fn priorities(&self) -> [u32; crate::config::RULE_PRIORITIES as usize] {
        [
            self.prio_inbound(),
            self.prio_suppress(),
            self.prio_outbound(),
        ]
    }
}

/// Facts the planner works from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Active uplinks from NetworkManager.
    pub uplinks: Vec<Uplink>,
    /// Health verdicts by interface; an uplink missing here counts as healthy.
    pub health: BTreeMap<String, bool>,
    /// Uplink ids found in the kernel (interface -> id), so that identity survives
    /// every rebalance and every restart of nm-multiwan.
    pub existing_ids: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedUplink {
    pub id: u32,
    pub iface: String,
    pub connection_id: String,
    pub connection_uuid: String,
    /// The IPv4 side, if the uplink has an IPv4 default route (IPv4 is always balanced).
    pub ipv4: Option<Ip4Uplink>,
    /// The IPv6 side, if the uplink has an IPv6 default route (shown even when IPv6
    /// balancing is off).
    pub ipv6: Option<Ip6Uplink>,
    /// Whether the uplink takes part in IPv6 balancing: it has an IPv6 side and IPv6
    /// balancing is on. Then its IPv6 table, rules and NAT exist.
    pub ipv6_balanced: bool,
    /// The same mark and table number serve both families (the kernel keeps IPv4 and
    /// IPv6 tables apart), so one id is all an uplink needs.
    pub mark: u32,
    pub inbound_mark: u32,
    pub table: u32,
    pub weight: u32,
    pub healthy: bool,
    /// Whether new connections may be given to this uplink right now.
    pub in_balance: bool,
}

impl PlannedUplink {
    /// Whether this uplink has a table, rules and NAT in `family`.
    pub fn serves(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.ipv4.is_some(),
            Family::V6 => self.ipv6_balanced,
        }
    }
}

/// A route in one of our tables. The family is that of `dst`; `gateway` and `prefsrc`
/// are of the same family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: String,
    pub prefsrc: Option<IpAddr>,
    /// Scope link (directly reachable) rather than universe. IPv4 only: the kernel
    /// keeps every IPv6 route at scope universe.
    pub scope_link: bool,
    /// Gateway outside every on-link prefix of the device (point-to-point style).
    pub onlink: bool,
}

impl RouteSpec {
    pub fn family(&self) -> Family {
        self.dst.family()
    }
}

/// An `ip rule` of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleSpec {
    /// IPv4 and IPv6 rules live in separate lists in the kernel.
    pub family: Family,
    pub priority: u32,
    pub fwmark: u32,
    pub fwmask: u32,
    /// `iif lo`: only packets this machine sends (and reverse-path lookups).
    pub iif: Option<String>,
    pub table: u32,
    /// `lookup main suppress_prefixlength 0`: use the main table unless its answer
    /// is a default route.
    pub suppress_prefixlength: Option<u32>,
}

pub const MAIN_TABLE: u32 = 254;

/// One slot of the nth round: packet `packet` of every `every` new connections goes
/// to the uplink with mark `mark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub every: u32,
    pub packet: u32,
    pub mark: u32,
    pub iface: String,
}

/// Backend-neutral description of our firewall chains in one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallPlan {
    pub family: Family,
    pub mark_mask: u32,
    /// Destinations never balanced (on-link networks and routes of the uplinks; for
    /// IPv6 also link-local and multicast).
    pub exclude: Vec<IpNet>,
    /// The nth round for new outbound connections, in rule order.
    pub slots: Vec<Slot>,
    /// New connections arriving on `iface` get `mark`, so replies leave the same way.
    pub inbound: Vec<(String, u32)>,
    /// Connections we sent out through `iface` (mark `mark`) are masqueraded there.
    pub masquerade: Vec<(String, u32)>,
}

/// A per-interface sysctl value we need (`net/ipv4/conf/IFACE/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SysctlSpec {
    pub iface: String,
    pub name: String,
    pub value: String,
}

impl SysctlSpec {
    pub fn path(&self) -> String {
        format!("/proc/sys/net/ipv4/conf/{}/{}", self.iface, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub namespace: Namespace,
    /// Whether IPv6 connections are balanced (config `ipv6`, or automatic).
    pub ipv6: bool,
    pub uplinks: Vec<PlannedUplink>,
    /// Routes and rules of both families.
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<RuleSpec>,
    /// The IPv4 chains (always present, possibly with an empty round).
    pub firewall: FirewallPlan,
    /// The IPv6 chains; `None` when IPv6 balancing is off, which means none at all.
    pub firewall6: Option<FirewallPlan>,
    pub sysctls: Vec<SysctlSpec>,
    /// Things the user should know (uplinks left out, and why).
    pub warnings: Vec<String>,
}

/// Whether IPv6 balancing is on: as configured, or, when the config says nothing, as
/// soon as two uplinks could share IPv6 connections (with one there is nothing to
/// balance, and NAT66 would only change the machine's behaviour).
pub fn ipv6_enabled(config: &Config, uplinks: &[&Uplink]) -> bool {
    config
        .ipv6
        .unwrap_or_else(|| uplinks.iter().filter(|u| u.ipv6.is_some()).count() >= 2)
}

/// Computes the desired state. Pure and deterministic.
pub fn plan(config: &Config, facts: &Facts) -> Plan {
    let ns = Namespace::from_config(config);
    let mut warnings = Vec::new();

    // Uplinks the config allows, one per interface, in a stable order.
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<(&Uplink, u32)> = Vec::new();
    let mut sorted: Vec<&Uplink> = facts.uplinks.iter().collect();
    sorted.sort_by(|a, b| a.iface.cmp(&b.iface));
    for u in sorted {
        if !seen.insert(u.iface.as_str()) {
            continue;
        }
        let uc = config.uplink(&u.connection_id, &u.iface);
        if uc.enabled {
            candidates.push((u, uc.weight));
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

    let ids = assign_ids(
        candidates.iter().map(|(u, _)| u.iface.as_str()),
        &facts.existing_ids,
        ns.max_uplinks(),
    );

    let mut uplinks = Vec::new();
    for (u, weight) in &candidates {
        let Some(&id) = ids.get(u.iface.as_str()) else {
            warnings.push(format!(
                "{} left out: mark_mask {:#x} has room for {} uplinks only",
                u.iface,
                ns.mark_mask,
                ns.max_uplinks()
            ));
            continue;
        };
        let healthy = facts.health.get(&u.iface).copied().unwrap_or(true);
        uplinks.push(PlannedUplink {
            id,
            iface: u.iface.clone(),
            connection_id: u.connection_id.clone(),
            connection_uuid: u.connection_uuid.clone(),
            ipv4: u.ipv4.clone(),
            ipv6: u.ipv6.clone(),
            ipv6_balanced: ipv6 && u.ipv6.is_some(),
            mark: ns.mark(id),
            inbound_mark: ns.inbound_mark(id),
            table: ns.table(id),
            weight: *weight,
            healthy,
            in_balance: healthy,
        });
    }
    uplinks.sort_by_key(|u| u.id);
    // Every uplink unhealthy: balancing over all beats blackholing the machine.
    if !uplinks.is_empty() && uplinks.iter().all(|u| !u.healthy) {
        warnings.push("every uplink is unhealthy: balancing over all of them".into());
        for u in &mut uplinks {
            u.in_balance = true;
        }
    }

    let mut routes = Vec::new();
    let mut rules = Vec::new();
    let mut sysctls = Vec::new();
    let mut exclude = BTreeSet::new();
    // Link-local and multicast destinations are never balanced: neighbour discovery,
    // router advertisements, MLD and DHCPv6 belong to one link whatever we mark.
    let mut exclude6: BTreeSet<IpNet> = [Ipv6Net::LINK_LOCAL, Ipv6Net::MULTICAST]
        .into_iter()
        .map(IpNet::from)
        .collect();
    for u in &uplinks {
        for family in [Family::V4, Family::V6] {
            if u.serves(family) {
                rules.extend(uplink_rules(&ns, u, family));
            }
        }
        if let Some(v4) = &u.ipv4 {
            routes.extend(uplink_routes(u, v4));
            // Reverse-path filtering consults the connection's mark, so strict rp_filter
            // accepts replies arriving on the uplink we chose. (IPv6 has no rp_filter.)
            sysctls.push(SysctlSpec {
                iface: u.iface.clone(),
                name: "src_valid_mark".into(),
                value: "1".into(),
            });
            // Two uplinks in one subnet: each must answer ARP only for its own address,
            // or the gateway sends both uplinks' downloads down one link (ARP flux).
            // IPv6 needs nothing alike: the kernel answers neighbour solicitations
            // only on the interface that holds the address.
            if uplinks.iter().any(|o| {
                o.id != u.id
                    && o.ipv4
                        .as_ref()
                        .is_some_and(|o4| o4.subnet.contains(v4.address))
            }) {
                for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                    sysctls.push(SysctlSpec {
                        iface: u.iface.clone(),
                        name: name.into(),
                        value: value.into(),
                    });
                }
            }
            exclude.insert(IpNet::from(v4.subnet));
            exclude.extend(v4.local_routes.iter().copied().map(IpNet::from));
        }
        if let (Some(v6), true) = (&u.ipv6, u.ipv6_balanced) {
            routes.extend(uplink_routes6(u, v6));
            // A /128 (DHCPv6) is the address itself, which `LOCAL` already leaves out.
            if v6.subnet.prefix < 128 {
                exclude6.insert(v6.subnet.into());
            }
            exclude6.extend(v6.local_routes.iter().copied().map(IpNet::from));
        }
    }
    rules.sort();
    routes.sort();
    sysctls.sort();

    let firewall = firewall_plan(&ns, &uplinks, Family::V4, exclude, &mut warnings);
    let firewall6 = ipv6.then(|| firewall_plan(&ns, &uplinks, Family::V6, exclude6, &mut warnings));

    Plan {
        namespace: ns,
        ipv6,
        uplinks,
        routes,
        rules,
        firewall,
        firewall6,
        sysctls,
        warnings,
    }
}

/// The three rules of an uplink in one family.
fn uplink_rules(ns: &Namespace, u: &PlannedUplink, family: Family) -> [RuleSpec; 3] {
    [
        // Connections that came in through this uplink are answered through it,
        // whoever the peer is. Only for what this machine sends (`iif lo`, which
        // reverse-path lookups use too): a forwarded connection (a port forwarded to a
        // container) still reaches its destination the main table's way.
        RuleSpec {
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
        RuleSpec {
            family,
            priority: ns.prio_suppress(),
            fwmark: u.mark,
            fwmask: ns.mark_mask & !ns.inbound_flag(),
            iif: None,
            table: MAIN_TABLE,
            suppress_prefixlength: Some(0),
        },
        // ... and everything else leaves through this uplink.
        RuleSpec {
            family,
            priority: ns.prio_outbound(),
            fwmark: u.mark,
            fwmask: ns.mark_mask & !ns.inbound_flag(),
            iif: None,
            table: u.table,
            suppress_prefixlength: None,
        },
    ]
}

/// The chains of one family: the nth round over the uplinks serving it, inbound marks
/// and masquerading for each of them.
fn firewall_plan(
    ns: &Namespace,
    uplinks: &[PlannedUplink],
    family: Family,
    exclude: BTreeSet<IpNet>,
    warnings: &mut Vec<String>,
) -> FirewallPlan {
    let members: Vec<&PlannedUplink> = uplinks.iter().filter(|u| u.serves(family)).collect();
    let mut balanced: Vec<&PlannedUplink> =
        members.iter().copied().filter(|u| u.in_balance).collect();
    if balanced.is_empty() && !members.is_empty() {
        // Only the uplinks of another family are healthy: for this family, balancing
        // over all of its uplinks beats giving it none.
        warnings.push(format!(
            "every {family} uplink is unhealthy: balancing {family} over all of them"
        ));
        balanced = members.clone();
    }
    let order = weighted_round(&balanced.iter().map(|u| u.weight).collect::<Vec<_>>());
    let every = order.len() as u32;
    let slots = order
        .iter()
        .enumerate()
        .map(|(k, &i)| Slot {
            every,
            packet: k as u32,
            mark: balanced[i].mark,
            iface: balanced[i].iface.clone(),
        })
        .collect();
    FirewallPlan {
        family,
        mark_mask: ns.mark_mask,
        exclude: exclude.into_iter().collect(),
        slots,
        inbound: members
            .iter()
            .map(|u| (u.iface.clone(), u.inbound_mark))
            .collect(),
        masquerade: members.iter().map(|u| (u.iface.clone(), u.mark)).collect(),
    }
}

fn uplink_routes(u: &PlannedUplink, v4: &Ip4Uplink) -> Vec<RouteSpec> {
    let address = Some(IpAddr::V4(v4.address));
    let mut routes = vec![RouteSpec {
        table: u.table,
        dst: v4.subnet.into(),
        gateway: None,
        oif: u.iface.clone(),
        prefsrc: address,
        scope_link: true,
        onlink: false,
    }];
    let onlink = v4.gateway.is_some_and(|gw| !v4.subnet.contains(gw));
    if let (Some(gw), true) = (v4.gateway, onlink) {
        routes.push(RouteSpec {
            table: u.table,
            dst: Ipv4Net::new(gw, 32).into(),
            gateway: None,
            oif: u.iface.clone(),
            prefsrc: address,
            scope_link: true,
            onlink: false,
        });
    }
    routes.push(RouteSpec {
        table: u.table,
        dst: IpNet::default_route(Family::V4),
        gateway: v4.gateway.map(IpAddr::V4),
        oif: u.iface.clone(),
        prefsrc: address,
        scope_link: v4.gateway.is_none(),
        onlink,
    });
    routes
}

/// The IPv6 table of an uplink: its on-link prefix and its default route, both through
/// the interface (a link-local gateway means nothing without it).
///
/// No preferred source: IPv6 source selection on the chosen interface already picks one
/// of its addresses, and it knows better than we do which are deprecated or temporary;
/// a fixed source would also be dropped by the kernel when that address goes away.
fn uplink_routes6(u: &PlannedUplink, v6: &Ip6Uplink) -> Vec<RouteSpec> {
    let mut routes = Vec::new();
    if v6.subnet.prefix < 128 {
        routes.push(RouteSpec {
            table: u.table,
            dst: v6.subnet.into(),
            gateway: None,
            oif: u.iface.clone(),
            prefsrc: None,
            scope_link: false,
            onlink: false,
        });
    }
    // A global gateway outside every on-link prefix of the device must be declared
    // on-link, or the kernel refuses the route; link-local ones always are.
    let onlink = v6.gateway.is_some_and(|gw| {
        !Ipv6Net::LINK_LOCAL.contains(gw)
            && !v6.subnet.contains(gw)
            && !v6.local_routes.iter().any(|r| r.contains(gw))
    });
    routes.push(RouteSpec {
        table: u.table,
        dst: IpNet::default_route(Family::V6),
        gateway: v6.gateway.map(IpAddr::V6),
        oif: u.iface.clone(),
        prefsrc: None,
        scope_link: false,
        onlink,
    });
    routes
}

/// Stable ids: an interface keeps the id the kernel already shows for it; newcomers
/// take the smallest free ids. Interfaces beyond `max` get none.
pub fn assign_ids<'a>(
    ifaces: impl IntoIterator<Item = &'a str>,
    existing: &BTreeMap<String, u32>,
    max: u32,
) -> BTreeMap<&'a str, u32> {
    let ifaces: Vec<&str> = ifaces.into_iter().collect();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for &i in &ifaces {
        if let Some(&id) = existing.get(i)
            && (1..=max).contains(&id)
            && taken.insert(id)
        {
            out.insert(i, id);
        }
    }
    let mut free = (1..=max).filter(|id| !taken.contains(id));
    for &i in &ifaces {
        if out.contains_key(i) {
            continue;
        }
        match free.next() {
            Some(id) => {
                out.insert(i, id);
            }
            None => break,
        }
    }
    out
}

/// One round of the nth scheme: a sequence of indices into `weights` in which index
/// `i` appears `weights[i] / g` times (g = gcd of the weights), spread out evenly
/// (smooth weighted round robin), so that every `len` consecutive new connections
/// split exactly by weight.
pub fn weighted_round(weights: &[u32]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x / g).max(1) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        // Highest current wins; ties go to the lower index, for determinism.
        let best = (0..w.len())
            .max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
            .expect("non-empty");
        current[best] -= total;
        order.push(best);
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(third: u8) -> Ip4Uplink {
        Ip4Uplink {
            address: Ipv4Addr::new(10, 0, third, 2),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 0, third, 0), 24),
            gateway: Some(Ipv4Addr::new(10, 0, third, 1)),
            metric: 100 + third as u32,
            local_routes: vec![],
        }
    }

    /// 2001:db8:N::2/64 with a link-local router, as router advertisements give it.
    fn v6(n: u16) -> Ip6Uplink {
        Ip6Uplink {
            address: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 2),
            subnet: Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 0), 64),
            gateway: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            metric: 100 + n as u32,
            local_routes: vec![Ipv6Net::new(
                Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 0),
                64,
            )],
        }
    }

    fn uplink(iface: &str, third: u8) -> Uplink {
        Uplink::v4(
            iface,
            &format!("conn-{iface}"),
            &format!("uuid-{iface}"),
            v4(third),
        )
    }

    fn dual(iface: &str, n: u8) -> Uplink {
        Uplink {
            ipv6: Some(v6(n.into())),
            ..uplink(iface, n)
        }
    }

    fn v6_only(iface: &str, n: u8) -> Uplink {
        Uplink {
            ipv4: None,
            ..dual(iface, n)
        }
    }

    fn facts(ups: Vec<Uplink>) -> Facts {
        Facts {
            uplinks: ups,
            ..Default::default()
        }
    }

    #[test]
    fn two_uplinks_alternate() {
        let p = plan(
            &Config::default(),
            &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
        );
        assert_eq!(p.uplinks.len(), 2);
        assert_eq!(p.uplinks[0].mark, 0x0100_0000);
        assert_eq!(p.uplinks[0].table, 6101);
        assert_eq!(p.uplinks[1].mark, 0x0200_0000);
        assert_eq!(p.uplinks[1].inbound_mark, 0x2200_0000);
        let s = &p.firewall.slots;
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].every, s[0].packet, s[0].mark), (2, 0, 0x0100_0000));
        assert_eq!((s[1].every, s[1].packet, s[1].mark), (2, 1, 0x0200_0000));
        // 3 rules and 2 routes per uplink
        assert_eq!(p.rules.len(), 6);
        assert_eq!(p.routes.len(), 4);
        assert!(p.rules.iter().all(|r| r.fwmask & !0x3f00_0000 == 0));
        // outbound rules match the inbound mark too, the inbound rule only its own
        for r in &p.rules {
            if r.priority == 30100 {
                assert_eq!(r.fwmask, 0x3f00_0000);
            } else {
                assert_eq!(r.fwmask, 0x1f00_0000);
            }
        }
        // suppress rule sits between inbound and outbound
        let sup: Vec<_> = p.rules.iter().filter(|r| r.table == MAIN_TABLE).collect();
        assert_eq!(sup.len(), 2);
        assert!(sup.iter().all(|r| r.suppress_prefixlength == Some(0)));
        assert!(
            sup.iter()
                .all(|r| r.priority == 30101 && r.table == MAIN_TABLE)
        );
        assert_eq!(p.firewall.exclude.len(), 2);
    }

    #[test]
    fn no_uplinks_plans_nothing() {
        let p = plan(&Config::default(), &Facts::default());
        assert!(p.uplinks.is_empty() && p.rules.is_empty() && p.routes.is_empty());
        assert!(p.firewall.slots.is_empty());
    }

    #[test]
    fn single_uplink_still_marks() {
        let p = plan(&Config::default(), &facts(vec![uplink("eth0", 1)]));
        assert_eq!(p.firewall.slots.len(), 1);
        assert_eq!(p.firewall.slots[0].every, 1);
    }

    #[test]
    fn disabled_uplink_is_left_out_and_weights_apply() {
        let cfg = Config::parse(
            "[uplinks.conn-eth0]\nweight = 2\n[uplinks.usb0]\nenabled = false\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let p = plan(
            &cfg,
            &facts(vec![
                uplink("eth0", 1),
                uplink("wlan0", 2),
                uplink("usb0", 3),
            ]),
        );
        let names: Vec<_> = p.uplinks.iter().map(|u| u.iface.as_str()).collect();
        assert_eq!(names, ["eth0", "wlan0"]);
        let marks: Vec<_> = p.firewall.slots.iter().map(|s| s.iface.as_str()).collect();
        assert_eq!(marks, ["eth0", "wlan0", "eth0"]);
        assert!(p.firewall.slots.iter().all(|s| s.every == 3));
    }

    #[test]
    fn unhealthy_leaves_balance_but_keeps_table() {
        let mut f = facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]);
        f.health.insert("wlan0".into(), false);
        let p = plan(&Config::default(), &f);
        assert_eq!(p.firewall.slots.len(), 1);
        assert_eq!(p.firewall.slots[0].iface, "eth0");
        assert_eq!(p.routes.len(), 4);
        f.health.insert("eth0".into(), false);
        let p = plan(&Config::default(), &f);
        assert_eq!(p.firewall.slots.len(), 2, "all unhealthy: balance over all");
    }

    #[test]
    fn same_subnet_uplinks_get_arp_sysctls() {
        let mut b = uplink("wlan0", 1);
        b.ipv4.as_mut().unwrap().address = Ipv4Addr::new(10, 0, 1, 3);
        let p = plan(&Config::default(), &facts(vec![uplink("eth0", 1), b]));
        let arp: Vec<_> = p
            .sysctls
            .iter()
            .filter(|s| s.name.starts_with("arp_"))
            .collect();
        assert_eq!(arp.len(), 4);
        // both tables hold the same subnet, each through its own device
        assert_eq!(p.firewall.exclude.len(), 1);
        let p = plan(
            &Config::default(),
            &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
        );
        assert!(p.sysctls.iter().all(|s| s.name == "src_valid_mark"));
    }

    #[test]
    fn point_to_point_and_offlink_gateways() {
        let mut ppp = uplink("ppp0", 9);
        let p4 = ppp.ipv4.as_mut().unwrap();
        p4.gateway = None;
        p4.subnet = Ipv4Net::new(p4.address, 32);
        let mut far = uplink("eth1", 7);
        let f4 = far.ipv4.as_mut().unwrap();
        f4.subnet = Ipv4Net::new(f4.address, 32);
        let p = plan(&Config::default(), &facts(vec![ppp, far]));
        let ppp_default = p
            .routes
            .iter()
            .find(|r| r.oif == "ppp0" && r.dst.prefix() == 0)
            .unwrap();
        assert!(ppp_default.gateway.is_none() && ppp_default.scope_link);
        let far_default = p
            .routes
            .iter()
            .find(|r| r.oif == "eth1" && r.dst.prefix() == 0)
            .unwrap();
        assert!(far_default.onlink);
        assert!(p.routes.iter().any(
            |r| r.oif == "eth1" && r.dst == Ipv4Net::new(Ipv4Addr::new(10, 0, 7, 1), 32).into()
        ));
    }

    #[test]
    fn too_many_uplinks_warns() {
        let cfg = Config {
            mark_mask: 0x7,
            ..Config::default()
        };
        let ups: Vec<_> = (0..5).map(|i| uplink(&format!("eth{i}"), i)).collect();
        let p = plan(&cfg, &facts(ups));
        assert_eq!(p.uplinks.len(), 3);
        assert_eq!(p.warnings.len(), 2);
    }

    fn v6_of(p: &Plan) -> (Vec<&RouteSpec>, Vec<&RuleSpec>) {
        (
            p.routes
                .iter()
                .filter(|r| r.family() == Family::V6)
                .collect(),
            p.rules.iter().filter(|r| r.family == Family::V6).collect(),
        )
    }

    #[test]
    fn dual_stack_uplinks_balance_both_families() {
        let p = plan(
            &Config::default(),
            &facts(vec![dual("eth0", 1), dual("wlan0", 2)]),
        );
        assert!(p.ipv6);
        // One identity for both families: the same mark and table number.
        assert_eq!(p.uplinks[0].table, 6101);
        assert!(p.uplinks.iter().all(|u| u.ipv6_balanced));
        assert_eq!((p.routes.len(), p.rules.len()), (8, 12));
        let (routes6, rules6) = v6_of(&p);
        assert_eq!((routes6.len(), rules6.len()), (4, 6));
        for (r4, r6) in p
            .rules
            .iter()
            .filter(|r| r.family == Family::V4)
            .zip(&rules6)
        {
            assert_eq!(
                (r4.priority, r4.fwmark, r4.fwmask, r4.table, &r4.iif),
                (r6.priority, r6.fwmark, r6.fwmask, r6.table, &r6.iif)
            );
        }
        // The link-local router needs the interface, which every route names; IPv6
        // routes carry no source address and no scope.
        let default6 = routes6
            .iter()
            .find(|r| r.oif == "eth0" && r.dst.prefix() == 0)
            .unwrap();
        assert_eq!(default6.gateway, Some("fe80::1".parse().unwrap()));
        assert!(!default6.onlink);
        assert!(routes6.iter().all(|r| r.prefsrc.is_none() && !r.scope_link));
        assert!(
            routes6
                .iter()
                .any(|r| r.table == 6102 && r.dst.to_string() == "2001:db8:2::/64")
        );
        // No sysctl for IPv6 (it has no rp_filter or ARP).
        assert_eq!(p.sysctls.len(), 2);
        let f6 = p.firewall6.as_ref().unwrap();
        assert_eq!(f6.family, Family::V6);
        let s: Vec<_> = f6
            .slots
            .iter()
            .map(|s| (s.every, s.packet, s.mark))
            .collect();
        assert_eq!(s, [(2, 0, 0x0100_0000), (2, 1, 0x0200_0000)]);
        let excl: Vec<String> = f6.exclude.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            excl,
            [
                "2001:db8:1::/64",
                "2001:db8:2::/64",
                "fe80::/10",
                "ff00::/8"
            ]
        );
        assert_eq!(f6.masquerade.len(), 2);
        assert_eq!(f6.inbound[1], ("wlan0".to_string(), 0x2200_0000));
        // The IPv4 side is what it would be without IPv6.
        let v4_only = plan(
            &Config::default(),
            &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
        );
        assert_eq!(p.firewall, v4_only.firewall);
        assert_eq!(p.sysctls, v4_only.sysctls);
        assert!(!v4_only.ipv6 && v4_only.firewall6.is_none());
    }

    #[test]
    fn ipv6_automatic_and_configured() {
        let parse = |s: &str| Config::parse(s, std::path::Path::new("x.toml")).unwrap();
        // One IPv6 uplink: nothing to balance, so nothing IPv6 at all ...
        let one = facts(vec![dual("eth0", 1), uplink("wlan0", 2)]);
        let p = plan(&Config::default(), &one);
        assert!(!p.ipv6 && p.firewall6.is_none());
        assert!(v6_of(&p).0.is_empty() && v6_of(&p).1.is_empty());
        assert!(!p.uplinks[0].ipv6_balanced && p.uplinks[0].ipv6.is_some());
        // ... unless asked for.
        let p = plan(&parse("ipv6 = true"), &one);
        assert!(p.ipv6);
        assert_eq!(p.firewall6.as_ref().unwrap().slots.len(), 1);
        assert_eq!(v6_of(&p).1.len(), 3);
        // Two, but switched off.
        let two = facts(vec![dual("eth0", 1), dual("wlan0", 2)]);
        let p = plan(&parse("ipv6 = false"), &two);
        assert!(!p.ipv6 && p.firewall6.is_none() && v6_of(&p).1.is_empty());
        assert_eq!(p.rules.len(), 6);
    }

    #[test]
    fn ipv6_only_uplink_gets_an_id_but_nothing_ipv4() {
        let f = facts(vec![dual("eth0", 1), v6_only("wwan0", 2)]);
        let p = plan(&Config::default(), &f);
        assert!(p.ipv6);
        let wwan = p.uplinks.iter().find(|u| u.iface == "wwan0").unwrap();
        assert_eq!((wwan.id, wwan.table), (2, 6102));
        assert!(wwan.ipv4.is_none() && wwan.ipv6_balanced);
        let of_wwan = |fam| {
            p.rules
                .iter()
                .filter(|r| r.table == 6102 && r.family == fam)
                .count()
        };
        assert_eq!((of_wwan(Family::V4), of_wwan(Family::V6)), (0, 2));
        assert!(
            p.routes
                .iter()
                .filter(|r| r.oif == "wwan0")
                .all(|r| r.family() == Family::V6)
        );
        assert!(p.sysctls.iter().all(|s| s.iface == "eth0"));
        // IPv4 balances over eth0 alone, IPv6 over both.
        assert_eq!(p.firewall.slots.len(), 1);
        assert_eq!(p.firewall.masquerade, [("eth0".to_string(), 0x0100_0000)]);
        assert_eq!(p.firewall6.as_ref().unwrap().slots.len(), 2);
        // With IPv6 balancing off it has nothing to take part in: left out, and said so.
        let off = Config {
            ipv6: Some(false),
            ..Config::default()
        };
        let p = plan(&off, &f);
        assert_eq!(p.uplinks.len(), 1);
        assert!(p.warnings.iter().any(|w| w.contains("wwan0")));
    }

    #[test]
    fn weights_enabled_and_health_apply_to_ipv6() {
        let cfg = Config::parse(
            "[uplinks.conn-eth0]\nweight = 2\n[uplinks.usb0]\nenabled = false\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let mut f = facts(vec![dual("eth0", 1), dual("wlan0", 2), dual("usb0", 3)]);
        let p = plan(&cfg, &f);
        let order: Vec<_> = p
            .firewall6
            .as_ref()
            .unwrap()
            .slots
            .iter()
            .map(|s| s.iface.as_str())
            .collect();
        assert_eq!(order, ["eth0", "wlan0", "eth0"]);
        assert!(p.routes.iter().all(|r| r.oif != "usb0"));
        // Only the IPv6-only uplink is healthy: IPv4 falls back to all of its uplinks.
        f.uplinks = vec![dual("eth0", 1), v6_only("wwan0", 2)];
        f.health.insert("eth0".into(), false);
        let p = plan(&Config::default(), &f);
        assert_eq!(p.firewall.slots.len(), 1);
        assert_eq!(p.firewall.slots[0].iface, "eth0");
        let slots6: Vec<_> = p
            .firewall6
            .as_ref()
            .unwrap()
            .slots
            .iter()
            .map(|s| s.iface.as_str())
            .collect();
        assert_eq!(slots6, ["wwan0"]);
        assert!(p.warnings.iter().any(|w| w.contains("every IPv4 uplink")));
    }

    #[test]
    fn ipv6_offlink_global_gateway_and_point_to_point() {
        let mut far = dual("eth1", 7);
        let f6 = far.ipv6.as_mut().unwrap();
        f6.subnet = Ipv6Net::new(f6.address, 128);
        f6.local_routes.clear();
        f6.gateway = Some("2001:db8:7::1".parse().unwrap());
        let mut ppp = dual("ppp0", 9);
        ppp.ipv6.as_mut().unwrap().gateway = None;
        let p = plan(&Config::default(), &facts(vec![far, ppp]));
        let (routes6, _) = v6_of(&p);
        let far_default = routes6.iter().find(|r| r.oif == "eth1").unwrap();
        assert!(far_default.onlink && far_default.dst.prefix() == 0);
        assert_eq!(
            routes6.iter().filter(|r| r.oif == "eth1").count(),
            1,
            "no prefix route for a /128"
        );
        let ppp_default = routes6
            .iter()
            .find(|r| r.oif == "ppp0" && r.dst.prefix() == 0)
            .unwrap();
        assert!(ppp_default.gateway.is_none() && !ppp_default.onlink);
    }

    /// An uplink of any kind: 0 IPv4 only, 1 IPv6 only, 2 dual-stack.
    fn mixed(i: u8, kind: u8) -> Uplink {
        let iface = format!("if{i}");
        match kind {
            0 => uplink(&iface, i),
            1 => v6_only(&iface, i),
            _ => dual(&iface, i),
        }
    }

    fn mixed_set(set: &BTreeMap<u8, u8>) -> Vec<Uplink> {
        set.iter().map(|(&i, &k)| mixed(i, k)).collect()
    }

    fn ipv6_config(v: Option<bool>) -> Config {
        Config {
            ipv6: v,
            ..Config::default()
        }
    }

    #[test]
    fn weighted_round_examples() {
        assert_eq!(weighted_round(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(weighted_round(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(weighted_round(&[4, 2]), vec![0, 1, 0]);
        assert_eq!(weighted_round(&[1, 3]), vec![1, 0, 1, 1]);
        assert!(weighted_round(&[]).is_empty());
    }

    proptest! {
        /// Each uplink appears exactly in proportion to its weight in one round.
        #[test]
        fn round_is_exact(weights in prop::collection::vec(1u32..=100, 1..8)) {
            let order = weighted_round(&weights);
            let g = weights.iter().copied().fold(0, gcd);
            prop_assert_eq!(order.len() as u32, weights.iter().map(|w| w / g).sum::<u32>());
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(order.iter().filter(|&&x| x == i).count() as u32, w / g);
            }
        }

        /// Whatever comes or goes beside it, an uplink keeps its mark and table.
        #[test]
        fn identity_is_stable(
            first in prop::collection::btree_set(0u8..12, 1..8),
            second in prop::collection::btree_set(0u8..12, 1..8),
        ) {
            let cfg = Config::default();
            let ups = |set: &BTreeSet<u8>| set.iter().map(|&i| uplink(&format!("if{i}"), i)).collect::<Vec<_>>();
            let p1 = plan(&cfg, &facts(ups(&first)));
            // Ids as the kernel would show them after applying p1.
            let existing: BTreeMap<String, u32> = p1.uplinks.iter().map(|u| (u.iface.clone(), u.id)).collect();
            let p2 = plan(&cfg, &Facts { uplinks: ups(&second), existing_ids: existing, ..Default::default() });
            for u2 in &p2.uplinks {
                if let Some(u1) = p1.uplinks.iter().find(|u| u.iface == u2.iface) {
                    prop_assert_eq!((u1.mark, u1.table), (u2.mark, u2.table));
                }
            }
            // ids are unique and within range
            let ids: BTreeSet<u32> = p2.uplinks.iter().map(|u| u.id).collect();
            prop_assert_eq!(ids.len(), p2.uplinks.len());
            prop_assert!(ids.iter().all(|&i| (1..=cfg.max_uplinks()).contains(&i)));
            // marks stay inside the mask, and outbound marks never carry the inbound flag
            for u in &p2.uplinks {
                prop_assert_eq!(u.mark & !cfg.mark_mask, 0);
                prop_assert_eq!(u.mark & Namespace::from_config(&cfg).inbound_flag(), 0);
                prop_assert_eq!(u.inbound_mark & !cfg.mark_mask, 0);
            }
        }

        /// Whatever the mix of IPv4-only, IPv6-only and dual-stack uplinks, and however IPv6
        /// balancing is switched, each family gets exactly its uplinks' objects, never a
        /// mixed-family route, and an exact round by weight.
        #[test]
        fn families_are_consistent(
            set in prop::collection::btree_map(0u8..12, 0u8..3, 0..8),
            weights in prop::collection::vec(1u32..=5, 12),
            ipv6 in prop::option::of(any::<bool>()),
        ) {
            let mut text = String::new();
            if let Some(v) = ipv6 {
                text += &format!("ipv6 = {v}\n");
            }
            for (i, w) in weights.iter().enumerate() {
                text += &format!("[uplinks.if{i}]\nweight = {w}\n");
            }
            let cfg = Config::parse(&text, std::path::Path::new("x.toml")).unwrap();
            let ups = mixed_set(&set);
            let p = plan(&cfg, &facts(ups.clone()));
            let v6_uplinks = ups.iter().filter(|u| u.ipv6.is_some()).count();
            prop_assert_eq!(p.ipv6, ipv6.unwrap_or(v6_uplinks >= 2));
            prop_assert_eq!(p.firewall6.is_some(), p.ipv6);
            for r in &p.routes {
                for a in r.gateway.iter().chain(&r.prefsrc) {
                    prop_assert_eq!(Family::of(*a), r.family());
                }
                prop_assert!(p.ipv6 || r.family() == Family::V4);
            }
            for u in &p.uplinks {
                let rules = |fam| p.rules.iter().filter(|r| r.family == fam && r.fwmark & !p.namespace.inbound_flag() == u.mark).count();
                prop_assert_eq!(rules(Family::V4), if u.ipv4.is_some() { 3 } else { 0 });
                prop_assert_eq!(rules(Family::V6), if u.ipv6_balanced { 3 } else { 0 });
                prop_assert_eq!(u.ipv6_balanced, p.ipv6 && u.ipv6.is_some());
                prop_assert!(u.ipv4.is_some() || u.ipv6_balanced, "{} takes part in nothing", u.iface);
            }
            // Every uplink with a family we balance is planned.
            let planned = ups.iter().filter(|u| u.ipv4.is_some() || (p.ipv6 && u.ipv6.is_some())).count();
            prop_assert_eq!(p.uplinks.len(), planned);
            for (fam, fw) in [(Family::V4, Some(&p.firewall)), (Family::V6, p.firewall6.as_ref())] {
                let Some(fw) = fw else { continue };
                prop_assert_eq!(fw.family, fam);
                let members: Vec<&PlannedUplink> = p.uplinks.iter().filter(|u| u.serves(fam)).collect();
                let g = members.iter().map(|u| u.weight).fold(0, gcd).max(1);
                prop_assert_eq!(fw.slots.len() as u32, members.iter().map(|u| u.weight / g).sum::<u32>());
                for u in &members {
                    prop_assert_eq!(fw.slots.iter().filter(|s| s.mark == u.mark).count() as u32, u.weight / g);
                }
                prop_assert_eq!(fw.masquerade.len(), members.len());
                prop_assert!(fw.exclude.iter().all(|n| n.family() == fam));
                if fam == Family::V6 {
                    prop_assert!(fw.exclude.contains(&Ipv6Net::LINK_LOCAL.into()));
                    prop_assert!(fw.exclude.contains(&Ipv6Net::MULTICAST.into()));
                }
            }
        }

        /// An uplink keeps its id whatever comes or goes beside it, in either family, and
        /// when IPv6 balancing switches on or off.
        #[test]
        fn identity_is_stable_across_families(
            first in prop::collection::btree_map(0u8..12, 0u8..3, 1..8),
            second in prop::collection::btree_map(0u8..12, 0u8..3, 1..8),
            ipv6_first in prop::option::of(any::<bool>()),
            ipv6_second in prop::option::of(any::<bool>()),
        ) {
            let p1 = plan(&ipv6_config(ipv6_first), &facts(mixed_set(&first)));
            let existing: BTreeMap<String, u32> = p1.uplinks.iter().map(|u| (u.iface.clone(), u.id)).collect();
            let p2 = plan(&ipv6_config(ipv6_second), &Facts { uplinks: mixed_set(&second), existing_ids: existing, ..Default::default() });
            for u2 in &p2.uplinks {
                if let Some(u1) = p1.uplinks.iter().find(|u| u.iface == u2.iface) {
                    prop_assert_eq!((u1.mark, u1.table), (u2.mark, u2.table));
                }
            }
            let ids: BTreeSet<u32> = p2.uplinks.iter().map(|u| u.id).collect();
            prop_assert_eq!(ids.len(), p2.uplinks.len());
            // Tables are per family but numbered alike: a table only ever holds one
            // uplink's routes, in each family.
            for r in &p2.routes {
                let owner = p2.uplinks.iter().find(|u| u.table == r.table).unwrap();
                prop_assert_eq!(&owner.iface, &r.oif);
            }
        }

        /// Planning is deterministic and independent of the order NetworkManager lists devices.
        #[test]
        fn order_independent(set in prop::collection::btree_map(0u8..12, 0u8..3, 0..8)) {
            let cfg = Config::default();
            let ups = mixed_set(&set);
            let mut rev = ups.clone();
            rev.reverse();
            prop_assert_eq!(plan(&cfg, &facts(ups)), plan(&cfg, &facts(rev)));
        }
    }
}
