//! The nftables backend: one table `inet nm-multiwan` for both families, replaced whole
//! in one netlink transaction (no packet ever meets a half-built table; a refused batch
//! changes nothing) and read back over netlink: a no-op reconcile is one `GETTABLE`
//! that finds the plan's fingerprint in the table's comment.
//!
//! ```text
//! table inet nm-multiwan {
//!   chain output      type route hook output priority mangle      marks new connections
//!   chain prerouting  type filter hook prerouting priority mangle marks inbound ones
//!   chain postrouting type nat hook postrouting priority srcnat   masquerades ours
//!   map round4_tcp ...  numgen inc mod N -> goto to4_MARK   (one per family and protocol)
//!   chain to4_MARK    sets our mark bits on the packet and the connection, counts
//!   map restore / save / inbound4 ...
//! }
//! ```
//!
//! Hook priorities: one before iptables' (mangle - 1 = -151, srcnat - 1 = 99). After
//! conntrack (-200), so the connection's state and mark are known; before the routing
//! decision of output (a `route` chain reroutes a packet whose mark it changed) and of
//! prerouting; NAT after routing. One before mangle because nf_tables runs chains of
//! equal priority in the order they were registered, and ours is registered anew at
//! every replace: at -151 our mark is in place before any mangle chain (iptables',
//! firewalld's) sees the packet, every time, as the iptables backend's jump inserted
//! first in mangle OUTPUT does. A mark such a chain sets afterwards is its own business;
//! one set earlier (raw, a socket's SO_MARK) we leave alone. NAT one before srcnat for
//! the same determinism: the first NAT chain to bind a connection wins.
//! Every mark operation keeps the bits outside our mask: a value is set with
//! `(mark & ~MASK) | VALUE`, one small chain per value, reached through a verdict map,
//! because the kernel's bitwise expression combines a register only with constants.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, Backend, Counters, Firewall, FirewallPlan, Matches, Protocol, RoundOf, StickyEntry,
};
use crate::config::policy::StickyBy;
use crate::error::{Error, Result};
use crate::kernel::nft::{
    self, Batch, Chain, ChainKind, CmpOp, CtKey, DataType, DynsetOp, ElemData, Element, Expr,
    FibFlags, FibResult, Hook, KeyType, MetaKey, Nft, NumgenMode, Policy, Reg, Rule, Set, SetData,
    SetRef, Table, TableContents, Verdict, matches, priority, value,
};
use crate::model::{Family, IpNet};

pub const TABLE: &str = "nm-multiwan";

/// Bumped whenever the rendering changes, so that an upgrade replaces the table.
const RENDERING: u32 = 3;

/// Our marking chains' priority: one before mangle (see the module's comment).
pub const MARK_PRIORITY: i32 = priority::MANGLE - 1;
/// Our NAT chain's priority: one before srcnat.
pub const NAT_PRIORITY: i32 = priority::SRCNAT - 1;

/// The table's comment: what a no-op reconcile reads back.
fn comment(fingerprint: &str) -> String {
    format!("nm-multiwan plan={fingerprint}")
}

#[derive(Default)]
pub struct Nftables;

impl Nftables {
    pub fn new() -> Self {
        Nftables
    }
}

fn nft_error(what: &str, e: nft::Error) -> Error {
    Error::Firewall(format!("{what}: {e}"))
}

/// The process's nf_tables socket, kept open between uses: the kernel makes the close
/// of a socket that committed a transaction wait until the objects that transaction
/// replaced are freed (an RCU grace period, about 10 ms on our test machine), which a
/// daemon need not pay at every reconcile. Answers left on it by an earlier use are
/// told apart by their sequence numbers.
static SOCKET: std::sync::Mutex<Option<Nft>> = std::sync::Mutex::new(None);

/// The socket, given back to [`SOCKET`] when dropped.
struct Pooled(Option<Nft>);

impl std::ops::Deref for Pooled {
    type Target = Nft;
    fn deref(&self) -> &Nft {
        self.0.as_ref().expect("a pooled socket")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Nft {
        self.0.as_mut().expect("a pooled socket")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(nft) = self.0.take() {
            *SOCKET.lock().unwrap_or_else(|e| e.into_inner()) = Some(nft);
        }
    }
}

fn open() -> Result<Pooled> {
    if let Some(nft) = SOCKET.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Ok(Pooled(Some(nft)));
    }
    Nft::new()
        .map(|nft| Pooled(Some(nft)))
        .map_err(|e| nft_error("opening an nf_tables netlink socket", e))
}

/// A piece of a rule: its expressions and its text as `nft list` prints it.
#[derive(Debug, Clone, Default)]
struct Piece {
    text: Vec<String>,
    exprs: Vec<Expr>,
}

impl Piece {
    fn new(text: impl Into<String>, exprs: Vec<Expr>) -> Piece {
        Piece {
            text: vec![text.into()],
            exprs,
        }
    }

    fn and(mut self, other: Piece) -> Piece {
        // nft prints a family check that an address match implies as the match alone
        // (`ip saddr X`, not `meta nfproto ipv4 ip saddr X`): so do we, so that `plan`
        // reads as `nft list` does.
        let implied = match (self.text.last().map(String::as_str), other.text.first()) {
            (Some("meta nfproto ipv4"), Some(next)) => next.starts_with("ip "),
            (Some("meta nfproto ipv6"), Some(next)) => next.starts_with("ip6 "),
            _ => false,
        };
        if implied {
            self.text.pop();
        }
        self.text.extend(other.text);
        self.exprs.extend(other.exprs);
        self
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn suffix(f: Family) -> &'static str {
    match f {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

fn nfproto(f: Family) -> Piece {
    let proto = match f {
        Family::V4 => value::NFPROTO_IPV4,
        Family::V6 => value::NFPROTO_IPV6,
    };
    Piece::new(
        format!("meta nfproto {}", family_name(f)),
        matches::nfproto(proto),
    )
}

fn l4proto(name: &str, proto: u8) -> Piece {
    Piece::new(format!("meta l4proto {name}"), matches::l4proto(proto))
}

/// ICMPv6 in the inet table (nft prints it as `meta l4proto ipv6-icmp`, the family
/// check being implied).
fn icmpv6() -> Piece {
    let mut exprs = matches::nfproto(value::NFPROTO_IPV6);
    exprs.extend(matches::l4proto(value::IPPROTO_ICMPV6));
    Piece::new("meta l4proto ipv6-icmp", exprs)
}

fn verdict(v: Verdict) -> Piece {
    let text = match &v {
        Verdict::Accept => "accept".to_string(),
        Verdict::Drop => "drop".to_string(),
        Verdict::Return => "return".to_string(),
        Verdict::Continue => "continue".to_string(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
    };
    Piece::new(text, vec![Expr::verdict(v)])
}

fn ret() -> Piece {
    verdict(Verdict::Return)
}

/// `meta mark & MASK` into register 1 (no `&` for an all-ones mask).
fn mark_masked(mask: u32) -> (String, Vec<Expr>) {
    let mut exprs = vec![Expr::meta(MetaKey::Mark, Reg::R1)];
    if mask == u32::MAX {
        return ("meta mark".into(), exprs);
    }
    exprs.push(Expr::bitwise_u32(Reg::R1, mask, 0));
    (format!("meta mark & {mask:#010x}"), exprs)
}

fn mark_is_set(mask: u32) -> Piece {
    let (text, mut exprs) = mark_masked(mask);
    exprs.push(Expr::cmp(CmpOp::Neq, Reg::R1, value::u32_host(0)));
    Piece::new(format!("{text} != 0x00000000"), exprs)
}

/// `meta mark & MASK vmap @MAP`.
fn mark_vmap(mask: u32, map: &str) -> Piece {
    let (text, mut exprs) = mark_masked(mask);
    exprs.push(Expr::vmap(map, Reg::R1));
    Piece::new(format!("{text} vmap @{map}"), exprs)
}

/// `ct mark & MASK vmap @MAP`.
fn ct_mark_vmap(mask: u32, map: &str) -> Piece {
    Piece::new(
        format!("ct mark & {mask:#010x} vmap @{map}"),
        vec![
            Expr::ct(CtKey::Mark, Reg::R1),
            Expr::bitwise_u32(Reg::R1, mask, 0),
            Expr::vmap(map, Reg::R1),
        ],
    )
}

/// `meta mark set meta mark & ~MASK | VALUE`: our bits, the others kept.
fn set_mark(mask: u32, v: u32) -> Piece {
    Piece::new(
        // nft prints the mask with the value's bits set (the same operation).
        format!("meta mark set meta mark & {:#010x} | {v:#010x}", !mask | v),
        vec![
            Expr::meta(MetaKey::Mark, Reg::R1),
            Expr::bitwise_u32(Reg::R1, !mask, v),
            Expr::meta_set(MetaKey::Mark, Reg::R1),
        ],
    )
}

/// `ct mark set ct mark & ~MASK | VALUE`.
fn set_ct_mark(mask: u32, v: u32) -> Piece {
    Piece::new(
        format!("ct mark set ct mark & {:#010x} | {v:#010x}", !mask | v),
        vec![
            Expr::ct(CtKey::Mark, Reg::R1),
            Expr::bitwise_u32(Reg::R1, !mask, v),
            Expr::ct_set(CtKey::Mark, Reg::R1),
        ],
    )
}

fn counter() -> Piece {
    Piece::new("counter", vec![Expr::counter()])
}

fn ct_state_not_new() -> Piece {
    Piece::new(
        "ct state != new",
        matches::ct_state(value::CT_STATE_NEW, false),
    )
}

fn ct_state_new() -> Piece {
    Piece::new(
        "ct state == new",
        matches::ct_state(value::CT_STATE_NEW, true),
    )
}

/// `fib daddr type TYPE`.
fn fib_daddr_type(name: &str, rtn: u32) -> Piece {
    Piece::new(
        format!("fib daddr type {name}"),
        vec![
            Expr::Fib {
                flags: FibFlags::DADDR,
                result: FibResult::AddrType,
                dreg: Reg::R1,
            },
            Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(rtn)),
        ],
    )
}

/// `ip daddr @SET` / `ip6 daddr @SET`.
fn daddr_in(f: Family, set: &str) -> Piece {
    match f {
        Family::V4 => Piece::new(format!("ip daddr @{set}"), matches::ip_daddr_in(set)),
        Family::V6 => Piece::new(format!("ip6 daddr @{set}"), matches::ip6_daddr_in(set)),
    }
}

/// `ip6 saddr PREFIX` for a prefix (masked compare, as nft does).
fn ip6_saddr_in(net: IpNet) -> Piece {
    let std::net::IpAddr::V6(addr) = net.addr() else {
        unreachable!("an IPv6 prefix");
    };
    let mask: u128 = u128::MAX
        .checked_shl(128 - u32::from(net.prefix()))
        .unwrap_or(0);
    let mut exprs = matches::nfproto(value::NFPROTO_IPV6);
    exprs.push(Expr::ip6_saddr(Reg::R1));
    exprs.push(Expr::Bitwise {
        sreg: Reg::R1,
        dreg: Reg::R1,
        mask: mask.to_be_bytes().to_vec(),
        xor: vec![0; 16],
    });
    exprs.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::ipv6(addr)));
    Piece::new(format!("ip6 saddr {net}"), exprs)
}

/// `numgen inc mod N vmap @MAP`.
fn numgen_vmap(modulus: u32, map: &str) -> Piece {
    Piece::new(
        format!("numgen inc mod {modulus} vmap @{map}"),
        vec![
            Expr::Numgen {
                mode: NumgenMode::Incremental,
                modulus,
                offset: 0,
                dreg: Reg::R1,
            },
            Expr::vmap(map, Reg::R1),
        ],
    )
}

/// Names of the per-value chains.
fn to_chain(f: Family, mark: u32) -> String {
    format!("to{}_{mark:08x}", suffix(f))
}
fn inbound_chain(mark: u32) -> String {
    format!("in_{mark:08x}")
}
fn restore_chain(mark: u32) -> String {
    format!("restore_{mark:08x}")
}
fn save_chain(mark: u32) -> String {
    format!("save_{mark:08x}")
}
fn round_map(f: Family, p: Protocol) -> String {
    format!("round{}_{}", suffix(f), p.name())
}
/// The chain holding the general rounds.
const BALANCE: &str = "balance";
/// The decision for a new connection to be balanced (rung 2's destinations, rungs 3 to
/// 6), shared by the machine's own connections (from output) and those arriving from a
/// LAN (from prerouting, through [`LAN`]).
const DECIDE: &str = "decide";
/// What arrives from a LAN and is not for the machine itself.
const LAN: &str = "lan";
/// A policy's chain in one family: its hit counter and its action.
fn policy_chain(f: Family, index: usize) -> String {
    format!("pol{}_{index}", suffix(f))
}
fn policy_round_map(f: Family, index: usize, p: Protocol) -> String {
    format!("pround{}_{index}_{}", suffix(f), p.name())
}
/// A policy's sticky destinations: address -> mark, with a timeout.
fn sticky_map(f: Family, index: usize) -> String {
    format!("sticky{}_{index}", suffix(f))
}
/// The verdict of a sticky destination's mark: on to its uplink, renewing the entry.
fn stick_vmap(f: Family, index: usize) -> String {
    format!("stick{}_{index}", suffix(f))
}
fn stick_chain(f: Family, index: usize, mark: u32) -> String {
    format!("pst{}_{index}_{mark:08x}", suffix(f))
}

/// The family and policy index of a `polF_N` chain.
fn parse_policy_chain(name: &str) -> Option<(Family, usize)> {
    let rest = name.strip_prefix("pol")?;
    let (f, index) = rest.split_once('_')?;
    let family = match f {
        "4" => Family::V4,
        "6" => Family::V6,
        _ => return None,
    };
    Some((family, index.parse().ok()?))
}

/// Which round a round map is, from its name.
fn parse_round_map(name: &str) -> Option<(RoundOf, Family, Protocol)> {
    let family = |f: &str| match f {
        "4" => Some(Family::V4),
        "6" => Some(Family::V6),
        _ => None,
    };
    let protocol = |p: &str| Protocol::ALL.into_iter().find(|x| x.name() == p);
    if let Some(rest) = name.strip_prefix("pround") {
        let mut parts = rest.splitn(3, '_');
        let f = family(parts.next()?)?;
        let index = parts.next()?.parse().ok()?;
        let p = protocol(parts.next()?)?;
        return Some((RoundOf::Policy(index), f, p));
    }
    let rest = name.strip_prefix("round")?;
    let (f, p) = rest.split_once('_')?;
    Some((RoundOf::General, family(f)?, protocol(p)?))
}

/// The table for a plan, with its text.
struct Built {
    contents: TableContents,
    text: String,
}

/// Accumulates chains, sets and rules in order, with the text of each.
#[derive(Default)]
struct Builder {
    chains: Vec<Chain>,
    sets: Vec<(Set, String)>,
    rules: BTreeMap<String, Vec<Piece>>,
}

impl Builder {
    fn chain(&mut self, chain: Chain) {
        self.rules.entry(chain.name.clone()).or_default();
        self.chains.push(chain);
    }

    fn rule(&mut self, chain: &str, piece: Piece) {
        self.rules.entry(chain.to_string()).or_default().push(piece);
    }

    fn set(&mut self, set: Set, text: String) {
        self.sets.push((set, text));
    }

    fn finish(self, fingerprint: &str) -> Built {
        let mut text = format!(
            "table inet {TABLE} {{\n\tcomment \"{}\"\n",
            comment(fingerprint)
        );
        for (_, t) in &self.sets {
            text.push_str(t);
        }
        for chain in &self.chains {
            text.push_str(&format!("\tchain {} {{\n", chain.name));
            if let Some(b) = &chain.base {
                let (kind, hook) = (
                    match b.kind {
                        ChainKind::Filter => "filter",
                        ChainKind::Route => "route",
                        ChainKind::Nat => "nat",
                    },
                    match b.hook {
                        Hook::Prerouting => "prerouting",
                        Hook::Input => "input",
                        Hook::Forward => "forward",
                        Hook::Output => "output",
                        Hook::Postrouting => "postrouting",
                    },
                );
                let named = |base: i32, name: &str| match b.priority - base {
                    0 => Some(name.to_string()),
                    d if d.abs() <= 10 => Some(format!(
                        "{name} {} {}",
                        if d < 0 { '-' } else { '+' },
                        d.abs()
                    )),
                    _ => None,
                };
                let prio = named(priority::MANGLE, "mangle")
                    .or_else(|| named(priority::SRCNAT, "srcnat"))
                    .unwrap_or_else(|| b.priority.to_string());
                text.push_str(&format!(
                    "\t\ttype {kind} hook {hook} priority {prio}; policy accept;\n"
                ));
            }
            for piece in &self.rules[&chain.name] {
                text.push_str(&format!("\t\t{}\n", piece.text.join(" ")));
            }
            text.push_str("\t}\n");
        }
        text.push_str("}\n");
        let rules = self
            .chains
            .iter()
            .flat_map(|c| {
                self.rules[&c.name]
                    .iter()
                    .map(|p| Rule::new(c.name.clone(), p.exprs.clone()))
            })
            .collect();
        Built {
            contents: TableContents {
                table: Table::new(nft::Family::Inet, TABLE).with_comment(comment(fingerprint)),
                chains: self.chains,
                sets: self.sets.into_iter().map(|(s, _)| s).collect(),
                rules,
            },
            text,
        }
    }
}

/// Text of a set or map for the rendering.
fn set_text(kind: &str, name: &str, typ: &str, flags: &str, elements: &[String]) -> String {
    let mut t = format!("\t{kind} {name} {{\n\t\t{typ}\n");
    if !flags.is_empty() {
        t.push_str(&format!("\t\tflags {flags}\n"));
    }
    if !elements.is_empty() {
        t.push_str(&format!("\t\telements = {{ {} }}\n", elements.join(", ")));
    }
    t.push_str("\t}\n");
    t
}

fn prefix_element(net: &IpNet) -> Element {
    match net.addr() {
        std::net::IpAddr::V4(a) => Element::ipv4_prefix(a, net.prefix()),
        std::net::IpAddr::V6(a) => Element::ipv6_prefix(a, net.prefix()),
    }
}

/// `ip saddr`/`ip daddr` (`destination`) of `f` in `nets`: one address compared, or an
/// anonymous interval set looked up.
fn address_match(f: Family, destination: bool, nets: &[IpNet]) -> Piece {
    let (load, field) = match (f, destination) {
        (Family::V4, false) => (Expr::ip_saddr(Reg::R1), "ip saddr"),
        (Family::V4, true) => (Expr::ip_daddr(Reg::R1), "ip daddr"),
        (Family::V6, false) => (Expr::ip6_saddr(Reg::R1), "ip6 saddr"),
        (Family::V6, true) => (Expr::ip6_daddr(Reg::R1), "ip6 daddr"),
    };
    if let [one] = nets
        && one.is_host()
    {
        let data = match one.addr() {
            std::net::IpAddr::V4(a) => value::ipv4(a),
            std::net::IpAddr::V6(a) => value::ipv6(a),
        };
        return Piece::new(
            format!("{field} {}", one.addr()),
            vec![load, Expr::cmp(CmpOp::Eq, Reg::R1, data)],
        );
    }
    let data = match f {
        Family::V4 => DataType::Ipv4Addr,
        Family::V6 => DataType::Ipv6Addr,
    };
    let set = Set::new("", KeyType::single(data))
        .interval()
        .with_elements(nets.iter().map(prefix_element).collect());
    let text: Vec<String> = nets
        .iter()
        .map(|n| {
            if n.is_host() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    Piece::new(
        format!("{field} {{ {} }}", text.join(", ")),
        vec![load, Expr::lookup_anonymous(set, Reg::R1)],
    )
}

fn protocol_name(p: u8) -> String {
    crate::config::policy::PROTOCOLS
        .iter()
        .find(|(_, n)| *n == p)
        .map_or_else(|| p.to_string(), |(name, _)| name.to_string())
}

/// What a rung looks at, after the family check.
fn match_piece(f: Family, m: &Matches) -> Piece {
    let mut piece = nfproto(f);
    if let Some(cg) = &m.cgroup {
        piece = piece.and(Piece::new(
            format!("socket cgroupv2 level {} \"{}\"", cg.level, cg.path),
            matches::cgroupv2(cg.level, cg.id),
        ));
    }
    if let Some(oif) = &m.oif {
        piece = piece.and(Piece::new(
            format!("oifname \"{oif}\""),
            matches::ifname(MetaKey::Oifname, oif),
        ));
    }
    if let Some(uid) = m.uid {
        piece = piece.and(Piece::new(format!("meta skuid {uid}"), matches::skuid(uid)));
    }
    if !m.sources.is_empty() {
        piece = piece.and(address_match(f, false, &m.sources));
    }
    if !m.destinations.is_empty() {
        piece = piece.and(address_match(f, true, &m.destinations));
    }
    match m.protocols.as_slice() {
        [] => {}
        [one] => piece = piece.and(l4proto(&protocol_name(*one), *one)),
        many => {
            let set = Set::new("", KeyType::single(DataType::InetProto))
                .with_elements(many.iter().map(|p| Element::new(vec![*p])).collect());
            let names: Vec<String> = many.iter().map(|p| protocol_name(*p)).collect();
            piece = piece.and(Piece::new(
                format!("meta l4proto {{ {} }}", names.join(", ")),
                vec![
                    Expr::meta(MetaKey::L4proto, Reg::R1),
                    Expr::lookup_anonymous(set, Reg::R1),
                ],
            ));
        }
    }
    match m.ports.as_slice() {
        [] => {}
        [(a, b)] if a == b => {
            piece = piece.and(Piece::new(
                format!("th dport {a}"),
                vec![
                    Expr::th_dport(Reg::R1),
                    Expr::cmp(CmpOp::Eq, Reg::R1, value::port(*a)),
                ],
            ))
        }
        ranges => {
            let set = Set::new("", KeyType::single(DataType::InetService))
                .interval()
                .with_elements(
                    ranges
                        .iter()
                        .map(|&(a, b)| Element::port_range(a, b))
                        .collect(),
                );
            let text: Vec<String> = ranges
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            piece = piece.and(Piece::new(
                format!("th dport {{ {} }}", text.join(", ")),
                vec![
                    Expr::th_dport(Reg::R1),
                    Expr::lookup_anonymous(set, Reg::R1),
                ],
            ));
        }
    }
    piece
}

/// The verdict of a simple action.
fn action_verdict(f: Family, action: &Action) -> Option<Piece> {
    Some(match action {
        Action::Uplink { mark, .. } => verdict(Verdict::Goto(to_chain(f, *mark))),
        Action::Drop => verdict(Verdict::Drop),
        Action::Direct => verdict(Verdict::Accept),
        Action::General => verdict(Verdict::Goto(BALANCE.into())),
        Action::Balance { .. } => return None,
    })
}

/// The rule scope of a round: the family and, for TCP and UDP, the protocol.
fn round_scope(f: Family, protocol: Protocol) -> Piece {
    match protocol {
        Protocol::Tcp => nfproto(f).and(l4proto("tcp", value::IPPROTO_TCP)),
        Protocol::Udp => nfproto(f).and(l4proto("udp", value::IPPROTO_UDP)),
        Protocol::Other => nfproto(f),
    }
}

/// A round's map (slot -> goto `target(mark)`) and its counted rule in `chain`.
fn round(
    b: &mut Builder,
    chain: &str,
    map: &str,
    f: Family,
    protocol: Protocol,
    slots: &[u32],
    target: impl Fn(u32) -> String,
) {
    let n = slots.len() as u32;
    let elements = slots
        .iter()
        .enumerate()
        .map(|(k, mark)| Element::u32_host(k as u32).verdict(Verdict::Goto(target(*mark))))
        .collect();
    let text: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(k, mark)| format!("{k} : goto {}", target(*mark)))
        .collect();
    b.set(
        Set::map(
            map,
            KeyType::single(DataType::Numgen {
                mode: NumgenMode::Incremental,
                modulus: n,
                offset: 0,
            }),
            SetData::Verdict,
        )
        .with_elements(elements),
        set_text(
            "map",
            map,
            &format!("typeof numgen inc mod {n} : verdict"),
            "",
            &text,
        ),
    );
    // The counter counts what the round dealt: its next slot is that count mod n.
    b.rule(
        chain,
        round_scope(f, protocol)
            .and(counter())
            .and(numgen_vmap(n, map)),
    );
}

/// Rungs 3 to 5, appended to the output chain in order, with the chains, maps and
/// sets they need. `keep`: sticky entries to carry over, by map name.
fn ladder(b: &mut Builder, p: &FirewallPlan, keep: &BTreeMap<String, Vec<Element>>) {
    let m = p.mark_mask;
    for rung in &p.ladder {
        let f = rung.family;
        let when = match_piece(f, &rung.matches);
        let Some(index) = rung.policy() else {
            if let Some(v) = action_verdict(f, &rung.action) {
                b.rule(DECIDE, when.and(v));
            }
            continue;
        };
        let chain = policy_chain(f, index);
        b.chain(Chain::regular(chain.clone()));
        b.rule(DECIDE, when.and(verdict(Verdict::Goto(chain.clone()))));
        // Its hits.
        b.rule(&chain, counter());
        let Action::Balance {
            rounds,
            members,
            sticky,
            sticky_by,
        } = &rung.action
        else {
            let v = action_verdict(f, &rung.action).expect("a simple action");
            b.rule(&chain, v);
            continue;
        };
        let target: Box<dyn Fn(u32) -> String> = match sticky {
            Some(secs) => {
                let map = sticky_map(f, index);
                let go = stick_vmap(f, index);
                let (key, typ) = match f {
                    Family::V4 => (DataType::Ipv4Addr, "ipv4_addr"),
                    Family::V6 => (DataType::Ipv6Addr, "ipv6_addr"),
                };
                let carried: Vec<Element> = keep
                    .get(&map)
                    .into_iter()
                    .flatten()
                    .filter(|e| match &e.data {
                        Some(ElemData::Value(v)) => v
                            .as_slice()
                            .try_into()
                            .is_ok_and(|b: [u8; 4]| members.contains(&u32::from_ne_bytes(b))),
                        _ => false,
                    })
                    .cloned()
                    .collect();
                let mut set = Set::map(
                    map.clone(),
                    KeyType::single(key),
                    SetData::Value(DataType::Mark),
                )
                .dynamic()
                .with_timeout(std::time::Duration::from_secs(*secs));
                set.elements = carried;
                b.set(
                    set,
                    format!(
                        "\tmap {map} {{\n\t\ttype {typ} : mark\n\t\tflags dynamic,timeout\n\t\ttimeout {secs}s\n\t}}\n"
                    ),
                );
                let mut go_elements = Vec::new();
                let mut go_text = Vec::new();
                // The key: the destination, or the client (source address).
                let daddr = match (f, sticky_by) {
                    (Family::V4, StickyBy::Destination) => ("ip daddr", Expr::ip_daddr(Reg::R1)),
                    (Family::V6, StickyBy::Destination) => ("ip6 daddr", Expr::ip6_daddr(Reg::R1)),
                    (Family::V4, StickyBy::Client) => ("ip saddr", Expr::ip_saddr(Reg::R1)),
                    (Family::V6, StickyBy::Client) => ("ip6 saddr", Expr::ip6_saddr(Reg::R1)),
                };
                for &mark in members {
                    let st = stick_chain(f, index, mark);
                    b.chain(Chain::regular(st.clone()));
                    b.rule(
                        &st,
                        nfproto(f)
                            .and(Piece::new(
                                format!("update @{map} {{ {} : {mark:#010x} }}", daddr.0),
                                vec![
                                    daddr.1.clone(),
                                    Expr::immediate(Reg::R2, value::u32_host(mark)),
                                    Expr::Dynset {
                                        op: DynsetOp::Update,
                                        set: map.clone(),
                                        sreg_key: Reg::R1,
                                        sreg_data: Some(Reg::R2),
                                        timeout: None,
                                    },
                                ],
                            ))
                            .and(verdict(Verdict::Goto(to_chain(f, mark)))),
                    );
                    go_elements.push(Element::u32_host(mark).verdict(Verdict::Goto(st.clone())));
                    go_text.push(format!("{mark:#010x} : goto {st}"));
                }
                b.set(
                    Set::map(
                        go.clone(),
                        KeyType::single(DataType::Mark),
                        SetData::Verdict,
                    )
                    .with_elements(go_elements),
                    set_text("map", &go, "type mark : verdict", "", &go_text),
                );
                // A destination it remembers goes back to its uplink (the packet's mark
                // was 0 up to here: any mark makes the output chain return early).
                b.rule(
                    &chain,
                    nfproto(f).and(Piece::new(
                        format!("meta mark set {} map @{map} meta mark vmap @{go}", daddr.0),
                        vec![
                            daddr.1,
                            Expr::map(map.clone(), Reg::R1, Reg::R1),
                            Expr::meta_set(MetaKey::Mark, Reg::R1),
                            Expr::meta(MetaKey::Mark, Reg::R1),
                            Expr::vmap(go.clone(), Reg::R1),
                        ],
                    )),
                );
                // Never reached unless the map held a mark not in the verdict map.
                b.rule(&chain, set_mark(m, 0));
                Box::new(move |mark| stick_chain(f, index, mark))
            }
            None => Box::new(move |mark| to_chain(f, mark)),
        };
        for r in rounds {
            let map = policy_round_map(f, index, r.protocol);
            round(b, &chain, &map, f, r.protocol, &r.slots, &target);
        }
    }
}

fn build(p: &FirewallPlan, fingerprint: &str) -> Built {
    build_keeping(p, fingerprint, &BTreeMap::new())
}

fn build_keeping(
    p: &FirewallPlan,
    fingerprint: &str,
    keep: &BTreeMap<String, Vec<Element>>,
) -> Built {
    let m = p.mark_mask;
    let mut b = Builder::default();
    let out = "output";
    let pre = "prerouting";
    let post = "postrouting";
    b.chain(Chain::base(
        out,
        ChainKind::Route,
        Hook::Output,
        MARK_PRIORITY,
        Policy::Accept,
    ));
    b.chain(Chain::base(
        pre,
        ChainKind::Filter,
        Hook::Prerouting,
        MARK_PRIORITY,
        Policy::Accept,
    ));
    b.chain(Chain::base(
        post,
        ChainKind::Nat,
        Hook::Postrouting,
        NAT_PRIORITY,
        Policy::Accept,
    ));

    // Every value of ours a connection can carry: each uplink's outbound and inbound
    // mark. `restore` puts it back on a packet; `save` records a socket's choice.
    let values: BTreeSet<u32> = p
        .uplinks
        .iter()
        .flat_map(|u| [u.mark, u.inbound_mark])
        .collect();
    let mut restore = Vec::new();
    let mut restore_text = Vec::new();
    let mut save = Vec::new();
    let mut save_text = Vec::new();
    for &v in &values {
        b.chain(Chain::regular(restore_chain(v)));
        b.rule(&restore_chain(v), set_mark(m, v));
        restore.push(Element::u32_host(v).verdict(Verdict::Goto(restore_chain(v))));
        restore_text.push(format!("{v:#010x} : goto {}", restore_chain(v)));
        b.chain(Chain::regular(save_chain(v)));
        b.rule(&save_chain(v), set_ct_mark(m, v));
        save.push(Element::u32_host(v).verdict(Verdict::Goto(save_chain(v))));
        save_text.push(format!("{v:#010x} : goto {}", save_chain(v)));
    }
    b.set(
        Set::map("restore", KeyType::single(DataType::Mark), SetData::Verdict)
            .with_elements(restore),
        set_text("map", "restore", "type mark : verdict", "", &restore_text),
    );
    b.set(
        Set::map("save", KeyType::single(DataType::Mark), SetData::Verdict).with_elements(save),
        set_text("map", "save", "type mark : verdict", "", &save_text),
    );

    // Output: the decision for a connection's first packet.
    // A socket that marks its packets with our bits (the daemon's health probes) chose
    // its uplink: record it on the connection, so that the replies get the mark back
    // and pass a strict rp_filter on an uplink that is not the main table's default.
    b.rule(out, mark_is_set(m).and(mark_vmap(m, "save")));
    // A packet that already carries any mark was routed on purpose by whoever set it
    // (a VPN client's SO_MARK): leave it alone.
    b.rule(out, mark_is_set(u32::MAX).and(ret()));
    // A connection we marked keeps its mark.
    b.rule(out, ct_mark_vmap(m, "restore"));
    // Connections older than our table keep the route they started with.
    b.rule(out, ct_state_not_new().and(ret()));
    if p.has(Family::V6) {
        // New ICMPv6 is never balanced: neighbour discovery, router advertisements and
        // MLD belong to their link; errors and echo replies of a connection we marked
        // carry its mark and follow it.
        b.rule(out, icmpv6().and(ret()));
    }
    for (name, rtn) in [
        ("local", value::RTN_LOCAL),
        ("broadcast", value::RTN_BROADCAST),
        ("multicast", value::RTN_MULTICAST),
    ] {
        b.rule(out, fib_daddr_type(name, rtn).and(ret()));
    }
    b.chain(Chain::regular(DECIDE));
    b.rule(out, verdict(Verdict::Goto(DECIDE.into())));
    for &f in &p.families {
        let set = format!("exclude{}", suffix(f));
        let nets: Vec<&IpNet> = p.exclude_of(f).collect();
        let (typ, data) = match f {
            Family::V4 => ("type ipv4_addr", DataType::Ipv4Addr),
            Family::V6 => ("type ipv6_addr", DataType::Ipv6Addr),
        };
        b.set(
            Set::new(set.clone(), KeyType::single(data))
                .interval()
                .with_elements(nets.iter().map(|n| prefix_element(n)).collect()),
            set_text(
                "set",
                &set,
                typ,
                "interval",
                &nets.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ),
        );
        b.rule(DECIDE, daddr_in(f, &set).and(ret()));
    }

    // One chain per family and mark: sets the mark on the packet and the connection.
    for &f in &p.families {
        for u in p.uplinks_of(f) {
            let chain = to_chain(f, u.mark);
            b.chain(Chain::regular(chain.clone()));
            b.rule(
                &chain,
                set_mark(m, u.mark)
                    .and(set_ct_mark(m, u.mark))
                    .and(counter()),
            );
        }
    }
    // Rungs 3 to 5: the application's choice, the network's, the user's.
    ladder(&mut b, p, keep);
    // Rung 6, the rounds: one counter per family and protocol, a goto per slot.
    b.chain(Chain::regular(BALANCE));
    b.rule(DECIDE, verdict(Verdict::Goto(BALANCE.into())));
    for &f in &p.families {
        for r in p.rounds_of(f) {
            let map = round_map(f, r.protocol);
            round(&mut b, BALANCE, &map, f, r.protocol, &r.slots, |mark| {
                to_chain(f, mark)
            });
        }
    }

    // Prerouting: inbound connections are marked with the uplink they came in on.
    b.rule(pre, ct_mark_vmap(m, "restore"));
    if p.has(Family::V6) {
        // Link-local peers are on the link whatever the mark, and of ICMPv6 only echo
        // requests open anything worth answering through the uplink they came in on.
        b.rule(pre, ip6_saddr_in(IpNet::link_local6()).and(ret()));
        let mut not_echo = icmpv6();
        not_echo.text = vec!["icmpv6 type != echo-request".into()];
        not_echo.exprs.extend([
            Expr::icmpv6_type(Reg::R1),
            Expr::cmp(CmpOp::Neq, Reg::R1, value::byte(value::ICMPV6_ECHO_REQUEST)),
        ]);
        b.rule(pre, not_echo.and(ret()));
    }
    if p.routes_lans() {
        // New connections from a LAN take the same decision as the machine's own, but
        // not those for the machine itself (its DNS, DHCP, ssh), nor broadcasts.
        let names: Vec<String> = p.lans.iter().map(|l| format!("\"{}\"", l.iface)).collect();
        let set = Set::new("", KeyType::single(DataType::Ifname))
            .with_elements(p.lans.iter().map(|l| Element::ifname(&l.iface)).collect());
        b.chain(Chain::regular(LAN));
        b.rule(
            pre,
            ct_state_new()
                .and(Piece::new(
                    format!("iifname {{ {} }}", names.join(", ")),
                    vec![
                        Expr::meta(MetaKey::Iifname, Reg::R1),
                        Expr::lookup_anonymous(set, Reg::R1),
                    ],
                ))
                .and(verdict(Verdict::Goto(LAN.into()))),
        );
        // A mark someone set earlier (raw) is theirs to route by.
        b.rule(LAN, mark_is_set(u32::MAX).and(ret()));
        for (name, rtn) in [
            ("local", value::RTN_LOCAL),
            ("broadcast", value::RTN_BROADCAST),
            ("multicast", value::RTN_MULTICAST),
        ] {
            b.rule(LAN, fib_daddr_type(name, rtn).and(ret()));
        }
        b.rule(LAN, verdict(Verdict::Goto(DECIDE.into())));
    }
    for &f in &p.families {
        let map = format!("inbound{}", suffix(f));
        let mut elements = Vec::new();
        let mut text = Vec::new();
        for u in p.uplinks_of(f) {
            let chain = inbound_chain(u.inbound_mark);
            if !b.rules.contains_key(&chain) {
                b.chain(Chain::regular(chain.clone()));
                b.rule(
                    &chain,
                    set_mark(m, u.inbound_mark).and(set_ct_mark(m, u.inbound_mark)),
                );
            }
            elements.push(Element::ifname(&u.iface).verdict(Verdict::Goto(chain.clone())));
            text.push(format!("\"{}\" : goto {chain}", u.iface));
        }
        b.set(
            Set::map(
                map.clone(),
                KeyType::single(DataType::Ifname),
                SetData::Verdict,
            )
            .with_elements(elements),
            set_text("map", &map, "type ifname : verdict", "", &text),
        );
        b.rule(
            pre,
            nfproto(f)
                .and(ct_state_new())
                .and(fib_daddr_type("local", value::RTN_LOCAL))
                .and(Piece::new(
                    format!("iifname vmap @{map}"),
                    vec![
                        Expr::meta(MetaKey::Iifname, Reg::R1),
                        Expr::vmap(map.clone(), Reg::R1),
                    ],
                )),
        );
    }

    // Postrouting: connections we sent out through an uplink are masqueraded there.
    for &f in &p.families {
        let set = format!("masq{}", suffix(f));
        let ups: Vec<_> = p.uplinks_of(f).collect();
        b.set(
            Set::new(
                set.clone(),
                KeyType::concat(vec![DataType::Ifname, DataType::Mark]),
            )
            .with_elements(
                ups.iter()
                    .map(|u| Element::concat(&[&value::ifname(&u.iface), &value::u32_host(u.mark)]))
                    .collect(),
            ),
            set_text(
                "set",
                &set,
                "type ifname . mark",
                "",
                &ups.iter()
                    .map(|u| format!("\"{}\" . {:#010x}", u.iface, u.mark))
                    .collect::<Vec<_>>(),
            ),
        );
        b.rule(
            post,
            nfproto(f).and(Piece::new(
                format!("oifname . meta mark & {m:#010x} @{set} masquerade"),
                vec![
                    Expr::meta(MetaKey::Oifname, Reg::R1),
                    Expr::meta(MetaKey::Mark, Reg::R2),
                    Expr::bitwise_u32(Reg::R2, m, 0),
                    Expr::lookup(set.clone(), Reg::R1),
                    Expr::Masquerade {
                        flags: 0,
                        proto_min: None,
                        proto_max: None,
                    },
                ],
            )),
        );
        // A connection that left through another uplink than its mark's: a socket bound
        // to that device (SO_BINDTODEVICE) goes where it is bound whatever we marked,
        // from that device's own address. The connection takes that uplink's mark, so
        // that its replies pass the reverse-path filter there and status counts it
        // where it went.
        let map = format!("owner{}", suffix(f));
        let mut elements = Vec::new();
        let mut text = Vec::new();
        for u in &ups {
            let chain = format!("own_{:08x}", u.mark);
            if !b.rules.contains_key(&chain) {
                b.chain(Chain::regular(chain.clone()));
                b.rule(&chain, set_ct_mark(m, u.mark));
            }
            for other in ups.iter().filter(|o| o.mark != u.mark) {
                elements.push(
                    Element::concat(&[&value::ifname(&u.iface), &value::u32_host(other.mark)])
                        .verdict(Verdict::Goto(chain.clone())),
                );
                text.push(format!(
                    "\"{}\" . {:#010x} : goto {chain}",
                    u.iface, other.mark
                ));
            }
        }
        b.set(
            Set::map(
                map.clone(),
                KeyType::concat(vec![DataType::Ifname, DataType::Mark]),
                SetData::Verdict,
            )
            .with_elements(elements),
            set_text("map", &map, "type ifname . mark : verdict", "", &text),
        );
        b.rule(
            post,
            nfproto(f).and(Piece::new(
                format!("oifname . meta mark & {m:#010x} vmap @{map}"),
                vec![
                    Expr::meta(MetaKey::Oifname, Reg::R1),
                    Expr::meta(MetaKey::Mark, Reg::R2),
                    Expr::bitwise_u32(Reg::R2, m, 0),
                    Expr::vmap(map.clone(), Reg::R1),
                ],
            )),
        );
    }
    b.finish(fingerprint)
}

impl Firewall for Nftables {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }

    fn installed(&self) -> Result<bool> {
        let mut nft = open()?;
        let table = nft
            .get_table(nft::Family::Inet, TABLE)
            .map_err(|e| nft_error("reading our table", e))?;
        Ok(table.is_some())
    }

    fn is_current(&self, p: &FirewallPlan) -> Result<bool> {
        let mut nft = open()?;
        let table = nft
            .get_table(nft::Family::Inet, TABLE)
            .map_err(|e| nft_error("reading our table", e))?;
        let want = comment(&p.fingerprint(Backend::Nftables, RENDERING));
        Ok(table.and_then(|t| t.comment).as_deref() == Some(want.as_str()))
    }

    fn apply(
        &self,
        p: &FirewallPlan,
        created: &BTreeSet<String>,
        // Our table is the only container we create, and flush removes it by name.
        _record: &mut dyn FnMut(&BTreeSet<String>) -> Result<()>,
    ) -> Result<BTreeSet<String>> {
        // Sticky destinations outlive the table they were learned in: read them before
        // the replacement, and carry over those whose uplink the new plan still uses.
        let keep = read_sticky_maps(p)?;
        let mut built = build_keeping(p, &p.fingerprint(Backend::Nftables, RENDERING), &keep);
        if super::fault_injected() {
            built.contents.rules.push(Rule::new(
                "output",
                vec![Expr::verdict(Verdict::Jump("nm-multiwan-missing".into()))],
            ));
        }
        let mut batch = Batch::new();
        batch
            .replace_table(&built.contents)
            .map_err(|e| nft_error("building our table", e))?;
        let mut nft = open()?;
        nft.commit(&batch)
            .map_err(|e| nft_error("the kernel refused our table (nothing was changed)", e))?;
        Ok(created.clone())
    }

    fn flush(&self, created: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let mut batch = Batch::new();
        batch.delete_table_if_exists(nft::Family::Inet, TABLE);
        open()?
            .commit(&batch)
            .map_err(|e| nft_error("removing our table", e))?;
        // Our table is the only container we use, and it goes whole.
        Ok(created.clone())
    }

    fn counters(&self) -> Result<Counters> {
        let mut nft = open()?;
        let rules = nft
            .list_rules(nft::Family::Inet, TABLE)
            .map_err(|e| nft_error("reading our rules", e))?;
        let mut out = Counters::default();
        for r in rules {
            let Some(c) = r.counter() else { continue };
            if let Some((f, mark)) = parse_to_chain(&r.chain) {
                *out.placed.entry((f, mark)).or_default() += c.packets;
                continue;
            }
            // A round's rule: counter, numgen, vmap of the round's map.
            let round = r.exprs.iter().find_map(|e| match e {
                Expr::Lookup {
                    set: SetRef::Named(name),
                    ..
                } => parse_round_map(name),
                _ => None,
            });
            if let Some(key) = round {
                *out.dealt.entry(key).or_default() += c.packets;
                continue;
            }
            // A policy chain's first rule: its hits.
            if let Some((_, index)) = parse_policy_chain(&r.chain) {
                *out.hits.entry(index).or_default() += c.packets;
            }
        }
        Ok(out)
    }

    fn sticky(&self, p: &FirewallPlan) -> Result<Vec<StickyEntry>> {
        let maps = read_sticky_maps(p)?;
        let mut out = Vec::new();
        for rung in &p.ladder {
            let (Some(index), Action::Balance { members, .. }) = (rung.policy(), &rung.action)
            else {
                continue;
            };
            for e in maps
                .get(&sticky_map(rung.family, index))
                .into_iter()
                .flatten()
            {
                let Some(ElemData::Value(v)) = &e.data else {
                    continue;
                };
                let Ok(bytes) = <[u8; 4]>::try_from(v.as_slice()) else {
                    continue;
                };
                let mark = u32::from_ne_bytes(bytes);
                let destination = match e.key.start().len() {
                    4 => <[u8; 4]>::try_from(e.key.start())
                        .map(std::net::IpAddr::from)
                        .ok(),
                    16 => <[u8; 16]>::try_from(e.key.start())
                        .map(std::net::IpAddr::from)
                        .ok(),
                    _ => None,
                };
                if let Some(destination) = destination
                    && members.contains(&mark)
                {
                    out.push(StickyEntry {
                        policy: index,
                        destination,
                        mark,
                        // read_sticky_maps put the time left in `timeout`.
                        expires_in: e.timeout.or(e.expiration).map_or(0, |d| d.as_secs()),
                    });
                }
            }
        }
        Ok(out)
    }

    fn render(&self, p: &FirewallPlan) -> String {
        build(p, &p.fingerprint(Backend::Nftables, RENDERING)).text
    }
}

/// The elements of the sticky maps `p` has that exist in the kernel now, by map name
/// (nothing when our table is not there).
fn read_sticky_maps(p: &FirewallPlan) -> Result<BTreeMap<String, Vec<Element>>> {
    let names: Vec<String> = p
        .ladder
        .iter()
        .filter_map(|r| match (r.policy(), &r.action) {
            (
                Some(index),
                Action::Balance {
                    sticky: Some(_), ..
                },
            ) => Some(sticky_map(r.family, index)),
            _ => None,
        })
        .collect();
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let mut nft = open()?;
    for name in names {
        match nft.list_set_elements(nft::Family::Inet, TABLE, &name) {
            Ok(elements) => {
                let live: Vec<Element> = elements
                    .into_iter()
                    .filter_map(|mut e| {
                        // Carried over with the time it had left.
                        let left = e.expiration.filter(|d| !d.is_zero())?;
                        e.timeout = Some(left);
                        e.expiration = None;
                        Some(e)
                    })
                    .collect();
                out.insert(name, live);
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(nft_error(&format!("reading sticky map {name}"), e)),
        }
    }
    Ok(out)
}

/// The family and mark of a `toF_MARK` chain.
fn parse_to_chain(name: &str) -> Option<(Family, u32)> {
    let rest = name.strip_prefix("to")?;
    let (f, mark) = rest.split_once('_')?;
    let family = match f {
        "4" => Family::V4,
        "6" => Family::V6,
        _ => return None,
    };
    Some((family, u32::from_str_radix(mark, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::two_dual_uplinks;

    #[test]
    fn renders_one_table_for_both_families() {
        let p = two_dual_uplinks().firewall;
        let text = Nftables::new().render(&p);
        for want in [
            "table inet nm-multiwan {",
            "type route hook output priority mangle - 1; policy accept;",
            "type nat hook postrouting priority srcnat - 1; policy accept;",
            "meta nfproto ipv4 meta l4proto tcp counter numgen inc mod 2 vmap @round4_tcp",
            "meta nfproto ipv6 meta l4proto udp counter numgen inc mod 2 vmap @round6_udp",
            "meta nfproto ipv4 counter numgen inc mod 2 vmap @round4_other",
            "ip saddr 10.0.2.2 goto to4_02000000",
            "meta nfproto ipv6 oifname \"wlan0\" goto to6_02000000",
            "goto balance",
            "0 : goto to4_01000000, 1 : goto to4_02000000",
            "meta mark set meta mark & 0xc1ffffff | 0x01000000 ct mark set ct mark & 0xc1ffffff | 0x01000000 counter",
            "elements = { 10.0.1.0/24, 10.0.2.0/24 }",
            "elements = { 2001:db8:1::/64, 2001:db8:2::/64, fe80::/10, ff00::/8 }",
            "meta l4proto ipv6-icmp return",
            "ip6 saddr fe80::/10 return",
            "\"wlan0\" : goto in_22000000",
            "\"eth0\" . 0x01000000, \"wlan0\" . 0x02000000",
            "meta nfproto ipv4 oifname . meta mark & 0x3f000000 @masq4 masquerade",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let built = build(&p, "x");
        // One rule per line of text, each with its expressions.
        let lines = text
            .lines()
            .filter(|l| {
                l.starts_with("\t\t")
                    && !l.contains("type ")
                    && !l.contains("elements")
                    && !l.contains("flags")
            })
            .count();
        assert_eq!(built.contents.rules.len(), lines);
        assert!(built.contents.rules.iter().all(|r| !r.exprs.is_empty()));
    }

    /// Router mode: new connections arriving on a LAN reach the same decision as the
    /// machine's own, after what is for the machine itself; a client-sticky policy
    /// keys its map by source address.
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
        let text = Nftables::new().render(&p);
        for want in [
            "ct state == new iifname { \"lan0\" } goto lan",
            "\tchain lan {\n\t\tmeta mark != 0x00000000 return\n\t\tfib daddr type local return",
            "fib daddr type multicast return\n\t\tgoto decide\n",
            "\tchain output {",
            "fib daddr type multicast return\n\t\tgoto decide\n\t}",
            "elements = { 10.0.1.0/24, 10.0.2.0/24, 10.42.0.0/24 }",
            "\n\t\tip saddr { 10.42.0.0/24 } goto pol4_0",
            "update @sticky4_0 { ip saddr : 0x01000000 }",
            "meta mark set ip saddr map @sticky4_0",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let built = build(&p, "x");
        assert!(built.contents.chains.iter().any(|c| c.name == "decide"));
    }

    #[test]
    fn counter_chains_name_their_mark() {
        assert_eq!(
            parse_to_chain(&to_chain(Family::V6, 0x0200_0000)),
            Some((Family::V6, 0x0200_0000))
        );
        assert_eq!(parse_to_chain("output"), None);
        assert_eq!(parse_to_chain("restore_01000000"), None);
    }

    #[test]
    fn ipv4_only_has_nothing_ipv6() {
        let mut p = two_dual_uplinks().firewall;
        p.families = vec![Family::V4];
        p.rounds.retain(|r| r.family == Family::V4);
        p.exclude.retain(|n| n.family() == Family::V4);
        p.ladder.retain(|r| r.family == Family::V4);
        let text = Nftables::new().render(&p);
        assert!(!text.contains("ipv6") && !text.contains("round6") && !text.contains("exclude6"));
    }
}
