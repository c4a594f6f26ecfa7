//! The library's error type. Each variant says what failed and where, so that the
//! binary can print it as it is and scripts can branch on the exit code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `line` and `column` count from 1 (0: no position); `key` is the dotted key the
    /// error is about (`uplinks.wired.weight`), when there is one.
    #[error("{}:{line}:{column}: {}{reason}", path.display(), key.as_ref().map_or_else(String::new, |k| format!("{k}: ")))]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        reason: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NetworkManager over D-Bus: {0}")]
    NetworkManager(String),
    /// A D-Bus bus other than NetworkManager's side of it (the session bus), out of
    /// reach.
    #[error("{0}")]
    Bus(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("firewall: {0}")]
    Firewall(String),
    /// A kernel interface of ours failed (conntrack, the address keeper, ...): what we
    /// were doing, and the module's own error with its cause.
    #[error("{what}: {source}")]
    Kernel {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("nm-multiwan {command} needs root (CAP_NET_ADMIN): run with sudo")]
    NeedsRoot { command: String },
    /// Policies name uplinks NetworkManager does not know: (policy index, position in
    /// its `uplinks`, name). Nothing was changed.
    #[error("{}", unknown_uplinks(.0))]
    UnknownUplinks(Vec<(usize, usize, String)>),
    /// A request refused before anything changed (what and why, in one sentence).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Exit codes: 2 for bad input (config, refused requests), 3 for NetworkManager
    /// (or a bus) unreachable, 4 for a command that needs `CAP_NET_ADMIN` run without it, 1
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::ConfigRead { .. }
            | Error::Refused(_)
            | Error::UnknownUplinks(_) => 2,
            Error::NetworkManager(_) | Error::Bus(_) => 3,
            Error::NeedsRoot { .. } => 4,
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

fn unknown_uplinks(names: &[(usize, usize, String)]) -> String {
    let each: Vec<String> = names
        .iter()
        .map(|(i, j, name)| {
            format!(
                "policy[{i}].uplinks[{j}]: {name:?} is neither a connection nor an interface \
                 NetworkManager knows"
            )
        })
        .collect();
    format!("{}; nothing was changed", each.join("; "))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
