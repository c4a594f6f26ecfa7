//! The netlink socket: commits batches and reads tables, chains, rules, sets and
//! elements back. Synchronous: nf_tables answers within the system call, so a read is
//! one `sendto` and one `recv` (plus more for long dumps).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tracing::debug;

use super::batch::Batch;
use super::error::{Error, Result};
use super::objects::{ChainInfo, Family, RuleInfo, TableInfo};
use super::set::{self, Element, SetInfo};
use super::wire::{self, AttrWriter, Message, Messages, WireResult, msg};

/// How long to wait for an answer the kernel owes us before giving up.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Large enough for any datagram the kernel sends (dumps use at most 32 KiB).
const RECEIVE_BUFFER: usize = 128 * 1024;
/// Restarts of a dump the kernel reports as interrupted by a concurrent change.
const DUMP_RETRIES: usize = 10;

/// A handle on nf_tables in the calling thread's network namespace.
pub struct Nft {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    rcvbuf: usize,
    sndbuf: usize,
}

/// Whether the kernel has nf_tables: a netfilter netlink socket opens and answers a
/// request for the ruleset generation. False also without `CAP_NET_ADMIN`.
pub fn available() -> bool {
    let answer = Nft::new().and_then(|mut nft| nft.generation());
    match answer {
        Ok(_) => true,
        Err(e) => {
            debug!("nf_tables not available: {e}");
            false
        }
    }
}

impl Nft {
    /// Opens a netlink socket to nf_tables.
    pub fn new() -> Result<Nft> {
        // SAFETY: plain system calls on a descriptor we own; arguments are valid.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                wire::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(Error::Socket {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = kernel_addr();
        // SAFETY: `addr` is a valid sockaddr_nl of the given size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound < 0 {
            return Err(Error::Socket {
                source: io::Error::last_os_error(),
            });
        }
        // Errors echo only the request's header, and carry the kernel's explanation.
        // Both are optional: older kernels answer without them.
        let _ = set_int(&fd, libc::SOL_NETLINK, wire::NETLINK_CAP_ACK, 1);
        let _ = set_int(&fd, libc::SOL_NETLINK, wire::NETLINK_EXT_ACK, 1);
        let timeout = libc::timeval {
            tv_sec: RECEIVE_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Nft {
            fd,
            // Any start will do; a varying one keeps a reused port's stale answers apart.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            buf: vec![0; RECEIVE_BUFFER],
            rcvbuf: 0,
            sndbuf: 0,
        })
    }

    fn next_seqs(&mut self, n: usize) -> u32 {
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n as u32);
        first
    }

    /// Applies a batch as one transaction. When the kernel refuses any message, it
    /// applies none, and the error names the first refused operation.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let first = self.next_seqs(batch.len() + 2);
        let end_seq = first.wrapping_add(batch.len() as u32 + 1);
        let res_id = wire::NFNL_SUBSYS_NFTABLES;
        let mut out = wire::message(
            wire::NFNL_MSG_BATCH_BEGIN,
            wire::NLM_F_REQUEST,
            first,
            0,
            res_id,
            &[],
        );
        let mut what: BTreeMap<u32, &str> = BTreeMap::new();
        what.insert(first, "starting the transaction");
        for (i, m) in batch.msgs.iter().enumerate() {
            let seq = first.wrapping_add(i as u32 + 1);
            out.extend_from_slice(&wire::message(
                wire::nft_type(m.msg),
                wire::NLM_F_REQUEST | wire::NLM_F_ACK | m.flags,
                seq,
                m.family.to_raw(),
                0,
                &m.attrs,
            ));
            what.insert(seq, &m.what);
        }
        out.extend_from_slice(&wire::message(
            wire::NFNL_MSG_BATCH_END,
            wire::NLM_F_REQUEST,
            end_seq,
            0,
            res_id,
            &[],
        ));
        what.insert(end_seq, "committing the transaction");
        // Every message is acknowledged: make room for all the answers.
        self.grow_buffers(out.len(), (batch.len() + 2) * 1024);
        self.send(&out, "the transaction")?;

        let mut pending: std::collections::BTreeSet<u32> = (1..=batch.len() as u32)
            .map(|i| first.wrapping_add(i))
            .collect();
        let mut refusals: Vec<(u32, i32, Option<String>)> = Vec::new();
        // The kernel has processed the whole batch when sendto returns and queued its
        // answers; after a refusal, take what is queued without waiting for the rest.
        while !pending.is_empty() {
            let n = match self.recv(!refusals.is_empty(), "the transaction") {
                Ok(n) => n,
                Err(e) if !refusals.is_empty() && e.errno() == Some(libc::EAGAIN) => break,
                Err(e) => return Err(e),
            };
            for m in Messages::new(&self.buf[..n]) {
                let m = m.map_err(|e| malformed("the transaction", e))?;
                if m.msg_type != wire::NLMSG_ERROR {
                    continue;
                }
                let (errno, seq, text) = m.error().map_err(|e| malformed("the transaction", e))?;
                if !what.contains_key(&seq) {
                    continue; // an answer to an earlier request
                }
                pending.remove(&seq);
                if errno != 0 {
                    refusals.push((seq, errno, text));
                }
            }
        }
        if let Some((seq, errno, text)) = refusals
            .iter()
            .min_by_key(|(seq, ..)| seq.wrapping_sub(first))
            .cloned()
        {
            for (other, errno, _) in &refusals {
                if *other != seq {
                    debug!(
                        "also refused: {} ({})",
                        what.get(other).copied().unwrap_or("?"),
                        super::error::errno_name(*errno)
                    );
                }
            }
            let what = what
                .get(&seq)
                .copied()
                .unwrap_or("a message of the transaction");
            return Err(Error::refused(what.to_string(), errno, text, true));
        }
        debug!(
            messages = batch.len(),
            bytes = out.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "nf_tables transaction committed"
        );
        Ok(())
    }

    /// The ruleset generation (changes with every commit).
    pub fn generation(&mut self) -> Result<u32> {
        let found = self.get(
            msg::GETGEN,
            Family::Other(0),
            &[],
            "the ruleset generation",
            |m| {
                for a in m.attrs() {
                    let a = a?;
                    if a.ty == wire::generation::ID {
                        return a.u32();
                    }
                }
                Err(wire::Malformed("no generation id".into()))
            },
        )?;
        found.ok_or_else(|| Error::Malformed {
            what: "the ruleset generation".into(),
            reason: "no answer".into(),
        })
    }

    /// A table, or None if it does not exist. One round trip.
    pub fn get_table(&mut self, family: Family, name: &str) -> Result<Option<TableInfo>> {
        let mut w = AttrWriter::new();
        w.put_str(wire::table::NAME, name);
        self.get(
            msg::GETTABLE,
            family,
            &w.into_bytes(),
            &format!("reading table {family} {name}"),
            TableInfo::decode,
        )
    }

    /// Every table of every family.
    pub fn list_tables(&mut self) -> Result<Vec<(Family, String)>> {
        let tables = self.dump(
            msg::GETTABLE,
            Family::Other(0),
            &[],
            "listing tables",
            |m| TableInfo::decode(m).map(Some),
        )?;
        Ok(tables.into_iter().map(|t| (t.family, t.name)).collect())
    }

    /// The chains of a table.
    pub fn list_chains(&mut self, family: Family, table: &str) -> Result<Vec<ChainInfo>> {
        let mut w = AttrWriter::new();
        w.put_str(wire::chain::TABLE, table);
        let what = format!("listing chains of table {family} {table}");
        self.dump(msg::GETCHAIN, family, &w.into_bytes(), &what, |m| {
            ChainInfo::decode(m).map(Some)
        })
    }

    /// The rules of a table, chain by chain in order, with counter values.
    pub fn list_rules(&mut self, family: Family, table: &str) -> Result<Vec<RuleInfo>> {
        let mut w = AttrWriter::new();
        w.put_str(wire::rule::TABLE, table);
        let what = format!("listing rules of table {family} {table}");
        self.dump(msg::GETRULE, family, &w.into_bytes(), &what, |m| {
            RuleInfo::decode(m).map(Some)
        })
    }

    /// A set or map (without elements), or None if it does not exist.
    pub fn get_set(&mut self, family: Family, table: &str, name: &str) -> Result<Option<SetInfo>> {
        let mut w = AttrWriter::new();
        w.put_str(wire::set::TABLE, table);
        w.put_str(wire::set::NAME, name);
        self.get(
            msg::GETSET,
            family,
            &w.into_bytes(),
            &format!("reading set {name} of table {family} {table}"),
            SetInfo::decode,
        )
    }

    /// The sets and maps of a table, anonymous ones included (without elements).
    pub fn list_sets(&mut self, family: Family, table: &str) -> Result<Vec<SetInfo>> {
        let mut w = AttrWriter::new();
        w.put_str(wire::set::TABLE, table);
        let what = format!("listing sets of table {family} {table}");
        self.dump(msg::GETSET, family, &w.into_bytes(), &what, |m| {
            SetInfo::decode(m).map(Some)
        })
    }

    /// The elements of a set, with their expiration; ranges for interval sets. Two
    /// round trips (the set's flags say how to read its elements). ENOENT if the set
    /// does not exist.
    pub fn list_set_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>> {
        let what = format!("listing elements of set {set} of table {family} {table}");
        let info = self
            .get_set(family, table, set)?
            .ok_or_else(|| Error::refused(what.clone(), libc::ENOENT, None, false))?;
        let mut w = AttrWriter::new();
        w.put_str(wire::elem::LIST_TABLE, table);
        w.put_str(wire::elem::LIST_SET, set);
        let chunks = self.dump(msg::GETSETELEM, family, &w.into_bytes(), &what, |m| {
            set::decode_elements(m).map(Some)
        })?;
        Ok(set::assemble(
            &info.set,
            chunks.into_iter().flatten().collect(),
        ))
    }

    /// A request for one object: its decoded answer, or None on ENOENT.
    fn get<T>(
        &mut self,
        ty: u8,
        family: Family,
        attrs: &[u8],
        what: &str,
        decode: impl Fn(&Message<'_>) -> WireResult<T>,
    ) -> Result<Option<T>> {
        let seq = self.next_seqs(1);
        let req = wire::message(
            wire::nft_type(ty),
            wire::NLM_F_REQUEST,
            seq,
            family.to_raw(),
            0,
            attrs,
        );
        self.send(&req, what)?;
        loop {
            let n = self.recv(false, what)?;
            for m in Messages::new(&self.buf[..n]) {
                let m = m.map_err(|e| malformed(what, e))?;
                if m.seq != seq {
                    continue;
                }
                if m.msg_type == wire::NLMSG_ERROR {
                    let (errno, _, text) = m.error().map_err(|e| malformed(what, e))?;
                    return match errno {
                        0 => Ok(None),
                        libc::ENOENT => Ok(None),
                        errno => Err(Error::refused(what.to_string(), errno, text, false)),
                    };
                }
                return decode(&m).map(Some).map_err(|e| malformed(what, e));
            }
        }
    }

    /// A dump: every answer decoded, restarted if the kernel reports it inconsistent.
    fn dump<T>(
        &mut self,
        ty: u8,
        family: Family,
        attrs: &[u8],
        what: &str,
        decode: impl Fn(&Message<'_>) -> WireResult<Option<T>>,
    ) -> Result<Vec<T>> {
        'retry: for _ in 0..DUMP_RETRIES {
            let seq = self.next_seqs(1);
            let req = wire::message(
                wire::nft_type(ty),
                wire::NLM_F_REQUEST | wire::NLM_F_DUMP,
                seq,
                family.to_raw(),
                0,
                attrs,
            );
            self.send(&req, what)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            loop {
                let n = self.recv(false, what)?;
                for m in Messages::new(&self.buf[..n]) {
                    let m = m.map_err(|e| malformed(what, e))?;
                    if m.seq != seq {
                        continue;
                    }
                    interrupted |= m.flags & wire::NLM_F_DUMP_INTR != 0;
                    match m.msg_type {
                        wire::NLMSG_DONE => {
                            if interrupted {
                                debug!("{what}: dump interrupted by a change, restarting");
                                continue 'retry;
                            }
                            return Ok(out);
                        }
                        wire::NLMSG_ERROR => {
                            let (errno, _, text) = m.error().map_err(|e| malformed(what, e))?;
                            if errno == 0 {
                                continue;
                            }
                            if errno == libc::EINTR {
                                continue 'retry;
                            }
                            return Err(Error::refused(what.to_string(), errno, text, false));
                        }
                        wire::NLMSG_NOOP => {}
                        _ => {
                            if let Some(item) = decode(&m).map_err(|e| malformed(what, e))? {
                                out.push(item);
                            }
                        }
                    }
                }
            }
        }
        Err(Error::Receive {
            what: what.to_string(),
            source: io::Error::other(format!(
                "the ruleset kept changing during {DUMP_RETRIES} attempts"
            )),
        })
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let addr = kernel_addr();
        loop {
            // SAFETY: `bytes` and `addr` are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Send {
                    what: what.to_string(),
                    source: e,
                });
            }
        }
    }

    /// One datagram into `self.buf`; its length.
    fn recv(&mut self, nonblocking: bool, what: &str) -> Result<usize> {
        let flags = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: `self.buf` is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > self.buf.len() {
                    return Err(Error::Receive {
                        what: what.to_string(),
                        source: io::Error::other(format!(
                            "a {n}-byte answer does not fit our {}-byte buffer",
                            self.buf.len()
                        )),
                    });
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if !nonblocking => {
                    return Err(Error::Receive {
                        what: what.to_string(),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no answer from the kernel within {RECEIVE_TIMEOUT:?}"),
                        ),
                    });
                }
                Some(libc::ENOBUFS) => {
                    return Err(Error::Receive {
                        what: format!("{what} (answers were lost: receive buffer overflow)"),
                        source: e,
                    });
                }
                _ => {
                    return Err(Error::Receive {
                        what: what.to_string(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Makes the socket's buffers hold a batch of `send` bytes and `receive` bytes of
    /// answers (acks take about 1 KiB of receive buffer each). Beyond the system's
    /// limits only with CAP_NET_ADMIN, which nf_tables needs anyway.
    fn grow_buffers(&mut self, send: usize, receive: usize) {
        let want_snd = send + 64 * 1024;
        if want_snd > self.sndbuf {
            grow(&self.fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, want_snd);
            self.sndbuf = want_snd;
        }
        let want_rcv = receive + 256 * 1024;
        if want_rcv > self.rcvbuf {
            grow(&self.fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, want_rcv);
            self.rcvbuf = want_rcv;
        }
    }
}

fn grow(fd: &OwnedFd, force: i32, plain: i32, size: usize) {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    if set_int(fd, libc::SOL_SOCKET, force, size).is_err() {
        let _ = set_int(fd, libc::SOL_SOCKET, plain, size);
    }
}

fn set_int(fd: &OwnedFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr
}

fn malformed(what: &str, e: wire::Malformed) -> Error {
    Error::Malformed {
        what: what.to_string(),
        reason: e.0,
    }
}
