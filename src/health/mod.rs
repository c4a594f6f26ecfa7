//! Health of each uplink, as the daemon sees it: probes that leave through the uplink
//! under test whatever the balancing does, and the hysteresis that turns probe results
//! into a verdict (in the balance or out of it).
//!
//! A probe round sends one probe to every target at once and succeeds as soon as any
//! target answers within the timeout (shorter than the probe interval, so rounds never
//! overlap). Probes carry the uplink's mark (`SO_MARK`, which our `ip rule`s route
//! through the uplink's table and our mangle chain leaves alone), are bound to its
//! device (`SO_BINDTODEVICE`) and use its address as source, so an uplink that is out of
//! the balance is still probed through itself and can come back.
//!
//! The hysteresis ([`Hysteresis`], [`Board`]) is pure and unit-tested; only [`Prober`]
//! touches the network.

mod probe;
mod publish;
#[cfg(test)]
mod tests;
mod verdict;

pub use probe::*;
pub use publish::*;
pub use verdict::*;
