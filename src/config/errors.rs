//! Config errors as the user reads them: file, line and column, the dotted key, what
//! was found and what the key accepts.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::keys::{self, Seg, allowed_under, dotted};
use crate::error::Error;

/// A value the checks refuse, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: Vec<Seg>,
    /// The value as the check saw it, shown when the file does not spell it out (a
    /// default that does not fit with another key's value).
    pub value: String,
    /// Why, when more than the accepted form is needed to say it.
    pub reason: Option<String>,
    /// The key to name instead when `key` is not in the file (the other key of a
    /// combination that does not fit).
    pub instead: Option<Vec<Seg>>,
}

impl Invalid {
    pub fn new(key: Vec<Seg>, value: impl ToString) -> Self {
        Invalid {
            key,
            value: value.to_string(),
            reason: None,
            instead: None,
        }
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn or_else_blame(mut self, key: Vec<Seg>) -> Self {
        self.instead = Some(key);
        self
    }
}

/// Builds config errors for one file.
pub struct Diagnose<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// The parsed document, to find where a key is (absent after a syntax error).
    pub doc: Option<&'a DeTable<'a>>,
}

impl Diagnose<'_> {
    fn error(&self, offset: Option<usize>, key: Option<&[Seg]>, reason: String) -> Error {
        let (line, column) = offset.map_or((0, 0), |o| line_col(self.text, o));
        Error::Config {
            path: self.path.to_path_buf(),
            line,
            column,
            key: key.map(dotted),
            reason,
        }
    }

    /// What the key accepts, `"; expects ..."`, or nothing for a key we do not know.
    fn expects(key: &[Seg]) -> String {
        keys::find(key).map_or_else(String::new, |k| format!("; expects {}", k.expects()))
    }

    fn found(&self, span: &Range<usize>) -> String {
        snippet(self.text.get(span.clone()).unwrap_or(""))
    }

    /// A document TOML itself refuses: bad syntax, a duplicate key, a table defined
    /// twice. The key is read from the text around the error, best effort.
    pub fn syntax(&self, e: &toml::de::Error) -> Error {
        let span = e.span();
        let offset = span.as_ref().map(|s| s.start);
        let key = offset.and_then(|o| key_at(self.text, o));
        let message = e.message().trim();
        match key {
            Some(key) if message.starts_with("duplicate key") => {
                let is_table =
                    keys::find(&key).is_some_and(|k| matches!(k.accepts, keys::Accepts::Table));
                let what = if is_table {
                    "table defined twice (one [table] header per table)"
                } else {
                    "duplicate key (each key may be set once)"
                };
                let reason = format!("{what}{}", Self::expects(&key));
                self.error(offset, Some(&key), reason)
            }
            Some(key) => {
                let reason = format!("not valid TOML: {message}{}", Self::expects(&key));
                self.error(offset, Some(&key), reason)
            }
            None => self.error(offset, None, format!("not valid TOML: {message}")),
        }
    }

    /// A value of the wrong type or form, or an unknown key, as serde reports it.
    pub fn deserialize(&self, e: &serde_path_to_error::Error<toml::de::Error>) -> Error {
        let key = serde_path(e.path());
        let inner = e.inner();
        let span = inner.span().or_else(|| self.span_of(&key).map(|(k, _)| k));
        let offset = span.as_ref().map(|s| s.start);
        if inner.message().starts_with("unknown field") {
            let parent = &key[..key.len().saturating_sub(1)];
            let allowed = allowed_under(parent);
            let reason = if parent.is_empty() {
                format!(
                    "unknown key; the keys at the top level are {}",
                    allowed.join(", ")
                )
            } else {
                format!(
                    "unknown key; the keys of {} are {}",
                    dotted(parent),
                    allowed.join(", ")
                )
            };
            return self.error(offset, Some(&key), reason);
        }
        let reason = match (keys::find(&key), &span) {
            (Some(k), Some(span)) => {
                format!("found {}; expects {}", self.found(span), k.expects())
            }
            (Some(k), None) => format!("{}; expects {}", inner.message(), k.expects()),
            (None, _) => inner.message().to_string(),
        };
        self.error(offset, Some(&key), reason)
    }

    /// A value the checks after parsing refuse.
    pub fn invalid(&self, invalid: &Invalid) -> Error {
        let mut key = &invalid.key;
        let mut at = self.span_of(key);
        if at.is_none()
            && let Some(other) = &invalid.instead
            && let Some(span) = self.span_of(other)
        {
            key = other;
            at = Some(span);
        }
        let (offset, found) = match &at {
            Some((_, Some(value))) => (Some(value.start), self.found(value)),
            Some((key_span, None)) => (Some(key_span.start), invalid.value.clone()),
            None => (None, format!("{} (the default)", invalid.value)),
        };
        let because = invalid
            .reason
            .as_ref()
            .map_or_else(String::new, |r| format!(" ({r})"));
        let reason = format!("found {found}{because}{}", Self::expects(key));
        self.error(offset, Some(key), reason)
    }

    /// Where a key is in the document: its key's span and its value's span.
    fn span_of(&self, key: &[Seg]) -> Option<(Range<usize>, Option<Range<usize>>)> {
        let mut table = self.doc?;
        let mut value: Option<&DeValue> = None;
        let mut spans = None;
        for seg in key {
            match seg {
                Seg::Key(name) => {
                    if let Some(v) = value {
                        table = v.as_table()?;
                    }
                    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
                    spans = Some((k.span(), Some(v.span())));
                    value = Some(v.get_ref());
                }
                Seg::Index(i) => {
                    let element = value?.as_array()?.get(*i)?;
                    spans = spans.map(|(k, _)| (k, Some(element.span())));
                    value = Some(element.get_ref());
                }
            }
        }
        // Tables have no useful value span (a [header] table spans nothing).
        spans.map(|(k, v)| match value {
            Some(DeValue::Table(_)) => (k, None),
            _ => (k, v.filter(|v| !v.is_empty())),
        })
    }
}

fn serde_path(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// A value as written, on one line and short.
fn snippet(raw: &str) -> String {
    let one_line: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 48 {
        let cut: String = one_line.chars().take(45).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |n| n + 1);
    (line, before[start..].chars().count() + 1)
}

/// The dotted key an offset in the text is about, read from the text: the last
/// `[table]` header before it and the key on its line. Best effort (a multi-line
/// string that looks like a header misleads it); used for errors TOML raises before
/// any key is known, such as a duplicate key.
pub fn key_at(text: &str, offset: usize) -> Option<Vec<Seg>> {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |n| n + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |n| offset + n);
    let line = &text[line_start..line_end];
    let at = offset - line_start;
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    if trimmed.starts_with('[') {
        // The header itself, up to the part the offset is in.
        let inner = trimmed.trim_start_matches('[');
        let start = indent + (trimmed.len() - inner.len());
        let parts = split_dotted(inner)?;
        let key: Vec<Seg> = parts
            .iter()
            .take_while(|(_, r)| start + r.start <= at)
            .map(|(k, _)| Seg::key(k.clone()))
            .collect();
        return (!key.is_empty())
            .then_some(key)
            .or_else(|| parts.first().map(|(k, _)| vec![Seg::key(k.clone())]));
    }
    let mut key = header_before(&text[..line_start]).unwrap_or_default();
    let (lhs, _) = trimmed.split_once('=').unwrap_or((trimmed, ""));
    let parts = split_dotted(lhs)?;
    let own: Vec<Seg> = if at < indent + lhs.len() {
        parts
            .iter()
            .take_while(|(_, r)| indent + r.start <= at)
            .map(|(k, _)| Seg::key(k.clone()))
            .collect()
    } else {
        parts.into_iter().map(|(k, _)| Seg::Key(k)).collect()
    };
    if own.is_empty() {
        return None;
    }
    key.extend(own);
    Some(key)
}

/// The path of the last `[table]` or `[[array]]` header in `text`.
fn header_before(text: &str) -> Option<Vec<Seg>> {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))?;
    let inner = line.trim_start_matches('[');
    let parts = split_dotted(inner)?;
    Some(parts.into_iter().map(|(k, _)| Seg::Key(k)).collect())
}

/// Splits the start of `s` as a dotted TOML key (`a."b c".d`), stopping at the first
/// character that cannot continue it (`]`, `=`, a space after a complete key...).
/// Returns each part with its byte range in `s`.
fn split_dotted(s: &str) -> Option<Vec<(String, Range<usize>)>> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let start = i;
        let name = match bytes.get(i) {
            Some(b'"') => {
                let mut name = String::new();
                let mut chars = s[i + 1..].char_indices();
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = Some(i + 1 + j + 1);
                            break;
                        }
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                name.push(e);
                            }
                        }
                        c => name.push(c),
                    }
                }
                i = end?;
                name
            }
            Some(b'\'') => {
                let close = s[i + 1..].find('\'')?;
                let name = s[i + 1..i + 1 + close].to_string();
                i = i + 1 + close + 1;
                name
            }
            _ => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
                {
                    i += 1;
                }
                if i == start {
                    break;
                }
                s[start..i].to_string()
            }
        };
        parts.push((name, start..i));
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
        } else {
            break;
        }
    }
    (!parts.is_empty()).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(key: Option<Vec<Seg>>) -> Option<String> {
        key.map(|k| dotted(&k))
    }

    #[test]
    fn key_at_reads_headers_and_keys() {
        let text = "a = 1\n[uplinks.\"Wired 1\"]\nweight = 2\n  enabled.x = 3\n[health]\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(names(key_at(text, 0)), Some("a".into()));
        assert_eq!(
            names(key_at(text, at("weight"))),
            Some("uplinks.\"Wired 1\".weight".into())
        );
        assert_eq!(
            names(key_at(text, at("2\n"))),
            Some("uplinks.\"Wired 1\".weight".into())
        );
        assert_eq!(
            names(key_at(text, at("x ="))),
            Some("uplinks.\"Wired 1\".enabled.x".into())
        );
        assert_eq!(
            names(key_at(text, at("\"Wired"))),
            Some("uplinks.\"Wired 1\"".into())
        );
        assert_eq!(names(key_at(text, at("health"))), Some("health".into()));
        assert_eq!(names(key_at("= 3", 0)), None);
        assert_eq!(names(key_at("", 0)), None);
        assert_eq!(names(key_at("é", 1)), None);
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("a\nbé = x", 7), (2, 5));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
