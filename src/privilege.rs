//! Whether this process may change the network configuration. Commands that write the
//! kernel check it before they touch anything (the lock file included), so that a user
//! without it reads what to do instead of the first permission error on the way.

use tracing::debug;

use crate::error::{Error, Result};

/// `CAP_NET_ADMIN` (linux/capability.h): routes, policy rules, the firewall and the
/// network sysctls. Being root is not what counts: a root process may lack it (a
/// container, a trimmed bounding set) and a service may hold it without being root.
pub const CAP_NET_ADMIN: u32 = 12;

/// Fails with [`Error::NeedsRoot`] unless this process holds `CAP_NET_ADMIN` in its
/// effective set. When `/proc/self/status` cannot be read, nothing is checked: the
/// kernel still refuses what we may not do.
pub fn require_net_admin(command: &str) -> Result<()> {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => match effective_has(&status, CAP_NET_ADMIN) {
            Some(false) => Err(Error::NeedsRoot {
                command: command.to_string(),
            }),
            Some(true) => Ok(()),
            None => {
                debug!("no CapEff line in /proc/self/status; capabilities not checked");
                Ok(())
            }
        },
        Err(e) => {
            debug!("cannot read /proc/self/status ({e}); capabilities not checked");
            Ok(())
        }
    }
}

/// Whether this process holds `CAP_NET_ADMIN`, which reading the firewall (nf_tables,
/// iptables-save) and conntrack needs as much as writing: `status` leaves those parts
/// out without it. `true` when it cannot be told (the kernel then answers for itself).
pub fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_has(&status, CAP_NET_ADMIN))
        .unwrap_or(true)
}

/// Whether the `CapEff:` line of a `/proc/PID/status` text has capability `cap`;
/// `None` without a readable line.
pub fn effective_has(status: &str, cap: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(cap < 64 && (bits >> cap) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cap_eff: &str) -> String {
        format!(
            "Name:\tnm-multiwan\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\n\
             CapPrm:\t000001ffffffffff\nCapEff:\t{cap_eff}\nCapBnd:\t000001ffffffffff\n"
        )
    }

    #[test]
    fn reads_cap_net_admin_from_cap_eff() {
        // Root's full set; a user's empty set.
        assert_eq!(
            effective_has(&status("000001ffffffffff"), CAP_NET_ADMIN),
            Some(true)
        );
        assert_eq!(
            effective_has(&status("0000000000000000"), CAP_NET_ADMIN),
            Some(false)
        );
        // Only CAP_NET_ADMIN (1 << 12), as `AmbientCapabilities=CAP_NET_ADMIN` gives.
        assert_eq!(
            effective_has(&status("0000000000001000"), CAP_NET_ADMIN),
            Some(true)
        );
        // Everything but CAP_NET_ADMIN: bit 12 alone decides.
        assert_eq!(
            effective_has(&status("000001ffffffefff"), CAP_NET_ADMIN),
            Some(false)
        );
        // CAP_NET_RAW (13) and CAP_NET_BIND_SERVICE (10) are not enough.
        assert_eq!(
            effective_has(&status("0000000000002400"), CAP_NET_ADMIN),
            Some(false)
        );
    }

    #[test]
    fn unreadable_cap_eff_is_unknown() {
        assert_eq!(effective_has("Name:\tx\n", CAP_NET_ADMIN), None);
        assert_eq!(effective_has("CapEff:\tnot-hex\n", CAP_NET_ADMIN), None);
        assert_eq!(effective_has("CapEff:\t\n", CAP_NET_ADMIN), None);
    }

    #[test]
    fn this_process_can_be_checked() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let has = effective_has(&status, CAP_NET_ADMIN).expect("a CapEff line");
        assert_eq!(require_net_admin("test").is_ok(), has);
        assert_eq!(has_net_admin(), has);
    }
}
