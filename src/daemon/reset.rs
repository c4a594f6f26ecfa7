//! Resetting the connections of an uplink the probes took out of the balance (dead,
//! lossy or slow), right after the reconcile that took it out of the rounds.
//!
//! Its connections would otherwise hang until their own timeouts (minutes for TCP):
//! their packets keep their mark and keep going into the uplink. So:
//!
//! 1. their conntrack entries go (the uplink's id in the mark, outbound and inbound,
//!    in the family that is out; the other family's connections are left alone, and
//!    so is every other uplink's). The next packet of such a connection is NEW to
//!    conntrack: our chains give it a live uplink, whose NAT gives it another source
//!    address, which the peer does not know: it answers with a reset (TCP) and the
//!    application reconnects.
//! 2. A socket that only waits (a download) sends no next packet: the machine's own
//!    TCP sockets among those connections are aborted (`SOCK_DESTROY`), so that the
//!    application's read fails with `ECONNABORTED` now. Connections forwarded for
//!    other hosts get their reset from the peer as soon as their host sends.

use tracing::{debug, info, warn};

use crate::kernel::conntrack::{Conntrack, Entry, Filter};
use crate::kernel::sockets::{self, Tcp};
use crate::model::Family;
use crate::namespace::Namespace;

/// What one reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Reset {
    /// Conntrack entries deleted.
    pub connections: usize,
    /// Local TCP sockets aborted.
    pub sockets: usize,
}

/// Resets the connections of the uplink whose outbound mark is `mark`, in `family`.
pub(super) async fn reset(ns: &Namespace, mark: u32, family: Family) -> Result<Reset, String> {
    // The id bits alone: outbound and inbound connections of this uplink.
    let filter = Filter::mark(mark, ns.id_mask()).family(family);
    let mut ct = Conntrack::open().map_err(|e| e.to_string())?;
    let entries = ct.dump(&filter).await.map_err(|e| e.to_string())?;
    let connections = ct.delete(&filter).await.map_err(|e| e.to_string())?;
    let local = local_tcp(ns, &entries);
    let sockets = match tokio::task::spawn_blocking(move || sockets::abort(&local)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            warn!(
                "cannot abort the local sockets of the reset connections: {e}; their \
                 applications notice only when they send"
            );
            0
        }
        Err(e) => return Err(format!("socket abort task: {e}")),
    };
    debug!(connections, sockets, mark = format!("{mark:#x}"), %family, "reset");
    Ok(Reset {
        connections,
        sockets,
    })
}

/// The TCP connections among `entries` as a local socket would see them: an outbound
/// one from its original source, an inbound one from its original destination. (One
/// that is neither ours nor forwarded simply has no such socket.)
fn local_tcp(ns: &Namespace, entries: &[Entry]) -> Vec<Tcp> {
    entries
        .iter()
        .filter(|e| e.protocol == libc::IPPROTO_TCP as u8)
        .map(|e| {
            let inbound = ns.decode(e.mark).is_some_and(|m| m.inbound);
            let o = &e.orig;
            if inbound {
                Tcp {
                    local: o.dst,
                    local_port: o.dport,
                    remote: o.src,
                    remote_port: o.sport,
                }
            } else {
                Tcp {
                    local: o.src,
                    local_port: o.sport,
                    remote: o.dst,
                    remote_port: o.dport,
                }
            }
        })
        .collect()
}

/// Logs a reset as the user should read it.
pub(super) fn log(iface: &str, family: Family, why: &str, r: &Reset) {
    info!(
        iface,
        %family,
        connections = r.connections,
        sockets = r.sockets,
        "reset the {family} connections of {iface} ({why}): {} tracked, {} local sockets \
         aborted; their applications reconnect through another uplink",
        r.connections,
        r.sockets
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::{Status, Tuple};

    #[test]
    fn local_sockets_face_the_right_way() {
        let ns = crate::config::Config::default().namespace();
        let entry = |mark: u32, protocol: u8| Entry {
            family: Family::V4,
            protocol,
            orig: Tuple {
                src: "10.0.1.2".parse().unwrap(),
                dst: "198.51.100.10".parse().unwrap(),
                sport: 40000,
                dport: 443,
            },
            reply: Tuple {
                src: "198.51.100.10".parse().unwrap(),
                dst: "10.0.1.2".parse().unwrap(),
                sport: 443,
                dport: 40000,
            },
            mark,
            id: 1,
            zone: 0,
            status: Status::default(),
        };
        let got = local_tcp(
            &ns,
            &[
                entry(ns.mark(1), 6),
                entry(ns.inbound_mark(1), 6),
                entry(ns.mark(1), 17),
            ],
        );
        assert_eq!(got.len(), 2, "UDP has no socket to abort");
        assert_eq!((got[0].local_port, got[0].remote_port), (40000, 443));
        assert_eq!(
            got[1].local,
            "198.51.100.10".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!((got[1].local_port, got[1].remote_port), (443, 40000));
    }
}
