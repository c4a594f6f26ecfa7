//! The library's error type. Each variant says what failed and where, so that the
//! binary can print it as it is and scripts can branch on the exit code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NetworkManager over D-Bus: {0}")]
    NetworkManager(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A request refused before anything changed (what and why, in one sentence).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Exit codes: 2 for bad input (config, refused requests), 3 for NetworkManager
    /// unreachable, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::ConfigRead { .. } | Error::Refused(_) => 2,
            Error::NetworkManager(_) => 3,
            _ => 1,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
