//! The machine's own TCP sockets, over sock_diag (a `NETLINK_SOCK_DIAG` socket):
//! aborting those whose connection can no longer work (`SOCK_DESTROY`, what `ss -K`
//! does), so that their applications get an error now instead of waiting minutes for
//! a TCP timeout.
//!
//! Deleting a connection's conntrack entry is not enough for a socket that only
//! receives (a download): it sends nothing that could meet the reset, and waits. An
//! aborted socket's next read fails with `ECONNABORTED` at once, and a blocked read or
//! `poll` wakes up.
//!
//! Messages are built here (layout in `linux/inet_diag.h` and `linux/sock_diag.h`).

use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use tracing::debug;

/// `SOCK_DESTROY` (`linux/sock_diag.h`).
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
/// `INET_DIAG_NOCOOKIE`: match by the 4-tuple alone.
const NO_COOKIE: u32 = !0;
/// Every TCP state (`idiag_states` is a bit mask of them).
const ALL_STATES: u32 = !0;
const HEADER_LEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the socket id
/// (ports, two 16-byte addresses, interface, cookie).
const REQUEST_LEN: usize = 4 + 4 + 2 + 2 + 16 + 16 + 4 + 8;
/// Requests sent per datagram: their acknowledgements (capped, 36 bytes each) fit the
/// socket's receive buffer.
const BATCH: usize = 256;

/// A TCP connection of this machine, as the socket sees it: its local address and
/// port first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tcp {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

/// Aborts the local TCP sockets of these connections: each gets `ECONNABORTED` (and
/// its peer a reset, if the socket can still reach it). A connection without a local
/// socket (forwarded, or closed meanwhile) is skipped. Returns how many were aborted.
///
/// Fails when the kernel cannot destroy sockets (built without
/// `CONFIG_INET_DIAG_DESTROY`) or refuses us (no `CAP_NET_ADMIN`).
pub fn abort(connections: &[Tcp]) -> io::Result<usize> {
    if connections.is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // Acknowledgements without a copy of each request.
    socket.set_cap_ack(true)?;
    let mut aborted = 0;
    let mut seq = 0u32;
    for batch in connections.chunks(BATCH) {
        let first = seq.wrapping_add(1);
        let mut request = Vec::with_capacity(batch.len() * (HEADER_LEN + REQUEST_LEN));
        for c in batch {
            seq = seq.wrapping_add(1);
            request.extend(destroy_request(seq, c));
        }
        socket.send(&request, 0)?;
        let mut pending = batch.len();
        while pending > 0 {
            let (datagram, _) = socket.recv_from_full()?;
            for (kind, seq, errno) in acknowledgements(&datagram)? {
                if kind != NLMSG_ERROR || seq.wrapping_sub(first) >= batch.len() as u32 {
                    continue;
                }
                pending -= 1;
                match errno {
                    0 => aborted += 1,
                    // No such socket: not ours to abort (forwarded), or gone already.
                    libc::ENOENT => {}
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
            }
        }
    }
    debug!(
        aborted,
        asked = connections.len(),
        "aborted local TCP sockets"
    );
    Ok(aborted)
}

/// One `SOCK_DESTROY` request for the TCP socket of `c`.
fn destroy_request(seq: u32, c: &Tcp) -> Vec<u8> {
    let len = (HEADER_LEN + REQUEST_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&SOCK_DESTROY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    let family = match c.local {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    m.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(&c.local_port.to_be_bytes());
    m.extend_from_slice(&c.remote_port.to_be_bytes());
    m.extend_from_slice(&address(c.local));
    m.extend_from_slice(&address(c.remote));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(m.len(), len as usize);
    m
}

/// An address as `idiag_src`/`idiag_dst` hold it: 16 bytes, an IPv4 one in the first
/// four.
fn address(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

/// The messages of a datagram: (type, sequence number, errno of an `NLMSG_ERROR`).
fn acknowledgements(mut buf: &[u8]) -> io::Result<Vec<(u16, u32, i32)>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply");
    let mut out = Vec::new();
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < HEADER_LEN || len > buf.len() {
            return Err(malformed());
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        let errno = if kind == NLMSG_ERROR {
            let raw = buf.get(HEADER_LEN..HEADER_LEN + 4).ok_or_else(malformed)?;
            -i32::from_ne_bytes(raw.try_into().expect("4 bytes"))
        } else {
            0
        };
        out.push((kind, seq, errno));
        let next = ((len + 3) & !3).min(buf.len());
        buf = &buf[next..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_kernels_layout() {
        let c = Tcp {
            local: "10.200.1.2".parse().unwrap(),
            local_port: 45780,
            remote: "198.51.100.10".parse().unwrap(),
            remote_port: 7001,
        };
        let m = destroy_request(7, &c);
        assert_eq!(m.len(), 72, "nlmsghdr 16 + inet_diag_req_v2 56");
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 21);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..18], &[libc::AF_INET as u8, 6]);
        assert_eq!(&m[24..26], &45780u16.to_be_bytes());
        assert_eq!(&m[26..28], &7001u16.to_be_bytes());
        assert_eq!(&m[28..32], &[10, 200, 1, 2]);
        assert_eq!(&m[44..48], &[198, 51, 100, 10]);
        assert_eq!(&m[64..72], &[0xff; 8], "no cookie");
        let v6 = Tcp {
            local: "2001:db8:1::2".parse().unwrap(),
            remote: "2001:db8:100::10".parse().unwrap(),
            ..c
        };
        let m = destroy_request(8, &v6);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(&m[28..30], &[0x20, 0x01]);
        assert_eq!(&m[58..60], &[0x00, 0x10]);
    }

    #[test]
    fn acknowledgements_parse() {
        let mut d = Vec::new();
        for (seq, errno) in [(1u32, 0i32), (2, -libc::ENOENT)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&errno.to_ne_bytes());
            d.extend_from_slice(&[0u8; 16]);
        }
        assert_eq!(
            acknowledgements(&d).unwrap(),
            [(NLMSG_ERROR, 1, 0), (NLMSG_ERROR, 2, libc::ENOENT)]
        );
        assert!(acknowledgements(&d[..20]).is_err());
    }
}
