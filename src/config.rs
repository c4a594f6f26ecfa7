//! The configuration file (`/etc/nm-multiwan/config.toml`): parsing and validation.
//!
//! Every key is optional; a missing file means defaults, and the defaults must just work.
//! Unknown keys are rejected by name, so a typo never silently changes nothing. Every
//! error names file, line, column and the dotted key, with what the key accepts
//! ([`keys::KEYS`]). A file that fails never stops nm-multiwan from following
//! NetworkManager: [`load_or_last_good`] falls back to the last configuration that
//! loaded.
//!
//! Adding a key: a field with its default here, its entry in [`keys::KEYS`] (the
//! accepted form; an integer range is then checked by itself), any other check in
//! [`Config::validate`], a line in `packaging/config.example.toml` and a row in the
//! README. Tests compare all of them with the types.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::de::{DeTable, DeValue};

use crate::error::Error;
use crate::namespace::Namespace;

mod errors;
pub mod keys;
mod last_good;
pub mod policy;
mod target;

use errors::{Diagnose, Invalid};
use keys::Seg;
pub use keys::{Accepts, KEYS, Key, key_paths};
pub use last_good::{LAST_GOOD_FILE, Loaded, Source, last_good_or_defaults, load_or_last_good};
pub use policy::{Mode, PolicyConfig};
pub use target::Target;

/// The name the global `sticky`'s implicit policy goes by in `status` and `explain`.
pub const GLOBAL_STICKY_POLICY: &str = "sticky (global)";

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nm-multiwan/config.toml";

/// Mark bits we use by default. Chosen away from known users of the mark:
/// tailscale 0x00ff0000, kube-proxy 0x4000 and 0x8000, wg-quick 0xca6c,
/// Cilium 0x0f00, NetworkManager's WireGuard fwmark (its table number, low bits).
pub const DEFAULT_MARK_MASK: u32 = 0x3f00_0000;
/// Routing tables `table_base + 1 ..= table_base + max_uplinks` are ours.
/// Away from tailscale (52), wg-quick (51820) and the kernel's 252-255.
pub const DEFAULT_TABLE_BASE: u32 = 6100;
/// Our `ip rule` priorities are `rule_priority ..= rule_priority + RULE_PRIORITIES - 1`:
/// after tailscale (5210-5270), before the main table (32766).
pub const DEFAULT_RULE_PRIORITY: u32 = 30100;

/// How many consecutive `ip rule` priorities we use, from `rule_priority` on.
pub use crate::namespace::RULE_PRIORITIES;
/// The priority of the kernel's rule for the main table: ours must all come before it.
pub const MAIN_RULE_PRIORITY: u32 = 32766;
/// The highest `rule_priority` that keeps all of ours before the main table's.
pub const RULE_PRIORITY_MAX: u32 = MAIN_RULE_PRIORITY - RULE_PRIORITIES;
/// The kernel's own tables (compat, default, main, local): never ours.
pub const RESERVED_TABLES: RangeInclusive<u32> = 252..=255;

pub const MAX_WEIGHT: u32 = 100;
pub const INTERVAL_MS_MIN: u64 = 50;
pub const INTERVAL_MS_MAX: u64 = 600_000;
pub const MAX_RTT_MS_MAX: u64 = 60_000;
pub const WINDOW_MIN: u32 = 4;
pub const WINDOW_MAX: u32 = 10_000;

/// The `firewall` key: which backend programs the marks and the NAT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallChoice {
    /// nftables where the kernel has nf_tables, iptables otherwise.
    #[default]
    Auto,
    Nftables,
    Iptables,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Firewall mark bits nm-multiwan may use (contiguous, at least 3 bits).
    #[serde(deserialize_with = "de_u32_hex", serialize_with = "ser_hex")]
    pub mark_mask: u32,
    /// Base of our routing table range.
    pub table_base: u32,
    /// First of the [`RULE_PRIORITIES`] `ip rule` priorities we use.
    pub rule_priority: u32,
    /// Balance IPv6 connections too. `None` (the key absent): on when at least two
    /// uplinks have an IPv6 default route.
    pub ipv6: Option<bool>,
    /// Firewall backend: `auto` (nftables where the kernel has nf_tables, iptables
    /// otherwise), `nftables` or `iptables`.
    pub firewall: FirewallChoice,
    /// What a metered uplink (NetworkManager's `Metered`) is for: `backup` (new
    /// connections only while no unmetered uplink is usable), `balance` (like any
    /// other) or `never` (no new connections at all).
    pub metered: Metered,
    /// More LANs (router mode), by interface or NetworkManager connection id, besides
    /// the shared connections: their connections to the outside are balanced too. A
    /// LAN is never an uplink.
    pub lan: Vec<String>,
    /// `"10m"`: the general balance (what no policy decides) is sticky for this long
    /// after a key's last new connection, as a last, implicit policy
    /// ([`Config::global_sticky_policy`]).
    pub sticky: Option<String>,
    /// What the global `sticky` remembers: each destination's uplink (for every
    /// connection), or each LAN client's (for connections forwarded from a LAN only).
    pub sticky_by: policy::StickyBy,
    /// Per-uplink settings, keyed by NetworkManager connection id or interface name.
    pub uplinks: BTreeMap<String, UplinkConfig>,
    /// Health probing (daemon only).
    pub health: HealthConfig,
    /// Policies (`[[policy]]`), checked in order before the rounds; the first that
    /// matches a new connection decides.
    pub policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Share of new connections, relative to the other uplinks (1..=100), in both
    /// address families.
    pub weight: u32,
    /// `false`: never balance over this uplink (no table, no rule, no NAT), in either
    /// address family.
    pub enabled: bool,
    /// `primary` or `backup` whatever NetworkManager says of metering; absent: as
    /// `metered` says (a metered uplink is then a backup by default).
    pub role: Option<UplinkRole>,
}

/// The config's `metered` key: what a metered uplink is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metered {
    /// New connections only while no unmetered (primary) uplink is usable.
    #[default]
    Backup,
    /// Like any other uplink.
    Balance,
    /// Never new connections (its table, NAT and inbound marks stay).
    Never,
}

/// The config's `uplinks.NAME.role` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkRole {
    Primary,
    Backup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// What is probed through each uplink: addresses (ICMP echo; IPv4 ones through
    /// its IPv4 side, IPv6 ones through its IPv6 side), or `tcp:ADDRESS:PORT` for a TCP
    /// handshake. A probe is answered when any target of its family answers.
    pub targets: Vec<String>,
    /// Probe period per uplink and family, in milliseconds.
    pub interval_ms: u64,
    /// Probes in a row without any answer (each given one interval) before an uplink
    /// is dead and leaves the balance.
    pub down_after: u32,
    /// Probes answered in a row (and the window's quality good again) before it returns.
    pub up_after: u32,
    /// Loss, in percent of the window's probes, above which an uplink leaves the
    /// balance; it returns at half of it or below.
    pub max_loss: u32,
    /// Median round-trip time of the window's answers, in milliseconds, above which
    /// an uplink leaves the balance; it returns at half of it or below.
    pub max_rtt_ms: u64,
    /// How many recent probes loss and round-trip time are judged over.
    pub window: u32,
    /// Reset the connections of an uplink the probes take out of the balance, so that
    /// their applications reconnect through another uplink at once.
    pub reset_connections: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mark_mask: DEFAULT_MARK_MASK,
            table_base: DEFAULT_TABLE_BASE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            ipv6: None,
            firewall: Default::default(),
            metered: Metered::default(),
            lan: Vec::new(),
            sticky: None,
            sticky_by: policy::StickyBy::default(),
            uplinks: BTreeMap::new(),
            health: HealthConfig::default(),
            policy: Vec::new(),
        }
    }
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            weight: 1,
            enabled: true,
            role: None,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            targets: vec![
                "1.1.1.1".into(),
                "9.9.9.9".into(),
                "2606:4700:4700::1111".into(),
                "2620:fe::fe".into(),
            ],
            interval_ms: 250,
            down_after: 5,
            up_after: 12,
            max_loss: 20,
            max_rtt_ms: 1000,
            window: 100,
            reset_connections: true,
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
    // The key's words in the message come from `keys::KEYS`.
    parsed.ok_or_else(|| serde::de::Error::custom("not a 32-bit number"))
}

fn ser_hex<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

pub fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The kernel numbers a configuration leads to, computed with checked arithmetic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Our `ip rule` priorities.
    pub priorities: RangeInclusive<u32>,
    /// Our routing tables, one per possible uplink id.
    pub tables: RangeInclusive<u32>,
    /// Uplink ids run `1..=max_uplinks`.
    pub max_uplinks: u32,
}

impl Config {
    /// Reads the file at `path`. A missing file means defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        Config::read(path).map(|(config, _)| config)
    }

    /// Reads and parses the file at `path`; returns the text too (empty for a
    /// missing file, which means defaults).
    fn read(path: &Path) -> Result<(Config, String), Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path).map(|c| (c, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Config::default(), String::new()))
            }
            Err(e) => Err(Error::ConfigRead {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Parses and validates; errors name the file, line, column, key and what the
    /// key accepts.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let doc = DeTable::parse(text).map_err(|e| {
            Diagnose {
                path,
                text,
                doc: None,
            }
            .syntax(&e)
        })?;
        let diagnose = Diagnose {
            path,
            text,
            doc: Some(doc.get_ref()),
        };
        check_tables(doc.get_ref(), &mut Vec::new()).map_err(|e| diagnose.invalid(&e))?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Deserializer::from(doc.clone()))
                .map_err(|e| diagnose.deserialize(&e))?;
        config.validate().map_err(|e| diagnose.invalid(&e))?;
        Ok(config)
    }

    /// Every check after parsing, in one place: the integer ranges of [`keys::KEYS`],
    /// the mark mask, the numbers derived from the keys ([`Config::layout`]) and the
    /// probe targets.
    fn validate(&self) -> Result<(), Invalid> {
        let tree = serde_json::to_value(self).expect("the config serialises");
        check_integers(&tree, &mut Vec::new())?;
        let mask = self.mark_mask;
        let run = mask.checked_shr(mask.trailing_zeros()).unwrap_or(0);
        if mask == 0 || run & run.wrapping_add(1) != 0 || mask.count_ones() < 3 {
            return Err(Invalid::new(key(&["mark_mask"]), format!("{mask:#x}")));
        }
        self.layout()?;
        for (i, l) in self.lan.iter().enumerate() {
            if l.trim().is_empty() {
                let mut at = key(&["lan"]);
                at.push(Seg::Index(i));
                return Err(Invalid::new(at, "\"\"").because("an empty LAN name"));
            }
        }
        for (i, t) in self.health.targets.iter().enumerate() {
            if let Err(reason) = t.parse::<Target>() {
                let mut at = key(&["health", "targets"]);
                at.push(Seg::Index(i));
                return Err(Invalid::new(at, format!("{t:?}")).because(reason));
            }
        }
        for (i, p) in self.policy.iter().enumerate() {
            self.validate_policy(i, p)?;
        }
        if let Some(sticky) = &self.sticky {
            check_sticky(key(&["sticky"]), sticky)?;
            if let Some(i) = self
                .policy
                .iter()
                .position(|p| p.name == GLOBAL_STICKY_POLICY)
            {
                return Err(Invalid::new(
                    vec![Seg::key("policy"), Seg::Index(i), Seg::key("name")],
                    format!("{GLOBAL_STICKY_POLICY:?}"),
                )
                .because("that name is the global sticky's (the top-level sticky key)"));
            }
        }
        if self.sticky_by == policy::StickyBy::Client && self.sticky.is_none() {
            return Err(Invalid::new(key(&["sticky_by"]), "\"client\"")
                .because("sticky_by needs sticky (how long a client keeps its uplink)"));
        }
        Ok(())
    }

    /// The implicit last policy the global `sticky` stands for: the general balance
    /// over every uplink, sticky. By client it matches the LANs' clients only (the
    /// planner fills `from` with the LANs' networks): the machine's own connections
    /// all share its own source address, so they keep balancing normally.
    pub fn global_sticky_policy(&self) -> Option<PolicyConfig> {
        let sticky = self.sticky.clone()?;
        Some(PolicyConfig {
            name: GLOBAL_STICKY_POLICY.into(),
            to: Vec::new(),
            from: Vec::new(),
            ports: Vec::new(),
            protocol: None,
            user: None,
            uplinks: Vec::new(),
            mode: Mode::Balance,
            sticky: Some(sticky),
            sticky_by: self.sticky_by,
            fallback: true,
        })
    }

    /// The policies in the order they are checked: the `[[policy]]` tables, then the
    /// global sticky's, if any (its index is then `policy.len()`).
    pub fn policies(&self) -> Vec<PolicyConfig> {
        let mut out = self.policy.clone();
        out.extend(self.global_sticky_policy());
        out
    }

    /// One `[[policy]]`: every key in its accepted form, and the keys together.
    fn validate_policy(&self, i: usize, p: &PolicyConfig) -> Result<(), Invalid> {
        use policy::WITH_PORTS;
        let at = |name: &str| vec![Seg::key("policy"), Seg::Index(i), Seg::key(name)];
        let item = |name: &str, j: usize| {
            let mut k = at(name);
            k.push(Seg::Index(j));
            k
        };
        if p.name.trim().is_empty() {
            return Err(Invalid::new(at("name"), "\"\"").because("a policy needs a name"));
        }
        if let Some(first) = self.policy[..i].iter().position(|o| o.name == p.name) {
            return Err(Invalid::new(at("name"), format!("{:?}", p.name))
                .because(format!("policy {first} has that name already")));
        }
        for (j, t) in p.to.iter().enumerate() {
            if let Err(reason) = t.parse::<policy::Destination>() {
                return Err(Invalid::new(item("to", j), format!("{t:?}")).because(reason));
            }
        }
        for (j, f) in p.from.iter().enumerate() {
            if let Err(reason) = f.parse::<crate::model::IpNet>() {
                return Err(Invalid::new(item("from", j), format!("{f:?}")).because(reason));
            }
        }
        for (j, port) in p.ports.iter().enumerate() {
            if let Err(reason) = port.range() {
                return Err(Invalid::new(item("ports", j), format!("{port:?}")).because(reason));
            }
        }
        let protocol = match &p.protocol {
            Some(spec) => Some(spec.number().map_err(|reason| {
                Invalid::new(at("protocol"), format!("{spec:?}")).because(reason)
            })?),
            None => None,
        };
        if let Some(proto) = protocol
            && !p.ports.is_empty()
            && !WITH_PORTS.contains(&proto)
        {
            return Err(Invalid::new(at("ports"), format!("{:?}", p.ports))
                .because(format!("protocol {proto} has no ports")));
        }
        if let Some(user) = &p.user
            && let Err(reason) = user.check()
        {
            return Err(Invalid::new(at("user"), format!("{user:?}")).because(reason));
        }
        for (j, u) in p.uplinks.iter().enumerate() {
            if u.trim().is_empty() {
                return Err(
                    Invalid::new(item("uplinks", j), "\"\"").because("an empty uplink name")
                );
            }
            if p.uplinks[..j].contains(u) {
                return Err(
                    Invalid::new(item("uplinks", j), format!("{u:?}")).because("listed twice")
                );
            }
        }
        if let Some(sticky) = &p.sticky {
            check_sticky(at("sticky"), sticky)?;
            if p.mode != Mode::Balance {
                return Err(
                    Invalid::new(at("sticky"), format!("{sticky:?}")).because(format!(
                        "sticky needs mode = \"balance\" (this policy is {})",
                        p.mode.name()
                    )),
                );
            }
        }
        if p.sticky_by == policy::StickyBy::Client && p.sticky.is_none() {
            return Err(Invalid::new(at("sticky_by"), "\"client\"")
                .because("sticky_by needs sticky (how long a client keeps its uplink)"));
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

    /// The priorities, tables and marks this configuration leads to, with checked
    /// arithmetic: any of them out of range is an error naming the key to change.
    /// Expects a valid mark mask (one run of at least 3 bits).
    fn layout(&self) -> Result<Layout, Invalid> {
        let ns = self.namespace();
        let max_uplinks = ns.max_uplinks();
        let priorities = self
            .rule_priority
            .checked_add(RULE_PRIORITIES - 1)
            .filter(|&last| self.rule_priority >= 1 && last < MAIN_RULE_PRIORITY)
            .map(|last| self.rule_priority..=last)
            .ok_or_else(|| Invalid::new(key(&["rule_priority"]), self.rule_priority))?;
        let blame_table = || {
            Invalid::new(key(&["table_base"]), self.table_base).or_else_blame(key(&["mark_mask"]))
        };
        let tables = match (
            self.table_base.checked_add(1),
            self.table_base.checked_add(max_uplinks),
        ) {
            (Some(first), Some(last)) => first..=last,
            _ => {
                return Err(blame_table().because(format!(
                    "table_base + {max_uplinks} (the uplinks mark_mask {:#x} allows) is past \
                     4294967295",
                    self.mark_mask
                )));
            }
        };
        if tables.start() <= RESERVED_TABLES.end() && RESERVED_TABLES.start() <= tables.end() {
            return Err(blame_table().because(format!(
                "our tables {}..={} would include the kernel's 252..=255",
                tables.start(),
                tables.end()
            )));
        }
        // Every uplink's marks must sit inside the mask, apart from the inbound flag.
        let flag = ns.inbound_flag();
        let last_mark = max_uplinks.checked_shl(ns.shift()).unwrap_or(0);
        if last_mark >> ns.shift() != max_uplinks
            || last_mark & !self.mark_mask != 0
            || last_mark & flag != 0
            || flag & !self.mark_mask != 0
        {
            return Err(Invalid::new(
                key(&["mark_mask"]),
                format!("{:#x}", self.mark_mask),
            ));
        }
        Ok(Layout {
            priorities,
            tables,
            max_uplinks,
        })
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

/// A `sticky` time: 1 s ..= a day.
fn check_sticky(at: Vec<Seg>, sticky: &str) -> Result<u64, Invalid> {
    let secs = policy::parse_duration(sticky)
        .map_err(|reason| Invalid::new(at.clone(), format!("{sticky:?}")).because(reason))?;
    if secs == 0 || secs > policy::STICKY_MAX_SECS {
        return Err(Invalid::new(at, format!("{sticky:?}"))
            .because(format!("{secs} s is not within 1 s ..= 1 day")));
    }
    Ok(secs)
}

fn key(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|p| Seg::key(*p)).collect()
}

/// Keys that hold tables must be tables: serde would also read a struct from an array
/// (`health = []`), which is never what was meant.
fn check_tables(table: &DeTable, path: &mut Vec<Seg>) -> Result<(), Invalid> {
    for (k, v) in table {
        path.push(Seg::key(k.get_ref().as_ref()));
        let wants_table = keys::find(path)
            .is_some_and(|key| matches!(key.accepts, Accepts::Table | Accepts::Names));
        match v.get_ref() {
            DeValue::Table(t) => check_tables(t, path)?,
            other if wants_table => {
                return Err(Invalid::new(path.clone(), other.type_str()));
            }
            _ => {}
        }
        path.pop();
    }
    Ok(())
}

/// Every integer of the config within the range its key accepts.
fn check_integers(v: &serde_json::Value, path: &mut Vec<Seg>) -> Result<(), Invalid> {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                path.push(Seg::key(k.as_str()));
                check_integers(v, path)?;
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                check_integers(v, path)?;
                path.pop();
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(Accepts::Integer { min, max }) = keys::find(path).map(|k| k.accepts) {
                let ok = n.as_u64().is_some_and(|n| (min..=max).contains(&n));
                if !ok {
                    return Err(Invalid::new(path.clone(), n));
                }
            }
        }
        _ => {}
    }
    Ok(())
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

    /// The error's position, key and message.
    fn error(s: &str) -> (usize, usize, Option<String>, String) {
        match parse(s) {
            Err(e @ Error::Config { .. }) => {
                let msg = e.to_string();
                let Error::Config {
                    line, column, key, ..
                } = e
                else {
                    unreachable!()
                };
                (line, column, key, msg)
            }
            other => panic!("{s:?}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        let layout = config.layout().unwrap();
        assert_eq!(layout.priorities, 30100..=30102);
        assert_eq!(layout.tables, 6101..=6131);
        assert_eq!(layout.max_uplinks, 31);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
mark_mask = "0x0f000000"
table_base = 7000
rule_priority = 20000
ipv6 = false
metered = "never"
[uplinks.wired]
weight = 2
[uplinks.usb0]
enabled = false
role = "primary"
[health]
targets = ["192.0.2.1", "tcp:198.51.100.10:7000", "2001:db8::1", "tcp:[2001:db8::2]:443"]
interval_ms = 500
down_after = 2
up_after = 4
max_loss = 30
max_rtt_ms = 700
window = 40
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
        assert_eq!(
            (c.health.max_loss, c.health.max_rtt_ms, c.health.window),
            (30, 700, 40)
        );
        assert_eq!(c.metered, Metered::Never);
        assert_eq!(c.uplink("x", "usb0").role, Some(UplinkRole::Primary));
        assert_eq!(c.uplink("wired", "eth0").role, None);
        assert_eq!(c.ipv6, Some(false));
        assert_eq!(parse("ipv6 = true").unwrap().ipv6, Some(true));
        assert_eq!(parse("").unwrap().ipv6, None);
        assert_eq!(parse("mark_mask = 0x3f000000").unwrap(), Config::default());
        assert_eq!(
            parse("mark_mask = \"1056964608\"").unwrap(),
            Config::default()
        );
    }

    /// Issue 15, defects 5 and 6: each example names its key, what it accepts, and
    /// where it is.
    #[test]
    fn every_error_names_its_key_and_what_it_accepts() {
        let rule = "expects an integer 1..=32763";
        let cases: &[(&str, (usize, usize), &str, &str)] = &[
            // Defect 5: the `+2` wrapped and put our rules ahead of the local table.
            ("rule_priority = 4294967295", (1, 17), "rule_priority", rule),
            ("\nrule_priority = 32764", (2, 17), "rule_priority", rule),
            ("rule_priority = 0", (1, 17), "rule_priority", rule),
            ("rule_priority = -1", (1, 17), "rule_priority", rule),
            (
                "rule_priority = 99999999999999999999",
                (1, 17),
                "rule_priority",
                rule,
            ),
            ("rule_priority = \"2\"", (1, 17), "rule_priority", rule),
            ("rule_priority = 2.5", (1, 17), "rule_priority", rule),
            (
                "table_base = 4294967295",
                (1, 14),
                "table_base",
                "must stay at most 4294967295 and avoid the kernel's",
            ),
            (
                "table_base = 250",
                (1, 14),
                "table_base",
                "would include the kernel's 252..=255",
            ),
            (
                "table_base = -1",
                (1, 14),
                "table_base",
                "an integer 1..=4294967295",
            ),
            (
                "mark_mask = \"banana\"",
                (1, 13),
                "mark_mask",
                "expects a mark mask such as \"0x3f000000\": one run of at least 3 contiguous bits",
            ),
            (
                "mark_mask = \"0x5\"",
                (1, 13),
                "mark_mask",
                "one run of at least 3",
            ),
            (
                "mark_mask = \"0x101\"",
                (1, 13),
                "mark_mask",
                "one run of at least 3",
            ),
            (
                "mark_mask = -1",
                (1, 13),
                "mark_mask",
                "one run of at least 3",
            ),
            (
                "mark_mask = true",
                (1, 13),
                "mark_mask",
                "one run of at least 3",
            ),
            (
                "ipv6 = \"yes\"",
                (1, 8),
                "ipv6",
                "found \"yes\"; expects true or false",
            ),
            ("ipv6 = 1", (1, 8), "ipv6", "expects true or false"),
            (
                "[uplinks.wired]\nweight = 1\nweight = 2",
                (3, 1),
                "uplinks.wired.weight",
                "duplicate key (each key may be set once); expects an integer 1..=100",
            ),
            (
                "rule_priority = 1\nrule_priority = 2",
                (2, 1),
                "rule_priority",
                "duplicate key",
            ),
            (
                "[health]\n[health]",
                (2, 2),
                "health",
                "table defined twice",
            ),
            (
                "[uplinks.\"Wired 1\"]\n[uplinks.\"Wired 1\"]",
                (2, 10),
                "uplinks.\"Wired 1\"",
                "table defined twice",
            ),
            (
                "mark_mask = \"0x3f000000\"\n[uplinks.wired]\nwieght = 2\n",
                (3, 1),
                "uplinks.wired.wieght",
                "unknown key; the keys of uplinks.wired are weight, enabled",
            ),
            (
                "[health]\ninterval = 5",
                (2, 1),
                "health.interval",
                "unknown key; the keys of health are targets, interval_ms, down_after, up_after",
            ),
            (
                "colour = 1",
                (1, 1),
                "colour",
                "unknown key; the keys at the top level are mark_mask, table_base",
            ),
            (
                "\n[uplinks.wired]\nweight = 0\n",
                (3, 10),
                "uplinks.wired.weight",
                "found 0; expects an integer 1..=100",
            ),
            (
                "uplinks.wired.weight = 101",
                (1, 24),
                "uplinks.wired.weight",
                "found 101; expects an integer 1..=100",
            ),
            (
                "[uplinks.wired]\nenabled = \"no\"",
                (2, 11),
                "uplinks.wired.enabled",
                "expects true or false",
            ),
            (
                "uplinks = 3",
                (1, 11),
                "uplinks",
                "found 3; expects a table of names",
            ),
            (
                "uplinks.wired = [1, true]",
                (1, 17),
                "uplinks.wired",
                "expects a table of weight, enabled",
            ),
            (
                "health = []",
                (1, 10),
                "health",
                "expects a table of targets",
            ),
            (
                "[health]\ntargets = [\"1.1.1.1\", \"nope\"]",
                (2, 23),
                "health.targets[1]",
                "found \"nope\"",
            ),
            (
                "[health]\ntargets = [\"2001:db8::1\", \"tcp:2001:db8::1:443\"]",
                (2, 27),
                "health.targets[1]",
                "tcp:[2001:db8::1]:443",
            ),
            (
                "metered = \"sometimes\"",
                (1, 11),
                "metered",
                "found \"sometimes\"; expects \"backup\", \"balance\" or \"never\"",
            ),
            (
                "[uplinks.usb0]\nrole = \"main\"",
                (2, 8),
                "uplinks.usb0.role",
                "expects \"primary\" or \"backup\"",
            ),
            (
                "[health]\nmax_loss = 0",
                (2, 12),
                "health.max_loss",
                "expects an integer 1..=100",
            ),
            (
                "[health]\nwindow = 2",
                (2, 10),
                "health.window",
                "expects an integer 4..=10000",
            ),
            (
                "[health]\ntargets = [\"tcp:192.0.2.1\"]",
                (2, 12),
                "health.targets[0]",
                "tcp:ADDRESS:PORT",
            ),
            (
                "[health]\ntargets = [1]",
                (2, 12),
                "health.targets[0]",
                "found 1",
            ),
            (
                "[health]\ninterval_ms = 1",
                (2, 15),
                "health.interval_ms",
                "expects an integer 50..=600000",
            ),
            (
                "[health]\ndown_after = 0",
                (2, 14),
                "health.down_after",
                "expects an integer 1..=4294967295",
            ),
            (
                "[health]\nup_after = 1e3",
                (2, 12),
                "health.up_after",
                "found 1e3; expects an integer 1..=4294967295",
            ),
            // A syntax error inside a known key's value still names the key.
            (
                "rule_priority = ",
                (1, 17),
                "rule_priority",
                "not valid TOML",
            ),
        ];
        for (text, (line, column), key, words) in cases {
            let (l, c, k, msg) = error(text);
            assert_eq!(k.as_deref(), Some(*key), "{text:?}: {msg}");
            assert_eq!((l, c), (*line, *column), "{text:?}: {msg}");
            assert!(msg.contains(words), "{text:?}: {msg}");
            let prefix = format!("/etc/nm-multiwan/config.toml:{line}:{column}: {key}: ");
            assert!(msg.starts_with(&prefix), "{text:?}: {msg}");
        }
    }

    /// Every bad policy key is named with its position and what it accepts.
    #[test]
    fn policy_errors_name_file_line_and_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("to = [\"\"]", "policy[0].to[0]", "an empty destination"),
            ("to = [\"10.0.0.1/8\"]", "policy[0].to[0]", "host bits set"),
            ("to = [\"10.0.0.0/33\"]", "policy[0].to[0]", "prefix length"),
            (
                "to = [\"a b\"]",
                "policy[0].to[0]",
                "neither a prefix nor a host name",
            ),
            (
                "ports = [\"9000-8000\"]",
                "policy[0].ports[0]",
                "upside down",
            ),
            ("ports = [\"0\"]", "policy[0].ports[0]", "1..=65535"),
            (
                "protocol = \"tcpp\"",
                "policy[0].protocol",
                "unknown protocol",
            ),
            (
                "protocol = \"icmp\"\nports = [\"1\"]",
                "policy[0].ports",
                "no ports",
            ),
            (
                "sticky = \"0s\"",
                "policy[0].sticky",
                "not within 1 s ..= 1 day",
            ),
            (
                "sticky = \"2d\"",
                "policy[0].sticky",
                "not within 1 s ..= 1 day",
            ),
            ("sticky = \"ten minutes\"", "policy[0].sticky", "not a time"),
            (
                "sticky = \"10m\"\nmode = \"failover\"",
                "policy[0].sticky",
                "needs mode",
            ),
            (
                "mode = \"fast\"",
                "policy[0].mode",
                "\"balance\", \"failover\" or \"direct\"",
            ),
            (
                "uplinks = [\"a\", \"a\"]",
                "policy[0].uplinks[1]",
                "listed twice",
            ),
            ("user = \"-x\"", "policy[0].user", "not a user name"),
            ("colour = 1", "policy[0].colour", "unknown key"),
        ];
        for (body, key, words) in cases {
            let text = format!("[[policy]]\nname = \"p\"\n{body}\n");
            let (line, _, k, msg) = error(&text);
            assert_eq!(k.as_deref(), Some(*key), "{text:?}: {msg}");
            assert!(line >= 2, "{text:?}: {msg}");
            assert!(msg.contains(words), "{text:?}: {msg}");
        }
        let (line, _, k, msg) = error("[[policy]]\nname = \"p\"\n[[policy]]\nname = \"p\"\n");
        assert_eq!((line, k.as_deref()), (4, Some("policy[1].name")), "{msg}");
        let ok = parse(
            "[[policy]]\nname = \"p\"\nto = [\"10.0.0.0/8\", \"Portal.Example.edu\", \"2001:db8::/32\"]\n\
             ports = [\"443\", 8080, \"8000-8100\"]\nprotocol = \"tcp\"\nuser = 1000\n\
             uplinks = [\"wired\"]\nsticky = \"10m\"\nfallback = false\n",
        )
        .unwrap();
        assert_eq!(
            ok.policy[0].port_ranges(),
            [(443, 443), (8080, 8080), (8000, 8100)]
        );
        assert_eq!(ok.policy[0].host_names(), ["portal.example.edu"]);
        assert!(!ok.policy[0].fallback);
    }

    #[test]
    fn global_sticky_errors_name_file_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "lan = []\nsticky = \"0s\"",
                2,
                "sticky",
                "not within 1 s ..= 1 day",
            ),
            ("sticky = \"2d\"", 1, "sticky", "not within 1 s ..= 1 day"),
            ("sticky = \"soon\"", 1, "sticky", "not a time"),
            ("\nsticky_by = \"client\"", 2, "sticky_by", "needs sticky"),
            (
                "sticky = \"1m\"\nsticky_by = \"everyone\"",
                2,
                "sticky_by",
                "\"destination\" or \"client\"",
            ),
            (
                "sticky = \"1m\"\n[[policy]]\nname = \"sticky (global)\"",
                3,
                "policy[0].name",
                "global sticky",
            ),
        ];
        for (text, line, key, words) in cases {
            let (l, column, k, msg) = error(text);
            assert_eq!((l, k.as_deref()), (*line, Some(*key)), "{text:?}: {msg}");
            assert!(column >= 1, "{text:?}: {msg}");
            assert!(msg.contains(words), "{text:?}: {msg}");
            assert!(
                msg.starts_with(&format!("/etc/nm-multiwan/config.toml:{line}:")),
                "{msg}"
            );
        }
        let ok = parse("sticky = \"10m\"\nsticky_by = \"client\"\n").unwrap();
        let global = ok.global_sticky_policy().unwrap();
        assert_eq!(
            (global.name.as_str(), global.sticky_secs(), global.sticky_by),
            (GLOBAL_STICKY_POLICY, Some(600), policy::StickyBy::Client)
        );
        assert_eq!(ok.policies(), [global]);
        assert_eq!(parse("").unwrap().policies(), []);
    }

    #[test]
    fn a_default_that_no_longer_fits_blames_the_key_that_was_set() {
        // 31 bits of uplink ids need tables past 4294967295 with table_base 4294967000,
        // and with the default table_base the mask alone is fine.
        let (_, _, key, msg) = error("table_base = 4294967000\nmark_mask = \"0xffffffff\"");
        assert_eq!(key.as_deref(), Some("table_base"), "{msg}");
        assert!(parse("mark_mask = \"0xffffffff\"").is_ok());
        let (line, _, key, msg) = error("mark_mask = \"0xff000000\"\ntable_base = 240");
        assert_eq!((line, key.as_deref()), (2, Some("table_base")), "{msg}");
        assert!(msg.contains("our tables 241..=367"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        for text in [
            "a = \n",
            "[[[",
            "x = \"unterminated\n",
            "= 1",
            "[uplinks.wired\n",
        ] {
            let (line, column, _, msg) = error(text);
            assert!(line >= 1 && column >= 1, "{text:?}: {msg}");
            assert!(msg.contains("not valid TOML"), "{text:?}: {msg}");
        }
    }

    /// Every integer key's range is enforced, at both ends, whoever adds the key.
    #[test]
    fn every_integer_range_is_enforced() {
        for k in KEYS {
            let Accepts::Integer { min, max } = k.accepts else {
                continue;
            };
            let (table, name) = match k.path.rsplit_once('.') {
                Some((t, n)) => (format!("[{}]\n", t.replace('*', "name0")), n),
                None => (String::new(), k.path),
            };
            let doc = |v: u64| format!("{table}{name} = {v}");
            assert!(parse(&doc(min)).is_ok(), "{}", doc(min));
            // table_base's upper end depends on mark_mask; its own range is its type's.
            if k.path != "table_base" {
                assert!(parse(&doc(max)).is_ok(), "{}", doc(max));
            }
            for bad in [min.checked_sub(1), max.checked_add(1)]
                .into_iter()
                .flatten()
            {
                let (_, _, key, msg) = error(&doc(bad));
                assert_eq!(key.unwrap().replace("name0", "*"), k.path, "{msg}");
                assert!(msg.contains(&format!("{min}..={max}")), "{msg}");
            }
        }
    }

    #[test]
    fn keys_table_lists_exactly_the_keys_of_the_types() {
        let mut from_types = key_paths::<Config>();
        let mut listed: Vec<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
        from_types.sort();
        listed.sort();
        let missing: Vec<&String> = from_types.iter().filter(|k| !listed.contains(k)).collect();
        let stale: Vec<&String> = listed.iter().filter(|k| !from_types.contains(k)).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "config::keys::KEYS lacks {missing:?} and lists {stale:?}, which the types do not have"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "mark_mask",
            "table_base",
            "rule_priority",
            "ipv6",
            "uplinks",
            "weight",
            "enabled",
            "health",
            "targets",
            "interval_ms",
            "down_after",
            "up_after",
            "wired",
            "\"Wired connection 1\"",
            "uplinks.wired",
            "uplinks.wired.weight",
            "health.interval_ms",
            "colour",
        ];

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => proptest::sample::select(NAMES).prop_map(str::to_string),
                1 => "[a-z_.\"]{1,12}",
            ]
        }

        fn integer() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                proptest::sample::select(vec![
                    "0",
                    "1",
                    "2",
                    "3",
                    "-1",
                    "100",
                    "101",
                    "250",
                    "251",
                    "252",
                    "255",
                    "256",
                    "32763",
                    "32764",
                    "32765",
                    "32766",
                    "4294967263",
                    "4294967264",
                    "4294967295",
                    "4294967296",
                    "99999999999999999999",
                    "0x3f000000",
                    "0xffffffff",
                    "0o7",
                    "0b111",
                ])
                .prop_map(str::to_string),
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                4 => integer(),
                1 => any::<f64>().prop_map(|f| format!("{f:?}")),
                1 => any::<bool>().prop_map(|b| b.to_string()),
                2 => proptest::sample::select(vec![
                    "\"0x3f000000\"", "\"0xffffffff\"", "\"0x7\"", "\"0x5\"", "\"banana\"",
                    "\"1.1.1.1\"", "\"tcp:192.0.2.1:443\"", "\"2001:db8::1\"", "\"\"",
                    "\"0x80000007\"", "\"0xe0000000\"", "1979-05-27",
                ])
                .prop_map(str::to_string),
                1 => "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(", "))),
                    proptest::collection::vec((name(), inner), 0..3).prop_map(|v| {
                        let kv: Vec<String> = v.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        format!("{{{}}}", kv.join(", "))
                    }),
                ]
            })
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => (name(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
                2 => name().prop_map(|n| format!("[{n}]")),
                1 => name().prop_map(|n| format!("[uplinks.{n}]")),
                1 => "[ -~]{0,20}",
            ]
        }

        /// Integers around every edge our ranges have, and anywhere in u32.
        fn number() -> impl Strategy<Value = i64> {
            prop_oneof![
                -3i64..=300,
                32_700i64..=32_800,
                (u32::MAX as i64 - 300)..=(u32::MAX as i64 + 2),
                any::<u32>().prop_map(i64::from),
            ]
        }

        /// Masks: runs of any length at any place (some cut at the top), and any u32.
        fn mask() -> impl Strategy<Value = String> {
            prop_oneof![
                (1u32..=32, 0u32..32).prop_map(|(len, shift)| {
                    let run = u32::MAX >> (32 - len);
                    format!("\"{:#x}\"", run << shift)
                }),
                any::<u32>().prop_map(|m| format!("\"{m:#x}\"")),
                any::<u32>().prop_map(|m| m.to_string()),
            ]
        }

        /// Documents with every key in its place, so that many of them are valid and
        /// the derived numbers are checked over the whole range of every key.
        fn placed() -> impl Strategy<Value = String> {
            let uplink = (
                proptest::sample::select(vec!["wired", "usb0", "\"Wired connection 1\""]),
                proptest::option::of(number()),
                proptest::option::of(any::<bool>()),
            );
            let health = (
                proptest::option::of(proptest::sample::select(vec![
                    "[]",
                    "[\"1.1.1.1\"]",
                    "[\"tcp:192.0.2.1:443\", \"icmp:9.9.9.9\"]",
                    "[\"2001:db8::1\"]",
                ])),
                proptest::option::of(number()),
                proptest::option::of(number()),
                proptest::option::of(number()),
            );
            (
                proptest::option::of(mask()),
                proptest::option::of(number()),
                proptest::option::of(number()),
                proptest::option::of(any::<bool>()),
                proptest::collection::vec(uplink, 0..3),
                proptest::option::of(health),
            )
                .prop_map(|(mask, base, prio, ipv6, uplinks, health)| {
                    let mut doc = String::new();
                    let mut set = |k: &str, v: Option<String>| {
                        if let Some(v) = v {
                            doc += &format!("{k} = {v}\n");
                        }
                    };
                    set("mark_mask", mask);
                    set("table_base", base.map(|v| v.to_string()));
                    set("rule_priority", prio.map(|v| v.to_string()));
                    set("ipv6", ipv6.map(|v| v.to_string()));
                    for (name, weight, enabled) in uplinks {
                        doc += &format!("[uplinks.{name}]\n");
                        if let Some(w) = weight {
                            doc += &format!("weight = {w}\n");
                        }
                        if let Some(e) = enabled {
                            doc += &format!("enabled = {e}\n");
                        }
                    }
                    if let Some((targets, interval, down, up)) = health {
                        doc += "[health]\n";
                        for (k, v) in [
                            ("targets", targets.map(str::to_string)),
                            ("interval_ms", interval.map(|v| v.to_string())),
                            ("down_after", down.map(|v| v.to_string())),
                            ("up_after", up.map(|v| v.to_string())),
                        ] {
                            if let Some(v) = v {
                                doc += &format!("{k} = {v}\n");
                            }
                        }
                    }
                    doc
                })
        }

        fn document() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::collection::vec(line(), 0..8).prop_map(|l| l.join("\n")),
                placed(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any document: a config whose derived numbers are all in range, or an
            /// error naming a key (or a syntax error with a position). Never a panic.
            #[test]
            fn any_document_is_a_sound_config_or_a_named_error(text in document()) {
                match parse(&text) {
                    Ok(c) => {
                        let ns = c.namespace();
                        let max = c.max_uplinks();
                        prop_assert!(max >= 3);
                        let last_prio = c.rule_priority.checked_add(RULE_PRIORITIES - 1);
                        prop_assert!(c.rule_priority >= 1);
                        prop_assert!(last_prio.is_some_and(|p| p < MAIN_RULE_PRIORITY));
                        prop_assert_eq!(ns.priorities()[0], c.rule_priority);
                        prop_assert_eq!(ns.priorities()[2], last_prio.unwrap());
                        for id in [1, 2, max / 2 + 1, max] {
                            let table = c.table_base.checked_add(id);
                            prop_assert_eq!(table, Some(ns.table(id)));
                            prop_assert!(!RESERVED_TABLES.contains(&ns.table(id)));
                            prop_assert_eq!(ns.id_of_table(ns.table(id)), Some(id));
                            let (mark, inbound) = (ns.mark(id), ns.inbound_mark(id));
                            prop_assert!(mark != 0 && mark & !c.mark_mask == 0);
                            prop_assert!(inbound & !c.mark_mask == 0);
                            prop_assert_eq!(mark & ns.inbound_flag(), 0);
                            prop_assert_eq!(mark >> ns.shift(), id);
                        }
                        let layout = c.layout().unwrap();
                        prop_assert_eq!(layout.tables, ns.table(1)..=ns.table(max));
                        prop_assert!(c.health.interval_ms >= INTERVAL_MS_MIN);
                        prop_assert!(c.health.down_after >= 1 && c.health.up_after >= 1);
                        for u in c.uplinks.values() {
                            prop_assert!((1..=MAX_WEIGHT).contains(&u.weight));
                        }
                    }
                    Err(Error::Config { line, column, key, reason, .. }) => {
                        prop_assert!(line >= 1 && column >= 1, "{text:?}: {reason}");
                        match key {
                            Some(k) => prop_assert!(!k.is_empty()),
                            None => prop_assert!(reason.starts_with("not valid TOML"), "{text:?}: {reason}"),
                        }
                    }
                    Err(e) => prop_assert!(false, "{text:?}: unexpected error {e}"),
                }
            }
        }
    }
}
