//! End to end (issue 15, defect 7): a config file broken while balancing never stops
//! the balance from following NetworkManager. The last configuration that loaded keeps
//! applying, `status` shows the error at its top, and a fixed file applies at the next
//! event. Observed at the internet server (which ISP each new connection came through)
//! and in the kernel (`ip rule`, our tables), never in our logs. Root only.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{Options, Sandbox, isp_addr, text};

/// Weights 1, 1, 2: of 40 new connections eth0 and wlan0 carry 10 each, usb0 20. The
/// defaults (1, 1, 1) would split them differently, so the spread tells which
/// configuration is in force.
/// (No probing: the daemon's default targets are not in the sandbox.)
const GOOD: &str = "[uplinks.up-usb0]\nweight = 2\n[health]\ntargets = []\n";
/// The same with a typo.
const BROKEN: &str = "[uplinks.up-usb0]\nwieght = 2\n[health]\ntargets = []\n";
/// Fixed, and different: eth0 2, wlan0 1, usb0 1.
const FIXED: &str = "[uplinks.up-eth0]\nweight = 2\n[health]\ntargets = []\n";

fn require_root() {
    assert!(
        common::is_root(),
        "end-to-end tests need root for the sandbox's namespaces (run: sudo tests/run.sh)"
    );
}

fn expect_spread(sb: &Sandbox, n: usize, want: &[(u32, usize)], when: &str) {
    let got: Vec<(String, usize)> = sb.spread(n).into_iter().collect();
    let mut want: Vec<(String, usize)> = want.iter().map(|&(k, c)| (isp_addr(k), c)).collect();
    want.sort();
    assert_eq!(got, want, "new connections per ISP address {when}");
}

fn write_config(sb: &Sandbox, text: &str) {
    std::fs::write(sb.work_file("etc-nm-multiwan/config.toml"), text).unwrap();
}

/// Our tables with a default route through `iface`.
fn default_routes_via(sb: &Sandbox, iface: &str) -> usize {
    sb.host_ok(&["ip", "-4", "route", "show", "table", "all"])
        .lines()
        .filter(|r| r.starts_with("default") && r.contains(" table 61"))
        .filter(|r| r.contains(&format!(" dev {iface} ")))
        .count()
}

fn status(sb: &Sandbox) -> (String, serde_json::Value) {
    let human = sb.nmmw(&["status"]);
    assert_eq!(human.status.code(), Some(0), "status: {human:?}");
    let json = sb.nmmw(&["status", "--json"]);
    assert_eq!(json.status.code(), Some(0), "status --json: {json:?}");
    let value = serde_json::from_str(&text(&json)).expect("status --json is JSON");
    (text(&human), value)
}

/// Through the dispatcher: the file breaks while balancing, the Wi-Fi goes down and up,
/// and the balance follows with the last good configuration.
#[test]
fn a_broken_config_keeps_the_balance_following_networkmanager() {
    require_root();
    let sb = Sandbox::create_up(
        "cfgd",
        &["eth0:static:1", "wlan0:dhcp:2", "usb0:static:3"],
        Options {
            config: Some(GOOD),
            ..Default::default()
        },
    );
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    expect_spread(
        &sb,
        40,
        &[(1, 10), (2, 10), (3, 20)],
        "with the good config",
    );

    write_config(&sb, BROKEN);
    sb.down("up-wlan0");
    assert_eq!(sb.our_table_rules(), 4, "wlan0's rules are gone");
    expect_spread(&sb, 30, &[(1, 10), (3, 20)], "with wlan0 down");
    sb.up("up-wlan0");
    assert_eq!(sb.our_table_rules(), 6, "wlan0's rules are back");
    for iface in ["eth0", "wlan0", "usb0"] {
        assert_eq!(default_routes_via(&sb, iface), 1, "our table for {iface}");
    }
    expect_spread(
        &sb,
        40,
        &[(1, 10), (2, 10), (3, 20)],
        "after wlan0 down and up with a broken config (the last good one applies)",
    );

    // `status` exits 0, shows the error first and everything else as usual.
    let (human, json) = status(&sb);
    let first = human.lines().next().unwrap_or("");
    assert!(
        first.starts_with(
            "CONFIG ERROR: /etc/nm-multiwan/config.toml:2:1: uplinks.up-usb0.wieght: unknown key"
        ),
        "{human}"
    );
    for iface in ["eth0", "wlan0", "usb0"] {
        assert!(
            human.lines().any(|l| l.starts_with(&format!("{iface} "))),
            "status shows {iface}: {human}"
        );
    }
    assert_eq!(
        json["config_error"]["key"], "uplinks.up-usb0.wieght",
        "{json}"
    );
    assert_eq!(json["config_error"]["line"], 2, "{json}");
    assert_eq!(json["uplinks"].as_array().map(Vec::len), Some(3), "{json}");

    // Fixed: the next event applies it.
    write_config(&sb, FIXED);
    sb.down("up-wlan0");
    sb.up("up-wlan0");
    expect_spread(
        &sb,
        40,
        &[(1, 20), (2, 10), (3, 10)],
        "with the fixed config",
    );
    let (human, json) = status(&sb);
    assert!(!human.contains("CONFIG ERROR"), "{human}");
    assert!(json["config_error"].is_null(), "{json}");
}

/// `nm-multiwan daemon` in the sandbox's host, killed on drop (its log printed when
/// the test fails).
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(sb: &Sandbox, n: usize) -> Daemon {
        let log = sb.work_file(&format!("config-daemon-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(common::sandbox_script())
            .args(["exec", &sb.name, "/usr/bin/nm-multiwan", "-v", "daemon"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the daemon");
        let d = Daemon { child, log };
        sb.wait_until(15, "the daemon's first reconcile", || {
            d.log_text().contains("reconciled") || d.log_text().contains("in sync")
        });
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        assert_eq!(r, 0, "SIGHUP");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

/// The daemon: a reload with a broken file keeps the running configuration and
/// `status` (answered by the daemon) shows the error; a daemon started with a broken
/// file runs the last good configuration; a fixed file applies at the next reload.
#[test]
fn the_daemon_keeps_the_last_good_config() {
    require_root();
    let sb = Sandbox::create_up(
        "cfgdm",
        &["eth0:static:1", "wlan0:static:2", "usb0:static:3"],
        Options {
            dispatcher: false,
            config: Some(GOOD),
            dbus_policy: true,
            ..Default::default()
        },
    );
    let daemon = Daemon::start(&sb, 0);
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    expect_spread(
        &sb,
        40,
        &[(1, 10), (2, 10), (3, 20)],
        "with the good config",
    );

    write_config(&sb, BROKEN);
    daemon.hangup();
    sb.wait_until(10, "the failed reload", || {
        daemon.log_text().contains("uplinks.up-usb0.wieght")
    });
    // NetworkManager is still followed, with the running configuration.
    sb.down("up-wlan0");
    sb.wait_until(10, "wlan0's rules to go", || sb.our_table_rules() == 4);
    sb.up("up-wlan0");
    sb.wait_until(10, "wlan0's rules to return", || sb.our_table_rules() == 6);
    sb.wait_until(10, "wlan0's table", || {
        default_routes_via(&sb, "wlan0") == 1
    });
    expect_spread(
        &sb,
        40,
        &[(1, 10), (2, 10), (3, 20)],
        "after a failed reload",
    );
    let (human, json) = status(&sb);
    assert!(json["health"].is_object(), "the daemon answered: {json}");
    assert!(human.starts_with("CONFIG ERROR: "), "{human}");
    assert_eq!(
        json["config_error"]["key"], "uplinks.up-usb0.wieght",
        "{json}"
    );
    drop(daemon);

    // Started with the broken file: the last good configuration, not the defaults.
    let daemon = Daemon::start(&sb, 1);
    assert!(
        daemon.log_text().contains("uplinks.up-usb0.wieght"),
        "the daemon says why it does not use the file"
    );
    expect_spread(
        &sb,
        40,
        &[(1, 10), (2, 10), (3, 20)],
        "after a start with a broken file",
    );
    let (_, json) = status(&sb);
    assert_eq!(
        json["config_error"]["key"], "uplinks.up-usb0.wieght",
        "{json}"
    );

    write_config(&sb, FIXED);
    daemon.hangup();
    sb.wait_until(10, "the reconcile of the reload", || {
        let log = daemon.log_text();
        log.contains("configuration reloaded") && log.contains("trigger=[\"SIGHUP\"]")
    });
    expect_spread(&sb, 40, &[(1, 20), (2, 10), (3, 10)], "after a good reload");
    let (_, json) = status(&sb);
    assert!(json["config_error"].is_null(), "{json}");
}
