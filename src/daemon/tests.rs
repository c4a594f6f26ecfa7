use super::service::authorize_reload;
use super::signals::nm_signal_reason;
use super::*;
use std::collections::HashMap;
use zbus::zvariant::Value;

#[test]
fn only_root_may_reload() {
    assert!(authorize_reload(0).is_ok());
    for uid in [1, 65534, 1000] {
        assert!(matches!(
            authorize_reload(uid),
            Err(zbus::fdo::Error::AccessDenied(_))
        ));
    }
}

#[test]
fn bursts_coalesce_into_one_reconcile_at_the_earliest_time() {
    let t = Instant::now();
    let mut p = None;
    coalesce(&mut p, t + NM_DEBOUNCE, "a".into());
    // A burst of signals keeps the first deadline: never postponed.
    for i in 0..20 {
        coalesce(
            &mut p,
            t + NM_DEBOUNCE + Duration::from_millis(i * 10),
            "a".into(),
        );
    }
    assert_eq!(p.as_ref().unwrap().at, t + NM_DEBOUNCE);
    assert_eq!(p.as_ref().unwrap().reasons, vec!["a".to_string()]);
    // A health verdict goes at once and joins the same reconcile.
    coalesce(&mut p, t, "health".into());
    let p = p.unwrap();
    assert_eq!(p.at, t);
    assert_eq!(p.reasons, vec!["a".to_string(), "health".to_string()]);
    let mut q = None;
    for i in 0..20 {
        coalesce(&mut q, t, format!("r{i}"));
    }
    assert_eq!(
        q.unwrap().reasons.len(),
        8,
        "the log keeps a few reasons only"
    );
}

#[test]
fn retries_back_off() {
    let d: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
}

fn signal(path: &str, iface: &str, member: &str) -> zbus::Message {
    zbus::Message::signal(path, iface, member)
        .unwrap()
        .sender(":1.7")
        .unwrap()
        .build(&())
        .unwrap()
}

fn props_changed(path: &str, of: &str, keys: &[&str]) -> zbus::Message {
    let changed: HashMap<&str, Value<'_>> = keys.iter().map(|k| (*k, Value::from(1u32))).collect();
    zbus::Message::signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged")
        .unwrap()
        .build(&(of, changed, Vec::<String>::new()))
        .unwrap()
}

#[test]
fn relevant_signals_are_picked() {
    let dev = "/org/freedesktop/NetworkManager/Devices/3";
    assert_eq!(
        nm_signal_reason(&signal(
            dev,
            "org.freedesktop.NetworkManager.Device",
            "StateChanged"
        ))
        .as_deref(),
        Some("/Devices/3 StateChanged")
    );
    assert!(
        nm_signal_reason(&signal(
            NM_PATH,
            "org.freedesktop.NetworkManager",
            "DeviceAdded"
        ))
        .as_deref()
            == Some("NetworkManager DeviceAdded")
    );
    assert_eq!(
        nm_signal_reason(&props_changed(
            dev,
            "org.freedesktop.NetworkManager.Device",
            &["State", "Ip4Connectivity"]
        ))
        .as_deref(),
        Some("/Devices/3 Ip4Connectivity,State")
    );
    // Wi-Fi scans and statistics cannot change the uplinks.
    assert!(
        nm_signal_reason(&props_changed(
            "/org/freedesktop/NetworkManager/AccessPoint/7",
            "org.freedesktop.NetworkManager.AccessPoint",
            &["Strength"]
        ))
        .is_none()
    );
    assert!(
        nm_signal_reason(&props_changed(
            dev,
            "org.freedesktop.NetworkManager.Device.Statistics",
            &["RxBytes"]
        ))
        .is_none()
    );
    assert!(
        nm_signal_reason(&signal(
            NM_PATH,
            "org.freedesktop.NetworkManager",
            "CheckPermissions"
        ))
        .is_none()
    );
}
