//! PLACEHOLDER (branch conntrack): the address keeper.
use std::net::IpAddr;

use crate::error::Result;

pub const DUMMY: &str = "nmmw0";

pub async fn keep(_addr: IpAddr) -> Result<()> {
    Ok(())
}
pub async fn release(_addr: IpAddr) -> Result<()> {
    Ok(())
}
pub async fn kept() -> Result<Vec<IpAddr>> {
    Ok(Vec::new())
}
pub async fn remove_dummy() -> Result<()> {
    Ok(())
}
