//! Errors of the nf_tables client: each says what we were doing, and keeps the errno.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netfilter netlink socket (is this Linux with nf_tables?): {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("sending {what} to the kernel: {source}")]
    Send {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("receiving the kernel's answer to {what}: {source}")]
    Receive {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a message. In a transaction the kernel rolled everything back.
    #[error("{}", refused_message(.what, .errno_name, .detail, *.rolled_back, .source))]
    Refused {
        /// The refused operation, e.g. "adding rule 7 to chain output".
        what: String,
        /// The errno's symbolic name, e.g. "ENOENT".
        errno_name: &'static str,
        /// The kernel's extended-ack text, when it gave one.
        detail: Option<String>,
        /// Whether this was one message of a transaction, which the kernel undid whole.
        rolled_back: bool,
        #[source]
        source: io::Error,
    },
    #[error("malformed answer from the kernel to {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

fn refused_message(
    what: &str,
    errno_name: &str,
    detail: &Option<String>,
    rolled_back: bool,
    source: &io::Error,
) -> String {
    let mut msg = format!("the kernel refused {what}: {errno_name}, {source}");
    if let Some(detail) = detail {
        msg.push_str(&format!(" ({detail})"));
    }
    if rolled_back {
        msg.push_str("; the whole transaction was rolled back, nothing changed");
    }
    msg
}

impl Error {
    /// The errno behind this error, if the kernel or a system call gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Socket { source }
            | Error::Send { source, .. }
            | Error::Receive { source, .. }
            | Error::Refused { source, .. } => source.raw_os_error(),
            Error::Malformed { .. } | Error::Invalid { .. } => None,
        }
    }

    pub(crate) fn refused(
        what: String,
        errno: i32,
        detail: Option<String>,
        rolled_back: bool,
    ) -> Self {
        Error::Refused {
            what,
            errno_name: errno_name(errno),
            detail,
            rolled_back,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The symbolic name of the errnos nf_tables answers with.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "errno",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_operation_the_errno_and_the_rollback() {
        let e = Error::refused(
            "adding rule 7 to chain output".into(),
            libc::ENOENT,
            None,
            true,
        );
        let text = e.to_string();
        assert!(text.contains("adding rule 7 to chain output"), "{text}");
        assert!(text.contains("ENOENT"), "{text}");
        assert!(text.contains("rolled back"), "{text}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }
}
