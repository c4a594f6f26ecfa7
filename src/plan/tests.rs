use super::*;
use crate::testing::{dual, facts, uplink, v6_only};
use proptest::prelude::*;

/// The marks of a family's round for one protocol, in slot order.
fn slots(p: &Plan, family: Family, protocol: Protocol) -> Vec<u32> {
    p.firewall
        .rounds
        .iter()
        .find(|r| r.family == family && r.protocol == protocol)
        .map(|r| r.slots.clone())
        .unwrap_or_default()
}

fn ifaces_of(p: &Plan, marks: &[u32]) -> Vec<String> {
    marks
        .iter()
        .map(|m| {
            p.uplinks
                .iter()
                .find(|u| u.mark == *m)
                .unwrap()
                .iface
                .clone()
        })
        .collect()
}

fn of_family(p: &Plan, f: Family) -> (Vec<&Route>, Vec<&Rule>) {
    (
        p.routes.iter().filter(|r| r.family() == f).collect(),
        p.rules.iter().filter(|r| r.family == f).collect(),
    )
}

fn parse(s: &str) -> Config {
    Config::parse(s, std::path::Path::new("x.toml")).unwrap()
}

#[test]
fn two_uplinks_alternate_in_every_protocol() {
    let p = plan(
        &Config::default(),
        &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
    );
    assert_eq!(p.uplinks.len(), 2);
    assert_eq!(p.uplinks[0].mark, 0x0100_0000);
    assert_eq!(p.uplinks[0].table, 6101);
    assert_eq!(p.uplinks[1].mark, 0x0200_0000);
    assert_eq!(p.uplinks[1].inbound_mark, 0x2200_0000);
    for protocol in Protocol::ALL {
        assert_eq!(
            slots(&p, Family::V4, protocol),
            [0x0100_0000, 0x0200_0000],
            "{protocol:?}"
        );
    }
    assert!(slots(&p, Family::V6, Protocol::Tcp).is_empty());
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
    assert!(
        sup.iter()
            .all(|r| r.suppress_prefixlength == Some(0) && r.priority == 30101)
    );
    assert_eq!(p.firewall.exclude.len(), 2);
    assert_eq!(p.firewall.families, [Family::V4]);
}

#[test]
fn no_uplinks_plans_nothing() {
    let p = plan(&Config::default(), &Facts::default());
    assert!(p.uplinks.is_empty() && p.rules.is_empty() && p.routes.is_empty());
    assert!(p.firewall.rounds.is_empty());
}

#[test]
fn single_uplink_still_marks() {
    let p = plan(&Config::default(), &facts(vec![uplink("eth0", 1)]));
    assert_eq!(slots(&p, Family::V4, Protocol::Tcp), [0x0100_0000]);
}

#[test]
fn disabled_uplink_is_left_out_and_weights_apply() {
    let cfg = parse("[uplinks.conn-eth0]\nweight = 2\n[uplinks.usb0]\nenabled = false\n");
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
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Udp)),
        ["eth0", "wlan0", "eth0"]
    );
}

#[test]
fn unhealthy_leaves_balance_but_keeps_table() {
    let mut f = facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]);
    f.health.insert("wlan0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    assert_eq!(p.routes.len(), 4);
    assert_eq!(
        p.firewall.uplinks.len(),
        2,
        "still masqueraded and inbound-marked"
    );
    f.health.insert("eth0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        slots(&p, Family::V4, Protocol::Tcp).len(),
        2,
        "all unhealthy: balance over all"
    );
}

#[test]
fn same_subnet_uplinks_get_arp_sysctls() {
    let mut b = uplink("wlan0", 1);
    b.ipv4.as_mut().unwrap().address = "10.0.1.3".parse().unwrap();
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
    p4.subnet = IpNet::host(p4.address);
    let mut far = uplink("eth1", 7);
    let f4 = far.ipv4.as_mut().unwrap();
    f4.subnet = IpNet::host(f4.address);
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
    assert!(
        p.routes
            .iter()
            .any(|r| r.oif == "eth1" && r.dst == "10.0.7.1/32".parse().unwrap())
    );
}

/// Every route NetworkManager gives the device goes into the uplink's table too, so
/// that replies to hosts on any of its networks leave through it.
#[test]
fn device_routes_are_copied_into_the_table() {
    let mut u = uplink("eth0", 1);
    u.ipv4.as_mut().unwrap().routes = vec![
        DeviceRoute {
            dst: "10.0.1.0/24".parse().unwrap(),
            via: None,
        },
        DeviceRoute {
            dst: "192.168.50.0/24".parse().unwrap(),
            via: Some("10.0.1.254".parse().unwrap()),
        },
    ];
    let p = plan(&Config::default(), &facts(vec![u]));
    let (routes, _) = of_family(&p, Family::V4);
    let lan = routes
        .iter()
        .find(|r| r.dst == "192.168.50.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(lan.gateway, Some("10.0.1.254".parse().unwrap()));
    assert_eq!(lan.prefsrc, Some("10.0.1.2".parse().unwrap()));
    assert!(!lan.scope_link);
    assert_eq!(
        routes
            .iter()
            .filter(|r| r.dst == "10.0.1.0/24".parse().unwrap())
            .count(),
        1,
        "the subnet's own route once"
    );
    assert!(
        p.firewall
            .exclude
            .contains(&"192.168.50.0/24".parse().unwrap())
    );
}

/// A DHCPv6 address comes alone (/128); the on-link prefix of the router advertisement
/// must still be in the uplink's table, or replies to hosts on the LAN go through the
/// router.
#[test]
fn dhcpv6_address_gets_its_advertised_prefix_on_link() {
    let mut u = dual("eth0", 1);
    let s6 = u.ipv6.as_mut().unwrap();
    s6.address = "2001:db8:1::1a0".parse().unwrap();
    s6.subnet = IpNet::host(s6.address);
    let mut w = dual("wlan0", 2);
    w.ipv6.as_mut().unwrap().routes.clear();
    let p = plan(&Config::default(), &facts(vec![u, w]));
    let (routes6, _) = of_family(&p, Family::V6);
    let onlink = routes6
        .iter()
        .find(|r| r.oif == "eth0" && r.dst == "2001:db8:1::/64".parse().unwrap())
        .expect("the advertised prefix in eth0's table");
    assert!(onlink.gateway.is_none());
    assert!(
        !routes6.iter().any(|r| r.dst.is_host()),
        "no route for the /128 itself"
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
fn dual_stack_uplinks_balance_both_families() {
    let p = plan(
        &Config::default(),
        &facts(vec![dual("eth0", 1), dual("wlan0", 2)]),
    );
    assert!(p.ipv6);
    assert_eq!(p.firewall.families, [Family::V4, Family::V6]);
    // One identity for both families: the same mark and table number.
    assert_eq!(p.uplinks[0].table, 6101);
    assert!(p.uplinks.iter().all(|u| u.ipv6_balanced));
    assert_eq!((p.routes.len(), p.rules.len()), (8, 12));
    let (routes6, rules6) = of_family(&p, Family::V6);
    assert_eq!((routes6.len(), rules6.len()), (4, 6));
    let (_, rules4) = of_family(&p, Family::V4);
    for (r4, r6) in rules4.iter().zip(&rules6) {
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
    assert_eq!(
        slots(&p, Family::V6, Protocol::Tcp),
        [0x0100_0000, 0x0200_0000]
    );
    let excl6: Vec<String> = p
        .firewall
        .exclude_of(Family::V6)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        excl6,
        [
            "2001:db8:1::/64",
            "2001:db8:2::/64",
            "fe80::/10",
            "ff00::/8"
        ]
    );
    assert!(p.firewall.uplinks.iter().all(|u| u.serves(Family::V6)));
    // The IPv4 side is what it would be without IPv6.
    let v4_only = plan(
        &Config::default(),
        &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]),
    );
    assert_eq!(
        p.firewall.rounds_of(Family::V4).collect::<Vec<_>>(),
        v4_only.firewall.rounds_of(Family::V4).collect::<Vec<_>>()
    );
    assert_eq!(p.sysctls, v4_only.sysctls);
    assert!(!v4_only.ipv6);
}

#[test]
fn ipv6_automatic_and_configured() {
    // One IPv6 uplink: nothing to balance, so nothing IPv6 at all ...
    let one = facts(vec![dual("eth0", 1), uplink("wlan0", 2)]);
    let p = plan(&Config::default(), &one);
    assert!(!p.ipv6 && !p.firewall.has(Family::V6));
    assert!(of_family(&p, Family::V6).0.is_empty() && of_family(&p, Family::V6).1.is_empty());
    assert!(!p.uplinks[0].ipv6_balanced && p.uplinks[0].ipv6.is_some());
    assert!(p.firewall.exclude_of(Family::V6).next().is_none());
    // ... unless asked for.
    let p = plan(&parse("ipv6 = true"), &one);
    assert!(p.ipv6);
    assert_eq!(slots(&p, Family::V6, Protocol::Tcp).len(), 1);
    assert_eq!(of_family(&p, Family::V6).1.len(), 3);
    // Two, but switched off.
    let two = facts(vec![dual("eth0", 1), dual("wlan0", 2)]);
    let p = plan(&parse("ipv6 = false"), &two);
    assert!(!p.ipv6 && !p.firewall.has(Family::V6) && of_family(&p, Family::V6).1.is_empty());
    assert_eq!(p.rules.len(), 6);
}

#[test]
fn ipv6_only_uplink_gets_an_id_but_nothing_ipv4() {
    let f = facts(vec![dual("eth0", 1), v6_only("wwan0", 2)]);
    let p = plan(&Config::default(), &f);
    assert!(p.ipv6);
    let wwan = p.uplink("wwan0").unwrap();
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
    assert_eq!(slots(&p, Family::V4, Protocol::Tcp), [0x0100_0000]);
    assert_eq!(
        p.firewall
            .uplinks_of(Family::V4)
            .map(|u| u.iface.as_str())
            .collect::<Vec<_>>(),
        ["eth0"]
    );
    assert_eq!(slots(&p, Family::V6, Protocol::Tcp).len(), 2);
    // With IPv6 balancing off it has nothing to take part in: left out, and said so.
    let p = plan(&parse("ipv6 = false"), &f);
    assert_eq!(p.uplinks.len(), 1);
    assert!(p.warnings.iter().any(|w| w.contains("wwan0")));
}

#[test]
fn weights_enabled_and_health_apply_to_ipv6() {
    let cfg = parse("[uplinks.conn-eth0]\nweight = 2\n[uplinks.usb0]\nenabled = false\n");
    let mut f = facts(vec![dual("eth0", 1), dual("wlan0", 2), dual("usb0", 3)]);
    let p = plan(&cfg, &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V6, Protocol::Tcp)),
        ["eth0", "wlan0", "eth0"]
    );
    assert!(p.routes.iter().all(|r| r.oif != "usb0"));
    // Only the IPv6-only uplink is healthy: IPv4 falls back to all of its uplinks.
    f.uplinks = vec![dual("eth0", 1), v6_only("wwan0", 2)];
    f.health.insert("eth0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V6, Protocol::Tcp)),
        ["wwan0"]
    );
    assert!(p.warnings.iter().any(|w| w.contains("every IPv4 uplink")));
}

#[test]
fn ipv6_offlink_global_gateway_and_point_to_point() {
    let mut far = dual("eth1", 7);
    let f6 = far.ipv6.as_mut().unwrap();
    f6.subnet = IpNet::host(f6.address);
    f6.routes.clear();
    f6.gateway = Some("2001:db8:7::1".parse().unwrap());
    let mut ppp = dual("ppp0", 9);
    ppp.ipv6.as_mut().unwrap().gateway = None;
    let p = plan(&Config::default(), &facts(vec![far, ppp]));
    let (routes6, _) = of_family(&p, Family::V6);
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

/// The primary uplink's address (lowest metric: the source of every unbound socket) is
/// kept whenever another uplink could carry its connections; a departed address while
/// connections marked for a planned uplink still use it as their translated source, not
/// once it is an uplink's again, not for connections of uplinks that are gone too.
#[test]
fn primary_and_departed_addresses_in_use_are_kept() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut f = facts(vec![uplink("wlan0", 2), uplink("usb0", 3)]);
    f.ids.kernel = [("wlan0".to_string(), 2), ("usb0".to_string(), 3)].into();
    // wlan0 (metric 102) is the primary now; nothing read from conntrack.
    assert_eq!(plan(&Config::default(), &f).keep, [ip("10.0.2.2")]);
    // One uplink alone: nothing to translate, nothing to keep.
    let single = facts(vec![uplink("wlan0", 2)]);
    assert!(plan(&Config::default(), &single).keep.is_empty());
    let gone = ip("10.0.1.2");
    f.departed = [gone].into();
    f.translated = Some(vec![(gone, 0x0200_0000), (gone, 0x0900_0000)]);
    assert_eq!(plan(&Config::default(), &f).keep, [gone, ip("10.0.2.2")]);
    f.translated = Some(vec![(gone, 0x0900_0000)]);
    assert_eq!(plan(&Config::default(), &f).keep, [ip("10.0.2.2")]);
    // Conntrack unreadable: what departed stays kept rather than break connections.
    f.translated = None;
    assert_eq!(plan(&Config::default(), &f).keep, [gone, ip("10.0.2.2")]);
    // Back on an uplink: its own again.
    f.uplinks.push(uplink("eth0", 1));
    f.translated = Some(vec![(gone, 0x0200_0000)]);
    assert_eq!(plan(&Config::default(), &f).keep, [gone]);
}

fn metered(mut u: Uplink) -> Uplink {
    u.metered = true;
    u
}

fn roles(p: &Plan) -> Vec<(&str, Role)> {
    p.uplinks
        .iter()
        .map(|u| (u.iface.as_str(), u.role))
        .collect()
}

/// Issue 11: a metered uplink carries new connections only while no unmetered one is
/// usable, and keeps its table, rules, NAT and inbound marks all along.
#[test]
fn metered_uplink_is_a_backup_until_no_primary_is_usable() {
    let ups = || {
        vec![
            uplink("eth0", 1),
            uplink("wlan0", 2),
            metered(uplink("usb0", 3)),
        ]
    };
    let mut f = facts(ups());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        roles(&p),
        [
            ("eth0", Role::Primary),
            ("usb0", Role::Backup),
            ("wlan0", Role::Primary)
        ]
    );
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0", "wlan0"]
    );
    let usb0 = p.uplink("usb0").unwrap();
    assert!(!usb0.in_balance && usb0.balanced.is_empty());
    assert_eq!(p.rules.len(), 9, "the backup keeps its rules");
    assert!(p.routes.iter().any(|r| r.oif == "usb0"), "and its table");
    assert_eq!(p.firewall.uplinks.len(), 3, "and its NAT and inbound mark");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // One primary down: the other carries everything.
    f.health.insert("eth0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["wlan0"]
    );
    // Both down: the backup.
    f.health.insert("wlan0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["usb0"]
    );
    assert!(
        p.warnings.is_empty(),
        "a healthy backup is no fallback: {:?}",
        p.warnings
    );
    // The backup down too: balancing over the primaries beats blackholing.
    f.health.insert("usb0".into(), false.into());
    let p = plan(&Config::default(), &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0", "wlan0"]
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("every IPv4 uplink is unhealthy"))
    );
    // The primaries gone in NetworkManager (the dispatcher's case): the backup.
    let only = facts(vec![metered(uplink("usb0", 3))]);
    let p = plan(&Config::default(), &only);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["usb0"]
    );
    // A primary back: it takes new connections back at once.
    let p = plan(&Config::default(), &facts(ups()));
    assert!(!p.uplink("usb0").unwrap().in_balance);
}

#[test]
fn metered_policy_and_roles_from_the_config() {
    let ups = || facts(vec![uplink("eth0", 1), metered(uplink("usb0", 3))]);
    let p = plan(&parse("metered = \"balance\""), &ups());
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0", "usb0"]
    );
    // never: no new connections, even with nothing else usable; table and NAT stay.
    let never = parse("metered = \"never\"");
    let p = plan(&never, &ups());
    assert_eq!(p.uplink("usb0").unwrap().role, Role::Never);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    let mut f = ups();
    f.health.insert("eth0".into(), false.into());
    let p = plan(&never, &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    let p = plan(&never, &facts(vec![metered(uplink("usb0", 3))]));
    assert!(p.firewall.rounds.is_empty());
    assert_eq!(p.firewall.uplinks.len(), 1);
    assert_eq!(p.rules.len(), 3);
    // A role of its own wins over metering, either way.
    let cfg = parse("[uplinks.usb0]\nrole = \"primary\"\n[uplinks.conn-eth0]\nrole = \"backup\"");
    let p = plan(&cfg, &ups());
    assert_eq!(roles(&p), [("eth0", Role::Backup), ("usb0", Role::Primary)]);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["usb0"]
    );
    assert_eq!(role_of(None, false, Metered::Never), Role::Primary);
}

/// Backups stand in per family: a primary with IPv4 only leaves IPv6 to the backup,
/// and a primary whose IPv6 is down hands over IPv6 alone.
#[test]
fn backups_stand_in_per_family() {
    let cfg = parse("ipv6 = true");
    let mut f = facts(vec![dual("eth0", 1), metered(dual("usb0", 3))]);
    let p = plan(&cfg, &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V6, Protocol::Tcp)),
        ["eth0"]
    );
    f.health.insert(
        "eth0".into(),
        Verdict {
            ipv4: true,
            ipv6: false,
        },
    );
    let p = plan(&cfg, &f);
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V6, Protocol::Tcp)),
        ["usb0"]
    );
    let eth0 = p.uplink("eth0").unwrap();
    assert!(eth0.in_balance && !eth0.healthy);
    assert_eq!(eth0.balanced, [Family::V4]);
    assert_eq!(p.uplink("usb0").unwrap().balanced, [Family::V6]);
    let p = plan(
        &cfg,
        &facts(vec![uplink("eth0", 1), metered(dual("usb0", 3))]),
    );
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V4, Protocol::Tcp)),
        ["eth0"]
    );
    assert_eq!(
        ifaces_of(&p, &slots(&p, Family::V6, Protocol::Tcp)),
        ["usb0"]
    );
}

#[test]
fn verdicts_read_old_and_new_forms() {
    let v: Verdicts =
        serde_json::from_str(r#"{"a": false, "b": {"ipv4": true, "ipv6": false}}"#).unwrap();
    assert_eq!(v["a"], Verdict::from(false));
    assert_eq!(
        v["b"],
        Verdict {
            ipv4: true,
            ipv6: false
        }
    );
    assert!(!v["b"].healthy() && v["b"].family(Family::V4));
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

/// The ids a plan leaves in the kernel, as the next run's reading would find them.
fn kernel_ids(p: &Plan) -> KnownIds {
    KnownIds {
        kernel: p.uplinks.iter().map(|u| (u.iface.clone(), u.id)).collect(),
        ..KnownIds::default()
    }
}

proptest! {
    /// Whatever comes or goes beside it, an uplink keeps its mark and table.
    #[test]
    fn identity_is_stable(
        first in prop::collection::btree_set(0u8..12, 1..8),
        second in prop::collection::btree_set(0u8..12, 1..8),
    ) {
        let cfg = Config::default();
        let ups = |set: &BTreeSet<u8>| set.iter().map(|&i| uplink(&format!("if{i}"), i)).collect::<Vec<_>>();
        let p1 = plan(&cfg, &facts(ups(&first)));
        let p2 = plan(&cfg, &Facts { uplinks: ups(&second), ids: kernel_ids(&p1), ..Default::default() });
        for u2 in &p2.uplinks {
            if let Some(u1) = p1.uplink(&u2.iface) {
                prop_assert_eq!((u1.mark, u1.table), (u2.mark, u2.table));
            }
        }
        let ids: BTreeSet<u32> = p2.uplinks.iter().map(|u| u.id).collect();
        prop_assert_eq!(ids.len(), p2.uplinks.len());
        prop_assert!(ids.iter().all(|&i| (1..=cfg.max_uplinks()).contains(&i)));
        let ns = cfg.namespace();
        for u in &p2.uplinks {
            prop_assert_eq!(u.mark & !cfg.mark_mask, 0);
            prop_assert_eq!(u.mark & ns.inbound_flag(), 0);
            prop_assert_eq!(u.inbound_mark & !cfg.mark_mask, 0);
        }
    }

    /// Whatever the mix of IPv4-only, IPv6-only and dual-stack uplinks, and however IPv6
    /// balancing is switched, each family gets exactly its uplinks' objects, never a
    /// mixed-family route, and an exact round by weight for every protocol.
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
        let cfg = parse(&text);
        let ups = mixed_set(&set);
        let p = plan(&cfg, &facts(ups.clone()));
        let v6_uplinks = ups.iter().filter(|u| u.ipv6.is_some()).count();
        prop_assert_eq!(p.ipv6, ipv6.unwrap_or(v6_uplinks >= 2));
        prop_assert_eq!(p.firewall.has(Family::V6), p.ipv6);
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
        let planned = ups.iter().filter(|u| u.ipv4.is_some() || (p.ipv6 && u.ipv6.is_some())).count();
        prop_assert_eq!(p.uplinks.len(), planned);
        for fam in p.firewall.families.clone() {
            let members: Vec<&PlannedUplink> = p.uplinks.iter().filter(|u| u.serves(fam)).collect();
            let g = members.iter().map(|u| u.weight).fold(0, round::gcd).max(1);
            for protocol in Protocol::ALL {
                let s = slots(&p, fam, protocol);
                prop_assert_eq!(s.len() as u32, members.iter().map(|u| u.weight / g).sum::<u32>());
                for u in &members {
                    prop_assert_eq!(s.iter().filter(|m| **m == u.mark).count() as u32, u.weight / g);
                }
            }
            prop_assert_eq!(p.firewall.uplinks_of(fam).count(), members.len());
        }
        if p.ipv6 {
            prop_assert!(p.firewall.exclude.contains(&IpNet::link_local6()));
            prop_assert!(p.firewall.exclude.contains(&IpNet::multicast6()));
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
        let p2 = plan(&ipv6_config(ipv6_second), &Facts { uplinks: mixed_set(&second), ids: kernel_ids(&p1), ..Default::default() });
        for u2 in &p2.uplinks {
            if let Some(u1) = p1.uplink(&u2.iface) {
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

    /// Whatever the uplinks, roles and verdicts: a backup is never in a family's round
    /// while a primary of that family is healthy in it, a `never` uplink is in none, a
    /// healthy uplink of the preferred kind is never left out, a round is never empty
    /// while some uplink may take it, and every uplink keeps its NAT and inbound marks.
    #[test]
    fn backups_only_when_no_primary_is_usable(
        set in prop::collection::btree_map(0u8..10, (0u8..3, 0u8..3, any::<bool>(), any::<bool>()), 1..7),
        policy in 0u8..3,
    ) {
        let policy_text = ["backup", "balance", "never"][policy as usize];
        let mut text = format!("ipv6 = true\nmetered = \"{policy_text}\"\n");
        let mut f = Facts::default();
        for (&i, &(kind, role, h4, h6)) in &set {
            let mut u = mixed(i, kind);
            match role {
                0 => {}
                1 => u.metered = true,
                _ => text += &format!("[uplinks.if{i}]\nrole = \"backup\"\n"),
            }
            f.health.insert(u.iface.clone(), Verdict { ipv4: h4, ipv6: h6 });
            f.uplinks.push(u);
        }
        let p = plan(&parse(&text), &f);
        for family in p.firewall.families.clone() {
            let round: BTreeSet<u32> = slots(&p, family, Protocol::Tcp).into_iter().collect();
            let serving: Vec<&PlannedUplink> = p.uplinks.iter().filter(|u| u.serves(family)).collect();
            let usable = |role: Role| serving.iter().any(|u| u.role == role && u.verdict.family(family));
            for u in &serving {
                let inside = round.contains(&u.mark);
                prop_assert_eq!(inside, u.balanced_in(family));
                prop_assert!(u.role != Role::Never || !inside, "{} is never", u.iface);
                if u.role == Role::Backup && usable(Role::Primary) {
                    prop_assert!(!inside, "{} is a backup while a primary is usable", u.iface);
                }
                let preferred = if usable(Role::Primary) { Role::Primary } else { Role::Backup };
                if u.role == preferred && u.verdict.family(family) {
                    prop_assert!(inside, "{} is healthy and preferred", u.iface);
                }
            }
            let takers = serving.iter().any(|u| u.role != Role::Never);
            prop_assert_eq!(round.is_empty(), !takers);
            prop_assert_eq!(p.firewall.uplinks_of(family).count(), serving.len());
        }
        for u in &p.uplinks {
            prop_assert_eq!(u.in_balance, !u.balanced.is_empty());
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

mod ladder {
    use super::*;
    use crate::kernel::firewall::{Action, Cgroup, Rung, Why};

    fn rungs(p: &Plan, f: impl Fn(&Why) -> bool) -> Vec<&Rung> {
        p.firewall.ladder.iter().filter(|r| f(&r.why)).collect()
    }

    fn mark(p: &Plan, iface: &str) -> u32 {
        p.uplink(iface).unwrap().mark
    }

    /// Rung 3: the addresses of every uplink but the primary (lowest metric) are bound
    /// sources; rung 4: each uplink's name servers, a shared one for the first only.
    #[test]
    fn bound_sources_but_the_primary_and_name_servers() {
        let mut f = facts(vec![
            uplink("eth0", 1),
            uplink("wlan0", 2),
            uplink("usb0", 3),
        ]);
        f.uplinks[0].ipv4.as_mut().unwrap().dns = vec![ip("192.0.2.1"), ip("9.9.9.9")];
        f.uplinks[1].ipv4.as_mut().unwrap().dns = vec![ip("192.0.2.2"), ip("9.9.9.9")];
        f.addresses.insert(
            "wlan0".into(),
            vec![ip("10.0.2.2"), ip("10.0.2.77"), ip("fe80::1")],
        );
        let p = plan(&Config::default(), &f);
        let bound = rungs(&p, |w| matches!(w, Why::BoundSource { .. }));
        let by: Vec<(String, Vec<String>)> = bound
            .iter()
            .map(|r| {
                let Action::Uplink { iface, .. } = &r.action else {
                    panic!("{r:?}")
                };
                let srcs = r.matches.sources.iter().map(|s| s.to_string()).collect();
                (iface.clone(), srcs)
            })
            .collect();
        assert_eq!(
            by,
            [
                ("usb0".to_string(), vec!["10.0.3.2/32".to_string()]),
                (
                    "wlan0".to_string(),
                    vec!["10.0.2.2/32".to_string(), "10.0.2.77/32".to_string()]
                )
            ]
        );
        assert_eq!(rungs(&p, |w| matches!(w, Why::BoundDevice { .. })).len(), 2);
        let dns = rungs(&p, |w| matches!(w, Why::Dns { .. }));
        assert_eq!(dns.len(), 2);
        assert_eq!(dns[0].matches.destinations.len(), 2, "eth0 has both");
        assert_eq!(
            dns[1].matches.destinations,
            [IpNet::host(ip("192.0.2.2"))],
            "9.9.9.9 is eth0's already"
        );
        // The application's choice comes before the network's.
        let pos = |w: fn(&Why) -> bool| p.firewall.ladder.iter().position(|r| w(&r.why));
        assert!(
            pos(|w| matches!(w, Why::BoundSource { .. })) < pos(|w| matches!(w, Why::Dns { .. }))
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Policies: in order after the rest, failover to the first usable uplink, their
    /// own rounds over the usable ones, the general round or a drop when none is.
    #[test]
    fn policies_follow_health_and_fallback() {
        let config = parse(
            "[[policy]]\nname = \"pin\"\nto = [\"198.51.100.0/24\"]\nuplinks = [\"wlan0\", \"conn-eth0\"]\nmode = \"failover\"\n\
             [[policy]]\nname = \"vpn\"\nto = [\"192.0.2.7\"]\nuplinks = [\"usb0\"]\nfallback = false\n\
             [[policy]]\nname = \"web\"\nports = [\"443\"]\nuplinks = [\"eth0\", \"usb0\"]\nsticky = \"5m\"\n\
             [[policy]]\nname = \"lan\"\nto = [\"2001:db8:99::/48\"]\nmode = \"direct\"\n\
             [[policy]]\nname = \"named\"\nto = [\"gone.example\", \"there.example\"]\nuser = \"nosuchuser\"\n",
        );
        let mut f = facts(vec![
            uplink("eth0", 1),
            uplink("wlan0", 2),
            uplink("usb0", 3),
        ]);
        f.resolved
            .insert("there.example".into(), vec![ip("203.0.113.5")]);
        let p = plan(&config, &f);
        let policy = |name: &str| -> Vec<&Rung> {
            rungs(
                &p,
                |w| matches!(w, Why::Policy { name: n, .. } if n == name),
            )
        };
        assert_eq!(
            policy("pin")[0].action,
            Action::Uplink {
                iface: "wlan0".into(),
                mark: mark(&p, "wlan0")
            }
        );
        assert!(
            matches!(&policy("vpn")[0].action, Action::Balance { members, .. } if members == &[mark(&p, "usb0")]),
            "{:?}",
            policy("vpn")
        );
        let Action::Balance {
            rounds,
            members,
            sticky,
            ..
        } = &policy("web")[0].action
        else {
            panic!()
        };
        assert_eq!(members, &[mark(&p, "eth0"), mark(&p, "usb0")]);
        assert_eq!(*sticky, Some(300));
        assert_eq!(rounds.len(), 2, "TCP and UDP: ports without a protocol");
        assert_eq!(policy("web")[0].matches.protocols, [6, 17]);
        // No IPv6 balancing here: the IPv6-only policy has no rung at all.
        assert!(policy("lan").is_empty());
        // A user who does not exist: the policy matches nothing, with a warning.
        assert!(policy("named").is_empty());
        assert!(
            p.warnings.iter().any(|w| w.contains("nosuchuser")),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("gone.example")),
            "{:?}",
            p.warnings
        );

        // wlan0 and usb0 out of balance: failover to eth0, the VPN fails closed, the web
        // round is eth0 alone.
        f.health.insert("wlan0".into(), Verdict::from(false));
        f.health.insert("usb0".into(), Verdict::from(false));
        let p2 = plan(&config, &f);
        let policy2 = |name: &str| -> Action {
            rungs(
                &p2,
                |w| matches!(w, Why::Policy { name: n, .. } if n == name),
            )[0]
            .action
            .clone()
        };
        assert_eq!(
            policy2("pin"),
            Action::Uplink {
                iface: "eth0".into(),
                mark: mark(&p2, "eth0")
            }
        );
        assert_eq!(policy2("vpn"), Action::Drop);
        let Action::Balance { members, .. } = policy2("web") else {
            panic!()
        };
        assert_eq!(members, [mark(&p2, "eth0")]);
        // With fallback (the default), no usable uplink means the general round.
        let general = parse("[[policy]]\nname = \"g\"\nuplinks = [\"usb0\"]\n");
        let p3 = plan(&general, &f);
        assert_eq!(p3.firewall.ladder.last().unwrap().action, Action::General);
        // Policies come after every other rung.
        let first_policy = p
            .firewall
            .ladder
            .iter()
            .position(|r| r.policy().is_some())
            .unwrap();
        assert!(
            p.firewall.ladder[first_policy..]
                .iter()
                .all(|r| r.policy().is_some())
        );
    }

    /// Issue 11 and policies: a policy that names its uplinks uses them whatever their
    /// role (a metered backup named there is used while healthy), judged per family by
    /// the daemon's verdicts; one that names none follows the general balance, backups
    /// standing by. Every uplink of a family unhealthy: all of a policy's, as the
    /// general balance does.
    #[test]
    fn policies_take_health_per_family_and_name_backups_explicitly() {
        let config = parse(
            "[[policy]]\nname = \"named\"\nto = [\"198.51.100.0/24\"]\nuplinks = [\"usb0\", \"eth0\"]\n\
             [[policy]]\nname = \"first\"\nto = [\"192.0.2.0/24\"]\nuplinks = [\"usb0\", \"eth0\"]\nmode = \"failover\"\nfallback = false\n\
             [[policy]]\nname = \"any\"\nports = [\"443\"]\n",
        );
        let mut f = facts(vec![
            uplink("eth0", 1),
            uplink("wlan0", 2),
            metered(uplink("usb0", 3)),
        ]);
        let action = |p: &Plan, name: &str| -> Action {
            rungs(p, |w| matches!(w, Why::Policy { name: n, .. } if n == name))[0]
                .action
                .clone()
        };
        let members = |p: &Plan, name: &str| -> Vec<u32> {
            match action(p, name) {
                Action::Balance { members, .. } => members,
                a => panic!("{name}: {a:?}"),
            }
        };
        let p = plan(&config, &f);
        assert_eq!(p.uplink("usb0").unwrap().role, Role::Backup);
        assert!(!p.uplink("usb0").unwrap().in_balance, "standing by");
        assert_eq!(members(&p, "named"), [mark(&p, "usb0"), mark(&p, "eth0")]);
        assert_eq!(
            action(&p, "first"),
            Action::Uplink {
                iface: "usb0".into(),
                mark: mark(&p, "usb0")
            }
        );
        assert_eq!(members(&p, "any"), [mark(&p, "eth0"), mark(&p, "wlan0")]);

        // usb0 dead (in IPv4, the family balanced here): the named policies leave it.
        f.health.insert(
            "usb0".into(),
            Verdict {
                ipv4: false,
                ipv6: true,
            },
        );
        let p = plan(&config, &f);
        assert_eq!(members(&p, "named"), [mark(&p, "eth0")]);
        assert_eq!(
            action(&p, "first"),
            Action::Uplink {
                iface: "eth0".into(),
                mark: mark(&p, "eth0")
            }
        );

        // Every uplink dead in IPv4: all of them, rather than failing closed.
        for iface in ["eth0", "wlan0", "usb0"] {
            f.health.insert(iface.into(), Verdict::from(false));
        }
        let p = plan(&config, &f);
        assert_eq!(members(&p, "named"), [mark(&p, "usb0"), mark(&p, "eth0")]);
        assert!(matches!(action(&p, "first"), Action::Uplink { iface, .. } if iface == "usb0"));
    }

    /// `run --via`: through its uplink even out of balance; dropped once it is gone.
    #[test]
    fn run_via_pins_or_fails_closed() {
        let mut f = facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]);
        let cg = |iface: &str| Cgroup {
            path: format!("nm-multiwan/via-{iface}"),
            id: 7,
            level: 2,
        };
        f.via = vec![("wlan0".into(), cg("wlan0")), ("usb0".into(), cg("usb0"))];
        f.health.insert("wlan0".into(), Verdict::from(false));
        let p = plan(&Config::default(), &f);
        let via: Vec<(&Why, &Action)> = p
            .firewall
            .ladder
            .iter()
            .filter(|r| matches!(r.why, Why::Via { .. }))
            .map(|r| (&r.why, &r.action))
            .collect();
        assert_eq!(via.len(), 2);
        assert!(matches!(via[0].1, Action::Uplink { iface, .. } if iface == "wlan0"));
        assert_eq!(via[1].1, &Action::Drop);
    }
}

/// Router mode: a forwarded connection's original source is a LAN host's address,
/// never one of ours to keep on the keeper interface.
#[test]
fn lan_sources_of_forwarded_connections_are_never_kept() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut f = facts(vec![uplink("wlan0", 2), uplink("usb0", 3)]);
    let gone = ip("10.0.1.2");
    f.departed = [gone].into();
    f.translated = Some(vec![(gone, 0x0200_0000), (ip("10.42.0.136"), 0x0200_0000)]);
    assert_eq!(plan(&Config::default(), &f).keep, [gone, ip("10.0.2.2")]);
}

/// Shared connections are LANs, so are the devices `lan` names (an uplink among them
/// stops being one); their networks are never balanced; other devices are neither.
#[test]
fn lans_are_the_shared_and_the_named_ones() {
    use crate::model::Lan;
    let lan = |iface: &str, shared: bool, net: &str| Lan {
        iface: iface.into(),
        connection_id: format!("c-{iface}"),
        shared,
        networks: vec![net.parse().unwrap()],
    };
    let mut f = facts(vec![
        uplink("eth0", 1),
        uplink("wlan0", 2),
        uplink("usb0", 3),
    ]);
    f.lans = vec![
        lan("lan0", true, "10.42.0.0/24"),
        lan("br0", false, "192.168.5.0/24"),
        lan("docker0", false, "172.17.0.0/16"),
    ];
    let config = Config::parse(
        "lan = [\"c-br0\", \"usb0\"]\n",
        std::path::Path::new("x.toml"),
    )
    .unwrap();
    let p = plan(&config, &f);
    let names: Vec<&str> = p.lans.iter().map(|l| l.iface.as_str()).collect();
    assert_eq!(names, ["br0", "lan0", "usb0"]);
    assert!(p.uplink("usb0").is_none(), "a LAN is never an uplink");
    assert_eq!(p.uplinks.len(), 2);
    let fw: Vec<&str> = p.firewall.lans.iter().map(|l| l.iface.as_str()).collect();
    assert_eq!(fw, ["br0", "lan0", "usb0"]);
    for net in ["10.42.0.0/24", "192.168.5.0/24", "10.0.3.0/24"] {
        let net: IpNet = net.parse().unwrap();
        assert!(p.firewall.exclude.contains(&net), "{net} excluded");
    }
    assert!(
        !p.firewall
            .exclude
            .contains(&"172.17.0.0/16".parse().unwrap())
    );
    // Without config, only the shared one.
    let p = plan(&Config::default(), &f);
    assert_eq!(p.lans.len(), 1);
    assert_eq!(p.uplinks.len(), 3);
}

mod global_sticky {
    use super::*;
    use crate::config::GLOBAL_STICKY_POLICY;
    use crate::config::policy::StickyBy;
    use crate::kernel::firewall::{Action, Matches, Rung, Why};
    use crate::model::Lan;

    fn mark(p: &Plan, iface: &str) -> u32 {
        p.uplink(iface).expect("planned").mark
    }

    /// The global `sticky`, by client: one last policy over every balanced uplink, matching
    /// the LANs' networks of each family (never the machine's own connections), sticky by
    /// source; without a LAN, nothing.
    #[test]
    fn global_sticky_by_client_matches_the_lans_last() {
        let config = parse(
            "sticky = \"10m\"\nsticky_by = \"client\"\nipv6 = true\n\
             [[policy]]\nname = \"web\"\nports = [\"443\"]\n",
        );
        let mut f = facts(vec![
            dual("eth0", 1),
            dual("wlan0", 2),
            metered(dual("usb0", 3)),
        ]);
        let global = |p: &Plan| -> Vec<Rung> {
            p.firewall
                .ladder
                .iter()
                .filter(
                    |r| matches!(&r.why, Why::Policy { name, .. } if name == GLOBAL_STICKY_POLICY),
                )
                .cloned()
                .collect()
        };
        assert!(
            global(&plan(&config, &f)).is_empty(),
            "no LAN, no client to keep"
        );

        f.lans = vec![Lan {
            iface: "lan0".into(),
            connection_id: "lan".into(),
            shared: true,
            networks: vec![
                "10.42.0.0/24".parse().unwrap(),
                "fd00:42::/64".parse().unwrap(),
            ],
        }];
        let p = plan(&config, &f);
        let rungs = global(&p);
        assert_eq!(rungs.len(), 2, "{rungs:?}");
        assert_eq!(
            p.firewall.ladder.last().map(|r| r.policy()),
            Some(Some(1)),
            "after the configured policies"
        );
        for r in &rungs {
            assert_eq!(r.policy(), Some(1));
            let lan_net = match r.family {
                Family::V4 => "10.42.0.0/24",
                Family::V6 => "fd00:42::/64",
            };
            assert_eq!(r.matches.sources, [lan_net.parse::<IpNet>().unwrap()]);
            assert!(r.matches.destinations.is_empty() && r.matches.protocols.is_empty());
            let Action::Balance {
                members,
                sticky,
                sticky_by,
                rounds,
            } = &r.action
            else {
                panic!("{:?}", r.action)
            };
            // The general balance's members: the metered backup stands by.
            assert_eq!(members, &[mark(&p, "eth0"), mark(&p, "wlan0")]);
            assert_eq!(*sticky, Some(600));
            assert_eq!(*sticky_by, StickyBy::Client);
            assert_eq!(rounds.len(), Protocol::ALL.len());
        }
        // Every primary unhealthy: the backup takes over, as in the general balance.
        f.health.insert("eth0".into(), Verdict::from(false));
        f.health.insert("wlan0".into(), Verdict::from(false));
        let p = plan(&config, &f);
        for r in global(&p) {
            assert!(
                matches!(&r.action, Action::Balance { members, .. } if members == &[mark(&p, "usb0")]),
                "{:?}",
                r.action
            );
        }
    }

    /// The global `sticky` by destination (the default): every connection the policies
    /// leave, both families, sticky by destination; none without the key.
    #[test]
    fn global_sticky_by_destination_matches_everything() {
        let f = facts(vec![dual("eth0", 1), dual("wlan0", 2)]);
        let p = plan(&parse("sticky = \"2h\"\n"), &f);
        let rungs: Vec<&Rung> = p
            .firewall
            .ladder
            .iter()
            .filter(|r| r.policy().is_some())
            .collect();
        assert_eq!(rungs.len(), 2, "{rungs:?}");
        for r in rungs {
            assert!(
                matches!(&r.why, Why::Policy { index: 0, name } if name == GLOBAL_STICKY_POLICY)
            );
            assert_eq!(r.matches, Matches::default(), "matches all");
            assert!(
                matches!(&r.action, Action::Balance { members, sticky: Some(7200), sticky_by: StickyBy::Destination, .. }
                    if members == &[mark(&p, "eth0"), mark(&p, "wlan0")]),
                "{:?}",
                r.action
            );
        }
        let p = plan(&Config::default(), &f);
        assert!(p.firewall.ladder.iter().all(|r| r.policy().is_none()));
    }
}
