//! Per-interface IPv4 sysctls (`/proc/sys/net/ipv4/conf/IFACE/NAME`).

use std::collections::BTreeMap;

use tracing::warn;

/// `/proc/sys/net/ipv4/conf/IFACE/NAME`. A dot in an interface name (`eth0.100`) is
/// written as is: /proc uses the real name, only `sysctl(8)` swaps dots and slashes.
pub fn conf_path(iface: &str, name: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{iface}/{name}")
}

/// The current value of each path that can be read (a vanished interface's cannot).
pub fn read(paths: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    paths
        .into_iter()
        .filter_map(|p| {
            let v = std::fs::read_to_string(&p).ok()?;
            Some((p, v.trim().to_string()))
        })
        .collect()
}

/// Writes `value`; returns whether it was written. A failure is logged, not fatal: the
/// interface may have gone away since it was read.
pub fn write(path: &str, value: &str) -> bool {
    match std::fs::write(path, value) {
        Ok(()) => true,
        Err(e) => {
            warn!(path, value, error = %e, "cannot write sysctl");
            false
        }
    }
}

pub fn exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}
