//! `status` as people read it, in the sandbox: one table with health in it, rates
//! with the daemon and totals without, no column that resets, and, as a user without
//! privileges, everything that needs none plus one line saying what is missing and
//! why. Run as `nobody` (the sandbox's copy of the binary is anyone's to run) and as
//! root, with and without the daemon. Root only; CI runs as root.

mod common;

use common::daemon::{
    DaemonProcess, Downloads, PROBE_CONFIG, cut_upstream, nmmw_as_nobody, wait_for,
};
use common::{Fw, Options, Sandbox};
use serde_json::Value;

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `status --json` as nobody, which must succeed.
fn json_as_nobody(sb: &Sandbox) -> Value {
    let o = nmmw_as_nobody(sb, &["status", "--json"]);
    assert!(
        o.status.success(),
        "status --json as nobody: {}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// `status` as nobody, which must succeed and say nothing on stderr (no permission
/// error from a part it could not read).
fn table_as_nobody(sb: &Sandbox) -> String {
    let o = nmmw_as_nobody(sb, &["status"]);
    assert!(o.status.success(), "status as nobody: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "status as nobody wrote to stderr");
    text(&o)
}

/// The header's column names.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with("IFACE "))
        .unwrap_or_else(|| panic!("no header in\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `iface`'s row, column name -> cell (cells are separated by two spaces or more).
fn row(table: &str, iface: &str) -> std::collections::BTreeMap<String, String> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{iface} ")))
        .unwrap_or_else(|| panic!("no row for {iface} in\n{table}"));
    let cells: Vec<&str> = line
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let names = header(table);
    assert_eq!(cells.len(), names.len(), "row {line:?} under {names:?}");
    names
        .into_iter()
        .zip(cells.into_iter().map(str::to_string))
        .collect()
}

fn unreadable(v: &Value) -> Vec<String> {
    let mut what: Vec<String> = v["unreadable"]
        .as_array()
        .unwrap_or_else(|| panic!("no unreadable list in {v}"))
        .iter()
        .map(|u| u["what"].as_str().unwrap().to_string())
        .collect();
    what.sort();
    what
}

fn uplink<'a>(v: &'a Value, iface: &str) -> &'a Value {
    v["uplinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["iface"] == iface)
        .unwrap_or_else(|| panic!("no uplink {iface} in {v}"))
}

fn status_for_users_with_and_without_the_daemon(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "stus",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            config: Some(PROBE_CONFIG),
            dbus_policy: true,
            rate: Some("20mbit"),
            ..Default::default()
        },
    );
    // Some traffic over both uplinks, so that their counters are not zero.
    assert_eq!(sb.spread(4).len(), 2, "both uplinks carry connections");

    // Without the daemon, as nobody: everything but the firewall and conntrack.
    let table = table_as_nobody(&sb);
    let h = header(&table);
    for want in [
        "IFACE",
        "CONNECTION",
        "STATE",
        "HEALTH",
        "RTT",
        "CONNS",
        "RECEIVED",
        "SENT",
    ] {
        assert!(h.contains(&want.to_string()), "{want} missing:\n{table}");
    }
    for gone in ["NEW", "IPV6", "DOWNLOAD"] {
        assert!(!h.contains(&gone.to_string()), "{gone} shown:\n{table}");
    }
    for (iface, gateway) in [("eth0", "10.200.1.1"), ("wlan0", "10.200.2.1")] {
        let r = row(&table, iface);
        assert_eq!(r["CONNECTION"], format!("up-{iface}"), "{table}");
        assert_eq!(r["STATE"], "active", "{table}");
        assert_eq!(r["GATEWAY"], gateway, "{table}");
        // No daemon, and NetworkManager's check is off in the sandbox: no figure.
        assert_eq!(
            (r["HEALTH"].as_str(), r["RTT"].as_str()),
            ("-", "-"),
            "{table}"
        );
        assert_eq!(r["CONNS"], "-", "conntrack needs CAP_NET_ADMIN:\n{table}");
        assert_ne!(r["RECEIVED"], "0 B", "{table}");
    }
    let said: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("not shown without root:"))
        .collect();
    assert_eq!(said.len(), 1, "one line says what is missing:\n{table}");
    assert!(
        said[0].contains("tracked connections") && said[0].contains("CAP_NET_ADMIN"),
        "{table}"
    );
    assert!(
        table.contains("kernel state: routes and rules in sync (the firewall was not read)"),
        "{table}"
    );
    let v = json_as_nobody(&sb);
    assert_eq!(unreadable(&v), ["conntrack", "firewall"], "{v}");
    assert_eq!(v["in_sync"], true, "{v}");
    assert_eq!(
        v["firewall"],
        fw.name(),
        "the backend the last run recorded: {v}"
    );
    assert!(v["health"].is_null() && v["traffic"].is_null(), "{v}");
    for iface in ["eth0", "wlan0"] {
        let u = uplink(&v, iface);
        assert!(u["connections"].is_null(), "{u}");
        assert!(u["rx_rate"].is_null(), "{u}");
        assert!(u["rx_bytes"].as_u64().unwrap() > 0, "{u}");
        assert!(u["new_connections"].is_u64(), "kept in JSON: {u}");
    }

    // As root, without the daemon: conntrack and the firewall too.
    let v: Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"])).unwrap();
    assert_eq!(unreadable(&v), Vec::<String>::new(), "{v}");
    assert!(uplink(&v, "eth0")["connections"].is_u64(), "{v}");

    // With the daemon, as nobody: everything, through the daemon, rates included.
    let daemon = DaemonProcess::start(&sb);
    let _downloads = Downloads::start(&sb, 4);
    let v = wait_for(20, "rates and probes of both uplinks", || {
        let v = json_as_nobody(&sb);
        let busy = ["eth0", "wlan0"].iter().all(|i| {
            let u = uplink(&v, i);
            // 20 Mbit/s each: well above 1 Mbit/s.
            u["rx_rate"].as_u64().is_some_and(|r| r > 125_000)
                && v["health"]["uplinks"][i]["rounds"]
                    .as_u64()
                    .is_some_and(|n| n >= 3)
        });
        if busy { Ok(v) } else { Err(v.to_string()) }
    });
    assert_eq!(
        unreadable(&v),
        Vec::<String>::new(),
        "the daemon reads it all: {v}"
    );
    for iface in ["eth0", "wlan0"] {
        let u = uplink(&v, iface);
        assert!(u["connections"].as_u64().is_some_and(|n| n >= 1), "{u}");
        assert_eq!(u["healthy"], true, "{u}");
        let history = v["traffic"]["uplinks"][iface]["rx_history"]
            .as_array()
            .unwrap();
        assert!(!history.is_empty() && history.len() <= 60, "{v}");
    }
    let table = wait_for(10, "the table with rates", || {
        let t = table_as_nobody(&sb);
        let ok = ["eth0", "wlan0"]
            .iter()
            .all(|i| row(&t, i)["DOWNLOAD"].ends_with("Mbit/s"));
        if ok { Ok(t) } else { Err(t) }
    });
    let h = header(&table);
    assert!(
        h.contains(&"DOWNLOAD".to_string()) && h.contains(&"UPLOAD".to_string()),
        "{table}"
    );
    assert!(
        !h.contains(&"RECEIVED".to_string()) && !h.contains(&"NEW".to_string()),
        "{table}"
    );
    for iface in ["eth0", "wlan0"] {
        let r = row(&table, iface);
        assert_eq!(r["HEALTH"], "ok", "{table}");
        assert!(r["RTT"].ends_with(" ms"), "{table}");
        assert_ne!(r["CONNS"], "-", "{table}");
    }
    assert!(!table.contains("not shown"), "{table}");
    assert!(
        table.contains("health: probes to 198.51.100.10 every 500 ms"),
        "{table}"
    );

    // An uplink whose upstream is cut: DOWN, out of the balance, and no stale RTT.
    cut_upstream(&sb, 2, true);
    let table = wait_for(15, "wlan0 down in the table", || {
        let t = table_as_nobody(&sb);
        if row(&t, "wlan0")["HEALTH"] == "DOWN" {
            Ok(t)
        } else {
            Err(t)
        }
    });
    let r = row(&table, "wlan0");
    assert_eq!(
        (r["STATE"].as_str(), r["RTT"].as_str()),
        ("out", "-"),
        "{table}"
    );
    assert!(table.contains("\n  wlan0: DOWN for "), "{table}");
    assert_eq!(row(&table, "eth0")["HEALTH"], "ok", "{table}");
    cut_upstream(&sb, 2, false);
    wait_for(15, "wlan0 healthy again", || {
        let t = table_as_nobody(&sb);
        if row(&t, "wlan0")["HEALTH"] == "ok" {
            Ok(())
        } else {
            Err(t)
        }
    });
    drop(daemon);
}

on_both_backends!(status_for_users_with_and_without_the_daemon);
