//! The example configuration shipped in the packages, and the README's key table, must
//! stay in step with the config types: the example, uncommented, parses, shows every
//! key and its values are the defaults; the README names every key. The list of keys
//! comes from the types themselves (`key_paths`, read from their `Deserialize`), so a
//! key added later is caught here without touching this file.

use std::collections::BTreeSet;
use std::path::Path;

use nm_multiwan::config::{Config, KEYS, key_paths};

const EXAMPLE: &str = include_str!("../packaging/config.example.toml");
const README: &str = include_str!("../README.md");

/// Settings are commented as `#key = value` / `#[table]`; explanations as `# text`.
fn uncommented() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every key of the config types, in the notation of `KEYS` (`uplinks.*.weight`).
fn keys_of_the_types() -> BTreeSet<String> {
    key_paths::<Config>().into_iter().collect()
}

/// The keys a document shows, with the names of a map's entries as `*` and the
/// elements of an array of tables as `[]`, as the types' keys are written.
fn keys_shown(
    table: &toml::Table,
    prefix: &str,
    types: &BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    let is_map = !prefix.is_empty() && types.contains(&format!("{prefix}.*"));
    for (name, value) in table {
        let part = if is_map { "*" } else { name.as_str() };
        let path = if prefix.is_empty() {
            part.to_string()
        } else {
            format!("{prefix}.{part}")
        };
        out.insert(path.clone());
        match value {
            toml::Value::Table(t) => keys_shown(t, &path, types, out),
            toml::Value::Array(items)
                if types.iter().any(|k| k.starts_with(&format!("{path}[]"))) =>
            {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        keys_shown(t, &format!("{path}[]"), types, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The config as JSON, without the keys whose default (in `reference`, whose map
/// entries hold their type's defaults) is to be left out (`null`): the example shows
/// those with a sample value.
fn comparable(config: &Config, reference: &Config) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value, default: &serde_json::Value) {
        if let (Some(map), Some(defaults)) = (v.as_object_mut(), default.as_object()) {
            map.retain(|k, _| defaults.get(k).is_none_or(|d| !d.is_null()));
            for (k, v) in map.iter_mut() {
                if let Some(d) = defaults.get(k) {
                    strip(v, d);
                }
            }
        }
    }
    let default = serde_json::to_value(reference).unwrap();
    let mut v = serde_json::to_value(config).unwrap();
    strip(&mut v, &default);
    v
}

#[test]
fn commented_example_is_the_defaults() {
    let config = Config::parse(EXAMPLE, Path::new("config.example.toml")).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn uncommented_example_parses_to_the_defaults() {
    let text = uncommented();
    let config = Config::parse(&text, Path::new("config.example.toml"))
        .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    // Map entries shown as examples hold the defaults of their type: the same config
    // without them, with each entry's defaults, must be the defaults.
    // Policies have no defaults to show: the example's one is checked key by key.
    let expected = Config {
        uplinks: config
            .uplinks
            .keys()
            .map(|name| (name.clone(), Default::default()))
            .collect(),
        policy: config.policy.clone(),
        ..Config::default()
    };
    assert!(!expected.uplinks.is_empty(), "the example shows an uplink");
    let [policy] = config.policy.as_slice() else {
        panic!("the example shows one policy: {:?}", config.policy);
    };
    assert_eq!(
        policy.mode,
        nm_multiwan::config::Mode::Balance,
        "the default mode"
    );
    assert!(policy.fallback, "the default fallback");
    assert_eq!(policy.sticky_secs(), Some(600));
    assert_eq!(policy.port_ranges(), [(443, 443), (8000, 8100)]);
    assert_eq!(
        comparable(&config, &expected),
        comparable(&expected, &expected)
    );
}

#[test]
fn uncommented_example_shows_every_key() {
    let types = keys_of_the_types();
    let table: toml::Table = uncommented().parse().unwrap();
    let mut shown = BTreeSet::new();
    keys_shown(&table, "", &types, &mut shown);
    let missing: Vec<&String> = types.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "packaging/config.example.toml does not show {missing:?}"
    );
    assert_eq!(shown, types);
}

/// The README's Configuration table has a row for every key that holds a value
/// (`uplinks.NAME.weight` for `uplinks.*.weight`).
#[test]
fn readme_lists_every_key() {
    let types = keys_of_the_types();
    let section = README
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Configuration section");
    let leaves = types.iter().filter(|k| {
        !types.iter().any(|other| {
            other.starts_with(&format!("{k}.")) || other.starts_with(&format!("{k}[]"))
        })
    });
    let mut missing = Vec::new();
    for key in leaves {
        let shown = key.replace('*', "NAME");
        if !section.contains(&format!("| `{shown}` |")) {
            missing.push(shown);
        }
    }
    assert!(missing.is_empty(), "README's key table lacks {missing:?}");
}

/// The error words of every key are those the README gives for its range: each
/// integer key's row shows its range.
#[test]
fn readme_gives_every_integer_range() {
    for k in KEYS {
        if let nm_multiwan::config::Accepts::Integer { min, max } = k.accepts {
            let shown = k.path.replace('*', "NAME");
            let row = README
                .lines()
                .find(|l| l.starts_with(&format!("| `{shown}` |")))
                .unwrap_or_else(|| panic!("README has no row for {shown}"));
            assert!(
                row.contains(&format!("{min}..={max}")),
                "README's row for {shown} does not give its range {min}..={max}: {row}"
            );
        }
    }
}
