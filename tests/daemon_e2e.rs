//! End-to-end tests of `nm-multiwan daemon` in the sandbox (tests/sandbox/sandbox.sh):
//! a real NetworkManager on a real private dbus-daemon, real probes, real traffic.
//! Failover and recovery are measured from the traffic a client in the host sends to
//! the internet server (which answers with the ISP address it saw), never from logs.
//! Root only; CI runs as root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Daemon, Fw, Options, SERVER, Sandbox, isp_addr, tally};

/// Probes every 500 ms straight at the sandbox's internet server: out after 3 lost
/// rounds, back after 3 answered ones.
const CONFIG: &str = "\
[health]
targets = [\"198.51.100.10\"]
interval_ms = 500
down_after = 3
up_after = 3
";

/// One new connection made by the observer: when it started and which ISP address
/// the server saw (or why it failed).
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    seen: Result<String, String>,
}

/// Opens a new connection to the internet server every `period` from inside the
/// sandbox's host namespace, each in its own thread (a connection through a dead
/// uplink only times out after 1 s and must not hold up the next ones).
struct Observer {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    fn start(sb: &Sandbox, period: Duration) -> Observer {
        let ns = format!("/run/netns/{}-host", sb.name);
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("open the host's netns");
            // SAFETY: setns on this thread only; threads it spawns inherit the namespace.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}");
            let mut workers = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let samples = samples2.clone();
                let at = Instant::now();
                workers.push(std::thread::spawn(move || {
                    let seen = which_isp(Duration::from_secs(1));
                    samples.lock().unwrap().push(Sample { at, seen });
                }));
                std::thread::sleep(period);
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Observer {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Samples started in `[from, to)` and finished, by start time.
    fn between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        let mut v: Vec<Sample> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            // The connection was established, so routing worked, but the echo server
            // closed it without a word: a rare flake of the sandbox's socat server
            // (seen without the daemon too). It says nothing about the uplink.
            .filter(|s| s.seen.as_ref().err().is_none_or(|e| e != EMPTY_REPLY))
            .cloned()
            .collect();
        v.sort_by_key(|s| s.at);
        v
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const EMPTY_REPLY: &str = "empty reply";

/// `count` new connections to the internet server went through ISP k `want[k]` times.
/// Tolerates one connection that was established but closed by the server without a
/// reply (a rare socat flake in the sandbox, seen without the daemon too): it counts
/// for whichever ISP is short. Any other failure fails.
fn spread_matches(sb: &Sandbox, count: usize, want: &[(u32, usize)]) -> bool {
    let seen = sb.connections(count, SERVER, 7000);
    let unknown = seen.iter().filter(|s| *s == "FAIL empty reply").count();
    let known = tally(
        &seen
            .iter()
            .filter(|s| *s != "FAIL empty reply")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let want: BTreeMap<String, usize> = want.iter().map(|&(k, n)| (isp_addr(k), n)).collect();
    let ok = unknown <= 1
        && known
            .iter()
            .all(|(isp, n)| want.get(isp).is_some_and(|w| n <= w))
        && known.values().sum::<usize>() + unknown == count;
    if !ok {
        eprintln!("spread {seen:?}, wanted {want:?}");
    }
    ok
}

fn spread_is(sb: &Sandbox, count: usize, want: &[(u32, usize)]) {
    assert!(
        spread_matches(sb, count, want),
        "connections per ISP address"
    );
}

fn which_isp(timeout: Duration) -> Result<String, String> {
    let addr: SocketAddr = format!("{SERVER}:7000").parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .take(64)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let line = line.trim().to_string();
    if line.is_empty() {
        Err(EMPTY_REPLY.into())
    } else {
        Ok(line)
    }
}

/// Waits (at most `secs`) until every connection started during the last `stable`
/// went through `good`, then returns the start of the first connection of that run:
/// the moment from which every new connection avoided everything else.
fn settled_on(
    obs: &Observer,
    since: Instant,
    good: &dyn Fn(&Sample) -> bool,
    stable: Duration,
    secs: u64,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        // Samples that started more than 1.2 s ago have all finished.
        let horizon = Instant::now() - Duration::from_millis(1200);
        let samples = obs.between(since, horizon);
        let run_start = match samples.iter().rposition(|s| !good(s)) {
            Some(i) => samples.get(i + 1).map(|s| s.at),
            None => samples.first().map(|s| s.at),
        };
        if let Some(start) = run_start
            && horizon.saturating_duration_since(start) >= stable
        {
            return start;
        }
        assert!(
            Instant::now() < deadline,
            "traffic did not settle within {secs} s: {:?}",
            summary(&samples, since)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (ms after `t0`, what the server saw) for a failure message.
fn summary(samples: &[Sample], t0: Instant) -> Vec<(u128, String)> {
    samples
        .iter()
        .map(|s| {
            (
                s.at.duration_since(t0).as_millis(),
                s.seen.clone().unwrap_or_else(|e| format!("FAIL {e}")),
            )
        })
        .collect()
}

/// Cuts (or heals) ISP k's upstream behind its gateway: its link to the host stays up,
/// NetworkManager sees nothing, but nothing is forwarded to or from the internet.
fn cut_upstream(sb: &Sandbox, k: u32, cut: bool) {
    let op = if cut { "-I" } else { "-D" };
    for dir in ["-i", "-o"] {
        sb.ns_ok(
            &format!("isp{k}"),
            &["iptables", op, "FORWARD", dir, "wan", "-j", "DROP"],
        );
    }
}

/// The nth slots of our firewall chain, as marks.
fn balanced_marks(sb: &Sandbox) -> BTreeSet<String> {
    sb.balanced_marks()
}

/// The mark of an uplink, as `status --json` shows it.
fn mark_of(sb: &Sandbox, iface: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"])).unwrap();
    v["uplinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["iface"] == iface)
        .and_then(|u| u["mark"].as_str())
        .and_then(|m| m.split('/').next())
        .unwrap_or_else(|| panic!("no uplink {iface} in {v}"))
        .to_string()
}

/// Calls one of the daemon's methods with dbus-send (which prints the error message).
fn call(sb: &Sandbox, user: Option<&str>, method: &str) -> std::process::Output {
    let mut args: Vec<&str> = Vec::new();
    if let Some(u) = user {
        args.extend(["runuser", "-u", u, "--"]);
    }
    let member = format!("net.nmmultiwan.Daemon1.{method}");
    args.extend([
        "dbus-send",
        "--system",
        "--print-reply",
        "--dest=net.nmmultiwan.Daemon1",
        "/net/nmmultiwan/Daemon1",
        &member,
    ]);
    sb.host(&args)
}

/// The number `dbus-send --print-reply` prints after the type name `ty` (`uint64 2140`).
fn number_after(reply: &str, ty: &str) -> u64 {
    reply
        .split_whitespace()
        .skip_while(|w| *w != ty)
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a {ty} in the reply: {reply}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Without any dispatcher script the daemon follows `nmcli con up/down`; an upstream
/// cut behind its gateway leaves the balance and comes back when it heals. Failover
/// and recovery are measured from the traffic.
fn daemon_follows_nmcli_and_fails_over_dead_upstreams(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "dmnf",
        &["eth0:static:1", "wlan0:dhcp:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            config: Some(CONFIG),
            dbus_policy: true,
            ..Default::default()
        },
    );
    let daemon = Daemon::start(&sb, &[]);

    // Following nmcli: each change shows in the kernel within a second or two.
    let mut follow = Vec::new();
    for (conn, rules) in [("up-eth0", 2), ("up-wlan0", 4)] {
        sb.up(conn);
        let t = Instant::now();
        sb.wait_until(10, &format!("rules after {conn} up"), || {
            sb.our_table_rules() == rules
        });
        follow.push((format!("{conn} up"), t.elapsed()));
    }
    sb.down("up-wlan0");
    let t = Instant::now();
    sb.wait_until(10, "rules after up-wlan0 down", || {
        sb.our_table_rules() == 2
    });
    follow.push(("up-wlan0 down".into(), t.elapsed()));
    sb.up("up-wlan0");
    let t = Instant::now();
    sb.wait_until(10, "rules after up-wlan0 up again", || {
        sb.our_table_rules() == 4
    });
    follow.push(("up-wlan0 up again".into(), t.elapsed()));
    for (what, d) in &follow {
        eprintln!("daemon followed `nmcli con {what}` in {} ms", d.as_millis());
        assert!(*d < Duration::from_secs(5), "{what} took {d:?}");
    }
    // The dispatcher never ran nm-multiwan: there is no script of ours.
    let dispatched = std::fs::read_to_string(sb.work_file("dispatcher.d/90-nm-multiwan"));
    assert!(dispatched.is_err(), "no dispatcher script is installed");
    spread_is(&sb, 4, &[(1, 2), (2, 2)]);

    let obs = Observer::start(&sb, Duration::from_millis(100));
    let t0 = Instant::now();
    let both = |s: &Sample| matches!(&s.seen, Ok(a) if *a == isp_addr(1) || *a == isp_addr(2));
    settled_on(&obs, t0, &both, Duration::from_secs(1), 10);

    // Cut ISP 2 behind its gateway: wlan0 stays connected as far as NetworkManager knows.
    let cut = Instant::now();
    cut_upstream(&sb, 2, true);
    let isp1_only = |s: &Sample| matches!(&s.seen, Ok(a) if *a == isp_addr(1));
    let failed_over = settled_on(&obs, cut, &isp1_only, Duration::from_secs(3), 20);
    let failover = failed_over.saturating_duration_since(cut);
    assert_eq!(
        sb.host_ok(&["nmcli", "-g", "GENERAL.STATE", "device", "show", "wlan0"])
            .trim(),
        "100 (connected)"
    );
    // wlan0 keeps its table and rules (the probes go through them).
    assert_eq!(sb.our_table_rules(), 4);
    let status: serde_json::Value =
        serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"])).unwrap();
    let wlan = &status["uplinks"][1];
    assert_eq!(wlan["iface"], "wlan0");
    assert_eq!(wlan["healthy"], false, "{status}");
    assert_eq!(wlan["in_balance"], false, "{status}");
    assert_eq!(status["health"]["uplinks"]["wlan0"]["healthy"], false);
    assert!(
        status["health"]["uplinks"]["wlan0"]["consecutive_failures"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert_eq!(status["health"]["uplinks"]["eth0"]["healthy"], true);

    // Heal it: back in the balance after 3 answered rounds.
    let heal = Instant::now();
    cut_upstream(&sb, 2, false);
    let deadline = heal + Duration::from_secs(20);
    let used_again = loop {
        let seen = obs.between(heal, Instant::now());
        if let Some(s) = seen
            .iter()
            .find(|s| matches!(&s.seen, Ok(a) if *a == isp_addr(2)))
        {
            break s.at;
        }
        assert!(
            Instant::now() < deadline,
            "ISP 2 not used again within 20 s: {:?}",
            summary(&seen, heal)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let recovery = used_again.saturating_duration_since(heal);
    settled_on(&obs, used_again, &both, Duration::from_secs(1), 10);
    let after = obs.between(used_again, Instant::now() - Duration::from_millis(1200));
    assert!(
        after
            .iter()
            .any(|s| matches!(&s.seen, Ok(a) if *a == isp_addr(1)))
            && after
                .iter()
                .any(|s| matches!(&s.seen, Ok(a) if *a == isp_addr(2))),
        "both ISPs carry new connections again: {:?}",
        summary(&after, used_again)
    );
    drop(obs);

    eprintln!(
        "failover (interval_ms=500, down_after=3): {} ms from the cut until every new connection avoided ISP 2",
        failover.as_millis()
    );
    eprintln!(
        "recovery (interval_ms=500, up_after=3): {} ms from the repair until ISP 2 carried a new connection again",
        recovery.as_millis()
    );
    if let Ok(path) = std::env::var("NM_MULTIWAN_TIMINGS") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(
            f,
            "failover_ms={} recovery_ms={}",
            failover.as_millis(),
            recovery.as_millis()
        )
        .unwrap();
    }
    // Bounded and generous: machines are noisy. The issue's targets are < 3 s and < 10 s.
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    assert!(
        recovery < Duration::from_secs(15),
        "recovery took {recovery:?}"
    );
    drop(daemon);
}

/// The D-Bus interface and its policy; SIGHUP; NetworkManager restarted under the
/// daemon's feet; SIGTERM leaves the balanced state, --flush-on-exit removes it.
fn daemon_dbus_policy_reload_and_networkmanager_restart(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "dmnd",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            dispatcher: false,
            config: Some(CONFIG),
            dbus_policy: true,
            ..Default::default()
        },
    );
    let mut daemon = Daemon::start(&sb, &[]);
    sb.up("up-eth0");
    sb.up("up-wlan0");
    sb.wait_until(10, "rules for two uplinks", || sb.our_table_rules() == 4);

    // Anyone may read the status, which carries the health; as nobody the plain
    // fallback could not even read the firewall, so this came from the daemon.
    sb.wait_until(10, "three answered probe rounds", || {
        let o = sb.host(&[
            "runuser",
            "-u",
            "nobody",
            "--",
            "/usr/bin/nm-multiwan",
            "status",
            "--json",
        ]);
        o.status.success()
            && serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| {
                v["health"]["uplinks"]["wlan0"]["consecutive_successes"]
                    .as_u64()
                    .is_some_and(|n| n >= 3)
                    && v["uplinks"][0]["healthy"] == true
            })
    });
    let o = call(&sb, Some("nobody"), "Status");
    assert!(o.status.success(), "Status as nobody: {}", stderr(&o));
    let text = sb.host_ok(&[
        "runuser",
        "-u",
        "nobody",
        "--",
        "/usr/bin/nm-multiwan",
        "status",
    ]);
    assert!(text.contains("health: probes to 198.51.100.10"), "{text}");

    // Only root may act: the installed policy refuses nobody ...
    let o = call(&sb, Some("nobody"), "Reload");
    assert!(!o.status.success(), "Reload as nobody must fail");
    assert!(
        stderr(&o).contains("AccessDenied: Rejected send message"),
        "refused by the bus policy: {}",
        stderr(&o)
    );
    // ... and root reloads: a new weight changes the spread of new connections.
    std::fs::write(
        sb.work_file("etc-nm-multiwan/config.toml"),
        format!("{CONFIG}[uplinks.wlan0]\nweight = 2\n"),
    )
    .unwrap();
    let o = call(&sb, None, "Reload");
    assert!(o.status.success(), "Reload as root: {}", stderr(&o));
    spread_is(&sb, 6, &[(1, 2), (2, 4)]);
    // Reconcile: root's alone; it repairs at once what was removed behind the daemon's
    // back (no NetworkManager signal tells it), and answers with how long it took.
    let o = call(&sb, Some("nobody"), "Reconcile");
    assert!(!o.status.success(), "Reconcile as nobody must fail");
    sb.host_ok(&["/usr/bin/nm-multiwan", "flush"]);
    assert_eq!(sb.our_table_rules(), 0, "flushed");
    let o = call(&sb, None, "Reconcile");
    assert!(o.status.success(), "Reconcile as root: {}", stderr(&o));
    assert_eq!(
        sb.our_table_rules(),
        4,
        "rules back when Reconcile returned"
    );
    let reply = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(number_after(&reply, "uint64") > 0, "a duration: {reply}");
    assert!(
        number_after(&reply, "uint32") > 0,
        "a flushed machine needs changes: {reply}"
    );
    let o = call(&sb, None, "Reconcile");
    let reply = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        number_after(&reply, "uint32"),
        0,
        "nothing left to do right after: {reply}"
    );
    spread_is(&sb, 6, &[(1, 2), (2, 4)]);
    // A broken config is refused and changes nothing.
    std::fs::write(
        sb.work_file("etc-nm-multiwan/config.toml"),
        "[health]\ninterval_ms = 1\n",
    )
    .unwrap();
    let o = call(&sb, None, "Reload");
    assert!(!o.status.success(), "a broken config must fail Reload");
    assert!(stderr(&o).contains("interval_ms"), "{}", stderr(&o));
    assert!(daemon.alive());

    // The daemon checks the caller itself too: with a policy that lets everyone call
    // everything, nobody is still refused, by the daemon this time.
    let permissive = sb.work_file("ovl/etc/upper/dbus-1/system.d/zz-test-permissive.conf");
    std::fs::write(
        &permissive,
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy context="default"><allow send_destination="net.nmmultiwan.Daemon1"/></policy></busconfig>
"#,
    )
    .unwrap();
    let bus_pid = std::fs::read_to_string(sb.work_file("host.pid")).unwrap();
    sb.host_ok(&["kill", "-HUP", bus_pid.trim()]);
    sb.wait_until(10, "the daemon's own refusal", || {
        stderr(&call(&sb, Some("nobody"), "Reload")).contains("only root may reload")
    });
    std::fs::remove_file(&permissive).unwrap();
    sb.host_ok(&["kill", "-HUP", bus_pid.trim()]);

    // SIGHUP reloads like Reload: back to equal weights.
    std::fs::write(sb.work_file("etc-nm-multiwan/config.toml"), CONFIG).unwrap();
    daemon.signal(libc::SIGHUP);
    sb.wait_until(10, "equal spread after SIGHUP", || {
        spread_matches(&sb, 4, &[(1, 2), (2, 2)])
    });

    // NetworkManager restarts: the daemon stays, the state stays, and it follows the
    // new NetworkManager.
    let before = sb.snapshot();
    let o = Command::new(common::sandbox_script())
        .args(["restart-nm", &sb.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "restart-nm: {}", stderr(&o));
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.alive(), "the daemon died with NetworkManager");
    assert_eq!(sb.our_table_rules(), 4);
    assert_eq!(
        before,
        sb.snapshot(),
        "kernel state changed across the restart"
    );
    sb.down("up-wlan0");
    sb.wait_until(10, "the daemon following the new NetworkManager", || {
        sb.our_table_rules() == 2
    });
    sb.up("up-wlan0");
    sb.wait_until(10, "wlan0 back", || sb.our_table_rules() == 4);
    let o = call(&sb, Some("nobody"), "Status");
    assert!(
        o.status.success(),
        "Status after the restart: {}",
        stderr(&o)
    );

    // SIGTERM: a clean exit that leaves the balanced state in place ...
    let status = daemon.stop();
    assert!(status.success(), "daemon exit status {status:?}");
    assert_eq!(sb.our_table_rules(), 4);
    assert_eq!(balanced_marks(&sb).len(), 2);
    // ... unless asked to flush on exit.
    let daemon = Daemon::start(&sb, &["--flush-on-exit"]);
    let status = daemon.stop();
    assert!(status.success(), "daemon exit status {status:?}");
    assert_eq!(sb.our_table_rules(), 0);
    assert!(balanced_marks(&sb).is_empty());
}

/// With the dispatcher script installed too, the two never fight: a dispatcher run
/// while an uplink is unhealthy reaches the daemon's result (the dead uplink stays out).
/// Probes here are TCP handshakes; with every upstream dead, all uplinks stay balanced.
fn daemon_and_dispatcher_agree(fw: Fw) {
    require_root!();
    let sb = Sandbox::create(
        "dmna",
        &["eth0:static:1", "wlan0:static:2", "usb0:static:3"],
        Options {
            firewall: fw,
            config: Some(&CONFIG.replace("\"198.51.100.10\"", "\"tcp:198.51.100.10:7000\"")),
            dbus_policy: true,
            ..Default::default()
        },
    );
    let daemon = Daemon::start(&sb, &[]);
    for c in ["up-eth0", "up-wlan0", "up-usb0"] {
        sb.up(c);
    }
    sb.wait_until(10, "rules for three uplinks", || sb.our_table_rules() == 6);
    let (eth0, usb0) = (mark_of(&sb, "eth0"), mark_of(&sb, "usb0"));
    cut_upstream(&sb, 2, true);
    sb.wait_until(15, "wlan0 out of the balance", || {
        balanced_marks(&sb) == BTreeSet::from([eth0.clone(), usb0.clone()])
    });
    // A dispatcher event: nm-multiwan dispatch runs its own reconcile.
    sb.down("up-usb0");
    let dispatched = std::fs::read_to_string(sb.work_file("dispatcher.log")).unwrap();
    assert!(dispatched.contains("down usb0"), "{dispatched}");
    sb.wait_until(10, "usb0 gone", || sb.our_table_rules() == 4);
    for _ in 0..5 {
        assert_eq!(
            balanced_marks(&sb),
            BTreeSet::from([eth0.clone()]),
            "the dispatcher put the dead uplink back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    spread_is(&sb, 4, &[(1, 4)]);
    // Every upstream dead: balancing over all beats blackholing the machine.
    cut_upstream(&sb, 1, true);
    sb.wait_until(15, "all uplinks balanced when all are down", || {
        balanced_marks(&sb).len() == 2 && {
            let v: serde_json::Value =
                serde_json::from_str(&sb.host_ok(&["/usr/bin/nm-multiwan", "status", "--json"]))
                    .unwrap();
            v["uplinks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["healthy"] == false && u["in_balance"] == true)
        }
    });
    cut_upstream(&sb, 1, false);
    sb.wait_until(15, "eth0 healthy again", || {
        balanced_marks(&sb) == BTreeSet::from([eth0.clone()])
    });
    // Healed, it is back, and a dispatcher run keeps it there.
    cut_upstream(&sb, 2, false);
    sb.wait_until(15, "wlan0 back", || balanced_marks(&sb).len() == 2);
    sb.up("up-usb0");
    sb.wait_until(10, "three uplinks", || balanced_marks(&sb).len() == 3);
    spread_is(&sb, 6, &[(1, 2), (2, 2), (3, 2)]);
    drop(daemon);
}

on_both_backends!(
    daemon_follows_nmcli_and_fails_over_dead_upstreams,
    daemon_dbus_policy_reload_and_networkmanager_restart,
    daemon_and_dispatcher_agree,
);
