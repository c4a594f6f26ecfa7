//! Traffic per uplink: the interfaces' byte counters turned into rates, with a minute
//! of history. The daemon samples them every second (its `Status` carries the rates
//! and the history, for `status` and `top`); `top` samples them itself when no daemon
//! answers. Reading `/sys/class/net` needs no privilege.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often counters are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Rates kept per uplink: a minute at one sample a second.
pub const HISTORY_LEN: usize = 60;

/// An interface's byte counters since it came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Reads `/sys/class/net/IFACE/statistics/{rx,tx}_bytes`; `None` when the interface is
/// gone (or the name is not a plain interface name).
pub fn read_counters(iface: &str) -> Option<Counters> {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(Counters {
        rx_bytes: read("rx_bytes")?,
        tx_bytes: read("tx_bytes")?,
    })
}

/// Bytes per second in each direction: received (download) and sent (upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rate {
    pub rx: u64,
    pub tx: u64,
}

/// One interface's samples: the last reading and the rates between readings, oldest
/// first.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    last: Option<(Instant, Counters)>,
    history: VecDeque<Rate>,
}

impl Meter {
    /// Feeds a reading taken at `at`. Counters that went backwards (the interface was
    /// recreated under the same name) start the meter afresh rather than show a
    /// nonsense rate; the history stays.
    pub fn sample(&mut self, at: Instant, c: Counters) {
        if let Some((then, prev)) = self.last {
            let secs = at.saturating_duration_since(then).as_secs_f64();
            if secs > 0.0 && c.rx_bytes >= prev.rx_bytes && c.tx_bytes >= prev.tx_bytes {
                let per_sec = |now: u64, before: u64| ((now - before) as f64 / secs).round() as u64;
                if self.history.len() == HISTORY_LEN {
                    self.history.pop_front();
                }
                self.history.push_back(Rate {
                    rx: per_sec(c.rx_bytes, prev.rx_bytes),
                    tx: per_sec(c.tx_bytes, prev.tx_bytes),
                });
            }
        }
        self.last = Some((at, c));
    }

    /// The rate between the last two readings; `None` before the second.
    pub fn current(&self) -> Option<Rate> {
        self.history.back().copied()
    }

    pub fn history(&self) -> impl Iterator<Item = Rate> + '_ {
        self.history.iter().copied()
    }
}

/// The meters of a set of interfaces (the uplinks).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    meters: BTreeMap<String, Meter>,
}

impl Traffic {
    /// Samples exactly `ifaces` (interfaces no longer listed are forgotten), reading
    /// each with `read`: [`read_counters`] in production.
    pub fn sample<'a>(
        &mut self,
        ifaces: impl IntoIterator<Item = &'a str>,
        at: Instant,
        read: impl Fn(&str) -> Option<Counters>,
    ) {
        let wanted: Vec<&str> = ifaces.into_iter().collect();
        self.meters.retain(|k, _| wanted.contains(&k.as_str()));
        for iface in wanted {
            match read(iface) {
                Some(c) => self
                    .meters
                    .entry(iface.to_string())
                    .or_default()
                    .sample(at, c),
                None => {
                    self.meters.remove(iface);
                }
            }
        }
    }

    pub fn meter(&self, iface: &str) -> Option<&Meter> {
        self.meters.get(iface)
    }

    /// The `traffic` section of the status document.
    pub fn report(&self) -> TrafficReport {
        TrafficReport {
            interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            uplinks: self
                .meters
                .iter()
                .filter_map(|(iface, m)| {
                    let rate = m.current()?;
                    Some((
                        iface.clone(),
                        UplinkTraffic {
                            rx_rate: rate.rx,
                            tx_rate: rate.tx,
                            rx_history: m.history().map(|r| r.rx).collect(),
                            tx_history: m.history().map(|r| r.tx).collect(),
                        },
                    ))
                })
                .collect(),
        }
    }
}

/// The daemon's traffic sampling, in the status document (`null` without a daemon).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrafficReport {
    /// Time between samples.
    pub interval_ms: u64,
    /// By interface; an uplink sampled fewer than twice is not listed yet.
    pub uplinks: BTreeMap<String, UplinkTraffic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UplinkTraffic {
    /// Bytes per second received (download) over the last interval.
    pub rx_rate: u64,
    /// Bytes per second sent (upload) over the last interval.
    pub tx_rate: u64,
    /// The rates of the last minute, oldest first (at most [`HISTORY_LEN`]).
    pub rx_history: Vec<u64>,
    pub tx_history: Vec<u64>,
}

/// A rate for people, in bits per second as networks are sold ("9.4 Mbit/s").
pub fn human_rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec as f64 * 8.0;
    let units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let mut v = bits;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{} {}", bits as u64, units[0])
    } else if v < 10.0 {
        format!("{v:.1} {}", units[i])
    } else {
        format!("{v:.0} {}", units[i])
    }
}

/// A byte count for people ("1.2 GiB").
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(rx: u64, tx: u64) -> Counters {
        Counters {
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    #[test]
    fn rates_come_from_differences_over_the_elapsed_time() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        m.sample(t0, c(1000, 100));
        assert_eq!(m.current(), None, "one reading is no rate");
        m.sample(t0 + Duration::from_secs(1), c(1_251_000, 600));
        assert_eq!(
            m.current(),
            Some(Rate {
                rx: 1_250_000,
                tx: 500
            })
        );
        // Two seconds later: per second, not per interval.
        m.sample(t0 + Duration::from_secs(3), c(1_451_000, 600));
        assert_eq!(m.current(), Some(Rate { rx: 100_000, tx: 0 }));
        assert_eq!(m.history().count(), 2);
    }

    #[test]
    fn a_counter_reset_starts_afresh_and_history_is_a_minute() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        for i in 0..=100u64 {
            m.sample(t0 + Duration::from_secs(i), c(i * 10, i));
        }
        assert_eq!(m.history().count(), HISTORY_LEN);
        assert!(m.history().all(|r| r == Rate { rx: 10, tx: 1 }));
        // Recreated interface: counters from zero. No rate from that reading.
        m.sample(t0 + Duration::from_secs(101), c(5, 0));
        assert_eq!(m.current(), Some(Rate { rx: 10, tx: 1 }));
        m.sample(t0 + Duration::from_secs(102), c(25, 2));
        assert_eq!(m.current(), Some(Rate { rx: 20, tx: 2 }));
    }

    #[test]
    fn traffic_follows_the_uplinks_and_reports_sampled_ones() {
        let t0 = Instant::now();
        let mut t = Traffic::default();
        let read = |n: u64| {
            move |iface: &str| match iface {
                "eth0" => Some(c(n * 1000, n * 10)),
                "wlan0" => Some(c(n * 2000, 0)),
                _ => None,
            }
        };
        t.sample(["eth0", "wlan0"], t0, read(1));
        assert!(t.report().uplinks.is_empty(), "nothing sampled twice yet");
        t.sample(
            ["eth0", "wlan0", "gone0"],
            t0 + Duration::from_secs(1),
            read(2),
        );
        let r = t.report();
        assert_eq!(r.interval_ms, 1000);
        assert_eq!(r.uplinks["eth0"].rx_rate, 1000);
        assert_eq!(r.uplinks["eth0"].tx_rate, 10);
        assert_eq!(r.uplinks["wlan0"].rx_history, vec![2000]);
        assert!(!r.uplinks.contains_key("gone0"));
        // wlan0 leaves the uplinks: forgotten.
        t.sample(["eth0"], t0 + Duration::from_secs(2), read(3));
        assert!(t.meter("wlan0").is_none());
        assert_eq!(t.report().uplinks["eth0"].rx_history, vec![1000, 1000]);
    }

    #[test]
    fn counters_of_loopback_are_readable_and_odd_names_are_not() {
        assert!(read_counters("lo").is_some());
        assert_eq!(read_counters("../../../etc"), None);
        assert_eq!(read_counters(""), None);
        assert_eq!(read_counters("nonexistent-if0"), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_rate(0), "0 bit/s");
        assert_eq!(human_rate(100), "800 bit/s");
        assert_eq!(human_rate(1_175_000), "9.4 Mbit/s");
        assert_eq!(human_rate(2_500_000), "20 Mbit/s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_288_490_188), "1.2 GiB");
    }
}
