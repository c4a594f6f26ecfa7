//! The iptables backend: our own chains in the `mangle` and `nat` tables of iptables
//! (IPv4) and ip6tables (IPv6), installed with one `iptables-restore --noflush` batch per
//! family and run, which the kernel commits atomically. It serves machines whose firewall
//! runs on iptables-legacy, and anyone who asks for it (`firewall = "iptables"`).
//!
//! We run `iptables-save`/`iptables-restore` ourselves rather than through the
//! `iptables` crate: the crate spawns one process per rule and has no batch, so it
//! could neither swap a chain atomically nor keep a no-op reconcile cheap.
//!
//! Chains (the same names in both families):
//! - `nm-multiwan-out` (from mangle `OUTPUT`): restores a connection's mark, leaves
//!   marked and non-balanced traffic alone, sends each new connection to the round of its
//!   protocol, saves the mark;
//! - `nm-multiwan-tcp`, `-udp`, `-other`: one exact nth round each (`-m statistic --mode
//!   nth`, each rule counting every packet that reaches the chain);
//! - `nm-multiwan-pre` (from mangle `PREROUTING`): marks connections arriving on an
//!   uplink as inbound through it;
//! - `nm-multiwan-nat` (from nat `POSTROUTING`): MASQUERADE on the uplink a connection
//!   was sent out of.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use tracing::debug;

use super::{
    Action, Backend, Counters, Firewall, FirewallPlan, Matches, Protocol, RoundOf, StickyEntry,
};
use crate::config::policy::StickyBy;
use crate::error::{Error, Result};
use crate::model::Family;

pub const OUT_CHAIN: &str = "nm-multiwan-out";
pub const PRE_CHAIN: &str = "nm-multiwan-pre";
pub const NAT_CHAIN: &str = "nm-multiwan-nat";
/// The decision for a new connection to be balanced (rung 2's destinations, rungs 3 to
/// 6), shared by the machine's own connections (from the output chain) and those
/// arriving from a LAN (from the prerouting chain, through [`LAN_CHAIN`]).
pub const DECIDE_CHAIN: &str = "nm-multiwan-decide";
/// What arrives from a LAN and is not for the machine itself.
pub const LAN_CHAIN: &str = "nm-multiwan-lan";

/// Bumped whenever the rendering changes, so that an upgrade rebuilds the chains.
const RENDERING: u32 = 4;

/// (table, built-in chain, our chain) for every jump we own.
const JUMPS: [(&str, &str, &str); 3] = [
    ("mangle", "OUTPUT", OUT_CHAIN),
    ("mangle", "PREROUTING", PRE_CHAIN),
    ("nat", "POSTROUTING", NAT_CHAIN),
];

fn round_chain(p: Protocol) -> String {
    format!("nm-multiwan-{}", p.name())
}

/// A policy's chain: its action.
fn policy_chain(index: usize) -> String {
    format!("nm-multiwan-p{index}")
}

/// One of a policy's rounds.
fn policy_round_chain(index: usize, p: Protocol) -> String {
    format!("nm-multiwan-p{index}-{}", p.name())
}

/// The `recent` list remembering a policy's sticky destinations of one uplink.
fn sticky_list(family: Family, index: usize, mark: u32) -> String {
    let f = match family {
        Family::V4 => 4,
        Family::V6 => 6,
    };
    format!("nmmw{f}-p{index}-{mark:08x}")
}

/// The policy index (and round protocol) of a policy chain's name.
fn parse_policy_chain(chain: &str) -> Option<(usize, Option<Protocol>)> {
    let rest = chain.strip_prefix("nm-multiwan-p")?;
    let (index, protocol) = match rest.split_once('-') {
        Some((i, p)) => (i, Some(Protocol::ALL.into_iter().find(|x| x.name() == p)?)),
        None => (rest, None),
    };
    if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, protocol))
}

/// Every chain name we ever create (flush removes all of them).
fn is_ours(chain: &str) -> bool {
    chain == OUT_CHAIN
        || chain == PRE_CHAIN
        || chain == NAT_CHAIN
        || chain == DECIDE_CHAIN
        || chain == LAN_CHAIN
        || Protocol::ALL.iter().any(|p| chain == round_chain(*p))
        || parse_policy_chain(chain).is_some()
}

/// The protocol as iptables names it in `family`.
fn protocol_arg(p: u8, family: Family) -> String {
    match (p, family) {
        (58, Family::V6) => "ipv6-icmp".into(),
        _ => crate::config::policy::PROTOCOLS
            .iter()
            .find(|(name, n)| *n == p && *name != "icmpv6")
            .map_or_else(|| p.to_string(), |(name, _)| name.to_string()),
    }
}

/// A rung's matches as iptables arguments: one string per rule (a list of sources,
/// destinations, protocols or more than 15 ports becomes several rules).
fn match_variants(m: &Matches, family: Family) -> Vec<String> {
    let mut out = vec![String::new()];
    let cross = |out: Vec<String>, parts: Vec<String>| -> Vec<String> {
        if parts.is_empty() {
            return out;
        }
        out.iter()
            .flat_map(|o| parts.iter().map(move |p| format!("{o}{p}")))
            .collect()
    };
    if let Some(cg) = &m.cgroup {
        out = cross(out, vec![format!("-m cgroup --path {} ", cg.path)]);
    }
    if let Some(oif) = &m.oif {
        out = cross(out, vec![format!("-o {oif} ")]);
    }
    if let Some(uid) = m.uid {
        out = cross(out, vec![format!("-m owner --uid-owner {uid} ")]);
    }
    out = cross(out, m.sources.iter().map(|n| format!("-s {n} ")).collect());
    out = cross(
        out,
        m.destinations.iter().map(|n| format!("-d {n} ")).collect(),
    );
    out = cross(
        out,
        m.protocols
            .iter()
            .map(|p| format!("-p {} ", protocol_arg(*p, family)))
            .collect(),
    );
    // multiport takes 15 ports, a range counting as two.
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut used = 15;
    for &(a, b) in &m.ports {
        let (text, cost) = if a == b {
            (a.to_string(), 1)
        } else {
            (format!("{a}:{b}"), 2)
        };
        if used + cost > 15 {
            chunks.push(Vec::new());
            used = 0;
        }
        used += cost;
        chunks.last_mut().expect("a chunk").push(text);
    }
    cross(
        out,
        chunks
            .iter()
            .map(|c| format!("-m multiport --dports {} ", c.join(",")))
            .collect(),
    )
}

/// The rules of the policies' and marking chains of one family, and the rules of the
/// output chain for rungs 3 to 5.
fn render_ladder(
    p: &FirewallPlan,
    family: Family,
    out: &mut Vec<String>,
    chains: &mut Vec<(String, Vec<String>)>,
) {
    let m = p.mark_mask;
    let o = DECIDE_CHAIN;
    let save = format!("-j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}");
    // What an action does, as the rules of `chain` for the packets `when` selects:
    // marking is MARK, CONNMARK and RETURN (back to OUTPUT: the output chain is jumped
    // to, the policies' chains reached by goto), no chain per uplink, so that uplinks
    // coming and going never reorder our chains.
    let act = |chain: &str, when: &str, action: &Action| -> Vec<String> {
        match action {
            Action::Uplink { mark, .. } => vec![
                format!("-A {chain} {when}-j MARK --set-xmark {mark:#x}/{m:#x}"),
                format!("-A {chain} {when}{save}"),
                format!("-A {chain} {when}-j RETURN"),
            ],
            Action::Drop => vec![format!("-A {chain} {when}-j DROP")],
            Action::Direct => vec![format!("-A {chain} {when}-j RETURN")],
            Action::General | Action::Balance { .. } => Vec::new(),
        }
    };
    for rung in p.ladder_of(family) {
        let variants = match_variants(&rung.matches, family);
        let Some(index) = rung.policy() else {
            for v in &variants {
                out.extend(act(o, v, &rung.action));
            }
            continue;
        };
        let chain = policy_chain(index);
        for v in &variants {
            out.push(format!("-A {o} {v}-g {chain}"));
        }
        let mut rules = Vec::new();
        match &rung.action {
            Action::General => {
                for r in p.rounds_of(family) {
                    rules.push(match r.protocol {
                        Protocol::Tcp => {
                            format!("-A {chain} -p tcp -j {}", round_chain(r.protocol))
                        }
                        Protocol::Udp => {
                            format!("-A {chain} -p udp -j {}", round_chain(r.protocol))
                        }
                        Protocol::Other => format!(
                            "-A {chain} -m mark --mark 0x0/{m:#x} -j {}",
                            round_chain(r.protocol)
                        ),
                    });
                }
                rules.push(format!("-A {chain} -m mark ! --mark 0x0/{m:#x} {save}"));
            }
            Action::Balance {
                rounds,
                members,
                sticky,
                sticky_by,
            } => {
                // `recent` remembers the destination or the client (source).
                let side = match sticky_by {
                    StickyBy::Destination => "--rdest",
                    StickyBy::Client => "--rsource",
                };
                if let Some(secs) = sticky {
                    for &mark in members {
                        rules.push(format!(
                            "-A {chain} -m mark --mark 0x0/{m:#x} -m recent --update --seconds {secs} --reap --name {} --mask {} {side} -j MARK --set-xmark {mark:#x}/{m:#x}",
                            sticky_list(family, index, mark),
                            full_mask(family),
                        ));
                    }
                    rules.push(format!("-A {chain} -m mark ! --mark 0x0/{m:#x} {save}"));
                    rules.push(format!("-A {chain} -m mark ! --mark 0x0/{m:#x} -j RETURN"));
                }
                for r in rounds {
                    let rc = policy_round_chain(index, r.protocol);
                    rules.push(match r.protocol {
                        Protocol::Tcp => format!("-A {chain} -p tcp -g {rc}"),
                        Protocol::Udp => format!("-A {chain} -p udp -g {rc}"),
                        Protocol::Other => format!("-A {chain} -g {rc}"),
                    });
                    let mut rr = nth_rules(&rc, &r.slots, m);
                    if sticky.is_some() {
                        for &mark in members {
                            rr.push(format!(
                                "-A {rc} -m mark --mark {mark:#x}/{m:#x} -m recent --set --name {} --mask {} {side}",
                                sticky_list(family, index, mark),
                                full_mask(family)
                            ));
                        }
                    }
                    rr.push(format!("-A {rc} {save}"));
                    chains.push((rc, rr));
                }
            }
            action => rules.extend(act(&chain, "", action)),
        }
        chains.push((chain, rules));
    }
}

/// The mask `recent` prints for a whole address (what iptables-save shows).
fn full_mask(family: Family) -> &'static str {
    match family {
        Family::V4 => "255.255.255.255",
        Family::V6 => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    }
}

/// An exact nth round in `chain`: slot k marks the k-th of every `slots.len()` packets
/// that reach it.
fn nth_rules(chain: &str, slots: &[u32], m: u32) -> Vec<String> {
    let every = slots.len();
    slots
        .iter()
        .enumerate()
        .map(|(k, mark)| {
            let nth = if every > 1 {
                format!("-m statistic --mode nth --every {every} --packet {k} ")
            } else {
                String::new()
            };
            format!("-A {chain} {nth}-j MARK --set-xmark {mark:#x}/{m:#x}")
        })
        .collect()
}

/// The nft family name of a family's iptables tables (for removing empty ones).
fn nft_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// Both families, one value per run (reconcile, flush, status): each reads its ruleset
/// once, keeps that reading until it writes, and reads again after.
pub struct Iptables {
    v4: Tables,
    v6: Tables,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables::new()
    }
}

impl Iptables {
    pub fn new() -> Self {
        Iptables {
            v4: Tables::new(Family::V4),
            v6: Tables::new(Family::V6),
        }
    }

    fn of(&self, family: Family) -> &Tables {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// One family's ruleset; for IPv6 a machine without ip6tables (or without IPv6)
    /// cannot hold anything of ours, which reads as empty.
    fn dump_lenient(&self, family: Family) -> Result<Saved> {
        match self.of(family).dump() {
            Err(e) if family == Family::V6 => {
                debug!(error = %e, "cannot read the IPv6 firewall: nothing of ours there");
                Ok(Saved::default())
            }
            other => other,
        }
    }
}

/// Whether a table that could hold chains of ours exists at all, asked without starting
/// a process: the nftables backend's first run (no state yet) asks whether iptables
/// holds leftovers of ours, and on a machine where nothing of iptables is loaded that
/// costs a few netlink messages instead of `iptables-save` and `ip6tables-save`.
/// Unsure means yes.
fn could_hold_ours() -> bool {
    use crate::kernel::nft::{Family as NftFamily, Nft};
    // iptables-legacy lists its loaded tables by name; with mangle or nat there, only
    // iptables-save can tell.
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        if std::fs::read_to_string(names)
            .is_ok_and(|t| t.lines().any(|n| n == "mangle" || n == "nat"))
        {
            return true;
        }
    }
    // iptables-nft keeps its tables as nf_tables tables of the ip and ip6 families.
    let Ok(mut nft) = Nft::new() else {
        return true;
    };
    for family in [NftFamily::Ip, NftFamily::Ip6] {
        for table in ["mangle", "nat"] {
            match nft.get_table(family, table) {
                Ok(None) => continue,
                Ok(Some(_)) => {}
                Err(_) => return true,
            }
            match nft.list_chains(family, table) {
                Ok(chains) => {
                    if chains
                        .iter()
                        .any(|c| c.chain.name.starts_with("nm-multiwan"))
                    {
                        return true;
                    }
                }
                Err(_) => return true,
            }
        }
    }
    false
}

/// One family's `iptables-save`/`iptables-restore` pair and this run's reading.
struct Tables {
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
    Ready(Saved),
}

impl Drop for Tables {
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

/// The rules of our chains in one family, fingerprint comment included.
struct Rendered {
    /// mangle: chain -> rules in order
    mangle: Vec<(String, Vec<String>)>,
    nat: Vec<String>,
}

impl Rendered {
    fn count(&self, chain: &str) -> usize {
        if chain == NAT_CHAIN {
            return self.nat.len();
        }
        self.mangle
            .iter()
            .find(|(c, _)| c == chain)
            .map_or(0, |(_, r)| r.len())
    }
}

fn render_family(p: &FirewallPlan, family: Family, fingerprint: &str) -> Rendered {
    let m = p.mark_mask;
    let out = OUT_CHAIN;
    let mut o = vec![
        format!("-A {out} -m comment --comment nm-multiwan:plan={fingerprint}"),
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
    if family == Family::V6 {
        // New ICMPv6 is never balanced. Neighbour discovery, router advertisements and
        // MLD belong to their link; echo requests take the main table's route. Errors
        // and echo replies of a connection we marked carry its mark and follow it.
        o.push(format!("-A {out} -p ipv6-icmp -j RETURN"));
    }
    o.push(format!("-A {out} -m addrtype --dst-type LOCAL -j RETURN"));
    if family == Family::V4 {
        o.push(format!(
            "-A {out} -m addrtype --dst-type BROADCAST -j RETURN"
        ));
    }
    o.push(format!(
        "-A {out} -m addrtype --dst-type MULTICAST -j RETURN"
    ));
    o.push(format!("-A {out} -j {DECIDE_CHAIN}"));
    let dc = DECIDE_CHAIN;
    let mut d = Vec::new();
    for net in p.exclude_of(family) {
        d.push(format!("-A {dc} -d {net} -j RETURN"));
    }
    let mut mangle = Vec::new();
    let mut ladder_chains = Vec::new();
    render_ladder(p, family, &mut d, &mut ladder_chains);
    for round in p.rounds_of(family) {
        let chain = round_chain(round.protocol);
        d.push(match round.protocol {
            Protocol::Tcp => format!("-A {dc} -p tcp -j {chain}"),
            Protocol::Udp => format!("-A {dc} -p udp -j {chain}"),
            // What no round of its own took.
            Protocol::Other => format!("-A {dc} -m mark --mark 0x0/{m:#x} -j {chain}"),
        });
        let rules = nth_rules(&chain, &round.slots, m);
        mangle.push((chain, rules));
    }
    mangle.extend(ladder_chains);
    d.push(format!(
        "-A {dc} -m mark ! --mark 0x0/{m:#x} -j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}"
    ));
    mangle.insert(0, (OUT_CHAIN.to_string(), o));
    mangle.insert(1, (DECIDE_CHAIN.to_string(), d));

    let pre = PRE_CHAIN;
    let mut r = vec![
        format!("-A {pre} -j CONNMARK --restore-mark --nfmask {m:#x} --ctmask {m:#x}"),
        format!("-A {pre} -m mark ! --mark 0x0/{m:#x} -j RETURN"),
    ];
    if family == Family::V6 {
        // Link-local peers are on the link whatever the mark, and of ICMPv6 only echo
        // requests open anything worth answering through the uplink they came in on.
        r.push(format!("-A {pre} -s fe80::/10 -j RETURN"));
        r.push(format!(
            "-A {pre} -p ipv6-icmp -m icmp6 ! --icmpv6-type echo-request -j RETURN"
        ));
    }
    for u in p.uplinks_of(family) {
        r.push(format!(
            "-A {pre} -i {} -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark {:#x}/{m:#x}",
            u.iface, u.inbound_mark
        ));
    }
    if p.routes_lans() {
        // New connections from a LAN take the same decision as the machine's own, but
        // not those for the machine itself (its DNS, DHCP, ssh), nor broadcasts.
        for lan in &p.lans {
            r.push(format!(
                "-A {pre} -i {} -m conntrack --ctstate NEW -j {LAN_CHAIN}",
                lan.iface
            ));
        }
        let lc = LAN_CHAIN;
        let mut l = vec![
            // A mark someone set earlier (raw) is theirs to route by.
            format!("-A {lc} -m mark ! --mark 0x0 -j RETURN"),
            format!("-A {lc} -m addrtype --dst-type LOCAL -j RETURN"),
        ];
        if family == Family::V4 {
            l.push(format!(
                "-A {lc} -m addrtype --dst-type BROADCAST -j RETURN"
            ));
        }
        l.push(format!(
            "-A {lc} -m addrtype --dst-type MULTICAST -j RETURN"
        ));
        l.push(format!("-A {lc} -j {DECIDE_CHAIN}"));
        mangle.push((LAN_CHAIN.to_string(), l));
    }
    r.push(format!(
        "-A {pre} -m mark ! --mark 0x0/{m:#x} -j CONNMARK --save-mark --nfmask {m:#x} --ctmask {m:#x}"
    ));
    mangle.insert(2, (PRE_CHAIN.to_string(), r));

    let ups: Vec<_> = p.uplinks_of(family).collect();
    let mut nat: Vec<String> = ups
        .iter()
        .map(|u| {
            format!(
                "-A {NAT_CHAIN} -o {} -m mark --mark {:#x}/{m:#x} -j MASQUERADE",
                u.iface, u.mark
            )
        })
        .collect();
    // A connection that left through another uplink than its mark's (a socket bound to
    // that device) takes that uplink's mark: its replies then pass the reverse-path
    // filter there.
    for u in &ups {
        for other in ups.iter().filter(|o| o.mark != u.mark) {
            nat.push(format!(
                "-A {NAT_CHAIN} -o {} -m mark --mark {:#x}/{m:#x} -j CONNMARK --set-xmark {:#x}/{m:#x}",
                u.iface, other.mark, u.mark
            ));
        }
    }
    Rendered { mangle, nat }
}

/// What `iptables-save` shows of ours.
#[derive(Debug, Default, Clone)]
struct Saved {
    /// (table, chain) of ours that exist
    chains: Vec<(String, String)>,
    /// (table, builtin, ours) -> how many times the jump appears
    jumps: BTreeMap<(String, String, String), usize>,
    /// rules in our chains, in order, per chain, with their packet counter (with -c)
    rules: BTreeMap<String, Vec<(u64, String)>>,
    /// every table listed, with how many rules and user-defined chains it holds
    tables: BTreeMap<String, (usize, usize)>,
}

impl Saved {
    fn has_any(&self) -> bool {
        !self.chains.is_empty() || !self.jumps.is_empty()
    }

    fn count(&self, chain: &str) -> usize {
        self.rules.get(chain).map_or(0, Vec::len)
    }

    /// The fingerprint in our output chain's first rule.
    fn fingerprint(&self) -> Option<&str> {
        let (_, first) = self.rules.get(OUT_CHAIN)?.first()?;
        let token = first
            .split_whitespace()
            .find_map(|w| w.trim_matches('"').strip_prefix("nm-multiwan:plan="))?;
        Some(token)
    }

    /// Whether this family holds exactly `r` (fingerprint, chain sizes, one jump each).
    fn holds(&self, r: &Rendered, fingerprint: &str) -> bool {
        let jumps_ok = JUMPS.iter().all(|(t, b, o)| {
            self.jumps
                .get(&(t.to_string(), b.to_string(), o.to_string()))
                .copied()
                == Some(1)
        });
        // The fingerprint covers the contents; the counts catch a rule added or
        // deleted by hand.
        let chains_ok = self
            .chains
            .iter()
            .all(|(_, c)| r.count(c) > 0 || c == NAT_CHAIN)
            && r.mangle
                .iter()
                .all(|(c, rules)| self.count(c) == rules.len())
            && self.count(NAT_CHAIN) == r.nat.len();
        jumps_ok && chains_ok && self.fingerprint() == Some(fingerprint)
    }
}

fn parse_save(text: &str) -> Saved {
    let mut inst = Saved::default();
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

impl Tables {
    fn new(family: Family) -> Self {
        let prefix = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        Tables {
            save: find_program(&format!("{prefix}-save")),
            restore: find_program(&format!("{prefix}-restore")),
            snapshot: Mutex::new(Snapshot::None),
        }
    }

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

    fn prefetch(&self) {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*snap, Snapshot::None) {
            // On failure to start, `dump` runs it again and reports the error.
            if let Ok(child) = self.save_command(false).spawn() {
                *snap = Snapshot::Running(child);
            }
        }
    }

    /// The ruleset without counters: this run's snapshot, read now if not yet read.
    fn dump(&self) -> Result<Saved> {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let saved = match std::mem::take(&mut *snap) {
            Snapshot::Ready(inst) => inst,
            Snapshot::Running(child) => self.collect(child.wait_with_output())?,
            Snapshot::None => self.collect(self.save_command(false).output())?,
        };
        *snap = Snapshot::Ready(saved.clone());
        Ok(saved)
    }

    /// The ruleset with packet counters (for `status`); always read afresh.
    fn dump_counters(&self) -> Result<Saved> {
        self.collect(self.save_command(true).output())
    }

    fn collect(&self, out: std::io::Result<std::process::Output>) -> Result<Saved> {
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

    /// The batch installing `r` over what `saved` shows: every chain of ours declared
    /// (which empties it), refilled, jumps made unique; chains of ours the rendering no
    /// longer has are removed.
    ///
    /// `iptables-restore` commits each table on its own (iptables-nft too), so a run
    /// killed between the two leaves one table new and the other old. Marks are set in
    /// mangle and translated in nat: while mangle marks for an uplink nat has no
    /// MASQUERADE for, new connections leave through it with another uplink's address
    /// and are dropped. So nat goes first when it gains rules (from nothing, an uplink
    /// added) and mangle first otherwise (an uplink removed: it stops being marked
    /// before its translation goes).
    fn full_batch(r: &Rendered, saved: &Saved) -> String {
        let mut mangle = String::from("*mangle\n");
        for (chain, _) in &r.mangle {
            mangle.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for (_, rules) in &r.mangle {
            for l in rules {
                mangle.push_str(l);
                mangle.push('\n');
            }
        }
        jump_lines(&mut mangle, "mangle", saved);
        for (t, chain) in &saved.chains {
            if t == "mangle" && !r.mangle.iter().any(|(c, _)| c == chain) {
                mangle.push_str(&format!("-F {chain}\n-X {chain}\n"));
            }
        }
        mangle.push_str("COMMIT\n");
        let mut nat = String::from("*nat\n");
        nat.push_str(&format!(":{NAT_CHAIN} - [0:0]\n"));
        for l in &r.nat {
            nat.push_str(l);
            nat.push('\n');
        }
        jump_lines(&mut nat, "nat", saved);
        nat.push_str("COMMIT\n");
        if saved.count(NAT_CHAIN) < r.nat.len() {
            nat + &mangle
        } else {
            mangle + &nat
        }
    }

    /// Removes our chains and the jumps to them in this family.
    fn flush_chains(&self, saved: &Saved) -> Result<()> {
        let mut b = String::new();
        for table in ["mangle", "nat"] {
            let mut body = String::new();
            for ((t, builtin, ours), n) in &saved.jumps {
                if t == table {
                    for _ in 0..*n {
                        body.push_str(&format!("-D {builtin} -j {ours}\n"));
                    }
                }
            }
            // Flush every chain first: one of ours may jump to another.
            for (t, chain) in &saved.chains {
                if t == table {
                    body.push_str(&format!("-F {chain}\n"));
                }
            }
            for (t, chain) in &saved.chains {
                if t == table {
                    body.push_str(&format!("-X {chain}\n"));
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

/// Exactly one jump to each of our chains, inserted at the top of the built-in chain
/// so that our mark is in place before any other rule routes on it.
fn jump_lines(b: &mut String, table: &str, saved: &Saved) {
    for (t, builtin, ours) in JUMPS.iter().filter(|(t, ..)| *t == table) {
        let n = saved
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
    fn backend(&self) -> Backend {
        Backend::Iptables
    }

    fn prefetch(&self) {
        self.v4.prefetch();
        self.v6.prefetch();
    }

    fn installed(&self) -> Result<bool> {
        if !could_hold_ours() {
            return Ok(false);
        }
        Ok(self.v4.dump()?.has_any() || self.dump_lenient(Family::V6)?.has_any())
    }

    fn is_current(&self, p: &FirewallPlan) -> Result<bool> {
        let fp = p.fingerprint(Backend::Iptables, RENDERING);
        for family in Family::ALL {
            let saved = self.dump_lenient(family)?;
            let ok = if p.has(family) {
                saved.holds(&render_family(p, family, &fp), &fp)
            } else {
                !saved.has_any()
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply(
        &self,
        p: &FirewallPlan,
        created: &BTreeSet<String>,
        record: &mut dyn FnMut(&BTreeSet<String>) -> Result<()>,
    ) -> Result<BTreeSet<String>> {
        let fp = p.fingerprint(Backend::Iptables, RENDERING);
        let mut created = created.clone();
        for family in Family::ALL {
            let tables = self.of(family);
            if p.has(family) {
                let saved = tables.dump()?;
                let r = render_family(p, family, &fp);
                if saved.holds(&r, &fp) {
                    continue;
                }
                let mut batch = Tables::full_batch(&r, &saved);
                if super::fault_injected() {
                    // A jump to a chain that does not exist, in the mangle table.
                    let mangle = batch.find("*mangle\n").expect("a mangle table");
                    let commit = mangle + batch[mangle..].find("COMMIT\n").expect("its commit");
                    batch.insert_str(commit, &format!("-A {OUT_CHAIN} -j nm-multiwan-missing\n"));
                }
                // With iptables-nft the restore creates the tables it names: recorded
                // first, so that a run killed during it leaves them to flush.
                let before = created.len();
                created.extend(
                    ["mangle", "nat"]
                        .into_iter()
                        .filter(|t| !saved.tables.contains_key(*t))
                        .map(|t| format!("{} {t}", nft_family(family))),
                );
                if created.len() > before {
                    record(&created)?;
                }
                tables.restore(&batch)?;
            } else {
                // Not balanced in this family: nothing of ours may stay there, nor the
                // tables only we brought into existence.
                let saved = self.dump_lenient(family)?;
                if saved.has_any() {
                    tables.flush_chains(&saved)?;
                }
                self.remove_created(family, &mut created)?;
            }
        }
        Ok(created)
    }

    fn flush(&self, created: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let mut created = created.clone();
        for family in Family::ALL {
            let saved = self.dump_lenient(family)?;
            if saved.has_any() {
                self.of(family).flush_chains(&saved)?;
            }
            self.remove_created(family, &mut created)?;
        }
        Ok(created)
    }

    fn counters(&self) -> Result<Counters> {
        let mut out = Counters::default();
        for family in Family::ALL {
            let Ok(saved) = self.of(family).dump_counters() else {
                continue;
            };
            for (chain, rules) in &saved.rules {
                let round = match parse_policy_chain(chain) {
                    Some((index, Some(p))) => Some((RoundOf::Policy(index), p)),
                    _ => Protocol::ALL
                        .into_iter()
                        .find(|p| *chain == round_chain(*p))
                        .map(|p| (RoundOf::General, p)),
                };
                let marking = round.is_some();
                for (packets, rule) in rules {
                    if chain == DECIDE_CHAIN
                        && let Some(target) = rule.split(" -g ").nth(1)
                        && let Some((index, None)) = parse_policy_chain(target.trim())
                    {
                        *out.hits.entry(index).or_default() += packets;
                    }
                    if !marking {
                        continue;
                    }
                    let mark = rule
                        .split("--set-xmark ")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .and_then(parse_hex);
                    if let Some(mark) = mark {
                        *out.placed.entry((family, mark)).or_default() += packets;
                        // Every packet reaching a round matches exactly one of its slots.
                        if let Some((of, p)) = round {
                            *out.dealt.entry((of, family, p)).or_default() += packets;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn sticky(&self, p: &FirewallPlan) -> Result<Vec<StickyEntry>> {
        let mut out = Vec::new();
        let Some(clock) = recent::Clock::now() else {
            return Ok(out);
        };
        for rung in &p.ladder {
            let (
                Some(index),
                Action::Balance {
                    members,
                    sticky: Some(secs),
                    ..
                },
            ) = (rung.policy(), &rung.action)
            else {
                continue;
            };
            for &mark in members {
                let name = sticky_list(rung.family, index, mark);
                let Ok(text) = std::fs::read_to_string(format!("/proc/net/xt_recent/{name}"))
                else {
                    continue;
                };
                for (destination, last_seen) in recent::parse(&text) {
                    let age = clock.age(last_seen);
                    if age < *secs {
                        out.push(StickyEntry {
                            policy: index,
                            destination,
                            mark,
                            expires_in: secs - age,
                        });
                    }
                }
            }
        }
        // A destination remembered for two uplinks (one stale): the freshest counts.
        out.sort_by(|a, b| {
            (a.policy, a.destination, b.expires_in).cmp(&(b.policy, b.destination, a.expires_in))
        });
        out.dedup_by(|a, b| a.policy == b.policy && a.destination == b.destination);
        Ok(out)
    }

    fn render(&self, p: &FirewallPlan) -> String {
        let fp = p.fingerprint(Backend::Iptables, RENDERING);
        let mut s = String::new();
        for family in p.families.iter().copied() {
            let r = render_family(p, family, &fp);
            let tool = match family {
                Family::V4 => "iptables-restore --noflush",
                Family::V6 => "ip6tables-restore --noflush",
            };
            s.push_str(&format!("# {family} ({tool})\n"));
            s.push_str(&Tables::full_batch(&r, &Saved::default()));
        }
        s
    }
}

impl Iptables {
    /// With iptables-nft, a table exists once anything used it. Removes the ones of
    /// `family` we brought into existence if they are empty now (so the machine is
    /// exactly as before), and forgets them.
    fn remove_created(&self, family: Family, created: &mut BTreeSet<String>) -> Result<()> {
        let prefix = format!("{} ", nft_family(family));
        let ours: Vec<String> = created
            .iter()
            .filter(|c| c.starts_with(&prefix))
            .cloned()
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        let saved = self.dump_lenient(family)?;
        for c in ours {
            let table = &c[prefix.len()..];
            let empty = saved
                .tables
                .get(table)
                .is_none_or(|&(rules, chains)| rules == 0 && chains == 0);
            if empty {
                remove_empty_table(family, table);
                created.remove(&c);
            }
        }
        Ok(())
    }
}

/// The `recent` match's lists, as /proc/net/xt_recent shows them (times in jiffies).
mod recent {
    use std::net::IpAddr;

    /// `(address, last seen)` of every entry of a list.
    pub fn parse(text: &str) -> Vec<(IpAddr, u64)> {
        text.lines()
            .filter_map(|l| {
                let addr = l.strip_prefix("src=")?.split_whitespace().next()?;
                let last = l.split("last_seen: ").nth(1)?.split_whitespace().next()?;
                Some((addr.parse().ok()?, last.parse().ok()?))
            })
            .collect()
    }

    /// The kernel's jiffies now, and how many make a second.
    pub struct Clock {
        jiffies: u64,
        hz: u64,
    }

    impl Clock {
        /// From /proc/timer_list (root only, as the lists are): jiffies start at
        /// 2^32 - 300 * HZ on a 64-bit kernel, so one reading of the monotonic clock and
        /// of jiffies gives HZ.
        pub fn now() -> Option<Clock> {
            let text = std::fs::read_to_string("/proc/timer_list").ok()?;
            let ns: u64 = text.lines().find_map(|l| {
                l.strip_prefix("now at ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })?;
            let jiffies: u64 = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("jiffies: ")?.trim().parse().ok())?;
            Some(Clock {
                jiffies,
                hz: hz_of(jiffies, ns),
            })
        }

        /// Seconds since `stamp` (in jiffies).
        pub fn age(&self, stamp: u64) -> u64 {
            self.jiffies.saturating_sub(stamp) / self.hz
        }
    }

    /// HZ from jiffies and the monotonic time in ns: the configured value nearest to
    /// (jiffies - 2^32) / (seconds - 300).
    pub fn hz_of(jiffies: u64, ns: u64) -> u64 {
        let secs = ns as f64 / 1e9 - 300.0;
        let ticks = jiffies as f64 - 4_294_967_296.0;
        let estimate = if secs.abs() < 1.0 {
            250.0
        } else {
            ticks / secs
        };
        [100u64, 250, 300, 1000]
            .into_iter()
            .min_by(|a, b| {
                (*a as f64 - estimate)
                    .abs()
                    .total_cmp(&(*b as f64 - estimate).abs())
            })
            .expect("candidates")
    }
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// Deletes an empty iptables-nft table over nf_tables netlink; a failure only leaves an
/// empty table behind, which is logged.
fn remove_empty_table(family: Family, table: &str) {
    use crate::kernel::nft;
    let nft_family = match family {
        Family::V4 => nft::Family::Ip,
        Family::V6 => nft::Family::Ip6,
    };
    let mut batch = nft::Batch::new();
    batch.delete_table_if_exists(nft_family, table);
    match nft::Nft::new().and_then(|mut n| n.commit(&batch)) {
        Ok(()) => debug!(table, %family, "removed the empty table we created"),
        Err(e) => debug!(table, %family, error = %e, "empty table left in place"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::two_dual_uplinks;

    fn plan() -> FirewallPlan {
        two_dual_uplinks().firewall
    }

    #[test]
    fn renders_rounds_per_protocol_and_masquerade() {
        let text = Iptables::new().render(&plan());
        for want in [
            "-A nm-multiwan-tcp -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000",
            "-A nm-multiwan-udp -m statistic --mode nth --every 2 --packet 1 -j MARK --set-xmark 0x2000000/0x3f000000",
            "-A nm-multiwan-decide -p tcp -j nm-multiwan-tcp",
            "-A nm-multiwan-decide -m mark --mark 0x0/0x3f000000 -j nm-multiwan-other",
            "-A nm-multiwan-nat -o wlan0 -m mark --mark 0x2000000/0x3f000000 -j MASQUERADE",
            "-A nm-multiwan-decide -d 10.0.1.0/24 -j RETURN",
            "-i eth0 -m conntrack --ctstate NEW",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }

    /// IPv6: ICMPv6 never starts a balanced connection, link-local and multicast are
    /// never balanced, link-local peers never get an inbound mark, NAT66 per uplink.
    #[test]
    fn ipv6_chains() {
        let p = plan();
        let fp = p.fingerprint(Backend::Iptables, RENDERING);
        let r = render_family(&p, Family::V6, &fp);
        let out = &r.mangle[0].1;
        let pos = |rules: &[String], l: &str| {
            rules
                .iter()
                .position(|x| x == l)
                .unwrap_or_else(|| panic!("{l:?} not in {rules:#?}"))
        };
        let icmp = pos(out, "-A nm-multiwan-out -p ipv6-icmp -j RETURN");
        let decide = pos(out, "-A nm-multiwan-out -j nm-multiwan-decide");
        assert!(icmp < decide && decide == out.len() - 1);
        assert!(
            pos(
                out,
                "-A nm-multiwan-out -m addrtype --dst-type MULTICAST -j RETURN"
            ) < decide
        );
        let d = &r.mangle[1].1;
        let first_round = pos(d, "-A nm-multiwan-decide -p tcp -j nm-multiwan-tcp");
        for l in [
            "-A nm-multiwan-decide -d fe80::/10 -j RETURN",
            "-A nm-multiwan-decide -d ff00::/8 -j RETURN",
            "-A nm-multiwan-decide -d 2001:db8:1::/64 -j RETURN",
            "-A nm-multiwan-decide -d 2001:db8:2::/64 -j RETURN",
        ] {
            assert!(pos(d, l) < first_round, "{l}");
        }
        assert!(
            !out.iter()
                .chain(d)
                .any(|l| l.contains("BROADCAST") || l.contains("10.0."))
        );
        let pre = &r.mangle[2].1;
        let ll = pos(pre, "-A nm-multiwan-pre -s fe80::/10 -j RETURN");
        let inbound = pos(
            pre,
            "-A nm-multiwan-pre -i eth0 -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL -j MARK --set-xmark 0x21000000/0x3f000000",
        );
        assert!(ll < inbound);
        assert!(r.nat.iter().any(|l| l.contains("-o wlan0")));
    }

    /// Router mode: new connections arriving on a LAN jump to the decision shared with
    /// the output chain; a client-sticky policy remembers sources.
    #[test]
    fn lans_reach_the_decision() {
        use crate::config::Config;
        use crate::plan::plan;
        use crate::testing::{facts, uplink};
        let config = Config::parse(
            "[[policy]]\nname = \"c\"\nfrom = [\"10.42.0.0/24\"]\nsticky = \"10m\"\nsticky_by = \"client\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let mut f = facts(vec![uplink("eth0", 1), uplink("wlan0", 2)]);
        f.lans = vec![crate::model::Lan {
            iface: "lan0".into(),
            connection_id: "lan".into(),
            shared: true,
            networks: vec!["10.42.0.0/24".parse().unwrap()],
        }];
        let p = plan(&config, &f).firewall;
        let r = render_family(&p, Family::V4, "x");
        let rules = |c: &str| {
            r.mangle
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("no chain {c}"))
        };
        assert!(rules(PRE_CHAIN).contains(
            &"-A nm-multiwan-pre -i lan0 -m conntrack --ctstate NEW -j nm-multiwan-lan".to_string()
        ));
        let lan = rules(LAN_CHAIN);
        assert_eq!(
            lan.first().unwrap(),
            "-A nm-multiwan-lan -m mark ! --mark 0x0 -j RETURN"
        );
        assert_eq!(
            lan[1],
            "-A nm-multiwan-lan -m addrtype --dst-type LOCAL -j RETURN"
        );
        assert_eq!(
            lan.last().unwrap(),
            "-A nm-multiwan-lan -j nm-multiwan-decide"
        );
        assert_eq!(
            rules(OUT_CHAIN).last().unwrap(),
            "-A nm-multiwan-out -j nm-multiwan-decide"
        );
        let decide = rules(DECIDE_CHAIN);
        assert!(decide.contains(&"-A nm-multiwan-decide -d 10.42.0.0/24 -j RETURN".to_string()));
        assert!(
            decide.contains(&"-A nm-multiwan-decide -s 10.42.0.0/24 -g nm-multiwan-p0".to_string())
        );
        let text = Iptables::new().render(&p);
        assert!(
            text.contains("--name nmmw4-p0-01000000 --mask 255.255.255.255 --rsource"),
            "{text}"
        );
        assert!(!text.contains("--rdest"));
        assert!(is_ours(LAN_CHAIN) && is_ours(DECIDE_CHAIN));
    }

    /// Policies render as chains of their own reached by goto, with nth rounds and
    /// `recent` lists for sticky destinations; flush knows every such chain as ours.
    #[test]
    fn policies_render_and_are_ours() {
        use crate::config::Config;
        use crate::plan::plan;
        use crate::testing::{facts, uplink};
        let config = Config::parse(
            "[[policy]]\nname = \"s\"\nto = [\"198.51.100.0/24\"]\nports = [\"443\"]\nprotocol = \"tcp\"\nsticky = \"10m\"\n\
             [[policy]]\nname = \"d\"\nuser = 1000\nmode = \"direct\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let p = plan(&config, &facts(vec![uplink("eth0", 1), uplink("wlan0", 2)])).firewall;
        let text = Iptables::new().render(&p);
        for want in [
            "-A nm-multiwan-decide -d 198.51.100.0/24 -p tcp -m multiport --dports 443 -g nm-multiwan-p0",
            "-A nm-multiwan-p0 -m mark --mark 0x0/0x3f000000 -m recent --update --seconds 600 --reap --name nmmw4-p0-01000000",
            "-A nm-multiwan-p0 -p tcp -g nm-multiwan-p0-tcp",
            "-A nm-multiwan-p0-tcp -m statistic --mode nth --every 2 --packet 1 -j MARK --set-xmark 0x2000000/0x3f000000",
            "-A nm-multiwan-p0-tcp -m mark --mark 0x2000000/0x3f000000 -m recent --set --name nmmw4-p0-02000000",
            "-A nm-multiwan-decide -m owner --uid-owner 1000 -g nm-multiwan-p1",
            "-A nm-multiwan-p1 -j RETURN",
            "-A nm-multiwan-decide -s 10.0.2.2/32 -j MARK --set-xmark 0x2000000/0x3f000000",
            "-A nm-multiwan-decide -s 10.0.2.2/32 -j RETURN",
            "-A nm-multiwan-nat -o eth0 -m mark --mark 0x2000000/0x3f000000 -j CONNMARK --set-xmark 0x1000000/0x3f000000",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let ladder = text.find("-g nm-multiwan-p0").unwrap();
        assert!(
            ladder
                < text
                    .find("-A nm-multiwan-decide -p tcp -j nm-multiwan-tcp")
                    .unwrap()
        );
        for ours in ["nm-multiwan-p0", "nm-multiwan-p12-udp"] {
            assert!(is_ours(ours), "{ours}");
        }
        for not in [
            "nm-multiwan-p",
            "nm-multiwan-px",
            "nm-multiwan-p1-icmp",
            "nm-multiwan-to-1",
        ] {
            assert!(!is_ours(not), "{not}");
        }
        assert_eq!(recent::hz_of(4_296_211_078, 5_275_740_000_000), 250);
        let entries = recent::parse(
            "src=198.51.100.10 ttl: 64 last_seen: 4296727695 oldest_pkt: 6 4296727695\n",
        );
        assert_eq!(entries, [("198.51.100.10".parse().unwrap(), 4_296_727_695)]);
    }

    #[test]
    fn fingerprint_changes_with_plan() {
        let a = plan();
        let mut b = a.clone();
        b.rounds[0].slots.pop();
        assert_ne!(
            a.fingerprint(Backend::Iptables, RENDERING),
            b.fingerprint(Backend::Iptables, RENDERING)
        );
        assert_ne!(
            a.fingerprint(Backend::Iptables, RENDERING),
            a.fingerprint(Backend::Nftables, RENDERING)
        );
        assert_eq!(
            a.fingerprint(Backend::Iptables, RENDERING),
            a.clone().fingerprint(Backend::Iptables, RENDERING)
        );
    }

    /// What was installed reads back as holding exactly the plan; a rule deleted by
    /// hand does not.
    #[test]
    fn saved_ruleset_holds_the_plan() {
        let p = plan();
        let fp = p.fingerprint(Backend::Iptables, RENDERING);
        let r = render_family(&p, Family::V4, &fp);
        let mut text = String::from("*mangle\n:OUTPUT ACCEPT [0:0]\n");
        for (c, _) in &r.mangle {
            text += &format!(":{c} - [0:0]\n");
        }
        text += "-A OUTPUT -j nm-multiwan-out\n-A PREROUTING -j nm-multiwan-pre\n";
        for (_, rules) in &r.mangle {
            for l in rules {
                // iptables-save quotes comments
                text += &l.replace("--comment nm-multiwan", "--comment \"nm-multiwan");
                if l.contains("--comment") {
                    text.push('"');
                }
                text.push('\n');
            }
        }
        text += "COMMIT\n*nat\n:nm-multiwan-nat - [0:0]\n-A POSTROUTING -j nm-multiwan-nat\n";
        for l in &r.nat {
            text += &format!("{l}\n");
        }
        text += "COMMIT\n";
        let saved = parse_save(&text);
        assert_eq!(saved.fingerprint(), Some(fp.as_str()));
        assert!(saved.holds(&r, &fp));
        let damaged = parse_save(&text.replacen("-A nm-multiwan-tcp -m statistic", "-A x", 1));
        assert!(!damaged.holds(&r, &fp));
        // the batch against this reading adds no jump and removes no chain
        let batch = Tables::full_batch(&r, &saved);
        assert!(!batch.contains("-I OUTPUT") && !batch.contains("-X "));
        // Each table is committed on its own: nat first when it gains rules (from
        // nothing), mangle first otherwise (the same rules, or fewer: an uplink gone).
        let order = |b: &str| b.find("*nat").unwrap() < b.find("*mangle").unwrap();
        assert!(
            order(&Tables::full_batch(&r, &Saved::default())),
            "from nothing"
        );
        assert!(!order(&batch), "nat unchanged");
        let gone = "-A nm-multiwan-nat -o gone0 -m mark --mark 0x9000000/0x3f000000 -j MASQUERADE";
        let more = parse_save(&text.replace(
            ":nm-multiwan-nat - [0:0]\n",
            &format!(":nm-multiwan-nat - [0:0]\n{gone}\n"),
        ));
        assert_eq!(more.count(NAT_CHAIN), r.nat.len() + 1);
        assert!(!order(&Tables::full_batch(&r, &more)), "nat loses a rule");
    }

    #[test]
    fn parses_save_output_and_dedups_jumps() {
        let save = "\
*mangle
:OUTPUT ACCEPT [0:0]
:nm-multiwan-out - [0:0]
:nm-multiwan-old - [0:0]
-A OUTPUT -j nm-multiwan-out
-A OUTPUT -j nm-multiwan-out
-A OUTPUT -j other
[5:300] -A nm-multiwan-tcp -m statistic --mode nth --every 2 --packet 0 -j MARK --set-xmark 0x1000000/0x3f000000
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
        assert_eq!(
            inst.chains.len(),
            2,
            "nm-multiwan-old is not a name of ours"
        );
        assert_eq!(inst.rules["nm-multiwan-tcp"][0].0, 5);
        let mut b = String::new();
        jump_lines(&mut b, "mangle", &inst);
        assert_eq!(
            b,
            "-D OUTPUT -j nm-multiwan-out\n-I PREROUTING 1 -j nm-multiwan-pre\n"
        );
    }
}
