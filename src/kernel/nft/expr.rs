//! Rule expressions: the kernel's small instructions (load into a register, compare,
//! look up in a set, set a mark...), with their encoding and decoding, and helpers that
//! build the sequences `nft` generates for common matches.
//!
//! Registers follow `nft`: 16-byte registers 1..4 ([`Reg::R1`]...), and 32-bit registers
//! for the later fields of a concatenation ([`Reg::at_byte`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub use super::data::NumgenMode;
use super::data::{self, DataItem, Family, Verdict};
use super::set::Set;
use super::value;
use super::wire::{self, Attr, AttrWriter, Attrs, Malformed, WireResult};

/// A register. [`Reg::VERDICT`] is where a verdict goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg(pub u32);

impl Reg {
    pub const VERDICT: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);

    /// The 32-bit register `NFT_REG32_nn`.
    pub fn reg32(n: u32) -> Reg {
        Reg(8 + n)
    }

    /// The register a value starting `offset` bytes into [`Reg::R1`] occupies, as `nft`
    /// numbers it: a 16-byte register when aligned on one, else a 32-bit register. For
    /// the fields of a concatenation (each field padded to 4 bytes).
    pub fn at_byte(offset: usize) -> Reg {
        let n32 = (offset / 4) as u32;
        if n32.is_multiple_of(4) {
            Reg(1 + n32 / 4)
        } else {
            Reg::reg32(n32)
        }
    }
}

/// `meta` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    Len,
    Protocol,
    Priority,
    Mark,
    Iif,
    Oif,
    Iifname,
    Oifname,
    Skuid,
    Skgid,
    Nfproto,
    L4proto,
    Pkttype,
    Cgroup,
    Other(u32),
}

impl MetaKey {
    fn to_raw(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Priority => 2,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::Iifname => 6,
            MetaKey::Oifname => 7,
            MetaKey::Skuid => 10,
            MetaKey::Skgid => 11,
            MetaKey::Nfproto => 15,
            MetaKey::L4proto => 16,
            MetaKey::Pkttype => 19,
            MetaKey::Cgroup => 23,
            MetaKey::Other(v) => v,
        }
    }

    fn from_raw(v: u32) -> MetaKey {
        match v {
            0 => MetaKey::Len,
            1 => MetaKey::Protocol,
            2 => MetaKey::Priority,
            3 => MetaKey::Mark,
            4 => MetaKey::Iif,
            5 => MetaKey::Oif,
            6 => MetaKey::Iifname,
            7 => MetaKey::Oifname,
            10 => MetaKey::Skuid,
            11 => MetaKey::Skgid,
            15 => MetaKey::Nfproto,
            16 => MetaKey::L4proto,
            19 => MetaKey::Pkttype,
            23 => MetaKey::Cgroup,
            v => MetaKey::Other(v),
        }
    }
}

/// `ct` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    State,
    Direction,
    Status,
    Mark,
    Expiration,
    L3proto,
    Protocol,
    ProtoSrc,
    ProtoDst,
    Zone,
    Other(u32),
}

impl CtKey {
    fn to_raw(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Expiration => 5,
            CtKey::L3proto => 7,
            CtKey::Protocol => 10,
            CtKey::ProtoSrc => 11,
            CtKey::ProtoDst => 12,
            CtKey::Zone => 17,
            CtKey::Other(v) => v,
        }
    }

    fn from_raw(v: u32) -> CtKey {
        match v {
            0 => CtKey::State,
            1 => CtKey::Direction,
            2 => CtKey::Status,
            3 => CtKey::Mark,
            5 => CtKey::Expiration,
            7 => CtKey::L3proto,
            10 => CtKey::Protocol,
            11 => CtKey::ProtoSrc,
            12 => CtKey::ProtoDst,
            17 => CtKey::Zone,
            v => CtKey::Other(v),
        }
    }
}

/// Which conntrack direction a `ct` key reads (`ct original ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtDirection {
    Original,
    Reply,
}

/// Where a payload offset counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
    Inner,
}

impl PayloadBase {
    fn to_raw(self) -> u32 {
        match self {
            PayloadBase::Link => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
            PayloadBase::Inner => 3,
        }
    }

    fn from_raw(v: u32) -> WireResult<PayloadBase> {
        Ok(match v {
            0 => PayloadBase::Link,
            1 => PayloadBase::Network,
            2 => PayloadBase::Transport,
            3 => PayloadBase::Inner,
            v => return Err(Malformed(format!("payload base {v}"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    fn to_raw(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }

    fn from_raw(v: u32) -> WireResult<CmpOp> {
        Ok(match v {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            v => return Err(Malformed(format!("cmp op {v}"))),
        })
    }
}

/// The set a `lookup` reads: a named set of the table, or an anonymous one that is
/// created with the rule (`{ 443, 8000-8100 }`); its name and flags are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRef {
    Named(String),
    Anonymous(Box<Set>),
}

impl SetRef {
    pub fn named(name: impl Into<String>) -> SetRef {
        SetRef::Named(name.into())
    }
}

/// `fib` lookup inputs (`NFTA_FIB_F_*`), combined with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FibFlags(pub u32);

impl FibFlags {
    pub const SADDR: FibFlags = FibFlags(1);
    pub const DADDR: FibFlags = FibFlags(2);
    pub const MARK: FibFlags = FibFlags(4);
    pub const IIF: FibFlags = FibFlags(8);
    pub const OIF: FibFlags = FibFlags(16);
    /// Only whether a result exists (`... oif missing`).
    pub const PRESENT: FibFlags = FibFlags(32);
}

impl std::ops::BitOr for FibFlags {
    type Output = FibFlags;
    fn bitor(self, rhs: FibFlags) -> FibFlags {
        FibFlags(self.0 | rhs.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FibResult {
    Oif,
    Oifname,
    /// The route type (`RTN_LOCAL`, ...): `fib daddr type`.
    AddrType,
}

impl FibResult {
    fn to_raw(self) -> u32 {
        match self {
            FibResult::Oif => 1,
            FibResult::Oifname => 2,
            FibResult::AddrType => 3,
        }
    }

    fn from_raw(v: u32) -> WireResult<FibResult> {
        Ok(match v {
            1 => FibResult::Oif,
            2 => FibResult::Oifname,
            3 => FibResult::AddrType,
            v => return Err(Malformed(format!("fib result {v}"))),
        })
    }
}

/// What `socket` reads from the packet's local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKey {
    /// `IP_TRANSPARENT` set (1 byte... as u32 in the register).
    Transparent,
    Mark,
    /// Bound to the wildcard address.
    Wildcard,
    /// The id (inode number) of the socket's cgroup v2 ancestor at `level` (u64).
    CgroupV2 {
        level: u32,
    },
}

/// NAT range flags (`NF_NAT_RANGE_*`), for masquerade, snat and dnat.
pub mod nat_flags {
    pub const MAP_IPS: u32 = 1;
    pub const PROTO_SPECIFIED: u32 = 2;
    pub const PROTO_RANDOM: u32 = 4;
    pub const PERSISTENT: u32 = 8;
    pub const PROTO_RANDOM_FULLY: u32 = 16;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// How to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// ICMP (or ICMPv6 in an ip6 table) unreachable with this code.
    IcmpUnreach(u8),
    TcpReset,
    /// The family-independent ICMP code of inet tables (`NFT_REJECT_ICMPX_*`:
    /// 0 no route, 1 port unreachable, 2 host unreachable, 3 admin prohibited).
    IcmpxUnreach(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    Add,
    Update,
    Delete,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta KEY` into `dreg`.
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    /// `meta KEY set` from `sreg`.
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    /// `ct [DIRECTION] KEY` into `dreg`.
    Ct {
        key: CtKey,
        direction: Option<CtDirection>,
        dreg: Reg,
    },
    /// `ct KEY set` from `sreg`.
    CtSet {
        key: CtKey,
        sreg: Reg,
    },
    /// `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// Compares `sreg` with `data`; the rule stops here when false.
    Cmp {
        op: CmpOp,
        sreg: Reg,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`, over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Loads constant data into a register.
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    /// The rule's verdict (an immediate into the verdict register).
    Verdict(Verdict),
    /// Looks `sreg` up in a set: a match when found (not found with `invert`). For a map,
    /// the value goes to `dreg`; to [`Reg::VERDICT`] for a verdict map.
    Lookup {
        set: SetRef,
        sreg: Reg,
        dreg: Option<Reg>,
        invert: bool,
    },
    /// `numgen inc|random mod MODULUS offset OFFSET` into `dreg`.
    Numgen {
        mode: NumgenMode,
        modulus: u32,
        offset: u32,
        dreg: Reg,
    },
    Fib {
        flags: FibFlags,
        result: FibResult,
        dreg: Reg,
    },
    Socket {
        key: SocketKey,
        dreg: Reg,
    },
    /// Counts packets and bytes; read back with the kernel's values.
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// `masquerade`, with `nat_flags` and an optional port range from registers.
    Masquerade {
        flags: u32,
        proto_min: Option<Reg>,
        proto_max: Option<Reg>,
    },
    /// `snat`/`dnat` to addresses (and ports) loaded in registers before.
    Nat {
        kind: NatKind,
        /// `Family::Ip` or `Family::Ip6`.
        family: Family,
        addr_min: Option<Reg>,
        addr_max: Option<Reg>,
        proto_min: Option<Reg>,
        proto_max: Option<Reg>,
        flags: u32,
    },
    Reject(Reject),
    /// Adds, updates or deletes the element `sreg_key` (: `sreg_data`) of a set
    /// from the packet path.
    Dynset {
        op: DynsetOp,
        set: String,
        sreg_key: Reg,
        sreg_data: Option<Reg>,
        timeout: Option<Duration>,
    },
    Log {
        prefix: Option<String>,
        /// To nflog group; otherwise to the kernel log.
        group: Option<u16>,
        /// syslog level (0 emerg ... 7 debug) for the kernel log.
        level: Option<u32>,
    },
    /// An expression we do not model, as read back (name and raw attributes).
    Other {
        name: String,
        data: Vec<u8>,
    },
}

// Expression attribute numbers, per expression.
mod attr {
    pub mod meta {
        pub const DREG: u16 = 1;
        pub const KEY: u16 = 2;
        pub const SREG: u16 = 3;
    }
    pub mod ct {
        pub const DREG: u16 = 1;
        pub const KEY: u16 = 2;
        pub const DIRECTION: u16 = 3;
        pub const SREG: u16 = 4;
    }
    pub mod payload {
        pub const DREG: u16 = 1;
        pub const BASE: u16 = 2;
        pub const OFFSET: u16 = 3;
        pub const LEN: u16 = 4;
    }
    pub mod cmp {
        pub const SREG: u16 = 1;
        pub const OP: u16 = 2;
        pub const DATA: u16 = 3;
    }
    pub mod bitwise {
        pub const SREG: u16 = 1;
        pub const DREG: u16 = 2;
        pub const LEN: u16 = 3;
        pub const MASK: u16 = 4;
        pub const XOR: u16 = 5;
        pub const OP: u16 = 6;
    }
    pub mod immediate {
        pub const DREG: u16 = 1;
        pub const DATA: u16 = 2;
    }
    pub mod lookup {
        pub const SET: u16 = 1;
        pub const SREG: u16 = 2;
        pub const DREG: u16 = 3;
        pub const SET_ID: u16 = 4;
        pub const FLAGS: u16 = 5;
        pub const F_INV: u32 = 1;
    }
    pub mod numgen {
        pub const DREG: u16 = 1;
        pub const MODULUS: u16 = 2;
        pub const TYPE: u16 = 3;
        pub const OFFSET: u16 = 4;
    }
    pub mod fib {
        pub const DREG: u16 = 1;
        pub const RESULT: u16 = 2;
        pub const FLAGS: u16 = 3;
    }
    pub mod socket {
        pub const KEY: u16 = 1;
        pub const DREG: u16 = 2;
        pub const LEVEL: u16 = 3;
    }
    pub mod counter {
        pub const BYTES: u16 = 1;
        pub const PACKETS: u16 = 2;
    }
    pub mod masq {
        pub const FLAGS: u16 = 1;
        pub const REG_PROTO_MIN: u16 = 2;
        pub const REG_PROTO_MAX: u16 = 3;
    }
    pub mod nat {
        pub const TYPE: u16 = 1;
        pub const FAMILY: u16 = 2;
        pub const REG_ADDR_MIN: u16 = 3;
        pub const REG_ADDR_MAX: u16 = 4;
        pub const REG_PROTO_MIN: u16 = 5;
        pub const REG_PROTO_MAX: u16 = 6;
        pub const FLAGS: u16 = 7;
    }
    pub mod reject {
        pub const TYPE: u16 = 1;
        pub const ICMP_CODE: u16 = 2;
    }
    pub mod dynset {
        pub const SET_NAME: u16 = 1;
        pub const SET_ID: u16 = 2;
        pub const OP: u16 = 3;
        pub const SREG_KEY: u16 = 4;
        pub const SREG_DATA: u16 = 5;
        pub const TIMEOUT: u16 = 6;
    }
    pub mod log {
        pub const GROUP: u16 = 1;
        pub const PREFIX: u16 = 2;
        pub const LEVEL: u16 = 5;
    }
}

/// What encoding an expression needs from its surroundings: the transaction ids of sets
/// created earlier in the same batch (a named set may be looked up by name alone, an
/// anonymous one only by id).
pub(crate) trait SetIds {
    fn set_id(&self, name: &str) -> Option<u32>;
}

/// What [`encode_list`] needs to write a lookup of an anonymous set: its name and
/// transaction id, assigned by the batch.
#[derive(Debug, Clone)]
pub(crate) struct AnonymousSet {
    pub name: String,
    pub id: u32,
}

impl Expr {
    /// The kernel's name of this expression.
    pub fn name(&self) -> &str {
        match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Lookup { .. } => "lookup",
            Expr::Numgen { .. } => "numgen",
            Expr::Fib { .. } => "fib",
            Expr::Socket { .. } => "socket",
            Expr::Counter { .. } => "counter",
            Expr::Masquerade { .. } => "masq",
            Expr::Nat { .. } => "nat",
            Expr::Reject(_) => "reject",
            Expr::Dynset { .. } => "dynset",
            Expr::Log { .. } => "log",
            Expr::Other { name, .. } => name,
        }
    }

    /// Writes `NFTA_EXPR_DATA`'s content. `anonymous` names the anonymous set of a
    /// lookup (the batch created it just before the rule).
    fn encode_data(&self, w: &mut AttrWriter, ids: &dyn SetIds, anonymous: Option<&AnonymousSet>) {
        match self {
            Expr::Meta { key, dreg } => {
                w.put_u32(attr::meta::KEY, key.to_raw());
                w.put_u32(attr::meta::DREG, dreg.0);
            }
            Expr::MetaSet { key, sreg } => {
                w.put_u32(attr::meta::KEY, key.to_raw());
                w.put_u32(attr::meta::SREG, sreg.0);
            }
            Expr::Ct {
                key,
                direction,
                dreg,
            } => {
                w.put_u32(attr::ct::KEY, key.to_raw());
                w.put_u32(attr::ct::DREG, dreg.0);
                if let Some(dir) = direction {
                    w.put_u8(
                        attr::ct::DIRECTION,
                        match dir {
                            CtDirection::Original => 0,
                            CtDirection::Reply => 1,
                        },
                    );
                }
            }
            Expr::CtSet { key, sreg } => {
                w.put_u32(attr::ct::KEY, key.to_raw());
                w.put_u32(attr::ct::SREG, sreg.0);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.put_u32(attr::payload::DREG, dreg.0);
                w.put_u32(attr::payload::BASE, base.to_raw());
                w.put_u32(attr::payload::OFFSET, *offset);
                w.put_u32(attr::payload::LEN, *len);
            }
            Expr::Cmp { op, sreg, data } => {
                w.put_u32(attr::cmp::SREG, sreg.0);
                w.put_u32(attr::cmp::OP, op.to_raw());
                w.nest(attr::cmp::DATA, |d| data::encode_data_value(d, data));
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.put_u32(attr::bitwise::SREG, sreg.0);
                w.put_u32(attr::bitwise::DREG, dreg.0);
                w.put_u32(attr::bitwise::OP, 0); // mask and xor
                w.put_u32(attr::bitwise::LEN, mask.len() as u32);
                w.nest(attr::bitwise::MASK, |d| data::encode_data_value(d, mask));
                w.nest(attr::bitwise::XOR, |d| data::encode_data_value(d, xor));
            }
            Expr::Immediate { dreg, data } => {
                w.put_u32(attr::immediate::DREG, dreg.0);
                w.nest(attr::immediate::DATA, |d| data::encode_data_value(d, data));
            }
            Expr::Verdict(v) => {
                w.put_u32(attr::immediate::DREG, Reg::VERDICT.0);
                w.nest(attr::immediate::DATA, |d| {
                    d.nest(wire::data::VERDICT, |vd| v.encode(vd));
                });
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                w.put_u32(attr::lookup::SREG, sreg.0);
                if let Some(dreg) = dreg {
                    w.put_u32(attr::lookup::DREG, dreg.0);
                }
                let (name, id) = match (set, anonymous) {
                    (SetRef::Named(name), _) => (name.as_str(), ids.set_id(name)),
                    (SetRef::Anonymous(_), Some(anon)) => (anon.name.as_str(), Some(anon.id)),
                    (SetRef::Anonymous(_), None) => ("", None),
                };
                w.put_str(attr::lookup::SET, name);
                if let Some(id) = id {
                    w.put_u32(attr::lookup::SET_ID, id);
                }
                if *invert {
                    w.put_u32(attr::lookup::FLAGS, attr::lookup::F_INV);
                }
            }
            Expr::Numgen {
                mode,
                modulus,
                offset,
                dreg,
            } => {
                w.put_u32(attr::numgen::DREG, dreg.0);
                w.put_u32(attr::numgen::MODULUS, *modulus);
                w.put_u32(
                    attr::numgen::TYPE,
                    match mode {
                        NumgenMode::Incremental => 0,
                        NumgenMode::Random => 1,
                    },
                );
                w.put_u32(attr::numgen::OFFSET, *offset);
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                w.put_u32(attr::fib::FLAGS, flags.0);
                w.put_u32(attr::fib::RESULT, result.to_raw());
                w.put_u32(attr::fib::DREG, dreg.0);
            }
            Expr::Socket { key, dreg } => {
                let raw = match key {
                    SocketKey::Transparent => 0,
                    SocketKey::Mark => 1,
                    SocketKey::Wildcard => 2,
                    SocketKey::CgroupV2 { .. } => 3,
                };
                w.put_u32(attr::socket::KEY, raw);
                w.put_u32(attr::socket::DREG, dreg.0);
                if let SocketKey::CgroupV2 { level } = key {
                    w.put_u32(attr::socket::LEVEL, *level);
                }
            }
            Expr::Counter { packets, bytes } => {
                if *packets != 0 || *bytes != 0 {
                    w.put_u64(attr::counter::BYTES, *bytes);
                    w.put_u64(attr::counter::PACKETS, *packets);
                }
            }
            Expr::Masquerade {
                flags,
                proto_min,
                proto_max,
            } => {
                if *flags != 0 {
                    w.put_u32(attr::masq::FLAGS, *flags);
                }
                if let Some(r) = proto_min {
                    w.put_u32(attr::masq::REG_PROTO_MIN, r.0);
                }
                if let Some(r) = proto_max {
                    w.put_u32(attr::masq::REG_PROTO_MAX, r.0);
                }
            }
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
            } => {
                w.put_u32(
                    attr::nat::TYPE,
                    match kind {
                        NatKind::Snat => 0,
                        NatKind::Dnat => 1,
                    },
                );
                w.put_u32(attr::nat::FAMILY, u32::from(family.to_raw()));
                for (ty, reg) in [
                    (attr::nat::REG_ADDR_MIN, addr_min),
                    (attr::nat::REG_ADDR_MAX, addr_max),
                    (attr::nat::REG_PROTO_MIN, proto_min),
                    (attr::nat::REG_PROTO_MAX, proto_max),
                ] {
                    if let Some(r) = reg {
                        w.put_u32(ty, r.0);
                    }
                }
                if *flags != 0 {
                    w.put_u32(attr::nat::FLAGS, *flags);
                }
            }
            Expr::Reject(reject) => {
                let (ty, code) = match reject {
                    Reject::IcmpUnreach(code) => (0, *code),
                    Reject::TcpReset => (1, 0),
                    Reject::IcmpxUnreach(code) => (2, *code),
                };
                w.put_u32(attr::reject::TYPE, ty);
                w.put_u8(attr::reject::ICMP_CODE, code);
            }
            Expr::Dynset {
                op,
                set,
                sreg_key,
                sreg_data,
                timeout,
            } => {
                w.put_u32(attr::dynset::SREG_KEY, sreg_key.0);
                if let Some(r) = sreg_data {
                    w.put_u32(attr::dynset::SREG_DATA, r.0);
                }
                w.put_u32(
                    attr::dynset::OP,
                    match op {
                        DynsetOp::Add => 0,
                        DynsetOp::Update => 1,
                        DynsetOp::Delete => 2,
                    },
                );
                if let Some(t) = timeout {
                    w.put_u64(attr::dynset::TIMEOUT, t.as_millis() as u64);
                }
                w.put_str(attr::dynset::SET_NAME, set);
                if let Some(id) = ids.set_id(set) {
                    w.put_u32(attr::dynset::SET_ID, id);
                }
            }
            Expr::Log {
                prefix,
                group,
                level,
            } => {
                if let Some(g) = group {
                    w.put_u16(attr::log::GROUP, *g);
                }
                if let Some(p) = prefix {
                    w.put_str(attr::log::PREFIX, p);
                }
                if let Some(l) = level {
                    w.put_u32(attr::log::LEVEL, *l);
                }
            }
            Expr::Other { data, .. } => {
                w.put_raw(data);
            }
        }
    }

    /// Reads one expression from its name and `NFTA_EXPR_DATA`.
    fn decode(name: &str, data: &[u8]) -> WireResult<Expr> {
        let attrs = Attrs::new(data).collect_all()?;
        let get = |ty: u16| attrs.iter().find(|a| a.ty == ty);
        let u32_of = |ty: u16| -> WireResult<u32> {
            get(ty)
                .ok_or_else(|| Malformed(format!("{name}: attribute {ty} missing")))?
                .u32()
        };
        let opt_u32 = |ty: u16| -> WireResult<Option<u32>> { get(ty).map(|a| a.u32()).transpose() };
        let reg = |ty: u16| -> WireResult<Reg> { u32_of(ty).map(Reg) };
        let opt_reg = |ty: u16| -> WireResult<Option<Reg>> { Ok(opt_u32(ty)?.map(Reg)) };
        let value = |ty: u16| -> WireResult<Vec<u8>> {
            match get(ty).map(data::decode_data).transpose()? {
                Some(DataItem::Value(v)) => Ok(v),
                Some(DataItem::Verdict(_)) => Err(Malformed(format!("{name}: verdict as value"))),
                None => Err(Malformed(format!("{name}: attribute {ty} missing"))),
            }
        };
        Ok(match name {
            "meta" => {
                let key = MetaKey::from_raw(u32_of(attr::meta::KEY)?);
                match opt_reg(attr::meta::DREG)? {
                    Some(dreg) => Expr::Meta { key, dreg },
                    None => Expr::MetaSet {
                        key,
                        sreg: reg(attr::meta::SREG)?,
                    },
                }
            }
            "ct" => {
                let key = CtKey::from_raw(u32_of(attr::ct::KEY)?);
                match opt_reg(attr::ct::DREG)? {
                    Some(dreg) => Expr::Ct {
                        key,
                        direction: get(attr::ct::DIRECTION)
                            .map(|a| a.u8())
                            .transpose()?
                            .map(|d| {
                                if d == 0 {
                                    CtDirection::Original
                                } else {
                                    CtDirection::Reply
                                }
                            }),
                        dreg,
                    },
                    None => Expr::CtSet {
                        key,
                        sreg: reg(attr::ct::SREG)?,
                    },
                }
            }
            "payload" => Expr::Payload {
                base: PayloadBase::from_raw(u32_of(attr::payload::BASE)?)?,
                offset: u32_of(attr::payload::OFFSET)?,
                len: u32_of(attr::payload::LEN)?,
                dreg: reg(attr::payload::DREG)?,
            },
            "cmp" => Expr::Cmp {
                op: CmpOp::from_raw(u32_of(attr::cmp::OP)?)?,
                sreg: reg(attr::cmp::SREG)?,
                data: value(attr::cmp::DATA)?,
            },
            "bitwise" => {
                if opt_u32(attr::bitwise::OP)?.unwrap_or(0) != 0 {
                    return Err(Malformed("bitwise shift".into()));
                }
                Expr::Bitwise {
                    sreg: reg(attr::bitwise::SREG)?,
                    dreg: reg(attr::bitwise::DREG)?,
                    mask: value(attr::bitwise::MASK)?,
                    xor: value(attr::bitwise::XOR)?,
                }
            }
            "immediate" => {
                let dreg = reg(attr::immediate::DREG)?;
                let data = get(attr::immediate::DATA)
                    .ok_or_else(|| Malformed("immediate without data".into()))?;
                match data::decode_data(data)? {
                    DataItem::Verdict(v) => Expr::Verdict(v),
                    DataItem::Value(data) => Expr::Immediate { dreg, data },
                }
            }
            "lookup" => Expr::Lookup {
                set: SetRef::Named(
                    get(attr::lookup::SET)
                        .ok_or_else(|| Malformed("lookup without set".into()))?
                        .str()?,
                ),
                sreg: reg(attr::lookup::SREG)?,
                dreg: opt_reg(attr::lookup::DREG)?,
                invert: opt_u32(attr::lookup::FLAGS)?.unwrap_or(0) & attr::lookup::F_INV != 0,
            },
            "numgen" => Expr::Numgen {
                mode: if u32_of(attr::numgen::TYPE)? == 1 {
                    NumgenMode::Random
                } else {
                    NumgenMode::Incremental
                },
                modulus: u32_of(attr::numgen::MODULUS)?,
                offset: opt_u32(attr::numgen::OFFSET)?.unwrap_or(0),
                dreg: reg(attr::numgen::DREG)?,
            },
            "fib" => Expr::Fib {
                flags: FibFlags(u32_of(attr::fib::FLAGS)?),
                result: FibResult::from_raw(u32_of(attr::fib::RESULT)?)?,
                dreg: reg(attr::fib::DREG)?,
            },
            "socket" => Expr::Socket {
                key: match u32_of(attr::socket::KEY)? {
                    0 => SocketKey::Transparent,
                    1 => SocketKey::Mark,
                    2 => SocketKey::Wildcard,
                    3 => SocketKey::CgroupV2 {
                        level: opt_u32(attr::socket::LEVEL)?.unwrap_or(0),
                    },
                    k => return Err(Malformed(format!("socket key {k}"))),
                },
                dreg: reg(attr::socket::DREG)?,
            },
            "counter" => Expr::Counter {
                packets: get(attr::counter::PACKETS)
                    .map(|a| a.u64())
                    .transpose()?
                    .unwrap_or(0),
                bytes: get(attr::counter::BYTES)
                    .map(|a| a.u64())
                    .transpose()?
                    .unwrap_or(0),
            },
            "masq" => Expr::Masquerade {
                flags: opt_u32(attr::masq::FLAGS)?.unwrap_or(0),
                proto_min: opt_reg(attr::masq::REG_PROTO_MIN)?,
                proto_max: opt_reg(attr::masq::REG_PROTO_MAX)?,
            },
            "nat" => Expr::Nat {
                kind: if u32_of(attr::nat::TYPE)? == 0 {
                    NatKind::Snat
                } else {
                    NatKind::Dnat
                },
                family: Family::from_raw(u32_of(attr::nat::FAMILY)? as u8),
                addr_min: opt_reg(attr::nat::REG_ADDR_MIN)?,
                addr_max: opt_reg(attr::nat::REG_ADDR_MAX)?,
                proto_min: opt_reg(attr::nat::REG_PROTO_MIN)?,
                proto_max: opt_reg(attr::nat::REG_PROTO_MAX)?,
                flags: opt_u32(attr::nat::FLAGS)?.unwrap_or(0),
            },
            "reject" => {
                let code = get(attr::reject::ICMP_CODE)
                    .map(|a| a.u8())
                    .transpose()?
                    .unwrap_or(0);
                Expr::Reject(match u32_of(attr::reject::TYPE)? {
                    0 => Reject::IcmpUnreach(code),
                    1 => Reject::TcpReset,
                    2 => Reject::IcmpxUnreach(code),
                    t => return Err(Malformed(format!("reject type {t}"))),
                })
            }
            "dynset" => Expr::Dynset {
                op: match u32_of(attr::dynset::OP)? {
                    0 => DynsetOp::Add,
                    1 => DynsetOp::Update,
                    2 => DynsetOp::Delete,
                    o => return Err(Malformed(format!("dynset op {o}"))),
                },
                set: get(attr::dynset::SET_NAME)
                    .ok_or_else(|| Malformed("dynset without set".into()))?
                    .str()?,
                sreg_key: reg(attr::dynset::SREG_KEY)?,
                sreg_data: opt_reg(attr::dynset::SREG_DATA)?,
                timeout: get(attr::dynset::TIMEOUT)
                    .map(|a| a.u64())
                    .transpose()?
                    .filter(|&ms| ms != 0)
                    .map(Duration::from_millis),
            },
            "log" => Expr::Log {
                prefix: get(attr::log::PREFIX).map(|a| a.str()).transpose()?,
                group: get(attr::log::GROUP).map(|a| a.u16()).transpose()?,
                level: opt_u32(attr::log::LEVEL)?,
            },
            _ => return Err(Malformed(format!("expression {name} is not modelled"))),
        })
    }
}

/// Writes a rule's expressions (`NFTA_RULE_EXPRESSIONS` content). `anonymous` holds,
/// in order, the names and ids of the anonymous sets of the rule's lookups.
pub(crate) fn encode_list(
    w: &mut AttrWriter,
    exprs: &[Expr],
    ids: &dyn SetIds,
    anonymous: &[AnonymousSet],
) {
    let mut anon = anonymous.iter();
    for e in exprs {
        let this_anon = match e {
            Expr::Lookup {
                set: SetRef::Anonymous(_),
                ..
            } => anon.next(),
            _ => None,
        };
        w.nest(wire::LIST_ELEM, |item| {
            item.put_str(wire::expr::NAME, e.name());
            item.nest(wire::expr::DATA, |d| e.encode_data(d, ids, this_anon));
        });
    }
}

/// Reads a list of expressions; ones we do not model (or cannot read) become
/// [`Expr::Other`] rather than failing the whole read.
pub(crate) fn decode_list(attrs: Attrs<'_>) -> WireResult<Vec<Expr>> {
    let mut out = Vec::new();
    for item in attrs {
        let item = item?;
        let mut name = None;
        let mut data: &[u8] = &[];
        for a in item.nested() {
            let a: Attr<'_> = a?;
            match a.ty {
                wire::expr::NAME => name = Some(a.str()?),
                wire::expr::DATA => data = a.payload,
                _ => {}
            }
        }
        let name = name.ok_or_else(|| Malformed("expression without a name".into()))?;
        out.push(Expr::decode(&name, data).unwrap_or_else(|_| Expr::Other {
            name,
            data: data.to_vec(),
        }));
    }
    Ok(out)
}

// ---- helpers: the sequences nft generates ------------------------------------------

impl Expr {
    pub fn meta(key: MetaKey, dreg: Reg) -> Expr {
        Expr::Meta { key, dreg }
    }

    pub fn meta_set(key: MetaKey, sreg: Reg) -> Expr {
        Expr::MetaSet { key, sreg }
    }

    pub fn ct(key: CtKey, dreg: Reg) -> Expr {
        Expr::Ct {
            key,
            direction: None,
            dreg,
        }
    }

    pub fn ct_set(key: CtKey, sreg: Reg) -> Expr {
        Expr::CtSet { key, sreg }
    }

    pub fn cmp(op: CmpOp, sreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            op,
            sreg,
            data: data.into(),
        }
    }

    pub fn immediate(dreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Immediate {
            dreg,
            data: data.into(),
        }
    }

    /// `reg = (reg & mask) ^ xor` on a 32-bit host-order value (marks).
    pub fn bitwise_u32(reg: Reg, mask: u32, xor: u32) -> Expr {
        Expr::Bitwise {
            sreg: reg,
            dreg: reg,
            mask: value::u32_host(mask),
            xor: value::u32_host(xor),
        }
    }

    pub fn payload(base: PayloadBase, offset: u32, len: u32, dreg: Reg) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        }
    }

    /// `ip saddr` (IPv4 header, offset 12, 4 bytes).
    pub fn ip_saddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 12, 4, dreg)
    }

    /// `ip daddr` (IPv4 header, offset 16, 4 bytes).
    pub fn ip_daddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 16, 4, dreg)
    }

    /// `ip protocol` (IPv4 header, offset 9, 1 byte).
    pub fn ip_protocol(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 9, 1, dreg)
    }

    /// `ip6 saddr` (IPv6 header, offset 8, 16 bytes).
    pub fn ip6_saddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 8, 16, dreg)
    }

    /// `ip6 daddr` (IPv6 header, offset 24, 16 bytes).
    pub fn ip6_daddr(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Network, 24, 16, dreg)
    }

    /// `th sport`: the source port of TCP, UDP, SCTP, DCCP, UDP-Lite.
    pub fn th_sport(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Transport, 0, 2, dreg)
    }

    /// `th dport`.
    pub fn th_dport(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Transport, 2, 2, dreg)
    }

    /// `icmpv6 type` (first byte of the ICMPv6 header).
    pub fn icmpv6_type(dreg: Reg) -> Expr {
        Expr::payload(PayloadBase::Transport, 0, 1, dreg)
    }

    pub fn verdict(v: Verdict) -> Expr {
        Expr::Verdict(v)
    }

    pub fn counter() -> Expr {
        Expr::Counter {
            packets: 0,
            bytes: 0,
        }
    }

    /// Looks `sreg` up in the named set (a match when present).
    pub fn lookup(set: impl Into<String>, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: SetRef::Named(set.into()),
            sreg,
            dreg: None,
            invert: false,
        }
    }

    /// Looks `sreg` up in the named verdict map and applies the verdict found.
    pub fn vmap(set: impl Into<String>, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: SetRef::Named(set.into()),
            sreg,
            dreg: Some(Reg::VERDICT),
            invert: false,
        }
    }

    /// Looks `sreg` up in the named map; the value goes to `dreg`.
    pub fn map(set: impl Into<String>, sreg: Reg, dreg: Reg) -> Expr {
        Expr::Lookup {
            set: SetRef::Named(set.into()),
            sreg,
            dreg: Some(dreg),
            invert: false,
        }
    }

    /// Looks `sreg` up in an anonymous set created with the rule.
    pub fn lookup_anonymous(set: Set, sreg: Reg) -> Expr {
        Expr::Lookup {
            set: SetRef::Anonymous(Box::new(set)),
            sreg,
            dreg: None,
            invert: false,
        }
    }
}

/// Matches: the expression sequences `nft` generates, to splice into a rule.
pub mod matches {
    use super::*;

    /// `meta nfproto ipv4|ipv6` (what an inet table needs before an `ip`/`ip6` field).
    pub fn nfproto(proto: u8) -> Vec<Expr> {
        vec![
            Expr::meta(MetaKey::Nfproto, Reg::R1),
            Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(proto)),
        ]
    }

    /// `meta l4proto PROTO` (what nft puts before a `tcp`/`udp`/`icmpv6` field).
    pub fn l4proto(proto: u8) -> Vec<Expr> {
        vec![
            Expr::meta(MetaKey::L4proto, Reg::R1),
            Expr::cmp(CmpOp::Eq, Reg::R1, value::byte(proto)),
        ]
    }

    /// `meta mark & MASK OP VALUE` (without the `&` when `mask` is all ones).
    pub fn mark(mask: u32, op: CmpOp, value: u32) -> Vec<Expr> {
        let mut v = vec![Expr::meta(MetaKey::Mark, Reg::R1)];
        if mask != u32::MAX {
            v.push(Expr::bitwise_u32(Reg::R1, mask, 0));
        }
        v.push(Expr::cmp(op, Reg::R1, value::u32_host(value)));
        v
    }

    /// `ip saddr ADDR` in an inet table.
    pub fn ip_saddr(addr: Ipv4Addr) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV4);
        v.push(Expr::ip_saddr(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::ipv4(addr)));
        v
    }

    /// `ip daddr ADDR` in an inet table.
    pub fn ip_daddr(addr: Ipv4Addr) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV4);
        v.push(Expr::ip_daddr(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::ipv4(addr)));
        v
    }

    /// `ip6 saddr ADDR` in an inet table.
    pub fn ip6_saddr(addr: Ipv6Addr) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV6);
        v.push(Expr::ip6_saddr(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::ipv6(addr)));
        v
    }

    /// `ip6 daddr ADDR` in an inet table.
    pub fn ip6_daddr(addr: Ipv6Addr) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV6);
        v.push(Expr::ip6_daddr(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::ipv6(addr)));
        v
    }

    /// `ip daddr @SET` in an inet table.
    pub fn ip_daddr_in(set: &str) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV4);
        v.push(Expr::ip_daddr(Reg::R1));
        v.push(Expr::lookup(set, Reg::R1));
        v
    }

    /// `ip6 daddr @SET` in an inet table.
    pub fn ip6_daddr_in(set: &str) -> Vec<Expr> {
        let mut v = nfproto(value::NFPROTO_IPV6);
        v.push(Expr::ip6_daddr(Reg::R1));
        v.push(Expr::lookup(set, Reg::R1));
        v
    }

    /// `tcp dport PORT` / `udp dport PORT` (`proto` is `IPPROTO_TCP` or `IPPROTO_UDP`).
    pub fn dport(proto: u8, port: u16) -> Vec<Expr> {
        let mut v = l4proto(proto);
        v.push(Expr::th_dport(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::port(port)));
        v
    }

    /// `tcp sport PORT` / `udp sport PORT`.
    pub fn sport(proto: u8, port: u16) -> Vec<Expr> {
        let mut v = l4proto(proto);
        v.push(Expr::th_sport(Reg::R1));
        v.push(Expr::cmp(CmpOp::Eq, Reg::R1, value::port(port)));
        v
    }

    /// `meta skuid UID`.
    pub fn skuid(uid: u32) -> Vec<Expr> {
        vec![
            Expr::meta(MetaKey::Skuid, Reg::R1),
            Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(uid)),
        ]
    }

    /// `meta skgid GID`.
    pub fn skgid(gid: u32) -> Vec<Expr> {
        vec![
            Expr::meta(MetaKey::Skgid, Reg::R1),
            Expr::cmp(CmpOp::Eq, Reg::R1, value::u32_host(gid)),
        ]
    }

    /// `iifname NAME` / `oifname NAME` (`key` is `Iifname` or `Oifname`).
    pub fn ifname(key: MetaKey, name: &str) -> Vec<Expr> {
        vec![
            Expr::meta(key, Reg::R1),
            Expr::cmp(CmpOp::Eq, Reg::R1, value::ifname(name)),
        ]
    }

    /// `ct state != new` style: `ct state` compared with a set of state bits.
    /// A single bit compares directly (as nft does); several are masked.
    pub fn ct_state(states: u32, matching: bool) -> Vec<Expr> {
        let mut v = vec![Expr::ct(CtKey::State, Reg::R1)];
        if states.count_ones() == 1 {
            let op = if matching { CmpOp::Eq } else { CmpOp::Neq };
            v.push(Expr::cmp(op, Reg::R1, value::u32_host(states)));
        } else {
            v.push(Expr::bitwise_u32(Reg::R1, states, 0));
            let op = if matching { CmpOp::Neq } else { CmpOp::Eq };
            v.push(Expr::cmp(op, Reg::R1, value::u32_host(0)));
        }
        v
    }

    /// `socket cgroupv2 level LEVEL ID` (the inode number of the cgroup directory).
    pub fn cgroupv2(level: u32, id: u64) -> Vec<Expr> {
        vec![
            Expr::Socket {
                key: SocketKey::CgroupV2 { level },
                dreg: Reg::R1,
            },
            Expr::cmp(CmpOp::Eq, Reg::R1, value::u64_host(id)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::set::{DataType, Element, KeyType};

    struct NoIds;
    impl SetIds for NoIds {
        fn set_id(&self, _: &str) -> Option<u32> {
            None
        }
    }

    fn encode(exprs: &[Expr]) -> Vec<u8> {
        let mut w = AttrWriter::new();
        encode_list(&mut w, exprs, &NoIds, &[]);
        w.into_bytes()
    }

    fn all_kinds() -> Vec<Expr> {
        vec![
            Expr::meta(MetaKey::Mark, Reg::R1),
            Expr::meta_set(MetaKey::Mark, Reg::R1),
            Expr::Ct {
                key: CtKey::ProtoDst,
                direction: Some(CtDirection::Reply),
                dreg: Reg::R2,
            },
            Expr::ct(CtKey::State, Reg::R1),
            Expr::ct_set(CtKey::Mark, Reg::R1),
            Expr::ip6_daddr(Reg::R1),
            Expr::cmp(CmpOp::Gte, Reg::reg32(9), vec![1, 2]),
            Expr::bitwise_u32(Reg::R1, 0x3f00_0000, 0x0100_0000),
            Expr::immediate(Reg::R2, vec![0, 80]),
            Expr::verdict(Verdict::Goto("to_1".into())),
            Expr::verdict(Verdict::Drop),
            Expr::vmap("save", Reg::R1),
            Expr::map("sticky_1", Reg::R1, Reg::R1),
            Expr::Lookup {
                set: SetRef::named("exclude4"),
                sreg: Reg::R1,
                dreg: None,
                invert: true,
            },
            Expr::Numgen {
                mode: NumgenMode::Random,
                modulus: 4,
                offset: 1,
                dreg: Reg::R1,
            },
            Expr::Fib {
                flags: FibFlags::SADDR | FibFlags::IIF | FibFlags::PRESENT,
                result: FibResult::Oif,
                dreg: Reg::R1,
            },
            Expr::Socket {
                key: SocketKey::CgroupV2 { level: 2 },
                dreg: Reg::R1,
            },
            Expr::Socket {
                key: SocketKey::Transparent,
                dreg: Reg::R1,
            },
            Expr::counter(),
            Expr::Counter {
                packets: 3,
                bytes: 250,
            },
            Expr::Masquerade {
                flags: nat_flags::PERSISTENT,
                proto_min: Some(Reg::R1),
                proto_max: None,
            },
            Expr::Nat {
                kind: NatKind::Dnat,
                family: Family::Ip,
                addr_min: Some(Reg::R1),
                addr_max: None,
                proto_min: Some(Reg::R2),
                proto_max: None,
                flags: nat_flags::PROTO_SPECIFIED,
            },
            Expr::Reject(Reject::TcpReset),
            Expr::Reject(Reject::IcmpxUnreach(3)),
            Expr::Dynset {
                op: DynsetOp::Update,
                set: "sticky_1".into(),
                sreg_key: Reg::R1,
                sreg_data: Some(Reg::R2),
                timeout: Some(Duration::from_secs(600)),
            },
            Expr::Log {
                prefix: Some("nmmw: ".into()),
                group: None,
                level: Some(6),
            },
            Expr::Log {
                prefix: None,
                group: Some(2),
                level: None,
            },
        ]
    }

    #[test]
    fn every_expression_round_trips() {
        let exprs = all_kinds();
        let bytes = encode(&exprs);
        let back = decode_list(Attrs::new(&bytes)).unwrap();
        assert_eq!(back, exprs);
    }

    #[test]
    fn unknown_expressions_are_kept_raw() {
        let mut w = AttrWriter::new();
        w.nest(wire::LIST_ELEM, |item| {
            item.put_str(wire::expr::NAME, "quota");
            item.nest(wire::expr::DATA, |d| {
                d.put_u64(1, 1000);
            });
        });
        let bytes = w.into_bytes();
        let back = decode_list(Attrs::new(&bytes)).unwrap();
        assert!(matches!(&back[0], Expr::Other { name, .. } if name == "quota"));
    }

    /// The expression data `nft` 1.0.6 sends for a few of the representative rules
    /// (from `nft --debug=mnl`), attribute by attribute.
    #[test]
    fn encodings_match_nft() {
        fn data_of(e: &Expr) -> Vec<(u16, Vec<u8>)> {
            let bytes = encode(std::slice::from_ref(e));
            let item = Attrs::new(&bytes).next().unwrap().unwrap();
            let data = item
                .nested()
                .find(|a| a.as_ref().unwrap().ty == wire::expr::DATA)
                .unwrap()
                .unwrap();
            data.nested()
                .map(|a| {
                    let a = a.unwrap();
                    (a.ty, a.payload.to_vec())
                })
                .collect()
        }
        // ct mark set ct mark & 0xc0ffffff | 0x01000000: the bitwise.
        let m = 0xc0ff_ffffu32.to_ne_bytes();
        let x = 0x0100_0000u32.to_ne_bytes();
        let mut mask_nest = AttrWriter::new();
        mask_nest.put(1, &m);
        let mut xor_nest = AttrWriter::new();
        xor_nest.put(1, &x);
        assert_eq!(
            data_of(&Expr::bitwise_u32(Reg::R1, 0xc0ff_ffff, 0x0100_0000)),
            vec![
                (1, vec![0, 0, 0, 1]),
                (2, vec![0, 0, 0, 1]),
                (6, vec![0, 0, 0, 0]),
                (3, vec![0, 0, 0, 4]),
                (4, mask_nest.into_bytes()),
                (5, xor_nest.into_bytes()),
            ]
        );
        // socket cgroupv2 level 2.
        assert_eq!(
            data_of(&Expr::Socket {
                key: SocketKey::CgroupV2 { level: 2 },
                dreg: Reg::R1
            }),
            vec![
                (1, vec![0, 0, 0, 3]),
                (2, vec![0, 0, 0, 1]),
                (3, vec![0, 0, 0, 2])
            ]
        );
        // update @sticky_1 { ip daddr timeout 10m : meta mark } (set id left out).
        assert_eq!(
            data_of(&Expr::Dynset {
                op: DynsetOp::Update,
                set: "sticky_1".into(),
                sreg_key: Reg::R1,
                sreg_data: Some(Reg::R2),
                timeout: Some(Duration::from_secs(600)),
            }),
            vec![
                (4, vec![0, 0, 0, 1]),
                (5, vec![0, 0, 0, 2]),
                (3, vec![0, 0, 0, 1]),
                (6, 600_000u64.to_be_bytes().to_vec()),
                (1, b"sticky_1\0".to_vec()),
            ]
        );
        // fib daddr type.
        assert_eq!(
            data_of(&Expr::Fib {
                flags: FibFlags::DADDR,
                result: FibResult::AddrType,
                dreg: Reg::R1
            }),
            vec![
                (3, vec![0, 0, 0, 2]),
                (2, vec![0, 0, 0, 3]),
                (1, vec![0, 0, 0, 1])
            ]
        );
    }

    #[test]
    fn concatenation_registers_are_numbered_as_nft_does() {
        assert_eq!(Reg::at_byte(0), Reg::R1);
        assert_eq!(Reg::at_byte(4), Reg(9)); // ip saddr . tcp dport: the port
        assert_eq!(Reg::at_byte(16), Reg::R2); // ifname . mark: the mark
        assert_eq!(Reg::at_byte(20), Reg(13));
    }

    #[test]
    fn anonymous_lookups_use_the_name_and_id_the_batch_gave() {
        let set = Set::new("", KeyType::single(DataType::InetService))
            .with_elements(vec![Element::port(443)]);
        let exprs = vec![Expr::lookup_anonymous(set, Reg::R1)];
        let mut w = AttrWriter::new();
        encode_list(
            &mut w,
            &exprs,
            &NoIds,
            &[AnonymousSet {
                name: "__set%d".into(),
                id: 7,
            }],
        );
        let bytes = w.into_bytes();
        let back = decode_list(Attrs::new(&bytes)).unwrap();
        assert_eq!(back[0], Expr::lookup("__set%d", Reg::R1));
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        assert!(raw.contains("__set%d"));
    }

    #[test]
    fn ct_state_matches_follow_nft() {
        let one = matches::ct_state(value::CT_STATE_NEW, false);
        assert_eq!(
            one[1],
            Expr::cmp(CmpOp::Neq, Reg::R1, value::u32_host(value::CT_STATE_NEW))
        );
        let two = matches::ct_state(value::CT_STATE_ESTABLISHED | value::CT_STATE_RELATED, true);
        assert_eq!(two.len(), 3);
        assert_eq!(two[2], Expr::cmp(CmpOp::Neq, Reg::R1, value::u32_host(0)));
    }
}
