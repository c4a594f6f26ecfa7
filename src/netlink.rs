//! Routes and rules over rtnetlink, limited to our namespace (table range and rule
//! priorities). Reads what is ours, adds what is missing, deletes what is stale.

use crate::error::Result;
use crate::plan::{Namespace, RouteSpec, RuleSpec};

pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a netlink socket (spawns its connection task on the current tokio runtime).
    pub async fn connect() -> Result<Self> {
        todo!("helper: netlink")
    }

    /// Our rules: priority in `ns.priorities()` and either a table in our range, or the
    /// main table with `suppress_prefixlength 0` and an fwmark mask inside our mask.
    pub async fn rules(&self, ns: &Namespace) -> Result<Vec<RuleSpec>> {
        let _ = (&self.handle, ns);
        todo!()
    }

    /// Every IPv4 route in a table of ours (`ns.id_of_table(table).is_some()`).
    pub async fn routes(&self, ns: &Namespace) -> Result<Vec<RouteSpec>> {
        let _ = ns;
        todo!()
    }

    pub async fn add_rule(&self, rule: &RuleSpec) -> Result<()> {
        let _ = rule;
        todo!()
    }

    /// Deleting a rule that is already gone is not an error.
    pub async fn del_rule(&self, rule: &RuleSpec) -> Result<()> {
        let _ = rule;
        todo!()
    }

    pub async fn add_route(&self, route: &RouteSpec) -> Result<()> {
        let _ = route;
        todo!()
    }

    /// Deleting a route that is already gone is not an error.
    pub async fn del_route(&self, route: &RouteSpec) -> Result<()> {
        let _ = route;
        todo!()
    }
}
