//! A system bus that accepts connections and never answers (a hung dbus-daemon): every
//! command gives up within its timeout with the usual message and exit code 3, instead
//! of hanging; `notify`, which first reaches for the session bus, likewise on a session
//! bus that never answers. The fake bus is a Unix socket this test listens on; the commands run in
//! a fresh network namespace (`unshare -n`), so `apply` could not touch the machine
//! even if it got that far. Root only (`apply` and `dispatch` need CAP_NET_ADMIN).

mod common;

use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nm_multiwan::bus::DBUS_TIMEOUT;

/// Accepts every connection and keeps it open, reading and answering nothing.
fn silent_bus(path: &std::path::Path) {
    let listener = UnixListener::bind(path).expect("bind the fake bus");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
}

#[test]
fn a_bus_that_never_answers_fails_every_command_within_its_timeout() {
    common::require_root();
    let dir = std::env::temp_dir().join(format!("nmmw-deadbus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let socket = dir.join("system_bus_socket");
    silent_bus(&socket);

    let commands: &[&[&str]] = &[
        &["plan"],
        &["status"],
        &["top"],
        &["notify"],
        &["apply"],
        &["dispatch", "eth0", "up"],
    ];
    // All at once: each waits on its own.
    let start = Instant::now();
    let mut children: Vec<(&[&str], Child)> = commands
        .iter()
        .enumerate()
        .map(|(n, args)| {
            let child = Command::new("unshare")
                .arg("-n")
                .arg(common::binary())
                .args(["--config", "/nonexistent/config.toml"])
                .args(*args)
                .env(
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    format!("unix:path={}", socket.display()),
                )
                .env(
                    "DBUS_SESSION_BUS_ADDRESS",
                    format!("unix:path={}", socket.display()),
                )
                // Their own run directories: apply and dispatch would take turns.
                .env("NM_MULTIWAN_RUN_DIR", dir.join(format!("run{n}")))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run unshare (util-linux)");
            (*args, child)
        })
        .collect();

    // Generous: machines are noisy. A hang would take minutes.
    let limit = DBUS_TIMEOUT * 3;
    let mut results = Vec::new();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            if let Some(status) = children[i].1.try_wait().unwrap() {
                let (args, child) = children.swap_remove(i);
                let out = child.wait_with_output().unwrap();
                results.push((args, status, start.elapsed(), out));
            } else {
                i += 1;
            }
        }
        if start.elapsed() > limit {
            let hung: Vec<_> = children.iter().map(|(a, _)| a.to_vec()).collect();
            for (_, c) in &mut children {
                let _ = c.kill();
            }
            panic!("still running after {limit:?} (timeout {DBUS_TIMEOUT:?}): {hung:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (args, status, took, out) in results {
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{args:?}: exit {:?} after {took:?}", status.code());
        assert_eq!(status.code(), Some(3), "{args:?}: {stderr}");
        let bus = if args[0] == "notify" {
            "session"
        } else {
            "system"
        };
        assert!(
            stderr.contains(&format!(
                "cannot reach the {bus} D-Bus: no answer within {} s",
                DBUS_TIMEOUT.as_secs()
            )),
            "{args:?}: {stderr}"
        );
        assert!(took <= limit, "{args:?} took {took:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
