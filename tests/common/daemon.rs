//! `nm-multiwan daemon` in a sandbox's host, and what the status, top and notify
//! tests need around it: commands as an unprivileged user, downloads, cut upstreams.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{SERVER, Sandbox, sandbox_script};

/// Probes every 500 ms straight at the sandbox's internet server: out after 3 lost
/// rounds, back after 3 answered ones.
pub const PROBE_CONFIG: &str = "\
[health]
targets = [\"198.51.100.10\"]
interval_ms = 500
down_after = 3
up_after = 3
";

/// `setpriv` arguments that make the rest of a command line run as `nobody`, without
/// any capability.
pub const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// `nm-multiwan daemon` running in the sandbox's host; killed on drop, its log
/// printed when the test fails.
pub struct DaemonProcess {
    child: Child,
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts it and waits for its first reconcile.
    pub fn start(sb: &Sandbox) -> DaemonProcess {
        let log = sb.work_file("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(sandbox_script())
            .args(["exec", &sb.name, "/usr/bin/nm-multiwan", "-v", "daemon"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the daemon");
        let d = DaemonProcess { child, log };
        sb.wait_until(15, "the daemon's first reconcile", || {
            let t = d.log_text();
            t.contains("reconciled") || t.contains("in sync")
        });
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- daemon log (last 60 lines) ---");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Runs `nm-multiwan ARGS` in the sandbox's host as `nobody`.
pub fn nmmw_as_nobody(sb: &Sandbox, args: &[&str]) -> Output {
    let mut full: Vec<&str> = AS_NOBODY.to_vec();
    full.push("/usr/bin/nm-multiwan");
    full.extend_from_slice(args);
    sb.host(&full)
}

/// Downloads from the internet server (an endless stream of zeros) over `count` new
/// connections from the host, which the balance spreads over the uplinks; stopped on
/// drop.
pub struct Downloads {
    children: Vec<Child>,
}

impl Downloads {
    pub fn start(sb: &Sandbox, count: usize) -> Downloads {
        let children = (0..count)
            .map(|_| {
                let child = Command::new(sandbox_script())
                    .args(["exec", &sb.name, "socat", "-u"])
                    .arg(format!("TCP:{SERVER}:7001"))
                    .arg("/dev/null")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start socat");
                // One after the other: each takes the next slot of the round.
                std::thread::sleep(Duration::from_millis(200));
                child
            })
            .collect();
        Downloads { children }
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Cuts (or heals) ISP k's upstream behind its gateway: its link to the host stays up,
/// NetworkManager sees nothing, but nothing is forwarded to or from the internet.
pub fn cut_upstream(sb: &Sandbox, k: u32, cut: bool) {
    let op = if cut { "-I" } else { "-D" };
    for dir in ["-i", "-o"] {
        sb.ns_ok(
            &format!("isp{k}"),
            &["iptables", op, "FORWARD", dir, "wan", "-j", "DROP"],
        );
    }
}

/// Polls `f` every 200 ms until it returns `Ok`, for at most `secs`; a timeout
/// panics with the last `Err`, which says what was seen instead.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {secs} s waiting for {what}; last seen:\n{last}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
