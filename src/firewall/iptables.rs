//! iptables backend: renders the plan into our own chains and installs them with one
//! `iptables-restore --noflush` batch per run, which the kernel commits atomically.
//! The same chain names serve IPv6 through `ip6tables-restore`, in IPv6's own tables.
//!
//! We run `iptables-save`/`iptables-restore` ourselves rather than through the
//! `iptables` crate: the crate spawns one process per rule and has no batch, so it
//! could neither swap a chain atomically nor meet the no-op reconcile budget.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use tracing::debug;

use super::{Counters, Firewall};
use crate::error::{Error, Result};
use crate::model::Family;
use crate::plan::FirewallPlan;

pub const OUT_CHAIN: &str = "nm-multiwan-out";
pub const PRE_CHAIN: &str = "nm-multiwan-pre";
pub const NAT_CHAIN: &str = "nm-multiwan-nat";

/// (table, built-in chain, our chain) for every jump we own.
const JUMPS: [(&str, &str, &str); 3] = [
    ("mangle", "OUTPUT", OUT_CHAIN),
    ("mangle", "PREROUTING", PRE_CHAIN),
    ("nat", "POSTROUTING", NAT_CHAIN),
];

/// One value per run (reconcile, flush, status): it reads the ruleset once, keeps that
/// reading until it writes, and reads again after.
pub struct Iptables {
    family: Family,
    save: String,
    restore: String,
    snapshot: Mutex<Snapshot>,
}

/// What `iptables-save` (without counters) told us in this run.
#[derive(Default)]
enum Snapshot {
    #[default]
    None,
    /// Started by [`Firewall::prefetch`], still running alongside our other reads.
    Running(Child),
    Ready(Installed),
}

/// The IPv4 backend.
impl Default for Iptables {
    fn default() -> Self {
        Iptables::new(Family::V4)
    }
}

impl Iptables {
    /// The backend of one family: `iptables-*` or `ip6tables-*`.
    pub fn new(family: Family) -> Self {
        let prefix = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        Iptables {
            family,
            save: find_program(&format!("{prefix}-save")),
            restore: find_program(&format!("{prefix}-restore")),
            snapshot: Mutex::new(Snapshot::None),
        }
    }
}

impl Drop for Iptables {
    fn drop(&mut self) {
        // A prefetch nobody collected (the run failed early): reap it, no zombie.
        let snap = self.snapshot.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Snapshot::Running(mut child) = std::mem::take(snap) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Full path of a system tool. nm-dispatcher runs its scripts with no `PATH` at all, so
/// the usual system directories are searched after whatever `PATH` there is.
pub fn find_program(name: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

/// The rules of our chains, without the plan's fingerprint.
struct Rendered {
    mangle: Vec<String>,
    nat: Vec<String>,
}

fn render_rules(p: &FirewallPlan) -> Rendered {
    let m = p.mark_mask;
    let out = OUT_CHAIN;
    let pre = PRE_CHAIN;
    let mut mangle = vec![
        // A socket that marks its packets with our bits (the daemon's health probes,
        // SO_MARK = an uplink's mark) chose its uplink: remember it on the connection,
        // so that the replies get the mark back in PREROUTING and pass a strict
        // rp_filter (src_valid_mark) on an uplink that is not the main table's default.
        format!(
            "-A {out} -m mark ! --mark 0x0/{m:#x} -j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}"
        ),
        // A packet that already carries a mark was routed on purpose by whoever set
        // it (a socket's SO_MARK: VPN clients, our own health probes): leave it alone.
        format!("-A {out} -m mark ! --mark 0x0 -j RETURN"),
        format!("-A {out} -j CONNMARK --restore-mark --nfmask {m:#x} --ctmask {m:#x}"),
        format!("-A {out} -m mark ! --mark 0x0/{m:#x} -j RETURN"),
        // Connections older than our chains keep the route they started with.
        format!("-A {out} -m conntrack ! --ctstate NEW -j RETURN"),
    ];
    if p.family == Family::V6 {
        // New ICMPv6 is never balanced. Neighbour discovery, router advertisements and
        // MLD belong to their link (conntrack does not even track them, so the rule
        // above already returns them); echo requests take the main table's route.
        // Errors and echo replies of a connection we marked are RELATED/ESTABLISHED and
        // carry its mark from the restore above, so they follow it.
        mangle.push(format!("-A {out} -p ipv6-icmp -j RETURN"));
    }
    mangle.push(format!("-A {out} -m addrtype --dst-type LOCAL -j RETURN"));
    if p.family == Family::V4 {
        mangle.push(format!(
            "-A {out} -m addrtype --dst-type BROADCAST -j RETURN"
        ));
    }
    mangle.push(format!(
        "-A {out} -m addrtype --dst-type MULTICAST -j RETURN"
    ));
    for net in &p.exclude {
        mangle.push(format!("-A {out} -d {net} -j RETURN"));
    }
    for s in &p.slots {
        let nth = if s.every > 1 {
            format!(
                "-m statistic --mode nth --every {} --packet {} ",
                s.every, s.packet
            )
        } else {
            String::new()
        };
        mangle.push(format!(
            "-A {out} {nth}-j MARK --set-xmark {:#x}/{m:#x}",
            s.mark
        ));
    }
    mangle.push(format!(
        "-A {out} -m mark ! --mark 0x0/{m:#x} -j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}"
    ));

    mangle.push(format!(
        "-A {pre} -j CONNMARK --restore-mark --nfmask {m:#x} --ctmask {m:#x}"
    ));
    mangle.push(format!("-A {pre} -m mark ! --mark 0x0/{m:#x} -j RETURN"));
    if p.family == Family::V6 {
        // Link-local peers are on the link whatever the mark, and of ICMPv6 only echo
        // requests open anything worth answering through the uplink they came in on.
        mangle.push(format!("-A {pre} -s fe80::/10 -j RETURN"));
        mangle.push(format!(
            "-A {pre} -p ipv6-icmp -m icmp6 ! --icmpv6-type echo-request -j RETURN"
        ));
    }
    for (iface, mark) in &p.inbound {
        mangle.push(format!(
            "-A {pre} -i {iface} -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark {mark:#x}/{m:#x}"
        ));
    }
    mangle.push(format!(
        "-A {pre} -m mark ! --mark 0x0/{m:#x} -j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}"
    ));

    let nat = p
        .masquerade
        .iter()
        .map(|(iface, mark)| {
            format!("-A {NAT_CHAIN} -o {iface} -m mark --mark {mark:#x}/{m:#x} -j MASQUERADE")
        })
        .collect();
    Rendered { mangle, nat }
}

/// FNV-1a: a stable fingerprint of the rendered rules, kept in a comment rule so that a
/// no-op reconcile costs one `iptables-save` and no write.
fn fingerprint(r: &Rendered) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in r
        .mangle
        .iter()
        .chain(["*nat".to_string()].iter())
        .chain(&r.nat)
    {
        for b in line.bytes().chain([b'\n']) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn fingerprint_rule(fp: &str) -> String {
    format!("-A {OUT_CHAIN} -m comment --comment nm-multiwan:plan={fp}")
}

/// What `iptables-save` shows of ours.
#[derive(Debug, Default, Clone)]
struct Installed {
    /// table -> chains of ours that exist
    chains: Vec<(String, String)>,
    /// (table, builtin, ours) -> how many times the jump appears
    jumps: BTreeMap<(String, String, String), usize>,
    /// rules in our chains, in order, per chain
    rules: BTreeMap<String, Vec<String>>,
    /// counters of rules in our chains ([packets, bytes]) when saved with -c
    counters: BTreeMap<String, Vec<(u64, String)>>,
    /// every table listed, with how many rules and user-defined chains it holds
    tables: BTreeMap<String, (usize, usize)>,
}

fn is_ours(chain: &str) -> bool {
    chain == OUT_CHAIN || chain == PRE_CHAIN || chain == NAT_CHAIN
}

fn parse_save(text: &str) -> Installed {
    let mut inst = Installed::default();
    let mut table = String::new();
    for raw in text.lines() {
        let (packets, line) = match raw.strip_prefix('[') {
            Some(rest) => match rest.split_once("] ") {
                Some((c, l)) => (c.split(':').next().and_then(|p| p.parse().ok()), l),
                None => (None, raw),
            },
            None => (None, raw),
        };
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            inst.tables.entry(table.clone()).or_default();
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            // Built-in chains have a policy; user-defined ones show "-".
            if decl.split_whitespace().nth(1) == Some("-") {
                inst.tables.entry(table.clone()).or_default().1 += 1;
            }
            if is_ours(name) {
                inst.chains.push((table.clone(), name.to_string()));
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            inst.tables.entry(table.clone()).or_default().0 += 1;
            let chain = rule.split_whitespace().next().unwrap_or("");
            if is_ours(chain) {
                inst.rules
                    .entry(chain.to_string())
                    .or_default()
                    .push(line.to_string());
                inst.counters
                    .entry(chain.to_string())
                    .or_default()
                    .push((packets.unwrap_or(0), line.to_string()));
                continue;
            }
            for (t, builtin, ours) in JUMPS {
                if table == t && rule == format!("{builtin} -j {ours}") {
                    *inst
                        .jumps
                        .entry((t.into(), builtin.into(), ours.into()))
                        .or_default() += 1;
                }
            }
        }
    }
    inst
}

impl Iptables {
    fn save_command(&self, counters: bool) -> Command {
        let mut cmd = Command::new(&self.save);
        if counters {
            cmd.arg("-c");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The ruleset without counters: this run's snapshot, read now if not yet read.
    fn dump(&self) -> Result<Installed> {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let installed = match std::mem::take(&mut *snap) {
            Snapshot::Ready(inst) => inst,
            Snapshot::Running(child) => self.collect(child.wait_with_output())?,
            Snapshot::None => self.collect(self.save_command(false).output())?,
        };
        *snap = Snapshot::Ready(installed.clone());
        Ok(installed)
    }

    /// The ruleset with packet counters (for `status`); always read afresh.
    fn dump_counters(&self) -> Result<Installed> {
        self.collect(self.save_command(true).output())
    }

    fn collect(&self, out: std::io::Result<std::process::Output>) -> Result<Installed> {
        let out = out.map_err(|e| Error::Firewall(format!("cannot run {}: {e}", self.save)))?;
        if !out.status.success() {
            return Err(Error::Firewall(format!(
                "{} failed: {}",
                self.save,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(parse_save(&String::from_utf8_lossy(&out.stdout)))
    }

    fn restore(&self, batch: &str) -> Result<()> {
        debug!(batch, program = %self.restore, "restore --noflush");
        // Whatever happens next, the snapshot no longer describes the kernel.
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot::None;
        let mut child = Command::new(&self.restore)
            .args(["--noflush", "-w", "10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Firewall(format!("cannot run {}: {e}", self.restore)))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(batch.as_bytes())
            .map_err(|e| Error::Firewall(format!("writing to {}: {e}", self.restore)))?;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Firewall(format!("{}: {e}", self.restore)))?;
        if !out.status.success() {
            return Err(Error::Firewall(format!(
                "{} rejected our batch: {}",
                self.restore,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn full_batch(&self, p: &FirewallPlan, inst: &Installed) -> String {
        let r = render_rules(p);
        let fp = fingerprint(&r);
        let mut b = String::new();
        b.push_str("*mangle\n");
        b.push_str(&format!(":{OUT_CHAIN} - [0:0]\n:{PRE_CHAIN} - [0:0]\n"));
        b.push_str(&fingerprint_rule(&fp));
        b.push('\n');
        for l in &r.mangle {
            b.push_str(l);
            b.push('\n');
        }
        jump_lines(&mut b, "mangle", inst);
        b.push_str("COMMIT\n*nat\n");
        b.push_str(&format!(":{NAT_CHAIN} - [0:0]\n"));
        for l in &r.nat {
            b.push_str(l);
            b.push('\n');
        }
        jump_lines(&mut b, "nat", inst);
        b.push_str("COMMIT\n");
        b
    }
}

/// Exactly one jump to each of our chains, inserted at the top of the built-in chain
/// so that our mark is in place before any other rule routes on it.
fn jump_lines(b: &mut String, table: &str, inst: &Installed) {
    for (t, builtin, ours) in JUMPS.iter().filter(|(t, ..)| *t == table) {
        let n = inst
            .jumps
            .get(&(t.to_string(), builtin.to_string(), ours.to_string()))
            .copied()
            .unwrap_or(0);
        if n == 0 {
            b.push_str(&format!("-I {builtin} 1 -j {ours}\n"));
        }
        for _ in 1..n.max(1) {
            b.push_str(&format!("-D {builtin} -j {ours}\n"));
        }
    }
}

impl Firewall for Iptables {
    fn prefetch(&self) {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*snap, Snapshot::None) {
            // On failure to start, `dump` runs it again and reports the error.
            if let Ok(child) = self.save_command(false).spawn() {
                *snap = Snapshot::Running(child);
            }
        }
    }

    fn render(&self, p: &FirewallPlan) -> String {
        let r = render_rules(p);
        let mut s = String::from("*mangle\n");
        for (_, builtin, ours) in JUMPS.iter().filter(|(t, ..)| *t == "mangle") {
            s.push_str(&format!("-I {builtin} 1 -j {ours}\n"));
        }
        for l in &r.mangle {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("*nat\n");
        s.push_str(&format!("-I POSTROUTING 1 -j {NAT_CHAIN}\n"));
        for l in &r.nat {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    fn is_current(&self, p: &FirewallPlan) -> Result<bool> {
        let inst = self.dump()?;
        let r = render_rules(p);
        // iptables-save may quote the comment; compare on the token itself.
        let fp = format!("nm-multiwan:plan={}", fingerprint(&r));
        let jumps_ok = JUMPS.iter().all(|(t, b, o)| {
            inst.jumps
                .get(&(t.to_string(), b.to_string(), o.to_string()))
                .copied()
                == Some(1)
        });
        let count = |c: &str| inst.rules.get(c).map_or(0, Vec::len);
        let out_ok = inst
            .rules
            .get(OUT_CHAIN)
            .and_then(|rules| rules.first())
            .is_some_and(|first| {
                first.starts_with(&format!("-A {OUT_CHAIN} -m comment --comment "))
                    && first.trim_end_matches('"').ends_with(&fp)
            });
        // The fingerprint covers the contents; the counts catch a rule added or
        // deleted by hand.
        let pre_rules = r.mangle.iter().filter(|l| l.contains(PRE_CHAIN)).count();
        let out_rules = r.mangle.len() - pre_rules + 1;
        Ok(jumps_ok
            && out_ok
            && count(OUT_CHAIN) == out_rules
            && count(PRE_CHAIN) == pre_rules
            && count(NAT_CHAIN) == r.nat.len())
    }

    fn apply(&self, p: &FirewallPlan) -> Result<Vec<String>> {
        let inst = self.dump()?;
        self.restore(&self.full_batch(p, &inst))?;
        Ok(["mangle", "nat"]
            .into_iter()
            .filter(|t| !inst.tables.contains_key(*t))
            .map(str::to_string)
            .collect())
    }

    fn flush(&self, created: &[String]) -> Result<()> {
        self.flush_chains()?;
        // With iptables-nft, a table exists once anything used it. Remove the ones we
        // brought into existence, if they are still empty, so the machine is exactly
        // as before.
        if created.is_empty() {
            return Ok(());
        }
        let inst = self.dump()?;
        let nft = find_program("nft");
        let nft_family = match self.family {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        for table in created {
            let empty = inst
                .tables
                .get(table)
                .is_some_and(|&(rules, chains)| rules == 0 && chains == 0);
            if !empty {
                continue;
            }
            let out = Command::new(&nft)
                .args(["delete", "table", nft_family, table])
                .output();
            match out {
                Ok(o) if o.status.success() => debug!(table, "removed the empty table we created"),
                Ok(o) => {
                    debug!(table, err = %String::from_utf8_lossy(&o.stderr).trim(), "empty table left in place")
                }
                Err(e) => debug!(table, error = %e, "nft not available; empty table left in place"),
            }
        }
        Ok(())
    }

    fn installed(&self) -> Result<bool> {
        let inst = self.dump()?;
        Ok(!inst.chains.is_empty() || !inst.jumps.is_empty())
    }

    fn installed_marks(&self) -> Result<BTreeMap<String, u32>> {
        let inst = self.dump()?;
        let mut out = BTreeMap::new();
        for rule in inst.rules.get(NAT_CHAIN).into_iter().flatten() {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let iface = words
                .iter()
                .position(|w| *w == "-o")
                .and_then(|i| words.get(i + 1));
            let mark = words
                .iter()
                .position(|w| *w == "--mark")
                .and_then(|i| words.get(i + 1))
                .and_then(|m| crate::config::parse_u32(m.split('/').next().unwrap_or("")));
            if let (Some(i), Some(m)) = (iface, mark) {
                out.insert(i.to_string(), m);
            }
        }
        Ok(out)
    }

    fn counters(&self) -> Result<BTreeMap<u32, Counters>> {
        let inst = self.dump_counters()?;
        let mut out: BTreeMap<u32, Counters> = BTreeMap::new();
        for (packets, rule) in inst.counters.get(OUT_CHAIN).into_iter().flatten() {
            if let Some(rest) = rule.split("--set-xmark ").nth(1) {
                let mark = rest.split('/').next().and_then(crate::config::parse_u32);
                if let Some(mark) = mark {
                    out.entry(mark).or_default().new_connections += packets;
                }
            }
        }
        Ok(out)
    }
}

impl Iptables {
    fn flush_chains(&self) -> Result<()> {
        let inst = self.dump()?;
        let mut b = String::new();
        for table in ["mangle", "nat"] {
            let mut body = String::new();
            for ((t, builtin, ours), n) in &inst.jumps {
                if t == table {
                    for _ in 0..*n {
                        body.push_str(&format!("-D {builtin} -j {ours}\n"));
                    }
                }
            }
            for (t, chain) in &inst.chains {
                if t == table {
                    body.push_str(&format!("-F {chain}\n-X {chain}\n"));
                }
            }
            if !body.is_empty() {
                b.push_str(&format!("*{table}\n{body}COMMIT\n"));
            }
        }
        if b.is_empty() {
            return Ok(());
        }
        self.restore(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{Ip4Uplink, Ip6Uplink, Ipv4Net, Ipv6Net, Uplink};
    use crate::plan::{Facts, Plan, plan};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The fingerprint of `two_uplinks()`'s IPv4 rules: adding IPv6 must not change it
    /// (a changed fingerprint rebuilds every machine's chains on upgrade).
    const FINGERPRINT_V4: &str = "b675ff6c590db000";

    /// eth0 and wlan0, dual-stack.
    fn two_uplinks_plan() -> Plan {
        let up = |iface: &str, n: u8| Uplink {
            ipv6: Some(Ip6Uplink {
                address: Ipv6Addr::new(0x2001, 0xdb8, n.into(), 0, 0, 0, 0, 2),
                subnet: Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, n.into(), 0, 0, 0, 0, 0), 64),
                gateway: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                metric: 100,
                local_routes: vec![],
            }),
            ..Uplink::v4(
                iface,
                iface,
                iface,
                Ip4Uplink {
                    address: Ipv4Addr::new(10, 0, n, 2),
                    subnet: Ipv4Net::new(Ipv4Addr::new(10, 0, n, 0), 24),
                    gateway: Some(Ipv4Addr::new(10, 0, n, 1)),
                    metric: 100,
                    local_routes: vec![],
                },
            )
        };
        plan(
            &Config::default(),
            &Facts {
                uplinks: vec![up("eth0", 1), up("wlan0", 2)],
                ..Default::default()
            },
        )
    }

    fn two_uplinks() -> FirewallPlan {
        two_uplinks_plan().firewall
    }

    #[test]
    fn renders_nth_round_and_masquerade() {
        let text = Iptables::default().render(&two_uplinks());
        assert!(text.contains(
            "-A nm-multiwan-out -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000"
        ));
        assert!(text.contains(
            "-A nm-multiwan-nat -o wlan0 -m mark --mark 0x2000000/0x3f000000 -j MASQUERADE"
        ));
        assert!(text.contains("-A nm-multiwan-out -d 10.0.1.0/24 -j RETURN"));
        assert!(text.contains("-i eth0 -m conntrack --ctstate NEW"));
    }

    /// The IPv4 chains read exactly as they did before IPv6 balancing existed, so an
    /// upgrade finds them current and rebuilds nothing.
    #[test]
    fn ipv4_rendering_is_unchanged() {
        let want = "\
*mangle
-I OUTPUT 1 -j nm-multiwan-out
-I PREROUTING 1 -j nm-multiwan-pre
-A nm-multiwan-out -m mark ! --mark 0x0/0x3f000000 -j CONNMARK --save-mark --nfmask 0x3f000000 --ctmask 0x3f000000
-A nm-multiwan-out -m mark ! --mark 0x0 -j RETURN
-A nm-multiwan-out -j CONNMARK --restore-mark --nfmask 0x3f000000 --ctmask 0x3f000000
-A nm-multiwan-out -m mark ! --mark 0x0/0x3f000000 -j RETURN
-A nm-multiwan-out -m conntrack ! --ctstate NEW -j RETURN
-A nm-multiwan-out -m addrtype --dst-type LOCAL -j RETURN
-A nm-multiwan-out -m addrtype --dst-type BROADCAST -j RETURN
-A nm-multiwan-out -m addrtype --dst-type MULTICAST -j RETURN
-A nm-multiwan-out -d 10.0.1.0/24 -j RETURN
-A nm-multiwan-out -d 10.0.2.0/24 -j RETURN
-A nm-multiwan-out -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000
-A nm-multiwan-out -m statistic --mode nth --every 2 --packet 1 -j MARK --set-xmark 0x2000000/0x3f000000
-A nm-multiwan-out -m mark ! --mark 0x0/0x3f000000 -j CONNMARK --save-mark --nfmask 0x3f000000 --ctmask 0x3f000000
-A nm-multiwan-pre -j CONNMARK --restore-mark --nfmask 0x3f000000 --ctmask 0x3f000000
-A nm-multiwan-pre -m mark ! --mark 0x0/0x3f000000 -j RETURN
-A nm-multiwan-pre -i eth0 -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark 0x21000000/0x3f000000
-A nm-multiwan-pre -i wlan0 -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark 0x22000000/0x3f000000
-A nm-multiwan-pre -m mark ! --mark 0x0/0x3f000000 -j CONNMARK --save-mark --nfmask 0x3f000000 --ctmask 0x3f000000
*nat
-I POSTROUTING 1 -j nm-multiwan-nat
-A nm-multiwan-nat -o eth0 -m mark --mark 0x1000000/0x3f000000 -j MASQUERADE
-A nm-multiwan-nat -o wlan0 -m mark --mark 0x2000000/0x3f000000 -j MASQUERADE
";
        assert_eq!(Iptables::default().render(&two_uplinks()), want);
        assert_eq!(fingerprint(&render_rules(&two_uplinks())), FINGERPRINT_V4);
    }

    /// IPv6: ICMPv6 never starts a balanced connection, link-local and multicast are
    /// never balanced, link-local peers never get an inbound mark, NAT66 per uplink.
    #[test]
    fn ipv6_chains() {
        let p6 = two_uplinks_plan()
            .firewall6
            .expect("two IPv6 uplinks: IPv6 on");
        assert_eq!(p6.family, Family::V6);
        let text = Iptables::new(Family::V6).render(&p6);
        let lines: Vec<&str> = text.lines().collect();
        let pos = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l:?} not in\n{text}"))
        };
        let icmp = pos("-A nm-multiwan-out -p ipv6-icmp -j RETURN");
        let first_slot = pos(
            "-A nm-multiwan-out -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000",
        );
        assert!(icmp < first_slot);
        for l in [
            "-A nm-multiwan-out -d fe80::/10 -j RETURN",
            "-A nm-multiwan-out -d ff00::/8 -j RETURN",
            "-A nm-multiwan-out -d 2001:db8:1::/64 -j RETURN",
            "-A nm-multiwan-out -d 2001:db8:2::/64 -j RETURN",
            "-A nm-multiwan-out -m addrtype --dst-type MULTICAST -j RETURN",
        ] {
            assert!(pos(l) < first_slot, "{l}");
        }
        let ll = pos("-A nm-multiwan-pre -s fe80::/10 -j RETURN");
        let echo =
            pos("-A nm-multiwan-pre -p ipv6-icmp -m icmp6 ! --icmpv6-type echo-request -j RETURN");
        let inbound = pos(
            "-A nm-multiwan-pre -i eth0 -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark 0x21000000/0x3f000000",
        );
        assert!(ll < inbound && echo < inbound);
        assert!(!text.contains("BROADCAST"));
        pos("-A nm-multiwan-nat -o wlan0 -m mark --mark 0x2000000/0x3f000000 -j MASQUERADE");
        assert_ne!(
            fingerprint(&render_rules(&p6)),
            fingerprint(&render_rules(&two_uplinks()))
        );
    }

    #[test]
    fn fingerprint_changes_with_plan() {
        let a = two_uplinks();
        let mut b = a.clone();
        b.slots.pop();
        assert_ne!(
            fingerprint(&render_rules(&a)),
            fingerprint(&render_rules(&b))
        );
        assert_eq!(
            fingerprint(&render_rules(&a)),
            fingerprint(&render_rules(&a.clone()))
        );
    }

    /// One `iptables-save` per run, however many questions the run asks, and a fresh
    /// one after every write.
    #[test]
    fn one_save_per_run_until_we_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("nmmw-ipt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let calls = dir.join("calls");
        let save = dir.join("fake-save");
        std::fs::write(
            &save,
            format!(
                "#!/bin/sh\necho save >> '{}'\nprintf '*nat\\n:nm-multiwan-nat - [0:0]\\n-A nm-multiwan-nat -o eth0 -m mark --mark 0x1000000/0x3f000000 -j MASQUERADE\\nCOMMIT\\n'\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&save, std::fs::Permissions::from_mode(0o755)).unwrap();
        let restore = dir.join("fake-restore");
        std::fs::write(&restore, "#!/bin/sh\ncat >/dev/null\n").unwrap();
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fw = Iptables {
            family: Family::V4,
            save: save.to_string_lossy().into_owned(),
            restore: restore.to_string_lossy().into_owned(),
            snapshot: Mutex::new(Snapshot::None),
        };
        let count = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        fw.prefetch();
        assert_eq!(fw.installed_marks().unwrap()["eth0"], 0x1000000);
        assert!(!fw.is_current(&two_uplinks()).unwrap());
        assert_eq!(count(), 1);
        fw.apply(&two_uplinks()).unwrap();
        assert_eq!(count(), 1, "apply used the run's snapshot");
        fw.installed_marks().unwrap();
        assert_eq!(count(), 2, "read again after writing");
        drop(fw);
        // A prefetch that is never collected is reaped on drop.
        let fw = Iptables {
            family: Family::V4,
            save: save.to_string_lossy().into_owned(),
            restore: restore.to_string_lossy().into_owned(),
            snapshot: Mutex::new(Snapshot::None),
        };
        fw.prefetch();
        drop(fw);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_save_output() {
        let save = "\
*mangle
:OUTPUT ACCEPT [0:0]
:nm-multiwan-out - [0:0]
-A OUTPUT -j nm-multiwan-out
-A OUTPUT -j nm-multiwan-out
-A OUTPUT -j other
[5:300] -A nm-multiwan-out -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000
COMMIT
*nat
:nm-multiwan-nat - [0:0]
-A nm-multiwan-nat -o eth0 -m mark --mark 0x1000000/0x3f000000 -j MASQUERADE
COMMIT
";
        let inst = parse_save(save);
        assert_eq!(
            inst.jumps[&("mangle".into(), "OUTPUT".into(), OUT_CHAIN.into())],
            2
        );
        assert_eq!(inst.chains.len(), 2);
        assert_eq!(inst.counters[OUT_CHAIN][0].0, 5);
        let mut b = String::new();
        jump_lines(&mut b, "mangle", &inst);
        assert_eq!(
            b,
            "-D OUTPUT -j nm-multiwan-out\n-I PREROUTING 1 -j nm-multiwan-pre\n"
        );
    }
}
