//! End to end: policies, sticky destinations, `run --via` and `explain`, observed at
//! the servers and in the kernel, on both firewall backends. Root only.

mod common;

use std::collections::BTreeMap;

use common::{Fw, Options, SERVER, Sandbox, isp_addr, tally};

const UPLINKS: [&str; 3] = ["eth0:static:1", "wlan0:dhcp:2", "usb0:static:3"];

fn sandbox(tag: &str, fw: Fw, config: &str) -> Sandbox {
    let sb = Sandbox::create_up(
        tag,
        &UPLINKS,
        Options {
            firewall: fw,
            config: Some(config),
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    sb
}

fn client(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let client = sb.client();
    let mut full = vec!["python3", client.as_str()];
    full.extend_from_slice(args);
    sb.host_ok(&full).lines().map(str::to_string).collect()
}

fn which(sb: &Sandbox, n: usize, dest: &str, port: &str) -> BTreeMap<String, usize> {
    tally(&client(sb, &["which", &n.to_string(), dest, port]))
}

fn explain(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["explain", "--json"];
    full.extend_from_slice(args);
    let o = sb.nmmw(&full);
    assert!(o.status.success(), "explain {args:?}: {o:?}");
    serde_json::from_slice(&o.stdout).expect("explain --json")
}

fn isp_of(iface: &str) -> String {
    let k = UPLINKS
        .iter()
        .position(|s| s.starts_with(&format!("{iface}:")))
        .expect("one of ours") as u32
        + 1;
    isp_addr(k)
}

fn only(counts: &BTreeMap<String, usize>, iface: &str, n: usize) -> bool {
    counts.len() == 1 && counts.get(&isp_of(iface)) == Some(&n)
}

/// The `status --json` policies, by name.
fn policies(sb: &Sandbox) -> BTreeMap<String, serde_json::Value> {
    let o = sb.nmmw(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

const KEYS: &str = r#"
[[policy]]
name = "port"
to = ["198.51.100.10"]
ports = ["7000"]
protocol = "tcp"
uplinks = ["usb0"]
mode = "failover"

[[policy]]
name = "user"
user = "nobody"
uplinks = ["up-wlan0", "usb0"]
mode = "failover"

[[policy]]
name = "udp only"
to = ["198.51.100.13"]
protocol = "udp"
uplinks = ["wlan0"]

[[policy]]
name = "direct"
to = ["198.51.100.12/32"]
mode = "direct"

[[policy]]
name = "closed"
to = ["198.51.100.14"]
uplinks = ["usb0"]
fallback = false

[[policy]]
name = "open"
to = ["198.51.100.15"]
uplinks = ["usb0"]

[[policy]]
name = "pair"
to = ["198.51.100.16"]
uplinks = ["eth0", "usb0"]
"#;

/// Every policy key, observed on traffic: destination, port and protocol, user,
/// uplinks and their order, each mode, fallback both ways; hits in `status`; `explain`
/// agrees with each.
fn policy_keys_steer_traffic(fw: Fw) {
    require_root!();
    let sb = sandbox("keys", fw, KEYS);
    // to + ports + protocol, failover: TCP 7000 through usb0 only; the same server on
    // another port, or over UDP, is balanced.
    let pinned = which(&sb, 10, SERVER, "7000");
    eprintln!("[{}] policy \"port\": {pinned:?}", fw.name());
    assert!(only(&pinned, "usb0", 10), "{pinned:?}");
    assert_eq!(explain(&sb, &[SERVER, "7000"])["policy"], "port");
    assert_eq!(explain(&sb, &[SERVER, "7002"])["rung"], 6);
    let udp = tally(&client(&sb, &["udp", "9", SERVER, "7000"]));
    assert_eq!(udp.len(), 3, "UDP to the same port is balanced: {udp:?}");
    // user: nobody's connections through wlan0, the first listed.
    let script = std::fs::read_to_string(sb.client()).unwrap();
    let path = sb.work_file("client-copy.py");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sb.work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = sb.host_ok(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        // The system's interpreter: root's own may sit where nobody cannot reach.
        "/usr/bin/python3",
        path.to_str().unwrap(),
        "which",
        "8",
        "198.51.100.11",
        "7010",
    ]);
    let nobody = tally(&as_nobody.lines().map(str::to_string).collect::<Vec<_>>());
    eprintln!("[{}] policy \"user\" (nobody): {nobody:?}", fw.name());
    assert!(only(&nobody, "wlan0", 8), "{nobody:?}");
    let v = explain(&sb, &["198.51.100.11", "7010", "--user", "nobody"]);
    assert_eq!(
        (&v["policy"], &v["iface"]),
        (&"user".into(), &"wlan0".into())
    );
    // protocol udp, balance over one uplink: UDP through wlan0, TCP balanced.
    let u = tally(&client(&sb, &["udp", "6", "198.51.100.13", "7010"]));
    assert!(only(&u, "wlan0", 6), "{u:?}");
    assert_eq!(which(&sb, 6, "198.51.100.13", "7010").len(), 3);
    // direct: the main table's way (eth0, the lowest metric), unmarked.
    let d = which(&sb, 6, "198.51.100.12", "7010");
    assert!(only(&d, "eth0", 6), "{d:?}");
    let ct = sb.host_ok(&["conntrack", "-L", "-d", "198.51.100.12"]);
    assert!(
        ct.lines().count() >= 6 && ct.lines().all(|l| l.contains("mark=0 ")),
        "direct connections carry no mark:\n{ct}"
    );
    // Two uplinks in order, balanced: both used, usb0 and eth0 only.
    let pair = which(&sb, 6, "198.51.100.16", "7010");
    assert_eq!(
        pair,
        BTreeMap::from([(isp_of("eth0"), 3), (isp_of("usb0"), 3)])
    );
    // Hits, as status reports them.
    let hits = policies(&sb);
    assert_eq!(hits["port"]["hits"], 10, "{:?}", hits["port"]);
    assert_eq!(hits["direct"]["hits"], 6, "{:?}", hits["direct"]);
    // usb0 goes: "closed" fails closed, "open" falls back to the balance, "port"
    // (failover over usb0 alone) falls back too, "user" fails over to usb0's successor.
    let closed_before = which(&sb, 3, "198.51.100.14", "7010");
    assert!(only(&closed_before, "usb0", 3), "{closed_before:?}");
    sb.down("up-usb0");
    let closed = client(&sb, &["which", "3", "198.51.100.14", "7010"]);
    eprintln!("[{}] fallback = false, usb0 down: {closed:?}", fw.name());
    assert!(closed.iter().all(|l| l.starts_with("FAIL")), "{closed:?}");
    assert_eq!(explain(&sb, &["198.51.100.14", "7010"])["goes"], "dropped");
    let open = which(&sb, 6, "198.51.100.15", "7010");
    assert_eq!(
        open,
        BTreeMap::from([(isp_of("eth0"), 3), (isp_of("wlan0"), 3)]),
        "fallback = true, usb0 down"
    );
    let pinned = which(&sb, 4, SERVER, "7000");
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    let pair = which(&sb, 4, "198.51.100.16", "7010");
    assert!(only(&pair, "eth0", 4), "{pair:?}");
}

/// Sticky: repeated connections to one destination keep their uplink (also across a
/// table rebuild) until the time runs out, other destinations still spread, and the
/// sticky uplink going down moves the destination at once.
fn sticky_destinations_keep_their_uplink(fw: Fw) {
    require_root!();
    let config = "[[policy]]\nname = \"sticky\"\nto = [\"198.51.100.0/24\"]\nsticky = \"15s\"\n";
    let sb = sandbox("sticky", fw, config);
    let dest = "198.51.100.11";
    let first = which(&sb, 1, dest, "7010");
    let (isp, _) = first.iter().next().unwrap();
    let stuck = which(&sb, 9, dest, "7010");
    eprintln!(
        "[{}] sticky {dest}: first {first:?}, then {stuck:?}",
        fw.name()
    );
    assert_eq!(stuck, BTreeMap::from([(isp.clone(), 9)]), "kept its uplink");
    let v = explain(&sb, &[dest, "7010"]);
    assert!(v["sticky_for"].as_u64().is_some_and(|s| s <= 15), "{v}");
    // Other destinations still spread.
    let mut others = Vec::new();
    for k in 12..=17 {
        others.extend(client(
            &sb,
            &["which", "1", &format!("198.51.100.{k}"), "7010"],
        ));
    }
    let others = tally(&others);
    eprintln!("[{}] six other destinations: {others:?}", fw.name());
    assert_eq!(others.len(), 3, "{others:?}");
    // status shows the entry (a connection first renews it: a loaded machine may have
    // taken the sticky time over the destinations above).
    assert_eq!(
        which(&sb, 1, dest, "7010"),
        BTreeMap::from([(isp.clone(), 1)])
    );
    let p = &policies(&sb)["sticky"];
    assert!(
        p["sticky"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["destination"] == dest),
        "{p}"
    );
    // A rebuild of the firewall (another weight) keeps it.
    let cfg = sb.work_file("etc-nm-multiwan/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[uplinks.up-usb0]\nweight = 2\n")).unwrap();
    let o = sb.nmmw(&["apply"]);
    assert!(o.status.success(), "{o:?}");
    let again = which(&sb, 3, dest, "7010");
    assert_eq!(again, BTreeMap::from([(isp.clone(), 3)]), "after a rebuild");
    // Quiet for longer than the time: it is forgotten, and explain says where the round
    // sends it now, which the next connection follows.
    std::thread::sleep(std::time::Duration::from_millis(15600));
    let v = explain(&sb, &[dest, "7010"]);
    assert!(v["sticky_for"].is_null() && v["slot"].is_array(), "{v}");
    let next = which(&sb, 1, dest, "7010");
    let want = isp_of(v["iface"].as_str().unwrap());
    assert_eq!(
        next,
        BTreeMap::from([(want.clone(), 1)]),
        "explain said {v}"
    );
    // Its uplink going down moves it at once.
    let iface = ["eth0", "wlan0", "usb0"]
        .into_iter()
        .find(|i| isp_of(i) == want)
        .unwrap();
    sb.down(&format!("up-{iface}"));
    let moved = which(&sb, 3, dest, "7010");
    eprintln!("[{}] {iface} down: {dest} now {moved:?}", fw.name());
    assert!(
        moved.len() == 1
            && !moved.contains_key(&want)
            && !moved.keys().any(|k| k.starts_with("FAIL")),
        "{moved:?}"
    );
}

/// `run --via`: every TCP and UDP connection of the program and of its children through
/// the chosen uplink, while everything else keeps balancing; an inactive uplink is
/// refused before the program starts.
fn run_via_pins_a_program_and_its_children(fw: Fw) {
    require_root!();
    let sb = sandbox("via", fw, "");
    let c = sb.client();
    let script = format!(
        "python3 {c} which 10 {SERVER} 7000; python3 {c} udp 10 {SERVER} 443; \
         sh -c 'python3 {c} which 10 198.51.100.11 7010 & wait'"
    );
    let o = sb.nmmw(&["run", "--via", "wlan0", "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{o:?}");
    let seen = tally(
        &String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "[{}] run --via wlan0 (TCP, UDP, a child): {seen:?}",
        fw.name()
    );
    assert_eq!(seen, BTreeMap::from([(isp_of("wlan0"), 30)]));
    // Everything else keeps balancing.
    let rest = which(&sb, 6, SERVER, "7000");
    assert_eq!(rest.len(), 3, "{rest:?}");
    // By connection id too; explain knows.
    let o = sb.nmmw(&[
        "run", "--via", "up-usb0", "--", "python3", &c, "which", "3", SERVER, "7000",
    ]);
    let seen = tally(
        &String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    assert_eq!(seen, BTreeMap::from([(isp_of("usb0"), 3)]), "{o:?}");
    // Inactive: refused, nothing started.
    sb.down("up-usb0");
    let marker = sb.work_file("started");
    let o = sb.nmmw(&[
        "run",
        "--via",
        "usb0",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not an active uplink"),
        "{o:?}"
    );
    assert!(!marker.exists());
}

/// Our firewall as its tools list it, without their timestamp comments.
fn firewall(sb: &Sandbox) -> String {
    sb.firewall_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bad policies: clear errors naming file, line and key; nothing in the kernel changes.
fn bad_policies_change_nothing(fw: Fw) {
    require_root!();
    let sb = sandbox("badpol", fw, "");
    let before = firewall(&sb);
    let cfg = sb.work_file("etc-nm-multiwan/config.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    for (body, key) in [
        ("uplinks = [\"wired\"]", "policy[0].uplinks[0]"),
        ("ports = [\"9000-8000\"]", "policy[0].ports[0]"),
        ("to = [\"10.0.0.1/8\"]", "policy[0].to[0]"),
        ("protocol = \"tcpp\"", "policy[0].protocol"),
        ("sticky = \"0s\"", "policy[0].sticky"),
    ] {
        std::fs::write(
            &cfg,
            format!("{good}\n[[policy]]\nname = \"bad\"\n{body}\n"),
        )
        .unwrap();
        let o = sb.nmmw(&["apply"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.contains("/etc/nm-multiwan/config.toml:") && err.contains(&format!(": {key}: ")),
            "{body}: {err}"
        );
        assert_eq!(firewall(&sb), before, "{body} changed the firewall");
    }
    // A policy naming an uplink nobody knows (a typo, or a profile deleted since) does
    // not stop the balance from following NetworkManager: the dispatcher keeps
    // applying the last good configuration, and `status` says why.
    std::fs::write(
        &cfg,
        format!("{good}\n[[policy]]\nname = \"bad\"\nuplinks = [\"wired\"]\n"),
    )
    .unwrap();
    sb.down("up-wlan0");
    sb.up("up-wlan0");
    assert_eq!(
        sb.spread(9).values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "wlan0 is back in the balance"
    );
    let status = sb.nmmw(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("policy[0].uplinks[0]"),
        "{status:?}"
    );

    // An unresolvable name is a warning; the rest applies.
    std::fs::write(
        &cfg,
        format!("{good}\n[[policy]]\nname = \"half\"\nto = [\"nowhere.invalid\", \"198.51.100.17\"]\nuplinks = [\"usb0\"]\n"),
    )
    .unwrap();
    let o = sb.nmmw(&["apply"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nowhere.invalid"),
        "{o:?}"
    );
    let half = which(&sb, 3, "198.51.100.17", "7010");
    assert!(only(&half, "usb0", 3), "{half:?}");
}

on_both_backends!(
    policy_keys_steer_traffic,
    sticky_destinations_keep_their_uplink,
    run_via_pins_a_program_and_its_children,
    bad_policies_change_nothing,
);
