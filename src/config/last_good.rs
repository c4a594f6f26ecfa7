//! The last configuration that loaded, kept under the run directory, so that a broken
//! file never stops nm-multiwan from following NetworkManager.
//!
//! Only the commands that put a configuration into the kernel (`apply`, `dispatch`,
//! the daemon) keep it: `status` and `plan` only read, so a `plan --config` of an
//! experiment never becomes the fallback, and a user who may not write under /run
//! still gets a status.

use std::path::{Path, PathBuf};

use tracing::{debug, error, warn};

use super::Config;
use crate::error::{Error, Result};

/// The file under the run directory holding the text of the last configuration that
/// loaded and was applied.
pub const LAST_GOOD_FILE: &str = "config.good.toml";

/// Where the configuration in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The config file (a missing file is the defaults, and loads fine).
    File(PathBuf),
    /// The config file failed; the last good configuration, kept at this path.
    LastGood(PathBuf),
    /// The config file failed and no configuration has loaded before (since boot):
    /// the built-in defaults.
    Defaults,
}

/// A configuration to work with, whatever state the file is in.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Why the config file is not in use (`None`: it is).
    pub error: Option<Error>,
    pub source: Source,
    /// The text that loaded, to keep as the last good one.
    text: Option<String>,
}

/// Loads `path`; when that fails, the last good configuration kept in `run_dir`, or
/// the defaults when there is none (or it no longer loads). Never fails: the error,
/// if any, is carried in [`Loaded::error`] for the caller to log and report.
pub fn load_or_last_good(path: &Path, run_dir: &Path) -> Loaded {
    let error = match Config::read(path) {
        Ok((config, text)) => {
            return Loaded {
                config,
                error: None,
                source: Source::File(path.to_path_buf()),
                text: Some(text),
            };
        }
        Err(e) => e,
    };
    let (config, source) = last_good_or_defaults(run_dir);
    Loaded {
        config,
        error: Some(error),
        source,
        text: None,
    }
}

/// The last good configuration kept in `run_dir`, or the defaults when there is none
/// (or it no longer loads), with where it came from.
pub fn last_good_or_defaults(run_dir: &Path) -> (Config, Source) {
    let good = run_dir.join(LAST_GOOD_FILE);
    let fallback = match std::fs::read_to_string(&good) {
        Ok(text) => match Config::parse(&text, &good) {
            Ok(config) => Some(config),
            Err(e) => {
                warn!("the last good configuration no longer loads, using the defaults: {e}");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!("cannot read {}, using the defaults: {e}", good.display());
            None
        }
    };
    match fallback {
        Some(config) => (config, Source::LastGood(good)),
        None => (Config::default(), Source::Defaults),
    }
}

impl Loaded {
    /// An error about `key` of this configuration, found later (against the facts),
    /// with the file, line and column of the key as the file holds it.
    pub fn invalid_key(&self, key: Vec<super::keys::Seg>, value: String, reason: String) -> Error {
        let (path, text) = match &self.source {
            Source::File(p) => (p.clone(), self.text.clone().unwrap_or_default()),
            Source::LastGood(p) => (p.clone(), std::fs::read_to_string(p).unwrap_or_default()),
            Source::Defaults => (PathBuf::from("(defaults)"), String::new()),
        };
        let invalid = super::errors::Invalid::new(key, value).because(reason);
        match toml::de::DeTable::parse(&text) {
            Ok(doc) => super::errors::Diagnose {
                path: &path,
                text: &text,
                doc: Some(doc.get_ref()),
            }
            .invalid(&invalid),
            Err(_) => super::errors::Diagnose {
                path: &path,
                text: &text,
                doc: None,
            }
            .invalid(&invalid),
        }
    }

    /// [`Error::UnknownUplinks`] as a config error naming the first such key; any
    /// other error as it is.
    pub fn locate(&self, e: Error) -> Error {
        match e {
            Error::UnknownUplinks(list) if !list.is_empty() => {
                use super::keys::Seg;
                let (i, j, name) = list[0].clone();
                self.invalid_key(
                    vec![
                        Seg::key("policy"),
                        Seg::Index(i),
                        Seg::key("uplinks"),
                        Seg::Index(j),
                    ],
                    format!("{name:?}"),
                    "neither a connection nor an interface NetworkManager knows; nothing was \
                     changed"
                        .into(),
                )
            }
            other => other,
        }
    }

    /// What is used instead of the broken file, in words.
    pub fn fallback(&self) -> String {
        match &self.source {
            Source::File(_) => "the config file".into(),
            Source::LastGood(p) => format!("the last good configuration ({})", p.display()),
            Source::Defaults => "the built-in defaults (no last good configuration is kept)".into(),
        }
    }

    /// Logs the error, if any, at ERROR level with what is used instead. Every run of
    /// a command that follows NetworkManager calls it, so a broken file is never
    /// silent for long.
    pub fn log_error(&self) {
        if let Some(e) = &self.error {
            error!(
                "{e}; keeping on with {} until the file is fixed",
                self.fallback()
            );
        }
    }

    /// Keeps this configuration as the last good one in `run_dir`, when it came from
    /// the file. Written to a temporary file and renamed (a crash never leaves half a
    /// file), and only when it changed.
    pub fn keep_as_last_good(&self, run_dir: &Path) -> Result<()> {
        let Some(text) = &self.text else {
            return Ok(());
        };
        let path = run_dir.join(LAST_GOOD_FILE);
        if std::fs::read_to_string(&path).is_ok_and(|kept| &kept == text) {
            return Ok(());
        }
        std::fs::create_dir_all(run_dir)
            .map_err(|e| Error::io(format!("creating {}", run_dir.display()), e))?;
        let tmp = run_dir.join(format!("{LAST_GOOD_FILE}.tmp"));
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        debug!(path = %path.display(), "kept as the last good configuration");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nm-multiwan-last-good-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_broken_file_falls_back_to_the_last_good_one() {
        let d = dir("fallback");
        let run = d.join("run");
        let file = d.join("config.toml");

        // Nothing kept yet: the defaults, with the error.
        std::fs::write(&file, "[uplinks.wired]\nwieght = 2\n").unwrap();
        let l = load_or_last_good(&file, &run);
        assert_eq!(l.source, Source::Defaults);
        assert_eq!(l.config, Config::default());
        let msg = l.error.as_ref().unwrap().to_string();
        assert!(
            msg.contains("config.toml:2:1: uplinks.wired.wieght"),
            "{msg}"
        );
        l.keep_as_last_good(&run).unwrap();
        assert!(
            !run.join(LAST_GOOD_FILE).exists(),
            "a fallback is never kept"
        );

        // A good file loads and is kept.
        std::fs::write(&file, "[uplinks.wired]\nweight = 2\n").unwrap();
        let l = load_or_last_good(&file, &run);
        assert!(l.error.is_none());
        assert_eq!(l.source, Source::File(file.clone()));
        assert_eq!(l.config.uplink("wired", "eth0").weight, 2);
        l.keep_as_last_good(&run).unwrap();

        // Broken again: the kept one is used.
        std::fs::write(&file, "rule_priority = 4294967295\n").unwrap();
        let l = load_or_last_good(&file, &run);
        assert_eq!(l.source, Source::LastGood(run.join(LAST_GOOD_FILE)));
        assert_eq!(l.config.uplink("wired", "eth0").weight, 2);
        assert!(l.error.unwrap().to_string().contains("rule_priority"));

        // A missing file is the defaults, and that is good too.
        std::fs::remove_file(&file).unwrap();
        let l = load_or_last_good(&file, &run);
        assert!(l.error.is_none());
        assert_eq!(l.config, Config::default());
        l.keep_as_last_good(&run).unwrap();
        std::fs::write(&file, "ipv6 = \"yes\"\n").unwrap();
        let l = load_or_last_good(&file, &run);
        assert_eq!(l.source, Source::LastGood(run.join(LAST_GOOD_FILE)));
        assert_eq!(l.config, Config::default());

        // A kept file that no longer loads (an older version's): the defaults.
        std::fs::write(run.join(LAST_GOOD_FILE), "colour = 1\n").unwrap();
        let l = load_or_last_good(&file, &run);
        assert_eq!(l.source, Source::Defaults);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unwritable_run_dir_only_fails_keeping() {
        let d = dir("unwritable");
        let file = d.join("config.toml");
        std::fs::write(&file, "table_base = 7000\n").unwrap();
        // A regular file where the run directory should be: cannot be created.
        let run = d.join("not-a-dir");
        std::fs::write(&run, "").unwrap();
        let l = load_or_last_good(&file, &run);
        assert_eq!(l.config.table_base, 7000);
        assert!(l.keep_as_last_good(&run).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
