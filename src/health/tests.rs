use super::*;
use crate::config::{HealthConfig, Target};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

const T: Thresholds = Thresholds {
    down_after: 3,
    up_after: 2,
};

fn ok() -> RoundOutcome {
    RoundOutcome {
        success: true,
        rtt: Some(Duration::from_millis(5)),
        error: None,
    }
}

fn lost() -> RoundOutcome {
    RoundOutcome {
        success: false,
        rtt: None,
        error: None,
    }
}

#[test]
fn hysteresis_needs_consecutive_results() {
    let mut h = Hysteresis::default();
    assert!(h.healthy);
    // Two failures, a success: the run of failures starts over.
    assert_eq!(h.record(false, T), None);
    assert_eq!(h.record(false, T), None);
    assert_eq!(h.record(true, T), None);
    assert_eq!(h.record(false, T), None);
    assert_eq!(h.record(false, T), None);
    assert_eq!(h.record(false, T), Some(false));
    assert!(!h.healthy);
    assert_eq!(h.failures, 3);
    // More failures change nothing.
    assert_eq!(h.record(false, T), None);
    // One success then a failure: not back yet.
    assert_eq!(h.record(true, T), None);
    assert_eq!(h.record(false, T), None);
    assert_eq!(h.record(true, T), None);
    assert_eq!(h.record(true, T), Some(true));
    assert_eq!(h.successes, 2);
    assert_eq!(h.record(true, T), None);
}

#[test]
fn thresholds_of_one_flip_at_once() {
    let t = Thresholds {
        down_after: 1,
        up_after: 1,
    };
    let mut h = Hysteresis::default();
    assert_eq!(h.record(false, t), Some(false));
    assert_eq!(h.record(true, t), Some(true));
}

#[test]
fn board_tracks_resets_and_reports() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let later = now + Duration::from_secs(5);
    let a = Ipv4Addr::new(10, 0, 1, 2);
    let mut b = Board::default();
    assert!(b.track("eth0", a, 0x100, now));
    assert!(!b.track("eth0", a, 0x100, now));
    assert_eq!(b.verdicts(), BTreeMap::from([("eth0".to_string(), true)]));
    // Unknown interfaces are ignored.
    assert_eq!(b.record("wlan0", &lost(), T, now), None);
    assert_eq!(b.record("eth0", &lost(), T, now), None);
    assert_eq!(b.record("eth0", &lost(), T, now), None);
    assert_eq!(b.record("eth0", &lost(), T, later), Some(false));
    let h = b.get("eth0").unwrap();
    assert_eq!((h.rounds, h.rounds_failed), (3, 3));
    assert_eq!(h.last_change, later);
    let r = b.report(&HealthConfig::default());
    assert!(!r.uplinks["eth0"].healthy);
    assert_eq!(r.uplinks["eth0"].consecutive_failures, 3);
    assert_eq!(r.uplinks["eth0"].last_change, 1005.0);
    // A new address is another network: start afresh, healthy.
    assert!(b.track("eth0", Ipv4Addr::new(10, 0, 9, 2), 0x100, later));
    assert!(b.verdicts()["eth0"]);
    b.retain(|i| i != "eth0");
    assert!(b.verdicts().is_empty());
}

#[test]
fn nm_connectivity_overrides_probes() {
    let now = SystemTime::UNIX_EPOCH;
    let mut b = Board::default();
    b.track("wlan0", Ipv4Addr::new(10, 0, 2, 2), 0x200, now);
    assert_eq!(b.record("wlan0", &ok(), T, now), None);
    assert_eq!(
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::LIMITED), now),
        Some(false)
    );
    assert_eq!(
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now),
        None
    );
    // Probes stay healthy underneath; the verdict follows NetworkManager back.
    assert!(b.get("wlan0").unwrap().probes.healthy);
    assert_eq!(
        b.set_nm_connectivity("wlan0", Some(nm_connectivity::PORTAL), now),
        Some(true)
    );
    assert_eq!(b.set_nm_connectivity("wlan0", None, now), None);
    // The NetworkManager verdict survives a reset of the probes.
    b.set_nm_connectivity("wlan0", Some(nm_connectivity::NONE), now);
    b.track("wlan0", Ipv4Addr::new(10, 0, 3, 2), 0x200, now);
    assert!(!b.verdicts()["wlan0"]);
}

#[test]
fn targets_parse() {
    assert_eq!(
        "1.1.1.1".parse::<Target>().unwrap(),
        Target::Icmp(Ipv4Addr::new(1, 1, 1, 1))
    );
    assert_eq!(
        "icmp:9.9.9.9".parse::<Target>().unwrap(),
        Target::Icmp(Ipv4Addr::new(9, 9, 9, 9))
    );
    assert_eq!(
        "tcp:198.51.100.10:7000".parse::<Target>().unwrap(),
        Target::Tcp("198.51.100.10:7000".parse().unwrap())
    );
    assert_eq!(
        Target::Tcp("198.51.100.10:7000".parse().unwrap()).to_string(),
        "tcp:198.51.100.10:7000"
    );
    for bad in [
        "nope",
        "::1",
        "tcp:1.2.3.4",
        "tcp:[::1]:80",
        "udp:1.2.3.4:53",
        "",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

#[test]
fn timeout_is_shorter_than_interval() {
    assert_eq!(
        round_timeout(Duration::from_millis(500)),
        Duration::from_millis(400)
    );
    assert_eq!(
        round_timeout(Duration::from_millis(50)),
        Duration::from_millis(40)
    );
    assert_eq!(
        round_timeout(Duration::from_secs(60)),
        Duration::from_secs(3)
    );
}

#[test]
fn echo_packets_round_trip() {
    let req = echo_request(0x1234, 7);
    assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
    // Build the reply as the kernel would deliver it: IPv4 header + ICMP type 0.
    let mut reply = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 10, 10, 0, 1, 2,
    ];
    let mut icmp = req.clone();
    icmp[0] = 0;
    reply.extend_from_slice(&icmp);
    let from = [Ipv4Addr::new(198, 51, 100, 10)];
    assert!(is_echo_reply(&reply, 0x1234, 7, &from));
    assert!(!is_echo_reply(&reply, 0x1234, 8, &from));
    assert!(!is_echo_reply(&reply, 0x4321, 7, &from));
    assert!(!is_echo_reply(
        &reply,
        0x1234,
        7,
        &[Ipv4Addr::new(192, 0, 2, 1)]
    ));
    assert!(!is_echo_reply(&reply[..24], 0x1234, 7, &from));
    // Our own request looped back is not an answer.
    let mut looped = reply.clone();
    looped[20] = 8;
    assert!(!is_echo_reply(&looped, 0x1234, 7, &from));
}

#[test]
fn published_verdicts_need_a_live_daemon() {
    let dir = std::env::temp_dir().join(format!("nmmw-health-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(published_verdicts(&dir).is_empty());
    let lock = DaemonLock::acquire(&dir).unwrap();
    assert!(DaemonLock::acquire(&dir).is_err(), "one daemon per run dir");
    let v = BTreeMap::from([("eth0".to_string(), false), ("wlan0".to_string(), true)]);
    lock.publish(&v).unwrap();
    assert_eq!(published_verdicts(&dir), v);
    drop(lock);
    // The file is still there, but nobody holds the lock: not live.
    assert!(published_verdicts(&dir).is_empty());
    let lock = DaemonLock::acquire(&dir).unwrap();
    lock.withdraw();
    assert!(published_verdicts(&dir).is_empty());
    drop(lock);
    std::fs::remove_dir_all(&dir).unwrap();
}
