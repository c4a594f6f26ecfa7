//! What tables, rules, sets and expressions all speak of: the family, verdicts and the
//! `nft_data` values they carry. At the bottom of the module, so that the others depend
//! on it and never on each other in a circle.

use std::fmt;

use super::wire::{self, Attr, AttrWriter, Attrs, WireResult};

/// An nf_tables family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 and IPv6 together.
    Inet,
    Ip,
    Ip6,
    Arp,
    Bridge,
    Netdev,
    /// A family we have no name for; only seen when listing other programs' tables.
    Other(u8),
}

impl Family {
    pub fn to_raw(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
            Family::Other(v) => v,
        }
    }

    pub fn from_raw(v: u8) -> Family {
        match v {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            v => Family::Other(v),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Inet => f.write_str("inet"),
            Family::Ip => f.write_str("ip"),
            Family::Ip6 => f.write_str("ip6"),
            Family::Arp => f.write_str("arp"),
            Family::Bridge => f.write_str("bridge"),
            Family::Netdev => f.write_str("netdev"),
            Family::Other(v) => write!(f, "family-{v}"),
        }
    }
}

/// `numgen` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumgenMode {
    Incremental,
    Random,
}

pub(crate) const NF_DROP: i32 = 0;
pub(crate) const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// What a rule (or a verdict map) decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// Writes the content of an `NFTA_DATA_VERDICT` attribute.
    pub(crate) fn encode(&self, w: &mut AttrWriter) {
        let (code, chain) = match self {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Continue => (NFT_CONTINUE, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        };
        w.put_u32(wire::data::VERDICT_CODE, code as u32);
        if let Some(chain) = chain {
            w.put_str(wire::data::VERDICT_CHAIN, chain);
        }
    }

    /// Reads the content of an `NFTA_DATA_VERDICT` attribute.
    pub(crate) fn decode(attrs: Attrs<'_>) -> WireResult<Verdict> {
        let (mut code, mut chain) = (None, None);
        for attr in attrs {
            let attr = attr?;
            match attr.ty {
                wire::data::VERDICT_CODE => code = Some(attr.i32()?),
                wire::data::VERDICT_CHAIN => chain = Some(attr.str()?),
                _ => {}
            }
        }
        let need_chain = |chain: Option<String>| {
            chain.ok_or_else(|| wire::Malformed("jump or goto without a chain".into()))
        };
        Ok(match code {
            Some(NF_ACCEPT) => Verdict::Accept,
            Some(NF_DROP) => Verdict::Drop,
            Some(NFT_RETURN) => Verdict::Return,
            Some(NFT_CONTINUE) => Verdict::Continue,
            Some(NFT_JUMP) => Verdict::Jump(need_chain(chain)?),
            Some(NFT_GOTO) => Verdict::Goto(need_chain(chain)?),
            Some(other) => return Err(wire::Malformed(format!("verdict code {other}"))),
            None => return Err(wire::Malformed("verdict without a code".into())),
        })
    }
}

/// Writes `NFTA_DATA_VALUE` or `NFTA_DATA_VERDICT` into an `nft_data` nest.
pub(crate) fn encode_data_value(w: &mut AttrWriter, value: &[u8]) {
    w.put(wire::data::VALUE, value);
}

/// Reads an `nft_data` nest: a value or a verdict.
pub(crate) fn decode_data(attr: &Attr<'_>) -> WireResult<DataItem> {
    for inner in attr.nested() {
        let inner = inner?;
        match inner.ty {
            wire::data::VALUE => return Ok(DataItem::Value(inner.payload.to_vec())),
            wire::data::VERDICT => return Ok(DataItem::Verdict(Verdict::decode(inner.nested())?)),
            _ => {}
        }
    }
    Err(wire::Malformed("data without value or verdict".into()))
}

/// The content of an `nft_data` nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataItem {
    Value(Vec<u8>),
    Verdict(Verdict),
}
