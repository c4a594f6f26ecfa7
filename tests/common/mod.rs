//! Shared harness for the end-to-end tests: a sandbox (tests/sandbox/sandbox.sh) with a
//! real NetworkManager, real nm-dispatcher and the freshly built nm-multiwan, in network
//! namespaces. Everything is observed from outside: traffic and kernel state.
#![allow(dead_code)]

pub mod daemon;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SERVER: &str = "198.51.100.10";
/// The internet server's IPv6 address (sandboxes created with `ipv6: true`).
pub const SERVER6: &str = "2001:db8:100::10";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sandbox_script() -> PathBuf {
    repo().join("tests/sandbox/sandbox.sh")
}

/// The binary under test: this build, or `NMMW_BINARY` (another build, e.g. to
/// measure what an earlier version did in the same test).
pub fn binary() -> PathBuf {
    std::env::var_os("NMMW_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nm-multiwan")))
}

/// What a root-only test says when run without root: it fails, never passes silently.
pub const NEEDS_ROOT: &str = "needs root: run sudo tests/run.sh (CI runs these tests as root)";

/// End-to-end tests need root; CI runs as root, so there they always run.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test (with [`NEEDS_ROOT`]) unless it runs as root.
pub fn require_root() {
    assert!(is_root(), "{NEEDS_ROOT}");
}

#[macro_export]
macro_rules! require_root {
    () => {
        common::require_root()
    };
}

/// A copy of the binary any user may run, removed on drop: the checkout may sit in a
/// home directory other users cannot enter (Debian's default mode is 0700), so the
/// build's own path is no good for a test that runs it as `nobody`.
pub struct SharedBinary {
    dir: PathBuf,
    pub path: PathBuf,
}

impl SharedBinary {
    pub fn new() -> SharedBinary {
        use std::os::unix::fs::PermissionsExt;
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nmmw-bin-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("nm-multiwan");
        std::fs::copy(binary(), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        SharedBinary { dir, path }
    }
}

impl Drop for SharedBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "{args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The firewall backend a test runs on. End-to-end tests run on both: a test is written
/// as `fn name(fw: Fw)` and listed in its file's [`on_both_backends!`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fw {
    Nftables,
    Iptables,
}

impl Fw {
    pub fn name(self) -> &'static str {
        match self {
            Fw::Nftables => "nftables",
            Fw::Iptables => "iptables",
        }
    }
}

/// Generates, for each listed `fn name(fw: Fw)`, the tests `nftables::name` and
/// `iptables::name`: one body, both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod nftables {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::Fw::Nftables)
                }
            )*
        }
        mod iptables {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::Fw::Iptables)
                }
            )*
        }
    };
}

pub struct Options<'a> {
    /// The firewall backend (`firewall = ...` is put first in the sandbox's config).
    pub firewall: Fw,
    pub dispatcher: bool,
    pub config: Option<&'a str>,
    pub rate: Option<&'a str>,
    /// Load dbus/net.nmmultiwan.Daemon1.conf into the sandbox's private bus.
    pub dbus_policy: bool,
    /// Dual-stack sandbox (`SB_IPV6=1`); IPv4 only otherwise.
    pub ipv6: bool,
    /// Cap each address instead of each port (`SB_RATE_PER_ADDRESS`).
    pub rate_per_address: Option<&'a str>,
    /// Connections autoconnect (`SB_AUTOCONNECT=1`); `create` waits until they are up.
    pub autoconnect: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            firewall: Fw::Nftables,
            dispatcher: true,
            config: None,
            rate: None,
            dbus_policy: false,
            ipv6: false,
            rate_per_address: None,
            autoconnect: false,
        }
    }
}

/// A sandbox, destroyed on drop (also when the test panics).
pub struct Sandbox {
    pub name: String,
    pub work: PathBuf,
}

/// `n` in base 36 (digits, then lower-case letters).
fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).expect("a digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// A sandbox name no other sandbox has: the tag, this process's id and a counter,
/// e.g. `dmnf_kx3_0` (sandbox names are at most 16 letters, digits and `_`). Unique
/// among live processes; a dead one's sandboxes are reaped before ours are created.
fn unique_name(tag: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!(
        "{tag}_{}_{}",
        base36(u64::from(std::process::id())),
        base36(n)
    );
    assert!(
        name.len() <= 16,
        "sandbox tag {tag:?} too long for {name:?}"
    );
    name
}

/// Destroys, once per test process, the sandboxes whose owner is gone: those of a test
/// run that was killed (a panicking test destroys its own). Other runs' live ones stay.
fn reap_stale_sandboxes() {
    static REAPED: std::sync::Once = std::sync::Once::new();
    REAPED.call_once(|| {
        let o = Command::new(sandbox_script())
            .arg("reap")
            .stdin(Stdio::null())
            .output()
            .expect("run sandbox.sh reap");
        eprint!("{}", String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{}", describe(&["reap"], &o));
    });
}

impl Sandbox {
    pub fn create(tag: &str, specs: &[&str], opts: Options) -> Sandbox {
        reap_stale_sandboxes();
        let name = unique_name(tag);
        let work = PathBuf::from(format!("/tmp/nm-multiwan-sandbox/{name}"));
        let mut cmd = Command::new(sandbox_script());
        cmd.arg("create").arg(&name).args(specs);
        cmd.env("SB_BINARY", binary());
        cmd.env("SB_QUIET", "1");
        // A kept sandbox (for debugging) has no owner: nothing reaps it.
        if std::env::var_os("SB_KEEP").is_none() {
            cmd.env("SB_OWNER", std::process::id().to_string());
        }
        if opts.dispatcher {
            cmd.env("SB_DISPATCHER", repo().join("dispatcher.d/90-nm-multiwan"));
        }
        // The backend is chosen first, whatever else the test's config says.
        let config = format!(
            "firewall = \"{}\"\n{}",
            opts.firewall.name(),
            opts.config.unwrap_or("")
        );
        let path = std::env::temp_dir().join(format!("{name}-config.toml"));
        std::fs::write(&path, config).unwrap();
        cmd.env("SB_CONFIG", &path);
        let config_file = Some(path);
        if let Some(r) = opts.rate {
            cmd.env("SB_RATE", r);
        }
        if opts.dbus_policy {
            cmd.env(
                "SB_DBUS_POLICY",
                repo().join("dbus/net.nmmultiwan.Daemon1.conf"),
            );
        }
        if opts.ipv6 {
            cmd.env("SB_IPV6", "1");
        }
        if let Some(r) = opts.rate_per_address {
            cmd.env("SB_RATE_PER_ADDRESS", r);
        }
        if opts.autoconnect {
            cmd.env("SB_AUTOCONNECT", "1");
        }
        let sb = Sandbox { name, work };
        let o = cmd.output().expect("run sandbox.sh");
        if let Some(path) = config_file {
            // sandbox.sh copied it.
            let _ = std::fs::remove_file(path);
        }
        assert!(o.status.success(), "{}", describe(&["create"], &o));
        sb
    }

    /// Creates the sandbox and brings every uplink's connection (`up-IFACE`) up, in
    /// SPEC order, waiting each time for the dispatcher.
    pub fn create_up(tag: &str, specs: &[&str], opts: Options) -> Sandbox {
        let sb = Sandbox::create(tag, specs, opts);
        for spec in specs {
            let iface = spec.split(':').next().expect("IFACE:...");
            sb.up(&format!("up-{iface}"));
        }
        sb
    }

    /// Runs a command in the host (NetworkManager's mount and network namespace).
    pub fn host(&self, args: &[&str]) -> Output {
        Command::new(sandbox_script())
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("sandbox exec")
    }

    /// Like `host`, but the command must succeed; returns stdout.
    pub fn host_ok(&self, args: &[&str]) -> String {
        let o = self.host(args);
        assert!(o.status.success(), "{}", describe(args, &o));
        text(&o)
    }

    /// Runs a command in namespace SB-NAME (inet, isp1, campus, host).
    pub fn ns(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(sandbox_script())
            .arg("exec-ns")
            .arg(&self.name)
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("sandbox exec-ns")
    }

    pub fn ns_ok(&self, ns: &str, args: &[&str]) -> String {
        let o = self.ns(ns, args);
        assert!(o.status.success(), "{}", describe(args, &o));
        text(&o)
    }

    /// `nmcli con up` and wait until the dispatcher has run.
    pub fn up(&self, conn: &str) {
        let o = Command::new(sandbox_script())
            .args(["wait-up", &self.name, conn, "30"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", describe(&["wait-up", conn], &o));
    }

    pub fn down(&self, conn: &str) {
        let o = Command::new(sandbox_script())
            .args(["wait-down", &self.name, conn, "30"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", describe(&["wait-down", conn], &o));
    }

    /// The tool under test, run in the host like the dispatcher runs it.
    pub fn nmmw(&self, args: &[&str]) -> Output {
        let mut full = vec!["/usr/bin/nm-multiwan"];
        full.extend_from_slice(args);
        self.host(&full)
    }

    pub fn client(&self) -> String {
        repo()
            .join("tests/sandbox/client.py")
            .to_string_lossy()
            .into_owned()
    }

    /// Makes `count` new connections from the host to `host:port`; returns the address
    /// each one was seen from (IPv6 ones in their short form), or "FAIL ...".
    pub fn connections(&self, count: usize, host: &str, port: u16) -> Vec<String> {
        let out = self.host_ok(&[
            "python3",
            &self.client(),
            "which",
            &count.to_string(),
            host,
            &port.to_string(),
        ]);
        out.lines().map(normalise_addr).collect()
    }

    /// New connections to the internet server over IPv6: how many each ISP carried.
    pub fn spread6(&self, count: usize) -> BTreeMap<String, usize> {
        tally(&self.connections(count, SERVER6, 7000))
    }

    /// New connections to the internet server: how many each ISP address carried.
    pub fn spread(&self, count: usize) -> BTreeMap<String, usize> {
        tally(&self.connections(count, SERVER, 7000))
    }

    /// Kernel state relevant to us, normalised (no counters or timestamps).
    pub fn snapshot(&self) -> String {
        self.snapshot_filtered(|_| true)
    }

    /// Like `snapshot`, but only the routes in our tables: NetworkManager renumbers its
    /// own routes' metrics when connections cycle, which is none of our business.
    pub fn snapshot_ours(&self) -> String {
        self.snapshot_filtered(|route| route.contains(" table 61"))
    }

    fn snapshot_filtered(&self, keep_route: impl Fn(&str) -> bool) -> String {
        let mut s = self.family_state("-4", "iptables-save", keep_route);
        s += &self.nft_ruleset();
        s += &self.host_ok(&[
            "sh",
            "-c",
            "for f in /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/conf/*/src_valid_mark /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce; do echo \"$f $(cat $f)\"; done",
        ]);
        s
    }

    /// The whole nf_tables ruleset (iptables-nft's tables included), counters left
    /// out.
    pub fn nft_ruleset(&self) -> String {
        let mut out = String::new();
        for line in self.host_ok(&["nft", "list", "ruleset"]).lines() {
            let line = match line.find("counter packets") {
                Some(i) => {
                    let rest = &line[i..];
                    // "counter packets N bytes M" -> "counter"
                    let after = rest
                        .split_whitespace()
                        .skip(5)
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!("{}counter {after}", &line[..i])
                }
                None => line.to_string(),
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Everything our firewall shows, whichever backend: our iptables chains (both
    /// families) and our nftables table.
    pub fn firewall_text(&self) -> String {
        let mut s = String::new();
        for save in ["iptables-save", "ip6tables-save"] {
            if let Ok(o) = std::str::from_utf8(&self.host(&[save]).stdout) {
                s += o;
            }
        }
        let o = self.host(&["nft", "list", "table", "inet", "nm-multiwan"]);
        if o.status.success() {
            s += &text(&o);
        }
        s
    }

    /// The marks the IPv4 TCP round gives new connections, whichever backend holds it:
    /// the uplinks in the balance.
    pub fn balanced_marks(&self) -> std::collections::BTreeSet<String> {
        let mut marks = std::collections::BTreeSet::new();
        for l in text(&self.host(&["iptables-save", "-t", "mangle"])).lines() {
            if l.starts_with("-A nm-multiwan-tcp")
                && l.contains("-j MARK")
                && let Some(m) = l.split("--set-xmark ").nth(1)
            {
                marks.insert(m.split('/').next().unwrap_or("").to_string());
            }
        }
        let o = self.host(&["nft", "list", "map", "inet", "nm-multiwan", "round4_tcp"]);
        if o.status.success() {
            for chain in text(&o).split("goto to4_").skip(1) {
                let hex: String = chain
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                if let Ok(m) = u32::from_str_radix(&hex, 16) {
                    marks.insert(format!("{m:#x}"));
                }
            }
        }
        marks
    }

    /// IPv6 state relevant to us, normalised: every IPv6 rule, the routes in our tables,
    /// `ip6tables-save` and the IPv6 netfilter tables that exist (we may have created
    /// some).
    /// NetworkManager's own IPv6 routes carry expiry timers: not ours, not compared.
    pub fn snapshot6(&self) -> String {
        let mut s = self.family_state("-6", "ip6tables-save", |r| r.contains(" table 61"));
        for table in self
            .host_ok(&["nft", "list", "tables"])
            .lines()
            .filter(|t| t.starts_with("table ip6 "))
        {
            s += table;
            s.push('\n');
        }
        s
    }

    /// One family's rules (sorted), the routes `keep_route` keeps, and its ruleset
    /// without counters.
    fn family_state(&self, family: &str, save: &str, keep_route: impl Fn(&str) -> bool) -> String {
        let mut s = String::new();
        // Rules of one priority are listed in insertion order, which carries no meaning
        // for ours (their marks are disjoint).
        let mut rules: Vec<String> = self
            .host_ok(&["ip", family, "rule", "show"])
            .lines()
            .map(str::to_string)
            .collect();
        rules.sort();
        s += &rules.join("\n");
        s.push('\n');
        for route in self
            .host_ok(&["ip", family, "route", "show", "table", "all"])
            .lines()
            .filter(|r| keep_route(r))
        {
            s += route;
            s.push('\n');
        }
        for line in self.host_ok(&[save]).lines() {
            if line.starts_with('#') {
                continue;
            }
            // Chain policy lines carry counters.
            let line = match line.find(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            s += line;
            s.push('\n');
        }
        s
    }

    /// Number of IPv6 `ip rule`s pointing at one of our tables (6101..).
    pub fn our_table_rules6(&self) -> usize {
        self.host_ok(&["ip", "-6", "rule", "show"])
            .lines()
            .filter(|l| l.contains("lookup 61"))
            .count()
    }

    /// The global IPv6 address the host has on `iface` (the first one listed).
    pub fn addr6(&self, iface: &str) -> String {
        let out = self.host_ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", iface, "scope", "global",
        ]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no global IPv6 address on {iface}: {out}"))
            .to_string()
    }

    /// The link-local address of `iface` in namespace SB-`ns`.
    pub fn link_local(&self, ns: &str, iface: &str) -> String {
        let out = self.ns_ok(
            ns,
            &[
                "ip", "-6", "-o", "addr", "show", "dev", iface, "scope", "link",
            ],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no link-local address on {iface} in {ns}: {out}"))
            .to_string()
    }

    /// Number of `ip rule`s pointing at one of our tables (6101..).
    pub fn our_table_rules(&self) -> usize {
        self.host_ok(&["ip", "-4", "rule", "show"])
            .lines()
            .filter(|l| l.contains("lookup 61"))
            .count()
    }

    /// Polls until `f` holds, for at most `secs`.
    pub fn wait_until(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {secs}s waiting for {what}");
    }

    /// The address the host got on `iface`.
    pub fn addr(&self, iface: &str) -> String {
        let out = self.host_ok(&["ip", "-4", "-o", "addr", "show", "dev", iface]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no address on {iface}: {out}"))
            .to_string()
    }

    pub fn work_file(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("SB_KEEP").is_some() {
            eprintln!("keeping sandbox {}", self.name);
            return;
        }
        let _ = Command::new(sandbox_script())
            .args(["destroy", &self.name])
            .output();
    }
}

/// An address as a server reported it, in the short form: socat writes IPv6 peers as
/// `[2001:0db8:...]`. Anything else ("FAIL ...", IPv4) is returned as it is.
pub fn normalise_addr(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<std::net::Ipv6Addr>().ok())
        .map_or_else(|| t.to_string(), |a| a.to_string())
}

pub fn tally(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.clone()).or_insert(0) += 1;
    }
    m
}

/// The address the internet server sees for ISP k (the ISP masquerades).
pub fn isp_addr(k: u32) -> String {
    format!("203.0.113.{}", 4 * k + 2)
}

/// The IPv6 address the internet server sees for ISP k (NAT66 at the ISP); 9 is the
/// campus network.
pub fn isp_addr6(k: u32) -> String {
    format!("2001:db8:ff:{k}::2")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// `nm-multiwan daemon` running in the sandbox's host; killed on drop. On a failing
/// test its log is printed.
pub struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(sb: &Sandbox, extra: &[&str]) -> Daemon {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = sb.work_file(&format!("daemon-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(sandbox_script());
        cmd.args(["exec", &sb.name, "/usr/bin/nm-multiwan", "-v", "daemon"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("start the daemon");
        let d = Daemon { child, log };
        // Ready once it has reconciled and owns its bus name (or said it cannot).
        sb.wait_until(15, "the daemon's first reconcile", || {
            d.log_text().contains("reconciled") || d.log_text().contains("in sync")
        });
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill {sig}");
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait (at most 10 s) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon ignores SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- daemon log (last 80 lines) ---");
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// One long-lived connection of a [`Hold`]: the ISP address the server saw, and
/// whether it kept working to the end.
#[derive(Debug, Clone)]
pub struct Held {
    pub isp: String,
    pub ok: bool,
    pub failed_at: Option<f64>,
    /// The longest an echo took to come back, in seconds.
    pub max_wait: f64,
}

/// `client.py hold`: COUNT long-lived connections to an echo server, exercised every
/// 0.2 s for SECONDS, running in the background while the test does something else.
pub struct Hold {
    child: std::process::Child,
}

impl Hold {
    /// Starts COUNT connections to `host:port` (IPv4 or IPv6 echo server on 7002).
    pub fn start(sb: &Sandbox, count: usize, seconds: f64, host: &str) -> Hold {
        let child = Command::new(sandbox_script())
            .args(["exec", &sb.name, "python3", &sb.client(), "hold"])
            .arg(count.to_string())
            .arg(seconds.to_string())
            .args([host, "7002"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the hold client");
        Hold { child }
    }

    /// Waits for the end; every connection's fate.
    pub fn finish(self) -> Vec<Held> {
        let out = self.child.wait_with_output().expect("hold client");
        let report = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap_or_else(|e| {
            panic!(
                "hold output {report:?}: {e}; {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        v.as_array()
            .expect("a list")
            .iter()
            .map(|c| Held {
                isp: normalise_addr(c["isp"].as_str().unwrap_or("")),
                ok: c["ok"] == true,
                failed_at: c["failed_at"].as_f64(),
                max_wait: c["max_wait"].as_f64().unwrap_or(0.0),
            })
            .collect()
    }
}

/// A server in the sandbox's host answering each connection with the peer address
/// (`peer_server.py`): on `addr` ("0.0.0.0" for IPv4, "::" for IPv6 only); killed on
/// drop.
pub struct Listener(std::process::Child);

impl Listener {
    pub fn start(sb: &Sandbox, addr: &str, port: u16) -> Listener {
        let child = Command::new(sandbox_script())
            .args(["exec-ns", &sb.name, "host", "python3"])
            .arg(repo().join("tests/sandbox/peer_server.py"))
            .arg(addr)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("peer_server.py");
        let family = if addr.contains(':') { "-6" } else { "-4" };
        sb.wait_until(10, "host listener", || {
            text(&sb.ns("host", &["ss", family, "-ltn"])).contains(&format!(":{port} "))
        });
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
