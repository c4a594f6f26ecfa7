//! nm-multiwan: per-connection load balancing over every NetworkManager uplink.
//!
//! One level-triggered flow: [`nm`] reads NetworkManager, [`plan`] computes the desired
//! kernel state as a pure function, [`diff`] compares it with what [`kernel`] reads back,
//! and [`reconcile`] applies the difference through [`kernel`] (routes and rules over
//! rtnetlink, the firewall in one atomic step, sysctls, kept addresses).

pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod error;
pub mod events;
pub mod explain;
pub mod health;
pub mod kernel;
pub mod model;
pub mod namespace;
pub mod nm;
pub mod notify;
pub mod plan;
pub mod privilege;
pub mod reconcile;
pub mod split;
pub mod state;
pub mod status;
#[cfg(test)]
pub mod testing;
pub mod top;
pub mod traffic;

pub use error::{Error, Result};
