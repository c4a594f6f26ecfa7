//! The kernel's connection tracking table over ctnetlink (a `NETLINK_NETFILTER`
//! socket), without the `conntrack` tool: dump it (filtered by family and mark in the
//! kernel), count entries per mark, delete entries by mark.
//!
//! Messages are built and parsed here (layout in `linux/netfilter/nfnetlink_conntrack.h`):
//! a netlink header, a `nfgenmsg` (family, version, resource id), then attributes, the
//! tuples nested two levels deep. Multi-byte values are big-endian.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use tracing::debug;

use crate::model::Family;

// Netlink (linux/netlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// nfnetlink: message type = subsystem << 8 | message.
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_MARK_MASK: u16 = 21;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// Protocols whose tuples carry `CTA_PROTO_SRC_PORT`/`DST_PORT` (GRE its keys there).
const PORT_PROTOCOLS: [u8; 6] = [6, 17, 33, 47, 132, 136];

/// Deletion requests sent per datagram: their acknowledgements must fit the socket's
/// receive buffer, or the kernel drops them and we would wait forever.
const DELETE_BATCH: usize = 64;

/// What failed (`context`) and the kernel's or the socket's error.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct Error {
    context: String,
    #[source]
    source: io::Error,
}

impl Error {
    fn new(context: impl Into<String>, source: io::Error) -> Self {
        Error {
            context: context.into(),
            source,
        }
    }

    /// The errno the kernel answered, if the failure was one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Kernel {
            what: "conntrack",
            source: Box::new(e),
        }
    }
}

/// One direction of a connection. For ICMP and ICMPv6, which have no ports, `sport`
/// holds the echo identifier and `dport` `type << 8 | code`, where the kernel keeps
/// them in its own tuple; protocols without either have zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// The entry's `IPS_*` status bits (`linux/netfilter/nf_conntrack_common.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DYING: u32 = 1 << 9;
    pub const OFFLOAD: u32 = 1 << 14;

    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The source was translated (SNAT or MASQUERADE).
    pub fn src_nat(self) -> bool {
        self.has(Self::SRC_NAT)
    }
}

/// One tracked connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub family: Family,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP...).
    pub protocol: u8,
    /// As the first packet went.
    pub orig: Tuple,
    /// As answers come back: after source NAT its `dst` is the translated address.
    pub reply: Tuple,
    pub mark: u32,
    /// The kernel's identifier of the entry, which a deletion by tuple checks so that
    /// it never hits a newer connection that reuses the tuple.
    pub id: u32,
    /// Conntrack zone, 0 for almost everything.
    pub zone: u16,
    pub status: Status,
}

/// Entries whose `mark & mask == value & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkMatch {
    pub value: u32,
    pub mask: u32,
}

impl MarkMatch {
    pub fn matches(&self, mark: u32) -> bool {
        mark & self.mask == self.value & self.mask
    }
}

/// Which entries a dump or a deletion is about; the default is all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    pub family: Option<Family>,
    pub mark: Option<MarkMatch>,
}

impl Filter {
    /// Entries of both families whose `mark & mask == value & mask`.
    pub fn mark(value: u32, mask: u32) -> Self {
        Filter {
            family: None,
            mark: Some(MarkMatch { value, mask }),
        }
    }

    /// The same, restricted to one family.
    pub fn family(self, family: Family) -> Self {
        Filter {
            family: Some(family),
            ..self
        }
    }

    pub fn matches(&self, entry: &Entry) -> bool {
        self.family.is_none_or(|f| f == entry.family)
            && self.mark.is_none_or(|m| m.matches(entry.mark))
    }
}

/// A ctnetlink socket. Without connection tracking in the kernel (no nfnetlink or no
/// conntrack), every dump is empty and every deletion deletes nothing.
pub struct Conntrack {
    socket: Option<TokioSocket>,
    seq: u32,
    /// The last exchange ran to its end. When it did not (its future dropped, or an
    /// error midway) the kernel may still be dumping into the socket, and would refuse
    /// the next dump (EBUSY): the next exchange takes a fresh socket.
    settled: bool,
}

impl Conntrack {
    /// Opens the socket, on the current tokio runtime (which must have I/O enabled).
    pub fn open() -> Result<Self> {
        Ok(Conntrack {
            socket: open_socket()
                .map_err(|e| Error::new("opening a netfilter netlink socket", e))?,
            seq: 0,
            settled: true,
        })
    }

    /// Before an exchange: a fresh socket if the last exchange did not settle.
    fn begin(&mut self) -> io::Result<()> {
        if !self.settled {
            debug!("the last conntrack exchange was interrupted: new socket");
            self.socket = open_socket()?;
        }
        self.settled = false;
        Ok(())
    }

    /// The entries that match `filter`. The kernel filters by family and mark, so a
    /// table of 100k connections is not shipped to us for a few; we filter again in
    /// case a kernel ignored part of it, and alone where it refuses a mark filter
    /// (built without conntrack marks).
    pub async fn dump(&mut self, filter: &Filter) -> Result<Vec<Entry>> {
        let context = || format!("dumping conntrack ({})", describe(filter));
        let entries = match self.dump_entries(filter, filter).await {
            Ok(entries) => entries,
            // A kernel that cannot filter by mark (EOPNOTSUPP without conntrack marks,
            // EINVAL from an old one): filter here.
            Err(e) if filter.mark.is_some() && is_unsupported(&e) => {
                debug!(error = %e, "kernel refused the mark filter, filtering here");
                let unfiltered = Filter {
                    mark: None,
                    ..*filter
                };
                self.dump_entries(&unfiltered, filter)
                    .await
                    .map_err(|e| Error::new(context(), e))?
            }
            Err(e) => return Err(Error::new(context(), e)),
        };
        debug!(filter = %describe(filter), count = entries.len(), "dumped conntrack");
        Ok(entries)
    }

    /// Dumps with `request` as the kernel's filter, keeps what matches `filter`.
    async fn dump_entries(&mut self, request: &Filter, filter: &Filter) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.dump_raw(request, &mut |payload| {
            let entry = parse_entry(payload).map_err(malformed)?;
            entries.extend(entry.filter(|e| filter.matches(e)));
            Ok(())
        })
        .await?;
        Ok(entries)
    }

    /// How many entries of `family` (`None`: both) there are per `mark & mask`, 0
    /// counting those without a mark in `mask`. Reads the whole table, parsing only
    /// the mark of each entry.
    pub async fn count_by_mark(
        &mut self,
        family: Option<Family>,
        mask: u32,
    ) -> Result<BTreeMap<u32, u64>> {
        let filter = Filter { family, mark: None };
        let mut counts = BTreeMap::new();
        self.dump_raw(&filter, &mut |payload| {
            let mark = parse_mark(payload).map_err(malformed)?;
            *counts.entry(mark & mask).or_insert(0) += 1;
            Ok(())
        })
        .await
        .map_err(|e| {
            Error::new(
                format!("counting conntrack entries by mark ({})", describe(&filter)),
                e,
            )
        })?;
        Ok(counts)
    }

    /// Deletes the entries that match `filter` and returns how many matched. On Linux
    /// 4.19 and later the kernel deletes them itself in one request (a flush filtered
    /// by family and mark, which reports no count: the count is that of the dump just
    /// before, and an entry created in between goes too). Older kernels would flush the
    /// mark in both families, so there, and wherever the kernel refuses a filtered
    /// flush, each entry is deleted by its original tuple and id.
    ///
    /// A filter without a mark (or with an empty mask) would delete every other
    /// program's connections too: refused.
    pub async fn delete(&mut self, filter: &Filter) -> Result<usize> {
        if filter.mark.is_none_or(|m| m.mask == 0) {
            return Err(Error::new(
                format!("deleting conntrack entries ({})", describe(filter)),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "refusing to delete connections whatever their mark",
                ),
            ));
        }
        let entries = self.dump(filter).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        if kernel_flushes_by_family_and_mark() {
            let seq = self.next_seq();
            match self.acknowledged(&flush_request(seq, filter), seq, 1).await {
                Ok(errors) => match errors.first() {
                    None => {
                        debug!(filter = %describe(filter), count = entries.len(), "flushed conntrack entries");
                        return Ok(entries.len());
                    }
                    Some(&(_, errno)) if is_unsupported_errno(errno) => {
                        debug!(
                            errno,
                            "kernel refused a filtered flush, deleting one by one"
                        );
                    }
                    Some(&(_, errno)) => {
                        return Err(Error::new(
                            format!("deleting conntrack entries ({})", describe(filter)),
                            io::Error::from_raw_os_error(errno),
                        ));
                    }
                },
                Err(e) => {
                    return Err(Error::new(
                        format!("deleting conntrack entries ({})", describe(filter)),
                        e,
                    ));
                }
            }
        }
        self.delete_entries(&entries).await
    }

    /// Deletes these entries, each by its original tuple, zone and id: an entry gone
    /// meanwhile, or replaced by another connection with the same tuple, is left
    /// alone. Returns how many were deleted.
    pub async fn delete_entries(&mut self, entries: &[Entry]) -> Result<usize> {
        let mut deleted = 0;
        for batch in entries.chunks(DELETE_BATCH) {
            let first = self.seq.wrapping_add(1);
            let mut request = Vec::new();
            for entry in batch {
                request.extend(delete_request(self.next_seq(), entry));
            }
            let errors = self
                .acknowledged(&request, first, batch.len())
                .await
                .map_err(|e| Error::new("deleting conntrack entries", e))?;
            let mut gone = 0;
            for (seq, errno) in errors {
                let entry = &batch[seq.wrapping_sub(first) as usize];
                if errno != libc::ENOENT {
                    return Err(Error::new(
                        format!("deleting conntrack entry {}", describe_entry(entry)),
                        io::Error::from_raw_os_error(errno),
                    ));
                }
                gone += 1;
            }
            deleted += batch.len() - gone;
        }
        debug!(
            deleted,
            asked = entries.len(),
            "deleted conntrack entries one by one"
        );
        Ok(deleted)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a dump request for `filter` and hands each entry's payload (from the
    /// `nfgenmsg` on) to `each`. A kernel without ctnetlink yields nothing.
    async fn dump_raw(
        &mut self,
        filter: &Filter,
        each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let seq = self.next_seq();
        self.begin()?;
        let Some(socket) = &self.socket else {
            self.settled = true;
            return Ok(());
        };
        let request = dump_request(seq, filter);
        socket.send_to(&request, &SocketAddr::new(0, 0)).await?;
        loop {
            let (datagram, _) = socket.recv_from_full().await?;
            for message in Messages(&datagram) {
                let (header, payload) = message.map_err(malformed)?;
                if header.seq != seq {
                    continue; // left over from an earlier request
                }
                match header.kind {
                    NLMSG_DONE => {
                        self.settled = true;
                        return match read_i32(payload) {
                            Some(errno) if errno < 0 => Err(io::Error::from_raw_os_error(-errno)),
                            _ => Ok(()),
                        };
                    }
                    NLMSG_ERROR => {
                        let errno = read_i32(payload).ok_or_else(|| malformed("short error"))?;
                        self.settled = true;
                        if errno == 0 {
                            return Ok(());
                        }
                        // No ctnetlink subsystem (nf_conntrack_netlink absent): nfnetlink
                        // answers EINVAL to an unfiltered request; nothing is tracked.
                        if filter.mark.is_none() && is_unsupported_errno(-errno) {
                            debug!(
                                errno = -errno,
                                "no conntrack netlink in this kernel: empty dump"
                            );
                            return Ok(());
                        }
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    kind if kind == ctnl(IPCTNL_MSG_CT_NEW) => each(payload)?,
                    _ => {}
                }
            }
        }
    }

    /// Sends `request` (`count` messages numbered from `first` on, each asking for an
    /// acknowledgement) and waits for every acknowledgement. Returns the sequence
    /// numbers that failed, with their errno.
    async fn acknowledged(
        &mut self,
        request: &[u8],
        first: u32,
        count: usize,
    ) -> io::Result<Vec<(u32, i32)>> {
        self.begin()?;
        let Some(socket) = &self.socket else {
            self.settled = true;
            return Ok(Vec::new());
        };
        socket.send_to(request, &SocketAddr::new(0, 0)).await?;
        let mut pending = count;
        let mut errors = Vec::new();
        while pending > 0 {
            let (datagram, _) = socket.recv_from_full().await?;
            for message in Messages(&datagram) {
                let (header, payload) = message.map_err(malformed)?;
                if header.kind != NLMSG_ERROR || header.seq.wrapping_sub(first) >= count as u32 {
                    continue;
                }
                let errno = read_i32(payload).ok_or_else(|| malformed("short error"))?;
                if errno != 0 {
                    errors.push((header.seq, -errno));
                }
                pending -= 1;
            }
        }
        self.settled = true;
        Ok(errors)
    }
}

/// A ctnetlink socket; `None` when the kernel has no nfnetlink.
fn open_socket() -> io::Result<Option<TokioSocket>> {
    let socket = match TokioSocket::new(NETLINK_NETFILTER) {
        Ok(socket) => socket,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
            debug!("no nfnetlink in this kernel: no connection tracking to read");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // Acknowledgements without a copy of each request: a batch of them fits.
    socket.socket_ref().set_cap_ack(true)?;
    Ok(Some(socket))
}

/// Linux 4.19 filters a flush by family (with a non-zero `nfgenmsg` version) as well
/// as by mark; earlier kernels would flush the mark in every family.
fn kernel_flushes_by_family_and_mark() -> bool {
    kernel_release().is_some_and(|v| v >= (4, 19))
}

fn kernel_release() -> Option<(u32, u32)> {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    parse_release(&String::from_utf8_lossy(&release))
}

/// "6.18.44-fc-v1045" → (6, 18).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(is_unsupported_errno)
}

fn is_unsupported_errno(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::EINVAL)
}

fn malformed(reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed conntrack message: {}", reason.into()),
    )
}

fn describe(filter: &Filter) -> String {
    let family = match filter.family {
        None => "both families".to_string(),
        Some(f) => f.to_string(),
    };
    match filter.mark {
        None => family,
        Some(m) => format!("{family}, mark {:#x}/{:#x}", m.value, m.mask),
    }
}

fn describe_entry(e: &Entry) -> String {
    format!(
        "proto {} {}:{} -> {}:{} mark {:#x}",
        e.protocol, e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport, e.mark
    )
}

fn ctnl(message: u16) -> u16 {
    NFNL_SUBSYS_CTNETLINK << 8 | message
}

fn family_byte(family: Option<Family>) -> u8 {
    match family {
        None => libc::AF_UNSPEC as u8,
        Some(Family::V4) => AF_INET,
        Some(Family::V6) => AF_INET6,
    }
}

// ---- encoding ----------------------------------------------------------------

/// A netlink message under construction: header, `nfgenmsg`, attributes.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.extend_from_slice(&[family, version, 0, 0]); // res_id 0
        Message(buf)
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    fn begin_nest(&mut self, kind: u16) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nest(&mut self, start: usize) {
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn put_mark(msg: &mut Message, mark: &MarkMatch) {
    msg.attr(CTA_MARK, &(mark.value & mark.mask).to_be_bytes());
    msg.attr(CTA_MARK_MASK, &mark.mask.to_be_bytes());
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: the family in `nfgenmsg` (0: both), the
/// mark as `CTA_MARK` and `CTA_MARK_MASK`.
fn dump_request(seq: u32, filter: &Filter) -> Vec<u8> {
    let mut msg = Message::new(
        ctnl(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family_byte(filter.family),
        0,
    );
    if let Some(mark) = &filter.mark {
        put_mark(&mut msg, mark);
    }
    msg.finish()
}

/// `IPCTNL_MSG_CT_DELETE` without a tuple is a flush, filtered by what it carries:
/// the mark, and the family only when the `nfgenmsg` version is not 0 (version 0 with
/// a family flushes every family, for old tools).
fn flush_request(seq: u32, filter: &Filter) -> Vec<u8> {
    let mut msg = Message::new(
        ctnl(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family_byte(filter.family),
        1,
    );
    if let Some(mark) = &filter.mark {
        put_mark(&mut msg, mark);
    }
    msg.finish()
}

/// `IPCTNL_MSG_CT_DELETE` of one entry: its original tuple, zone and id.
fn delete_request(seq: u32, entry: &Entry) -> Vec<u8> {
    let mut msg = Message::new(
        ctnl(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family_byte(Some(entry.family)),
        0,
    );
    put_tuple(&mut msg, CTA_TUPLE_ORIG, entry.protocol, &entry.orig);
    if entry.zone != 0 {
        msg.attr(CTA_ZONE, &entry.zone.to_be_bytes());
    }
    if entry.id != 0 {
        msg.attr(CTA_ID, &entry.id.to_be_bytes());
    }
    msg.finish()
}

fn put_tuple(msg: &mut Message, kind: u16, protocol: u8, tuple: &Tuple) {
    let outer = msg.begin_nest(kind);
    let ip = msg.begin_nest(CTA_TUPLE_IP);
    match (tuple.src, tuple.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            msg.attr(CTA_IP_V4_SRC, &src.octets());
            msg.attr(CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            msg.attr(CTA_IP_V6_SRC, &v6(src).octets());
            msg.attr(CTA_IP_V6_DST, &v6(dst).octets());
        }
    }
    msg.end_nest(ip);
    let proto = msg.begin_nest(CTA_TUPLE_PROTO);
    msg.attr(CTA_PROTO_NUM, &[protocol]);
    let [kind, code] = tuple.dport.to_be_bytes();
    match protocol {
        IPPROTO_ICMP => {
            msg.attr(CTA_PROTO_ICMP_ID, &tuple.sport.to_be_bytes());
            msg.attr(CTA_PROTO_ICMP_TYPE, &[kind]);
            msg.attr(CTA_PROTO_ICMP_CODE, &[code]);
        }
        IPPROTO_ICMPV6 => {
            msg.attr(CTA_PROTO_ICMPV6_ID, &tuple.sport.to_be_bytes());
            msg.attr(CTA_PROTO_ICMPV6_TYPE, &[kind]);
            msg.attr(CTA_PROTO_ICMPV6_CODE, &[code]);
        }
        p if PORT_PROTOCOLS.contains(&p) => {
            msg.attr(CTA_PROTO_SRC_PORT, &tuple.sport.to_be_bytes());
            msg.attr(CTA_PROTO_DST_PORT, &tuple.dport.to_be_bytes());
        }
        _ => {}
    }
    msg.end_nest(proto);
    msg.end_nest(outer);
}

fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

// ---- parsing -----------------------------------------------------------------

struct Header {
    kind: u16,
    seq: u32,
}

/// The netlink messages of one datagram: header and payload of each.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let buf = self.0;
        if buf.len() < NLMSG_HDRLEN {
            self.0 = &[];
            return Some(Err(format!("{} bytes left, no header", buf.len())));
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            self.0 = &[];
            return Some(Err(format!("message length {len} in {} bytes", buf.len())));
        }
        let header = Header {
            kind: u16::from_ne_bytes(buf[4..6].try_into().unwrap()),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
        };
        self.0 = &buf[align(len).min(buf.len())..];
        Some(Ok((header, &buf[NLMSG_HDRLEN..len])))
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes in `buf`: type without its flags, and payload.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.len() < NLA_HDRLEN {
            // Trailing padding is allowed, anything else is not.
            let rest = std::mem::take(&mut self.0);
            return (!rest.is_empty()).then(|| Err(format!("{} stray bytes", rest.len())));
        }
        let buf = self.0;
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            self.0 = &[];
            return Some(Err(format!(
                "attribute {kind} of length {len} in {} bytes",
                buf.len()
            )));
        }
        self.0 = &buf[align(len).min(buf.len())..];
        Some(Ok((kind, &buf[NLA_HDRLEN..len])))
    }
}

fn read_i32(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

fn be16(what: &str, v: &[u8]) -> Result<u16, String> {
    v.try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, expected 2", v.len()))
}

fn be32(what: &str, v: &[u8]) -> Result<u32, String> {
    v.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, expected 4", v.len()))
}

fn byte(what: &str, v: &[u8]) -> Result<u8, String> {
    match v {
        [b] => Ok(*b),
        _ => Err(format!("{what}: {} bytes, expected 1", v.len())),
    }
}

fn nfgen_family(payload: &[u8]) -> Result<u8, String> {
    if payload.len() < NFGENMSG_LEN {
        return Err("no nfgenmsg".into());
    }
    Ok(payload[0])
}

/// The mark of a `IPCTNL_MSG_CT_NEW` payload (0 when absent), nothing else parsed.
fn parse_mark(payload: &[u8]) -> Result<u32, String> {
    nfgen_family(payload)?;
    for attr in Attrs(&payload[NFGENMSG_LEN..]) {
        let (kind, value) = attr?;
        if kind == CTA_MARK {
            return be32("mark", value);
        }
    }
    Ok(0)
}

/// The entry in a `IPCTNL_MSG_CT_NEW` payload (from the `nfgenmsg` on); `None` for a
/// family other than IPv4 and IPv6.
fn parse_entry(payload: &[u8]) -> Result<Option<Entry>, String> {
    let family = match nfgen_family(payload)? {
        AF_INET => Family::V4,
        AF_INET6 => Family::V6,
        _ => return Ok(None),
    };
    let mut orig = None;
    let mut reply = None;
    let (mut mark, mut id, mut zone, mut status) = (0, 0, 0, 0);
    for attr in Attrs(&payload[NFGENMSG_LEN..]) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_ORIG => {
                orig = Some(parse_tuple(value).map_err(|e| format!("original tuple: {e}"))?)
            }
            CTA_TUPLE_REPLY => {
                reply = Some(parse_tuple(value).map_err(|e| format!("reply tuple: {e}"))?)
            }
            CTA_STATUS => status = be32("status", value)?,
            CTA_MARK => mark = be32("mark", value)?,
            CTA_ID => id = be32("id", value)?,
            CTA_ZONE => zone = be16("zone", value)?,
            _ => {}
        }
    }
    let (protocol, orig) = orig.ok_or("no original tuple")?;
    let (_, reply) = reply.ok_or("no reply tuple")?;
    Ok(Some(Entry {
        family,
        protocol,
        orig,
        reply,
        mark,
        id,
        zone,
        status: Status(status),
    }))
}

/// A `CTA_TUPLE_*` nest: protocol number and tuple.
fn parse_tuple(buf: &[u8]) -> Result<(u8, Tuple), String> {
    let (mut src, mut dst) = (None, None);
    let (mut protocol, mut sport, mut dport) = (None, 0, 0);
    let (mut icmp_type, mut icmp_code) = (0u8, 0u8);
    for attr in Attrs(buf) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_IP => {
                for attr in Attrs(value) {
                    let (kind, value) = attr?;
                    let addr = |v: &[u8]| -> Result<IpAddr, String> {
                        match v.len() {
                            4 => Ok(Ipv4Addr::from(<[u8; 4]>::try_from(v).unwrap()).into()),
                            16 => Ok(Ipv6Addr::from(<[u8; 16]>::try_from(v).unwrap()).into()),
                            n => Err(format!("address of {n} bytes")),
                        }
                    };
                    match kind {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr(value)?),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr(value)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for attr in Attrs(value) {
                    let (kind, value) = attr?;
                    match kind {
                        CTA_PROTO_NUM => protocol = Some(byte("protocol", value)?),
                        CTA_PROTO_SRC_PORT => sport = be16("source port", value)?,
                        CTA_PROTO_DST_PORT => dport = be16("destination port", value)?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => sport = be16("icmp id", value)?,
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            icmp_type = byte("icmp type", value)?
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            icmp_code = byte("icmp code", value)?
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let protocol = protocol.ok_or("no protocol")?;
    if matches!(protocol, IPPROTO_ICMP | IPPROTO_ICMPV6) {
        dport = u16::from_be_bytes([icmp_type, icmp_code]);
    }
    let tuple = Tuple {
        src: src.ok_or("no source address")?,
        dst: dst.ok_or("no destination address")?,
        sport,
        dport,
    };
    Ok((protocol, tuple))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Messages of a real dump (Linux 6.18, `conntrack -L` showing them as below),
    /// with their netlink header. In an otherwise empty namespace:
    /// `tcp ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=42100 dport=9 src=127.0.0.1
    /// dst=127.0.0.9 sport=9 dport=42100 [ASSURED] mark=16777216` (SNAT to 127.0.0.9),
    const CAPTURED_TCP: &str = "d40000000001220007000000784c0000020000003400018014000180080001007f000001080002007f0000011c000280050001000600000006000200a474000006000300000900003400028014000180080001007f000001080002007f0000091c0002800500010006000000060002000009000006000300a4740000080003000000019e080008000100000008000c00a5f635ad08000b0000000001080007000006977d300004802c0001800500010003000000050002000a000000050003000a00000006000400230000000600050023000000";
    /// `icmp src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=1 src=127.0.0.1
    /// dst=127.0.0.1 type=0 code=0 id=1 mark=33554432`,
    const CAPTURED_ICMP: &str = "b40000000001220007000000784c0000020000003c00018014000180080001007f000001080002007f0000012400028005000100010000000600040000010000050005000800000005000600000000003c00028014000180080001007f000001080002007f000001240002800500010001000000060004000001000005000500000000000500060000000000080003000000018a080008000200000008000c00f8e186d908000b0000000001080007000000001c";
    /// `udp src=::1 dst=::1 sport=35426 dport=53 [UNREPLIED] src=::1 dst=::1 sport=53
    /// dport=35426 mark=570425344`.
    const CAPTURED_UDP6: &str = "d40000000001220007000000784c00000a0000004c0001802c000180140003000000000000000000000000000000000114000400000000000000000000000000000000011c0002800500010011000000060002008a62000006000300003500004c0002802c000180140003000000000000000000000000000000000114000400000000000000000000000000000000011c00028005000100110000000600020000350000060003008a6200000800030000000188080008002200000008000c00f43c0f7808000b0000000001080007000000001b";
    /// The end of that dump.
    const CAPTURED_DONE: &str = "14000000 0300 0200 07000000 784c0000 00000000";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The payload (after the netlink header) of the only message in `msg`.
    fn payload(msg: &[u8]) -> Vec<u8> {
        let all: Vec<_> = Messages(msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        all[0].1.to_vec()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp_entry() -> Entry {
        Entry {
            family: Family::V4,
            protocol: 6,
            orig: Tuple {
                src: ip("127.0.0.1"),
                dst: ip("127.0.0.1"),
                sport: 42100,
                dport: 9,
            },
            reply: Tuple {
                src: ip("127.0.0.1"),
                dst: ip("127.0.0.9"),
                sport: 9,
                dport: 42100,
            },
            mark: 0x0100_0000,
            id: 0xa5f6_35ad,
            zone: 0,
            status: Status(0x19e),
        }
    }

    #[test]
    fn captured_tcp_entry_with_source_nat() {
        let entry = parse_entry(&payload(&hex(CAPTURED_TCP))).unwrap().unwrap();
        assert_eq!(entry, tcp_entry());
        assert!(entry.status.src_nat());
        assert!(entry.status.has(Status::ASSURED | Status::SEEN_REPLY));
        assert!(!entry.status.has(Status::DST_NAT));
        assert_eq!(parse_mark(&payload(&hex(CAPTURED_TCP))), Ok(0x0100_0000));
    }

    #[test]
    fn captured_icmp_entry_keeps_type_code_and_id() {
        let entry = parse_entry(&payload(&hex(CAPTURED_ICMP))).unwrap().unwrap();
        assert_eq!((entry.family, entry.protocol), (Family::V4, 1));
        // id in sport, type << 8 | code in dport: echo request out, echo reply back
        assert_eq!((entry.orig.sport, entry.orig.dport), (1, 0x0800));
        assert_eq!((entry.reply.sport, entry.reply.dport), (1, 0));
        assert_eq!(entry.mark, 0x0200_0000);
        assert!(!entry.status.src_nat());
    }

    #[test]
    fn captured_ipv6_udp_entry() {
        let entry = parse_entry(&payload(&hex(CAPTURED_UDP6))).unwrap().unwrap();
        assert_eq!(entry.family, Family::V6);
        assert_eq!(entry.protocol, 17);
        assert_eq!(
            entry.orig,
            Tuple {
                src: ip("::1"),
                dst: ip("::1"),
                sport: 35426,
                dport: 53
            }
        );
        assert_eq!((entry.reply.sport, entry.reply.dport), (53, 35426));
        assert_eq!(entry.mark, 0x2200_0000);
        assert!(!entry.status.has(Status::SEEN_REPLY));
    }

    #[test]
    fn datagram_of_several_messages() {
        let mut datagram = hex(CAPTURED_TCP);
        datagram.extend(hex(CAPTURED_ICMP));
        datagram.extend(hex(CAPTURED_DONE));
        let messages: Vec<_> = Messages(&datagram).collect::<Result<_, _>>().unwrap();
        let kinds: Vec<_> = messages.iter().map(|(h, _)| h.kind).collect();
        assert_eq!(
            kinds,
            [ctnl(IPCTNL_MSG_CT_NEW), ctnl(IPCTNL_MSG_CT_NEW), NLMSG_DONE]
        );
        assert!(messages.iter().all(|(h, _)| h.seq == 7));
        assert_eq!(read_i32(messages[2].1), Some(0));
        // A length beyond the datagram is an error, not a panic or a silent stop.
        let mut cut = hex(CAPTURED_TCP);
        cut.truncate(100);
        assert!(Messages(&cut).next().unwrap().is_err());
    }

    #[test]
    fn truncated_or_incomplete_entries_are_errors() {
        let full = payload(&hex(CAPTURED_TCP));
        // Cut inside the first tuple.
        assert!(parse_entry(&full[..30]).is_err());
        // Only the nfgenmsg: no tuples.
        assert_eq!(
            parse_entry(&full[..4]),
            Err("no original tuple".to_string())
        );
        assert!(parse_entry(&full[..2]).is_err());
        // Another family is not ours to parse.
        let mut bridge = full.clone();
        bridge[0] = 7;
        assert_eq!(parse_entry(&bridge), Ok(None));
    }

    #[test]
    fn dump_request_carries_family_and_mark_filter() {
        let filter = Filter::mark(0x0100_0000, 0x3f00_0000).family(Family::V4);
        let request = dump_request(0x0102_0304, &filter);
        assert_eq!(
            request,
            hex("24000000 0101 0103 04030201 00000000 02000000
                 0800 0800 01000000 0800 1500 3f000000")
        );
        // Both families: AF_UNSPEC. Bits of the value outside the mask are dropped (the
        // kernel would compare them against masked marks and match nothing).
        let request = dump_request(1, &Filter::mark(0x4100_00ff, 0x3f00_0000));
        assert_eq!(request[16], 0);
        assert_eq!(
            &request[20..],
            &hex("0800 0800 01000000 0800 1500 3f000000")[..]
        );
        // No filter: header and nfgenmsg only.
        assert_eq!(dump_request(1, &Filter::default()).len(), 20);
    }

    #[test]
    fn flush_request_asks_for_family_filtering() {
        let request = flush_request(
            9,
            &Filter::mark(0x0200_0000, 0x3f00_0000).family(Family::V6),
        );
        assert_eq!(
            request,
            hex("24000000 0201 0500 09000000 00000000 0a010000
                 0800 0800 02000000 0800 1500 3f000000")
        );
    }

    /// A deletion carries the original tuple exactly as the kernel dumped it.
    #[test]
    fn delete_request_carries_the_kernels_own_tuple() {
        for captured in [CAPTURED_TCP, CAPTURED_ICMP, CAPTURED_UDP6] {
            let dumped = payload(&hex(captured));
            let entry = parse_entry(&dumped).unwrap().unwrap();
            let request = delete_request(5, &entry);
            let sent = payload(&request);
            assert_eq!(sent[..4], [dumped[0], 0, 0, 0]);
            let attrs: Vec<_> = Attrs(&sent[4..]).collect::<Result<_, _>>().unwrap();
            let kinds: Vec<_> = attrs.iter().map(|(k, _)| *k).collect();
            assert_eq!(kinds, [CTA_TUPLE_ORIG, CTA_ID]);
            let kernel_tuple = Attrs(&dumped[4..])
                .map(Result::unwrap)
                .find(|(k, _)| *k == CTA_TUPLE_ORIG)
                .unwrap()
                .1;
            assert_eq!(attrs[0].1, kernel_tuple, "{captured}");
            assert_eq!(attrs[1].1, entry.id.to_be_bytes());
        }
        let header = &delete_request(5, &tcp_entry())[4..8];
        assert_eq!(header, hex("0201 0500"));
        // A zone travels with it.
        let zoned = Entry {
            zone: 3,
            ..tcp_entry()
        };
        let sent = payload(&delete_request(5, &zoned));
        assert!(
            Attrs(&sent[4..])
                .map(Result::unwrap)
                .any(|(k, v)| k == CTA_ZONE && v == [0, 3])
        );
    }

    #[test]
    fn filter_matches_family_and_mark_under_mask() {
        let entry = tcp_entry(); // IPv4, mark 0x01000000
        assert!(Filter::default().matches(&entry));
        assert!(Filter::mark(0x0100_0000, 0x3f00_0000).matches(&entry));
        assert!(
            Filter::mark(0x0100_0000, 0x3f00_0000)
                .family(Family::V4)
                .matches(&entry)
        );
        assert!(
            !Filter::mark(0x0100_0000, 0x3f00_0000)
                .family(Family::V6)
                .matches(&entry)
        );
        assert!(!Filter::mark(0x0200_0000, 0x3f00_0000).matches(&entry));
        // Another program's bits outside the mask do not matter.
        let foreign = Entry {
            mark: 0x0100_4000,
            ..tcp_entry()
        };
        assert!(Filter::mark(0x0100_0000, 0x3f00_0000).matches(&foreign));
        assert!(!Filter::mark(0x0100_0000, 0xffff_ffff).matches(&foreign));
        // The inbound flag is part of the mark.
        let inbound = Entry {
            mark: 0x2100_0000,
            ..tcp_entry()
        };
        assert!(!Filter::mark(0x0100_0000, 0x3f00_0000).matches(&inbound));
        assert!(Filter::mark(0x0100_0000, 0x1f00_0000).matches(&inbound));
    }

    #[tokio::test]
    async fn deleting_whatever_the_mark_is_refused() {
        // Refused before any request: no privilege needed.
        let mut ct = Conntrack::open().unwrap();
        for filter in [
            Filter::default(),
            Filter::default().family(Family::V4),
            Filter::mark(0, 0),
        ] {
            let e = ct.delete(&filter).await.unwrap_err();
            assert_eq!(e.source.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[test]
    fn kernel_release_numbers() {
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("4.19.0-27-amd64"), Some((4, 19)));
        assert_eq!(parse_release("5.4"), Some((5, 4)));
        assert_eq!(parse_release("6-rc1"), None);
        assert!((4, 18) < (4, 19) && (5, 0) > (4, 19));
    }

    #[test]
    fn errors_say_what_failed() {
        let e = Error::new(
            "dumping conntrack (IPv4, mark 0x1000000/0x3f000000)",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(
            e.to_string(),
            "dumping conntrack (IPv4, mark 0x1000000/0x3f000000): Operation not permitted (os error 1)"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(describe(&Filter::default()), "both families");
    }

    fn arb_tuple(v6: bool) -> impl Strategy<Value = Tuple> {
        let addr = move || {
            any::<u128>().prop_map(move |n| {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(n))
                } else {
                    IpAddr::V4(Ipv4Addr::from(n as u32))
                }
            })
        };
        (addr(), addr(), any::<u16>(), any::<u16>()).prop_map(|(src, dst, sport, dport)| Tuple {
            src,
            dst,
            sport,
            dport,
        })
    }

    proptest! {
        /// Whatever we encode as a tuple parses back the same (ports only for port
        /// protocols; ICMP's id, type and code in full).
        #[test]
        fn tuples_round_trip(
            protocol in prop::sample::select(vec![1u8, 6, 17, 33, 47, 58, 132, 136, 50]),
            tuple in any::<bool>().prop_flat_map(arb_tuple),
        ) {
            let mut msg = Message::new(0, 0, 0, 0, 0);
            put_tuple(&mut msg, CTA_TUPLE_ORIG, protocol, &tuple);
            let bytes = msg.finish();
            let (kind, nest) = Attrs(&bytes[20..]).next().unwrap().unwrap();
            prop_assert_eq!(kind, CTA_TUPLE_ORIG);
            let (parsed_protocol, parsed) = parse_tuple(nest).unwrap();
            prop_assert_eq!(parsed_protocol, protocol);
            let expected = if protocol == 50 { Tuple { sport: 0, dport: 0, ..tuple } } else { tuple };
            prop_assert_eq!(parsed, expected);
        }

        /// Garbage never panics the parser.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_entry(&bytes);
            let _ = parse_mark(&bytes);
            for (_, payload) in Messages(&bytes).flatten() {
                let _ = parse_entry(payload);
            }
        }
    }
}
