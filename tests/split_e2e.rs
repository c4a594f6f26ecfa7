//! End-to-end tests of `split`/`unsplit` (virtual uplinks on one wire) against a real
//! NetworkManager in the sandbox, on a campus network that gives every DHCP client its
//! own address and caps each address at 10 Mbit/s (`SB_RATE_PER_ADDRESS`). Everything is
//! observed from outside: the kernel's links and addresses, NetworkManager's connections,
//! the campus network's per-address counters and the internet server's iperf3.
//! Root only: without root these tests fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Options, SERVER, Sandbox};

fn require_root() {
    assert!(
        common::is_root(),
        "split_e2e needs root (network namespaces, a private NetworkManager): run \
         `sudo cargo test --test split_e2e` or `sudo tests/run.sh`"
    );
}

/// A campus network capping each address at 10 Mbit/s, both directions.
fn campus(tag: &str, specs: &[&str], autoconnect: bool) -> Sandbox {
    Sandbox::create(
        tag,
        specs,
        Options {
            rate_per_address: Some("10mbit"),
            autoconnect,
            ..Default::default()
        },
    )
}

/// One macvlan link as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    parent: String,
    mac: String,
    ifindex: u64,
}

/// The host's macvlan links, by name (`ip -d -j link show type macvlan`).
fn macvlans(sb: &Sandbox) -> BTreeMap<String, Link> {
    let out = sb.host_ok(&["ip", "-d", "-j", "link", "show", "type", "macvlan"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::json!([]));
    let ifaces = sb.host_ok(&["ip", "-j", "link", "show"]);
    let all: serde_json::Value = serde_json::from_str(&ifaces).unwrap();
    let name_of = |index: u64| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifindex"].as_u64() == Some(index))
            .and_then(|l| l["ifname"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    v.as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap().to_string();
            assert_eq!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
            let parent = l["link"]
                .as_str()
                .map(str::to_string)
                .or_else(|| l["link_index"].as_u64().map(name_of))
                .unwrap_or_default();
            let link = Link {
                name: name.clone(),
                parent,
                mac: l["address"].as_str().unwrap().to_string(),
                ifindex: l["ifindex"].as_u64().unwrap(),
            };
            (name, link)
        })
        .collect()
}

/// NetworkManager's connections: name -> (uuid, type, device).
fn connections(sb: &Sandbox) -> BTreeMap<String, (String, String, String)> {
    sb.host_ok(&["nmcli", "-t", "-f", "NAME,UUID,TYPE,DEVICE", "con", "show"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 4).then(|| {
                (
                    f[0].to_string(),
                    (f[1].to_string(), f[2].to_string(), f[3].to_string()),
                )
            })
        })
        .collect()
}

/// The MAC address NetworkManager keeps in a connection.
fn stored_mac(sb: &Sandbox, conn: &str) -> String {
    sb.host_ok(&[
        "nmcli",
        "-g",
        "802-3-ethernet.cloned-mac-address",
        "con",
        "show",
        conn,
    ])
    .trim()
    .replace('\\', "")
    .to_lowercase()
}

fn is_local_unicast(mac: &str) -> bool {
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    first & 0x02 == 0x02 && first & 0x01 == 0
}

fn split(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let o = sb.nmmw(args);
    eprintln!(
        "nm-multiwan {args:?}: exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn split_ok(sb: &Sandbox, args: &[&str]) -> String {
    let o = split(sb, args);
    assert!(o.status.success(), "nm-multiwan {args:?} failed");
    common::text(&o)
}

/// Waits until `iface` is activated in NetworkManager and has an IPv4 address.
fn wait_activated(sb: &Sandbox, iface: &str) {
    sb.wait_until(30, &format!("{iface} activated with an address"), || {
        let o = sb.host(&["nmcli", "-g", "GENERAL.STATE", "device", "show", iface]);
        common::text(&o).trim() == "100 (connected)"
            && sb
                .host(&["ip", "-4", "-o", "addr", "show", "dev", iface])
                .stdout
                .windows(5)
                .any(|w| w == b"inet ")
    });
}

/// Downloads from the internet server over `streams` parallel connections: the
/// server-side receive rate in bit/s, as iperf3 reports it.
fn download_rate(sb: &Sandbox, streams: u32) -> f64 {
    let out = sb.host_ok(&[
        "iperf3",
        "-c",
        SERVER,
        "-p",
        "5201",
        "-R",
        "-P",
        &streams.to_string(),
        "-t",
        "4",
        "-O",
        "1",
        "-J",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
}

/// Bytes the campus network sent to each host address (its per-address class on the
/// downstream side of `port`, class 1:(0x100 + last octet)).
fn campus_bytes_to(sb: &Sandbox, port: &str) -> BTreeMap<String, u64> {
    let out = sb.ns_ok("campus", &["tc", "-s", "class", "show", "dev", port]);
    let mut bytes = BTreeMap::new();
    let mut class: Option<u32> = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"class") {
            class = words
                .get(2)
                .and_then(|c| c.strip_prefix("1:"))
                .and_then(|m| u32::from_str_radix(m, 16).ok());
        } else if words.first() == Some(&"Sent")
            && let Some(minor) = class.filter(|m| (0x102..=0x1fe).contains(m))
        {
            let sent: u64 = words[1].parse().unwrap();
            bytes.insert(format!("10.250.0.{}", minor - 0x100), sent);
        }
    }
    bytes
}

/// New connections to the internet server: how many the campus network saw from each
/// host address (its connection tracking, before it masquerades them).
fn campus_spread(sb: &Sandbox, n: usize) -> BTreeMap<String, usize> {
    sb.ns_ok("campus", &["conntrack", "-F"]);
    let seen = sb.spread(n);
    assert_eq!(
        seen.values().sum::<usize>(),
        n,
        "failed connections: {seen:?}"
    );
    let out = sb.ns_ok(
        "campus",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--dst",
            SERVER,
            "--dport",
            "7000",
        ],
    );
    let mut by_src = BTreeMap::new();
    for line in out.lines() {
        if let Some(src) = line.split_whitespace().find_map(|w| w.strip_prefix("src=")) {
            *by_src.entry(src.to_string()).or_insert(0) += 1;
        }
    }
    by_src
}

/// `split eth0 3` on the wired uplink: four addresses on one wire, each a separate DHCP
/// client with a locally administered MAC, all balanced; parallel downloads at least 3.6
/// times one address's rate, and with a Wi-Fi uplink on the same network at least 4.5
/// times.
#[test]
fn split_multiplies_the_rate_of_one_wire() {
    require_root();
    let sb = campus("spr", &["eth0:campus", "wlan0:campus"], false);
    sb.up("up-eth0");
    const STREAMS: u32 = 16;
    // One address at its best: fewer connections through one capped address lose less.
    let one = download_rate(&sb, 4);

    let out = split_ok(&sb, &["split", "eth0", "3"]);
    let links = macvlans(&sb);
    let names: Vec<&str> = links.keys().map(String::as_str).collect();
    assert_eq!(names, ["eth0-v1", "eth0-v2", "eth0-v3"], "{links:?}");
    let mut macs = BTreeSet::new();
    let mut addrs = BTreeSet::from([sb.addr("eth0")]);
    for l in links.values() {
        assert_eq!(l.parent, "eth0", "{l:?}");
        assert!(is_local_unicast(&l.mac), "{l:?}");
        assert_eq!(
            stored_mac(&sb, &l.name),
            l.mac,
            "MAC kept in the connection"
        );
        assert!(
            out.contains(&l.mac),
            "split's output names {}: {out}",
            l.mac
        );
        macs.insert(l.mac.clone());
        addrs.insert(sb.addr(&l.name));
    }
    assert_eq!(macs.len(), 3, "distinct MACs: {links:?}");
    assert_eq!(addrs.len(), 4, "four addresses on one wire: {addrs:?}");
    let leases = std::fs::read_to_string(sb.work_file("dnsmasq-campus.leases")).unwrap();
    for mac in &macs {
        assert!(
            leases.contains(mac.as_str()),
            "no lease for {mac}: {leases}"
        );
    }
    let conns = connections(&sb);
    for n in 1..=3 {
        let name = format!("eth0-v{n}");
        let (_, kind, device) = &conns[&name];
        assert_eq!((kind.as_str(), device.as_str()), ("macvlan", name.as_str()));
    }
    sb.wait_until(10, "rules for four uplinks", || sb.our_table_rules() == 8);

    // Balanced: the campus network sees new connections come from all four addresses
    // alike.
    let spread = campus_spread(&sb, 12);
    assert_eq!(
        spread.into_iter().collect::<Vec<_>>(),
        addrs.iter().map(|a| (a.clone(), 3)).collect::<Vec<_>>(),
        "connections per address, as the campus network saw them"
    );
    let status = common::text(&sb.nmmw(&["status"]));
    for n in 1..=3 {
        assert!(
            status.contains(&format!("eth0-v{n} (on eth0)")),
            "status: {status}"
        );
    }

    let before = campus_bytes_to(&sb, "eth0");
    let four = download_rate(&sb, STREAMS);
    let after = campus_bytes_to(&sb, "eth0");
    let moved: BTreeMap<&String, u64> = addrs
        .iter()
        .map(|a| (a, after.get(a).unwrap_or(&0) - before.get(a).unwrap_or(&0)))
        .collect();
    let total: u64 = moved.values().sum();
    for (addr, bytes) in &moved {
        assert!(
            *bytes * 10 > total,
            "{addr} carried {bytes} of {total} bytes: {moved:?}"
        );
    }

    sb.up("up-wlan0");
    sb.wait_until(10, "rules for five uplinks", || sb.our_table_rules() == 10);
    let five = download_rate(&sb, STREAMS);
    eprintln!(
        "one wire: one address {:.1} Mbit/s; eth0 + 3 virtual {:.1} ({:.2}x); + Wi-Fi {:.1} ({:.2}x)",
        one / 1e6,
        four / 1e6,
        four / one,
        five / 1e6,
        five / one
    );
    assert!(four >= 3.6 * one, "4 addresses {four} vs one {one}");
    assert!(five >= 4.5 * one, "5 addresses {five} vs one {one}");
}

/// After a reboot-like restart (NetworkManager stopped, every software link and address
/// gone, NetworkManager started from its profiles) the virtual uplinks come back by
/// themselves with the same MAC addresses, so the network gives them the same addresses.
#[test]
fn virtual_uplinks_keep_their_macs_and_addresses_across_a_restart() {
    require_root();
    let sb = campus("srb", &["eth0:campus"], true);
    split_ok(&sb, &["split", "eth0", "2"]);
    let before = macvlans(&sb);
    assert_eq!(before.len(), 2, "{before:?}");
    let addrs: BTreeMap<String, String> = before.keys().map(|n| (n.clone(), sb.addr(n))).collect();
    let parent_addr = sb.addr("eth0");

    let o = std::process::Command::new(common::sandbox_script())
        .args(["restart-nm", "--reboot", &sb.name])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "restart-nm: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for name in before.keys() {
        wait_activated(&sb, name);
    }
    wait_activated(&sb, "eth0");
    let after = macvlans(&sb);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, b) in &before {
        let a = &after[name];
        assert_ne!(a.ifindex, b.ifindex, "{name} was not recreated: {a:?}");
        assert_eq!(a.mac, b.mac, "{name} has another MAC after the restart");
        assert_eq!(a.parent, "eth0");
        assert_eq!(sb.addr(name), addrs[name], "{name} has another address");
    }
    assert_eq!(sb.addr("eth0"), parent_addr);
    // And they are uplinks again.
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
}

/// `split` twice changes nothing; a smaller count removes exactly the difference; 0
/// removes exactly what `split` created. A macvlan connection of someone else's on the
/// same parent is never touched.
#[test]
fn split_changes_only_what_it_created() {
    require_root();
    let sb = campus("sch", &["eth0:campus"], false);
    sb.up("up-eth0");
    sb.host_ok(&[
        "nmcli",
        "con",
        "add",
        "type",
        "macvlan",
        "con-name",
        "mine",
        "ifname",
        "mine0",
        "dev",
        "eth0",
        "mode",
        "bridge",
        "ipv4.method",
        "auto",
        "ipv6.method",
        "disabled",
    ]);
    wait_activated(&sb, "mine0");
    let foreign_link = macvlans(&sb)["mine0"].clone();
    let foreign_conn = connections(&sb)["mine"].clone();

    split_ok(&sb, &["split", "eth0", "3"]);
    let links = macvlans(&sb);
    let conns = connections(&sb);
    assert_eq!(links.len(), 4, "{links:?}");

    // Idempotent: the same connections, links and addresses.
    let addrs: Vec<String> = (1..=3).map(|n| sb.addr(&format!("eth0-v{n}"))).collect();
    split_ok(&sb, &["split", "eth0", "3"]);
    assert_eq!(macvlans(&sb), links, "a second split changed the links");
    assert_eq!(
        connections(&sb),
        conns,
        "a second split changed the connections"
    );
    let again: Vec<String> = (1..=3).map(|n| sb.addr(&format!("eth0-v{n}"))).collect();
    assert_eq!(again, addrs);

    // Down to one: v2 and v3 go, v1 and the foreign one stay as they were.
    split_ok(&sb, &["split", "eth0", "1"]);
    sb.wait_until(10, "two macvlan links", || macvlans(&sb).len() == 2);
    let links1 = macvlans(&sb);
    assert_eq!(links1["eth0-v1"], links["eth0-v1"]);
    assert_eq!(links1["mine0"], foreign_link);
    let conns1 = connections(&sb);
    let mut expected = conns.clone();
    expected.remove("eth0-v2");
    expected.remove("eth0-v3");
    assert_eq!(conns1, expected);

    // Up again: a new v2, v1 untouched.
    split_ok(&sb, &["split", "eth0", "2"]);
    let links2 = macvlans(&sb);
    assert_eq!(links2["eth0-v1"], links["eth0-v1"]);
    assert!(
        links2.contains_key("eth0-v2") && links2.len() == 3,
        "{links2:?}"
    );

    // Zero: exactly ours are gone; the foreign one is untouched, and so is everything
    // else NetworkManager holds.
    let o = split(&sb, &["unsplit", "eth0"]);
    assert!(o.status.success());
    sb.wait_until(10, "only the foreign macvlan", || macvlans(&sb).len() == 1);
    assert_eq!(macvlans(&sb)["mine0"], foreign_link);
    let mut expected = conns.clone();
    for n in 1..=3 {
        expected.remove(&format!("eth0-v{n}"));
    }
    assert_eq!(connections(&sb), expected);
    assert_eq!(connections(&sb)["mine"], foreign_conn);
    // And again: nothing left to do, nothing changed.
    split_ok(&sb, &["split", "eth0", "0"]);
    assert_eq!(connections(&sb), expected);
}

/// Bad requests are refused with exit code 2 and a message saying why, and change
/// nothing in NetworkManager or the kernel.
#[test]
fn bad_split_requests_are_refused_and_change_nothing() {
    require_root();
    let sb = campus(
        "sbad",
        &["eth0:campus", "wlan0:campus", "usb0:campus"],
        false,
    );
    sb.up("up-eth0");
    split_ok(&sb, &["split", "eth0", "1"]);
    // Someone else's macvlan, and a connection holding a name split would use.
    sb.host_ok(&[
        "nmcli",
        "con",
        "add",
        "type",
        "macvlan",
        "con-name",
        "mine",
        "ifname",
        "mine0",
        "dev",
        "eth0",
        "mode",
        "bridge",
        "ipv4.method",
        "auto",
        "ipv6.method",
        "disabled",
    ]);
    wait_activated(&sb, "mine0");
    sb.host_ok(&["nmcli", "device", "set", "wlan0", "managed", "no"]);
    sb.host_ok(&[
        "nmcli",
        "con",
        "add",
        "type",
        "dummy",
        "con-name",
        "eth0-v2",
        "ifname",
        "dummy7",
        "autoconnect",
        "no",
    ]);
    let state = |sb: &Sandbox| {
        (
            connections(sb),
            macvlans(sb),
            sb.host_ok(&["ip", "-4", "-br", "addr"]),
        )
    };
    let before = state(&sb);
    for (args, why) in [
        (&["split", "eth0", "9"][..], "at most 8"),
        (&["split", "eth0", "1000"], "at most 8"),
        (&["split", "wlan0", "1"], "not managed"),
        (&["split", "eth0-v1", "1"], "itself a virtual uplink"),
        (&["split", "mine0", "1"], "itself a virtual interface"),
        (&["split", "nosuch0", "1"], "no device nosuch0"),
        (&["split", "usb0", "1"], "no active connection"),
        (&["split", "eth0", "2"], "taken by connection 'eth0-v2'"),
    ] {
        let o = split(&sb, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?} should say '{why}': {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(state(&sb), before, "{args:?} changed something");
    }
    // Usage errors are refused by the parser.
    for args in [
        &["split", "eth0"][..],
        &["split", "eth0", "-1"],
        &["unsplit"],
    ] {
        assert_eq!(split(&sb, args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(state(&sb), before);
}
