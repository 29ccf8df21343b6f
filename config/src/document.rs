//! The parsed file with its spans: where every key is, which keys are
//! unknown, and which values have the wrong type.
//!
//! serde stops at the first error. To report every problem at once, this
//! module (1) walks the spanned tree against [`raw::schema`] and removes every
//! unknown key, reporting each, then (2) deserializes, and on a type error
//! removes the offending key and tries again, so each bad value is reported
//! once and the rest of the file is still checked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::problem::{Problem, Severity};
use crate::raw::{self, Kind, RawConfig};

/// How a key was written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A table (`[cluster]`, or an element of `[[nodes]]`): setting a table
    /// does not set the keys inside it.
    Table,
    /// An array: it replaces the default array as a whole.
    Array,
    /// A scalar value.
    Value,
}

/// A key present in the file.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub written: Written,
}

/// Everything learnt from the file besides the values themselves.
#[derive(Debug, Clone)]
pub struct Document {
    pub origin: PathBuf,
    /// Every key path in the file (`cluster.voters`, `nodes[1]`,
    /// `nodes[1].name`, `metrics.rules[0].labels.job`) and where it is.
    pub keys: BTreeMap<String, Located>,
    /// Key paths removed because their value had the wrong type: checks on
    /// them (or that depend on them) would only repeat the same problem.
    pub broken: Vec<String>,
}

impl Document {
    /// The location of `key`, or of its nearest ancestor written in the file.
    pub fn locate(&self, key: &str) -> Option<Located> {
        let mut k = key;
        loop {
            if let Some(l) = self.keys.get(k) {
                return Some(*l);
            }
            k = parent(k)?;
        }
    }

    /// Whether the file itself wrote `key` (or an array containing it).
    pub fn sets(&self, key: &str) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        let mut k = key;
        while let Some(p) = parent(k) {
            if matches!(self.keys.get(p), Some(l) if l.written != Written::Table) {
                return true;
            }
            k = p;
        }
        false
    }

    /// Whether `key`, an ancestor or a descendant of it had a type error.
    pub fn is_broken(&self, key: &str) -> bool {
        self.broken
            .iter()
            .any(|b| b == key || is_under(key, b) || is_under(b, key))
    }
}

/// `child` is strictly below `ancestor` (`a.b[1].c` is under `a.b`).
fn is_under(child: &str, ancestor: &str) -> bool {
    child.len() > ancestor.len()
        && child.starts_with(ancestor)
        && matches!(child.as_bytes()[ancestor.len()], b'.' | b'[')
}

/// `a.b[1].c` → `a.b[1]` → `a.b` → `a` → None.
fn parent(key: &str) -> Option<&str> {
    let cut = key.rfind(['.', '['])?;
    Some(&key[..cut])
}

/// 1-based line and column (in characters) of a byte offset.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a Path,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    fn error(&mut self, span: Option<Range<usize>>, key: Option<String>, message: String) {
        let pos = span.map(|s| position(self.text, s.start));
        self.problems.push(Problem {
            severity: Severity::Error,
            file: self.origin.to_path_buf(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            key,
            message,
        });
    }
}

/// Parse and deserialize `text`. Returns the raw config (None if the file
/// could not be read as TOML at all), the document, and every problem found.
pub fn read(text: &str, origin: &Path) -> (Option<RawConfig>, Document, Vec<Problem>) {
    let mut ctx = Ctx {
        text,
        origin,
        problems: Vec::new(),
    };
    let mut doc = Document {
        origin: origin.to_path_buf(),
        keys: BTreeMap::new(),
        broken: Vec::new(),
    };
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            ctx.error(
                e.span(),
                None,
                format!("TOML syntax: {}", e.message().trim()),
            );
        }
        return (None, doc, ctx.problems);
    }
    index_table(text, "", root.get_ref(), &mut doc.keys);
    strip_unknown(&mut ctx, "", root.get_mut(), &raw::schema());

    // Deserialize; on a type error, drop the offending key and retry. Each
    // round removes one key, so this ends.
    let mut attempts = doc.keys.len() + 2;
    loop {
        let de = toml::de::Deserializer::from(root.clone());
        match RawConfig::deserialize(de) {
            Ok(raw) => return (Some(raw), doc, ctx.problems),
            Err(e) => {
                attempts = attempts.saturating_sub(1);
                let message = friendly(e.message());
                let span = e.span();
                let path = span.clone().and_then(|s| find_key(root.get_ref(), &s));
                match path {
                    Some(path) if attempts > 0 && remove(root.get_mut(), &path) => {
                        let key = render_path(&path);
                        ctx.error(span, Some(key.clone()), message);
                        doc.broken.push(key);
                    }
                    _ => {
                        ctx.error(span, None, message);
                        return (None, doc, ctx.problems);
                    }
                }
            }
        }
    }
}

fn index_table(text: &str, prefix: &str, table: &DeTable<'_>, out: &mut BTreeMap<String, Located>) {
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        let (line, column) = position(text, k.span().start);
        let written = match v.get_ref() {
            DeValue::Table(_) => Written::Table,
            DeValue::Array(_) => Written::Array,
            _ => Written::Value,
        };
        out.insert(
            path.clone(),
            Located {
                line,
                column,
                written,
            },
        );
        index_value(text, &path, v, out);
    }
}

fn index_value(
    text: &str,
    path: &str,
    v: &Spanned<DeValue<'_>>,
    out: &mut BTreeMap<String, Located>,
) {
    match v.get_ref() {
        DeValue::Table(t) => index_table(text, path, t, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let DeValue::Table(t) = item.get_ref() {
                    let p = format!("{path}[{i}]");
                    let (line, column) = position(text, item.span().start);
                    out.insert(
                        p.clone(),
                        Located {
                            line,
                            column,
                            written: Written::Table,
                        },
                    );
                    index_table(text, &p, t, out);
                }
            }
        }
        _ => {}
    }
}

/// Remove every key the schema does not know, reporting each with the nearest
/// valid key.
fn strip_unknown(ctx: &mut Ctx<'_>, prefix: &str, table: &mut DeTable<'_>, schema: &raw::Table) {
    let unknown: Vec<(String, Range<usize>)> = table
        .iter()
        .filter(|(k, _)| schema.get(k.get_ref()).is_none())
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect();
    for (name, span) in unknown {
        let path = join(prefix, &name);
        let message = unknown_key_message(prefix, &name, schema);
        ctx.error(Some(span), Some(path), message);
        table.remove(name.as_str());
    }
    for (k, v) in table.iter_mut() {
        let Some(kind) = schema.get(k.get_ref()) else {
            continue;
        };
        let path = join(prefix, k.get_ref());
        match (kind, v.get_mut()) {
            (Kind::Table(sub), DeValue::Table(t)) => strip_unknown(ctx, &path, t, &sub()),
            (Kind::Array(sub), DeValue::Array(items)) => {
                let sub = sub();
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(t) = item.get_mut() {
                        strip_unknown(ctx, &format!("{path}[{i}]"), t, &sub);
                    }
                }
            }
            _ => {}
        }
    }
}

fn unknown_key_message(prefix: &str, name: &str, schema: &raw::Table) -> String {
    let place = if prefix.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{}]", strip_indexes(prefix))
    };
    // The closest key of this table, if it is close enough to be a typo.
    let best = schema
        .names()
        .map(|k| {
            (
                k,
                strsim::normalized_damerau_levenshtein(name, k),
                strsim::jaro_winkler(name, k),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)));
    if let Some((k, lev, jw)) = best
        && (lev >= 0.6 || jw >= 0.88)
    {
        return format!("unknown key `{name}` {place}; did you mean `{k}`?");
    }
    // The same key in another table (`voters` written under [etcd]).
    let elsewhere: Vec<String> = raw::all_key_paths()
        .into_iter()
        .filter(|p| p.rsplit('.').next() == Some(name))
        .collect();
    if let Some(p) = elsewhere.first() {
        return format!(
            "unknown key `{name}` {place}; did you mean `{p}` (it belongs in another table)?"
        );
    }
    let valid: Vec<&str> = schema.names().collect();
    format!(
        "unknown key `{name}` {place}; valid keys are: {}",
        valid.join(", ")
    )
}

fn strip_indexes(path: &str) -> Cow<'_, str> {
    if !path.contains('[') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// The deepest key whose key or value span contains `span`, descending into
/// tables and arrays of tables (a bad element of a value array blames the
/// array's key).
fn find_key(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Seg>> {
    for (k, v) in table.iter() {
        if contains(&k.span(), span) {
            return Some(vec![Seg::Key(k.get_ref().to_string())]);
        }
        let inside = contains(&v.span(), span);
        let deeper =
            match v.get_ref() {
                DeValue::Table(t) => find_key(t, span),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(t) => find_key(t, span).map(|mut p| {
                        p.insert(0, Seg::Index(i));
                        p
                    }),
                    _ => None,
                }),
                _ => None,
            };
        if let Some(mut p) = deeper {
            p.insert(0, Seg::Key(k.get_ref().to_string()));
            return Some(p);
        }
        if inside {
            return Some(vec![Seg::Key(k.get_ref().to_string())]);
        }
    }
    None
}

/// Remove the key at `path`; false if it is not there.
fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    match path {
        [Seg::Key(k)] => table.remove(k.as_str()).is_some(),
        [Seg::Key(k), rest @ ..] => {
            let Some(v) = table.get_mut(k.as_str()) else {
                return false;
            };
            remove_in(v.get_mut(), rest)
        }
        _ => false,
    }
}

fn remove_in(value: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path) {
        (DeValue::Table(t), _) => remove(t, path),
        (DeValue::Array(items), [Seg::Index(i), rest @ ..]) => match items.get_mut(*i) {
            Some(item) => remove_in(item.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

/// serde's messages name Rust types; say it in TOML terms.
fn friendly(message: &str) -> String {
    let mut m = message.trim().to_string();
    for (rust, toml) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected f64", "expected a number"),
        ("expected a string", "expected a string (in quotes)"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid value: integer", "invalid value: number"),
    ] {
        m = m.replace(rust, toml);
    }
    if let Some(i) = m.find("expected struct Raw") {
        m.truncate(i);
        m.push_str("expected a table");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(position("a\nbc\n", 0), (1, 1));
        assert_eq!(position("a\nbc\n", 3), (2, 2));
        assert_eq!(position("é\nx", 3), (2, 1));
    }

    #[test]
    fn parents_and_under() {
        assert_eq!(parent("a.b[1].c"), Some("a.b[1]"));
        assert_eq!(parent("a.b[1]"), Some("a.b"));
        assert_eq!(parent("a"), None);
        assert!(is_under("nodes[1].name", "nodes"));
        assert!(!is_under("nodesx", "nodes"));
    }
}
