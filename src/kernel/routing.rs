//! Routes and rules over rtnetlink, limited to our namespace (table range and rule
//! priorities). Reads what is ours, adds what is missing, deletes what is stale.
//!
//! Reading converts kernel objects back into the planner's [`Route`] and
//! [`Rule`], so that what the planner asked for, once added, reads back equal:
//! the reconcile diffs sets of them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use tracing::debug;

use super::dump::Dumper;
use super::{Route, Rule};
use crate::error::{Error, Result};
use crate::model::{Family, IpNet};
use crate::namespace::{MAIN_TABLE, Namespace};

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// `FRA_SUPPRESS_PREFIXLEN` as the kernel reports a rule without it (-1).
const SUPPRESS_UNSET: u32 = u32::MAX;

/// Our routes and rules, and the kernel's view of every interface, read in one go.
#[derive(Debug, Clone, Default)]
pub struct RoutingState {
    /// Routes in our tables, both families.
    pub routes: Vec<Route>,
    /// Our rules, both families.
    pub rules: Vec<Rule>,
    /// Every interface's addresses, by interface name.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// The main table's default routes, by output interface: gateway (if any).
    pub main_defaults: BTreeMap<String, Vec<Option<IpAddr>>>,
    /// The main table's other routes: (destination, output interface).
    pub main_routes: Vec<(IpNet, String)>,
    /// Per-interface IPv4 sysctls the link dump carries (`IFLA_INET_CONF`), by their
    /// /proc path: what the plan sets, read without opening a file per value.
    pub ipv4_conf: BTreeMap<String, String>,
}

impl RoutingState {
    /// Whether the kernel holds `address` on `iface` and a default route of its family
    /// through `iface` in the main table: the device is configured, whatever
    /// NetworkManager is busy with.
    pub fn holds(&self, iface: &str, address: IpAddr) -> bool {
        let family = Family::of(address);
        self.addresses
            .get(iface)
            .is_some_and(|a| a.contains(&address))
            && self.main_defaults.get(iface).is_some_and(|gws| {
                gws.iter()
                    .any(|gw| gw.is_none_or(|gw| Family::of(gw) == family))
            })
    }

    /// Whether `address` is configured on any interface.
    pub fn is_local(&self, address: IpAddr) -> bool {
        self.addresses.values().flatten().any(|a| *a == address)
    }
}

/// Routes and rules over one rtnetlink socket, read over another.
pub struct Routing {
    handle: rtnetlink::Handle,
    /// The socket of every dump, opened at the first (one dump at a time on it).
    dumper: std::sync::Mutex<Option<Dumper>>,
    /// Interface indices by name, as the last link dump listed them.
    indices: std::sync::Mutex<HashMap<String, u32>>,
}

impl Routing {
    /// Opens a netlink socket (spawns its connection task on the current tokio runtime).
    pub async fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(connection);
        Ok(Routing {
            handle,
            dumper: Default::default(),
            indices: Default::default(),
        })
    }

    /// Runs `f` on the dump socket, opening it first if needed.
    fn dumping<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Dumper) -> std::io::Result<T>,
    ) -> Result<T> {
        let mut dumper = self.dumper.lock().expect("dump socket lock");
        let result = match &mut *dumper {
            Some(d) => f(d),
            None => Dumper::new().and_then(|d| f(dumper.insert(d))),
        };
        result.map_err(|e| Error::Netlink(format!("{what}: {e}")))
    }

    /// Every message the kernel answers `request` with, as a dump.
    fn dump(&self, what: &str, request: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.dumping(what, |d| d.dump(request))
    }

    /// Reads our routes and rules and every interface's addresses and main-table
    /// default routes.
    pub async fn read(&self, ns: &Namespace) -> Result<RoutingState> {
        // One after the other: a netlink socket holds one dump at a time (EBUSY).
        let (names, ipv4_conf) = self.links().await?;
        let rules = self.rules(ns).await?;
        let addresses = self.addresses(&names).await?;
        let routes = self.all_routes(&names).await?;
        let mut state = RoutingState {
            rules,
            addresses,
            ipv4_conf,
            ..RoutingState::default()
        };
        for route in routes {
            if ns.id_of_table(route.table).is_some() {
                state.routes.push(route);
            } else if route.table == MAIN_TABLE && route.dst.prefix() == 0 {
                state
                    .main_defaults
                    .entry(route.oif)
                    .or_default()
                    .push(route.gateway);
            } else if route.table == MAIN_TABLE {
                state.main_routes.push((route.dst, route.oif));
            }
        }
        debug!(
            routes = state.routes.len(),
            rules = state.rules.len(),
            "read our routes and rules"
        );
        Ok(state)
    }

    /// Our rules of both families: priority in `ns.priorities()` and either a table in
    /// our range, or the main table with `suppress_prefixlength 0` and an fwmark mask
    /// inside our mask.
    pub async fn rules(&self, ns: &Namespace) -> Result<Vec<Rule>> {
        // Family unspecified: every family's rules in one dump.
        let answers = self.dump(
            "listing rules",
            RouteNetlinkMessage::GetRule(RuleMessage::default()),
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(msg) => rule_of(msg, ns),
                _ => None,
            })
            .collect())
    }

    /// Every route in our tables, both families.
    pub async fn routes(&self, ns: &Namespace) -> Result<Vec<Route>> {
        let names = self.link_names().await?;
        let mut routes = self.all_routes(&names).await?;
        routes.retain(|r| ns.id_of_table(r.table).is_some());
        Ok(routes)
    }

    /// Every unicast single-next-hop route of either family in every table.
    async fn all_routes(&self, names: &HashMap<u32, String>) -> Result<Vec<Route>> {
        // Family unspecified, table 0 (RT_TABLE_UNSPEC) and every other header field
        // zero: every route of both families and all tables in one dump, also when the
        // socket does strict checking (which filters on these fields).
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Unspec;
        request.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let answers = self.dump("listing routes", RouteNetlinkMessage::GetRoute(request))?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(msg) => route_of(msg, names),
                _ => None,
            })
            .collect())
    }

    /// Every interface's addresses, by name.
    async fn addresses(
        &self,
        names: &HashMap<u32, String>,
    ) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let answers = self.dump(
            "listing addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        for msg in answers.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(msg) => Some(msg),
            _ => None,
        }) {
            let Some(name) = names.get(&msg.header.index) else {
                continue;
            };
            // IFA_LOCAL is the interface's own address on point-to-point links, where
            // IFA_ADDRESS is the peer's; elsewhere the two are equal.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) => Some(*a),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            });
            if let Some(a) = local.or(address) {
                out.entry(name.clone()).or_default().push(a);
            }
        }
        Ok(out)
    }

    /// Adds the rule; a rule that already exists exactly so is not an error.
    pub async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let mut request = self.handle.rule().add();
        *request.message_mut() = rule_message(rule);
        match request.execute().await {
            Ok(()) => {
                debug!(rule = %rule, "added rule");
                Ok(())
            }
            Err(e) if errno(&e) == Some(EEXIST) => {
                debug!(rule = %rule, "rule already present");
                Ok(())
            }
            Err(e) => Err(nl_error(format_args!("adding rule {}", rule), e)),
        }
    }

    /// Deleting a rule that is already gone is not an error.
    pub async fn del_rule(&self, rule: &Rule) -> Result<()> {
        match self.handle.rule().del(rule_message(rule)).execute().await {
            Ok(()) => {
                debug!(rule = %rule, "deleted rule");
                Ok(())
            }
            Err(e) if errno(&e) == Some(ENOENT) => {
                debug!(rule = %rule, "rule already gone");
                Ok(())
            }
            Err(e) => Err(nl_error(format_args!("deleting rule {}", rule), e)),
        }
    }

    /// Creates the route, or replaces the one with the same table and destination.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        let what = || format!("adding route {}", route);
        // The index the last link dump gave the interface, if it was read: one
        // question to the kernel less per route. Should the interface have been
        // replaced since (ENODEV), it is asked for by name below.
        if let Some(index) = self.known_index(&route.oif) {
            match self.send_route(route, index).await {
                Ok(()) => {
                    debug!(route = %route, "added route");
                    return Ok(());
                }
                Err(e) if errno(&e) != Some(ENODEV) => return Err(nl_error(what(), e)),
                Err(_) => {}
            }
        }
        let index = self
            .ifindex(&route.oif)
            .await
            .map_err(|e| Error::Netlink(format!("{}: {e}", what())))?
            .ok_or_else(|| {
                Error::Netlink(format!("{}: no interface named {}", what(), route.oif))
            })?;
        self.send_route(route, index)
            .await
            .map_err(|e| nl_error(what(), e))?;
        debug!(route = %route, "added route");
        Ok(())
    }

    /// Sends the request that adds (or replaces) `route` through interface `index`.
    async fn send_route(&self, route: &Route, index: u32) -> Result<(), rtnetlink::Error> {
        let mut msg = route_message(route, index);
        set_route_table(&mut msg, route.table);
        self.handle.route().add(msg).replace().execute().await
    }

    /// The index the last link dump of this `Routing` gave interface `name`.
    fn known_index(&self, name: &str) -> Option<u32> {
        self.indices
            .lock()
            .expect("index cache lock")
            .get(name)
            .copied()
    }

    /// Deleting a route that is already gone is not an error.
    pub async fn del_route(&self, route: &Route) -> Result<()> {
        let what = || format!("deleting route {}", route);
        let Some(index) = self
            .ifindex(&route.oif)
            .await
            .map_err(|e| Error::Netlink(format!("{}: {e}", what())))?
        else {
            // The kernel drops the routes of an interface that goes away.
            debug!(route = %route, "interface gone, so is the route");
            return Ok(());
        };
        // Protocol, type 0 and scope "nowhere" are wildcards when deleting.
        let mut msg = RouteMessage::default();
        msg.header.address_family = address_family(route.family());
        msg.header.destination_prefix_length = route.dst.prefix();
        msg.header.scope = RouteScope::NoWhere;
        if route.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route.dst.addr().into()));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(gw) = route.gateway {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        set_route_table(&mut msg, route.table);
        match self.handle.route().del(msg).execute().await {
            Ok(()) => {
                debug!(route = %route, "deleted route");
                Ok(())
            }
            Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => {
                debug!(route = %route, "route already gone");
                Ok(())
            }
            Err(e) => Err(nl_error(what(), e)),
        }
    }

    /// Interface index by name; `None` when there is no such interface.
    async fn ifindex(&self, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
        let mut reply = self.handle.link().get().match_name(name).execute();
        match reply.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every interface's name by index.
    async fn link_names(&self) -> Result<HashMap<u32, String>> {
        Ok(self.links().await?.0)
    }

    /// Every interface's name by index, and the IPv4 sysctls we set of each (see
    /// [`RoutingState::ipv4_conf`]).
    async fn links(&self) -> Result<(HashMap<u32, String>, BTreeMap<String, String>)> {
        // Without statistics (which we do not read); each answer is read for its
        // index, name and IPv4 configuration only: a link message carries a kilobyte
        // and a half of attributes, and parsing them all was most of a no-op reconcile.
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let links = self.dumping("listing interfaces", |d| {
            d.dump_with(RouteNetlinkMessage::GetLink(request), |bytes| {
                Ok(RawLink::parse(bytes))
            })
        })?;
        let mut names = HashMap::new();
        let mut conf = BTreeMap::new();
        for link in links {
            for (key, value) in link.ipv4_conf.iter().flatten() {
                conf.insert(super::sysctl::conf_path(&link.name, key), value.to_string());
            }
            names.insert(link.index, link.name);
        }
        *self.indices.lock().expect("index cache lock") =
            names.iter().map(|(i, n)| (n.clone(), *i)).collect();
        Ok((names, conf))
    }
}

/// What a reconcile reads of an `RTM_NEWLINK` message.
#[derive(Debug, PartialEq, Eq)]
struct RawLink {
    index: u32,
    name: String,
    /// The IPv4 sysctls we set, by their name under /proc/sys/net/ipv4/conf/IFACE/.
    ipv4_conf: Option<[(&'static str, i32); 4]>,
}

impl RawLink {
    /// The ones we read of `IPV4_DEVCONF_*` (linux/ip.h): `IFLA_INET_CONF` holds them
    /// all as 32-bit values, the first being number 1.
    const IPV4_CONF: [(&'static str, usize); 4] = [
        ("src_valid_mark", 24),
        ("arp_ignore", 19),
        ("arp_announce", 18),
        ("rp_filter", 8),
    ];

    /// Reads a whole netlink message (header included); `None` when it is no
    /// `RTM_NEWLINK` or has no name.
    fn parse(bytes: &[u8]) -> Option<RawLink> {
        const RTM_NEWLINK: u16 = 16;
        const IFINFOMSG_LEN: usize = 16;
        const IFLA_IFNAME: u16 = 3;
        const IFLA_AF_SPEC: u16 = 26;
        const AF_INET: u16 = 2;
        const IFLA_INET_CONF: u16 = 1;
        let kind = u16::from_ne_bytes(bytes.get(4..6)?.try_into().ok()?);
        if kind != RTM_NEWLINK {
            return None;
        }
        let header = super::dump::HEADER_LEN;
        let info = bytes.get(header..header + IFINFOMSG_LEN)?;
        let index = u32::from_ne_bytes(info[4..8].try_into().ok()?);
        let mut name = None;
        let mut ipv4_conf = None;
        for (kind, value) in attributes(&bytes[header + IFINFOMSG_LEN..]) {
            match kind {
                IFLA_IFNAME => {
                    let value = value.split(|b| *b == 0).next().unwrap_or_default();
                    name = Some(String::from_utf8_lossy(value).into_owned());
                }
                IFLA_AF_SPEC => {
                    let inet = attributes(value).find(|(family, _)| *family == AF_INET);
                    let conf = inet.and_then(|(_, inet)| {
                        attributes(inet).find(|(kind, _)| *kind == IFLA_INET_CONF)
                    });
                    ipv4_conf = conf.and_then(|(_, values)| {
                        let at = |n: usize| {
                            let b = values.get((n - 1) * 4..n * 4)?;
                            Some(i32::from_ne_bytes(b.try_into().ok()?))
                        };
                        let [a, b, c, d] = Self::IPV4_CONF;
                        Some([
                            (a.0, at(a.1)?),
                            (b.0, at(b.1)?),
                            (c.0, at(c.1)?),
                            (d.0, at(d.1)?),
                        ])
                    });
                }
                _ => {}
            }
        }
        Some(RawLink {
            index,
            name: name?,
            ipv4_conf,
        })
    }
}

/// The netlink attributes in `bytes`: (type without its flag bits, value).
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?) & 0x3fff;
        let value = bytes.get(4..len)?;
        bytes = bytes.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, value))
    })
}

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

/// The request that adds `route` through interface `index` (table set by the caller).
/// Gateway and source are of the route's family: the planner never mixes them.
fn route_message(route: &Route, index: u32) -> RouteMessage {
    let scope = if route.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    // The planner never mixes families within a route, so the builder's family checks
    // cannot fail; a route that did would be a bug worth a loud failure.
    let build = || -> Result<RouteMessage, String> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.addr(), route.dst.prefix())
            .map_err(|e| e.to_string())?
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .scope(scope)
            .kind(RouteType::Unicast);
        if let Some(gw) = route.gateway {
            b = b.gateway(gw).map_err(|e| e.to_string())?;
        }
        if let Some(src) = route.prefsrc {
            b = b.pref_source(src).map_err(|e| e.to_string())?;
        }
        // No metric: the kernel gives IPv6 routes 1024, and reading back ignores it.
        Ok(b.build())
    };
    let mut msg = build().unwrap_or_else(|e| panic!("route {route} mixes families: {e}"));
    if route.onlink {
        msg.header.flags |= RouteFlags::Onlink;
    }
    msg
}

/// The table goes into `RTA_TABLE` (always, so ids above 255 work); the header holds
/// it too when it fits, as iproute2 does.
fn set_route_table(msg: &mut RouteMessage, table: u32) {
    msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes
        .retain(|a| !matches!(a, RouteAttribute::Table(_)));
    msg.attributes.push(RouteAttribute::Table(table));
}

/// The request for adding or deleting exactly `rule` (the kernel matches a deletion on
/// every attribute given).
fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = address_family(rule.family);
    msg.header.action = RuleAction::ToTable;
    msg.header.table = u8::try_from(rule.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes.push(RuleAttribute::FwMark(rule.fwmark));
    msg.attributes.push(RuleAttribute::FwMask(rule.fwmask));
    if let Some(iif) = &rule.iif {
        msg.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    msg.attributes.push(RuleAttribute::Table(rule.table));
    if let Some(len) = rule.suppress_prefixlength {
        msg.attributes.push(RuleAttribute::SuppressPrefixLen(len));
    }
    msg
}

/// The rule as a [`Rule`] when it is ours, `None` for anything else: other
/// programs' rules, the kernel's default ones, and rules of a shape we never create
/// (other selectors or actions) even at our priorities.
fn rule_of(msg: &RuleMessage, ns: &Namespace) -> Option<Rule> {
    let h = &msg.header;
    let family = match h.family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    if h.action != RuleAction::ToTable
        || h.flags.contains(RuleFlags::Invert)
        || h.src_len != 0
        || h.dst_len != 0
        || h.tos != 0
    {
        return None;
    }
    let mut rule = Rule {
        family,
        priority: 0,
        fwmark: 0,
        fwmask: 0,
        iif: None,
        table: u32::from(h.table),
        suppress_prefixlength: None,
    };
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::FwMark(m) => rule.fwmark = *m,
            RuleAttribute::FwMask(m) => rule.fwmask = *m,
            RuleAttribute::Table(t) => rule.table = *t,
            // The only interface selector we use.
            RuleAttribute::Iifname(name) if name == "lo" => rule.iif = Some(name.clone()),
            RuleAttribute::SuppressPrefixLen(SUPPRESS_UNSET) => {}
            RuleAttribute::SuppressPrefixLen(l) => rule.suppress_prefixlength = Some(*l),
            // Reported for every rule; not a selector.
            RuleAttribute::Protocol(_) => {}
            // Attributes this crate does not know: newer kernels report some for
            // every rule, so they cannot disqualify one.
            RuleAttribute::Other(_) => {}
            // Any other selector (iif, oif, uid range, ports, ...): not one of ours.
            _ => return None,
        }
    }
    if !ns.priorities().contains(&rule.priority) {
        return None;
    }
    let ours_table = ns.id_of_table(rule.table).is_some();
    let ours_suppress = rule.table == MAIN_TABLE
        && rule.suppress_prefixlength == Some(0)
        && rule.fwmask != 0
        && rule.fwmask & !ns.mark_mask == 0;
    (ours_table || ours_suppress).then_some(rule)
}

/// The route as a [`Route`] when it is a unicast route with a single next hop through
/// a known interface; `None` otherwise. Only what we set is read: the kernel's own
/// additions (an IPv6 route's metric 1024, preference, expiry) do not count.
fn route_of(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &msg.header;
    let family = match h.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    if h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = family.unspecified();
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    let same_family = |a: IpAddr| (Family::of(a) == family).then_some(a);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => {
                if let Some(a) = route_addr(a).and_then(same_family) {
                    dst = a;
                }
            }
            RouteAttribute::Gateway(a) => gateway = route_addr(a).and_then(same_family),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => prefsrc = route_addr(a).and_then(same_family),
            _ => {}
        }
    }
    let dst = IpNet::new(dst, h.destination_prefix_length);
    // Multipath routes (no RTA_OIF) and source-specific ones are not ours to read.
    let index = oif?;
    if h.source_prefix_length != 0 || h.tos != 0 {
        return None;
    }
    let name = names.get(&index)?;
    Some(Route {
        table,
        dst,
        gateway,
        oif: name.clone(),
        prefsrc,
        scope_link: h.scope == RouteScope::Link,
        onlink: h.flags.contains(RouteFlags::Onlink),
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}

/// The errno of a kernel refusal (positive, e.g. 17 for EEXIST).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// One dump on a socket of its own, read synchronously (see [`super::dump`]).
/// "WHAT: File exists (os error 17)" for kernel refusals, the crate's text otherwise.
fn nl_error(what: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
    let reason = match errno(&e) {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.to_string(),
    };
    Error::Netlink(format!("{what}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ns() -> Namespace {
        Namespace {
            mark_mask: 0x3f00_0000,
            table_base: 6100,
            rule_priority: 30100,
        }
    }

    fn kernel_rule(rule: &Rule) -> RuleMessage {
        // What a dump reports: the request's attributes plus protocol, and
        // suppress_prefixlength -1 when unset; header table 252 (compat) above 255.
        let mut msg = rule_message(rule);
        if rule.table > 255 {
            msg.header.table = 252;
        }
        msg.attributes
            .push(RuleAttribute::Protocol(Default::default()));
        if rule.suppress_prefixlength.is_none() {
            msg.attributes
                .push(RuleAttribute::SuppressPrefixLen(SUPPRESS_UNSET));
        }
        msg
    }

    #[test]
    fn our_rules_read_back_equal() {
        let ns = ns();
        for rule in [
            Rule {
                family: Family::V4,
                priority: 30100,
                fwmark: 0x2100_0000,
                fwmask: 0x3f00_0000,
                iif: Some("lo".into()),
                table: 6101,
                suppress_prefixlength: None,
            },
            Rule {
                family: Family::V4,
                priority: 30101,
                fwmark: 0x0100_0000,
                fwmask: 0x1f00_0000,
                iif: None,
                table: MAIN_TABLE,
                suppress_prefixlength: Some(0),
            },
            Rule {
                family: Family::V4,
                priority: 30102,
                fwmark: 0x0100_0000,
                fwmask: 0x1f00_0000,
                iif: None,
                table: 6101,
                suppress_prefixlength: None,
            },
        ] {
            assert_eq!(rule_of(&kernel_rule(&rule), &ns), Some(rule.clone()));
            // The same rule in IPv6's list reads back as IPv6.
            let rule6 = Rule {
                family: Family::V6,
                ..rule.clone()
            };
            let msg = kernel_rule(&rule6);
            assert_eq!(msg.header.family, AddressFamily::Inet6);
            assert_eq!(rule_of(&msg, &ns), Some(rule6));
        }
    }

    #[test]
    fn foreign_rules_are_not_ours() {
        let ns = ns();
        let ours = Rule {
            family: Family::V4,
            priority: 30102,
            fwmark: 0x0100_0000,
            fwmask: 0x1f00_0000,
            iif: None,
            table: 6101,
            suppress_prefixlength: None,
        };
        let foreign = [
            // tailscale-like table at our priority
            Rule {
                table: 52,
                ..ours.clone()
            },
            // our table at another priority
            Rule {
                priority: 5270,
                ..ours.clone()
            },
            // main lookup without suppress
            Rule {
                table: MAIN_TABLE,
                ..ours.clone()
            },
            // main + suppress with a mask outside ours
            Rule {
                table: MAIN_TABLE,
                fwmask: 0xff_0000,
                suppress_prefixlength: Some(0),
                ..ours.clone()
            },
            // main + suppress without any fwmark
            Rule {
                table: MAIN_TABLE,
                fwmark: 0,
                fwmask: 0,
                suppress_prefixlength: Some(0),
                ..ours.clone()
            },
        ];
        for rule in foreign {
            assert_eq!(rule_of(&kernel_rule(&rule), &ns), None, "{rule:?}");
        }
        // the kernel's defaults
        for (prio, table) in [(0, 255), (32766, 254), (32767, 253)] {
            let mut msg = RuleMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.action = RuleAction::ToTable;
            msg.header.table = table;
            msg.attributes.push(RuleAttribute::Priority(prio));
            msg.attributes.push(RuleAttribute::Table(table.into()));
            assert_eq!(rule_of(&msg, &ns), None);
        }
        // other selectors or actions at our priority and table
        let mut iif = kernel_rule(&ours);
        iif.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(rule_of(&iif, &ns), None);
        let mut not = kernel_rule(&ours);
        not.header.flags |= RuleFlags::Invert;
        assert_eq!(rule_of(&not, &ns), None);
        let mut blackhole = kernel_rule(&ours);
        blackhole.header.action = RuleAction::Blackhole;
        assert_eq!(rule_of(&blackhole, &ns), None);
    }

    #[test]
    fn route_reads_table_attribute_and_flags() {
        let names = HashMap::from([(7, "eth1".to_string())]);
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(7)
            .gateway(Ipv4Addr::new(10, 0, 7, 1))
            .pref_source(Ipv4Addr::new(10, 0, 7, 2))
            .onlink()
            .build();
        msg.header.table = 252;
        msg.attributes.push(RouteAttribute::Table(6102));
        assert_eq!(
            route_of(&msg, &names),
            Some(Route {
                table: 6102,
                dst: IpNet::default_route(Family::V4),
                gateway: Some(Ipv4Addr::new(10, 0, 7, 1).into()),
                oif: "eth1".into(),
                prefsrc: Some(Ipv4Addr::new(10, 0, 7, 2).into()),
                scope_link: false,
                onlink: true,
            })
        );
        // another table reads back with its number; not unicast, unknown interface: none
        let mut other = msg.clone();
        set_route_table(&mut other, 52);
        assert_eq!(route_of(&other, &names).map(|r| r.table), Some(52));
        let mut blackhole = msg.clone();
        blackhole.header.kind = RouteType::BlackHole;
        assert_eq!(route_of(&blackhole, &names), None);
        assert_eq!(route_of(&msg, &HashMap::new()), None);
    }

    /// An IPv6 route as the kernel dumps it: our attributes plus metric 1024, a router
    /// preference and cache info, scope universe. It reads back as what we asked for.
    #[test]
    fn ipv6_route_reads_back_what_we_set() {
        let names = HashMap::from([(4, "wlan0".to_string())]);
        let route = Route {
            table: 6102,
            dst: IpNet::default_route(Family::V6),
            gateway: Some("fe80::1".parse().unwrap()),
            oif: "wlan0".into(),
            prefsrc: None,
            scope_link: false,
            onlink: false,
        };
        let mut msg = route_message(&route, 4);
        set_route_table(&mut msg, route.table);
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        msg.attributes.push(RouteAttribute::Priority(1024));
        msg.attributes.push(RouteAttribute::Preference(
            rtnetlink::packet_route::route::RoutePreference::Medium,
        ));
        assert_eq!(route_of(&msg, &names), Some(route.clone()));
        // On-link prefix, and the onlink flag for a global gateway off every prefix.
        let prefix = Route {
            dst: IpNet::new("2001:db8:2::".parse().unwrap(), 64),
            gateway: None,
            ..route.clone()
        };
        let mut msg = route_message(&prefix, 4);
        set_route_table(&mut msg, prefix.table);
        assert_eq!(route_of(&msg, &names), Some(prefix));
        let far = Route {
            gateway: Some("2001:db8:9::1".parse().unwrap()),
            onlink: true,
            ..route
        };
        let mut msg = route_message(&far, 4);
        set_route_table(&mut msg, far.table);
        assert!(msg.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(route_of(&msg, &names), Some(far.clone()));
        assert_eq!(
            far.to_string(),
            "::/0 via 2001:db8:9::1 dev wlan0 table 6102 onlink"
        );
    }

    #[test]
    fn descriptions_read_like_ip() {
        let r = Route {
            table: 6101,
            dst: IpNet::default_route(Family::V4),
            gateway: Some(Ipv4Addr::new(10, 0, 1, 1).into()),
            oif: "eth0".into(),
            prefsrc: None,
            scope_link: false,
            onlink: false,
        };
        assert_eq!(r.to_string(), "0.0.0.0/0 via 10.0.1.1 dev eth0 table 6101");
        let e = nl_error(
            format_args!("adding route {}", r),
            rtnetlink::Error::NetlinkError({
                let mut m = rtnetlink::packet_core::ErrorMessage::default();
                m.code = std::num::NonZeroI32::new(-17);
                m
            }),
        );
        assert_eq!(
            e.to_string(),
            "netlink: adding route 0.0.0.0/0 via 10.0.1.1 dev eth0 table 6101: File exists (os error 17)"
        );
    }

    /// The few attributes read of a link message are those the full parse of
    /// `netlink-packet-route` finds, on this machine's own interfaces (a link dump
    /// needs no privilege).
    #[test]
    fn raw_links_read_what_the_full_parse_reads() {
        use rtnetlink::packet_route::link::{AfSpecInet, AfSpecUnspec};
        let mut dumper = Dumper::new().expect("a netlink socket");
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let raw = dumper
            .dump_with(request.clone(), |bytes| Ok(RawLink::parse(bytes)))
            .unwrap();
        let full: Vec<RawLink> = dumper
            .dump(request)
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .map(|link| {
                let name = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                let conf = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
                        AfSpecUnspec::Inet(inet) => inet.iter().find_map(|i| match i {
                            AfSpecInet::DevConf(c) => Some(*c),
                            _ => None,
                        }),
                        _ => None,
                    }),
                    _ => None,
                });
                RawLink {
                    index: link.header.index,
                    name: name.expect("every link has a name"),
                    ipv4_conf: conf.map(|c| {
                        [
                            ("src_valid_mark", c.src_vmark),
                            ("arp_ignore", c.arp_ignore),
                            ("arp_announce", c.arp_announce),
                            ("rp_filter", c.rp_filter),
                        ]
                    }),
                }
            })
            .collect();
        assert!(
            raw.iter().any(|l| l.name == "lo" && l.ipv4_conf.is_some()),
            "{raw:?}"
        );
        assert_eq!(raw, full);
    }

    #[test]
    fn attributes_stop_at_a_truncated_one() {
        // IFLA_IFNAME "lo", then an attribute claiming 64 bytes in 8.
        let bytes = [7, 0, 3, 0, b'l', b'o', 0, 0, 64, 0, 1, 0, 0, 0, 0, 0];
        let found: Vec<_> = attributes(&bytes).collect();
        assert_eq!(found, [(3, &b"lo\0"[..])]);
        assert_eq!(
            attributes(&[0, 0, 0, 0]).count(),
            0,
            "a zero length ends the walk"
        );
    }
}
