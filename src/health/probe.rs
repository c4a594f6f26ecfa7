//! Probes: one round sends one probe to every target through the uplink under test
//! (its mark, its device, its address as source) and succeeds when any answers.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::RoundOutcome;
use crate::config::{HealthConfig, Target};
use crate::error::{Error, Result};

/// Parses the configured targets (already validated by the config, so errors are rare).
pub fn targets(config: &HealthConfig) -> Result<Vec<Target>> {
    config
        .targets
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: String| Error::Other(format!("health.targets: {e}")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Probes.

/// What to probe through one uplink, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub iface: String,
    pub source: Ipv4Addr,
    pub mark: u32,
    pub targets: Vec<Target>,
    pub timeout: Duration,
}

/// Probes one uplink. Owns a raw ICMP socket (CAP_NET_RAW) bound to the uplink's
/// device and address, carrying its mark.
pub struct Prober {
    spec: ProbeSpec,
    icmp: Option<AsyncFd<socket2::Socket>>,
    ident: u16,
    seq: u16,
}

impl Prober {
    pub fn new(spec: ProbeSpec, ident: u16) -> Result<Prober> {
        let icmp = if spec.targets.iter().any(|t| matches!(t, Target::Icmp(_))) {
            Some(icmp_socket(&spec)?)
        } else {
            None
        };
        Ok(Prober {
            spec,
            icmp,
            ident,
            seq: 0,
        })
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// One round: probes every target at once; succeeds with the first answer.
    pub async fn round(&mut self) -> RoundOutcome {
        self.seq = self.seq.wrapping_add(1);
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.spec.timeout);
        let mut errors = Vec::new();

        let icmp_targets: Vec<Ipv4Addr> = self
            .spec
            .targets
            .iter()
            .filter_map(|t| match t {
                Target::Icmp(a) => Some(*a),
                Target::Tcp(_) => None,
            })
            .collect();
        let mut icmp_sent = 0;
        if let Some(sock) = &self.icmp {
            let packet = echo_request(self.ident, self.seq);
            for a in &icmp_targets {
                let to = socket2::SockAddr::from(SocketAddrV4::new(*a, 0));
                match sock.get_ref().send_to(&packet, &to) {
                    Ok(_) => icmp_sent += 1,
                    Err(e) => errors.push(format!("ping {a}: {e}")),
                }
            }
        }

        let tcp_targets: Vec<SocketAddrV4> = self
            .spec
            .targets
            .iter()
            .filter_map(|t| match t {
                Target::Tcp(a) => Some(*a),
                Target::Icmp(_) => None,
            })
            .collect();
        let spec = &self.spec;
        let tcp = async {
            if tcp_targets.is_empty() {
                return Err(String::new());
            }
            let connects = tcp_targets
                .iter()
                .map(|a| Box::pin(tcp_probe(spec, *a, deadline)));
            futures::future::select_ok(connects).await.map(|_| ())
        };
        let (ident, seq) = (self.ident, self.seq);
        let icmp = async {
            match &self.icmp {
                Some(sock) if icmp_sent > 0 => {
                    wait_echo_reply(sock, ident, seq, &icmp_targets, deadline).await
                }
                _ => Err(String::new()),
            }
        };
        // The first answer of either kind wins.
        use futures::FutureExt as _;
        let result = futures::future::select_ok([icmp.boxed(), tcp.boxed()])
            .await
            .map(|_| ());
        match result {
            Ok(()) => RoundOutcome {
                success: true,
                rtt: Some(start.elapsed()),
                error: None,
            },
            Err(e) => {
                if !e.is_empty() {
                    errors.push(e);
                }
                RoundOutcome {
                    success: false,
                    rtt: None,
                    error: (!errors.is_empty()).then(|| errors.join("; ")),
                }
            }
        }
    }
}

fn icmp_socket(spec: &ProbeSpec) -> Result<AsyncFd<socket2::Socket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |what: &str, e| Error::io(format!("{what} for probes on {}", spec.iface), e);
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(|e| ctx("raw ICMP socket (needs CAP_NET_RAW)", e))?;
    s.set_nonblocking(true)
        .map_err(|e| ctx("non-blocking", e))?;
    s.bind_device(Some(spec.iface.as_bytes()))
        .map_err(|e| ctx("SO_BINDTODEVICE", e))?;
    s.set_mark(spec.mark)
        .map_err(|e| ctx("SO_MARK (needs CAP_NET_ADMIN)", e))?;
    s.bind(&SocketAddrV4::new(spec.source, 0).into())
        .map_err(|e| ctx(&format!("binding to {}", spec.source), e))?;
    // SAFETY: the socket owns its descriptor, and the AsyncFd owns the socket: the
    // descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
        .map_err(|e| ctx("registering the socket", e.into()))
}

async fn tcp_probe(
    spec: &ProbeSpec,
    to: SocketAddrV4,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("tcp {to}: {e}");
    let s = tokio::net::TcpSocket::new_v4().map_err(fail)?;
    s.bind_device(Some(spec.iface.as_bytes())).map_err(fail)?;
    socket2::SockRef::from(&s)
        .set_mark(spec.mark)
        .map_err(fail)?;
    s.bind(SocketAddr::V4(SocketAddrV4::new(spec.source, 0)))
        .map_err(fail)?;
    match tokio::time::timeout_at(deadline, s.connect(SocketAddr::V4(to))).await {
        Ok(Ok(stream)) => {
            // Close with a reset: no TIME_WAIT here, and conntrack forgets the probe in
            // seconds instead of two minutes.
            let _ = stream.set_zero_linger();
            Ok(())
        }
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(format!("tcp {to}: no answer")),
    }
}

async fn wait_echo_reply(
    sock: &AsyncFd<socket2::Socket>,
    ident: u16,
    seq: u16,
    from: &[Ipv4Addr],
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut buf = [0u8; 1500];
    loop {
        let mut guard = match tokio::time::timeout_at(deadline, sock.readable()).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err(format!("waiting for echo replies: {e}")),
            Err(_) => return Err(String::new()),
        };
        match guard.try_io(|s| s.get_ref().read(&mut buf)) {
            Ok(Ok(n)) => {
                if is_echo_reply(&buf[..n], ident, seq, from) {
                    return Ok(());
                }
            }
            Ok(Err(e)) => return Err(format!("reading echo replies: {e}")),
            Err(_would_block) => continue,
        }
    }
}

/// An ICMP echo request with our identifier and sequence number and a checksum.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"nm-multiwan health probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (an IPv4 datagram as a raw socket reads it) is the echo reply to
/// our request `ident`/`seq` from one of the targets.
pub fn is_echo_reply(packet: &[u8], ident: u16, seq: u16, from: &[Ipv4Addr]) -> bool {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 1 {
        return false;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let Some(icmp) = packet.get(ihl..) else {
        return false;
    };
    if icmp.len() < 8 || icmp[0] != 0 || icmp[1] != 0 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    u16::from_be_bytes([icmp[4], icmp[5]]) == ident
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
        && from.contains(&src)
}
