use super::*;
use crate::config::{HealthConfig, Target};
use crate::model::Family;
use crate::plan::Verdict;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

fn thresholds(down_after: u32, up_after: u32, window: u32) -> Thresholds {
    Thresholds::from(&HealthConfig {
        down_after,
        up_after,
        window,
        ..HealthConfig::default()
    })
}

/// What becomes of one probe in [`Sim`].
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Answered after `ms`: before the next probe goes out when `ms` is below the
    /// interval, `ms / interval` probes later otherwise.
    Answer(u64),
    Lost,
}

use Fate::{Answer, Lost};

/// Probes one every `interval_ms`, in steps; answers and losses are delivered at the
/// start of the step they fall in, before that step's probe goes out, as the prober
/// reports them.
struct Sim {
    q: Quality,
    t: Thresholds,
    interval_ms: u64,
    wait_steps: u64,
    step: u64,
    due: BTreeMap<u64, Vec<ProbeEvent>>,
    /// (step, verdict) of every flip.
    flips: Vec<(u64, bool)>,
}

impl Sim {
    fn new(t: Thresholds, interval_ms: u64) -> Sim {
        let wait = answer_wait(&HealthConfig {
            interval_ms,
            ..HealthConfig::default()
        });
        let wait_steps = (wait.as_millis() as u64).div_ceil(interval_ms);
        Sim {
            q: Quality::default(),
            t: Thresholds {
                wait_probes: wait_steps,
                ..t
            },
            interval_ms,
            wait_steps,
            step: 0,
            due: BTreeMap::new(),
            flips: Vec::new(),
        }
    }

    fn feed(&mut self, e: ProbeEvent) {
        if let Some(v) = self.q.record(&e, &self.t) {
            self.flips.push((self.step, v));
        }
    }

    fn probe(&mut self, fate: Fate) {
        for e in self.due.remove(&self.step).unwrap_or_default() {
            self.feed(e);
        }
        let id = self.step;
        self.feed(ProbeEvent::Sent { id });
        let (at, event) = match fate {
            Answer(ms) => (
                id + 1 + ms / self.interval_ms,
                ProbeEvent::Answered {
                    id,
                    rtt: Duration::from_millis(ms),
                },
            ),
            Lost => (id + self.wait_steps, ProbeEvent::Lost { id, error: None }),
        };
        self.due.entry(at).or_default().push(event);
        self.step += 1;
    }

    fn run(&mut self, n: u64, fate: impl Fn(u64) -> Fate) {
        for _ in 0..n {
            let f = fate(self.step);
            self.probe(f);
        }
    }
}

#[test]
fn dead_after_down_after_unanswered_probes_and_back_after_up_after() {
    let mut s = Sim::new(thresholds(3, 4, 100), 250);
    s.run(10, |_| Answer(20));
    assert!(s.q.healthy && s.flips.is_empty());
    // From probe 10 on nothing answers: probes 10, 11 and 12 have each had an
    // interval when probe 13 goes out.
    s.run(10, |_| Lost);
    assert_eq!(s.flips, [(13, false)]);
    // (By now more probes went unanswered.)
    assert_eq!(s.q.reason, Some(Reason::Dead { unanswered: 9 }));
    // Back: four answers in a row; the outage does not count as loss.
    s.run(3, |_| Answer(20));
    assert!(!s.q.healthy);
    assert!(matches!(s.q.reason, Some(Reason::Recovering { .. })));
    s.run(1, |_| Answer(20));
    // The fourth answer arrives at the start of the next step.
    s.run(1, |_| Answer(20));
    assert_eq!(s.flips, [(13, false), (24, true)]);
    s.run(200, |_| Answer(20));
    assert_eq!(s.q.stats(&s.t).loss, Some(0.0), "the outage is not loss");
    assert_eq!(s.flips.len(), 2);
}

#[test]
fn one_answer_breaks_a_run_of_losses() {
    let t = Thresholds {
        max_loss: 100.0,
        ..thresholds(3, 4, 100)
    };
    let mut s = Sim::new(t, 250);
    // Two lost, one answered: never three in a row, so never dead.
    for round in 0..50 {
        s.run(2, |_| Lost);
        s.run(1, |_| Answer(10));
        assert!(s.flips.is_empty(), "round {round}");
    }
    // Two thirds lost is another matter, which the window tells (here with the loss
    // limit off).
    let loss = s.q.stats(&s.t).loss.unwrap();
    assert!((60.0..70.0).contains(&loss), "{loss}");
    // Three in a row is dead.
    s.run(3, |_| Lost);
    s.run(1, |_| Answer(10));
    assert_eq!(s.flips.len(), 1);
}

#[test]
fn a_slow_path_is_slow_not_dead() {
    // 600 ms round trips at 250 ms: answers arrive two probes late, always.
    let mut s = Sim::new(thresholds(5, 12, 40), 250);
    s.run(400, |_| Answer(600));
    assert!(s.flips.is_empty(), "{:?}", s.flips);
    assert_eq!(s.q.stats(&s.t).median_rtt, Some(Duration::from_millis(600)));
    // 1500 ms: over max_rtt_ms (1000); answers keep coming, so the verdict is slow.
    let mut s = Sim::new(thresholds(8, 12, 40), 250);
    s.run(100, |_| Answer(20));
    s.run(100, |_| Answer(1500));
    assert_eq!(s.flips.len(), 1);
    let Some(Reason::Slow { median, .. }) = s.q.reason else {
        panic!("{:?}", s.q.reason)
    };
    assert_eq!(median, Duration::from_millis(1500));
    // Back once the median is at half the limit or below.
    s.run(100, |_| Answer(20));
    assert_eq!(
        s.flips.iter().map(|f| f.1).collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn a_sudden_long_silence_is_dead_even_when_answers_come_late() {
    // Going from 20 ms to 2 s at once: nothing answers for 2 s, which is dead at
    // these settings; it stays out because it is slow, then returns when fast.
    let mut s = Sim::new(thresholds(5, 12, 40), 250);
    s.run(40, |_| Answer(20));
    s.run(100, |_| Answer(1900));
    assert_eq!(s.flips.len(), 1);
    assert!(
        matches!(s.q.reason, Some(Reason::Slow { .. })),
        "{:?}",
        s.q.reason
    );
    s.run(100, |_| Answer(20));
    assert_eq!(s.flips.len(), 2);
    assert!(s.q.healthy);
}

#[test]
fn loss_over_the_window_takes_it_out_and_half_brings_it_back() {
    let mut s = Sim::new(thresholds(50, 12, 20), 100);
    s.run(60, |_| Answer(5));
    // 2 of every 5 lost: 40 %.
    s.run(40, |i| if i % 5 < 2 { Lost } else { Answer(5) });
    assert_eq!(s.flips.len(), 1);
    assert!(
        matches!(s.q.reason, Some(Reason::Loss { .. })),
        "{:?}",
        s.q.reason
    );
    // 15 % is below the limit but not below half of it: stays out.
    s.run(100, |i| if i % 20 < 3 { Lost } else { Answer(5) });
    assert_eq!(s.flips.len(), 1, "no flapping at 15 %");
    s.run(60, |_| Answer(5));
    assert_eq!(s.flips.len(), 2);
    assert!(s.q.healthy);
}

#[test]
fn loss_is_judged_once_half_the_window_is_known() {
    let mut s = Sim::new(thresholds(50, 12, 40), 100);
    // The first probes of a new uplink, all lost but one in two: not judged before 20
    // probes have a fate.
    s.run(20, |i| if i % 2 == 0 { Lost } else { Answer(5) });
    assert!(s.flips.is_empty());
    assert_eq!(s.q.stats(&s.t).loss, None);
    s.run(40, |i| if i % 2 == 0 { Lost } else { Answer(5) });
    assert_eq!(s.flips.len(), 1);
}

/// A small deterministic generator (xorshift64*), so that the statistics below are
/// the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The defaults' promise in numbers: 3 % of packets lost each way (5.9 % of probes)
/// and 0-50 ms of jitter raise no verdict over ten minutes of three uplinks (the
/// bench measures the same in the sandbox), while a path that dies is out within
/// (down_after + 1) intervals.
#[test]
fn defaults_ride_out_random_loss_and_catch_a_dead_path() {
    let config = HealthConfig::default();
    let t = Thresholds::from(&config);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let probes = 10 * 60 * 1000 / config.interval_ms;
    for _uplink in 0..3 {
        let mut s = Sim::new(t, config.interval_ms);
        for _ in 0..probes {
            let lost = rng.below(100) < 3 || rng.below(100) < 3;
            let fate = if lost {
                Lost
            } else {
                Answer(5 + rng.below(51))
            };
            s.probe(fate);
        }
        assert!(s.flips.is_empty(), "false verdicts: {:?}", s.flips);
        s.run(40, |_| Lost);
        let (at, v) = s.flips[0];
        assert!(!v);
        let ms = (at - probes) * config.interval_ms;
        assert!(
            ms <= u64::from(config.down_after + 1) * config.interval_ms,
            "dead after {ms} ms"
        );
    }
}

#[test]
fn board_keeps_families_apart() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let later = now + Duration::from_secs(5);
    let t = thresholds(2, 2, 100);
    let a4: IpAddr = "10.0.1.2".parse().unwrap();
    let a6: IpAddr = "2001:db8:1::2".parse().unwrap();
    let mut b = Board::default();
    assert!(b.track("eth0", Family::V4, a4, 0x100, now));
    assert!(b.track("eth0", Family::V6, a6, 0x100, now));
    assert!(!b.track("eth0", Family::V4, a4, 0x100, now));
    assert_eq!(b.verdicts()["eth0"], Verdict::HEALTHY);
    // Unknown interfaces and families are ignored.
    let sent = |id| ProbeEvent::Sent { id };
    assert_eq!(b.record("wlan0", Family::V4, &sent(0), &t, now), None);
    let mut flip = None;
    for id in 0..4 {
        flip = flip.or(b.record("eth0", Family::V6, &sent(id), &t, later));
    }
    let flip = flip.expect("IPv6 dead");
    assert_eq!((flip.family, flip.healthy), (Family::V6, false));
    assert!(!flip.worked, "never answered");
    assert!(matches!(flip.reason, Some(Reason::Dead { unanswered: 2 })));
    assert_eq!(
        b.verdicts()["eth0"],
        Verdict {
            ipv4: true,
            ipv6: false
        }
    );
    let h = b.get("eth0").unwrap();
    assert_eq!(h.last_change, later);
    let r = b.report(&HealthConfig::default());
    let u = &r.uplinks["eth0"];
    assert!(!u.healthy && !u.probes_healthy);
    assert!(u.families[&Family::V4].healthy && !u.families[&Family::V6].healthy);
    assert_eq!(u.consecutive_failures, 4);
    assert_eq!(u.times_out, 1);
    assert_eq!(u.last_change, 1005.0);
    assert!(
        u.reason.as_deref().unwrap().starts_with("IPv6: dead"),
        "{u:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["uplinks"]["eth0"]["families"]["ipv6"]["healthy"],
        false
    );
    // A new address is another network: that family starts afresh, healthy.
    assert!(b.track(
        "eth0",
        Family::V6,
        "2001:db8:9::2".parse().unwrap(),
        0x100,
        later
    ));
    assert!(b.verdicts()["eth0"].ipv6);
    // No targets of a family: not probed there, healthy there.
    b.untrack("eth0", Family::V6);
    assert_eq!(b.get("eth0").unwrap().families.len(), 1);
    // Another mark is another uplink.
    assert!(b.track("eth0", Family::V4, a4, 0x200, later));
    b.retain(|i| i != "eth0");
    assert!(b.verdicts().is_empty());
}

#[test]
fn nm_connectivity_overrides_probes_in_both_families() {
    let now = SystemTime::UNIX_EPOCH;
    let t = thresholds(3, 2, 100);
    let mut b = Board::default();
    b.track("wlan0", Family::V4, "10.0.2.2".parse().unwrap(), 0x200, now);
    let ok = [
        ProbeEvent::Sent { id: 0 },
        ProbeEvent::Answered {
            id: 0,
            rtt: Duration::from_millis(5),
        },
    ];
    for e in &ok {
        assert_eq!(b.record("wlan0", Family::V4, e, &t, now), None);
    }
    let flips = b.set_nm_connectivity("wlan0", Some(nm_connectivity::LIMITED), now);
    assert_eq!(flips.len(), 2, "both families: {flips:?}");
    assert!(flips.iter().all(|f| !f.healthy));
    assert!(matches!(
        flips[0].reason,
        Some(Reason::NetworkManager { connectivity: 3 })
    ));
    assert!(
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now)
            .is_empty()
    );
    // Probes stay healthy underneath; the verdict follows NetworkManager back.
    assert!(
        b.get("wlan0").unwrap().families[&Family::V4]
            .quality
            .healthy
    );
    assert_eq!(
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::PORTAL), now)
            .len(),
        2
    );
    assert!(b.set_nm_connectivity("wlan0", None, now).is_empty());
    // NetworkManager's verdict survives a restart of the probes.
    b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now);
    b.track("wlan0", Family::V4, "10.0.3.2".parse().unwrap(), 0x200, now);
    assert_eq!(b.verdicts()["wlan0"], Verdict::from(false));
}

#[test]
fn targets_parse() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        "1.1.1.1".parse::<Target>().unwrap(),
        Target::Icmp(ip("1.1.1.1"))
    );
    assert_eq!(
        "icmp:9.9.9.9".parse::<Target>().unwrap(),
        Target::Icmp(ip("9.9.9.9"))
    );
    let v6: Target = "2620:fe::fe".parse().unwrap();
    assert_eq!(v6, Target::Icmp(ip("2620:fe::fe")));
    assert_eq!(v6.family(), Family::V6);
    assert_eq!(
        "tcp:198.51.100.10:7000".parse::<Target>().unwrap(),
        Target::Tcp("198.51.100.10:7000".parse().unwrap())
    );
    let t6: Target = "tcp:[2001:db8::1]:443".parse().unwrap();
    assert_eq!(t6.family(), Family::V6);
    assert_eq!(t6.to_string(), "tcp:[2001:db8::1]:443");
    for bad in [
        "nope",
        "tcp:1.2.3.4",
        "tcp:2001:db8::1:443",
        "udp:1.2.3.4:53",
        "0.0.0.0",
        "ff02::1",
        "",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

#[test]
fn answers_are_waited_for_twice_max_rtt() {
    let c = |interval_ms, max_rtt_ms| HealthConfig {
        interval_ms,
        max_rtt_ms,
        ..HealthConfig::default()
    };
    assert_eq!(answer_wait(&c(250, 1000)), Duration::from_secs(2));
    assert_eq!(answer_wait(&c(5000, 1000)), Duration::from_secs(10));
    assert_eq!(answer_wait(&c(50, 10)), Duration::from_millis(100));
}

#[test]
fn echo_packets_round_trip() {
    let req = echo_request(0x1234, 7);
    assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
    // The reply as the kernel delivers it: IPv4 header + ICMP type 0.
    let mut reply = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 10, 10, 0, 1, 2,
    ];
    let mut icmp = req.clone();
    icmp[0] = 0;
    reply.extend_from_slice(&icmp);
    let from: IpAddr = Ipv4Addr::new(198, 51, 100, 10).into();
    assert_eq!(echo_reply(&reply), Some((from, 0x1234, 7)));
    assert_eq!(echo_reply(&reply[..24]), None);
    // Our own request looped back is not an answer.
    let mut looped = reply.clone();
    looped[20] = 8;
    assert_eq!(echo_reply(&looped), None);
    // ICMPv6: no IP header, the source comes with the packet.
    let req6 = echo_request6(0x4321, 9);
    assert_eq!(req6[0], 128);
    let mut reply6 = req6.clone();
    reply6[0] = 129;
    let from6: IpAddr = "2001:db8:100::10".parse().unwrap();
    assert_eq!(echo_reply6(&reply6, from6), Some((from6, 0x4321, 9)));
    assert_eq!(echo_reply6(&req6, from6), None, "a request is no reply");
}

#[test]
fn published_verdicts_need_a_live_daemon() {
    let dir = std::env::temp_dir().join(format!("nmmw-health-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(published_verdicts(&dir).is_empty());
    let lock = DaemonLock::acquire(&dir).unwrap();
    assert!(DaemonLock::acquire(&dir).is_err(), "one daemon per run dir");
    let v = BTreeMap::from([
        (
            "eth0".to_string(),
            Verdict {
                ipv4: false,
                ipv6: true,
            },
        ),
        ("wlan0".to_string(), Verdict::HEALTHY),
    ]);
    lock.publish(&v).unwrap();
    assert_eq!(published_verdicts(&dir), v);
    // What a daemon of an earlier version wrote: one boolean per uplink.
    std::fs::write(
        dir.join("health.json"),
        r#"{"pid": 1, "verdicts": {"eth0": false}}"#,
    )
    .unwrap();
    assert_eq!(published_verdicts(&dir)["eth0"], Verdict::from(false));
    drop(lock);
    // The file is still there, but nobody holds the lock: not live.
    assert!(published_verdicts(&dir).is_empty());
    let lock = DaemonLock::acquire(&dir).unwrap();
    lock.withdraw();
    assert!(published_verdicts(&dir).is_empty());
    drop(lock);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn only_a_path_that_worked_is_worth_a_reset() {
    let now = SystemTime::UNIX_EPOCH;
    let t = thresholds(2, 2, 100);
    let mut b = Board::default();
    b.track("eth0", Family::V4, "10.0.1.2".parse().unwrap(), 0x100, now);
    let rtt = Duration::from_millis(5);
    b.record("eth0", Family::V4, &ProbeEvent::Sent { id: 0 }, &t, now);
    b.record(
        "eth0",
        Family::V4,
        &ProbeEvent::Answered { id: 0, rtt },
        &t,
        now,
    );
    let flip = (1..5)
        .find_map(|id| b.record("eth0", Family::V4, &ProbeEvent::Sent { id }, &t, now))
        .expect("dead");
    assert!(!flip.healthy && flip.worked);
    // A prober that replaces this one goes on from the next id.
    assert_eq!(b.next_id("eth0", Family::V4), 4);
    assert_eq!(b.next_id("eth0", Family::V6), 0);
}
