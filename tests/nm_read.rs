//! Reads uplinks from a real NetworkManager (see tests/sandbox/README.md), no mocks: a private
//! NetworkManager and system bus in their own network and mount namespaces, three veth
//! links with static keyfile connections, and `examples/nm_uplinks` run inside.
//!
//! Root only; fails saying so otherwise. Namespaces are named `nmrd-<pid>-*` and
//! everything is torn down by a Drop guard, also when an assertion fails; what a killed
//! run left behind is removed by the next run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

const UUID_ETH0: &str = "6d1f5a3e-71a1-4c2b-9e0a-000000000001";
const UUID_WLAN0: &str = "6d1f5a3e-71a1-4c2b-9e0a-000000000002";
const UUID_ETH2: &str = "6d1f5a3e-71a1-4c2b-9e0a-000000000003";
/// A connection name that would do harm if anything passed it to a shell.
const NASTY_ID: &str = "wired \"$(reboot)\" `id` 'x'";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, panicking with its output if it fails.
fn run(mut cmd: Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Polls `f` until it returns `Some`, or panics after [`TIMEOUT`] saying what we waited for.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Builds `examples/nm_uplinks` and returns the path of the executable.
fn build_example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut build = cmd(
        &cargo,
        &[
            "build",
            "-j2",
            "--example",
            "nm_uplinks",
            "--message-format=json-render-diagnostics",
        ],
    );
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    build.current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = run(build);
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "nm_uplinks")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for example nm_uplinks")
}

/// Network namespaces, a NetworkManager and a scratch directory, all removed on drop.
struct Sandbox {
    prefix: String,
    dir: PathBuf,
    /// Namespaces we created (and only those: they are the ones we delete).
    namespaces: Vec<String>,
    nm: Option<Child>,
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`); `None` when it is
/// gone. With the pid it names a process even after the pid is reused.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(") ")?.1;
    after_comm.split_whitespace().nth(19).map(str::to_string)
}

/// Removes what killed runs left behind (a failing run cleans up after itself, a killed
/// one cannot): the `nmrd-PID-*` namespaces, their processes and `nmrd-PID` scratch
/// directories of processes that are gone. Runs still going on, other people's too,
/// are left alone.
fn remove_stale() {
    let me = std::process::id();
    let tmp = std::env::temp_dir();
    let alive = |pid: u32| {
        // Ours cannot exist yet: they are from a dead run that had our pid.
        pid != me
            && start_time(pid).is_some_and(|t| {
                fs::read_to_string(tmp.join(format!("nmrd-{pid}/owner")))
                    .map_or(true, |o| o.split_whitespace().nth(1) == Some(t.as_str()))
            })
    };
    let pid_of =
        |name: &str| -> Option<u32> { name.strip_prefix("nmrd-")?.split('-').next()?.parse().ok() };
    let list = Command::new("ip").args(["netns", "list"]).output();
    let list = list
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if pid_of(ns).is_some_and(|pid| !alive(pid)) {
            eprintln!("removing namespace {ns}, left by a run that is gone");
            kill_namespace_processes(ns);
            let _ = cmd("ip", &["netns", "del", ns]).status();
        }
    }
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if pid_of(&name).is_some_and(|pid| name == format!("nmrd-{pid}") && !alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Sandbox {
    fn new() -> Self {
        remove_stale();
        let me = std::process::id();
        let prefix = format!("nmrd-{me}");
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir).unwrap();
        let owner = start_time(me).expect("our own start time");
        fs::write(dir.join("owner"), format!("{me} {owner}\n")).unwrap();
        Sandbox {
            prefix,
            dir,
            namespaces: Vec::new(),
            nm: None,
        }
    }

    fn add_netns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        run(cmd("ip", &["netns", "add", &name]));
        self.namespaces.push(name.clone());
        name
    }

    fn nm_pid(&self) -> u32 {
        self.nm.as_ref().expect("NetworkManager started").id()
    }

    /// A command run inside NetworkManager's mount and network namespaces.
    fn in_nm(&self, program: &str, args: &[&str]) -> Command {
        let pid = self.nm_pid().to_string();
        let mut c = cmd("nsenter", &["-t", &pid, "-m", "-n", program]);
        c.args(args);
        c
    }

    fn nm_log(&self) -> String {
        fs::read_to_string(self.dir.join("nm.log")).unwrap_or_default()
    }
}

fn kill_namespace_processes(ns: &str) {
    for signal in ["TERM", "KILL"] {
        let pids = netns_pids(ns);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            let _ = cmd("kill", &["-s", signal, pid]).status();
        }
        let start = Instant::now();
        while !netns_pids(ns).is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn netns_pids(ns: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- NetworkManager log ---\n{}", self.nm_log());
        }
        if let Some(mut nm) = self.nm.take() {
            let _ = cmd("kill", &["-s", "TERM", &nm.id().to_string()]).status();
            let start = Instant::now();
            while matches!(nm.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nm.kill();
            let _ = nm.wait();
        }
        for ns in self.namespaces.iter().rev() {
            kill_namespace_processes(ns);
            if let Err(e) = cmd("ip", &["netns", "del", ns]).status() {
                eprintln!("cannot delete network namespace {ns}: {e}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn keyfile(id: &str, uuid: &str, iface: &str, address: &str, gateway: &str, extra: &str) -> String {
    // GKeyFile values are literal apart from backslash escapes; none of ours has one.
    format!(
        "[connection]\nid={id}\nuuid={uuid}\ntype=ethernet\ninterface-name={iface}\n\
         autoconnect=true\n\n[ipv4]\nmethod=manual\naddress1={address},{gateway}\n{extra}\n\
         [ipv6]\nmethod=disabled\n"
    )
}

const NM_SCRIPT: &str = r#"set -e
dir="$1"
mount --make-rprivate /
# A private /run: our own system bus socket and NetworkManager runtime state.
mount -t tmpfs nmrd-run /run
mkdir -p /run/dbus /run/NetworkManager "$dir/var-lib" "$dir/dispatcher.d"
mount --bind "$dir/var-lib" /var/lib/NetworkManager
mount --bind "$dir/dispatcher.d" /etc/NetworkManager/dispatcher.d
# Read-only /sys: NetworkManager runs without udev instead of waiting for it.
mount -o remount,bind,ro /sys
dbus-daemon --system --fork
exec NetworkManager --no-daemon --debug --config="$dir/NetworkManager.conf" \
    --config-dir=/nonexistent --state-file="$dir/NetworkManager.state"
"#;

/// Runs the example inside NetworkManager's namespaces.
fn read_nm(sb: &Sandbox, exe: &Path, args: &[&str]) -> Output {
    sb.in_nm(exe.to_str().unwrap(), args)
        .env("RUST_LOG", "nm_multiwan=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn uplinks(sb: &Sandbox, exe: &Path) -> Value {
    let out = read_nm(sb, exe, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    assert!(out.status.success(), "nm_uplinks failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("nm_uplinks prints JSON")
}

fn device_states(sb: &Sandbox) -> Vec<(String, String)> {
    let out = sb
        .in_nm("nmcli", &["-t", "-f", "DEVICE,STATE", "dev"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(d, s)| (d.to_string(), s.to_string()))
        .collect()
}

fn expected_eth0() -> Value {
    json!({
        "iface": "eth0",
        "connection_id": "uplink eth0",
        "connection_uuid": UUID_ETH0,
        "ipv4": {
            "address": "10.71.1.2",
            "subnet": "10.71.1.0/24",
            "gateway": "10.71.1.1",
            "metric": 100,
            "routes": [{"dst": "10.71.1.0/24", "via": null}],
            "dns": [],
        },
        "ipv6": null,
        "metered": false,
    })
}

fn expected_wlan0() -> Value {
    json!({
        "iface": "wlan0",
        "connection_id": NASTY_ID,
        "connection_uuid": UUID_WLAN0,
        "ipv4": {
            "address": "10.71.2.2",
            "subnet": "10.71.2.0/24",
            "gateway": "10.71.2.1",
            "metric": 600,
            // The device's on-link route, and the static route its profile adds
            // (NetworkManager's RouteData): both go into the uplink's table.
            "routes": [
                {"dst": "10.71.2.0/24", "via": null},
                {"dst": "192.0.2.0/24", "via": "10.71.2.1"},
            ],
            // The profile's resolvers, in order: DNS look-ups for them leave through
            // this uplink.
            "dns": ["192.0.2.53", "192.0.2.54"],
        },
        "ipv6": null,
        "metered": true,
    })
}

#[test]
fn reads_uplinks_from_a_real_network_manager() {
    assert!(
        is_root(),
        "needs root: run sudo tests/run.sh (network namespaces and a private NetworkManager)"
    );
    for tool in [
        "NetworkManager",
        "nmcli",
        "dbus-daemon",
        "ip",
        "unshare",
        "nsenter",
    ] {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v \"$1\"", "sh", tool])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} not found: apt-get install -y network-manager dbus iproute2 util-linux"
        );
    }
    let exe = build_example();

    let mut sb = Sandbox::new();
    let host = sb.add_netns("h");
    let upstream = sb.add_netns("u");
    for (i, (dev, gw)) in [("eth0", 1), ("wlan0", 2), ("eth2", 3)].iter().enumerate() {
        let peer = format!("p{i}");
        run(cmd(
            "ip",
            &[
                "-n", &host, "link", "add", dev, "type", "veth", "peer", "name", &peer, "netns",
                &upstream,
            ],
        ));
        let addr = format!("10.71.{gw}.1/24");
        run(cmd(
            "ip",
            &["-n", &upstream, "addr", "add", &addr, "dev", &peer],
        ));
        run(cmd("ip", &["-n", &upstream, "link", "set", &peer, "up"]));
    }

    let conns = sb.dir.join("connections");
    fs::create_dir(&conns).unwrap();
    fs::set_permissions(&conns, fs::Permissions::from_mode(0o700)).unwrap();
    write_private(
        &conns.join("eth0.nmconnection"),
        &keyfile(
            "uplink eth0",
            UUID_ETH0,
            "eth0",
            "10.71.1.2/24",
            "10.71.1.1",
            "route-metric=100",
        ),
    );
    write_private(
        &conns.join("wlan0.nmconnection"),
        &keyfile(
            NASTY_ID,
            UUID_WLAN0,
            "wlan0",
            "10.71.2.2/24",
            "10.71.2.1",
            "route-metric=600\nroute1=192.0.2.0/24,10.71.2.1\ndns=192.0.2.53;192.0.2.54;",
        )
        // connection.metered yes: NetworkManager's device says Metered = yes.
        .replace("autoconnect=true\n", "autoconnect=true\nmetered=1\n"),
    );
    // Has a gateway, but never-default: a LAN, not an uplink.
    write_private(
        &conns.join("eth2.nmconnection"),
        &keyfile(
            "lan eth2",
            UUID_ETH2,
            "eth2",
            "10.71.3.2/24",
            "10.71.3.1",
            "never-default=true",
        ),
    );
    fs::write(
        sb.dir.join("NetworkManager.conf"),
        format!(
            "[main]\nplugins=keyfile\ndhcp=internal\ndns=none\nrc-manager=unmanaged\n\
             [keyfile]\npath={}\nunmanaged-devices=none\n\
             [device]\nmatch-device=*\nmanaged=1\n[logging]\nlevel=INFO\n",
            conns.display()
        ),
    )
    .unwrap();
    let script = sb.dir.join("start-nm.sh");
    fs::write(&script, NM_SCRIPT).unwrap();

    let log = fs::File::create(sb.dir.join("nm.log")).unwrap();
    sb.nm = Some(
        Command::new("ip")
            .args(["netns", "exec", &host, "unshare", "-m", "sh"])
            .arg(&script)
            .arg(&sb.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start NetworkManager"),
    );
    // `ip netns exec`, `unshare` and the script all exec, so the child becomes
    // NetworkManager; only then are its namespaces the ones to enter.
    let comm = format!("/proc/{}/comm", sb.nm_pid());
    wait_for("NetworkManager to start", || {
        if let Ok(Some(status)) = sb.nm.as_mut().unwrap().try_wait() {
            panic!("NetworkManager exited early ({status})");
        }
        (fs::read_to_string(&comm).ok()?.trim() == "NetworkManager").then_some(())
    });
    wait_for("eth0, wlan0 and eth2 to be connected", || {
        let states = device_states(&sb);
        ["eth0", "wlan0", "eth2"]
            .iter()
            .all(|d| states.iter().any(|(dev, st)| dev == d && st == "connected"))
            .then_some(())
    });

    // Both uplinks, exactly; the never-default LAN and loopback are not uplinks.
    assert_eq!(
        uplinks(&sb, &exe),
        json!([expected_eth0(), expected_wlan0()])
    );

    let out = read_nm(&sb, &exe, &["connectivity"]);
    assert!(out.status.success());
    let connectivity: Value = serde_json::from_slice(&out.stdout).unwrap();
    let map = connectivity.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["eth0", "eth2", "wlan0"], "{connectivity}");
    assert!(map.values().all(|v| v.as_u64().is_some_and(|c| c <= 4)));

    // Taking one connection down (by its hostile name, passed as one argument) removes
    // exactly that uplink.
    run(sb.in_nm("nmcli", &["connection", "down", "id", NASTY_ID]));
    let after = wait_for("wlan0 to stop being an uplink", || {
        let now = uplinks(&sb, &exe);
        (now.as_array()?.len() == 1).then_some(now)
    });
    assert_eq!(after, json!([expected_eth0()]));

    // With NetworkManager gone (the bus still running), the error says so, exit code 3.
    let dbus_pid = netns_pids(&host)
        .into_iter()
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "dbus-daemon")
        })
        .expect("our dbus-daemon runs in the host namespace");
    let mut nm = sb.nm.take().unwrap();
    run(cmd("kill", &["-s", "TERM", &nm.id().to_string()]));
    nm.wait().unwrap();
    let out = Command::new("nsenter")
        .args(["-t", &dbus_pid, "-m", "-n"])
        .arg(&exe)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("NetworkManager is not running"), "{stderr}");
}
