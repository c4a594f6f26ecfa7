//! Keeps the address of a departed uplink alive for the connections still using it.
//!
//! A local connection takes the primary uplink's address as its source before our
//! mark reroutes it, and MASQUERADE rewrites it on the uplink it actually leaves
//! through. When the primary leaves, NetworkManager deletes that address, and the
//! kernel stops sending from it and stops accepting answers to it: connections
//! running through the *other* uplinks stall. Holding the address on an interface of
//! our own ([`DUMMY_NAME`]) for as long as conntrack shows such connections keeps
//! them alive, while no new connection picks it: IPv4 addresses are of scope host,
//! IPv6 ones deprecated (preferred lifetime 0).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::LinkUnspec;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo,
};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkFlags, LinkMessage,
};
use tracing::{debug, info};

use super::conntrack::Entry;

/// Our interface holding the kept addresses.
pub const DUMMY_NAME: &str = "nmmw0";

/// An IPv6 lifetime that never ends.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// What failed (`context`) and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct Error {
    context: String,
    #[source]
    source: io::Error,
}

impl Error {
    fn new(context: impl Into<String>, e: rtnetlink::Error) -> Self {
        let source = match errno(&e) {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(e),
        };
        Error {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Kernel {
            what: "keeping departed addresses",
            source: Box::new(e),
        }
    }
}

/// The departed addresses still needed: those that some entry with a mark inside
/// `mark_mask` has as original source while its answers come back to another
/// address (source NAT: it leaves through another uplink). Entries without our mark
/// are not ours to keep alive, and an untranslated one went out through the departed
/// uplink itself, which is gone.
pub fn to_keep(departed: &[IpAddr], entries: &[Entry], mark_mask: u32) -> BTreeSet<IpAddr> {
    entries
        .iter()
        .filter(|e| e.mark & mark_mask != 0 && e.reply.dst != e.orig.src)
        .map(|e| e.orig.src)
        .filter(|src| departed.contains(src))
        .collect()
}

/// Holds addresses on [`DUMMY_NAME`], over rtnetlink. Every operation is idempotent.
pub struct Keeper {
    handle: rtnetlink::Handle,
}

impl Keeper {
    /// Opens a netlink socket (spawns its connection task on the current tokio runtime).
    pub async fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| Error {
            context: "opening a netlink socket".into(),
            source: e,
        })?;
        tokio::spawn(connection);
        Ok(Keeper { handle })
    }

    /// Creates [`DUMMY_NAME`] unless it exists, and brings it up; returns its index.
    /// A dummy interface, or an ifb one on a kernel built without the dummy driver
    /// (both are local, always up, and go nowhere). It gets no IPv6 address of its own
    /// (address generation mode none: not even a link-local one).
    pub async fn ensure_dummy(&self) -> Result<u32> {
        let context = || format!("creating interface {DUMMY_NAME}");
        let link = match self.link().await.map_err(|e| Error::new(context(), e))? {
            Some(link) => link,
            None => {
                self.create_link()
                    .await
                    .map_err(|e| Error::new(context(), e))?;
                self.link()
                    .await
                    .map_err(|e| Error::new(context(), e))?
                    .ok_or_else(|| Error {
                        context: context(),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "gone right after creation",
                        ),
                    })?
            }
        };
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            // Before it goes up, or the kernel gives it a link-local address.
            self.disable_ipv6_autoconf(index).await;
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| Error::new(format!("bringing {DUMMY_NAME} up"), e))?;
            info!(
                interface = DUMMY_NAME,
                index, "set up the interface keeping departed addresses"
            );
        }
        Ok(index)
    }

    /// The addresses on [`DUMMY_NAME`] (none when it does not exist), link-local
    /// ones aside.
    pub async fn kept(&self) -> Result<Vec<IpAddr>> {
        Ok(self
            .addresses()
            .await?
            .iter()
            .filter_map(address_of)
            .filter(|a| !is_link_local(a))
            .collect())
    }

    /// Holds `addr` on [`DUMMY_NAME`] (created if needed): IPv4 as `addr/32 scope
    /// host`, which no connection ever picks as source; IPv6 as `addr/128 nodad
    /// noprefixroute preferred_lft 0`, deprecated, so that source selection leaves it
    /// to the connections that already use it.
    pub async fn keep(&self, addr: IpAddr) -> Result<()> {
        let index = self.ensure_dummy().await?;
        let prefix = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let mut request = self.handle.address().add(index, addr, prefix).replace();
        let msg = request.message_mut();
        match addr {
            IpAddr::V4(_) => msg.header.scope = AddressScope::Host,
            IpAddr::V6(_) => {
                msg.attributes.push(AddressAttribute::Flags(
                    AddressFlags::Nodad | AddressFlags::Noprefixroute,
                ));
                let mut lifetimes = CacheInfo::default();
                lifetimes.ifa_preferred = 0;
                lifetimes.ifa_valid = INFINITY_LIFE_TIME;
                msg.attributes.push(AddressAttribute::CacheInfo(lifetimes));
            }
        }
        match request.execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(Error::new(format!("keeping {addr} on {DUMMY_NAME}"), e));
            }
        }
        debug!(%addr, interface = DUMMY_NAME, "keeping address");
        Ok(())
    }

    /// Lets `addr` go from [`DUMMY_NAME`]; not there is fine.
    pub async fn release(&self, addr: IpAddr) -> Result<()> {
        for msg in self.addresses().await? {
            if address_of(&msg) != Some(addr) {
                continue;
            }
            match self.handle.address().del(msg).execute().await {
                Ok(()) => debug!(%addr, interface = DUMMY_NAME, "released address"),
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => {}
                Err(e) => {
                    return Err(Error::new(format!("releasing {addr} from {DUMMY_NAME}"), e));
                }
            }
        }
        Ok(())
    }

    /// Deletes [`DUMMY_NAME`], with whatever it still holds; absent is fine. For when
    /// nothing is kept any more.
    pub async fn remove_dummy(&self) -> Result<()> {
        let context = || format!("removing interface {DUMMY_NAME}");
        let Some(link) = self.link().await.map_err(|e| Error::new(context(), e))? else {
            return Ok(());
        };
        match self.handle.link().del(link.header.index).execute().await {
            Ok(()) => {
                info!(
                    interface = DUMMY_NAME,
                    "removed the interface keeping departed addresses"
                );
                Ok(())
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(Error::new(context(), e)),
        }
    }

    async fn link(&self) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let mut reply = self
            .handle
            .link()
            .get()
            .match_name(DUMMY_NAME.to_string())
            .execute();
        match reply.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A dummy link, or an ifb one where the kernel has no dummy driver.
    async fn create_link(&self) -> Result<(), rtnetlink::Error> {
        // A kernel without the dummy driver stays without it: asked once per process.
        static NO_DUMMY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut last = None;
        for kind in [InfoKind::Dummy, InfoKind::Ifb] {
            if kind == InfoKind::Dummy && NO_DUMMY.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let msg = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(kind.clone())
                .name(DUMMY_NAME)
                .build();
            match self.handle.link().add(msg).execute().await {
                Ok(()) => {
                    debug!(interface = DUMMY_NAME, ?kind, "created interface");
                    return Ok(());
                }
                // Created meanwhile by another of us.
                Err(e) if errno(&e) == Some(libc::EEXIST) => return Ok(()),
                // "Unknown device type": try the next kind.
                Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                    debug!(?kind, "kernel cannot create this kind of interface");
                    if kind == InfoKind::Dummy {
                        NO_DUMMY.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one kind tried"))
    }

    /// `addrgenmode none`; a kernel without IPv6 has nothing to generate anyway.
    async fn disable_ipv6_autoconf(&self, index: u32) {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        if let Err(e) = self.handle.link().set(msg).execute().await {
            debug!(error = %e, interface = DUMMY_NAME, "cannot turn IPv6 address generation off");
        }
    }

    async fn addresses(&self) -> Result<Vec<AddressMessage>> {
        let context = || format!("listing the addresses of {DUMMY_NAME}");
        let Some(link) = self.link().await.map_err(|e| Error::new(context(), e))? else {
            return Ok(Vec::new());
        };
        self.handle
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::new(context(), e))
    }
}

/// The local address of an address message (IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6).
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(a) => Some(*a),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(a) => Some(*a),
            _ => None,
        })
    })
}

/// The kernel's own IPv6 link-local address, should address generation be on.
fn is_link_local(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if a.is_unicast_link_local())
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::{Status, Tuple};
    use crate::model::Family;

    const MASK: u32 = 0x3f00_0000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A TCP connection from `src` to 192.0.2.1:443 with `mark`, answered to `reply_dst`.
    fn conn(src: &str, reply_dst: &str, mark: u32) -> Entry {
        let (src, reply_dst) = (ip(src), ip(reply_dst));
        let server = if src.is_ipv4() {
            ip("192.0.2.1")
        } else {
            ip("2001:db8:ff::1")
        };
        Entry {
            family: Family::of(src),
            protocol: 6,
            orig: Tuple {
                src,
                dst: server,
                sport: 40000,
                dport: 443,
            },
            reply: Tuple {
                src: server,
                dst: reply_dst,
                sport: 443,
                dport: 40000,
            },
            mark,
            id: 1,
            zone: 0,
            status: Status(if src == reply_dst { 0 } else { Status::SRC_NAT }),
        }
    }

    #[test]
    fn keeps_departed_sources_translated_to_another_uplink() {
        let departed = [ip("10.0.1.2"), ip("2001:db8:1::2")];
        let entries = [
            // left through uplink 2, masqueraded to its address
            conn("10.0.1.2", "10.0.2.2", 0x0200_0000),
            conn("2001:db8:1::2", "2001:db8:2::2", 0x0200_0000),
        ];
        assert_eq!(
            to_keep(&departed, &entries, MASK),
            departed.into_iter().collect()
        );
        // Inbound-flagged marks are ours too.
        let inbound = [conn("10.0.1.2", "10.0.2.2", 0x2200_0000)];
        assert_eq!(to_keep(&departed, &inbound, MASK), [ip("10.0.1.2")].into());
    }

    #[test]
    fn keeps_nothing_that_is_not_needed() {
        let departed = [ip("10.0.1.2")];
        for entries in [
            // not translated: it went out through the departed uplink itself
            vec![conn("10.0.1.2", "10.0.1.2", 0x0100_0000)],
            // no mark of ours (another program's bits only, or none)
            vec![conn("10.0.1.2", "10.0.2.2", 0x0000_4000)],
            vec![conn("10.0.1.2", "10.0.2.2", 0)],
            // the source of a translated connection that did not depart
            vec![conn("10.0.3.2", "10.0.2.2", 0x0200_0000)],
            vec![],
        ] {
            assert_eq!(
                to_keep(&departed, &entries, MASK),
                BTreeSet::new(),
                "{entries:?}"
            );
        }
        // Nothing departed: nothing kept, whatever conntrack shows.
        let entries = [conn("10.0.1.2", "10.0.2.2", 0x0200_0000)];
        assert_eq!(to_keep(&[], &entries, MASK), BTreeSet::new());
        // Another mask: the same mark is not ours.
        assert_eq!(to_keep(&departed, &entries, 0x70), BTreeSet::new());
    }

    #[test]
    fn each_address_once_among_many_connections() {
        let departed = [ip("10.0.1.2"), ip("10.0.9.2")];
        let entries: Vec<Entry> = (0..50)
            .map(|i| {
                let mut e = conn("10.0.1.2", "10.0.2.2", 0x0200_0000);
                e.orig.sport = 40000 + i;
                e
            })
            .chain([conn("10.0.9.2", "10.0.9.2", 0x0300_0000)])
            .collect();
        assert_eq!(to_keep(&departed, &entries, MASK), [ip("10.0.1.2")].into());
    }

    #[test]
    fn link_local_is_not_kept() {
        assert!(is_link_local(&ip("fe80::1")));
        assert!(!is_link_local(&ip("169.254.1.1")));
        assert!(!is_link_local(&ip("2001:db8::1")));
    }
}
