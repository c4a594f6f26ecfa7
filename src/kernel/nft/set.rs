//! Sets and maps: their key and data types, elements, and the interval encoding.
//!
//! Interval sets hold ranges. The kernel stores a range `[a, b]` as two elements, a start
//! `a` and an end `b + 1` flagged `INTERVAL_END` (no end when `b` is the largest key);
//! `nft` also adds an end element at key 0 first. We write exactly that, after sorting
//! and merging overlapping ranges (the kernel refuses overlaps), and reassemble ranges
//! when reading back. Concatenated interval sets instead carry a start and an end key
//! per element. The kernel compares interval keys as bytes: addresses, ports and names
//! work as they are; interval sets of host-order integers (marks) are refused, as `nft`
//! needs byte-swapping expressions for those.

use std::cmp::Ordering;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::data::{self, DataItem, NumgenMode, Verdict};
use super::error::{Error, Result};
use super::value;
use super::wire::{self, AttrWriter, Malformed, Message, UdataWriter, WireResult, udata_set};

/// The type of one field of a set key, or of map data, as `nft` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    /// An IP protocol number (`meta l4proto`).
    InetProto,
    /// A transport port.
    InetService,
    Mark,
    Ifname,
    Nfproto,
    CtState,
    /// A route type, as `fib ... type` yields.
    FibAddrType,
    Uid,
    Gid,
    /// A cgroup v2 id.
    CgroupV2,
    /// A host-order integer of `len` bytes.
    Integer {
        len: u32,
    },
    /// The 32-bit integer `numgen` yields; `nft` shows the set as `typeof numgen ...`.
    Numgen {
        mode: NumgenMode,
        modulus: u32,
        offset: u32,
    },
    /// A type we have no name for (read back only).
    Other {
        id: u32,
        len: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteOrder {
    Host = 1,
    Big = 2,
}

// nft's datatype numbers (`enum datatypes`), which the kernel stores for it.
const TYPE_NFPROTO: u32 = 2;
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_ETHERADDR: u32 = 9;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_MARK: u32 = 19;
const TYPE_UID: u32 = 24;
const TYPE_GID: u32 = 25;
const TYPE_CT_STATE: u32 = 26;
const TYPE_FIB_ADDR: u32 = 38;
const TYPE_IFNAME: u32 = 41;
const TYPE_CGROUPV2: u32 = 46;
/// Bits per field in a concatenation's type number.
const TYPE_BITS: u32 = 6;

// nft's expression numbers, in the `typeof` user data.
const EXPR_VERDICT: u32 = 1;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;

impl DataType {
    fn id(self) -> u32 {
        match self {
            DataType::Ipv4Addr => TYPE_IPADDR,
            DataType::Ipv6Addr => TYPE_IP6ADDR,
            DataType::EtherAddr => TYPE_ETHERADDR,
            DataType::InetProto => TYPE_INET_PROTOCOL,
            DataType::InetService => TYPE_INET_SERVICE,
            DataType::Mark => TYPE_MARK,
            DataType::Ifname => TYPE_IFNAME,
            DataType::Nfproto => TYPE_NFPROTO,
            DataType::CtState => TYPE_CT_STATE,
            DataType::FibAddrType => TYPE_FIB_ADDR,
            DataType::Uid => TYPE_UID,
            DataType::Gid => TYPE_GID,
            DataType::CgroupV2 => TYPE_CGROUPV2,
            DataType::Integer { .. } | DataType::Numgen { .. } => TYPE_INTEGER,
            DataType::Other { id, .. } => id,
        }
    }

    /// Length in bytes.
    pub fn byte_len(self) -> u32 {
        match self {
            DataType::Ipv4Addr => 4,
            DataType::Ipv6Addr => 16,
            DataType::EtherAddr => 6,
            DataType::InetProto | DataType::Nfproto => 1,
            DataType::InetService => 2,
            DataType::Ifname => value::IFNAME_LEN as u32,
            DataType::CgroupV2 => 8,
            DataType::Mark
            | DataType::CtState
            | DataType::FibAddrType
            | DataType::Uid
            | DataType::Gid
            | DataType::Numgen { .. } => 4,
            DataType::Integer { len } | DataType::Other { len, .. } => len,
        }
    }

    /// Whether byte-wise comparison orders values of this type as numbers: what the
    /// kernel does with interval keys. Not so for host-order integers, which `nft`
    /// stores swapped and swaps in rules with a `byteorder` expression; we do not.
    fn orders_bytewise(self) -> bool {
        self.byteorder() == ByteOrder::Big || self == DataType::Ifname || self.byte_len() == 1
    }

    fn byteorder(self) -> ByteOrder {
        match self {
            DataType::Ipv4Addr
            | DataType::Ipv6Addr
            | DataType::EtherAddr
            | DataType::InetProto
            | DataType::InetService
            | DataType::Other { .. } => ByteOrder::Big,
            _ => ByteOrder::Host,
        }
    }

    /// The type with this number, without checking a length (`len` is for integers
    /// and unknown types).
    fn by_id(id: u32, len: u32) -> DataType {
        match id {
            TYPE_IPADDR => DataType::Ipv4Addr,
            TYPE_IP6ADDR => DataType::Ipv6Addr,
            TYPE_ETHERADDR => DataType::EtherAddr,
            TYPE_INET_PROTOCOL => DataType::InetProto,
            TYPE_INET_SERVICE => DataType::InetService,
            TYPE_MARK => DataType::Mark,
            TYPE_IFNAME => DataType::Ifname,
            TYPE_NFPROTO => DataType::Nfproto,
            TYPE_CT_STATE => DataType::CtState,
            TYPE_FIB_ADDR => DataType::FibAddrType,
            TYPE_UID => DataType::Uid,
            TYPE_GID => DataType::Gid,
            TYPE_CGROUPV2 => DataType::CgroupV2,
            TYPE_INTEGER => DataType::Integer { len },
            id => DataType::Other { id, len },
        }
    }

    /// The type with this number and length, as the kernel reports a set's.
    fn from_id(id: u32, len: u32) -> DataType {
        let t = DataType::by_id(id, len);
        if t.byte_len() == len {
            t
        } else {
            DataType::Other { id, len }
        }
    }
}

/// A set's key: one field, or a concatenation (`ifname . mark`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyType {
    pub fields: Vec<DataType>,
}

impl KeyType {
    pub fn single(t: DataType) -> KeyType {
        KeyType { fields: vec![t] }
    }

    pub fn concat(fields: Vec<DataType>) -> KeyType {
        KeyType { fields }
    }

    pub fn is_concat(&self) -> bool {
        self.fields.len() > 1
    }

    /// Key length in bytes; in a concatenation each field takes a multiple of 4.
    pub fn byte_len(&self) -> u32 {
        match self.fields.as_slice() {
            [one] => one.byte_len(),
            many => many.iter().map(|f| f.byte_len().div_ceil(4) * 4).sum(),
        }
    }

    fn type_id(&self) -> u32 {
        self.fields
            .iter()
            .fold(0, |acc, f| (acc << TYPE_BITS) | f.id())
    }

    fn from_id(id: u32, len: u32) -> KeyType {
        if id >> TYPE_BITS == 0 {
            return KeyType::single(DataType::from_id(id, len));
        }
        let mut ids = Vec::new();
        let mut rest = id;
        while rest != 0 {
            ids.push(rest & ((1 << TYPE_BITS) - 1));
            rest >>= TYPE_BITS;
        }
        ids.reverse();
        // Fields of a concatenation have fixed lengths (integers have none).
        let fields: Vec<DataType> = ids.into_iter().map(|id| DataType::by_id(id, 0)).collect();
        let known = fields.iter().all(|f| f.byte_len() != 0);
        let key = KeyType { fields };
        if known && key.byte_len() == len {
            key
        } else {
            KeyType::single(DataType::Other { id, len })
        }
    }
}

/// What a map maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetData {
    /// A verdict map (`vmap`).
    Verdict,
    Value(DataType),
}

/// Set flags; a map is a set with [`Set::data`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetFlags {
    /// Holds ranges.
    pub interval: bool,
    /// Elements may expire (implied by a default timeout).
    pub timeout: bool,
    /// Updated from the packet path (`dynset`).
    pub dynamic: bool,
    /// Cannot change once created.
    pub constant: bool,
}

/// A set or map of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: KeyType,
    pub data: Option<SetData>,
    pub flags: SetFlags,
    /// Default timeout of elements.
    pub timeout: Option<Duration>,
    /// Maximum number of elements.
    pub size: Option<u32>,
    pub elements: Vec<Element>,
}

impl Set {
    pub fn new(name: impl Into<String>, key: KeyType) -> Set {
        Set {
            name: name.into(),
            key,
            data: None,
            flags: SetFlags::default(),
            timeout: None,
            size: None,
            elements: Vec::new(),
        }
    }

    /// A map to `data`.
    pub fn map(name: impl Into<String>, key: KeyType, data: SetData) -> Set {
        Set {
            data: Some(data),
            ..Set::new(name, key)
        }
    }

    pub fn interval(mut self) -> Set {
        self.flags.interval = true;
        self
    }

    pub fn dynamic(mut self) -> Set {
        self.flags.dynamic = true;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Set {
        self.flags.timeout = true;
        self.timeout = Some(timeout);
        self
    }

    pub fn with_size(mut self, size: u32) -> Set {
        self.size = Some(size);
        self
    }

    pub fn with_elements(mut self, elements: Vec<Element>) -> Set {
        self.elements = elements;
        self
    }

    fn raw_flags(&self, anonymous: bool) -> u32 {
        let mut f = 0;
        if anonymous {
            f |= wire::set::F_ANONYMOUS | wire::set::F_CONSTANT;
        }
        if self.flags.constant {
            f |= wire::set::F_CONSTANT;
        }
        if self.flags.interval {
            f |= wire::set::F_INTERVAL;
            if self.key.is_concat() {
                f |= wire::set::F_CONCAT;
            }
        }
        if self.data.is_some() {
            f |= wire::set::F_MAP;
        }
        if self.flags.timeout || self.timeout.is_some() {
            f |= wire::set::F_TIMEOUT;
        }
        if self.flags.dynamic {
            f |= wire::set::F_EVAL;
        }
        f
    }

    /// Writes the NEWSET attributes. `name` is the set's name or `__set%d` for an
    /// anonymous set; `elements` is how many elements it will hold (anonymous sets are
    /// sized exactly).
    pub(crate) fn encode(
        &self,
        table: &str,
        name: &str,
        id: u32,
        anonymous: bool,
        elements: usize,
        w: &mut AttrWriter,
    ) -> Result<()> {
        if self.key.fields.is_empty() {
            return Err(Error::invalid(format!("set {name}"), "key without fields"));
        }
        self.check_interval_key()?;
        w.put_str(wire::set::TABLE, table);
        w.put_str(wire::set::NAME, name);
        w.put_u32(wire::set::FLAGS, self.raw_flags(anonymous));
        w.put_u32(wire::set::KEY_TYPE, self.key.type_id());
        w.put_u32(wire::set::KEY_LEN, self.key.byte_len());
        match &self.data {
            Some(SetData::Verdict) => {
                w.put_u32(wire::set::DATA_TYPE, wire::data::TYPE_VERDICT);
                w.put_u32(wire::set::DATA_LEN, 0);
            }
            Some(SetData::Value(t)) => {
                w.put_u32(wire::set::DATA_TYPE, t.id());
                w.put_u32(wire::set::DATA_LEN, t.byte_len());
            }
            None => {}
        }
        w.put_u32(wire::set::ID, id);
        let size = if anonymous {
            Some(elements as u32)
        } else {
            self.size
        };
        let concat_desc = self.flags.interval && self.key.is_concat();
        if size.is_some() || concat_desc {
            w.nest(wire::set::DESC, |d| {
                if let Some(size) = size {
                    d.put_u32(wire::set::DESC_SIZE, size);
                }
                if concat_desc {
                    d.nest(wire::set::DESC_CONCAT, |c| {
                        for f in &self.key.fields {
                            c.nest(wire::set::FIELD, |field| {
                                field.put_u32(wire::set::FIELD_LEN, f.byte_len());
                            });
                        }
                    });
                }
            });
        }
        if let Some(t) = self.timeout {
            w.put_u64(wire::set::TIMEOUT, t.as_millis() as u64);
        }
        w.put(wire::set::USERDATA, &self.udata(anonymous));
        Ok(())
    }

    /// The user data `nft` keeps with a set, so that `nft list` prints our sets as it
    /// prints its own: byte orders, `typeof`, auto-merge.
    fn udata(&self, anonymous: bool) -> Vec<u8> {
        let mut u = UdataWriter::new();
        let key_order = match self.key.fields.as_slice() {
            [one] => one.byteorder() as u32,
            _ => 0,
        };
        u.put_u32(udata_set::KEYBYTEORDER, key_order);
        match &self.data {
            Some(SetData::Verdict) => {
                u.put_u32(udata_set::DATABYTEORDER, 0);
            }
            Some(SetData::Value(t)) => {
                u.put_u32(udata_set::DATABYTEORDER, t.byteorder() as u32);
            }
            None => {}
        }
        if anonymous && self.flags.interval {
            u.put_u32(udata_set::MERGE_ELEMENTS, 1);
        }
        match self.key.fields.as_slice() {
            [
                DataType::Numgen {
                    mode,
                    modulus,
                    offset,
                },
            ] => {
                let mut inner = UdataWriter::new();
                inner.put_u32(
                    0,
                    match mode {
                        NumgenMode::Incremental => 0,
                        NumgenMode::Random => 1,
                    },
                );
                inner.put_u32(1, *modulus);
                inner.put_u32(2, *offset);
                let mut t = UdataWriter::new();
                t.put_u32(udata_set::TYPEOF_EXPR, EXPR_NUMGEN);
                t.put(udata_set::TYPEOF_DATA, &inner.into_bytes());
                u.put(udata_set::KEY_TYPEOF, &t.into_bytes());
                if let Some(SetData::Verdict) = self.data {
                    let mut d = UdataWriter::new();
                    d.put_u32(udata_set::TYPEOF_EXPR, EXPR_VERDICT);
                    d.put(udata_set::TYPEOF_DATA, &[]);
                    u.put(udata_set::DATA_TYPEOF, &d.into_bytes());
                }
            }
            fields if fields.len() > 1 => {
                let mut t = UdataWriter::new();
                t.put_u32(udata_set::TYPEOF_EXPR, EXPR_CONCAT);
                t.put(udata_set::TYPEOF_DATA, &[]);
                u.put(udata_set::KEY_TYPEOF, &t.into_bytes());
            }
            _ => {}
        }
        if self.data.is_some() {
            u.put_u32(udata_set::DATA_INTERVAL, 0);
        }
        u.into_bytes()
    }

    /// The kernel elements for NEWSETELEM (`delete` false) or DELSETELEM, each an
    /// encoded `NFTA_LIST_ELEM` attribute. Interval elements are sorted and merged for
    /// adding; `merge_adjacent` also joins ranges that touch (what `nft` does for
    /// anonymous sets).
    pub(crate) fn encode_elements(
        &self,
        elements: &[Element],
        delete: bool,
        merge_adjacent: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let what = || format!("elements of set {}", self.name);
        self.check_interval_key()?;
        let key_len = self.key.byte_len() as usize;
        for e in elements {
            self.check_element(e, key_len)
                .map_err(|reason| Error::invalid(what(), reason))?;
        }
        let raws = if self.flags.interval && !self.key.is_concat() {
            let mut ranges: Vec<Element> = elements.to_vec();
            if !delete {
                ranges = merge_ranges(ranges, merge_adjacent)
                    .map_err(|reason| Error::invalid(what(), reason))?;
            }
            interval_elements(&ranges, key_len, !delete)
        } else {
            elements
                .iter()
                .map(|e| {
                    // Concatenated intervals carry an end even for one value.
                    let key_end = self.flags.interval.then(|| e.key.end().to_vec());
                    let key = e.key.start().to_vec();
                    RawElem {
                        key,
                        key_end,
                        data: e.data.clone(),
                        flags: 0,
                        timeout: e.timeout,
                        open: false,
                        expiration: None,
                    }
                })
                .collect()
        };
        Ok(raws
            .iter()
            .map(|r| {
                let mut w = AttrWriter::new();
                w.nest(wire::LIST_ELEM, |el| r.encode(el, delete));
                w.into_bytes()
            })
            .collect())
    }

    fn check_interval_key(&self) -> Result<()> {
        match self.key.fields.iter().find(|f| !f.orders_bytewise()) {
            Some(f) if self.flags.interval => Err(Error::invalid(
                format!("set {}", self.name),
                format!("an interval set of {f:?} keys (host byte order) is not supported"),
            )),
            _ => Ok(()),
        }
    }

    fn check_element(&self, e: &Element, key_len: usize) -> std::result::Result<(), String> {
        let check_len = |k: &[u8]| {
            if k.len() == key_len {
                Ok(())
            } else {
                Err(format!("key of {} bytes, the set's are {key_len}", k.len()))
            }
        };
        match &e.key {
            Key::Value(k) => check_len(k)?,
            Key::Range { start, end } => {
                if !self.flags.interval {
                    return Err("a range in a set without the interval flag".into());
                }
                check_len(start)?;
                check_len(end)?;
                if start > end {
                    return Err(format!("range starts after it ends: {start:?} > {end:?}"));
                }
            }
        }
        match (&self.data, &e.data) {
            (None, None) | (Some(SetData::Verdict), Some(ElemData::Verdict(_))) => Ok(()),
            (Some(SetData::Value(t)), Some(ElemData::Value(v)))
                if v.len() == t.byte_len() as usize =>
            {
                Ok(())
            }
            (Some(_), None) => Err("an element without data in a map".into()),
            (None, Some(_)) => Err("an element with data in a set that is not a map".into()),
            _ => Err("element data does not match the map's data type".into()),
        }
    }
}

/// A set as the kernel reports it (without elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub set: Set,
    pub handle: u64,
    pub anonymous: bool,
}

impl SetInfo {
    pub(crate) fn decode(msg: &Message<'_>) -> WireResult<SetInfo> {
        let (mut name, mut handle, mut flags) = (String::new(), 0, 0);
        let (mut key_type, mut key_len, mut data_type, mut data_len) = (0, 0, None, 0);
        let (mut timeout, mut size, mut udata) = (None, None, Vec::new());
        for attr in msg.attrs() {
            let attr = attr?;
            match attr.ty {
                wire::set::NAME => name = attr.str()?,
                wire::set::HANDLE => handle = attr.u64()?,
                wire::set::FLAGS => flags = attr.u32()?,
                wire::set::KEY_TYPE => key_type = attr.u32()?,
                wire::set::KEY_LEN => key_len = attr.u32()?,
                wire::set::DATA_TYPE => data_type = Some(attr.u32()?),
                wire::set::DATA_LEN => data_len = attr.u32()?,
                wire::set::TIMEOUT => timeout = Some(Duration::from_millis(attr.u64()?)),
                wire::set::USERDATA => udata = attr.payload.to_vec(),
                wire::set::DESC => {
                    for d in attr.nested() {
                        let d = d?;
                        if d.ty == wire::set::DESC_SIZE {
                            size = Some(d.u32()?);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut key = KeyType::from_id(key_type, key_len);
        if let Some(numgen) = numgen_typeof(&udata).filter(|_| key_len == 4) {
            key = KeyType::single(numgen);
        }
        let data = match data_type {
            Some(wire::data::TYPE_VERDICT) => Some(SetData::Verdict),
            Some(t) => Some(SetData::Value(DataType::from_id(t, data_len))),
            None => None,
        };
        let anonymous = flags & wire::set::F_ANONYMOUS != 0;
        Ok(SetInfo {
            set: Set {
                name,
                key,
                data: if flags & wire::set::F_MAP != 0 {
                    data
                } else {
                    None
                },
                flags: SetFlags {
                    interval: flags & wire::set::F_INTERVAL != 0,
                    timeout: flags & wire::set::F_TIMEOUT != 0,
                    dynamic: flags & wire::set::F_EVAL != 0,
                    constant: flags & wire::set::F_CONSTANT != 0 && !anonymous,
                },
                timeout: timeout.filter(|t| !t.is_zero()),
                size,
                elements: Vec::new(),
            },
            handle,
            anonymous,
        })
    }
}

/// The numgen key type in a set's `typeof` user data, if that is what it holds.
fn numgen_typeof(udata: &[u8]) -> Option<DataType> {
    let (_, t) = wire::udata(udata)
        .into_iter()
        .find(|(ty, _)| *ty == udata_set::KEY_TYPEOF)?;
    let parts = wire::udata(t);
    let expr = parts
        .iter()
        .find(|(ty, _)| *ty == udata_set::TYPEOF_EXPR)?
        .1;
    if expr.len() != 4 || u32::from_ne_bytes(expr.try_into().ok()?) != EXPR_NUMGEN {
        return None;
    }
    let data = parts
        .iter()
        .find(|(ty, _)| *ty == udata_set::TYPEOF_DATA)?
        .1;
    let field = |n: u8| -> Option<u32> {
        let v = wire::udata(data).into_iter().find(|(ty, _)| *ty == n)?.1;
        Some(u32::from_ne_bytes(v.try_into().ok()?))
    };
    Some(DataType::Numgen {
        mode: if field(0)? == 1 {
            NumgenMode::Random
        } else {
            NumgenMode::Incremental
        },
        modulus: field(1)?,
        offset: field(2).unwrap_or(0),
    })
}

/// A key: one value, or an inclusive range (interval sets only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Value(Vec<u8>),
    Range { start: Vec<u8>, end: Vec<u8> },
}

impl Key {
    /// `[start, end]`; a single value when they are equal.
    pub fn range(start: Vec<u8>, end: Vec<u8>) -> Key {
        if start == end {
            Key::Value(start)
        } else {
            Key::Range { start, end }
        }
    }

    /// A prefix of `len` bits of `addr` (bytes, network order).
    pub fn prefix(addr: &[u8], len: u32) -> Key {
        let (start, end) = prefix_bounds(addr, len);
        Key::range(start, end)
    }

    pub fn start(&self) -> &[u8] {
        match self {
            Key::Value(v) => v,
            Key::Range { start, .. } => start,
        }
    }

    pub fn end(&self) -> &[u8] {
        match self {
            Key::Value(v) => v,
            Key::Range { end, .. } => end,
        }
    }

    /// The prefix length, if this key is exactly a prefix (a single value is a prefix of
    /// its full length).
    pub fn prefix_len(&self) -> Option<u32> {
        let (start, end) = (self.start(), self.end());
        let bits = start.len() as u32 * 8;
        (0..=bits).find(|&len| {
            let (s, e) = prefix_bounds(start, len);
            s == start && e == end
        })
    }
}

/// The first and last key of the prefix `addr/len`.
fn prefix_bounds(addr: &[u8], len: u32) -> (Vec<u8>, Vec<u8>) {
    let mut start = addr.to_vec();
    let mut end = addr.to_vec();
    for (i, (s, e)) in start.iter_mut().zip(end.iter_mut()).enumerate() {
        let bit = i as u32 * 8;
        let keep = len.saturating_sub(bit).min(8);
        let mask: u8 = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *s &= mask;
        *e |= !mask;
    }
    (start, end)
}

/// What an element of a map maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElemData {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Key,
    pub data: Option<ElemData>,
    /// Timeout of this element (else the set's default).
    pub timeout: Option<Duration>,
    /// Time left before it expires (read back only).
    pub expiration: Option<Duration>,
}

impl Element {
    pub fn new(key: Vec<u8>) -> Element {
        Element::with_key(Key::Value(key))
    }

    pub fn with_key(key: Key) -> Element {
        Element {
            key,
            data: None,
            timeout: None,
            expiration: None,
        }
    }

    /// `[start, end]` (inclusive).
    pub fn range(start: Vec<u8>, end: Vec<u8>) -> Element {
        Element::with_key(Key::range(start, end))
    }

    pub fn ipv4(addr: Ipv4Addr) -> Element {
        Element::new(value::ipv4(addr))
    }

    pub fn ipv4_prefix(addr: Ipv4Addr, len: u8) -> Element {
        Element::with_key(Key::prefix(&addr.octets(), u32::from(len)))
    }

    pub fn ipv4_range(first: Ipv4Addr, last: Ipv4Addr) -> Element {
        Element::range(value::ipv4(first), value::ipv4(last))
    }

    pub fn ipv6(addr: Ipv6Addr) -> Element {
        Element::new(value::ipv6(addr))
    }

    pub fn ipv6_prefix(addr: Ipv6Addr, len: u8) -> Element {
        Element::with_key(Key::prefix(&addr.octets(), u32::from(len)))
    }

    pub fn ipv6_range(first: Ipv6Addr, last: Ipv6Addr) -> Element {
        Element::range(value::ipv6(first), value::ipv6(last))
    }

    pub fn ifname(name: &str) -> Element {
        Element::new(value::ifname(name))
    }

    /// A mark, or any 32-bit host-order value (numgen results, uid).
    pub fn u32_host(v: u32) -> Element {
        Element::new(value::u32_host(v))
    }

    pub fn port(p: u16) -> Element {
        Element::new(value::port(p))
    }

    pub fn port_range(first: u16, last: u16) -> Element {
        Element::range(value::port(first), value::port(last))
    }

    /// A concatenation of field values (see [`value::concat`]).
    pub fn concat(fields: &[&[u8]]) -> Element {
        Element::new(value::concat(fields))
    }

    pub fn verdict(mut self, v: Verdict) -> Element {
        self.data = Some(ElemData::Verdict(v));
        self
    }

    pub fn data(mut self, data: Vec<u8>) -> Element {
        self.data = Some(ElemData::Value(data));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Element {
        self.timeout = Some(t);
        self
    }
}

/// A kernel-level element: what goes into one `NFTA_LIST_ELEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawElem {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub data: Option<ElemData>,
    pub flags: u32,
    pub timeout: Option<Duration>,
    pub expiration: Option<Duration>,
    /// The range of this start element runs to the largest key.
    pub open: bool,
}

impl RawElem {
    fn encode(&self, w: &mut AttrWriter, delete: bool) {
        if self.flags != 0 {
            w.put_u32(wire::elem::FLAGS, self.flags);
        }
        w.nest(wire::elem::KEY, |k| {
            k.put(wire::data::VALUE, &self.key);
        });
        if let Some(end) = &self.key_end {
            w.nest(wire::elem::KEY_END, |k| {
                k.put(wire::data::VALUE, end);
            });
        }
        if delete {
            return;
        }
        match &self.data {
            Some(ElemData::Value(v)) => {
                w.nest(wire::elem::DATA, |d| {
                    d.put(wire::data::VALUE, v);
                });
            }
            Some(ElemData::Verdict(v)) => {
                w.nest(wire::elem::DATA, |d| {
                    d.nest(wire::data::VERDICT, |vd| v.encode(vd));
                });
            }
            None => {}
        }
        if let Some(t) = self.timeout {
            w.put_u64(wire::elem::TIMEOUT, t.as_millis() as u64);
        }
        if self.open {
            let mut u = UdataWriter::new();
            u.put_u32(udata_set::ELEM_FLAGS, udata_set::ELEM_F_INTERVAL_OPEN);
            w.put(wire::elem::USERDATA, &u.into_bytes());
        }
    }

    fn decode(attrs: wire::Attrs<'_>) -> WireResult<RawElem> {
        let mut r = RawElem {
            key: Vec::new(),
            key_end: None,
            data: None,
            flags: 0,
            timeout: None,
            expiration: None,
            open: false,
        };
        let value_of = |a: &wire::Attr<'_>| -> WireResult<Vec<u8>> {
            match data::decode_data(a)? {
                DataItem::Value(v) => Ok(v),
                DataItem::Verdict(_) => Err(Malformed("verdict as element key".into())),
            }
        };
        for a in attrs {
            let a = a?;
            match a.ty {
                wire::elem::KEY => r.key = value_of(&a)?,
                wire::elem::KEY_END => r.key_end = Some(value_of(&a)?),
                wire::elem::DATA => {
                    r.data = Some(match data::decode_data(&a)? {
                        DataItem::Value(v) => ElemData::Value(v),
                        DataItem::Verdict(v) => ElemData::Verdict(v),
                    })
                }
                wire::elem::FLAGS => r.flags = a.u32()?,
                wire::elem::TIMEOUT => r.timeout = Some(Duration::from_millis(a.u64()?)),
                wire::elem::EXPIRATION => r.expiration = Some(Duration::from_millis(a.u64()?)),
                wire::elem::USERDATA => {
                    r.open = wire::udata(a.payload).into_iter().any(|(ty, v)| {
                        ty == udata_set::ELEM_FLAGS
                            && v.try_into().map(u32::from_ne_bytes).unwrap_or(0)
                                & udata_set::ELEM_F_INTERVAL_OPEN
                                != 0
                    })
                }
                _ => {}
            }
        }
        Ok(r)
    }
}

/// Reads the elements of one GETSETELEM answer.
pub(crate) fn decode_elements(msg: &Message<'_>) -> WireResult<Vec<RawElem>> {
    let mut out = Vec::new();
    for attr in msg.attrs() {
        let attr = attr?;
        if attr.ty == wire::elem::LIST_ELEMENTS {
            for item in attr.nested() {
                out.push(RawElem::decode(item?.nested())?);
            }
        }
    }
    Ok(out)
}

/// Turns kernel elements back into elements of `set`: ranges for interval sets.
pub(crate) fn assemble(set: &Set, mut raws: Vec<RawElem>) -> Vec<Element> {
    let element = |r: RawElem, key: Key| Element {
        key,
        data: r.data,
        timeout: r.timeout,
        expiration: r.expiration,
    };
    if !set.flags.interval || set.key.is_concat() {
        return raws
            .into_iter()
            .map(|r| {
                let key = match r.key_end.clone() {
                    Some(end) => Key::range(r.key.clone(), end),
                    None => Key::Value(r.key.clone()),
                };
                element(r, key)
            })
            .collect();
    }
    let is_end = |r: &RawElem| r.flags & wire::elem::F_INTERVAL_END != 0;
    // An end sorts before a start at the same key: the end closes the range before.
    raws.sort_by(|a, b| a.key.cmp(&b.key).then(is_end(b).cmp(&is_end(a))));
    let mut out = Vec::new();
    let mut open: Option<RawElem> = None;
    for r in raws {
        if is_end(&r) {
            if let Some(start) = open.take() {
                let last = decrement(&r.key);
                let key = Key::range(start.key.clone(), last);
                out.push(element(start, key));
            }
        } else {
            if let Some(start) = open.take() {
                // Two starts in a row: the first ran up to the second.
                let key = Key::range(start.key.clone(), decrement(&r.key));
                out.push(element(start, key));
            }
            open = Some(r);
        }
    }
    if let Some(start) = open {
        let key = Key::range(start.key.clone(), vec![0xff; start.key.len()]);
        out.push(element(start, key));
    }
    out
}

/// Sorts ranges and joins overlapping ones (and touching ones with `adjacent`). Joined
/// map elements must map to the same data.
fn merge_ranges(
    mut elements: Vec<Element>,
    adjacent: bool,
) -> std::result::Result<Vec<Element>, String> {
    elements.sort_by(|a, b| a.key.start().cmp(b.key.start()));
    let mut out: Vec<Element> = Vec::new();
    for e in elements {
        if let Some(last) = out.last_mut() {
            let touches = adjacent && increment(last.key.end()).as_deref() == Some(e.key.start());
            if e.key.start() <= last.key.end() || touches {
                if last.data != e.data {
                    return Err(format!(
                        "overlapping ranges map to different data: {:?} and {:?}",
                        last.key, e.key
                    ));
                }
                if e.key.end() > last.key.end() {
                    last.key = Key::range(last.key.start().to_vec(), e.key.end().to_vec());
                }
                continue;
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Start/end kernel elements of sorted, disjoint ranges; with `lead`, the end element
/// at key 0 that `nft` writes first.
fn interval_elements(ranges: &[Element], key_len: usize, lead: bool) -> Vec<RawElem> {
    let mut out = Vec::new();
    let raw = |key: Vec<u8>, flags: u32| RawElem {
        key,
        key_end: None,
        data: None,
        flags,
        timeout: None,
        expiration: None,
        open: false,
    };
    if lead
        && ranges
            .first()
            .is_some_and(|r| r.key.start().iter().any(|&b| b != 0))
    {
        out.push(raw(vec![0; key_len], wire::elem::F_INTERVAL_END));
    }
    for r in ranges {
        let end = increment(r.key.end());
        out.push(RawElem {
            data: r.data.clone(),
            timeout: r.timeout,
            open: end.is_none(),
            ..raw(r.key.start().to_vec(), 0)
        });
        if let Some(end) = end {
            out.push(raw(end, wire::elem::F_INTERVAL_END));
        }
    }
    out
}

/// `key + 1` as a big-endian number, or None when `key` is all ones.
fn increment(key: &[u8]) -> Option<Vec<u8>> {
    let mut v = key.to_vec();
    for b in v.iter_mut().rev() {
        let (n, carry) = b.overflowing_add(1);
        *b = n;
        if !carry {
            return Some(v);
        }
    }
    None
}

/// `key - 1` as a big-endian number (0 stays 0).
fn decrement(key: &[u8]) -> Vec<u8> {
    let mut v = key.to_vec();
    for b in v.iter_mut().rev() {
        let (n, borrow) = b.overflowing_sub(1);
        *b = n;
        if !borrow {
            return v;
        }
    }
    vec![0; key.len()]
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start(), self.end()).cmp(&(other.start(), other.end()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn encode_raw(set: &Set, elements: &[Element], delete: bool, adjacent: bool) -> Vec<RawElem> {
        set.encode_elements(elements, delete, adjacent)
            .unwrap()
            .iter()
            .map(|bytes| {
                let item = wire::Attrs::new(bytes).next().unwrap().unwrap();
                RawElem::decode(item.nested()).unwrap()
            })
            .collect()
    }

    fn exclude4() -> Set {
        Set::new("exclude4", KeyType::single(DataType::Ipv4Addr)).interval()
    }

    #[test]
    fn prefixes_encode_as_nft_does() {
        // nft 1.0.6 for { 10.0.1.0/24, 10.0.2.0/24 }: 0 end, 10.0.1.0, 10.0.2.0 end,
        // 10.0.2.0, 10.0.3.0 end (adjacent ranges stay apart in a named set).
        let raws = encode_raw(
            &exclude4(),
            &[
                Element::ipv4_prefix(v4("10.0.1.0"), 24),
                Element::ipv4_prefix(v4("10.0.2.0"), 24),
            ],
            false,
            false,
        );
        let got: Vec<(Vec<u8>, u32)> = raws.iter().map(|r| (r.key.clone(), r.flags)).collect();
        assert_eq!(
            got,
            vec![
                (vec![0, 0, 0, 0], 1),
                (vec![10, 0, 1, 0], 0),
                (vec![10, 0, 2, 0], 1),
                (vec![10, 0, 2, 0], 0),
                (vec![10, 0, 3, 0], 1),
            ]
        );
    }

    #[test]
    fn a_range_to_the_end_has_no_end_element_and_is_marked_open() {
        let set = Set::new("exclude6", KeyType::single(DataType::Ipv6Addr)).interval();
        let raws = encode_raw(
            &set,
            &[
                Element::ipv6_prefix("fe80::".parse().unwrap(), 10),
                Element::ipv6_prefix("ff00::".parse().unwrap(), 8),
            ],
            false,
            false,
        );
        assert_eq!(raws.len(), 4);
        assert_eq!(raws[1].key[..2], [0xfe, 0x80]);
        assert_eq!(raws[2].key[..2], [0xfe, 0xc0]);
        assert_eq!(raws[2].flags, 1);
        assert_eq!(raws[3].key[..2], [0xff, 0x00]);
        assert!(raws[3].open);
        // And read back as the two prefixes.
        let back = assemble(&set, raws);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].key.prefix_len(), Some(10));
        assert_eq!(back[1].key.prefix_len(), Some(8));
        assert_eq!(back[1].key.end(), &[0xff; 16][..]);
    }

    #[test]
    fn overlapping_ranges_are_merged_and_read_back_merged() {
        let set = exclude4();
        let elements = vec![
            Element::ipv4_prefix(v4("10.1.0.0"), 16),
            Element::ipv4_prefix(v4("10.0.0.0"), 8),
            Element::ipv4_range(v4("192.168.1.10"), v4("192.168.1.20")),
            Element::ipv4_range(v4("192.168.1.15"), v4("192.168.1.30")),
            Element::ipv4(v4("172.16.0.1")),
        ];
        let raws = encode_raw(&set, &elements, false, false);
        // Kernel order (the rbtree dumps backwards): shuffle before assembling.
        let mut shuffled = raws.clone();
        shuffled.reverse();
        let back: Vec<Key> = assemble(&set, shuffled)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            back,
            vec![
                Key::prefix(&[10, 0, 0, 0], 8),
                Key::Value(vec![172, 16, 0, 1]),
                Key::range(vec![192, 168, 1, 10], vec![192, 168, 1, 30]),
            ]
        );
    }

    #[test]
    fn adjacent_ranges_merge_only_when_asked() {
        let set = Set::new("ports", KeyType::single(DataType::InetService)).interval();
        let elements = vec![Element::port_range(80, 89), Element::port_range(90, 99)];
        let apart = assemble(&set, encode_raw(&set, &elements, false, false));
        assert_eq!(apart.len(), 2);
        let joined = assemble(&set, encode_raw(&set, &elements, false, true));
        assert_eq!(
            joined.into_iter().map(|e| e.key).collect::<Vec<_>>(),
            vec![Key::range(vec![0, 80], vec![0, 99])]
        );
    }

    #[test]
    fn overlapping_map_ranges_with_different_data_are_refused() {
        let set = Set::map("m", KeyType::single(DataType::Ipv4Addr), SetData::Verdict).interval();
        let elements = vec![
            Element::ipv4_prefix(v4("10.0.0.0"), 8).verdict(Verdict::Accept),
            Element::ipv4_prefix(v4("10.1.0.0"), 16).verdict(Verdict::Drop),
        ];
        let err = set.encode_elements(&elements, false, false).unwrap_err();
        assert!(err.to_string().contains("different data"), "{err}");
    }

    #[test]
    fn elements_of_the_wrong_shape_are_refused() {
        let set = Set::new("s", KeyType::single(DataType::Mark));
        for bad in [
            Element::ipv6("::1".parse().unwrap()),
            Element::range(value::u32_host(1), value::u32_host(2)),
            Element::u32_host(1).verdict(Verdict::Accept),
        ] {
            assert!(
                set.encode_elements(std::slice::from_ref(&bad), false, false)
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn intervals_of_host_order_keys_are_refused() {
        let set = Set::new("marks", KeyType::single(DataType::Mark)).interval();
        let err = set
            .encode_elements(&[Element::u32_host(1)], false, false)
            .unwrap_err();
        assert!(err.to_string().contains("host byte order"), "{err}");
        let names = Set::new("names", KeyType::single(DataType::Ifname)).interval();
        assert!(
            names
                .encode_elements(&[Element::ifname("eth0")], false, false)
                .is_ok()
        );
    }

    #[test]
    fn deleting_interval_elements_sends_starts_and_ends_only() {
        let raws = encode_raw(
            &exclude4(),
            &[Element::ipv4_prefix(v4("10.0.1.0"), 24)],
            true,
            false,
        );
        assert_eq!(raws.len(), 2);
        assert_eq!(raws[0].key, [10, 0, 1, 0]);
        assert_eq!(raws[1].key, [10, 0, 2, 0]);
    }

    #[test]
    fn concatenated_interval_elements_carry_start_and_end() {
        let set = Set::new(
            "ports",
            KeyType::concat(vec![DataType::Ipv4Addr, DataType::InetService]),
        )
        .interval();
        assert_eq!(set.key.byte_len(), 8);
        let e = Element::range(
            value::concat(&[&[10, 0, 0, 0], &value::port(80)]),
            value::concat(&[&[10, 255, 255, 255], &value::port(90)]),
        );
        let raws = encode_raw(&set, std::slice::from_ref(&e), false, false);
        assert_eq!(raws.len(), 1);
        assert_eq!(raws[0].key, [10, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(
            raws[0].key_end.as_deref(),
            Some(&[10, 255, 255, 255, 0, 90, 0, 0][..])
        );
        assert_eq!(assemble(&set, raws)[0].key, e.key);
    }

    #[test]
    fn maps_keep_verdicts_data_and_timeouts() {
        let set = Set::map(
            "sticky_1",
            KeyType::single(DataType::Ipv4Addr),
            SetData::Value(DataType::Mark),
        )
        .dynamic()
        .with_timeout(Duration::from_secs(600));
        let e = Element::ipv4(v4("192.0.2.1"))
            .data(value::u32_host(0x0100_0000))
            .timeout(Duration::from_secs(60));
        let back = assemble(
            &set,
            encode_raw(&set, std::slice::from_ref(&e), false, false),
        );
        assert_eq!(back, vec![e]);
        let vmap = Set::map("save", KeyType::single(DataType::Mark), SetData::Verdict);
        let e = Element::u32_host(0x0100_0000).verdict(Verdict::Goto("to_1".into()));
        let back = assemble(
            &vmap,
            encode_raw(&vmap, std::slice::from_ref(&e), false, false),
        );
        assert_eq!(back, vec![e]);
    }

    #[test]
    fn key_types_fold_and_unfold_as_nft_does() {
        let masq = KeyType::concat(vec![DataType::Ifname, DataType::Mark]);
        assert_eq!(masq.type_id(), 0xa53);
        assert_eq!(masq.byte_len(), 20);
        assert_eq!(KeyType::from_id(0xa53, 20), masq);
        let ports = KeyType::concat(vec![DataType::Ipv4Addr, DataType::InetService]);
        assert_eq!(ports.type_id(), 0x1cd);
        assert_eq!(KeyType::from_id(0x1cd, 8), ports);
        assert_eq!(
            KeyType::from_id(TYPE_IPADDR, 4),
            KeyType::single(DataType::Ipv4Addr)
        );
    }

    #[test]
    fn set_user_data_matches_nft() {
        // Bytes nft 1.0.6 writes for the representative sets.
        let round = Set::map(
            "round_tcp",
            KeyType::single(DataType::Numgen {
                mode: NumgenMode::Incremental,
                modulus: 3,
                offset: 0,
            }),
            SetData::Verdict,
        );
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(round.udata(false)),
            "000401000000010400000000031a000417000000011200040000000001040300000002040000000004080004010000000100060400000000"
        );
        let sticky = Set::map(
            "sticky_1",
            KeyType::single(DataType::Ipv4Addr),
            SetData::Value(DataType::Mark),
        );
        assert_eq!(
            hex(sticky.udata(false)),
            "000402000000010401000000060400000000"
        );
        let masq = Set::new(
            "masq",
            KeyType::concat(vec![DataType::Ifname, DataType::Mark]),
        );
        assert_eq!(hex(masq.udata(false)), "000400000000030800040d0000000100");
        let exclude = exclude4();
        assert_eq!(hex(exclude.udata(false)), "000402000000");
        // And the numgen typeof reads back.
        assert_eq!(
            numgen_typeof(&round.udata(false)),
            Some(round.key.fields[0])
        );
    }

    #[test]
    fn prefix_lengths_are_recognised() {
        assert_eq!(Key::prefix(&[10, 0, 1, 7], 24).prefix_len(), Some(24));
        assert_eq!(Key::Value(vec![10, 0, 1, 7]).prefix_len(), Some(32));
        assert_eq!(
            Key::range(vec![10, 0, 0, 1], vec![10, 0, 0, 2]).prefix_len(),
            None
        );
        assert_eq!(Key::prefix(&[0; 16], 0).prefix_len(), Some(0));
    }
}
