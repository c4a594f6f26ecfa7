//! Our cgroup v2 directories for `nm-multiwan run --via IFACE`: one per uplink,
//! `nm-multiwan/via-IFACE` under the cgroup2 root, which the firewall matches by the
//! socket's cgroup. A program moved into one, and every child it starts, goes through
//! that uplink; no LD_PRELOAD, so static binaries too.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::error::{Error, Result};
use crate::kernel::firewall::Cgroup;

/// Our directory under the cgroup2 root.
pub const OURS: &str = "nm-multiwan";
/// The prefix of a `run --via` directory's name.
const VIA: &str = "via-";

/// Where the cgroup2 file system is mounted (`/sys/fs/cgroup` on most systems,
/// `/sys/fs/cgroup/unified` in a hybrid hierarchy), from /proc/self/mountinfo.
/// Found once per process (the daemon reconciles for days; the cgroup2 mount does
/// not move); not finding it is asked again next time.
pub fn root() -> Option<PathBuf> {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Some(root.clone());
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let root = mount_point(&text)?;
    Some(ROOT.get_or_init(|| root).clone())
}

/// The mount point of the first cgroup2 mount of a mountinfo text.
pub fn mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2")
            .then(|| before.split_whitespace().nth(4).map(unescape))?
            .map(PathBuf::from)
    })
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&code, 8) {
                out.push(n as char);
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// The directory of `iface`, relative to the cgroup2 root.
pub fn relative(iface: &str) -> String {
    format!("{OURS}/{VIA}{iface}")
}

fn describe(dir: &Path) -> Option<Cgroup> {
    let meta = std::fs::metadata(dir).ok()?;
    let name = dir.file_name()?.to_str()?;
    Some(Cgroup {
        path: relative(name.strip_prefix(VIA)?),
        id: meta.ino(),
        level: 2,
    })
}

/// The `run --via` directories that exist now: (interface, cgroup). Empty without a
/// cgroup2 file system.
pub fn existing() -> Vec<(String, Cgroup)> {
    let Some(root) = root() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(root.join(OURS)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Cgroup)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let iface = name.strip_prefix(VIA)?.to_string();
            Some((iface, describe(&e.path())?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Removes the `run --via` directories no process is in any more (the kernel refuses
/// to remove one that is in use, which is how we tell). Best effort.
pub fn remove_unused() {
    let Some(root) = root() else { return };
    let Ok(entries) = std::fs::read_dir(root.join(OURS)) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(VIA))
            && std::fs::remove_dir(e.path()).is_ok()
        {
            debug!(dir = %e.path().display(), "removed an unused run --via cgroup");
        }
    }
}

/// Creates (if needed) the directory of `iface` and moves the calling process into
/// it; returns it. Its children inherit it.
pub fn enter(iface: &str) -> Result<Cgroup> {
    let root = root().ok_or_else(|| {
        Error::Refused(
            "run --via needs the cgroup v2 file system (cgroup2), and none is mounted".into(),
        )
    })?;
    let dir = root.join(relative(iface));
    let io_err = |what: &str, e: io::Error| Error::io(format!("{what} {}", dir.display()), e);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", e))?;
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| io_err("moving this process into", e))?;
    describe(&dir).ok_or_else(|| Error::Other(format!("cannot read {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_point(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(mount_point(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(mount_point("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(relative("eth0"), "nm-multiwan/via-eth0");
    }
}
