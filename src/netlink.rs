//! Routes and rules over rtnetlink, limited to our namespace (table range and rule
//! priorities). Reads what is ours, adds what is missing, deletes what is stale.
//!
//! Reading converts kernel objects back into the planner's [`RouteSpec`] and
//! [`RuleSpec`], so that what the planner asked for, once added, reads back equal:
//! the reconcile diffs sets of them.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{IpVersion, RouteMessageBuilder};
use tracing::debug;

use crate::error::{Error, Result};
use crate::model::Ipv4Net;
use crate::plan::{MAIN_TABLE, Namespace, RouteSpec, RuleSpec};

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// `FRA_SUPPRESS_PREFIXLEN` as the kernel reports a rule without it (-1).
const SUPPRESS_UNSET: u32 = u32::MAX;

pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a netlink socket (spawns its connection task on the current tokio runtime).
    pub async fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Our rules: priority in `ns.priorities()` and either a table in our range, or the
    /// main table with `suppress_prefixlength 0` and an fwmark mask inside our mask.
    pub async fn rules(&self, ns: &Namespace) -> Result<Vec<RuleSpec>> {
        let mut dump = self.handle.rule().get(IpVersion::V4).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| nl_error("listing IPv4 rules", e))?
        {
            if let Some(rule) = rule_spec(&msg, ns) {
                out.push(rule);
            }
        }
        debug!(count = out.len(), "read our rules");
        Ok(out)
    }

    /// Every IPv4 route in a table of ours (`ns.id_of_table(table).is_some()`).
    pub async fn routes(&self, ns: &Namespace) -> Result<Vec<RouteSpec>> {
        let names = self.link_names().await?;
        // Table 0 (RT_TABLE_UNSPEC) and every other header field zero: all tables,
        // also when the socket does strict checking (which filters on these fields).
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        request.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let mut dump = self.handle.route().get(request).execute();
        let mut out = Vec::new();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| nl_error("listing IPv4 routes", e))?
        {
            if let Some(route) = route_spec(&msg, &names, ns) {
                out.push(route);
            }
        }
        debug!(count = out.len(), "read our routes");
        Ok(out)
    }

    /// Adds the rule; a rule that already exists exactly so is not an error.
    pub async fn add_rule(&self, rule: &RuleSpec) -> Result<()> {
        let mut request = self.handle.rule().add();
        *request.message_mut() = rule_message(rule);
        match request.execute().await {
            Ok(()) => {
                debug!(rule = %describe_rule(rule), "added rule");
                Ok(())
            }
            Err(e) if errno(&e) == Some(EEXIST) => {
                debug!(rule = %describe_rule(rule), "rule already present");
                Ok(())
            }
            Err(e) => Err(nl_error(
                format_args!("adding rule {}", describe_rule(rule)),
                e,
            )),
        }
    }

    /// Deleting a rule that is already gone is not an error.
    pub async fn del_rule(&self, rule: &RuleSpec) -> Result<()> {
        match self.handle.rule().del(rule_message(rule)).execute().await {
            Ok(()) => {
                debug!(rule = %describe_rule(rule), "deleted rule");
                Ok(())
            }
            Err(e) if errno(&e) == Some(ENOENT) => {
                debug!(rule = %describe_rule(rule), "rule already gone");
                Ok(())
            }
            Err(e) => Err(nl_error(
                format_args!("deleting rule {}", describe_rule(rule)),
                e,
            )),
        }
    }

    /// Creates the route, or replaces the one with the same table and destination.
    pub async fn add_route(&self, route: &RouteSpec) -> Result<()> {
        let what = || format!("adding route {}", describe_route(route));
        let index = self
            .ifindex(&route.oif)
            .await
            .map_err(|e| Error::Netlink(format!("{}: {e}", what())))?
            .ok_or_else(|| {
                Error::Netlink(format!("{}: no interface named {}", what(), route.oif))
            })?;
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.addr, route.dst.prefix)
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .scope(if route.scope_link {
                RouteScope::Link
            } else {
                RouteScope::Universe
            })
            .kind(RouteType::Unicast);
        if let Some(gw) = route.gateway {
            b = b.gateway(gw);
        }
        if let Some(src) = route.prefsrc {
            b = b.pref_source(src);
        }
        if route.onlink {
            b = b.onlink();
        }
        let mut msg = b.build();
        set_route_table(&mut msg, route.table);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_error(what(), e))?;
        debug!(route = %describe_route(route), "added route");
        Ok(())
    }

    /// Deleting a route that is already gone is not an error.
    pub async fn del_route(&self, route: &RouteSpec) -> Result<()> {
        let what = || format!("deleting route {}", describe_route(route));
        let Some(index) = self
            .ifindex(&route.oif)
            .await
            .map_err(|e| Error::Netlink(format!("{}: {e}", what())))?
        else {
            // The kernel drops the routes of an interface that goes away.
            debug!(route = %describe_route(route), "interface gone, so is the route");
            return Ok(());
        };
        // Protocol, type 0 and scope "nowhere" are wildcards when deleting.
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = route.dst.prefix;
        msg.header.scope = RouteScope::NoWhere;
        if route.dst.prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    route.dst.addr,
                )));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        set_route_table(&mut msg, route.table);
        match self.handle.route().del(msg).execute().await {
            Ok(()) => {
                debug!(route = %describe_route(route), "deleted route");
                Ok(())
            }
            Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => {
                debug!(route = %describe_route(route), "route already gone");
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
        let mut dump = self.handle.link().get().execute();
        let mut names = HashMap::new();
        while let Some(link) = dump
            .try_next()
            .await
            .map_err(|e| nl_error("listing interfaces", e))?
        {
            if let Some(name) = link_name(&link) {
                names.insert(link.header.index, name.to_string());
            }
        }
        Ok(names)
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
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
fn rule_message(rule: &RuleSpec) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
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

/// The rule as a [`RuleSpec`] when it is ours, `None` for anything else: other
/// programs' rules, the kernel's default ones, and rules of a shape we never create
/// (other selectors or actions) even at our priorities.
fn rule_spec(msg: &RuleMessage, ns: &Namespace) -> Option<RuleSpec> {
    let h = &msg.header;
    if h.family != AddressFamily::Inet
        || h.action != RuleAction::ToTable
        || h.flags.contains(RuleFlags::Invert)
        || h.src_len != 0
        || h.dst_len != 0
        || h.tos != 0
    {
        return None;
    }
    let mut rule = RuleSpec {
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

/// The route as a [`RouteSpec`] when it is a unicast IPv4 route in a table of ours
/// with a single next hop; `None` otherwise.
fn route_spec(
    msg: &RouteMessage,
    names: &HashMap<u32, String>,
    ns: &Namespace,
) -> Option<RouteSpec> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => prefsrc = Some(*a),
            _ => {}
        }
    }
    ns.id_of_table(table)?;
    let dst = Ipv4Net::new(dst, h.destination_prefix_length);
    // Multipath routes (no RTA_OIF) and source-specific ones are not ours to read.
    let Some(index) = oif else {
        debug!(table, %dst, "route without a single output interface ignored");
        return None;
    };
    if h.source_prefix_length != 0 || h.tos != 0 {
        debug!(table, %dst, "source or tos specific route ignored");
        return None;
    }
    let Some(name) = names.get(&index) else {
        debug!(table, %dst, index, "route through an unknown interface ignored");
        return None;
    };
    Some(RouteSpec {
        table,
        dst,
        gateway,
        oif: name.clone(),
        prefsrc,
        scope_link: h.scope == RouteScope::Link,
        onlink: h.flags.contains(RouteFlags::Onlink),
    })
}

fn describe_route(r: &RouteSpec) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        s += &format!(" via {gw}");
    }
    s += &format!(" dev {} table {}", r.oif, r.table);
    if r.scope_link {
        s += " scope link";
    }
    if r.onlink {
        s += " onlink";
    }
    if let Some(src) = r.prefsrc {
        s += &format!(" src {src}");
    }
    s
}

fn describe_rule(r: &RuleSpec) -> String {
    let mut s = format!(
        "priority {} fwmark {:#x}/{:#x} table {}",
        r.priority, r.fwmark, r.fwmask, r.table
    );
    if let Some(iif) = &r.iif {
        s += &format!(" iif {iif}");
    }
    if let Some(len) = r.suppress_prefixlength {
        s += &format!(" suppress_prefixlength {len}");
    }
    s
}

/// The errno of a kernel refusal (positive, e.g. 17 for EEXIST).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

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
    use crate::config::Config;

    fn ns() -> Namespace {
        Namespace::from_config(&Config::default())
    }

    fn kernel_rule(rule: &RuleSpec) -> RuleMessage {
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
            RuleSpec {
                priority: 30100,
                fwmark: 0x2100_0000,
                fwmask: 0x3f00_0000,
                iif: Some("lo".into()),
                table: 6101,
                suppress_prefixlength: None,
            },
            RuleSpec {
                priority: 30101,
                fwmark: 0x0100_0000,
                fwmask: 0x1f00_0000,
                iif: None,
                table: MAIN_TABLE,
                suppress_prefixlength: Some(0),
            },
            RuleSpec {
                priority: 30102,
                fwmark: 0x0100_0000,
                fwmask: 0x1f00_0000,
                iif: None,
                table: 6101,
                suppress_prefixlength: None,
            },
        ] {
            assert_eq!(rule_spec(&kernel_rule(&rule), &ns), Some(rule.clone()));
        }
    }

    #[test]
    fn foreign_rules_are_not_ours() {
        let ns = ns();
        let ours = RuleSpec {
            priority: 30102,
            fwmark: 0x0100_0000,
            fwmask: 0x1f00_0000,
            iif: None,
            table: 6101,
            suppress_prefixlength: None,
        };
        let foreign = [
            // tailscale-like table at our priority
            RuleSpec {
                table: 52,
                ..ours.clone()
            },
            // our table at another priority
            RuleSpec {
                priority: 5270,
                ..ours.clone()
            },
            // main lookup without suppress
            RuleSpec {
                table: MAIN_TABLE,
                ..ours.clone()
            },
            // main + suppress with a mask outside ours
            RuleSpec {
                table: MAIN_TABLE,
                fwmask: 0xff_0000,
                suppress_prefixlength: Some(0),
                ..ours.clone()
            },
            // main + suppress without any fwmark
            RuleSpec {
                table: MAIN_TABLE,
                fwmark: 0,
                fwmask: 0,
                suppress_prefixlength: Some(0),
                ..ours.clone()
            },
        ];
        for rule in foreign {
            assert_eq!(rule_spec(&kernel_rule(&rule), &ns), None, "{rule:?}");
        }
        // the kernel's defaults
        for (prio, table) in [(0, 255), (32766, 254), (32767, 253)] {
            let mut msg = RuleMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.action = RuleAction::ToTable;
            msg.header.table = table;
            msg.attributes.push(RuleAttribute::Priority(prio));
            msg.attributes.push(RuleAttribute::Table(table.into()));
            assert_eq!(rule_spec(&msg, &ns), None);
        }
        // other selectors or actions at our priority and table
        let mut iif = kernel_rule(&ours);
        iif.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(rule_spec(&iif, &ns), None);
        let mut not = kernel_rule(&ours);
        not.header.flags |= RuleFlags::Invert;
        assert_eq!(rule_spec(&not, &ns), None);
        let mut blackhole = kernel_rule(&ours);
        blackhole.header.action = RuleAction::Blackhole;
        assert_eq!(rule_spec(&blackhole, &ns), None);
    }

    #[test]
    fn route_reads_table_attribute_and_flags() {
        let ns = ns();
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
            route_spec(&msg, &names, &ns),
            Some(RouteSpec {
                table: 6102,
                dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
                gateway: Some(Ipv4Addr::new(10, 0, 7, 1)),
                oif: "eth1".into(),
                prefsrc: Some(Ipv4Addr::new(10, 0, 7, 2)),
                scope_link: false,
                onlink: true,
            })
        );
        // not our table, not unicast, unknown interface
        let mut other = msg.clone();
        set_route_table(&mut other, 52);
        assert_eq!(route_spec(&other, &names, &ns), None);
        let mut blackhole = msg.clone();
        blackhole.header.kind = RouteType::BlackHole;
        assert_eq!(route_spec(&blackhole, &names, &ns), None);
        assert_eq!(route_spec(&msg, &HashMap::new(), &ns), None);
    }

    #[test]
    fn descriptions_read_like_ip() {
        let r = RouteSpec {
            table: 6101,
            dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
            oif: "eth0".into(),
            prefsrc: None,
            scope_link: false,
            onlink: false,
        };
        assert_eq!(
            describe_route(&r),
            "0.0.0.0/0 via 10.0.1.1 dev eth0 table 6101"
        );
        let e = nl_error(
            format_args!("adding route {}", describe_route(&r)),
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
}
