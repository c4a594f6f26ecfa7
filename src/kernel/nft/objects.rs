//! Tables, chains, rules and verdicts: what they are in our words, how they are written
//! into nf_tables messages and read back from them. Sets live in `set`, expressions in
//! `expr`.

pub use super::data::{Family, Verdict};
use super::data::{NF_ACCEPT, NF_DROP};
use super::error::{Error, Result};
use super::expr::{self, Expr};
use super::wire::{self, AttrWriter, Message, WireResult};

/// A table to create. `comment` is stored as the table's user data the way `nft` stores
/// a comment, so `nft list` shows it; we keep a plan fingerprint there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub(crate) fn encode(&self, w: &mut AttrWriter) -> Result<()> {
        w.put_str(wire::table::NAME, &self.name);
        w.put_u32(wire::table::FLAGS, 0);
        if let Some(comment) = &self.comment {
            check_comment(comment, &format!("comment of table {}", self.name))?;
            w.put(wire::table::USERDATA, &wire::comment_udata(comment));
        }
        Ok(())
    }
}

pub(crate) fn check_comment(comment: &str, what: &str) -> Result<()> {
    if comment.len() > wire::COMMENT_MAX || comment.contains('\0') {
        return Err(Error::invalid(
            what,
            format!(
                "at most {} bytes without NUL, got {}",
                wire::COMMENT_MAX,
                comment.len()
            ),
        ));
    }
    Ok(())
}

/// A table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub family: Family,
    pub name: String,
    pub handle: u64,
    /// `NFT_TABLE_F_*` (dormant, owner).
    pub flags: u32,
    /// The kernel's use count: how many objects (chains, sets...) the table holds.
    pub use_count: u32,
    /// The comment in the user data, if it holds one in `nft`'s format.
    pub comment: Option<String>,
    /// The raw user data.
    pub userdata: Vec<u8>,
}

impl TableInfo {
    pub(crate) fn decode(msg: &Message<'_>) -> WireResult<TableInfo> {
        let mut t = TableInfo {
            family: Family::from_raw(msg.family()),
            name: String::new(),
            handle: 0,
            flags: 0,
            use_count: 0,
            comment: None,
            userdata: Vec::new(),
        };
        for attr in msg.attrs() {
            let attr = attr?;
            match attr.ty {
                wire::table::NAME => t.name = attr.str()?,
                wire::table::HANDLE => t.handle = attr.u64()?,
                wire::table::FLAGS => t.flags = attr.u32()?,
                wire::table::USE => t.use_count = attr.u32()?,
                wire::table::USERDATA => {
                    t.userdata = attr.payload.to_vec();
                    t.comment = wire::udata_comment(attr.payload);
                }
                _ => {}
            }
        }
        Ok(t)
    }
}

/// Netfilter hooks of the ip, ip6 and inet families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn to_raw(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    fn from_raw(v: u32) -> Option<Hook> {
        Some(match v {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    /// Like filter, but the kernel reroutes packets whose mark or addresses changed
    /// (output hook only).
    Route,
    Nat,
}

impl ChainKind {
    fn name(self) -> &'static str {
        match self {
            ChainKind::Filter => "filter",
            ChainKind::Route => "route",
            ChainKind::Nat => "nat",
        }
    }

    fn from_name(s: &str) -> Option<ChainKind> {
        Some(match s {
            "filter" => ChainKind::Filter,
            "route" => ChainKind::Route,
            "nat" => ChainKind::Nat,
            _ => return None,
        })
    }
}

/// The verdict of a base chain for packets no rule decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// Standard chain priorities, as `nft` names them.
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// What makes a chain a base chain: attached to a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub kind: ChainKind,
    pub policy: Policy,
}

/// A chain; without `base` it is a regular chain, reached by jump/goto only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
}

impl Chain {
    pub fn regular(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
        }
    }

    pub fn base(
        name: impl Into<String>,
        kind: ChainKind,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                hook,
                priority,
                kind,
                policy,
            }),
        }
    }

    pub(crate) fn encode(&self, table: &str, w: &mut AttrWriter) {
        w.put_str(wire::chain::TABLE, table);
        w.put_str(wire::chain::NAME, &self.name);
        if let Some(base) = &self.base {
            w.nest(wire::chain::HOOK, |h| {
                h.put_u32(wire::chain::HOOK_NUM, base.hook.to_raw());
                h.put_u32(wire::chain::HOOK_PRIORITY, base.priority as u32);
            });
            w.put_u32(
                wire::chain::POLICY,
                match base.policy {
                    Policy::Accept => NF_ACCEPT as u32,
                    Policy::Drop => NF_DROP as u32,
                },
            );
            w.put_str(wire::chain::TYPE, base.kind.name());
        }
    }
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub chain: Chain,
    pub handle: u64,
}

impl ChainInfo {
    pub(crate) fn decode(msg: &Message<'_>) -> WireResult<ChainInfo> {
        let mut name = String::new();
        let mut handle = 0;
        let (mut hook, mut prio, mut kind, mut policy) = (None, 0, None, Policy::Accept);
        for attr in msg.attrs() {
            let attr = attr?;
            match attr.ty {
                wire::chain::NAME => name = attr.str()?,
                wire::chain::HANDLE => handle = attr.u64()?,
                wire::chain::HOOK => {
                    for h in attr.nested() {
                        let h = h?;
                        match h.ty {
                            wire::chain::HOOK_NUM => hook = Hook::from_raw(h.u32()?),
                            wire::chain::HOOK_PRIORITY => prio = h.i32()?,
                            _ => {}
                        }
                    }
                }
                wire::chain::TYPE => kind = ChainKind::from_name(&attr.str()?),
                wire::chain::POLICY => {
                    policy = if attr.i32()? == NF_DROP {
                        Policy::Drop
                    } else {
                        Policy::Accept
                    }
                }
                _ => {}
            }
        }
        let base = match (hook, kind) {
            (Some(hook), Some(kind)) => Some(BaseChain {
                hook,
                priority: prio,
                kind,
                policy,
            }),
            _ => None,
        };
        Ok(ChainInfo {
            chain: Chain { name, base },
            handle,
        })
    }
}

// Verdict codes (`NF_*` and `NFT_*`).
/// A rule to append to a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub exprs: Vec<Expr>,
    /// Stored as the rule's user data the way `nft` stores a comment.
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(chain: impl Into<String>, exprs: Vec<Expr>) -> Self {
        Rule {
            chain: chain.into(),
            exprs,
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// A rule as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
    pub exprs: Vec<Expr>,
}

/// Packets and bytes a `counter` expression counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl RuleInfo {
    /// The rule's counter, if it has one (the sum, if it has several).
    pub fn counter(&self) -> Option<Counter> {
        let mut found = None;
        for e in &self.exprs {
            if let Expr::Counter { packets, bytes } = e {
                let c: &mut Counter = found.get_or_insert_with(Counter::default);
                c.packets += packets;
                c.bytes += bytes;
            }
        }
        found
    }

    pub(crate) fn decode(msg: &Message<'_>) -> WireResult<RuleInfo> {
        let mut r = RuleInfo {
            chain: String::new(),
            handle: 0,
            comment: None,
            exprs: Vec::new(),
        };
        for attr in msg.attrs() {
            let attr = attr?;
            match attr.ty {
                wire::rule::CHAIN => r.chain = attr.str()?,
                wire::rule::HANDLE => r.handle = attr.u64()?,
                wire::rule::USERDATA => r.comment = wire::udata_comment(attr.payload),
                wire::rule::EXPRESSIONS => r.exprs = expr::decode_list(attr.nested())?,
                _ => {}
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nft::wire::Attrs;

    #[test]
    fn verdicts_round_trip() {
        for v in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Return,
            Verdict::Continue,
            Verdict::Jump("a".into()),
            Verdict::Goto("to_1".into()),
        ] {
            let mut w = AttrWriter::new();
            v.encode(&mut w);
            let bytes = w.into_bytes();
            assert_eq!(Verdict::decode(Attrs::new(&bytes)).unwrap(), v);
        }
    }

    #[test]
    fn goto_is_written_as_nft_does() {
        // NFTA_VERDICT_CODE = NFT_GOTO (-4), NFTA_VERDICT_CHAIN = "to_1".
        let mut w = AttrWriter::new();
        Verdict::Goto("to_1".into()).encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [
                8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfc, 9, 0, 2, 0, b't', b'o', b'_', b'1', 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn base_chain_is_written_as_nft_does() {
        let chain = Chain::base(
            "output",
            ChainKind::Route,
            Hook::Output,
            priority::MANGLE,
            Policy::Accept,
        );
        let mut w = AttrWriter::new();
        chain.encode("nm-multiwan", &mut w);
        let bytes = w.into_bytes();
        let attrs = Attrs::new(&bytes).collect_all().unwrap();
        let hook = attrs
            .iter()
            .find(|a| a.ty == wire::chain::HOOK)
            .unwrap()
            .nested()
            .collect_all()
            .unwrap();
        assert_eq!(hook[0].u32().unwrap(), 3);
        assert_eq!(hook[1].payload, [0xff, 0xff, 0xff, 0x6a]); // -150
        let msg_bytes = wire::message(wire::nft_type(wire::msg::NEWCHAIN), 0, 0, 1, 0, &bytes);
        let msg = wire::Messages::new(&msg_bytes).next().unwrap().unwrap();
        assert_eq!(ChainInfo::decode(&msg).unwrap().chain, chain);
    }

    #[test]
    fn families_round_trip() {
        for f in [
            Family::Inet,
            Family::Ip,
            Family::Ip6,
            Family::Arp,
            Family::Bridge,
            Family::Netdev,
            Family::Other(42),
        ] {
            assert_eq!(Family::from_raw(f.to_raw()), f);
        }
    }

    #[test]
    fn overlong_comments_are_refused() {
        let t = Table::new(Family::Inet, "t").with_comment("x".repeat(300));
        assert!(t.encode(&mut AttrWriter::new()).is_err());
    }
}
