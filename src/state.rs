//! The little we remember between runs, under /run (gone at reboot, like the kernel
//! state it describes): our namespace, uplink ids, and the original value of every
//! sysctl we changed so that `flush` can put it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::plan::Namespace;

pub const DEFAULT_RUN_DIR: &str = "/run/nm-multiwan";

/// `NM_MULTIWAN_RUN_DIR` overrides the default (tests run several sandboxes at once).
pub fn run_dir() -> PathBuf {
    std::env::var_os("NM_MULTIWAN_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The namespace our kernel objects were created in (to clean up after a change).
    pub namespace: Option<Namespace>,
    /// Last ids given to interfaces, to keep them when the kernel shows no trace.
    #[serde(default)]
    pub ids: BTreeMap<String, u32>,
    /// `/proc/sys/...` path -> value it had before we changed it.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Firewall tables that only exist because we created them.
    #[serde(default)]
    pub created_tables: std::collections::BTreeSet<String>,
    /// The same for IPv6's firewall tables.
    #[serde(default)]
    pub created_tables6: std::collections::BTreeSet<String>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// A missing or unreadable file is an empty state (with a warning when unreadable).
    pub fn load(dir: &Path) -> State {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "ignoring corrupt state file");
                State::default()
            }),
            Err(_) => State::default(),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = Self::path(dir);
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    }

    pub fn remove(dir: &Path) -> Result<()> {
        match std::fs::remove_file(Self::path(dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing state file", e))
            }
            _ => Ok(()),
        }
    }
}

/// Opens (creating it and `dir` if needed) a file used only for `flock`.
pub fn open_lock_file(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    Ok((path, file))
}

/// An exclusive lock on `DIR/lock`: parallel runs (dispatcher events, the daemon, a
/// user's `apply`) take turns. The kernel drops it if the holder dies.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(dir: &Path, timeout: std::time::Duration) -> Result<RunLock> {
        let (path, file) = open_lock_file(dir, "lock")?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(RunLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Other(format!(
                        "another nm-multiwan run holds {} for more than {:?}",
                        path.display(),
                        timeout
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("locking {}", path.display()), e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_lock_excludes() {
        let dir = std::env::temp_dir().join(format!("nmmw-state-{}", std::process::id()));
        let mut s = State::default();
        s.ids.insert("eth0".into(), 3);
        s.sysctls.insert("/proc/sys/x".into(), "0".into());
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir), s);
        let held = RunLock::acquire(&dir, std::time::Duration::from_secs(1)).unwrap();
        assert!(RunLock::acquire(&dir, std::time::Duration::from_millis(50)).is_err());
        drop(held);
        assert!(RunLock::acquire(&dir, std::time::Duration::from_millis(50)).is_ok());
        State::remove(&dir).unwrap();
        assert_eq!(State::load(&dir), State::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
