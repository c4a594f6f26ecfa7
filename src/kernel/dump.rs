//! Routing dumps read synchronously on a plain netlink socket.
//!
//! `rtnetlink`'s handle passes every message of a dump through its connection task and
//! a channel: right for requests that wait on the kernel, slow for reading the routing
//! state (links, rules, addresses, routes), which a no-op reconcile does every time and
//! which costs the kernel microseconds. A dump here is one `send` and a few `recv`s on
//! our own socket; the messages are the same `netlink-packet-route` types, parsed by
//! the same code. One dump at a time per socket (the kernel answers a second with
//! `EBUSY`): a [`Dumper`] is used by one reader, one dump after the other.

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
        let mut tries = 0;
        loop {
            tries += 1;
            let (answers, interrupted) = self.dump_once(request.clone())?;
            if !interrupted || tries == MAX_TRIES {
                return Ok(answers);
            }
        }
    }

    fn dump_once(
        &mut self,
        request: RouteNetlinkMessage,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
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
            while offset < n {
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.sequence {
                    continue; // an answer to an earlier request
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok((answers, interrupted)),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }
}
