//! The little we remember between runs, under /run (gone at reboot, like the kernel
//! state it describes): our namespace, uplink ids, and the original value of every
//! sysctl we changed so that `flush` can put it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::kernel::firewall::Backend;
use crate::model::Uplink;
use crate::namespace::Namespace;
use crate::plan::KnownIds;

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
    /// Ids given to uplinks, by connection UUID and interface, departed ones included.
    #[serde(default)]
    pub ids: KnownIds,
    /// The uplinks of the last plan applied, as NetworkManager described them: while
    /// NetworkManager starts up or re-assumes a device, an uplink whose device still
    /// holds its address and default route keeps these facts.
    #[serde(default)]
    pub uplinks: Vec<Uplink>,
    /// `/proc/sys/...` path -> value it had before we changed it.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Firewall backends that may hold objects of ours (recorded before installing),
    /// so that a switch removes the other one's objects without probing it every run.
    /// `None` (a state from before backends could be chosen): every backend is checked.
    #[serde(default)]
    pub firewall: Option<std::collections::BTreeSet<Backend>>,
    /// Containers a backend created that flush removes once empty (iptables-nft's
    /// tables, e.g. "ip mangle").
    #[serde(default)]
    pub created: std::collections::BTreeSet<String>,
    /// Departed uplink addresses we keep on our dummy interface for the connections
    /// still using them.
    #[serde(default)]
    pub kept: std::collections::BTreeSet<std::net::IpAddr>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// A missing or unreadable file is an empty state (with a warning when unreadable).
    pub fn load(dir: &Path) -> State {
        // The daemon loads the state before every reconcile, and a run that changes it
        // writes a new file (aside, then renamed): while the file is the same one, the
        // last parse stands.
        let path = Self::path(dir);
        let key = FileKey::of(&path);
        if let Some(state) = LAST.lock().expect("state cache lock").get(&key) {
            return state.clone();
        }
        let state = match std::fs::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s)
                .map(migrate)
                .and_then(serde_json::from_value)
                .unwrap_or_else(|e| {
                    warn!(path = %path.display(), error = %e, "ignoring corrupt state file");
                    State::default()
                }),
            Err(_) => State::default(),
        };
        LAST.lock().expect("state cache lock").remember(key, &state);
        state
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        // A quiet reconcile writes nothing: the file still holds what was last read or
        // written, and that is this state.
        if LAST
            .lock()
            .expect("state cache lock")
            .get(&FileKey::of(&path))
            == Some(self)
        {
            return Ok(());
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(());
        }
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        LAST.lock()
            .expect("state cache lock")
            .remember(FileKey::of(&path), self);
        Ok(())
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

/// The state file last read or written by this process, and what it holds.
static LAST: std::sync::Mutex<LastState> = std::sync::Mutex::new(LastState(None));

struct LastState(Option<(FileKey, State)>);

impl LastState {
    /// The state the file holds, if it is still the file last read or written.
    fn get(&self, key: &Option<FileKey>) -> Option<&State> {
        match (&self.0, key) {
            (Some((last, state)), Some(key)) if last == key => Some(state),
            _ => None,
        }
    }

    fn remember(&mut self, key: Option<FileKey>, state: &State) {
        self.0 = key.map(|k| (k, state.clone()));
    }
}

/// Which file a path names and which version of it: path, device, inode, length and
/// modification time (a new state is written aside and renamed: a new inode).
#[derive(PartialEq, Eq)]
struct FileKey(PathBuf, u64, u64, u64, i64, i64);

impl FileKey {
    fn of(path: &Path) -> Option<FileKey> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(FileKey(
            path.to_path_buf(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
        ))
    }
}

/// A state file written by an earlier version, in today's shape: ids were a map from
/// interface to id, and the iptables tables we created were kept per family.
fn migrate(mut v: serde_json::Value) -> serde_json::Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if let Some(ids) = obj.get("ids")
        && ids
            .as_object()
            .is_some_and(|m| m.values().all(|x| x.is_u64()))
    {
        let by_iface = ids.clone();
        obj.insert("ids".into(), serde_json::json!({ "by_iface": by_iface }));
    }
    let mut created: Vec<serde_json::Value> = Vec::new();
    for (key, family) in [("created_tables", "ip"), ("created_tables6", "ip6")] {
        if let Some(serde_json::Value::Array(tables)) = obj.remove(key) {
            created.extend(
                tables
                    .iter()
                    .filter_map(|t| t.as_str())
                    .map(|t| format!("{family} {t}").into()),
            );
        }
    }
    if !created.is_empty() {
        obj.insert("created".into(), created.into());
    }
    v
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
        s.ids.by_uuid.insert("uuid-eth0".into(), 3);
        s.sysctls.insert("/proc/sys/x".into(), "0".into());
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir), s);
        // Saving it again writes nothing; once another writer changed the file, it does.
        let file = dir.join("state.json");
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&file);
        s.save(&dir).unwrap();
        assert_eq!(inode(&file), before, "an unchanged state is not written");
        std::fs::write(dir.join("other"), "{}").unwrap();
        std::fs::rename(dir.join("other"), &file).unwrap();
        assert_eq!(State::load(&dir), State::default());
        s.save(&dir).unwrap();
        assert_eq!(
            State::load(&dir),
            s,
            "written again over another writer's file"
        );
        let held = RunLock::acquire(&dir, std::time::Duration::from_secs(1)).unwrap();
        assert!(RunLock::acquire(&dir, std::time::Duration::from_millis(50)).is_err());
        drop(held);
        assert!(RunLock::acquire(&dir, std::time::Duration::from_millis(50)).is_ok());
        // A state file of the previous version still loads, ids and tables kept.
        std::fs::write(
            dir.join("state.json"),
            r#"{"namespace":null,"ids":{"eth0":3},"sysctls":{"/x":"0"},"created_tables":["mangle"],"created_tables6":["nat"]}"#,
        )
        .unwrap();
        let old = State::load(&dir);
        assert_eq!(old.ids.by_iface["eth0"], 3);
        assert_eq!(old.sysctls["/x"], "0");
        assert_eq!(
            old.created.iter().cloned().collect::<Vec<_>>(),
            ["ip mangle", "ip6 nat"]
        );
        State::remove(&dir).unwrap();
        assert_eq!(State::load(&dir), State::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
