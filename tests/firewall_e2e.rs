//! The firewall backends end to end: switching from one to the other under live
//! connections, living beside other programs' firewalls (a firewalld-like native table
//! with hooks at our priorities, docker-like NAT and tailscale-like mark bits in
//! iptables-legacy), a batch the kernel refuses, and `plan` printing our table as
//! `nft list` does. Root only.

mod common;

use std::time::Duration;

use common::{Fw, Hold, Options, SERVER, Sandbox};

fn config_path(sb: &Sandbox) -> std::path::PathBuf {
    sb.work_file("etc-nm-multiwan/config.toml")
}

fn set_backend(sb: &Sandbox, fw: Fw) {
    std::fs::write(config_path(sb), format!("firewall = \"{}\"\n", fw.name())).unwrap();
}

fn spread(sb: &Sandbox, n: usize) -> Vec<usize> {
    sb.spread(n).values().copied().collect()
}

/// Our objects in iptables (either family) and whether our nftables table exists.
fn ours_in(sb: &Sandbox) -> (bool, bool) {
    let ipt = ["iptables-save", "ip6tables-save"]
        .iter()
        .any(|save| common::text(&sb.host(&[save])).contains("nm-multiwan"));
    let nft = sb
        .host(&["nft", "list", "table", "inet", "nm-multiwan"])
        .status
        .success();
    (ipt, nft)
}

/// iptables -> nftables -> iptables with six long-lived connections each time: every
/// one survives (same marks, same tables), nothing of the old backend is left, and the
/// state equals a fresh apply on the new backend.
#[test]
fn switching_backend_keeps_connections() {
    require_root!();
    // Brought up in the order a fresh apply numbers them (by interface), so that the
    // ids of the switched state and of a fresh one can be compared.
    let sb = Sandbox::create_up(
        "swit",
        &["eth0:static:1", "usb0:static:3", "wlan0:dhcp:2"],
        Options {
            firewall: Fw::Iptables,
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    assert_eq!(ours_in(&sb), (true, false));
    for (to, want) in [(Fw::Nftables, (false, true)), (Fw::Iptables, (true, false))] {
        let hold = Hold::start(&sb, 6, 5.0, SERVER);
        std::thread::sleep(Duration::from_millis(1500));
        set_backend(&sb, to);
        sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
        let held = hold.finish();
        assert!(
            held.iter().all(|h| h.ok),
            "a connection broke switching to {}: {held:?}",
            to.name()
        );
        assert_eq!(ours_in(&sb), want, "after switching to {}", to.name());
        let switched = sb.snapshot_ours();
        sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
        assert_eq!(ours_in(&sb), (false, false));
        sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
        assert_eq!(
            without_via_cgroups(&switched),
            without_via_cgroups(&sb.snapshot_ours()),
            "the switch to {} left something a fresh apply does not have",
            to.name()
        );
        assert_eq!(spread(&sb, 6), [2, 2, 2]);
    }
}

/// A state without the rules of `run --via` cgroups (and the plan digest they enter):
/// cgroups are machine-wide, and another test's `run --via` may create or remove one
/// between two snapshots of this sandbox.
fn without_via_cgroups(state: &str) -> String {
    state
        .lines()
        .filter(|l| {
            !l.contains("nm-multiwan/via-")
                && !l.contains("nm-multiwan plan=")
                && !l.contains("nm-multiwan:plan=")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `iptables-legacy-save`, without comments and counters.
fn legacy_save(sb: &Sandbox) -> String {
    common::text(&sb.host(&["iptables-legacy-save"]))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn firewalld_table(sb: &Sandbox) -> String {
    sb.host_ok(&["nft", "list", "table", "inet", "firewalld"])
}

/// Other programs' firewalls beside ours: a firewalld-like native table whose chains
/// hook at our priorities (one drops a port on output), docker-like NAT and
/// tailscale-like mark bits in iptables-legacy. Apply, up/down and flush leave them as
/// they were, and the balance works beside them.
fn coexists_with_foreign_firewalls(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "coex",
        &["eth0:static:1", "wlan0:dhcp:2", "usb0:static:3"],
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    let ruleset = "table inet firewalld {
  chain filter_OUTPUT { type filter hook output priority mangle; policy accept; tcp dport 7003 drop; }
  chain mangle_PRE { type filter hook prerouting priority mangle; policy accept; meta mark 0x00000100 accept; }
  chain nat_POST { type nat hook postrouting priority srcnat; policy accept; oifname \"docker0\" accept; }
}
";
    std::fs::write(sb.work_file("firewalld.nft"), ruleset).unwrap();
    sb.host_ok(&[
        "nft",
        "-f",
        &sb.work_file("firewalld.nft").to_string_lossy(),
    ]);
    for rule in [
        "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        "-t mangle -A OUTPUT -p tcp --dport 7004 -j MARK --set-xmark 0x40000/0xff0000",
    ] {
        let mut args = vec!["iptables-legacy"];
        args.extend(rule.split(' '));
        sb.host_ok(&args);
    }
    let (firewalld, legacy) = (firewalld_table(&sb), legacy_save(&sb));
    for c in ["up-eth0", "up-wlan0", "up-usb0"] {
        sb.up(c);
    }
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    assert_eq!(spread(&sb, 9), [3, 3, 3]);
    let dropped = sb.connections(1, SERVER, 7003);
    assert!(
        dropped[0].contains("timed out"),
        "firewalld's drop still drops: {dropped:?}"
    );
    sb.down("up-wlan0");
    sb.up("up-wlan0");
    assert_eq!(spread(&sb, 9), [3, 3, 3]);
    assert_eq!(firewalld, firewalld_table(&sb), "firewalld's table changed");
    assert_eq!(legacy, legacy_save(&sb), "iptables-legacy's rules changed");
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(ours_in(&sb), (false, false));
    assert_eq!(
        firewalld,
        firewalld_table(&sb),
        "flush touched firewalld's table"
    );
    assert_eq!(
        legacy,
        legacy_save(&sb),
        "flush touched iptables-legacy's rules"
    );
}

/// A batch the kernel refuses changes nothing: the previous firewall stays, whole and
/// working, and the next good run applies the change.
fn a_refused_batch_leaves_the_previous_state(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "refu",
        &["eth0:static:1", "wlan0:static:2", "usb0:static:3"],
        Options {
            firewall: fw,
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    let before = sb.snapshot_ours();
    // Only the firewall changes: eth0 gets twice the share.
    std::fs::write(
        config_path(&sb),
        format!(
            "firewall = \"{}\"\n[uplinks.up-eth0]\nweight = 2\n",
            fw.name()
        ),
    )
    .unwrap();
    let o = sb.host(&[
        "env",
        "NM_MULTIWAN_FAULT=firewall-refused",
        "/usr/bin/nm-multiwan",
        "apply",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused") || err.contains("rejected"),
        "says the kernel refused it: {err}"
    );
    assert_eq!(
        before,
        sb.snapshot_ours(),
        "a refused batch changed the kernel"
    );
    assert_eq!(
        spread(&sb, 9),
        [3, 3, 3],
        "the previous balance still works"
    );
    sb.host_ok(&["/usr/bin/nm-multiwan", "apply"]);
    let got = sb.spread(8);
    assert_eq!(
        [1, 2, 3].map(|k| got.get(&common::isp_addr(k)).copied()),
        [Some(4), Some(2), Some(2)],
        "{got:?}"
    );
}

/// Whitespace and counters aside.
fn normalised(s: &str) -> String {
    let mut out = Vec::new();
    let mut words = s.split_whitespace().peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if w == "counter" && words.peek() == Some(&"packets") {
            for _ in 0..4 {
                words.next();
            }
        }
    }
    sort_elements(&out.join(" ").replace(" }", "}"))
}

/// The elements of each set and map in one order: the kernel lists a hashed set in its
/// own order, which says nothing about the plan.
fn sort_elements(s: &str) -> String {
    const OPEN: &str = "elements = { ";
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        let (head, tail) = rest.split_at(start + OPEN.len());
        out.push_str(head);
        let end = tail.find('}').expect("elements end with }");
        let mut elements: Vec<&str> = tail[..end].split(", ").collect();
        elements.sort_unstable();
        out.push_str(&elements.join(", "));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `plan` shows our table exactly as `nft list` prints what the kernel holds.
#[test]
fn plan_prints_the_table_as_nft_lists_it() {
    require_root!();
    let sb = Sandbox::create_up(
        "plnt",
        &["eth0:static:1", "wlan0:dhcp:2"],
        Options {
            ipv6: true,
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for two uplinks", || sb.our_table_rules() == 4);
    let plan = sb.host_ok(&["/usr/bin/nm-multiwan", "plan"]);
    let table = plan
        .split("# firewall (nftables)\n")
        .nth(1)
        .expect("the firewall section")
        .split("\n# warning")
        .next()
        .unwrap();
    let listed = sb.host_ok(&["nft", "list", "table", "inet", "nm-multiwan"]);
    assert_eq!(normalised(table), normalised(&listed));

    // A script reads the same from `plan --json`.
    let json: serde_json::Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "plan", "--json"]))
            .expect("plan --json is JSON");
    assert_eq!(json["backend"], "nftables");
    assert_eq!(
        normalised(
            json["firewall_rendered"]
                .as_str()
                .expect("firewall_rendered")
        ),
        normalised(&listed)
    );
    assert_eq!(json["uplinks"].as_array().map(Vec::len), Some(2));
}

on_both_backends!(
    coexists_with_foreign_firewalls,
    a_refused_batch_leaves_the_previous_state,
);
