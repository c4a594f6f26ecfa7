//! The example configuration shipped in the packages must stay in step with the
//! parser: uncommented, it parses, shows every key, and its values are the defaults.

use std::path::Path;

use nm_multiwan::config::{Config, UplinkConfig};

const EXAMPLE: &str = include_str!("../packaging/config.example.toml");

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
    let mut expected = Config::default();
    expected
        .uplinks
        .insert("Wired connection 1".into(), UplinkConfig::default());
    assert_eq!(config, expected);
}

#[test]
fn uncommented_example_shows_every_key() {
    let value: toml::Table = uncommented().parse().unwrap();
    let keys = |t: &toml::Table| {
        let mut k: Vec<String> = t.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&value),
        [
            "health",
            "mark_mask",
            "rule_priority",
            "table_base",
            "uplinks"
        ]
    );
    let uplink = value["uplinks"]["Wired connection 1"].as_table().unwrap();
    assert_eq!(keys(uplink), ["enabled", "weight"]);
    let health = value["health"].as_table().unwrap();
    assert_eq!(
        keys(health),
        ["down_after", "interval_ms", "targets", "up_after"]
    );
}
