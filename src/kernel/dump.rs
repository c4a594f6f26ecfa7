//! Routing dumps read synchronously on a plain netlink socket.
//!
//! `rtnetlink`'s handle passes every message of a dump through its connection task and
//! a channel: right for requests that wait on the kernel, slow for reading the routing
//! state (links, rules, addresses, routes), which a no-op reconcile does every time and
//! which costs the kernel microseconds. A dump here is one `send` and a few `recv`s on
//! our own socket; the messages are the same `netlink-packet-route` types, parsed by
//! the same code ([`Dumper::dump`]), or handed as they came to a reader that needs a
//! few attributes of large messages ([`Dumper::dump_with`]: the link dump). One dump at
//! a time per socket (the kernel answers a second with `EBUSY`): a [`Dumper`] is used
//! by one reader, one dump after the other.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;

/// The kernel's `NLM_F_DUMP_INTR`: what the dump lists changed while it was sent.
const NLM_F_DUMP_INTR: u16 = 0x10;

/// How many times an interrupted dump is asked for.
const MAX_TRIES: u32 = 3;

/// Large enough for any datagram of a dump (the kernel sends at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// A netlink route socket for dumps.
pub struct Dumper {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Dumper {
    pub fn new() -> io::Result<Dumper> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Dumper {
            socket,
            sequence: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// Every message the kernel answers `request` (a `Get...` message) with, as a dump.
    /// A kernel refusal comes back as the `io::Error` of its errno. A dump the kernel
    /// marks as interrupted (what it lists changed meanwhile: `NLM_F_DUMP_INTR`) is
    /// asked again, a few times.
    pub fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.dump_with(request, |bytes| {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok(match msg.payload {
                NetlinkPayload::InnerMessage(inner) => Some(inner),
                _ => None,
            })
        })
    }

    /// Like [`Self::dump`], but each answer is handed to `parse` as it came (the whole
    /// netlink message, header included): for a reader that needs a few attributes of
    /// large messages, such as the link dump, where parsing everything costs more than
    /// the kernel's answer.
    pub fn dump_with<T>(
        &mut self,
        request: RouteNetlinkMessage,
        mut parse: impl FnMut(&[u8]) -> io::Result<Option<T>>,
    ) -> io::Result<Vec<T>> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (answers, interrupted) = self.dump_once(request.clone(), &mut parse)?;
            if !interrupted || tries == MAX_TRIES {
                return Ok(answers);
            }
        }
    }

    fn dump_once<T>(
        &mut self,
        request: RouteNetlinkMessage,
        parse: &mut impl FnMut(&[u8]) -> io::Result<Option<T>>,
    ) -> io::Result<(Vec<T>, bool)> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut msg = NetlinkMessage::from(request);
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        msg.header.sequence_number = self.sequence;
        msg.finalize();
        let mut out = vec![0; msg.header.length as usize];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut answers = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut offset = 0;
            while offset + HEADER_LEN <= n {
                let bytes = &self.buffer[offset..n];
                let header = Header::of(bytes);
                if header.length < HEADER_LEN || header.length > bytes.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a netlink message of {} bytes in {}",
                            header.length,
                            bytes.len()
                        ),
                    ));
                }
                let bytes = &bytes[..header.length];
                offset += (header.length + 3) & !3;
                if header.sequence != self.sequence {
                    continue; // an answer to an earlier request
                }
                interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                match header.kind {
                    NLMSG_DONE => return Ok((answers, interrupted)),
                    NLMSG_ERROR => {
                        // The errno follows the header, negated; 0 is an acknowledgement.
                        let code = bytes
                            .get(HEADER_LEN..HEADER_LEN + 4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => answers.extend(parse(bytes)?),
                }
            }
        }
    }
}

/// The netlink header's length: `nlmsghdr`.
pub const HEADER_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// The fields of a netlink header a dump reads.
struct Header {
    length: usize,
    kind: u16,
    flags: u16,
    sequence: u32,
}

impl Header {
    /// `bytes` holds at least [`HEADER_LEN`] bytes.
    fn of(bytes: &[u8]) -> Header {
        let u16_at = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header {
            length: u32_at(0) as usize,
            kind: u16_at(4),
            flags: u16_at(6),
            sequence: u32_at(8),
        }
    }
}
