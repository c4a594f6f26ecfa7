//! Netlink against a real kernel: each test runs on its own thread inside a fresh,
//! anonymous network namespace (`unshare(CLONE_NEWNET)` on that thread only), with
//! dummy interfaces standing in for uplinks. The namespace dies with the thread, so
//! nothing is left behind even when a test fails, and nothing outside it is touched.
//!
//! Root only: without root every test fails, saying so (run: sudo tests/run.sh).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use nm_multiwan::config::Config;
use nm_multiwan::kernel::routing::Routing as Netlink;
use nm_multiwan::kernel::{Route as RouteSpec, Rule as RuleSpec};
use nm_multiwan::model::{Family, IpNet, IpSide, Uplink};
use nm_multiwan::namespace::Namespace;
use nm_multiwan::plan::{self, Facts, Plan};

/// Runs `test` inside a fresh network namespace, on a current-thread runtime.
fn in_netns<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    assert!(
        unsafe { libc::geteuid() } == 0,
        "{name} needs root: run sudo tests/run.sh (it creates network namespaces)"
    );
    let thread = std::thread::spawn(move || {
        // Only this thread (and the `ip` commands it spawns) moves.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `ip ARGS` and returns its output; fails the test when `ip` does.
fn ip(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A dummy interface, up, with `address/prefix`. Kernels built without the dummy
/// driver get an ifb device instead (also always up, with carrier, going nowhere).
fn dummy(name: &str, address: &str) {
    let added = Command::new("ip")
        .args(["link", "add", name, "type", "dummy"])
        .output()
        .expect("running ip");
    if !added.status.success() {
        ip(&format!("link add {name} type ifb"));
    }
    ip(&format!("addr add {address} dev {name}"));
    ip(&format!("link set {name} up"));
}

fn uplink(iface: &str, address: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Uplink {
    Uplink {
        iface: iface.into(),
        connection_id: format!("conn-{iface}"),
        connection_uuid: format!("uuid-{iface}"),
        ipv4: Some(IpSide {
            address: address.into(),
            subnet: IpNet::new(address.into(), prefix),
            gateway: gateway.map(Into::into),
            metric: 100,
            dns: vec![],
            routes: vec![],
        }),
        ipv6: None,
        metered: false,
    }
}

fn v6(address: &str, prefix: u8, gateway: Option<&str>) -> Option<IpSide> {
    let address: Ipv6Addr = address.parse().unwrap();
    Some(IpSide {
        address: address.into(),
        subnet: IpNet::new(address.into(), prefix),
        gateway: gateway.map(|g| g.parse().unwrap()),
        metric: 100,
        dns: vec![],
        routes: vec![],
    })
}

/// eth0 10.0.1.2/24 via 10.0.1.1 and wlan0 10.0.2.2/24 via 10.0.2.1, planned.
fn two_uplinks(config: &Config) -> Plan {
    dummy("eth0", "10.0.1.2/24");
    dummy("wlan0", "10.0.2.2/24");
    let facts = Facts {
        uplinks: vec![
            uplink(
                "eth0",
                Ipv4Addr::new(10, 0, 1, 2),
                24,
                Some(Ipv4Addr::new(10, 0, 1, 1)),
            ),
            uplink(
                "wlan0",
                Ipv4Addr::new(10, 0, 2, 2),
                24,
                Some(Ipv4Addr::new(10, 0, 2, 1)),
            ),
        ],
        ..Default::default()
    };
    let p = plan::plan(config, &facts);
    assert_eq!((p.routes.len(), p.rules.len()), (4, 6));
    p
}

async fn apply(nl: &Netlink, p: &Plan) {
    for r in &p.routes {
        nl.add_route(r).await.unwrap();
    }
    for r in &p.rules {
        nl.add_rule(r).await.unwrap();
    }
}

async fn remove(nl: &Netlink, p: &Plan) {
    for r in &p.rules {
        nl.del_rule(r).await.unwrap();
    }
    for r in &p.routes {
        nl.del_route(r).await.unwrap();
    }
}

async fn read(nl: &Netlink, ns: &Namespace) -> (BTreeSet<RouteSpec>, BTreeSet<RuleSpec>) {
    let routes: Vec<_> = nl.routes(ns).await.unwrap();
    let rules: Vec<_> = nl.rules(ns).await.unwrap();
    let (rn, un) = (routes.len(), rules.len());
    let sets = (
        routes.into_iter().collect::<BTreeSet<_>>(),
        rules.into_iter().collect::<BTreeSet<_>>(),
    );
    assert_eq!((sets.0.len(), sets.1.len()), (rn, un), "duplicates read");
    sets
}

fn planned(p: &Plan) -> (BTreeSet<RouteSpec>, BTreeSet<RuleSpec>) {
    (
        p.routes.iter().cloned().collect(),
        p.rules.iter().cloned().collect(),
    )
}

/// `ip rule` lines without their whitespace differences.
fn ip_rules() -> Vec<String> {
    ip("-4 rule show")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn ip_routes(table: u32) -> Vec<String> {
    ip(&format!("-4 route show table {table}"))
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn planned_state_reads_back_equal() {
    in_netns("planned_state_reads_back_equal", || async {
        let config = Config::default();
        let ns = config.namespace();
        let p = two_uplinks(&config);
        let nl = Netlink::connect().await.unwrap();
        assert_eq!(read(&nl, &ns).await, Default::default());

        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));

        let rules = ip_rules();
        for line in [
            "30100: from all fwmark 0x21000000/0x3f000000 iif lo lookup 6101",
            "30100: from all fwmark 0x22000000/0x3f000000 iif lo lookup 6102",
            "30101: from all fwmark 0x1000000/0x1f000000 lookup main suppress_prefixlength 0",
            "30101: from all fwmark 0x2000000/0x1f000000 lookup main suppress_prefixlength 0",
            "30102: from all fwmark 0x1000000/0x1f000000 lookup 6101",
            "30102: from all fwmark 0x2000000/0x1f000000 lookup 6102",
        ] {
            assert!(
                rules.iter().any(|l| l == line),
                "{line:?} not in {rules:#?}"
            );
        }
        assert_eq!(rules.len(), 3 + 6, "{rules:#?}");
        assert_eq!(
            ip_routes(6101),
            [
                "default via 10.0.1.1 dev eth0 proto static src 10.0.1.2",
                "10.0.1.0/24 dev eth0 proto static scope link src 10.0.1.2",
            ]
        );
        assert_eq!(
            ip_routes(6102),
            [
                "default via 10.0.2.1 dev wlan0 proto static src 10.0.2.2",
                "10.0.2.0/24 dev wlan0 proto static scope link src 10.0.2.2",
            ]
        );

        // Idempotent: adding everything again changes nothing and duplicates nothing.
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        assert_eq!(ip_rules(), rules);
        assert_eq!(ip_routes(6101).len(), 2);
    });
}

#[test]
fn small_table_ids_and_other_namespace() {
    // Tables that fit the u8 header field, other priorities, another mark mask.
    in_netns("small_table_ids_and_other_namespace", || async {
        let config = Config {
            mark_mask: 0x70,
            table_base: 200,
            rule_priority: 1000,
            ..Config::default()
        };
        let ns = config.namespace();
        let p = two_uplinks(&config);
        let nl = Netlink::connect().await.unwrap();
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        assert!(
            ip_rules()
                .iter()
                .any(|l| l == "1001: from all fwmark 0x10/0x30 lookup main suppress_prefixlength 0")
        );
        assert_eq!(ip_routes(201).len(), 2);
        // Nothing of the default namespace is seen, and vice versa.
        let default_ns = Config::default().namespace();
        assert_eq!(read(&nl, &default_ns).await, Default::default());
        remove(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, Default::default());
    });
}

#[test]
fn foreign_objects_are_neither_read_nor_removed() {
    in_netns("foreign_objects_are_neither_read_nor_removed", || async {
        let fresh = ip_rules();
        let config = Config::default();
        let ns = config.namespace();
        let p = two_uplinks(&config);
        // Others at our priorities and in tables next to ours.
        ip("rule add fwmark 0x4000 table 52 prio 30101");
        ip("rule add fwmark 0x1000000/0x1f000000 table main prio 30101");
        ip("rule add fwmark 0xff0000/0xff0000 table main suppress_prefixlength 0 prio 30101");
        ip("rule add iif eth0 table 6101 prio 30102");
        ip("route add default via 10.0.1.1 table 52");
        ip("route add blackhole 192.0.2.0/24 table 6101");
        ip("route add 198.51.100.0/24 via 10.0.1.1 table 6100");
        let foreign_rules: Vec<String> = ip_rules()
            .into_iter()
            .filter(|l| !fresh.contains(l))
            .collect();
        assert_eq!(foreign_rules.len(), 4);

        let nl = Netlink::connect().await.unwrap();
        assert_eq!(read(&nl, &ns).await, Default::default());
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));

        // Deleting all of ours (twice: gone is fine) leaves theirs alone.
        remove(&nl, &p).await;
        remove(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, Default::default());
        let left: Vec<String> = ip_rules()
            .into_iter()
            .filter(|l| !fresh.contains(l))
            .collect();
        assert_eq!(left, foreign_rules);
        assert_eq!(ip_routes(52), ["default via 10.0.1.1 dev eth0"]);
        assert_eq!(ip_routes(6101), ["blackhole 192.0.2.0/24"]);
        assert_eq!(ip_routes(6100), ["198.51.100.0/24 via 10.0.1.1 dev eth0"]);

        // Without theirs, `ip rule` is a fresh namespace's again.
        ip("rule del fwmark 0x4000 table 52 prio 30101");
        ip("rule del fwmark 0x1000000/0x1f000000 table main prio 30101");
        ip("rule del fwmark 0xff0000/0xff0000 table main suppress_prefixlength 0 prio 30101");
        ip("rule del iif eth0 table 6101 prio 30102");
        assert_eq!(ip_rules(), fresh);
        let unshared = Command::new("unshare")
            .args(["--net", "ip", "-4", "rule", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        if let Ok(text) = unshared {
            let other: Vec<String> = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            assert_eq!(ip_rules(), other);
        }
    });
}

#[test]
fn default_route_is_replaced_in_place() {
    in_netns("default_route_is_replaced_in_place", || async {
        let config = Config::default();
        let ns = config.namespace();
        let p = two_uplinks(&config);
        let nl = Netlink::connect().await.unwrap();
        apply(&nl, &p).await;

        let old = p
            .routes
            .iter()
            .find(|r| r.oif == "eth0" && r.dst.prefix() == 0)
            .unwrap()
            .clone();
        let new = RouteSpec {
            gateway: Some(Ipv4Addr::new(10, 0, 1, 254).into()),
            ..old.clone()
        };
        nl.add_route(&new).await.unwrap();
        let (routes, _) = read(&nl, &ns).await;
        assert!(routes.contains(&new) && !routes.contains(&old));
        assert_eq!(routes.len(), 4);
        assert_eq!(
            ip_routes(6101)[0],
            "default via 10.0.1.254 dev eth0 proto static src 10.0.1.2"
        );
        // Deleting the old one, which is already gone, leaves the new one.
        nl.del_route(&old).await.unwrap();
        assert!(read(&nl, &ns).await.0.contains(&new));
        nl.del_route(&new).await.unwrap();
        assert_eq!(ip_routes(6101).len(), 1);
    });
}

#[test]
fn point_to_point_and_onlink_gateway() {
    in_netns("point_to_point_and_onlink_gateway", || async {
        let config = Config::default();
        let ns = config.namespace();
        // ppp0: a /32 and no gateway; eth1: a /32 with a gateway outside it.
        dummy("ppp0", "10.0.9.2/32");
        dummy("eth1", "10.0.7.2/32");
        let facts = Facts {
            uplinks: vec![
                uplink("ppp0", Ipv4Addr::new(10, 0, 9, 2), 32, None),
                uplink(
                    "eth1",
                    Ipv4Addr::new(10, 0, 7, 2),
                    32,
                    Some(Ipv4Addr::new(10, 0, 7, 1)),
                ),
            ],
            ..Default::default()
        };
        let p = plan::plan(&config, &facts);
        assert!(p.routes.iter().any(|r| r.onlink));
        assert!(
            p.routes
                .iter()
                .any(|r| r.gateway.is_none() && r.dst.prefix() == 0)
        );
        let nl = Netlink::connect().await.unwrap();
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        // eth1 sorts first: table 6101.
        assert_eq!(
            ip_routes(6101),
            [
                "default via 10.0.7.1 dev eth1 proto static src 10.0.7.2 onlink",
                "10.0.7.1 dev eth1 proto static scope link src 10.0.7.2",
                "10.0.7.2 dev eth1 proto static scope link src 10.0.7.2",
            ]
        );
        assert_eq!(
            ip_routes(6102),
            [
                "default dev ppp0 proto static scope link src 10.0.9.2",
                "10.0.9.2 dev ppp0 proto static scope link src 10.0.9.2",
            ]
        );
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        remove(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, Default::default());
        assert!(ip_routes(6101).is_empty() && ip_routes(6102).is_empty());
    });
}

#[test]
fn errors_name_what_failed() {
    in_netns("errors_name_what_failed", || async {
        dummy("eth0", "10.0.1.2/24");
        let nl = Netlink::connect().await.unwrap();
        let missing = RouteSpec {
            table: 6101,
            dst: IpNet::default_route(Family::V4),
            gateway: Some(Ipv4Addr::new(10, 0, 1, 1).into()),
            oif: "nope0".into(),
            prefsrc: None,
            scope_link: false,
            onlink: false,
        };
        let e = nl.add_route(&missing).await.unwrap_err().to_string();
        assert!(e.contains("nope0") && e.contains("adding route"), "{e}");
        // Its routes went with it: nothing to delete.
        nl.del_route(&missing).await.unwrap();

        // A gateway the kernel cannot reach is refused, with the kernel's reason.
        let unreachable = RouteSpec {
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
            oif: "eth0".into(),
            ..missing
        };
        let e = nl.add_route(&unreachable).await.unwrap_err().to_string();
        assert!(
            e.starts_with("netlink: adding route 0.0.0.0/0 via 192.0.2.1 dev eth0 table 6101: "),
            "{e}"
        );
        assert!(e.contains("os error"), "{e}");
    });
}

/// `ip -6 rule` lines without their whitespace differences.
fn ip6_rules() -> Vec<String> {
    ip("-6 rule show")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn ip6_routes(table: u32) -> Vec<String> {
    ip(&format!("-6 route show table {table}"))
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// eth0 and wlan0 dual-stack: eth0's IPv6 router is link-local (as router advertisements
/// give it), wlan0's a global address in its prefix (as a static configuration has it).
fn two_dual_stack_uplinks(config: &Config) -> Plan {
    dummy("eth0", "10.0.1.2/24");
    dummy("wlan0", "10.0.2.2/24");
    ip("addr add 2001:db8:1::2/64 dev eth0 nodad");
    ip("addr add 2001:db8:2::2/64 dev wlan0 nodad");
    let facts = Facts {
        uplinks: vec![
            Uplink {
                ipv6: v6("2001:db8:1::2", 64, Some("fe80::1")),
                ..uplink(
                    "eth0",
                    Ipv4Addr::new(10, 0, 1, 2),
                    24,
                    Some(Ipv4Addr::new(10, 0, 1, 1)),
                )
            },
            Uplink {
                ipv6: v6("2001:db8:2::2", 64, Some("2001:db8:2::1")),
                ..uplink(
                    "wlan0",
                    Ipv4Addr::new(10, 0, 2, 2),
                    24,
                    Some(Ipv4Addr::new(10, 0, 2, 1)),
                )
            },
        ],
        ..Default::default()
    };
    let p = plan::plan(config, &facts);
    assert!(p.ipv6, "two IPv6 uplinks: IPv6 balancing on by default");
    // Per family: 2 routes and 3 rules per uplink.
    assert_eq!((p.routes.len(), p.rules.len()), (8, 12));
    p
}

#[test]
fn ipv6_planned_state_reads_back_equal() {
    in_netns("ipv6_planned_state_reads_back_equal", || async {
        let fresh = ip6_rules();
        let config = Config::default();
        let ns = config.namespace();
        let p = two_dual_stack_uplinks(&config);
        let nl = Netlink::connect().await.unwrap();
        assert_eq!(read(&nl, &ns).await, Default::default());

        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        let rules = ip6_rules();
        for line in [
            "30100: from all fwmark 0x21000000/0x3f000000 iif lo lookup 6101",
            "30101: from all fwmark 0x1000000/0x1f000000 lookup main suppress_prefixlength 0",
            "30102: from all fwmark 0x2000000/0x1f000000 lookup 6102",
        ] {
            assert!(
                rules.iter().any(|l| l == line),
                "{line:?} not in {rules:#?}"
            );
        }
        assert_eq!(rules.len(), fresh.len() + 6, "{rules:#?}");
        // The kernel adds a metric and a preference; no source address (see the planner).
        assert_eq!(
            ip6_routes(6101),
            [
                "2001:db8:1::/64 dev eth0 proto static metric 1024 pref medium",
                "default via fe80::1 dev eth0 proto static metric 1024 pref medium",
            ]
        );
        assert_eq!(
            ip6_routes(6102),
            [
                "2001:db8:2::/64 dev wlan0 proto static metric 1024 pref medium",
                "default via 2001:db8:2::1 dev wlan0 proto static metric 1024 pref medium",
            ]
        );
        // IPv4 exactly as without IPv6.
        assert_eq!(ip_rules().len(), 3 + 6);
        assert_eq!(ip_routes(6101).len(), 2);

        // Idempotent, and removal is exact.
        apply(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, planned(&p));
        assert_eq!(ip6_rules(), rules);
        remove(&nl, &p).await;
        remove(&nl, &p).await;
        assert_eq!(read(&nl, &ns).await, Default::default());
        assert_eq!(ip6_rules(), fresh);
        assert!(ip6_routes(6101).is_empty() && ip6_routes(6102).is_empty());
    });
}

#[test]
fn ipv6_off_leaves_only_ipv4_and_ipv6_objects_are_told_apart() {
    in_netns("ipv6_off_leaves_only_ipv4", || async {
        let on = Config::default();
        let off = Config {
            ipv6: Some(false),
            ..Config::default()
        };
        let ns = on.namespace();
        let p_on = two_dual_stack_uplinks(&on);
        let nl = Netlink::connect().await.unwrap();
        apply(&nl, &p_on).await;

        // What the reconcile does when IPv6 balancing goes off: delete what is no
        // longer planned, which is exactly the IPv6 half.
        let facts = Facts {
            uplinks: p_on
                .uplinks
                .iter()
                .map(|u| Uplink {
                    iface: u.iface.clone(),
                    connection_id: u.connection_id.clone(),
                    connection_uuid: u.connection_uuid.clone(),
                    ipv4: u.ipv4.clone(),
                    ipv6: u.ipv6.clone(),
                    metered: false,
                })
                .collect(),
            ..Default::default()
        };
        let p_off = plan::plan(&off, &facts);
        assert!(!p_off.ipv6 && !p_off.firewall.has(Family::V6));
        let (routes, rules) = read(&nl, &ns).await;
        let (want_routes, want_rules) = planned(&p_off);
        for r in rules.difference(&want_rules) {
            assert_eq!(r.family, Family::V6);
            nl.del_rule(r).await.unwrap();
        }
        for r in routes.difference(&want_routes) {
            assert_eq!(r.family(), Family::V6);
            nl.del_route(r).await.unwrap();
        }
        assert_eq!(read(&nl, &ns).await, planned(&p_off));
        assert!(ip6_routes(6101).is_empty());
        assert_eq!(ip_routes(6101).len(), 2);
    });
}

#[test]
fn ipv6_point_to_point_offlink_gateway_and_ipv6_only() {
    in_netns(
        "ipv6_point_to_point_offlink_gateway_and_ipv6_only",
        || async {
            let config = Config {
                ipv6: Some(true),
                ..Config::default()
            };
            let ns = config.namespace();
            // ppp0: IPv6 only, a /128 (DHCPv6 style) and no gateway; eth1: a /128 with a
            // global gateway outside it, so declared on-link.
            dummy("ppp0", "2001:db8:9::2/128");
            dummy("eth1", "2001:db8:7::2/128");
            let only6 = |iface: &str, v6: Option<IpSide>| Uplink {
                iface: iface.into(),
                connection_id: iface.into(),
                connection_uuid: iface.into(),
                ipv4: None,
                ipv6: v6,
                metered: false,
            };
            let facts = Facts {
                uplinks: vec![
                    only6("ppp0", v6("2001:db8:9::2", 128, None)),
                    only6("eth1", v6("2001:db8:7::2", 128, Some("2001:db8:7::1"))),
                ],
                ..Default::default()
            };
            let p = plan::plan(&config, &facts);
            assert_eq!(p.uplinks.len(), 2, "IPv6-only uplinks get ids too");
            assert!(p.rules.iter().all(|r| r.family == Family::V6));
            assert!(p.routes.iter().any(|r| r.onlink));
            let nl = Netlink::connect().await.unwrap();
            apply(&nl, &p).await;
            assert_eq!(read(&nl, &ns).await, planned(&p));
            // eth1 sorts first: table 6101.
            assert_eq!(
                ip6_routes(6101),
                ["default via 2001:db8:7::1 dev eth1 proto static metric 1024 onlink pref medium"]
            );
            assert_eq!(
                ip6_routes(6102),
                ["default dev ppp0 proto static metric 1024 pref medium"]
            );
            // Nothing in IPv4: the tables do not even exist there.
            assert!(!ip("-4 route show table all").contains("table 610"));
            remove(&nl, &p).await;
            assert_eq!(read(&nl, &ns).await, Default::default());

            // A route the kernel refuses says which, in IPv6 terms.
            let bad = RouteSpec {
                table: 6101,
                dst: IpNet::default_route(Family::V6),
                gateway: Some("2001:db8:5::1".parse().unwrap()),
                oif: "eth1".into(),
                prefsrc: None,
                scope_link: false,
                onlink: false,
            };
            let e = nl.add_route(&bad).await.unwrap_err().to_string();
            assert!(
                e.starts_with("netlink: adding route ::/0 via 2001:db8:5::1 dev eth1 table 6101: "),
                "{e}"
            );
        },
    );
}
