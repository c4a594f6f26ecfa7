//! The daemon's verdicts, published under the run directory for the other runs of
//! nm-multiwan (dispatcher, `apply`), so that their reconciles reach the daemon's result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::plan::Verdicts;

// ---------------------------------------------------------------------------------
// Verdicts shared with other runs of nm-multiwan.

const HEALTH_FILE: &str = "health.json";
const DAEMON_LOCK: &str = "daemon.lock";

#[derive(Debug, Serialize, Deserialize)]
struct Published {
    pid: u32,
    verdicts: Verdicts,
}

/// Held by the running daemon for its whole life: at most one daemon per run
/// directory, and other runs (`apply`, the dispatcher) know whether its published
/// verdicts are live. The kernel drops it when the daemon dies.
pub struct DaemonLock {
    _file: std::fs::File,
    dir: PathBuf,
}

impl DaemonLock {
    pub fn acquire(dir: &Path) -> Result<DaemonLock> {
        let (path, file) = crate::state::open_lock_file(dir, DAEMON_LOCK)?;
        match file.try_lock() {
            Ok(()) => Ok(DaemonLock {
                _file: file,
                dir: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Other(format!(
                "another nm-multiwan daemon is running (it holds {})",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
    }

    /// Publishes the verdicts for `apply` and dispatcher runs (atomically replaced).
    pub fn publish(&self, verdicts: &Verdicts) -> Result<()> {
        let text = serde_json::to_string(&Published {
            pid: std::process::id(),
            verdicts: verdicts.clone(),
        })
        .expect("verdicts serialise");
        let tmp = self.dir.join("health.json.tmp");
        let path = self.dir.join(HEALTH_FILE);
        // Published before every reconcile: unchanged verdicts are not written again.
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(());
        }
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    }

    /// Removes the published verdicts (the daemon stops; they are no longer live).
    pub fn withdraw(&self) {
        let _ = std::fs::remove_file(self.dir.join(HEALTH_FILE));
    }
}

/// The verdicts a running daemon published, so that `apply` and the dispatcher reach
/// the same result as the daemon instead of putting a dead uplink back in the balance.
/// Empty when no daemon runs (every uplink then counts as healthy).
pub fn published_verdicts(dir: &Path) -> Verdicts {
    let Ok(file) = std::fs::File::open(dir.join(DAEMON_LOCK)) else {
        return Verdicts::new();
    };
    match file.try_lock_shared() {
        // Nobody holds it: no daemon, whatever a stale file says.
        Ok(()) => return Verdicts::new(),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return Verdicts::new(),
    }
    let path = dir.join(HEALTH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Published>(&text) {
            Ok(p) => p.verdicts,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring unreadable health verdicts");
                Verdicts::new()
            }
        },
        Err(_) => Verdicts::new(),
    }
}
