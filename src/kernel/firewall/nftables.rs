//! PLACEHOLDER: the nftables backend, written once the netlink client lands.

use super::{Backend, Counters, Firewall, FirewallPlan};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct Nftables;

impl Nftables {
    pub fn new() -> Self {
        Nftables
    }
}

fn todo() -> Error {
    Error::Firewall("the nftables backend is not built yet".into())
}

impl Firewall for Nftables {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }
    fn installed(&self) -> Result<bool> {
        Ok(false)
    }
    fn is_current(&self, _: &FirewallPlan) -> Result<bool> {
        Err(todo())
    }
    fn apply(
        &self,
        _: &FirewallPlan,
        _: &std::collections::BTreeSet<String>,
    ) -> Result<std::collections::BTreeSet<String>> {
        Err(todo())
    }
    fn flush(&self, _: &std::collections::BTreeSet<String>) -> Result<()> {
        Ok(())
    }
    fn counters(&self) -> Result<Counters> {
        Ok(Counters::default())
    }
    fn render(&self, _: &FirewallPlan) -> String {
        String::new()
    }
}
