//! The bytes on the wire: netlink and nfnetlink headers, netlink attributes (TLVs,
//! nested), the "user data" TLVs that `nft` keeps in tables, sets and rules, and the
//! numeric constants of `linux/netfilter/nf_tables.h` we use.
//!
//! Netlink attributes carry their payload in network byte order for integers (`u32`,
//! `u64`) as nf_tables expects; register contents (keys, data) are raw bytes in the
//! order the kernel compares them.

use std::fmt;

/// A malformed attribute or message; the caller adds what it was reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type WireResult<T> = std::result::Result<T, Malformed>;

fn malformed<T>(reason: impl Into<String>) -> WireResult<T> {
    Err(Malformed(reason.into()))
}

// ---- netlink ----------------------------------------------------------------------

pub const NETLINK_NETFILTER: i32 = 12;
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_EXT_ACK: i32 = 11;

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGEN_HDRLEN: usize = 4;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// In an NLMSG_ERROR: extended-ack TLVs follow the echoed header.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an NLMSG_ERROR: only the request's header is echoed (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

// ---- nfnetlink --------------------------------------------------------------------

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

/// nf_tables message types (the low byte; the subsystem goes in the high byte).
pub mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const GETSET: u8 = 10;
    pub const DELSET: u8 = 11;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
    pub const GETGEN: u8 = 16;
}

/// The full netlink message type of an nf_tables message.
pub fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

// ---- nf_tables attributes ---------------------------------------------------------

pub mod table {
    pub const NAME: u16 = 1;
    pub const FLAGS: u16 = 2;
    pub const USE: u16 = 3;
    pub const HANDLE: u16 = 4;
    pub const USERDATA: u16 = 6;
}

pub mod chain {
    pub const TABLE: u16 = 1;
    pub const HANDLE: u16 = 2;
    pub const NAME: u16 = 3;
    pub const HOOK: u16 = 4;
    pub const POLICY: u16 = 5;
    pub const TYPE: u16 = 7;
    pub const HOOK_NUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
}

pub mod rule {
    pub const TABLE: u16 = 1;
    pub const CHAIN: u16 = 2;
    pub const HANDLE: u16 = 3;
    pub const EXPRESSIONS: u16 = 4;
    pub const USERDATA: u16 = 7;
}

pub mod set {
    pub const TABLE: u16 = 1;
    pub const NAME: u16 = 2;
    pub const FLAGS: u16 = 3;
    pub const KEY_TYPE: u16 = 4;
    pub const KEY_LEN: u16 = 5;
    pub const DATA_TYPE: u16 = 6;
    pub const DATA_LEN: u16 = 7;
    pub const DESC: u16 = 9;
    pub const ID: u16 = 10;
    pub const TIMEOUT: u16 = 11;
    pub const USERDATA: u16 = 13;
    pub const HANDLE: u16 = 16;
    pub const DESC_SIZE: u16 = 1;
    pub const DESC_CONCAT: u16 = 2;
    pub const FIELD: u16 = 1;
    pub const FIELD_LEN: u16 = 1;

    pub const F_ANONYMOUS: u32 = 0x1;
    pub const F_CONSTANT: u32 = 0x2;
    pub const F_INTERVAL: u32 = 0x4;
    pub const F_MAP: u32 = 0x8;
    pub const F_TIMEOUT: u32 = 0x10;
    pub const F_EVAL: u32 = 0x20;
    pub const F_CONCAT: u32 = 0x80;
}

pub mod elem {
    pub const LIST_TABLE: u16 = 1;
    pub const LIST_SET: u16 = 2;
    pub const LIST_ELEMENTS: u16 = 3;
    pub const LIST_SET_ID: u16 = 4;
    pub const KEY: u16 = 1;
    pub const DATA: u16 = 2;
    pub const FLAGS: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const EXPIRATION: u16 = 5;
    pub const USERDATA: u16 = 6;
    pub const KEY_END: u16 = 10;
    pub const F_INTERVAL_END: u32 = 0x1;
}

/// `NFTA_LIST_ELEM`: one item of a list (expressions, set elements).
pub const LIST_ELEM: u16 = 1;

pub mod data {
    pub const VALUE: u16 = 1;
    pub const VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
    /// `NFT_DATA_VERDICT`: the data type of a verdict map.
    pub const TYPE_VERDICT: u32 = 0xffff_ff00;
}

pub mod expr {
    pub const NAME: u16 = 1;
    pub const DATA: u16 = 2;
}

pub mod generation {
    pub const ID: u16 = 1;
}

// ---- building ---------------------------------------------------------------------

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attributes being written, in order.
#[derive(Debug, Default, Clone)]
pub struct AttrWriter {
    buf: Vec<u8>,
}

impl AttrWriter {
    pub fn new() -> Self {
        AttrWriter::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn put(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Attributes already encoded (as read back), copied verbatim.
    pub fn put_raw(&mut self, attrs: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(attrs);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.put(ty, &[v])
    }

    pub fn put_u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    pub fn put_u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies accept.
    pub fn put_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut payload = Vec::with_capacity(s.len() + 1);
        payload.extend_from_slice(s.as_bytes());
        payload.push(0);
        self.put(ty, &payload)
    }

    /// A nested attribute whose content `fill` writes.
    pub fn nest(&mut self, ty: u16, fill: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        let mut inner = AttrWriter {
            buf: std::mem::take(&mut self.buf),
        };
        fill(&mut inner);
        self.buf = inner.buf;
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// One netlink message: header, nfgenmsg (family, version 0, resource id) and
/// attributes. `seq` is patched in when the message is sent.
pub fn message(
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGEN_HDRLEN + attrs.len();
    let mut buf = Vec::with_capacity(align4(len));
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
    buf.resize(align4(buf.len()), 0);
    buf
}

// ---- parsing ----------------------------------------------------------------------

/// One attribute: its type (without the nested/byte-order flags) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub ty: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> WireResult<u8> {
        match self.payload {
            [v, ..] => Ok(*v),
            _ => malformed(format!("attribute {} is empty, expected u8", self.ty)),
        }
    }

    pub fn u16(&self) -> WireResult<u16> {
        match self.payload {
            [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
            _ => malformed(format!("attribute {} is too short for u16", self.ty)),
        }
    }

    pub fn u32(&self) -> WireResult<u32> {
        self.payload
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| Malformed(format!("attribute {} is too short for u32", self.ty)))
    }

    pub fn i32(&self) -> WireResult<i32> {
        self.u32().map(|v| v as i32)
    }

    pub fn u64(&self) -> WireResult<u64> {
        self.payload
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| Malformed(format!("attribute {} is too short for u64", self.ty)))
    }

    /// A string, without its terminating NUL (and anything after it).
    pub fn str(&self) -> WireResult<String> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        String::from_utf8(self.payload[..end].to_vec())
            .map_err(|_| Malformed(format!("attribute {} is not UTF-8", self.ty)))
    }

    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }
}

/// The attributes in a byte slice, in order.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Attrs { rest: bytes }
    }

    /// All attributes, or the first malformation.
    pub fn collect_all(self) -> WireResult<Vec<Attr<'a>>> {
        self.collect()
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = WireResult<Attr<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return Some(malformed(format!(
                "attribute {ty} claims {len} bytes, {} left",
                self.rest.len()
            )));
        }
        let attr = Attr {
            ty,
            payload: &self.rest[4..len],
        };
        self.rest = &self.rest[align4(len).min(self.rest.len())..];
        Some(Ok(attr))
    }
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The nf_tables family of this message (first byte of nfgenmsg).
    pub fn family(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    /// The attributes after the nfgenmsg header.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload.get(NFGEN_HDRLEN..).unwrap_or(&[]))
    }

    /// For NLMSG_ERROR: the errno (0 for an ack), the sequence number of the message
    /// it answers, and the kernel's extended-ack text if any.
    pub fn error(&self) -> WireResult<(i32, u32, Option<String>)> {
        let p = self.payload;
        if p.len() < 4 + NLMSG_HDRLEN {
            return malformed("NLMSG_ERROR too short");
        }
        let errno = -i32::from_ne_bytes(p[0..4].try_into().expect("4 bytes"));
        let seq = u32::from_ne_bytes(p[12..16].try_into().expect("4 bytes"));
        let mut text = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // With NETLINK_CAP_ACK only the request's header is echoed; without it the
            // whole request is, and its length is in that header.
            let echoed = if self.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                align4(u32::from_ne_bytes(p[4..8].try_into().expect("4 bytes")) as usize)
            };
            for attr in Attrs::new(p.get(4 + echoed..).unwrap_or(&[])).flatten() {
                if attr.ty == NLMSGERR_ATTR_MSG {
                    text = attr.str().ok().filter(|s| !s.is_empty());
                }
            }
        }
        Ok((errno, seq, text))
    }
}

/// The netlink messages in one datagram.
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Messages { rest: bytes }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = WireResult<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let r = self.rest;
        let len = u32::from_ne_bytes(r[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > r.len() {
            self.rest = &[];
            return Some(malformed(format!(
                "netlink message claims {len} bytes, {} left",
                r.len()
            )));
        }
        let msg = Message {
            msg_type: u16::from_ne_bytes([r[4], r[5]]),
            flags: u16::from_ne_bytes([r[6], r[7]]),
            seq: u32::from_ne_bytes(r[8..12].try_into().expect("4 bytes")),
            payload: &r[NLMSG_HDRLEN..len],
        };
        self.rest = &r[align4(len).min(r.len())..];
        Some(Ok(msg))
    }
}

// ---- user data (libnftnl's TLV format: u8 type, u8 length, value) -----------------

/// User data TLV types of tables and rules: the comment.
pub const UDATA_COMMENT: u8 = 0;

/// User data TLV types of sets.
pub mod udata_set {
    pub const KEYBYTEORDER: u8 = 0;
    pub const DATABYTEORDER: u8 = 1;
    pub const MERGE_ELEMENTS: u8 = 2;
    pub const KEY_TYPEOF: u8 = 3;
    pub const DATA_TYPEOF: u8 = 4;
    pub const DATA_INTERVAL: u8 = 6;
    /// Inside KEY_TYPEOF / DATA_TYPEOF.
    pub const TYPEOF_EXPR: u8 = 0;
    pub const TYPEOF_DATA: u8 = 1;
    /// Set element user data: flags, of which "interval open" (runs to the end).
    pub const ELEM_FLAGS: u8 = 1;
    pub const ELEM_F_INTERVAL_OPEN: u32 = 1;
}

/// Builds user data TLVs.
#[derive(Debug, Default, Clone)]
pub struct UdataWriter {
    buf: Vec<u8>,
}

impl UdataWriter {
    pub fn new() -> Self {
        UdataWriter::default()
    }

    pub fn put(&mut self, ty: u8, value: &[u8]) -> &mut Self {
        self.buf.push(ty);
        self.buf.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        self.buf.extend_from_slice(value);
        self
    }

    /// A u32 in host byte order, as libnftnl stores them.
    pub fn put_u32(&mut self, ty: u8, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    pub fn put_strz(&mut self, ty: u8, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// The user data TLVs in a byte slice; stops at the first malformed one.
pub fn udata(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 2 {
        let (ty, len) = (rest[0], usize::from(rest[1]));
        if rest.len() < 2 + len {
            break;
        }
        out.push((ty, &rest[2..2 + len]));
        rest = &rest[2 + len..];
    }
    out
}

/// User data holding a comment, as `nft` writes it.
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let mut w = UdataWriter::new();
    w.put_strz(UDATA_COMMENT, comment);
    w.into_bytes()
}

/// The comment in user data written by `nft` (or by us), if any.
pub fn udata_comment(bytes: &[u8]) -> Option<String> {
    udata(bytes)
        .into_iter()
        .find(|(ty, _)| *ty == UDATA_COMMENT)
        .map(|(_, v)| {
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
}

/// The longest comment that fits in user data (256 bytes in the kernel, TLV + NUL).
pub const COMMENT_MAX: usize = 253;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_nesting_and_padding() {
        let mut w = AttrWriter::new();
        w.put_str(1, "nm-multiwan")
            .put_u32(2, 0xdead_beef)
            .nest(3, |n| {
                n.put_u8(1, 7).put_u64(2, 600_000);
                n.nest(3, |m| {
                    m.put(1, &[1, 2, 3]);
                });
            })
            .put_u16(4, 0x1234);
        let bytes = w.into_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let attrs = Attrs::new(&bytes).collect_all().unwrap();
        assert_eq!(attrs.len(), 4);
        assert_eq!(attrs[0].str().unwrap(), "nm-multiwan");
        assert_eq!(attrs[1].u32().unwrap(), 0xdead_beef);
        assert_eq!(attrs[3].u16().unwrap(), 0x1234);
        let inner = attrs[2].nested().collect_all().unwrap();
        assert_eq!(inner[0].u8().unwrap(), 7);
        assert_eq!(inner[1].u64().unwrap(), 600_000);
        let innermost = inner[2].nested().collect_all().unwrap();
        assert_eq!(innermost[0].payload, &[1, 2, 3]);
        // The nested flag is set on the wire and masked off when read.
        assert_eq!(u16::from_ne_bytes([bytes[26], bytes[27]]), 3 | NLA_F_NESTED);
        assert_eq!(attrs[2].ty, 3);
    }

    #[test]
    fn a_truncated_attribute_is_reported_not_read_past() {
        let mut w = AttrWriter::new();
        w.put_u32(1, 5);
        let mut bytes = w.into_bytes();
        bytes[0] = 40; // claims more than there is
        let got = Attrs::new(&bytes).collect_all();
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn table_comment_is_written_as_nft_does() {
        // Bytes nft 1.0.6 sends for `comment "nm-multiwan plan=abc"`.
        let expected = b"\x00\x15nm-multiwan plan=abc\x00";
        assert_eq!(comment_udata("nm-multiwan plan=abc"), expected);
        assert_eq!(
            udata_comment(expected).as_deref(),
            Some("nm-multiwan plan=abc")
        );
        assert_eq!(udata_comment(b""), None);
    }

    #[test]
    fn messages_and_errors_parse() {
        let attrs = {
            let mut w = AttrWriter::new();
            w.put_str(table::NAME, "t");
            w.into_bytes()
        };
        let mut datagram = message(nft_type(msg::NEWTABLE), NLM_F_REQUEST, 7, 1, 0, &attrs);
        // An error answering seq 9 with ENOENT and an extended-ack message, as the
        // kernel sends with NETLINK_CAP_ACK: errno, echoed header, TLVs.
        let mut err_payload = (-2i32).to_ne_bytes().to_vec();
        let mut echoed = vec![0u8; NLMSG_HDRLEN];
        echoed[8..12].copy_from_slice(&9u32.to_ne_bytes());
        err_payload.extend_from_slice(&echoed);
        let mut tlv = AttrWriter::new();
        tlv.put_str(NLMSGERR_ATTR_MSG, "no such chain");
        err_payload.extend_from_slice(&tlv.into_bytes());
        let len = (NLMSG_HDRLEN + err_payload.len()) as u32;
        datagram.extend_from_slice(&len.to_ne_bytes());
        datagram.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        datagram.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        datagram.extend_from_slice(&9u32.to_ne_bytes());
        datagram.extend_from_slice(&0u32.to_ne_bytes());
        datagram.extend_from_slice(&err_payload);

        let msgs: Vec<_> = Messages::new(&datagram).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].msg_type, 0x0a00);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].family(), 1);
        assert_eq!(msgs[0].attrs().next().unwrap().unwrap().str().unwrap(), "t");
        assert_eq!(msgs[1].msg_type, NLMSG_ERROR);
        let (errno, seq, text) = msgs[1].error().unwrap();
        assert_eq!((errno, seq), (2, 9));
        assert_eq!(text.as_deref(), Some("no such chain"));
    }

    #[test]
    fn udata_stops_at_a_truncated_tlv() {
        let bytes = [0u8, 4, 1, 0, 0, 0, 1, 9, 1];
        assert_eq!(udata(&bytes), vec![(0u8, &[1u8, 0, 0, 0][..])]);
    }
}
