//! Commands that write the network check for `CAP_NET_ADMIN` before anything else and
//! say what to do (exit code 4); the capability decides, not the user id. Each run is
//! in a fresh network namespace (`unshare -n`), so nothing of the machine's is touched
//! even if a check were missing. Root only (to switch users and drop capabilities).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::SharedBinary;

const NEEDS_ROOT: &str = "needs root (CAP_NET_ADMIN): run with sudo";

/// Runs the binary in a new network namespace, through `setpriv ARGS`, with its run
/// directory at `run_dir` and the system bus pointing nowhere.
fn run(bin: &Path, run_dir: &Path, setpriv: &[&str], args: &[&str]) -> Output {
    Command::new("unshare")
        .arg("-n")
        .arg("setpriv")
        .args(setpriv)
        .arg("--")
        .arg(bin)
        .args(["--config", "/nonexistent/config.toml"])
        .args(args)
        .env("NM_MULTIWAN_RUN_DIR", run_dir)
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare/setpriv (util-linux)")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const NOBODY: &[&str] = &["--reuid=65534", "--regid=65534", "--clear-groups"];

/// A directory anyone may create entries in: the run directory below it could be
/// created by `nobody`, so its absence shows the command stopped before the lock.
fn scratch(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("nmmw-priv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

#[test]
fn writing_commands_without_cap_net_admin_say_they_need_root() {
    common::require_root();
    let bin = SharedBinary::new();
    let dir = scratch("without");
    let run_dir = dir.join("run");
    let without_cap: &[&[&str]] = &[
        NOBODY,
        // Root, but without the capability (as in a trimmed container).
        &["--bounding-set=-net_admin", "--inh-caps=-net_admin"],
    ];
    for who in without_cap {
        for args in [
            &["apply"][..],
            &["flush"],
            &["daemon"],
            &["dispatch", "eth0", "up"],
            &["dispatch", "wlan0", "down"],
        ] {
            let o = run(&bin.path, &run_dir, who, args);
            assert_eq!(o.status.code(), Some(4), "{who:?} {args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(&format!("nm-multiwan {} {NEEDS_ROOT}", args[0])),
                "{who:?} {args:?}: {}",
                stderr(&o)
            );
            assert!(
                !run_dir.exists(),
                "{who:?} {args:?} touched its run directory before failing"
            );
        }
        // An event the hook ignores writes nothing and needs nothing.
        let o = run(&bin.path, &run_dir, who, &["dispatch", "eth0", "pre-up"]);
        assert_eq!(o.status.code(), Some(0), "ignored event: {}", stderr(&o));
        // Reading commands are not refused: they go on to the (absent) bus.
        for args in [&["plan"][..], &["status"], &["top"]] {
            let o = run(&bin.path, &run_dir, who, args);
            assert_eq!(o.status.code(), Some(3), "{who:?} {args:?}: {}", stderr(&o));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Not root, but holding `CAP_NET_ADMIN` (as a service with `AmbientCapabilities=`):
/// the check lets it through to the next step, the bus, which is not there.
#[test]
fn cap_net_admin_without_root_passes_the_check() {
    common::require_root();
    let bin = SharedBinary::new();
    let dir = scratch("with");
    let run_dir = dir.join("run");
    let mut who = NOBODY.to_vec();
    who.extend(["--inh-caps=+net_admin", "--ambient-caps=+net_admin"]);
    for args in [&["apply"][..], &["dispatch", "eth0", "up"]] {
        let o = run(&bin.path, &run_dir, &who, args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("cannot reach the system D-Bus"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
