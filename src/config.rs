//! The configuration file (`/etc/nm-multiwan/config.toml`): parsing and validation.
//!
//! Every key is optional; a missing file means defaults, and the defaults must just work.
//! Unknown keys are rejected by name, so a typo never silently changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::namespace::Namespace;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nm-multiwan/config.toml";

/// Mark bits we use by default. Chosen away from known users of the mark:
/// tailscale 0x00ff0000, kube-proxy 0x4000 and 0x8000, wg-quick 0xca6c,
/// Cilium 0x0f00, NetworkManager's WireGuard fwmark (its table number, low bits).
pub const DEFAULT_MARK_MASK: u32 = 0x3f00_0000;
/// Routing tables `table_base + 1 ..= table_base + max_uplinks` are ours.
/// Away from tailscale (52), wg-quick (51820) and the kernel's 253-255.
pub const DEFAULT_TABLE_BASE: u32 = 6100;
/// Our `ip rule` priorities are `rule_priority ..= rule_priority + 2`: after tailscale
/// (5210-5270), before the main table (32766).
pub const DEFAULT_RULE_PRIORITY: u32 = 30100;

pub const MAX_WEIGHT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Firewall mark bits nm-multiwan may use (contiguous, at least 3 bits).
    #[serde(deserialize_with = "de_u32_hex")]
    pub mark_mask: u32,
    /// Base of our routing table range.
    pub table_base: u32,
    /// First of the three `ip rule` priorities we use.
    pub rule_priority: u32,
    /// Balance IPv6 connections too. `None` (the key absent): on when at least two
    /// uplinks have an IPv6 default route.
    pub ipv6: Option<bool>,
    /// Firewall backend: `auto` (nftables where the kernel has nf_tables, iptables
    /// otherwise), `nftables` or `iptables`.
    pub firewall: crate::kernel::firewall::Choice,
    /// Per-uplink settings, keyed by NetworkManager connection id or interface name.
    pub uplinks: BTreeMap<String, UplinkConfig>,
    /// Health probing (daemon only).
    pub health: HealthConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Share of new connections, relative to the other uplinks (1..=100), in both
    /// address families.
    pub weight: u32,
    /// `false`: never balance over this uplink (no table, no rule, no NAT), in either
    /// address family.
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// What is probed through each uplink: IPv4 addresses (ICMP echo), or
    /// `tcp:ADDRESS:PORT` for a TCP handshake. Any answer within a round is success.
    pub targets: Vec<String>,
    /// Probe period per uplink, in milliseconds.
    pub interval_ms: u64,
    /// Consecutive failed probes before an uplink leaves the balance.
    pub down_after: u32,
    /// Consecutive successful probes before it returns.
    pub up_after: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mark_mask: DEFAULT_MARK_MASK,
            table_base: DEFAULT_TABLE_BASE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            ipv6: None,
            firewall: Default::default(),
            uplinks: BTreeMap::new(),
            health: HealthConfig::default(),
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            weight: 1,
            enabled: true,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            targets: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            interval_ms: 1000,
            down_after: 3,
            up_after: 3,
        }
    }
}

/// Accepts `"0x3f000000"`, `"1056964608"` or a bare integer.
fn de_u32_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Str(String),
    }
    let parsed = match Raw::deserialize(d)? {
        Raw::Int(i) => u32::try_from(i).ok(),
        Raw::Str(s) => parse_u32(&s),
    };
    parsed
        .ok_or_else(|| serde::de::Error::custom("expected a 32-bit number such as \"0x3f000000\""))
}

pub fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Config {
    /// Reads the file at `path`. A missing file means defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::ConfigRead {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Parses and validates; errors name the file, line and reason.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            Error::Config {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })?;
        config.validate().map_err(|(key, reason)| {
            let (line, column) = find_key(text, &key);
            Error::Config {
                path: path.to_path_buf(),
                line,
                column,
                reason: format!("{key}: {reason}"),
            }
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mask = self.mark_mask;
        let bits = mask.count_ones();
        let contiguous = mask != 0 && (mask >> mask.trailing_zeros()).count_ones() == bits && {
            let m = mask >> mask.trailing_zeros();
            m & (m + 1) == 0
        };
        if !contiguous || bits < 3 {
            return Err((
                "mark_mask".into(),
                format!("{mask:#x} must be one run of at least 3 contiguous bits, e.g. 0x3f000000"),
            ));
        }
        let max = self.max_uplinks();
        if self.table_base == 0
            || self.table_base.checked_add(max).is_none()
            || ranges_overlap(self.table_base + 1, self.table_base + max, 252, 255)
        {
            return Err((
                "table_base".into(),
                format!(
                    "{} would put our tables {}..={} on the kernel's reserved tables 253-255 or overflow",
                    self.table_base,
                    self.table_base as u64 + 1,
                    self.table_base as u64 + max as u64
                ),
            ));
        }
        if self.rule_priority == 0 || self.rule_priority + 2 >= 32766 {
            return Err((
                "rule_priority".into(),
                format!(
                    "{} must be between 1 and 32763 so our rules stay ahead of the main table (32766)",
                    self.rule_priority
                ),
            ));
        }
        for (name, u) in &self.uplinks {
            if u.weight == 0 || u.weight > MAX_WEIGHT {
                return Err((
                    format!("uplinks.{name}.weight"),
                    format!("{} is out of range 1..={MAX_WEIGHT}", u.weight),
                ));
            }
        }
        let h = &self.health;
        for t in &h.targets {
            if let Err(reason) = t.parse::<crate::health::Target>() {
                return Err(("health.targets".into(), reason));
            }
        }
        if h.interval_ms < 50 || h.interval_ms > 600_000 {
            return Err((
                "health.interval_ms".into(),
                format!("{} is out of range 50..=600000", h.interval_ms),
            ));
        }
        if h.down_after == 0 || h.up_after == 0 {
            return Err((
                "health".into(),
                "down_after and up_after must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The part of the kernel that is ours, as configured.
    pub fn namespace(&self) -> Namespace {
        Namespace {
            mark_mask: self.mark_mask,
            table_base: self.table_base,
            rule_priority: self.rule_priority,
        }
    }

    /// Uplink ids run 1..=max_uplinks (0 means "no mark").
    pub fn max_uplinks(&self) -> u32 {
        self.namespace().max_uplinks()
    }

    /// The settings that apply to an uplink: by connection id first, then by interface.
    pub fn uplink(&self, connection_id: &str, iface: &str) -> UplinkConfig {
        self.uplinks
            .get(connection_id)
            .or_else(|| self.uplinks.get(iface))
            .cloned()
            .unwrap_or_default()
    }
}

fn ranges_overlap(a0: u32, a1: u32, b0: u32, b1: u32) -> bool {
    a0 <= b1 && b0 <= a1
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// Best-effort location of a dotted key (`uplinks.wired.weight`) for validation errors.
fn find_key(text: &str, dotted: &str) -> (usize, usize) {
    let last = dotted.rsplit('.').next().unwrap_or(dotted);
    let table = dotted.rsplit_once('.').map(|(t, _)| t);
    let mut in_table = table.is_none();
    let mut fallback = (0, 0);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim();
            let name = name.replace('"', "");
            in_table = table.is_some_and(|t| t == name);
            if table.is_some_and(|t| t == name) && fallback == (0, 0) {
                fallback = (i + 1, 1);
            }
            continue;
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if key == last && in_table {
            return (i + 1, raw.find(last).unwrap_or(0) + 1);
        }
        if key == last && fallback == (0, 0) {
            fallback = (i + 1, raw.find(last).unwrap_or(0) + 1);
        }
    }
    fallback
}

/// Where the config lives: `--config` or the default.
pub fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, Error> {
        Config::parse(s, Path::new("/etc/nm-multiwan/config.toml"))
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
mark_mask = "0x0f000000"
table_base = 7000
rule_priority = 20000
ipv6 = false
[uplinks.wired]
weight = 2
[uplinks.usb0]
enabled = false
[health]
targets = ["192.0.2.1", "tcp:198.51.100.10:7000"]
interval_ms = 500
down_after = 2
up_after = 4
"#,
        )
        .unwrap();
        assert_eq!(c.mark_mask, 0x0f00_0000);
        let ns = c.namespace();
        assert_eq!(ns.shift(), 24);
        assert_eq!(ns.inbound_flag(), 0x0800_0000);
        assert_eq!(c.max_uplinks(), 7);
        assert_eq!(c.uplink("wired", "eth0").weight, 2);
        assert!(!c.uplink("x", "usb0").enabled);
        assert_eq!(c.uplink("x", "eth9"), UplinkConfig::default());
        assert_eq!(c.health.interval_ms, 500);
        assert_eq!(c.ipv6, Some(false));
        assert_eq!(parse("ipv6 = true").unwrap().ipv6, Some(true));
        assert_eq!(parse("").unwrap().ipv6, None);
        let msg = parse("ipv6 = \"yes\"").unwrap_err().to_string();
        assert!(msg.contains("config.toml:1"), "{msg}");
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = parse("mark_mask = \"0x3f000000\"\n[uplinks.wired]\nwieght = 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("wieght"), "{msg}");
        assert!(msg.contains("config.toml:3"), "{msg}");
    }

    #[test]
    fn syntax_error_has_line() {
        let msg = parse("a = \n").unwrap_err().to_string();
        assert!(msg.contains("config.toml:1"), "{msg}");
    }

    #[test]
    fn bad_values_are_rejected_with_key_and_line() {
        let msg = parse("\n[uplinks.wired]\nweight = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("uplinks.wired.weight"), "{msg}");
        assert!(msg.contains("config.toml:3"), "{msg}");
        for bad in [
            "mark_mask = \"0x5\"",
            "mark_mask = \"0x101\"",
            "mark_mask = \"banana\"",
            "rule_priority = 32765",
            "table_base = 250",
            "[health]\ntargets = [\"nope\"]",
            "[health]\ntargets = [\"2001:db8::1\"]",
            "[health]\ntargets = [\"tcp:192.0.2.1\"]",
            "[health]\ninterval_ms = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
