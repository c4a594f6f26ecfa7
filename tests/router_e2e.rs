//! Router mode end-to-end: a LAN behind the machine on a NetworkManager shared
//! connection (its own dnsmasq gives the clients addresses and answers their DNS), its
//! clients' new connections balanced over the uplinks like the machine's own.
//! Observed at the servers and in the kernel (conntrack, nftables, iptables), on both
//! firewall backends. Root only; CI runs as root.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Fw, LanClient, Options, SERVER, SERVER6, Sandbox, isp_addr, isp_addr6, sandbox_script, tally,
};

const UPLINKS: [&str; 3] = ["eth0:static:1", "eth1:static:2", "eth2:dhcp:3"];

fn router(tag: &str, fw: Fw, config: Option<&str>, clients: usize) -> (Sandbox, Vec<LanClient>) {
    let sb = Sandbox::create_up(
        tag,
        &UPLINKS,
        Options {
            firewall: fw,
            config,
            ..Default::default()
        },
    );
    let lan = sb.lan(clients, false);
    assert_eq!(lan.len(), clients);
    for c in &lan {
        assert!(
            c.addr.starts_with("10.42.0."),
            "{} got {} from NetworkManager's dnsmasq",
            c.ns,
            c.addr
        );
    }
    // The dispatcher reconciled on the LAN's `up`: our decision is reachable from it.
    sb.wait_until(10, "the LAN in our firewall", || lan_in_firewall(&sb, fw));
    (sb, lan)
}

/// Whether our firewall sends new connections arriving on lan0 to the decision.
/// `nm-multiwan explain --from CLIENT DEST 7000`: where that LAN client's next
/// connection to DEST would go.
fn explain_from(sb: &Sandbox, client: &str, dest: &str) -> String {
    sb.host_ok(&[
        "/usr/bin/nm-multiwan",
        "explain",
        "--from",
        client,
        dest,
        "7000",
    ])
}

fn lan_in_firewall(sb: &Sandbox, fw: Fw) -> bool {
    match fw {
        Fw::Nftables => {
            let o = sb.host(&["nft", "list", "chain", "inet", "nm-multiwan", "prerouting"]);
            o.status.success()
                && common::text(&o).contains("ct state == new iifname { \"lan0\" } goto lan")
        }
        Fw::Iptables => common::text(&sb.host(&["iptables-save", "-t", "mangle"]))
            .contains("-A nm-multiwan-pre -i lan0 -m conntrack --ctstate NEW -j nm-multiwan-lan"),
    }
}

/// Our marks on the tracked TCP connections from the LAN to `SERVER:7000`, and how many
/// carry each.
fn lan_marks(sb: &Sandbox) -> BTreeMap<String, usize> {
    let out = sb.host_ok(&[
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--orig-dst",
        SERVER,
        "--dport",
        "7000",
    ]);
    let mut marks = BTreeMap::new();
    for l in out.lines().filter(|l| l.contains("src=10.42.0.")) {
        let mark = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mark="))
            .unwrap_or("none");
        *marks.entry(mark.to_string()).or_default() += 1;
    }
    marks
}

/// 30 new connections from three LAN clients (10 each, one after the other) spread
/// 10/10/10 over three uplinks and all succeed; the kernel tracks them with our three
/// marks. Not balanced, and still working: LAN to LAN, LAN to the machine (DHCP was,
/// DNS is), LAN to an uplink's own subnet; the clients' DNS through NetworkManager's
/// dnsmasq reaches the ISPs' resolvers.
fn lan_clients_spread_over_the_uplinks(fw: Fw) {
    require_root!();
    let (sb, lan) = router("rspr", fw, None, 3);
    let mut seen = Vec::new();
    for c in &lan {
        seen.extend(sb.client_connections(&c.ns, 10, SERVER, 7000));
    }
    assert!(
        seen.iter().all(|s| !s.starts_with("FAIL")),
        "every connection succeeds: {seen:?}"
    );
    let want: BTreeMap<String, usize> = (1..=3).map(|k| (isp_addr(k), 10)).collect();
    assert_eq!(tally(&seen), want, "connections per ISP");
    let marks = lan_marks(&sb);
    assert_eq!(
        marks.len(),
        3,
        "three marks on the LAN's connections: {marks:?}"
    );
    assert!(marks.values().all(|&n| n == 10), "{marks:?}");
    assert!(!marks.contains_key("0") && !marks.contains_key("none"));
    // `status` shows the LAN and how many of its connections each uplink carries.
    let status: serde_json::Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"]))
            .expect("status --json");
    let lans = status["lans"].as_array().expect("lans");
    assert_eq!(lans.len(), 1, "{lans:?}");
    assert_eq!(lans[0]["iface"], "lan0");
    assert_eq!(lans[0]["shared"], true);
    let forwarded: BTreeMap<String, u64> =
        serde_json::from_value(lans[0]["forwarded"].clone()).expect("forwarded per uplink");
    let want_fwd: BTreeMap<String, u64> = ["eth0", "eth1", "eth2"]
        .iter()
        .map(|u| (u.to_string(), 10))
        .collect();
    assert_eq!(forwarded, want_fwd, "forwarded connections per uplink");
    let text = sb.host_ok(&["/usr/bin/nm-multiwan", "status"]);
    assert!(
        text.contains(
            "lan lan0 (lan, shared): 10.42.0.0/24; forwarded connections: eth0 10, eth1 10, eth2 10"
        ),
        "{text}"
    );
    // `explain --from` a client: LAN to LAN is the LAN's, not balanced.
    let words = explain_from(&sb, &lan[0].addr, &lan[1].addr);
    assert!(words.contains("on the LAN lan0 (10.42.0.0/24)"), "{words}");

    // LAN to LAN: straight across the bridge, the peer sees the client itself.
    let across = sb.client_connections(&lan[0].ns, 3, &lan[1].addr, 7000);
    assert_eq!(across, vec![lan[0].addr.clone(); 3], "LAN to LAN");
    // LAN to an uplink's own subnet: not balanced, out of that uplink (NetworkManager's
    // MASQUERADE gives the uplink's address), 3 of 3 whichever uplink the round is at.
    let local = sb.client_connections(&lan[0].ns, 3, "10.200.2.1", 7000);
    assert_eq!(
        local,
        vec!["10.200.2.2".to_string(); 3],
        "LAN to eth1's subnet"
    );
    // LAN to the machine and the clients' DNS: dnsmasq on 10.42.0.1 asks the ISPs'
    // resolvers (each answers its own customers only: the look-up left through the
    // uplink whose resolver it asked).
    let dns = sb.ns_ok(
        &lan[2].ns,
        &["python3", &sb.client(), "dns", "4", "10.42.0.1", "isp.test"],
    );
    assert!(
        dns.lines().count() == 4 && dns.lines().all(|l| l.starts_with("10.99.0.")),
        "client DNS through the machine: {dns}"
    );
}

/// IPv6 from a LAN with a ULA prefix: 30 new connections from three clients spread
/// 10/10/10, each masqueraded (NAT66) to the address of the uplink it leaves through;
/// IPv4 spreads alongside.
fn lan_clients_spread_over_the_uplinks_ipv6(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "rsp6",
        &UPLINKS,
        Options {
            firewall: fw,
            ipv6: true,
            ..Default::default()
        },
    );
    let lan = sb.lan(3, true);
    sb.wait_until(10, "the LAN in our firewall", || lan_in_firewall(&sb, fw));
    let mut seen = Vec::new();
    for c in &lan {
        assert!(c.addr6.is_some(), "{c:?}");
        seen.extend(sb.client_connections(&c.ns, 10, SERVER6, 7000));
    }
    let want: BTreeMap<String, usize> = (1..=3).map(|k| (isp_addr6(k), 10)).collect();
    assert_eq!(tally(&seen), want, "IPv6 connections per ISP");
    let seen4 = sb.client_connections(&lan[0].ns, 6, SERVER, 7000);
    let want4: BTreeMap<String, usize> = (1..=3).map(|k| (isp_addr(k), 2)).collect();
    assert_eq!(tally(&seen4), want4, "IPv4 alongside");
}

/// `sticky_by = "client"`: each client's new connections stay on one uplink, and the
/// clients spread over the uplinks (their first connections take the round in turn).
fn sticky_by_client_keeps_each_client_on_one_uplink(fw: Fw) {
    require_root!();
    let config = "[[policy]]\nname = \"clients\"\nfrom = [\"10.42.0.0/24\"]\nsticky = \"10m\"\nsticky_by = \"client\"\n";
    let (sb, lan) = router("rsti", fw, Some(config), 3);
    let mut per_client = Vec::new();
    for round in 0..2 {
        for c in &lan {
            let seen = sb.client_connections(&c.ns, 5, SERVER, 7000);
            let t = tally(&seen);
            assert_eq!(
                t.len(),
                1,
                "{} (round {round}) stays on one uplink: {seen:?}",
                c.ns
            );
            let isp = t.keys().next().unwrap().clone();
            assert!(!isp.starts_with("FAIL"), "{seen:?}");
            if round == 0 {
                per_client.push(isp);
            } else {
                let first = &per_client[lan.iter().position(|x| x.ns == c.ns).unwrap()];
                assert_eq!(&isp, first, "{} keeps its uplink", c.ns);
            }
        }
    }
    let mut distinct = per_client.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "three clients on three uplinks: {per_client:?}"
    );
    // `explain --from` a client names its sticky uplink.
    for (c, isp) in lan.iter().zip(&per_client) {
        let k = (1..=3).find(|k| &isp_addr(*k) == isp).expect("an ISP");
        let words = explain_from(&sb, &c.addr, SERVER);
        assert!(
            words.contains(&format!("through eth{}", k - 1)) && words.contains("sticky"),
            "{}: {words}",
            c.ns
        );
    }
    // The machine's own connections are not clients of the policy: they still spread.
    let own = sb.spread(6);
    assert_eq!(own.len(), 3, "the machine's own connections: {own:?}");
}

/// The global `sticky` by client, no `[[policy]]`: the general balance keeps each LAN
/// client on one uplink (clients spread over the uplinks), `status` lists the clients
/// under the implicit policy "sticky (global)", and the machine's own connections,
/// which all share one source address, still spread.
fn global_sticky_by_client_keeps_each_client_on_one_uplink(fw: Fw) {
    require_root!();
    let config = "sticky = \"10m\"\nsticky_by = \"client\"\n";
    let (sb, lan) = router("rgst", fw, Some(config), 3);
    let mut per_client = Vec::new();
    for round in 0..2 {
        for (i, c) in lan.iter().enumerate() {
            let seen = sb.client_connections(&c.ns, 5, SERVER, 7000);
            let t = tally(&seen);
            assert_eq!(
                t.len(),
                1,
                "{} (round {round}) stays on one uplink: {seen:?}",
                c.ns
            );
            let isp = t.keys().next().unwrap().clone();
            assert!(!isp.starts_with("FAIL"), "{seen:?}");
            if round == 0 {
                per_client.push(isp);
            } else {
                assert_eq!(isp, per_client[i], "{} keeps its uplink", c.ns);
            }
        }
    }
    let mut distinct = per_client.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "three clients on three uplinks: {per_client:?}"
    );
    // The kernel's sticky entries, as status reads them: one per client, on its uplink.
    let status: serde_json::Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"]))
            .expect("status --json");
    let policies = status["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0]["name"], "sticky (global)", "{policies:?}");
    for (c, isp) in lan.iter().zip(&per_client) {
        let k = (1..=3).find(|k| &isp_addr(*k) == isp).expect("an ISP");
        let entry = policies[0]["sticky"]
            .as_array()
            .expect("sticky entries")
            .iter()
            .find(|e| e["destination"] == c.addr.as_str())
            .unwrap_or_else(|| panic!("{}: no sticky entry in {policies:?}", c.addr));
        assert_eq!(entry["uplink"], format!("eth{}", k - 1), "{entry}");
        let words = explain_from(&sb, &c.addr, SERVER);
        assert!(
            words.contains("sticky (global)")
                && words.contains(&format!("through eth{}", k - 1))
                && words.contains("sticky"),
            "{}: {words}",
            c.ns
        );
    }
    // The machine's own connections are not LAN clients: they still spread.
    let words = sb.host_ok(&["/usr/bin/nm-multiwan", "explain", SERVER, "7000"]);
    assert!(
        !words.contains("sticky (global)"),
        "the machine's own: {words}"
    );
    let own = sb.spread(6);
    assert_eq!(own.len(), 3, "the machine's own connections: {own:?}");
}

/// A routed LAN (`lan = ["lan"]`, ipv4.method manual: NetworkManager's shared mode
/// rejects every new connection into its LAN) with a port forward on every uplink's
/// address to a LAN host: each is answered through the uplink it came in on, 6/6
/// (the ISPs drop what leaves through another one), and the LAN's own connections
/// still spread.
fn port_forward_is_answered_through_its_uplink(fw: Fw) {
    require_root!();
    let (sb, lan) = router("rpfw", fw, Some("lan = [\"lan\"]\n"), 2);
    sb.host_ok(&[
        "nmcli",
        "connection",
        "modify",
        "lan",
        "ipv4.method",
        "manual",
    ]);
    sb.up("lan");
    sb.wait_until(10, "NetworkManager's shared table gone", || {
        !common::text(&sb.host(&["nft", "list", "tables"])).contains("nm-shared-lan0")
    });
    sb.wait_until(10, "the routed LAN in our firewall", || {
        lan_in_firewall(&sb, fw)
    });
    // A routed LAN needs forwarding on (shared mode switched it on; keep it explicit).
    sb.host_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // The port forward is the user's, in a table of the test's own.
    let target = format!("{}:7000", lan[0].addr);
    for cmd in [
        "add table ip pftest".to_string(),
        "add chain ip pftest pre { type nat hook prerouting priority dstnat; }".to_string(),
        format!("add rule ip pftest pre tcp dport 8000 dnat to {target}"),
    ] {
        let args: Vec<&str> = std::iter::once("nft")
            .chain(cmd.split_whitespace())
            .collect();
        sb.host_ok(&args);
    }
    let mut answered = 0;
    for k in 1..=3 {
        let addr = sb.addr(&format!("eth{}", k - 1));
        let out = sb.ns_ok(
            "inet",
            &["python3", &sb.client(), "which", "2", &addr, "8000"],
        );
        for l in out.lines() {
            // The LAN host saw the internet side of ISP k's link.
            assert_eq!(
                l.trim(),
                format!("203.0.113.{}", 4 * k + 1),
                "forward on eth{}: {out}",
                k - 1
            );
            answered += 1;
        }
    }
    assert_eq!(answered, 6, "6/6 port-forwarded connections answered");
    let seen = sb.client_connections(&lan[1].ns, 6, SERVER, 7000);
    assert_eq!(tally(&seen).len(), 3, "the LAN still spreads: {seen:?}");
}

/// Long-lived connections of a client, while an uplink goes down: only new connections
/// move; those on the remaining uplinks keep working to the end.
fn uplink_down_moves_only_new_connections(fw: Fw) {
    require_root!();
    let (sb, lan) = router("rdwn", fw, None, 2);
    let hold = Command::new(sandbox_script())
        .args(["exec-ns", &sb.name, &lan[0].ns, "python3", &sb.client()])
        .args(["hold", "6", "6", SERVER, "7002"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hold client");
    std::thread::sleep(Duration::from_millis(1500));
    sb.down("up-eth2");
    let seen = sb.client_connections(&lan[1].ns, 10, SERVER, 7000);
    let want: BTreeMap<String, usize> = [(isp_addr(1), 5), (isp_addr(2), 5)].into();
    assert_eq!(tally(&seen), want, "new connections over the two left");
    let out = hold.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hold output {:?}: {e}; {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let held = report.as_array().expect("a list");
    assert_eq!(held.len(), 6);
    let isp = |c: &serde_json::Value| common::normalise_addr(c["isp"].as_str().unwrap_or(""));
    let on = |k: u32| held.iter().filter(|c| isp(c) == isp_addr(k)).count();
    assert_eq!((on(1), on(2), on(3)), (2, 2, 2), "{held:?}");
    for c in held.iter().filter(|c| isp(c) != isp_addr(3)) {
        assert_eq!(
            c["ok"], true,
            "a connection on a remaining uplink broke: {c}"
        );
    }
}

/// `flush` leaves the machine exactly as it was before nm-multiwan ran, NetworkManager's
/// shared table included, and the LAN keeps working through NetworkManager alone.
fn flush_leaves_the_router_as_before(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "rfls",
        &UPLINKS,
        Options {
            firewall: fw,
            dispatcher: false,
            ..Default::default()
        },
    );
    let lan = sb.lan(2, false);
    let before = sb.snapshot();
    assert!(before.contains("table ip nm-shared-lan0"), "{before}");
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    assert!(lan_in_firewall(&sb, fw));
    let seen = sb.client_connections(&lan[0].ns, 6, SERVER, 7000);
    assert_eq!(tally(&seen).len(), 3, "balanced: {seen:?}");
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.snapshot(), before, "flush left something behind");
    // NetworkManager's MASQUERADE alone: everything through the main table's uplink.
    let seen = sb.client_connections(&lan[1].ns, 3, SERVER, 7000);
    assert_eq!(seen, vec![isp_addr(1); 3]);
}

on_both_backends!(
    lan_clients_spread_over_the_uplinks,
    lan_clients_spread_over_the_uplinks_ipv6,
    sticky_by_client_keeps_each_client_on_one_uplink,
    global_sticky_by_client_keeps_each_client_on_one_uplink,
    port_forward_is_answered_through_its_uplink,
    uplink_down_moves_only_new_connections,
    flush_leaves_the_router_as_before,
);
