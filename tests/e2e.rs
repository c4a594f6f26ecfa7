//! End-to-end tests against a real NetworkManager, nm-dispatcher, iptables and netlink
//! in network namespaces (tests/sandbox/). Each numbered point of the design's
//! correctness list is checked by observing traffic or kernel state, never our logs.
//! Root only; CI runs as root.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fw, Options, SERVER, Sandbox, isp_addr, tally};

/// What the internet server sees of connections through the campus network.
const CAMPUS: &str = "203.0.113.38";

fn spread_of(sb: &Sandbox, n: usize) -> Vec<(String, usize)> {
    sb.spread(n).into_iter().collect()
}

fn expect_spread(sb: &Sandbox, n: usize, want: &[(u32, usize)]) {
    let got = spread_of(sb, n);
    let mut want: Vec<(String, usize)> = want.iter().map(|&(k, c)| (isp_addr(k), c)).collect();
    want.sort();
    assert_eq!(got, want, "connections per ISP address");
}

/// Points 3, 4, 5 and 10, spread over static and DHCP uplinks, driven by `nmcli` through
/// the real dispatcher; point 7 over repeated up/down cycles.
fn balances_over_uplinks_and_follows_nmcli(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "bal",
        &["eth0:static:1", "wlan0:dhcp:2", "usb0:static:3"],
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);

    // Exact: nth gives each of three uplinks every third new connection.
    expect_spread(&sb, 12, &[(1, 4), (2, 4), (3, 4)]);

    // Point 5: strict reverse-path filtering stays on, and nothing above failed.
    let rp = sb.host_ok(&["cat", "/proc/sys/net/ipv4/conf/all/rp_filter"]);
    assert_eq!(rp.trim(), "1");

    // Point 3: each uplink's LAN is reached through that uplink, every time.
    for (k, iface) in [(1, "eth0"), (2, "wlan0"), (3, "usb0")] {
        let gw = format!("10.200.{k}.1");
        let seen = tally(&sb.connections(6, &gw, 7000));
        let own = sb.addr(iface);
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![(own, 6)],
            "LAN of {iface}"
        );
    }

    // Point 3, second half: a destination the main table routes more specifically than
    // by a default route (as a VPN or a container bridge would) goes the main table's way.
    sb.host_ok(&[
        "ip",
        "route",
        "add",
        "198.51.100.10/32",
        "via",
        "10.200.3.1",
        "dev",
        "usb0",
    ]);
    expect_spread(&sb, 6, &[(3, 6)]);
    sb.host_ok(&["ip", "route", "del", "198.51.100.10/32"]);

    // Point 4: connections coming in through each uplink, from its LAN and from the
    // internet, are answered (through the same uplink, or the ISP/rp_filter drops them).
    let listener = common::Listener::start(&sb, "0.0.0.0", 7100);
    let client = sb.client();
    for (k, iface) in [(1, "eth0"), (2, "wlan0"), (3, "usb0")] {
        let addr = sb.addr(iface);
        for from in [format!("isp{k}"), "inet".to_string()] {
            let out = sb.ns_ok(&from, &["python3", &client, "which", "6", &addr, "7100"]);
            let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
            assert!(
                fails.is_empty() && out.lines().count() == 6,
                "inbound from {from} to {iface} ({addr}): {out}"
            );
        }
    }

    drop(listener);

    // Point 10: an uplink that goes away leaves the balance at once.
    sb.down("up-wlan0");
    assert_eq!(sb.our_table_rules(), 4);
    expect_spread(&sb, 12, &[(1, 6), (3, 6)]);

    // Point 7: up/down cycles leave exactly the state of one cycle.
    sb.up("up-wlan0");
    let once = sb.snapshot_ours();
    expect_spread(&sb, 3, &[(1, 1), (2, 1), (3, 1)]);
    for _ in 0..3 {
        sb.down("up-usb0");
        sb.up("up-usb0");
    }
    assert_eq!(
        sb.snapshot_ours(),
        once,
        "state after cycles differs from one cycle"
    );
    expect_spread(&sb, 6, &[(1, 2), (2, 2), (3, 2)]);
}

/// Point 1: when the uplink in the middle leaves, connections on the others keep working
/// and their marks and tables stay.
fn identity_survives_an_uplink_leaving(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "ident",
        &["eth0:static:1", "usb0:static:2", "wlan0:static:3"],
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    let wlan_table_before = sb.host_ok(&["ip", "-4", "route", "show", "table", "6103"]);
    assert!(
        wlan_table_before.contains("dev wlan0"),
        "{wlan_table_before}"
    );

    // Six long-lived connections (two per uplink) to the server's echo port, exercised
    // for 6 s.
    let hold = common::Hold::start(&sb, 6, 6.0, SERVER);
    std::thread::sleep(Duration::from_millis(1500));
    sb.down("up-usb0");
    let held = hold.finish();
    for isp in [1, 3] {
        let on: Vec<_> = held.iter().filter(|h| h.isp == isp_addr(isp)).collect();
        assert_eq!(on.len(), 2, "two connections on ISP {isp}: {held:?}");
        assert!(
            on.iter().all(|h| h.ok),
            "connections on ISP {isp} broke when usb0 left: {held:?}"
        );
    }
    let wlan_table_after = sb.host_ok(&["ip", "-4", "route", "show", "table", "6103"]);
    assert_eq!(wlan_table_before, wlan_table_after);
    expect_spread(&sb, 4, &[(1, 2), (3, 2)]);
}

/// Points 7 and 8 by hand: `apply` twice changes nothing the second time, and `flush`
/// leaves the machine exactly as it was before nm-multiwan ran.
fn apply_is_idempotent_and_flush_restores_everything(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "flush",
        &["eth0:campus", "wlan0:campus", "usb0:dhcp:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            ..Default::default()
        },
    );
    let before = sb.snapshot();
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    let applied = sb.snapshot();
    assert_ne!(before, applied, "apply changed nothing");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.snapshot(), applied, "second apply changed the kernel");
    // eth0 and wlan0 share a subnet: ARP sysctls were set, and must come back.
    assert!(applied.contains("conf/wlan0/arp_ignore 1"), "{applied}");
    let mut want = vec![(CAMPUS.to_string(), 4), (isp_addr(2), 2)];
    want.sort();
    assert_eq!(spread_of(&sb, 6), want);

    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.snapshot(), before, "flush left something behind");
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.snapshot(), before, "second flush changed something");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert_eq!(sb.snapshot(), applied);
}

/// Point 9: parallel runs serialise; runs killed at any moment leave the network
/// reachable and the next run converges to the same state.
fn concurrent_and_killed_runs_converge(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "conc",
        &["eth0:static:1", "wlan0:static:2", "usb0:static:3"],
        Options {
            firewall: fw,
            dispatcher: false,
            ..Default::default()
        },
    );
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    let reference = sb.snapshot();
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);

    let runs: Vec<_> = (0..6)
        .map(|_| {
            Command::new(common::sandbox_script())
                .args(["exec", &sb.name, "/usr/bin/nm-multiwan", "-q", "apply"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        sb.snapshot(),
        reference,
        "parallel applies did not converge"
    );

    for delay_ms in [1, 3, 6, 10, 15, 25, 40] {
        sb.host_ok(&["/usr/bin/nm-multiwan", "-q", "flush"]);
        let secs = format!("{}", delay_ms as f64 / 1000.0);
        // Exit status is that of the kill; what matters is what it leaves behind.
        let _ = sb.host(&[
            "timeout",
            "-s",
            "KILL",
            &secs,
            "/usr/bin/nm-multiwan",
            "-q",
            "apply",
        ]);
        let reach = sb.connections(3, SERVER, 7000);
        assert!(
            reach.iter().all(|r| !r.starts_with("FAIL")),
            "network unreachable after a run killed at {delay_ms} ms: {reach:?}"
        );
        sb.host_ok(&["/usr/bin/nm-multiwan", "-q", "apply"]);
        assert_eq!(
            sb.snapshot(),
            reference,
            "run after one killed at {delay_ms} ms did not repair"
        );
    }
}

/// Weights are exact, `enabled = false` and `ipv4.never-default` uplinks are left out,
/// and point 2: other software's mark bits survive ours.
fn weights_exclusions_and_foreign_marks(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "wght",
        &[
            "eth0:static:1",
            "wlan0:static:2",
            "usb0:static:3",
            "eth1:static:4",
        ],
        Options {
            firewall: fw,
            config: Some("[uplinks.up-eth0]\nweight = 2\n[uplinks.usb0]\nenabled = false\n"),
            ..Default::default()
        },
    );
    // eth1 never gets the default route.
    sb.host_ok(&[
        "nmcli",
        "con",
        "modify",
        "up-eth1",
        "ipv4.never-default",
        "yes",
    ]);
    for c in ["up-eth0", "up-wlan0", "up-usb0", "up-eth1"] {
        sb.up(c);
    }
    sb.wait_until(10, "rules for two uplinks", || sb.our_table_rules() == 4);
    expect_spread(&sb, 9, &[(1, 6), (2, 3)]);

    let status = sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let ifaces: Vec<&str> = v["uplinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["iface"].as_str().unwrap())
        .collect();
    assert_eq!(ifaces, ["eth0", "wlan0"]);
    assert_eq!(v["uplinks"][0]["weight"], 2);
    assert_eq!(v["in_sync"], true);

    // Another program keeps its own bits on packets and connections: a packet mark
    // bit set after our chain, and a connmark bit set in POSTROUTING.
    sb.host_ok(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "OUTPUT",
        "-j",
        "MARK",
        "--set-xmark",
        "0x4000/0x4000",
    ]);
    sb.host_ok(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-j",
        "CONNMARK",
        "--set-xmark",
        "0x800/0x800",
    ]);
    // Counts packets to the server that carry both the foreign bit and one of ours.
    sb.host_ok(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-d",
        SERVER,
        "-m",
        "mark",
        "--mark",
        "0x4000/0x4000",
        "-m",
        "mark",
        "!",
        "--mark",
        "0/0x3f000000",
    ]);
    expect_spread(&sb, 6, &[(1, 4), (2, 2)]);
    let counted = sb.host_ok(&[
        "iptables",
        "-t",
        "mangle",
        "-L",
        "POSTROUTING",
        "-v",
        "-x",
        "-n",
    ]);
    let packets: u64 = counted
        .lines()
        .filter(|l| l.contains("mark match 0x4000/0x4000"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        packets >= 6 * 3,
        "foreign and our mark bits on packets: {counted}"
    );
    let ct = sb.host_ok(&[
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--dport",
        "7000",
        "-d",
        SERVER,
    ]);
    let marks: Vec<u32> = ct
        .lines()
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("mark=")))
        .filter_map(|m| m.parse().ok())
        .collect();
    assert!(!marks.is_empty(), "{ct}");
    assert!(
        marks.iter().any(|m| m & 0x800 != 0 && m & 0x3f00_0000 != 0),
        "connmarks lost a foreign or our bit: {marks:x?}"
    );
}

/// Bad input: a broken config names file, line and reason, exits non-zero and changes
/// nothing; hostile connection names are only data; nonsense arguments are usage errors.
fn bad_input_changes_nothing(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "bad",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    let pwned = format!("/tmp/nmmw-pwned-{}", std::process::id());
    let evil = format!("evil \"$(touch {pwned})\" 'q' `touch {pwned}`");
    sb.host_ok(&["nmcli", "con", "modify", "up-wlan0", "connection.id", &evil]);
    sb.up("up-eth0");
    sb.up(&evil);
    sb.wait_until(10, "rules for two uplinks", || sb.our_table_rules() == 4);
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "a connection name was executed"
    );
    let status = sb.host_ok(&["/usr/bin/nm-multiwan", "status"]);
    assert!(status.contains(&evil), "{status}");

    let before = sb.snapshot();
    let cfg = sb.work_file("etc-nm-multiwan/config.toml");
    std::fs::write(
        &cfg,
        "mark_mask = \"0x3f000000\"\n[uplinks.x]\nwieght = 2\n",
    )
    .unwrap();
    let o = sb.nmmw(&["apply"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.toml:3") && err.contains("wieght"),
        "{err}"
    );
    assert_eq!(sb.snapshot(), before, "a broken config changed the kernel");
    // The dispatcher meets the same broken file: nothing changes either.
    let o = sb.nmmw(&["dispatch", "eth0", "up"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(sb.snapshot(), before, "a broken config changed the kernel");
    std::fs::remove_file(&cfg).unwrap();

    for args in [
        &["dispatch"][..],
        &["dispatch", "eth0"],
        &["frobnicate"],
        &["status", "--bogus"],
    ] {
        let o = sb.nmmw(args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    // Actions we do not act on return at once and change nothing.
    let o = sb.nmmw(&["dispatch", "eth0", "pre-up"]);
    assert!(o.status.success());
    assert_eq!(sb.snapshot(), before);
}

/// Point 6: two uplinks in one subnet with one gateway (wired + Wi-Fi on one campus
/// network, 10 Mbit/s per address) double the rate of parallel downloads.
fn campus_same_subnet_doubles_parallel_downloads(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "camp",
        &["eth0:campus", "wlan0:campus"],
        Options {
            firewall: fw,
            rate: Some("10mbit"),
            ..Default::default()
        },
    );
    sb.up("up-eth0");
    let rate = |sb: &Sandbox| -> f64 {
        let out = sb.host_ok(&[
            "iperf3", "-c", SERVER, "-p", "5201", "-R", "-P", "4", "-t", "3", "-O", "1", "-J",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
    };
    let one = rate(&sb);
    sb.up("up-wlan0");
    sb.wait_until(10, "rules for two uplinks", || sb.our_table_rules() == 4);
    let two = rate(&sb);
    eprintln!(
        "campus: one uplink {:.1} Mbit/s, two uplinks {:.1} Mbit/s",
        one / 1e6,
        two / 1e6
    );
    assert!(two > 1.6 * one, "two uplinks {two} vs one {one}");
    // Both links carry downloads: each host interface received a share.
    for iface in ["eth0", "wlan0"] {
        let rx: u64 = sb
            .host_ok(&[
                "cat",
                &format!("/sys/class/net/{iface}/statistics/rx_bytes"),
            ])
            .trim()
            .parse()
            .unwrap();
        assert!(rx > 1_000_000, "{iface} received only {rx} bytes");
    }
}

on_both_backends!(
    balances_over_uplinks_and_follows_nmcli,
    identity_survives_an_uplink_leaving,
    apply_is_idempotent_and_flush_restores_everything,
    concurrent_and_killed_runs_converge,
    weights_exclusions_and_foreign_marks,
    bad_input_changes_nothing,
    campus_same_subnet_doubles_parallel_downloads,
);
