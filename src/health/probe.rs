//! Probes: through one uplink in one address family, one probe every interval to
//! every target of that family at once (its mark, its device, its address as source),
//! each probe's fate reported as it is known: answered (the first answer of any
//! target, however late within the wait) or lost.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::ProbeEvent;
use crate::config::{HealthConfig, Target};
use crate::error::{Error, Result};
use crate::model::Family;

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

/// What to probe through one uplink in one family, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub iface: String,
    pub family: Family,
    /// The uplink's address in `family`.
    pub source: IpAddr,
    pub mark: u32,
    /// The targets of `family`.
    pub targets: Vec<Target>,
    pub interval: Duration,
    /// How long an answer is waited for before the probe counts as lost.
    pub wait: Duration,
}

type TcpProbe = Pin<Box<dyn Future<Output = (u64, std::result::Result<Duration, String>)> + Send>>;

/// Probes one uplink in one family. Owns a raw ICMP (ICMPv6) socket (CAP_NET_RAW)
/// bound to the uplink's device and address, carrying its mark.
pub struct Prober {
    spec: ProbeSpec,
    icmp: Option<AsyncFd<socket2::Socket>>,
    ident: u16,
    next_id: u64,
    /// Probes sent and not answered yet: when, and the last error a target gave.
    pending: BTreeMap<u64, (Instant, Option<String>)>,
    tcp: FuturesUnordered<TcpProbe>,
    tick: tokio::time::Interval,
    events: VecDeque<ProbeEvent>,
}

/// What woke the prober up.
enum Wake {
    Tick,
    Packets(std::io::Result<Vec<(Vec<u8>, Option<IpAddr>)>>),
    Tcp(u64, std::result::Result<Duration, String>),
    Expired,
}

impl Prober {
    pub fn new(spec: ProbeSpec, ident: u16) -> Result<Prober> {
        let icmp = if spec.targets.iter().any(|t| matches!(t, Target::Icmp(_))) {
            Some(icmp_socket(&spec)?)
        } else {
            None
        };
        let mut tick = tokio::time::interval(spec.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Prober {
            spec,
            icmp,
            ident,
            next_id: 0,
            pending: BTreeMap::new(),
            tcp: FuturesUnordered::new(),
            tick,
            events: VecDeque::new(),
        })
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// Numbers the next probe `id` (ids keep counting up across a prober that could
    /// not start at first).
    pub fn skip_ids(&mut self, id: u64) {
        self.next_id = self.next_id.max(id);
    }

    /// The next probe event: sends a probe every interval, reads answers as they come,
    /// gives up on a probe after the wait.
    pub async fn next(&mut self) -> ProbeEvent {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            let expiry = self
                .pending
                .values()
                .map(|(at, _)| *at + self.spec.wait)
                .min();
            let icmp = self.icmp.as_ref();
            let read = async move {
                match icmp {
                    Some(sock) => read_packets(sock).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                _ = self.tick.tick() => Wake::Tick,
                packets = read => Wake::Packets(packets),
                Some((id, r)) = self.tcp.next(), if !self.tcp.is_empty() => Wake::Tcp(id, r),
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => Wake::Expired,
            };
            match wake {
                Wake::Tick => self.send(),
                Wake::Packets(Ok(packets)) => {
                    for (packet, from) in packets {
                        self.on_packet(&packet, from);
                    }
                }
                Wake::Packets(Err(e)) => {
                    // Reading failed: the socket is in trouble; lost probes will tell.
                    for (_, error) in self.pending.values_mut() {
                        *error = Some(format!("reading echo replies: {e}"));
                    }
                    tokio::time::sleep(self.spec.interval).await;
                }
                Wake::Tcp(id, Ok(rtt)) => self.answered(id, rtt),
                Wake::Tcp(id, Err(e)) => {
                    if let Some((_, error)) = self.pending.get_mut(&id) {
                        *error = Some(e);
                    }
                }
                Wake::Expired => self.expire(),
            }
        }
    }

    /// Sends the next probe to every target.
    fn send(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let seq = id as u16;
        let mut sent = 0;
        let mut errors = Vec::new();
        if let Some(sock) = &self.icmp {
            let packet = match self.spec.family {
                Family::V4 => echo_request(self.ident, seq),
                Family::V6 => echo_request6(self.ident, seq),
            };
            for t in &self.spec.targets {
                let Target::Icmp(a) = t else { continue };
                let to = socket2::SockAddr::from(SocketAddr::new(*a, 0));
                match sock.get_ref().send_to(&packet, &to) {
                    Ok(_) => sent += 1,
                    Err(e) => errors.push(format!("ping {a}: {e}")),
                }
            }
        }
        for t in &self.spec.targets {
            let Target::Tcp(to) = t else { continue };
            let (iface, mark, source, wait, to) = (
                self.spec.iface.clone(),
                self.spec.mark,
                self.spec.source,
                self.spec.wait,
                *to,
            );
            self.tcp.push(Box::pin(async move {
                (id, tcp_probe(&iface, mark, source, to, wait).await)
            }));
            sent += 1;
        }
        self.events.push_back(ProbeEvent::Sent { id });
        if sent == 0 {
            // Nothing left: lost at once, with the reason.
            self.events.push_back(ProbeEvent::Lost {
                id,
                error: Some(errors.join("; ")).filter(|e| !e.is_empty()),
            });
        } else {
            self.pending.insert(
                id,
                (
                    Instant::now(),
                    Some(errors.join("; ")).filter(|e| !e.is_empty()),
                ),
            );
        }
    }

    fn on_packet(&mut self, packet: &[u8], from: Option<IpAddr>) {
        let reply = match self.spec.family {
            Family::V4 => echo_reply(packet),
            Family::V6 => from.and_then(|from| echo_reply6(packet, from)),
        };
        let Some((src, ident, seq)) = reply else {
            return;
        };
        let ours = ident == self.ident
            && self
                .spec
                .targets
                .iter()
                .any(|t| matches!(t, Target::Icmp(a) if *a == src));
        if !ours {
            return;
        }
        // The probe with this sequence number: the newest pending one (only a few are
        // pending at a time, far fewer than 65536).
        let id = self
            .pending
            .keys()
            .rev()
            .find(|id| **id as u16 == seq)
            .copied();
        if let Some(id) = id {
            let rtt = self.pending[&id].0.elapsed();
            self.answered(id, rtt);
        }
    }

    fn answered(&mut self, id: u64, rtt: Duration) {
        if self.pending.remove(&id).is_some() {
            self.events.push_back(ProbeEvent::Answered { id, rtt });
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let wait = self.spec.wait;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (at, _))| *at + wait <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, error)) = self.pending.remove(&id) {
                self.events.push_back(ProbeEvent::Lost { id, error });
            }
        }
    }
}

/// Reads every packet waiting on the socket (at least one).
async fn read_packets(
    sock: &AsyncFd<socket2::Socket>,
) -> std::io::Result<Vec<(Vec<u8>, Option<IpAddr>)>> {
    loop {
        let mut guard = sock.readable().await?;
        let mut packets = Vec::new();
        loop {
            match guard.try_io(|s| recv(s.get_ref())) {
                Ok(Ok(p)) => packets.push(p),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => break,
            }
        }
        if !packets.is_empty() {
            return Ok(packets);
        }
    }
}

fn recv(s: &socket2::Socket) -> std::io::Result<(Vec<u8>, Option<IpAddr>)> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    let (n, from) = s.recv_from(&mut buf)?;
    // SAFETY: recv_from initialised the first n bytes of the buffer.
    let data = buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    Ok((data, from.as_socket().map(|a| a.ip())))
}

fn icmp_socket(spec: &ProbeSpec) -> Result<AsyncFd<socket2::Socket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |what: &str, e| {
        Error::io(
            format!("{what} for {} probes on {}", spec.family, spec.iface),
            e,
        )
    };
    let (domain, protocol) = match spec.family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        // The kernel computes ICMPv6 checksums on raw ICMPv6 sockets itself.
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    let s = Socket::new(domain, Type::RAW, Some(protocol))
        .map_err(|e| ctx("raw ICMP socket (needs CAP_NET_RAW)", e))?;
    s.set_nonblocking(true)
        .map_err(|e| ctx("non-blocking", e))?;
    s.bind_device(Some(spec.iface.as_bytes()))
        .map_err(|e| ctx("SO_BINDTODEVICE", e))?;
    s.set_mark(spec.mark)
        .map_err(|e| ctx("SO_MARK (needs CAP_NET_ADMIN)", e))?;
    s.bind(&SocketAddr::new(spec.source, 0).into())
        .map_err(|e| ctx(&format!("binding to {}", spec.source), e))?;
    // SAFETY: the socket owns its descriptor, and the AsyncFd owns the socket: the
    // descriptor stays open and the same for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
        .map_err(|e| ctx("registering the socket", e.into()))
}

async fn tcp_probe(
    iface: &str,
    mark: u32,
    source: IpAddr,
    to: SocketAddr,
    wait: Duration,
) -> std::result::Result<Duration, String> {
    let fail = |e: std::io::Error| format!("tcp {to}: {e}");
    let s = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    s.bind_device(Some(iface.as_bytes())).map_err(fail)?;
    socket2::SockRef::from(&s).set_mark(mark).map_err(fail)?;
    s.bind(SocketAddr::new(source, 0)).map_err(fail)?;
    let start = Instant::now();
    match tokio::time::timeout(wait, s.connect(to)).await {
        Ok(Ok(stream)) => {
            let rtt = start.elapsed();
            // Close with a reset: no TIME_WAIT here, and conntrack forgets the probe in
            // seconds instead of two minutes.
            let _ = stream.set_zero_linger();
            Ok(rtt)
        }
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(format!("tcp {to}: no answer")),
    }
}

/// An ICMP echo request with our identifier and sequence number and a checksum.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = echo(8, ident, seq);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An ICMPv6 echo request; its checksum (which covers the addresses) the kernel fills
/// in.
pub fn echo_request6(ident: u16, seq: u16) -> Vec<u8> {
    echo(128, ident, seq)
}

fn echo(kind: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"nm-multiwan health probe");
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

/// An ICMP echo reply in an IPv4 datagram as a raw socket reads it: (source,
/// identifier, sequence number).
pub fn echo_reply(packet: &[u8]) -> Option<(IpAddr, u16, u16)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 1 {
        return None;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let icmp = packet.get(ihl..)?;
    if icmp.len() < 8 || icmp[0] != 0 || icmp[1] != 0 {
        return None;
    }
    let src = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((
        src.into(),
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// An ICMPv6 echo reply as a raw ICMPv6 socket reads it (no IPv6 header; the source
/// comes with it): (source, identifier, sequence number).
pub fn echo_reply6(icmp: &[u8], from: IpAddr) -> Option<(IpAddr, u16, u16)> {
    if icmp.len() < 8 || icmp[0] != 129 || icmp[1] != 0 {
        return None;
    }
    Some((
        from,
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}
