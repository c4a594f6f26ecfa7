//! Per-interface IPv4 sysctls (`/proc/sys/net/ipv4/conf/IFACE/NAME`).

use std::collections::BTreeMap;

use tracing::warn;

/// `/proc/sys/net/ipv4/conf/IFACE/NAME`. A dot in an interface name (`eth0.100`) is
/// written as is: /proc uses the real name, only `sysctl(8)` swaps dots and slashes.
pub fn conf_path(iface: &str, name: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{iface}/{name}")
}

/// The current value of each path that can be read (a vanished interface's cannot),
/// each path read once.
pub fn read(paths: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    let paths: std::collections::BTreeSet<String> = paths.into_iter().collect();
    paths
        .into_iter()
        .filter_map(|p| {
            let v = read_one(&p)?;
            Some((p, v))
        })
        .collect()
}

/// One small /proc value: one open and one read (a sysctl file answers in one read
/// and has no size to ask for).
fn read_one(path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut buf = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
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
