//! PLACEHOLDER (branch conntrack): the conntrack client.
use std::net::IpAddr;

use crate::error::Result;
use crate::model::Family;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub family: Option<Family>,
    pub mark: Option<(u32, u32)>,
}

#[derive(Debug, Clone)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub mark: u32,
}

pub fn dump(_filter: &Filter) -> Result<Vec<Entry>> {
    Ok(Vec::new())
}
