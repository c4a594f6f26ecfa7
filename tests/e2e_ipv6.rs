//! End-to-end tests of IPv6 balancing against a real NetworkManager, nm-dispatcher,
//! ip6tables and netlink in dual-stack network namespaces (tests/sandbox/, `SB_IPV6=1`):
//! the same checks as for IPv4 (spread, local destinations, inbound replies,
//! idempotence, exact flush), over the three ways an uplink gets IPv6 (static with a
//! global gateway, DHCPv6 with a link-local router, SLAAC). Observed from outside:
//! traffic and kernel state, never our logs. Root only; CI runs as root.

mod common;

use common::{Fw, Options, SERVER, SERVER6, Sandbox, isp_addr, isp_addr6, tally};

/// What the internet server sees of connections through the campus network.
const CAMPUS: &str = "203.0.113.38";
const CAMPUS6: &str = "2001:db8:ff:9::2";

fn sorted(want: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut want = want.to_vec();
    want.sort();
    want
}

fn expect_spread6(sb: &Sandbox, n: usize, want: &[(String, usize)]) {
    let got: Vec<_> = sb.spread6(n).into_iter().collect();
    assert_eq!(got, sorted(want), "IPv6 connections per ISP address");
}

fn expect_spread4(sb: &Sandbox, n: usize, want: &[(String, usize)]) {
    let got: Vec<_> = sb.spread(n).into_iter().collect();
    assert_eq!(got, sorted(want), "IPv4 connections per ISP address");
}

/// Everything of ours in both families, and the netfilter tables.
fn snapshot_all(sb: &Sandbox) -> String {
    sb.snapshot() + &sb.snapshot6()
}

/// `count` connections from namespace SB-`from` to `addr:port`; each must be answered.
fn expect_answered(sb: &Sandbox, from: &str, addr: &str, port: u16, count: usize) {
    let out = sb.ns_ok(
        from,
        &[
            "python3",
            &sb.client(),
            "which",
            &count.to_string(),
            addr,
            &port.to_string(),
        ],
    );
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.is_empty() && out.lines().count() == count,
        "inbound from {from} to [{addr}]:{port}: {out}"
    );
}

fn status_json(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"])).unwrap()
}

/// Spread over static, DHCPv6 and SLAAC uplinks, local destinations (on-link prefixes,
/// link-local), inbound replies, status, and up/down cycles through the real
/// dispatcher; IPv4 keeps spreading in the same dual-stack sandbox.
fn ipv6_balances_over_dual_stack_uplinks_and_follows_nmcli(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "v6bal",
        &["eth0:static:1", "wlan0:dhcp:2", "usb0:campus"],
        Options {
            firewall: fw,
            ipv6: true,
            ..Default::default()
        },
    );
    sb.wait_until(10, "IPv6 rules for three uplinks", || {
        sb.our_table_rules6() == 6
    });

    // Exact: every third new IPv6 connection through each uplink, and IPv4 likewise.
    let third = |n| {
        vec![
            (isp_addr6(1), n),
            (isp_addr6(2), n),
            (CAMPUS6.to_string(), n),
        ]
    };
    expect_spread6(&sb, 6, &third(2));
    expect_spread4(
        &sb,
        6,
        &[(isp_addr(1), 2), (isp_addr(2), 2), (CAMPUS.to_string(), 2)],
    );

    // Local destinations: each uplink's router is reached through that uplink (the
    // router sees the host's own address on it), by its LAN address and by its
    // link-local one (neighbour discovery on every link, never balanced).
    for (iface, ns, lan) in [
        ("eth0", "isp1", "2001:db8:1::1"),
        ("wlan0", "isp2", "2001:db8:2::1"),
        ("usb0", "campus", "2001:db8:250::1"),
    ] {
        let own = sb.addr6(iface);
        let seen: Vec<_> = tally(&sb.connections(6, lan, 7000)).into_iter().collect();
        assert_eq!(seen, vec![(own, 6)], "LAN of {iface}");
        let router_ll = sb.link_local(ns, "br0");
        let own_ll = sb.link_local("host", iface);
        let seen: Vec<_> = tally(&sb.connections(3, &format!("{router_ll}%{iface}"), 7000))
            .into_iter()
            .collect();
        assert_eq!(seen, vec![(own_ll, 3)], "link-local router of {iface}");
    }

    // Inbound replies: connections coming in through each uplink, from its router and
    // from the internet, are answered through the same uplink (each ISP drops what does
    // not come from its own prefix, so a wrong way fails).
    let listener = common::Listener::start(&sb, "::", 7100);
    for (iface, ns) in [("eth0", "isp1"), ("wlan0", "isp2"), ("usb0", "campus")] {
        let addr = sb.addr6(iface);
        for from in [ns, "inet"] {
            expect_answered(&sb, from, &addr, 7100, 6);
        }
    }
    drop(listener);

    let v = status_json(&sb);
    assert_eq!(v["ipv6"], true);
    assert_eq!(v["in_sync"], true);
    for u in v["uplinks"].as_array().unwrap() {
        assert_eq!(u["ipv6_balanced"], true, "{u}");
        assert!(
            u["address6"]
                .as_str()
                .is_some_and(|a| a.starts_with("2001:db8:"))
        );
        assert!(u["address"].as_str().is_some());
        assert!(u["new_connections6"].as_u64().unwrap() >= 2, "{u}");
        assert!(u["new_connections"].as_u64() >= u["new_connections6"].as_u64());
    }
    let gw6 = |iface: &str| {
        v["uplinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["iface"] == iface)
            .unwrap()["gateway6"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(gw6("eth0"), "2001:db8:1::1");
    assert!(gw6("wlan0").starts_with("fe80::"), "router advertisement");

    // Stable identity: when the uplink in the middle (wlan0, id 2) leaves, long-lived
    // IPv6 connections on the others keep working (their marks and tables stay).
    let tables_before = sb.snapshot6();
    let hold = common::Hold::start(&sb, 6, 6.0, SERVER6);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // An uplink that goes away leaves the IPv6 balance at once.
    sb.down("up-wlan0");
    let held = hold.finish();
    for isp in [isp_addr6(1), CAMPUS6.to_string()] {
        let on: Vec<_> = held.iter().filter(|h| h.isp == isp).collect();
        assert_eq!(on.len(), 2, "two connections through {isp}: {held:?}");
        assert!(
            on.iter().all(|h| h.ok),
            "connections through {isp} broke when wlan0 left: {held:?}"
        );
    }
    let kept = |snap: &str| -> Vec<String> {
        snap.lines()
            .filter(|l| l.contains("dev eth0 table 6101") || l.contains("dev usb0 table 6103"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(kept(&sb.snapshot6()), kept(&tables_before));
    assert_eq!(sb.our_table_rules6(), 4);
    expect_spread6(&sb, 6, &[(isp_addr6(1), 3), (CAMPUS6.to_string(), 3)]);

    // Up/down cycles leave exactly the state of one cycle. usb0 is configured by router
    // advertisements: each cycle proves they, and neighbour discovery, still work while
    // our chains are in place.
    sb.up("up-wlan0");
    let once = sb.snapshot_ours() + &sb.snapshot6();
    expect_spread6(&sb, 3, &third(1));
    for _ in 0..3 {
        sb.down("up-usb0");
        sb.up("up-usb0");
    }
    assert_eq!(
        sb.snapshot_ours() + &sb.snapshot6(),
        once,
        "state after cycles differs from one cycle"
    );
    expect_spread6(&sb, 6, &third(2));
    expect_spread4(
        &sb,
        3,
        &[(isp_addr(1), 1), (isp_addr(2), 1), (CAMPUS.to_string(), 1)],
    );
}

/// `apply` twice changes nothing the second time, and `flush` leaves the machine exactly
/// as it was, in both families. Two uplinks share one SLAAC prefix (campus).
fn ipv6_apply_is_idempotent_and_flush_restores_everything(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "v6flush",
        &["eth0:campus", "wlan0:campus", "usb0:dhcp:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            ipv6: true,
            ..Default::default()
        },
    );
    let before = snapshot_all(&sb);
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    let applied = snapshot_all(&sb);
    assert_ne!(before, applied, "apply changed nothing");
    let fw_text = sb.firewall_text();
    assert!(
        fw_text.contains("-A nm-multiwan-out -p ipv6-icmp -j RETURN")
            || fw_text.contains("meta l4proto ipv6-icmp return"),
        "new ICMPv6 is never balanced: {fw_text}"
    );
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(
        snapshot_all(&sb),
        applied,
        "second apply changed the kernel"
    );

    expect_spread6(&sb, 6, &[(CAMPUS6.to_string(), 4), (isp_addr6(2), 2)]);
    // Both campus uplinks carried their share: the campus router saw both addresses.
    let ct = sb.ns_ok(
        "campus",
        &[
            "conntrack",
            "-L",
            "-f",
            "ipv6",
            "-p",
            "tcp",
            "--dport",
            "7000",
        ],
    );
    for iface in ["eth0", "wlan0"] {
        let own = sb.addr6(iface);
        let n = ct
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("src="))
                    .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                    .is_some_and(|a| a.to_string() == own)
            })
            .count();
        assert_eq!(
            n, 2,
            "connections from {iface} ({own}) at the campus router: {ct}"
        );
    }

    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(snapshot_all(&sb), before, "flush left something behind");
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(snapshot_all(&sb), before, "second flush changed something");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(snapshot_all(&sb), applied);
}

/// `ipv6 = false` installs nothing IPv6; automatic mode turns IPv6 on with two IPv6
/// uplinks (weights apply to it) and removes exactly what it installed when one leaves;
/// an IPv6-only uplink gets an id and takes part in IPv6 only.
fn ipv6_switches_on_and_off_cleanly_and_ipv6_only_uplinks_count(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "v6off",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            ipv6: true,
            config: Some("ipv6 = false\n"),
            ..Default::default()
        },
    );
    let cfg = sb.work_file("etc-nm-multiwan/config.toml");
    let before6 = sb.snapshot6();
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(
        sb.snapshot6(),
        before6,
        "ipv6 = false installed something IPv6"
    );
    expect_spread4(&sb, 4, &[(isp_addr(1), 2), (isp_addr(2), 2)]);
    // IPv6 still works, the main table's way (eth0 has the lower metric).
    expect_spread6(&sb, 4, &[(isp_addr6(1), 4)]);
    let v = status_json(&sb);
    assert_eq!(
        (v["ipv6"].clone(), v["in_sync"].clone()),
        (false.into(), true.into())
    );
    assert!(v["uplinks"][0]["address6"].is_string());
    assert_eq!(v["uplinks"][0]["ipv6_balanced"], false);

    // Automatic (no key): two IPv6 uplinks, so on; the weight counts for IPv6 too.
    std::fs::write(&cfg, "[uplinks.up-eth0]\nweight = 3\n").unwrap();
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.our_table_rules6(), 4);
    expect_spread6(&sb, 8, &[(isp_addr6(1), 6), (isp_addr6(2), 2)]);
    expect_spread4(&sb, 4, &[(isp_addr(1), 3), (isp_addr(2), 1)]);
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(status_json(&sb)["in_sync"], true);

    // One IPv6 uplink left: nothing to balance, so IPv6 goes, exactly.
    sb.down("up-wlan0");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.snapshot6(), before6, "IPv6 switched off left something");
    expect_spread4(&sb, 2, &[(isp_addr(1), 2)]);

    // wlan0 back with IPv6 only: it gets an id and a share of IPv6, nothing of IPv4.
    sb.host_ok(&[
        "nmcli",
        "con",
        "modify",
        "up-wlan0",
        "ipv4.method",
        "disabled",
        "ipv4.addresses",
        "",
        "ipv4.gateway",
        "",
        "ipv4.dns",
        "",
        "ipv4.may-fail",
        "yes",
    ]);
    sb.up("up-wlan0");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.our_table_rules6(), 4);
    assert_eq!(sb.our_table_rules(), 2, "IPv4 rules for eth0 only");
    let v = status_json(&sb);
    let wlan = v["uplinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["iface"] == "wlan0")
        .expect("an IPv6-only uplink is an uplink")
        .clone();
    assert!(
        wlan["address"].is_null() && wlan["ipv6_balanced"] == true,
        "{wlan}"
    );
    assert_eq!(v["in_sync"], true);
    expect_spread6(&sb, 4, &[(isp_addr6(1), 3), (isp_addr6(2), 1)]);
    expect_spread4(&sb, 2, &[(isp_addr(1), 2)]);

    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.snapshot6(), before6);
}

/// A machine without IPv6 (the sandbox disables it everywhere) gets nothing IPv6, and
/// IPv4 is balanced as it always was.
fn ipv4_only_machine_gets_nothing_ipv6(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "v4only",
        &["eth0:static:1", "wlan0:dhcp:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            ..Default::default()
        },
    );
    let before6 = sb.snapshot6();
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.snapshot6(), before6);
    assert!(
        !sb.snapshot6().contains("table ip6"),
        "an IPv6 netfilter table exists"
    );
    expect_spread4(&sb, 4, &[(isp_addr(1), 2), (isp_addr(2), 2)]);
    let v = status_json(&sb);
    assert_eq!(
        (v["ipv6"].clone(), v["in_sync"].clone()),
        (false.into(), true.into())
    );
    assert!(v["uplinks"][0]["address6"].is_null());
    assert!(
        sb.connections(1, SERVER, 7000)
            .iter()
            .all(|l| !l.starts_with("FAIL"))
    );
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.snapshot6(), before6);
}

on_both_backends!(
    ipv6_balances_over_dual_stack_uplinks_and_follows_nmcli,
    ipv6_apply_is_idempotent_and_flush_restores_everything,
    ipv6_switches_on_and_off_cleanly_and_ipv6_only_uplinks_count,
    ipv4_only_machine_gets_nothing_ipv6,
);
