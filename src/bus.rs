//! The D-Bus connections (system, and the session bus `notify` needs), with a bound on
//! every wait: NetworkManager answers in
//! milliseconds, and a bus that accepts and never answers must not hang a dispatcher
//! hook, a user's command or the daemon's start.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long we wait on the system bus: to connect, and for each answer.
pub const DBUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the system bus (honours `DBUS_SYSTEM_BUS_ADDRESS`) within
/// [`DBUS_TIMEOUT`]; the connection builder alone would wait forever for a bus that
/// accepts and never answers. Every method call on the connection gives up after
/// `method_timeout`. Failing, it says so as [`Error::NetworkManager`] (exit code 3).
pub async fn system(method_timeout: Duration) -> Result<zbus::Connection> {
    let build = async {
        zbus::connection::Builder::system()?
            .method_timeout(method_timeout)
            .build()
            .await
    };
    let why = match tokio::time::timeout(DBUS_TIMEOUT, build).await {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", DBUS_TIMEOUT.as_secs()),
    };
    Err(Error::NetworkManager(format!(
        "cannot reach the system D-Bus: {why}; is dbus running (and, if set, does \
         DBUS_SYSTEM_BUS_ADDRESS name the right bus)?"
    )))
}

/// Connects to the user's session bus (`DBUS_SESSION_BUS_ADDRESS`) within
/// [`DBUS_TIMEOUT`], calls bounded by `method_timeout`. Failing, it says so as
/// [`Error::Bus`] (exit code 3).
pub async fn session(method_timeout: Duration) -> Result<zbus::Connection> {
    let build = async {
        zbus::connection::Builder::session()?
            .method_timeout(method_timeout)
            .build()
            .await
    };
    let why = match tokio::time::timeout(DBUS_TIMEOUT, build).await {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", DBUS_TIMEOUT.as_secs()),
    };
    Err(Error::Bus(format!(
        "cannot reach the session D-Bus: {why}; run this inside a desktop session \
         (DBUS_SESSION_BUS_ADDRESS names its bus)"
    )))
}
