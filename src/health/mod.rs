//! Health of each uplink, as the daemon sees it: probes that leave through the uplink
//! under test whatever the balancing does, and the verdicts they lead to (in the
//! balance or out of it), per address family.
//!
//! Every interval a probe goes to every target of the family at once; it is answered
//! by the first answer, however late within the wait (twice `max_rtt_ms`), so that
//! probes overlap and a slow path is measured rather than called dead. Probes carry
//! the uplink's mark (`SO_MARK`, which our `ip rule`s route through the uplink's table
//! and our mangle chain leaves alone), are bound to its device (`SO_BINDTODEVICE`) and
//! use its address of the family as source, so an uplink that is out of the balance is
//! still probed through itself and can come back.
//!
//! The verdicts ([`Quality`], [`Board`]) are pure and unit-tested; only [`Prober`]
//! touches the network.

mod probe;
mod publish;
#[cfg(test)]
mod tests;
mod verdict;

pub use probe::*;
pub use publish::*;
pub use verdict::*;
