//! nm-multiwan: per-connection load balancing over every NetworkManager uplink.
//!
//! One level-triggered flow: [`nm`] reads NetworkManager, [`plan`] computes the desired
//! kernel state as a pure function, [`reconcile`] applies the difference through
//! [`netlink`] (routes, rules) and [`firewall`] (our own chains, one atomic batch).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod firewall;
pub mod health;
pub mod model;
pub mod netlink;
pub mod nm;
pub mod plan;
pub mod reconcile;
pub mod split;
pub mod state;
pub mod status;

pub use error::{Error, Result};
