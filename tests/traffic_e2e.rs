//! End to end: the traffic real machines make (issue "Balance the traffic real machines
//! make"), observed at the servers and in the kernel, never in our logs, on both
//! firewall backends. Each test prints its figures (`-- --nocapture`); run against an
//! earlier build with `NMMW_BINARY=PATH` to measure what that one did.
//! Root only; CI runs as root.

mod common;

use std::collections::BTreeMap;

use common::{Fw, Options, SERVER, Sandbox, isp_addr, tally};

const UPLINKS: [&str; 3] = ["eth0:static:1", "wlan0:dhcp:2", "usb0:static:3"];

fn sandbox(tag: &str, fw: Fw) -> Sandbox {
    let sb = Sandbox::create_up(
        tag,
        &UPLINKS,
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    sb
}

/// `client.py ARGS...` in the host: its output lines.
fn client(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let client = sb.client();
    let mut full = vec!["python3", client.as_str()];
    full.extend_from_slice(args);
    sb.host_ok(&full).lines().map(str::to_string).collect()
}

/// What `explain ARGS` says: (the uplink it names, its whole answer).
fn explain(sb: &Sandbox, args: &[&str]) -> (Option<String>, serde_json::Value) {
    let mut full = vec!["explain", "--json"];
    full.extend_from_slice(args);
    let o = sb.nmmw(&full);
    assert!(o.status.success(), "explain {args:?}: {o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("explain --json");
    let iface = v["iface"].as_str().map(str::to_string);
    (iface, v)
}

/// The ISP address the server sees for traffic through `iface` of [`UPLINKS`].
fn isp_of(iface: &str) -> String {
    let k = UPLINKS
        .iter()
        .position(|s| s.starts_with(&format!("{iface}:")))
        .expect("one of ours") as u32
        + 1;
    isp_addr(k)
}

fn spread_ok(counts: &BTreeMap<String, usize>, total: usize, isps: usize) -> bool {
    let exact = total / isps;
    counts.len() == isps
        && counts.keys().all(|k| !k.starts_with("FAIL"))
        && counts.values().all(|&c| c.abs_diff(exact) <= 1)
}

/// A browser-like mix: an A and an AAAA look-up before every connection (to the first
/// uplink's resolver, as a stub resolver does), a QUIC-like UDP flow and a TCP
/// connection per page, two long downloads all along. TCP spreads within one
/// connection of exact per uplink, UDP spreads too, every look-up is answered; and
/// `explain` names the uplink of the next TCP and UDP connection.
fn browser_mix_spreads_tcp_and_udp(fw: Fw) {
    require_root!();
    let sb = sandbox("mix", fw);
    let out = client(&sb, &["mix", "24", "192.0.2.1", SERVER]);
    let mix: serde_json::Value = serde_json::from_str(&out[0]).expect("mix JSON");
    let list = |k: &str| -> Vec<String> {
        mix[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let tcp = tally(&list("tcp"));
    let udp = tally(&list("udp"));
    let dns = list("dns");
    let answered = dns.iter().filter(|a| !a.starts_with("FAIL")).count();
    eprintln!(
        "[{}] browser mix, 24 pages: TCP {tcp:?}; UDP {udp:?}; look-ups answered {answered}/{}; downloads {:?} bytes",
        fw.name(),
        dns.len(),
        mix["downloads"]
    );
    assert!(spread_ok(&tcp, 24, 3), "TCP per uplink: {tcp:?}");
    assert!(spread_ok(&udp, 24, 3), "UDP per uplink: {udp:?}");
    assert_eq!(answered, dns.len(), "look-ups answered: {dns:?}");
    assert!(
        mix["downloads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b.as_u64().unwrap() > 0),
        "the downloads ran: {mix}"
    );
    // The issue's own case: two look-ups (and nothing else) before each connection,
    // three uplinks: one round for everything would give every TCP connection the same
    // uplink.
    let out = client(&sb, &["mix", "24", "192.0.2.1", SERVER, "0"]);
    let plain: serde_json::Value = serde_json::from_str(&out[0]).expect("mix JSON");
    let tcp: Vec<String> = plain["tcp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let tcp = tally(&tcp);
    eprintln!(
        "[{}] two look-ups before each of 24 TCP connections: TCP {tcp:?}",
        fw.name()
    );
    assert!(spread_ok(&tcp, 24, 3), "TCP per uplink: {tcp:?}");
    // explain predicts the next connection of each protocol, several times over.
    for _ in 0..4 {
        let (iface, v) = explain(&sb, &[SERVER, "7000"]);
        let seen = client(&sb, &["which", "1", SERVER, "7000"]);
        assert_eq!(v["rung"], 6, "{v}");
        assert_eq!(
            seen,
            [isp_of(iface.as_deref().unwrap())],
            "TCP: explain said {v}"
        );
        let (iface, v) = explain(&sb, &[SERVER, "443", "--udp"]);
        let seen = client(&sb, &["udp", "1", SERVER, "443"]);
        assert_eq!(
            seen,
            [isp_of(iface.as_deref().unwrap())],
            "UDP: explain said {v}"
        );
    }
}

/// Each ISP's resolver answers only its own customers: every query to each uplink's
/// resolver is answered (it leaves through that uplink). When the uplink leaves, its
/// resolver is no longer pinned.
fn each_uplinks_resolver_is_answered(fw: Fw) {
    require_root!();
    let sb = sandbox("dns", fw);
    let mut figures = Vec::new();
    for (k, iface) in [(1, "eth0"), (2, "wlan0"), (3, "usb0")] {
        let server = format!("192.0.2.{k}");
        let answers = client(&sb, &["dns", "12", &server, "isp.test"]);
        let right = answers
            .iter()
            .filter(|a| **a == format!("10.99.0.{k}"))
            .count();
        figures.push(format!("{server} ({iface}): {right}/12"));
        assert_eq!(right, 12, "{server}: {answers:?}");
        let (via, v) = explain(&sb, &[&server, "53", "--udp"]);
        assert_eq!(
            (via.as_deref(), &v["rung"]),
            (Some(iface), &4.into()),
            "{v}"
        );
    }
    eprintln!("[{}] look-ups answered: {}", fw.name(), figures.join(", "));
    sb.down("up-usb0");
    let (_, v) = explain(&sb, &["192.0.2.3", "53", "--udp"]);
    assert_eq!(v["rung"], 6, "usb0's server is balanced again: {v}");
    assert!(!sb.firewall_text().contains("192.0.2.3"));
    // The others' still are.
    let answers = client(&sb, &["dns", "6", "192.0.2.2", "isp.test"]);
    assert!(answers.iter().all(|a| a == "10.99.0.2"), "{answers:?}");
}

/// Conntrack entries of `src` to the server: (original source, reply destination).
fn translations(sb: &Sandbox, src: &str) -> Vec<(String, String)> {
    let out = sb.host_ok(&["conntrack", "-L", "-s", src, "-d", SERVER]);
    out.lines()
        .filter_map(|l| {
            let srcs: Vec<&str> = l
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("src="))
                .collect();
            let dsts: Vec<&str> = l
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("dst="))
                .collect();
            Some((srcs.first()?.to_string(), dsts.get(1)?.to_string()))
        })
        .collect()
}

/// Sockets bound to an uplink's address (other than the primary's) leave through that
/// uplink, untranslated, 10 of 10; sockets bound to a device too; `explain --from`
/// and `--device` say so.
fn bound_sockets_leave_through_their_uplink(fw: Fw) {
    require_root!();
    let sb = sandbox("bind", fw);
    for iface in ["wlan0", "usb0"] {
        let addr = sb.addr(iface);
        let seen = tally(&client(
            &sb,
            &["which", "10", SERVER, "7000", "--bind", &addr],
        ));
        eprintln!("[{}] bound to {addr} ({iface}): {seen:?}", fw.name());
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [(isp_of(iface), 10)],
            "bound to {iface}'s address"
        );
        let untranslated = translations(&sb, &addr);
        assert!(
            !untranslated.is_empty() && untranslated.iter().all(|(s, d)| s == d),
            "not translated: {untranslated:?}"
        );
        let (via, v) = explain(&sb, &[SERVER, "7000", "--from", &addr]);
        assert_eq!(
            (via.as_deref(), &v["rung"]),
            (Some(iface), &3.into()),
            "{v}"
        );
    }
    for iface in ["eth0", "wlan0", "usb0"] {
        let seen = tally(&client(
            &sb,
            &["which", "10", SERVER, "7000", "--device", iface],
        ));
        eprintln!("[{}] bound to device {iface}: {seen:?}", fw.name());
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [(isp_of(iface), 10)]);
    }
    let (via, _) = explain(&sb, &[SERVER, "7000", "--device", "usb0"]);
    assert_eq!(via.as_deref(), Some("usb0"));
    // The primary's address cannot be told from an unbound socket's: balanced, and
    // every connection still works.
    let primary = sb.addr("eth0");
    let seen = tally(&client(
        &sb,
        &["which", "9", SERVER, "7000", "--bind", &primary],
    ));
    assert!(
        spread_ok(&seen, 9, 3),
        "bound to the primary's address: {seen:?}"
    );
}

/// IPv6: a socket bound to the second uplink's address leaves through it, 10 of 10.
fn bound_sockets_ipv6(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "bind6",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            ipv6: true,
            ..Default::default()
        },
    );
    sb.wait_until(10, "IPv6 rules", || sb.our_table_rules6() == 4);
    let addr = sb.addr6("wlan0");
    let seen = tally(
        &client(
            &sb,
            &["which", "10", common::SERVER6, "7000", "--bind", &addr],
        )
        .iter()
        .map(|s| common::normalise_addr(s))
        .collect::<Vec<_>>(),
    );
    eprintln!("[{}] bound to {addr} (wlan0): {seen:?}", fw.name());
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [(common::isp_addr6(2), 10)]
    );
    let (via, _) = explain(&sb, &[common::SERVER6, "7000", "--from", &addr]);
    assert_eq!(via.as_deref(), Some("wlan0"));
}

on_both_backends!(
    browser_mix_spreads_tcp_and_udp,
    each_uplinks_resolver_is_answered,
    bound_sockets_leave_through_their_uplink,
    bound_sockets_ipv6,
);
