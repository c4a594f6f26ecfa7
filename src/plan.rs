//! The planner: a pure function from facts (uplinks, config, health, the ids already
//! in the kernel) to the desired kernel state. No I/O here, so it is tested without
//! root, a bus or a network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::config::Config;
use crate::model::{Ipv4Net, Uplink};

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
    pub fn priorities(&self) -> [u32; 3] {
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
    pub address: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mark: u32,
    pub inbound_mark: u32,
    pub table: u32,
    pub weight: u32,
    pub healthy: bool,
    /// Whether new connections may be given to this uplink right now.
    pub in_balance: bool,
}

/// A route in one of our tables.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: String,
    pub prefsrc: Option<Ipv4Addr>,
    /// Scope link (directly reachable) rather than universe.
    pub scope_link: bool,
    /// Gateway outside every on-link prefix of the device (point-to-point style).
    pub onlink: bool,
}

/// An `ip rule` of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleSpec {
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

/// Backend-neutral description of our firewall chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallPlan {
    pub mark_mask: u32,
    /// Destinations never balanced (on-link networks and routes of the uplinks).
    pub exclude: Vec<Ipv4Net>,
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
    pub uplinks: Vec<PlannedUplink>,
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<RuleSpec>,
    pub firewall: FirewallPlan,
    pub sysctls: Vec<SysctlSpec>,
    /// Things the user should know (uplinks left out, and why).
    pub warnings: Vec<String>,
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
            address: u.address,
            subnet: u.subnet,
            gateway: u.gateway,
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
    for u in &uplinks {
        let facts_u = candidates
            .iter()
            .find(|(c, _)| c.iface == u.iface)
            .map(|(c, _)| *c)
            .expect("planned uplink comes from a candidate");
        routes.extend(uplink_routes(u));
        // Connections that came in through this uplink are answered through it, whoever
        // the peer is. Only for what this machine sends (`iif lo`, which reverse-path
        // lookups use too): a forwarded connection (a port forwarded to a container)
        // still reaches its destination the main table's way.
        rules.push(RuleSpec {
            priority: ns.prio_inbound(),
            fwmark: u.inbound_mark,
            fwmask: ns.mark_mask,
            iif: Some("lo".into()),
            table: u.table,
            suppress_prefixlength: None,
        });
        // Both directions (the mask leaves out the inbound flag): whatever the main
        // table routes more specifically than by a default route (LANs, VPNs,
        // container bridges) goes where the main table says ...
        rules.push(RuleSpec {
            priority: ns.prio_suppress(),
            fwmark: u.mark,
            fwmask: ns.mark_mask & !ns.inbound_flag(),
            iif: None,
            table: MAIN_TABLE,
            suppress_prefixlength: Some(0),
        });
        // ... and everything else leaves through this uplink.
        rules.push(RuleSpec {
            priority: ns.prio_outbound(),
            fwmark: u.mark,
            fwmask: ns.mark_mask & !ns.inbound_flag(),
            iif: None,
            table: u.table,
            suppress_prefixlength: None,
        });
        // Reverse-path filtering consults the connection's mark, so strict rp_filter
        // accepts replies arriving on the uplink we chose.
        sysctls.push(SysctlSpec {
            iface: u.iface.clone(),
            name: "src_valid_mark".into(),
            value: "1".into(),
        });
        // Two uplinks in one subnet: each must answer ARP only for its own address,
        // or the gateway sends both uplinks' downloads down one link (ARP flux).
        if uplinks
            .iter()
            .any(|o| o.id != u.id && o.subnet.contains(u.address))
        {
            for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                sysctls.push(SysctlSpec {
                    iface: u.iface.clone(),
                    name: name.into(),
                    value: value.into(),
                });
            }
        }
        exclude.insert(u.subnet);
        exclude.extend(facts_u.local_routes.iter().copied());
    }
    rules.sort();
    routes.sort();
    sysctls.sort();

    let balanced: Vec<&PlannedUplink> = uplinks.iter().filter(|u| u.in_balance).collect();
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

    let firewall = FirewallPlan {
        mark_mask: ns.mark_mask,
        exclude: exclude.into_iter().collect(),
        slots,
        inbound: uplinks
            .iter()
            .map(|u| (u.iface.clone(), u.inbound_mark))
            .collect(),
        masquerade: uplinks.iter().map(|u| (u.iface.clone(), u.mark)).collect(),
    };

    Plan {
        namespace: ns,
        uplinks,
        routes,
        rules,
        firewall,
        sysctls,
        warnings,
    }
}

fn uplink_routes(u: &PlannedUplink) -> Vec<RouteSpec> {
    let mut routes = vec![RouteSpec {
        table: u.table,
        dst: u.subnet,
        gateway: None,
        oif: u.iface.clone(),
        prefsrc: Some(u.address),
        scope_link: true,
        onlink: false,
    }];
    let onlink = u.gateway.is_some_and(|gw| !u.subnet.contains(gw));
    if let (Some(gw), true) = (u.gateway, onlink) {
        routes.push(RouteSpec {
            table: u.table,
            dst: Ipv4Net::new(gw, 32),
            gateway: None,
            oif: u.iface.clone(),
            prefsrc: Some(u.address),
            scope_link: true,
            onlink: false,
        });
    }
    routes.push(RouteSpec {
        table: u.table,
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
        gateway: u.gateway,
        oif: u.iface.clone(),
        prefsrc: Some(u.address),
        scope_link: u.gateway.is_none(),
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

    fn uplink(iface: &str, third: u8) -> Uplink {
        Uplink {
            iface: iface.into(),
            connection_id: format!("conn-{iface}"),
            connection_uuid: format!("uuid-{iface}"),
            address: Ipv4Addr::new(10, 0, third, 2),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 0, third, 0), 24),
            gateway: Some(Ipv4Addr::new(10, 0, third, 1)),
            metric: 100 + third as u32,
            local_routes: vec![],
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
        b.address = Ipv4Addr::new(10, 0, 1, 3);
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
        ppp.gateway = None;
        ppp.subnet = Ipv4Net::new(ppp.address, 32);
        let mut far = uplink("eth1", 7);
        far.subnet = Ipv4Net::new(far.address, 32);
        let p = plan(&Config::default(), &facts(vec![ppp, far]));
        let ppp_default = p
            .routes
            .iter()
            .find(|r| r.oif == "ppp0" && r.dst.prefix == 0)
            .unwrap();
        assert!(ppp_default.gateway.is_none() && ppp_default.scope_link);
        let far_default = p
            .routes
            .iter()
            .find(|r| r.oif == "eth1" && r.dst.prefix == 0)
            .unwrap();
        assert!(far_default.onlink);
        assert!(
            p.routes
                .iter()
                .any(|r| r.oif == "eth1" && r.dst == Ipv4Net::new(Ipv4Addr::new(10, 0, 7, 1), 32))
        );
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

        /// Planning is deterministic and independent of the order NetworkManager lists devices.
        #[test]
        fn order_independent(set in prop::collection::btree_set(0u8..12, 0..8)) {
            let cfg = Config::default();
            let ups: Vec<_> = set.iter().map(|&i| uplink(&format!("if{i}"), i)).collect();
            let mut rev = ups.clone();
            rev.reverse();
            prop_assert_eq!(plan(&cfg, &facts(ups)), plan(&cfg, &facts(rev)));
        }
    }
}
