//! The configuration's keys: what each one accepts, in words (for error messages), and
//! the list of keys read from the types themselves ([`key_paths`]), so that the table
//! here, the example file and the README can be checked against the types.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::{
    INTERVAL_MS_MAX, INTERVAL_MS_MIN, MAX_RTT_MS_MAX, MAX_WEIGHT, RESERVED_TABLES, RULE_PRIORITIES,
    RULE_PRIORITY_MAX, WINDOW_MAX, WINDOW_MIN,
};

/// What a key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// An integer in `min..=max`; checked for every such key by [`super::Config::parse`].
    Integer {
        min: u64,
        max: u64,
    },
    Bool,
    /// A table holding the keys listed under it.
    Table,
    /// A table of names the user chooses (`*` in the path), each one a table.
    Names,
    /// Anything else; the words say what, the key's own check enforces it.
    Form(&'static str),
}

/// One key of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted path; `*` stands for a name the user chooses (`uplinks.*.weight`), `[]`
    /// after a name for the elements of an array of tables.
    pub path: &'static str,
    pub accepts: Accepts,
    /// Appended to the accepted form: why the range, or what else must hold.
    pub note: &'static str,
}

/// Every key. A new field in the config types needs its entry here (a test compares
/// this list with [`key_paths`]), a line in `packaging/config.example.toml` and a row
/// in the README (tests check both).
pub const KEYS: &[Key] = &[
    Key {
        path: "mark_mask",
        accepts: Accepts::Form(
            "a mark mask such as \"0x3f000000\": one run of at least 3 contiguous bits, \
             as a hex string, a decimal string or an integer",
        ),
        note: "",
    },
    Key {
        path: "table_base",
        accepts: Accepts::Integer {
            min: 1,
            max: u32::MAX as u64,
        },
        note: "our tables table_base+1 ..= table_base+N, N the number of uplinks mark_mask \
               allows (31 by default), must stay at most 4294967295 and avoid the kernel's \
               252..=255",
    },
    Key {
        path: "rule_priority",
        accepts: Accepts::Integer {
            min: 1,
            max: RULE_PRIORITY_MAX as u64,
        },
        note: "our rules use rule_priority ..= rule_priority+2, all before the main table's \
               rule at 32766",
    },
    Key {
        path: "ipv6",
        accepts: Accepts::Bool,
        note: "leave it out to balance IPv6 as soon as two uplinks have it",
    },
    Key {
        path: "firewall",
        accepts: Accepts::Form("\"auto\", \"nftables\" or \"iptables\""),
        note: "auto: nftables where the kernel has nf_tables, iptables otherwise",
    },
    Key {
        path: "metered",
        accepts: Accepts::Form("\"backup\", \"balance\" or \"never\""),
        note: "what an uplink NetworkManager calls metered is for: backup carries new \
               connections only while no unmetered uplink is usable",
    },
    Key {
        path: "lan",
        accepts: Accepts::Form(
            "a list of interfaces or NetworkManager connection ids, such as [\"br0\", \"Office LAN\"]",
        ),
        note: "routed LANs whose connections to the outside are balanced, besides the shared \
               connections (ipv4.method shared), which are LANs anyway",
    },
    Key {
        path: "sticky",
        accepts: Accepts::Form(
            "a time such as \"30s\", \"10m\", \"2h\" (s, m, h, d), at least 1 s and at most a day",
        ),
        note: "makes the general balance (what no policy decides) sticky",
    },
    Key {
        path: "sticky_by",
        accepts: Accepts::Form("\"destination\" or \"client\""),
        note: "client: each LAN client keeps one uplink (with sticky; the machine's own \
               connections keep balancing)",
    },
    Key {
        path: "uplinks",
        accepts: Accepts::Names,
        note: "each name a NetworkManager connection id or an interface name",
    },
    Key {
        path: "uplinks.*",
        accepts: Accepts::Table,
        note: "",
    },
    Key {
        path: "uplinks.*.weight",
        accepts: Accepts::Integer {
            min: 1,
            max: MAX_WEIGHT as u64,
        },
        note: "",
    },
    Key {
        path: "uplinks.*.enabled",
        accepts: Accepts::Bool,
        note: "",
    },
    Key {
        path: "uplinks.*.role",
        accepts: Accepts::Form("\"primary\" or \"backup\""),
        note: "leave it out to follow `metered`",
    },
    Key {
        path: "health",
        accepts: Accepts::Table,
        note: "",
    },
    Key {
        path: "health.targets",
        accepts: Accepts::Form(
            "a list of probe targets such as [\"1.1.1.1\", \"2620:fe::fe\", \
             \"tcp:192.0.2.1:443\", \"tcp:[2001:db8::1]:443\"]: IPv4 or IPv6 addresses (or \
             icmp:ADDRESS) and tcp:ADDRESS:PORT; [] turns probing off",
        ),
        note: "",
    },
    Key {
        path: "health.interval_ms",
        accepts: Accepts::Integer {
            min: INTERVAL_MS_MIN,
            max: INTERVAL_MS_MAX,
        },
        note: "",
    },
    Key {
        path: "health.down_after",
        accepts: Accepts::Integer {
            min: 1,
            max: u32::MAX as u64,
        },
        note: "",
    },
    Key {
        path: "health.up_after",
        accepts: Accepts::Integer {
            min: 1,
            max: u32::MAX as u64,
        },
        note: "",
    },
    Key {
        path: "health.max_loss",
        accepts: Accepts::Integer { min: 1, max: 100 },
        note: "percent; 100 never takes an uplink out for loss",
    },
    Key {
        path: "health.max_rtt_ms",
        accepts: Accepts::Integer {
            min: 1,
            max: MAX_RTT_MS_MAX,
        },
        note: "",
    },
    Key {
        path: "health.window",
        accepts: Accepts::Integer {
            min: WINDOW_MIN as u64,
            max: WINDOW_MAX as u64,
        },
        note: "probes",
    },
    Key {
        path: "health.reset_connections",
        accepts: Accepts::Bool,
        note: "",
    },
    Key {
        path: "policy",
        accepts: Accepts::Form(
            "an array of tables, one [[policy]] each, with keys name, to, ports, protocol, \
             from, user, uplinks, mode, sticky, sticky_by, fallback",
        ),
        note: "checked in order, the first that matches a new connection decides",
    },
    Key {
        path: "policy[].name",
        accepts: Accepts::Form("a name, unique among the policies (shown by status and explain)"),
        note: "",
    },
    Key {
        path: "policy[].to",
        accepts: Accepts::Form(
            "a list of destinations: prefixes or addresses of either family such as \
             \"10.0.0.0/8\" (host bits clear), or host names such as \"portal.example.edu\"",
        ),
        note: "",
    },
    Key {
        path: "policy[].from",
        accepts: Accepts::Form(
            "a list of sources: prefixes or addresses of either family such as \
             \"10.42.0.0/24\" (host bits clear)",
        ),
        note: "LAN clients in router mode",
    },
    Key {
        path: "policy[].ports",
        accepts: Accepts::Form(
            "a list of destination ports or ranges such as [\"443\", \"8000-8100\"], each \
             1..=65535, low end first",
        ),
        note: "only with a protocol that has ports (tcp, udp, sctp, dccp, udplite) or none",
    },
    Key {
        path: "policy[].protocol",
        accepts: Accepts::Form(
            "tcp, udp, icmp, icmpv6, sctp, dccp, udplite, gre, esp, ah or a protocol number 0..=255",
        ),
        note: "",
    },
    Key {
        path: "policy[].user",
        accepts: Accepts::Form("a local user name or a uid"),
        note: "",
    },
    Key {
        path: "policy[].uplinks",
        accepts: Accepts::Form(
            "a list of uplinks, each a NetworkManager connection id or an interface name, \
             in order of preference",
        ),
        note: "",
    },
    Key {
        path: "policy[].mode",
        accepts: Accepts::Form("\"balance\", \"failover\" or \"direct\""),
        note: "",
    },
    Key {
        path: "policy[].sticky",
        accepts: Accepts::Form(
            "a time such as \"30s\", \"10m\", \"2h\" (s, m, h, d), at least 1 s and at most a day",
        ),
        note: "mode = \"balance\" only",
    },
    Key {
        path: "policy[].sticky_by",
        accepts: Accepts::Form("\"destination\" or \"client\""),
        note: "client: each source address keeps one uplink (with sticky)",
    },
    Key {
        path: "policy[].fallback",
        accepts: Accepts::Bool,
        note: "false: fail the policy's connections while none of its uplinks is usable",
    },
];

// The words of `rule_priority` and `table_base` spell these values out.
const _: () = assert!(RULE_PRIORITIES == 3 && RULE_PRIORITY_MAX + RULE_PRIORITIES == 32766);
const _: () = assert!(*RESERVED_TABLES.start() == 252 && *RESERVED_TABLES.end() == 255);

impl Key {
    /// What the key accepts, in words.
    pub fn expects(&self) -> String {
        let mut words = match self.accepts {
            Accepts::Integer { min, max } => format!("an integer {min}..={max}"),
            Accepts::Bool => "true or false".to_string(),
            Accepts::Table => format!("a table of {}", self.children().join(", ")),
            Accepts::Names => {
                let each = format!("{}.*", self.path);
                let keys = KEYS
                    .iter()
                    .find(|k| k.path == each)
                    .map(|k| k.children().join(", "))
                    .unwrap_or_default();
                format!("a table of names, each a table of {keys}")
            }
            Accepts::Form(words) => words.to_string(),
        };
        if !self.note.is_empty() {
            words.push_str(" (");
            words.push_str(self.note);
            words.push(')');
        }
        words
    }

    /// The last part of the keys directly under this one.
    pub fn children(&self) -> Vec<&'static str> {
        children_of(self.path)
    }
}

fn children_of(pattern: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|k| {
            let rest = if pattern.is_empty() {
                k.path
            } else {
                k.path.strip_prefix(pattern)?.strip_prefix('.')?
            };
            (!rest.contains('.') && !rest.is_empty()).then_some(rest)
        })
        .collect()
}

/// One step of a path into the file: a key, or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn key(s: impl Into<String>) -> Seg {
        Seg::Key(s.into())
    }
}

/// The key a path is about: `uplinks.wired.weight`, `health.targets[1]` (a key with
/// a name that is not bare is quoted, as in TOML).
pub fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if is_bare(k) {
                    out.push_str(k);
                } else {
                    out.push('"');
                    for c in k.chars() {
                        match c {
                            '"' | '\\' => {
                                out.push('\\');
                                out.push(c);
                            }
                            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn is_bare(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The entry of [`KEYS`] a path is about. An index into an array whose elements are
/// plain values (`health.targets[1]`) is about the array's key.
pub fn find(path: &[Seg]) -> Option<&'static Key> {
    find_exact(path).or_else(|| {
        let end = path
            .iter()
            .rposition(|s| matches!(s, Seg::Key(_)))
            .map_or(0, |i| i + 1);
        (end < path.len())
            .then(|| find_exact(&path[..end]))
            .flatten()
    })
}

fn find_exact(path: &[Seg]) -> Option<&'static Key> {
    let pattern = pattern_of(path)?;
    KEYS.iter().find(|k| matches(k.path, &pattern))
}

/// The path as a pattern's segments: keys, with `[]` appended for an index.
fn pattern_of(path: &[Seg]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for seg in path {
        match seg {
            Seg::Key(k) => out.push(k.clone()),
            Seg::Index(_) => out.last_mut()?.push_str("[]"),
        }
    }
    Some(out)
}

fn matches(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len()
        && parts.iter().zip(path).all(|(p, s)| {
            *p == s || *p == "*" && !s.ends_with("[]") || *p == "*[]" && s.ends_with("[]")
        })
}

/// The keys allowed directly under `parent` (the top level when empty).
pub fn allowed_under(parent: &[Seg]) -> Vec<&'static str> {
    if parent.is_empty() {
        return children_of("");
    }
    find(parent).map(|k| k.children()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// The keys of a type, from its `Deserialize` implementation.

/// Every key `T` accepts, as dotted paths in the notation of [`Key::path`] (`*` for a
/// map's names, `[]` for the elements of an array of tables), in declaration order.
/// Read from `T`'s `Deserialize` implementation: a probe deserializer presents one
/// path at a time and records what the type asks for there (a struct and its fields,
/// a map, an array, or a plain value), so no list is kept by hand.
pub fn key_paths<T: for<'de> Deserialize<'de>>() -> Vec<String> {
    let mut out = Vec::new();
    walk::<T>(&mut Vec::new(), &mut out);
    out
}

fn walk<T: for<'de> Deserialize<'de>>(path: &mut Vec<String>, out: &mut Vec<String>) {
    // Deep enough for any configuration; stops a recursive type.
    if path.len() > 8 {
        return;
    }
    let children: Vec<String> = match shape_at::<T>(path) {
        Shape::Struct(fields) => fields.iter().map(|f| f.to_string()).collect(),
        Shape::Map => vec!["*".into()],
        Shape::Seq => {
            path.push("[]".into());
            let element = shape_at::<T>(path);
            path.pop();
            match element {
                Shape::Struct(_) | Shape::Map => vec!["[]".into()],
                _ => vec![],
            }
        }
        Shape::Leaf => vec![],
    };
    for child in children {
        path.push(child.clone());
        if child != "[]" {
            out.push(join(path));
        }
        walk::<T>(path, out);
        path.pop();
    }
}

fn join(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if p == "[]" {
            s.push_str("[]");
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Struct(&'static [&'static str]),
    Map,
    Seq,
    Leaf,
}

fn shape_at<T: for<'de> Deserialize<'de>>(path: &[String]) -> Shape {
    let found = Rc::new(RefCell::new(None));
    // The probe always ends in an error once it has seen the path's end.
    let _ = T::deserialize(Probe {
        rest: path,
        found: found.clone(),
    });
    found.take().unwrap_or(Shape::Leaf)
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

struct Probe<'a> {
    rest: &'a [String],
    found: Rc<RefCell<Option<Shape>>>,
}

impl Probe<'_> {
    fn at_end(&self, shape: Shape) -> Result<(), Stop> {
        if self.rest.is_empty() {
            *self.found.borrow_mut() = Some(shape);
            Err(Stop)
        } else {
            Ok(())
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.at_end(Shape::Leaf)?;
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        self.at_end(Shape::Struct(fields))?;
        visitor.visit_map(OneEntry {
            key: Some(&self.rest[0]),
            value: Probe {
                rest: &self.rest[1..],
                found: self.found.clone(),
            },
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.at_end(Shape::Map)?;
        visitor.visit_map(OneEntry {
            key: Some(&self.rest[0]),
            value: Probe {
                rest: &self.rest[1..],
                found: self.found.clone(),
            },
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.at_end(Shape::Seq)?;
        if self.rest[0] != "[]" {
            return Err(Stop);
        }
        visitor.visit_seq(OneElement(Some(Probe {
            rest: &self.rest[1..],
            found: self.found.clone(),
        })))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

struct OneEntry<'a> {
    key: Option<&'a str>,
    value: Probe<'a>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(k) => seed
                .deserialize(IntoDeserializer::<Stop>::into_deserializer(k))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Probe {
            rest: self.value.rest,
            found: self.value.found.clone(),
        })
    }
}

struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<E: DeserializeSeed<'de>>(
        &mut self,
        seed: E,
    ) -> Result<Option<E::Value>, Stop> {
        match self.0.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        plain: u32,
        maybe: Option<bool>,
        list: Vec<String>,
        named: BTreeMap<String, Inner>,
        inner: Inner,
        rows: Vec<Inner>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: u8,
        b: String,
    }

    #[test]
    fn key_paths_come_from_the_type() {
        assert_eq!(
            key_paths::<Outer>(),
            [
                "plain",
                "maybe",
                "list",
                "named",
                "named.*",
                "named.*.a",
                "named.*.b",
                "inner",
                "inner.a",
                "inner.b",
                "rows",
                "rows[].a",
                "rows[].b"
            ]
        );
    }

    #[test]
    fn paths_find_their_key() {
        let k = |s: &str| Seg::key(s);
        let weight = [k("uplinks"), k("Wired connection 1"), k("weight")];
        assert_eq!(find(&weight).unwrap().path, "uplinks.*.weight");
        assert_eq!(dotted(&weight), "uplinks.\"Wired connection 1\".weight");
        let target = [k("health"), k("targets"), Seg::Index(1)];
        assert_eq!(find(&target).unwrap().path, "health.targets");
        assert_eq!(dotted(&target), "health.targets[1]");
        assert!(find(&[k("uplinks"), k("x"), k("wieght")]).is_none());
        assert_eq!(
            allowed_under(&[k("uplinks"), k("x")]),
            ["weight", "enabled", "role"]
        );
        assert_eq!(allowed_under(&[])[0], "mark_mask");
    }

    #[test]
    fn words_name_the_range() {
        let find = |p: &str| KEYS.iter().find(|k| k.path == p).unwrap();
        assert_eq!(find("uplinks.*.weight").expects(), "an integer 1..=100");
        assert!(
            find("rule_priority")
                .expects()
                .starts_with("an integer 1..=32763")
        );
        assert_eq!(
            find("health").expects(),
            "a table of targets, interval_ms, down_after, up_after, max_loss, max_rtt_ms, \
             window, reset_connections"
        );
        assert!(find("uplinks").expects().contains("weight, enabled"));
    }
}
