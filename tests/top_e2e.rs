//! `nm-multiwan top` driven in tmux inside the sandbox, as a user without
//! privileges: the screen shows each uplink with a rate while downloads run through
//! it, the health change of an uplink whose upstream is cut, and `q` (or Ctrl-C) ends
//! it with the terminal restored (no alternate screen, no raw mode). Without a
//! terminal it prints plain lines, and a closed pipe ends it. Root only; CI runs as
//! root.

mod common;

use std::process::{Command, Output, Stdio};

use common::daemon::{AS_NOBODY, DaemonProcess, Downloads, PROBE_CONFIG, cut_upstream, wait_for};
use common::{Fw, Options, Sandbox, sandbox_script};

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        // Both backends' tests run at once in this process.
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("nmmw-{tag}-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux (apt-get install tmux)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A window named `name` running `command` in a shell, 160x30.
    fn window(&self, name: &str, command: &str) {
        if self.run(&["has-session", "-t", "top"]).status.success() {
            self.ok(&["new-window", "-d", "-t", "top", "-n", name, command]);
        } else {
            self.ok(&[
                "new-session",
                "-d",
                "-s",
                "top",
                "-n",
                name,
                "-x",
                "160",
                "-y",
                "30",
                command,
            ]);
        }
    }

    fn screen(&self, name: &str) -> String {
        self.ok(&["capture-pane", "-p", "-t", &format!("top:{name}")])
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let target = format!("top:{name}");
        let mut args = vec!["send-keys", "-t", &target];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    fn alternate_screen(&self, name: &str) -> bool {
        self.ok(&[
            "display",
            "-p",
            "-t",
            &format!("top:{name}"),
            "#{alternate_on}",
        ])
        .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for w in ["quit", "ctrlc", "dumb"] {
                let o = self.run(&["capture-pane", "-p", "-t", &format!("top:{w}")]);
                eprintln!(
                    "--- tmux window {w} ---\n{}",
                    String::from_utf8_lossy(&o.stdout)
                );
            }
        }
        let _ = self.run(&["kill-server"]);
    }
}

/// The shell command of a window: top as nobody in the sandbox's host, then the exit
/// status and the terminal's modes as the shell finds them afterwards.
fn top_command(sb: &Sandbox, env: &str) -> String {
    format!(
        "{} exec {} env {env} {} /usr/bin/nm-multiwan top; echo \"top exited $?\"; stty -a; echo modes shown; sleep 600",
        sandbox_script().display(),
        sb.name,
        AS_NOBODY.join(" ")
    )
}

/// The cell of `column` in `iface`'s row of top's table (cells are aligned under the
/// header; everything left of the sparkline is ASCII).
fn cell(screen: &str, iface: &str, column: &str) -> Option<String> {
    let header = screen.lines().find(|l| l.starts_with("UPLINK "))?;
    let start = header.find(column)?;
    let end = header[start + column.len()..]
        .find(|c: char| c != ' ')
        .map_or(header.len(), |i| start + column.len() + i);
    let line = screen
        .lines()
        .find(|l| l.starts_with(&format!("{iface} ")))?;
    Some(
        line.chars()
            .skip(start)
            .take(end - start)
            .collect::<String>()
            .trim()
            .to_string(),
    )
}

/// "15 Mbit/s" -> bits per second.
fn rate(cell: &str) -> Option<f64> {
    let (n, unit) = cell.split_once(' ')?;
    let k = match unit {
        "bit/s" => 1.0,
        "kbit/s" => 1e3,
        "Mbit/s" => 1e6,
        "Gbit/s" => 1e9,
        _ => return None,
    };
    Some(n.parse::<f64>().ok()? * k)
}

/// Terminal modes as `stty -a` prints them, with the shell's line discipline back.
fn restored(screen: &str) -> bool {
    let modes: Vec<&str> = screen.split_whitespace().collect();
    modes.contains(&"icanon") && modes.contains(&"echo") && !modes.contains(&"-icanon")
}

fn top_shows_rates_and_health_and_quits_cleanly(fw: Fw) {
    require_root!();
    let sb = Sandbox::create_up(
        "topu",
        &["eth0:static:1", "wlan0:static:2"],
        Options {
            firewall: fw,
            config: Some(PROBE_CONFIG),
            dbus_policy: true,
            rate: Some("20mbit"),
            ..Default::default()
        },
    );
    let daemon = DaemonProcess::start(&sb);
    let tmux = Tmux::new("top");
    tmux.window("quit", &top_command(&sb, "LANG=C.UTF-8"));
    let downloads = Downloads::start(&sb, 4);

    // Each uplink with its download rate (20 Mbit/s each; anything above 1 Mbit/s
    // is a download going through it).
    let screen = wait_for(20, "both uplinks downloading on top's screen", || {
        let s = tmux.screen("quit");
        let busy = ["eth0", "wlan0"].iter().all(|i| {
            cell(&s, i, "DOWNLOAD")
                .and_then(|c| rate(&c))
                .is_some_and(|r| r > 1e6)
        });
        if busy { Ok(s) } else { Err(s) }
    });
    assert!(
        tmux.alternate_screen("quit"),
        "top draws on the alternate screen"
    );
    for iface in ["eth0", "wlan0"] {
        assert_eq!(
            cell(&screen, iface, "HEALTH").as_deref(),
            Some("ok"),
            "{screen}"
        );
        assert_eq!(
            cell(&screen, iface, "STATE").as_deref(),
            Some("active"),
            "{screen}"
        );
        let conns = cell(&screen, iface, "CONNS").unwrap_or_default();
        assert!(conns.parse::<u32>().is_ok_and(|n| n >= 1), "{screen}");
    }
    assert!(screen.contains("total: "), "{screen}");
    assert!(
        screen.contains(" over up-"),
        "the gain over the best uplink:\n{screen}"
    );
    drop(downloads);

    // The upstream of ISP 2 cut: wlan0 turns DOWN, out of the balance.
    cut_upstream(&sb, 2, true);
    let screen = wait_for(15, "wlan0 DOWN on top's screen", || {
        let s = tmux.screen("quit");
        if cell(&s, "wlan0", "HEALTH").as_deref() == Some("DOWN") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert_eq!(
        cell(&screen, "wlan0", "STATE").as_deref(),
        Some("out"),
        "{screen}"
    );
    assert_eq!(
        cell(&screen, "wlan0", "RTT").as_deref(),
        Some("-"),
        "{screen}"
    );
    assert_eq!(
        cell(&screen, "eth0", "HEALTH").as_deref(),
        Some("ok"),
        "{screen}"
    );
    cut_upstream(&sb, 2, false);

    // q ends it: the shell gets the terminal back as it was.
    tmux.keys("quit", &["q"]);
    let screen = wait_for(10, "top to end on q", || {
        let s = tmux.screen("quit");
        if s.contains("modes shown") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(!tmux.alternate_screen("quit"), "left the alternate screen");
    assert!(restored(&screen), "raw mode left on:\n{screen}");

    // So does Ctrl-C.
    tmux.window("ctrlc", &top_command(&sb, "LANG=C.UTF-8"));
    wait_for(15, "top drawing", || {
        let s = tmux.screen("ctrlc");
        if cell(&s, "eth0", "HEALTH").is_some() {
            Ok(())
        } else {
            Err(s)
        }
    });
    tmux.keys("ctrlc", &["C-c"]);
    let screen = wait_for(10, "top to end on Ctrl-C", || {
        let s = tmux.screen("ctrlc");
        if s.contains("modes shown") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(
        !tmux.alternate_screen("ctrlc") && restored(&screen),
        "{screen}"
    );

    // A dumb terminal: plain lines, and it says so.
    tmux.window("dumb", &top_command(&sb, "TERM=dumb"));
    let screen = wait_for(15, "plain lines on a dumb terminal", || {
        let s = tmux.screen("dumb");
        if s.lines().filter(|l| l.contains(" eth0 (up-eth0) ")).count() >= 2 {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(
        screen.contains("no terminal to draw on (TERM=dumb"),
        "{screen}"
    );
    assert!(!tmux.alternate_screen("dumb"), "{screen}");
    tmux.keys("dumb", &["C-c"]);
    let screen = wait_for(10, "plain top to end on Ctrl-C", || {
        let s = tmux.screen("dumb");
        if s.contains("modes shown") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(screen.contains("top exited 0"), "{screen}");

    // Into a pipe: plain lines, and a reader that goes away ends it.
    let o = sb.host(&[
        "timeout",
        "30",
        "sh",
        "-c",
        &format!(
            "{} /usr/bin/nm-multiwan top | head -n 3",
            AS_NOBODY.join(" ")
        ),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "top | head -n 3 must end by itself: {out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("no terminal to draw on"), "{out}");
    assert!(
        lines[1].contains(" eth0 (up-eth0) active ok ") && lines[1].contains(" total: "),
        "{out}"
    );
    drop(daemon);

    // No daemon: top reads the state and samples the counters itself; health is "-"
    // (no probes, and NetworkManager's check is off in the sandbox).
    let _downloads = Downloads::start(&sb, 4);
    let o = sb.host(&[
        "timeout",
        "30",
        "sh",
        "-c",
        &format!(
            "{} /usr/bin/nm-multiwan top | head -n 4",
            AS_NOBODY.join(" ")
        ),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let last = out.lines().nth(3).unwrap_or_else(|| panic!("{out}"));
    for iface in ["eth0", "wlan0"] {
        let after = last
            .split(&format!(" {iface} (up-{iface}) active - down "))
            .nth(1)
            .unwrap_or_else(|| panic!("{iface} without health or rate: {out}"));
        let down = rate(after.split(" up ").next().unwrap_or("")).unwrap_or(0.0);
        assert!(down > 1e6, "{iface} downloads without the daemon: {out}");
    }
}

on_both_backends!(top_shows_rates_and_health_and_quits_cleanly);
