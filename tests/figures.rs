//! The figures the READMEs quote are the figures of a recorded run.
//!
//! Every measured figure in a Markdown file of the repository is a link to
//! the JSON record of the run that measured it, with a JSON pointer to the
//! value: `[1.35 s](docs/figures/failover.json#/full_strength_p50_s)`. This
//! test (no processes, no network) reads every `*.md` file and checks:
//!
//! - each such figure equals the value in the record, to the decimals written
//!   (`1.35` matches 1.345 to 1.355; `3,574` matches 3574; `45.8 MiB` of a
//!   `…_bytes` field is bytes / 2^20; `1.47 M` / `455 k` scale by 10^6 / 10^3);
//! - between `<!-- figures -->` and `<!-- /figures -->` no number is written
//!   by hand: every number there is inside such a link, in a code span (where
//!   commands and their options go) or a goal (right after `≤` or `≥`); no
//!   code block there (a figure in one could not be checked);
//! - the files that carry figures have such a section, and every record in
//!   `docs/figures/` is quoted and says which commit, machine and date it
//!   comes from;
//! - `docs/figures/campaign.json` holds the same figures as the campaign
//!   report it was imported from.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Lexically normalised (no `.`/`..`), so links can be compared as paths.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            markdown_files(&p, out);
        } else if name.ends_with(".md") {
            out.push(p);
        }
    }
}

/// A number written in prose: `[0-9][0-9,]*(\.[0-9]+)?`, not part of a word
/// (`p50`, `2xx`, `x86` are words).
#[derive(Debug, PartialEq)]
struct Written {
    value: f64,
    decimals: i32,
    /// The word that follows (`s`, `MiB`, `M`, `MB/s`, …), if any.
    unit: String,
    text: String,
    /// Right after `≤` or `≥`: a goal or a bound, not a measurement.
    goal: bool,
}

/// Every number in `text`, in order.
fn numbers(text: &str) -> Vec<Written> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if !c.is_ascii_digit() || word_before {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || ((chars[i] == ',' || chars[i] == '.')
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())))
        {
            i += 1;
        }
        if chars.get(i).is_some_and(|n| n.is_alphabetic()) {
            // `2xx`, `3rd`, `15s`: a word, not a figure.
            while i < chars.len() && chars[i].is_alphanumeric() {
                i += 1;
            }
            continue;
        }
        let token: String = chars[start..i].iter().collect();
        let plain = token.replace(',', "");
        let Ok(value) = plain.parse::<f64>() else {
            continue;
        };
        let decimals = plain.split_once('.').map_or(0, |(_, d)| d.len() as i32);
        let before: String = chars[..start].iter().collect();
        let goal = before.trim_end().ends_with(['≤', '≥']);
        let rest: String = chars[i..].iter().collect();
        let unit: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphabetic() || *c == '/' || *c == '%')
            .collect();
        out.push(Written {
            value,
            decimals,
            unit,
            text: token,
            goal,
        });
    }
    out
}

/// A Markdown inline link: its text, its target, and the byte range of the
/// whole `[text](target)`.
struct Link {
    text: String,
    target: String,
    range: std::ops::Range<usize>,
}

fn links(md: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let b = md.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'[' {
            i += 1;
            continue;
        }
        let Some(close) = md[i + 1..].find(']').map(|c| i + 1 + c) else {
            break;
        };
        if md[i + 1..close].contains('[') || b.get(close + 1) != Some(&b'(') {
            i += 1;
            continue;
        }
        let Some(end) = md[close + 2..].find(')').map(|c| close + 2 + c) else {
            break;
        };
        out.push(Link {
            text: md[i + 1..close].to_string(),
            target: md[close + 2..end].trim().to_string(),
            range: i..end + 1,
        });
        i = end + 1;
    }
    out
}

/// The multiplier from a written unit to the record's unit, which the
/// field's name gives (`…_bytes` is in bytes; anything else is already in
/// the unit written, except for the `k`/`M`/`G` shorthands of counts).
fn scale(unit: &str, field: &str) -> f64 {
    let bytes = field.contains("bytes");
    match unit {
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "KiB" if bytes => 1024.0,
        "MiB" if bytes => 1024.0 * 1024.0,
        "GiB" if bytes => 1024.0 * 1024.0 * 1024.0,
        "kB" if bytes => 1e3,
        "MB" if bytes => 1e6,
        "GB" if bytes => 1e9,
        _ => 1.0,
    }
}

/// The value written must be the record's, rounded to the decimals written.
fn matches(written: &Written, field: &str, recorded: f64) -> bool {
    let v = recorded / scale(&written.unit, field);
    let half_ulp = 0.5 * 10f64.powi(-written.decimals);
    (v - written.value).abs() <= half_ulp * (1.0 + 1e-9) + 1e-12
}

/// `text` with every `open` … `close` span blanked (same length, so byte
/// offsets stay valid).
fn blank(text: &str, open: &str, close: &str) -> String {
    let mut out: Vec<u8> = text.as_bytes().to_vec();
    let mut from = 0;
    while let Some(a) = text[from..].find(open).map(|a| from + a) {
        let Some(z) = text[a + open.len()..]
            .find(close)
            .map(|z| a + open.len() + z)
        else {
            break;
        };
        for b in &mut out[a..z + close.len()] {
            *b = b' ';
        }
        from = z + close.len();
    }
    String::from_utf8_lossy(&out).to_string()
}

/// `text` without code spans (and code blocks): what a figure link or a
/// figures section marker written as an example in one is not.
fn without_code(text: &str) -> String {
    blank(text, "`", "`")
}

/// `text` with code spans, HTML comments and the given byte ranges blanked.
fn prose_outside(text: &str, skip: &[std::ops::Range<usize>]) -> String {
    let mut out: Vec<u8> = text.as_bytes().to_vec();
    for r in skip {
        for b in &mut out[r.clone()] {
            *b = b' ';
        }
    }
    let out = String::from_utf8_lossy(&out).to_string();
    without_code(&blank(&out, "<!--", "-->"))
}

const BEGIN: &str = "<!-- figures -->";
const END: &str = "<!-- /figures -->";

/// The files that must carry a checked section of figures.
const WITH_FIGURES: [&str; 4] = [
    "README.md",
    "buffer/README.md",
    "metrics/BENCH.md",
    "snapshot/README.md",
];

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn readme_figures_are_the_recorded_ones() {
    let root = normalise(&repo());
    let figures_dir = root.join("docs").join("figures");
    let mut records: Vec<(String, Value)> = std::fs::read_dir(&figures_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", figures_dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string());
            (name.unwrap_or_default(), load(&p))
        })
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        !records.is_empty(),
        "no records in {}",
        figures_dir.display()
    );

    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    let mut problems: Vec<String> = Vec::new();
    let mut quoted: BTreeSet<String> = BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let Ok(raw) = std::fs::read_to_string(file) else {
            problems.push(format!("{rel}: unreadable"));
            continue;
        };
        let md = without_code(&raw);
        let dir = file.parent().unwrap_or(&root).to_path_buf();
        let line_of = |at: usize| md[..at].matches('\n').count() + 1;
        let mut figure_links = Vec::new();
        for l in links(&md) {
            // A link without a pointer names the record, it quotes nothing.
            let Some((path, pointer)) = l.target.split_once('#') else {
                continue;
            };
            let target = normalise(&dir.join(path));
            if !(target.starts_with(&figures_dir) && path.ends_with(".json")) {
                continue;
            }
            let at = format!("{rel}:{}", line_of(l.range.start));
            figure_links.push(l.range.clone());
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let Some((_, record)) = records.iter().find(|(n, _)| *n == name) else {
                problems.push(format!(
                    "{at}: [{}] quotes {name}, which is not in docs/figures",
                    l.text
                ));
                continue;
            };
            quoted.insert(name.clone());
            let Some(recorded) = record.pointer(pointer).and_then(Value::as_f64) else {
                problems.push(format!(
                    "{at}: [{}]: {name} has no number at #{pointer}",
                    l.text
                ));
                continue;
            };
            let written = numbers(&l.text);
            let [w] = written.as_slice() else {
                problems.push(format!(
                    "{at}: [{}] must hold exactly one number (it holds {})",
                    l.text,
                    written.len()
                ));
                continue;
            };
            let field = pointer.rsplit('/').next().unwrap_or("");
            checked += 1;
            if !matches(w, field, recorded) {
                problems.push(format!(
                    "{at}: the README says {} ({}) but {name}#{pointer} is {recorded}",
                    w.text, l.text
                ));
            }
        }
        // Sections where every number must be a quoted figure.
        let mut from = 0;
        let mut sections = 0;
        while let Some(a) = md[from..].find(BEGIN).map(|a| from + a) {
            let Some(z) = md[a..].find(END).map(|z| a + z) else {
                problems.push(format!("{rel}:{}: {BEGIN} without {END}", line_of(a)));
                break;
            };
            sections += 1;
            let inside: Vec<std::ops::Range<usize>> = figure_links
                .iter()
                .filter(|r| r.start >= a && r.end <= z)
                .map(|r| r.start - a..r.end - a)
                .collect();
            if inside.is_empty() {
                problems.push(format!(
                    "{rel}:{}: a figures section without a quoted figure",
                    line_of(a)
                ));
            }
            let section = &md[a..z];
            if raw[a..z].contains("```") {
                problems.push(format!(
                    "{rel}:{}: a code block in a figures section (its numbers cannot be checked: use a table of quoted figures)",
                    line_of(a)
                ));
            }
            let prose = prose_outside(section, &inside);
            for (k, line) in prose.lines().enumerate() {
                for n in numbers(line) {
                    if n.goal {
                        continue;
                    }
                    problems.push(format!(
                        "{rel}:{}: {} is written by hand in a figures section: quote it from docs/figures/*.json as [{} …](…json#/field), or put it in a code span if it is part of a command",
                        line_of(a) + k,
                        n.text,
                        n.text
                    ));
                }
            }
            from = z + END.len();
        }
        if WITH_FIGURES.contains(&rel.as_str()) && sections == 0 {
            problems.push(format!("{rel}: no {BEGIN} … {END} section"));
        }
    }
    for (name, r) in &records {
        if !quoted.contains(name) {
            problems.push(format!("docs/figures/{name} is quoted by no Markdown file"));
        }
        problems.extend(provenance(name, r));
    }
    assert!(checked > 0, "no figure links found");
    assert!(
        problems.is_empty(),
        "{} problem(s) with the figures ({checked} checked):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Which commit, machine and date a record comes from.
fn provenance(name: &str, r: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let commit = r["commit"].as_str().unwrap_or("");
    if commit.is_empty() || commit == "unknown" || commit.ends_with("-dirty") {
        p.push(format!(
            "docs/figures/{name}: commit {commit:?} is not a clean commit"
        ));
    }
    let date = r["date"].as_str().unwrap_or("");
    let ymd = date.get(..10).unwrap_or("");
    let is_date = ymd.len() == 10
        && ymd.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !is_date {
        p.push(format!(
            "docs/figures/{name}: date {date:?} is not an RFC 3339 date"
        ));
    }
    if r.pointer("/machine/cores")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        == 0
    {
        p.push(format!("docs/figures/{name}: no machine.cores"));
    }
    let load = r.pointer("/machine/load_average");
    let sampled = load
        .and_then(|l| l.get("max_1m"))
        .and_then(Value::as_f64)
        .is_some();
    // A run recorded before records had a load average says so instead.
    let explained = r
        .pointer("/machine/load_average_note")
        .and_then(Value::as_str)
        .is_some();
    if !sampled && !explained {
        p.push(format!(
            "docs/figures/{name}: no machine.load_average sampled during the run"
        ));
    }
    if r["bench"].as_str().is_none() {
        p.push(format!("docs/figures/{name}: no bench name"));
    }
    p
}

/// Equal JSON, numbers compared as numbers (jq writes `0.0` as `0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The campaign's figures were imported from its report, not retyped.
#[test]
fn campaign_figures_are_the_campaign_report() {
    let root = repo();
    let fig = load(&root.join("docs/figures/campaign.json"));
    let Some(source) = fig["imported_from"].as_str() else {
        // A campaign run since records had provenance writes its own report.
        return;
    };
    let report = load(&root.join(source));
    let (Some(f), Some(r)) = (fig.as_object(), report.as_object()) else {
        panic!("the campaign records are not JSON objects");
    };
    let mut compared = 0;
    for (k, v) in r {
        if k == "fault_log" {
            continue;
        }
        assert!(
            f.get(k).is_some_and(|x| same(x, v)),
            "docs/figures/campaign.json#/{k} differs from {source}: {:?} vs {v}",
            f.get(k)
        );
        compared += 1;
    }
    assert!(compared > 10, "only {compared} fields compared");
}

#[test]
fn numbers_are_read_as_written() {
    let n = numbers("p50 1.35 s, p99 2.11 s over 10 kills; 0 of 3,574 (2xx, x86, 15s)");
    let v: Vec<(f64, i32, &str)> = n
        .iter()
        .map(|w| (w.value, w.decimals, w.unit.as_str()))
        .collect();
    assert_eq!(
        v,
        vec![
            (1.35, 2, "s"),
            (2.11, 2, "s"),
            (10.0, 0, "kills"),
            (0.0, 0, "of"),
            (3574.0, 0, "")
        ]
    );
    let w = &numbers("45.8 MiB")[0];
    assert!(matches(w, "compressed_bytes", 48_000_000.0));
    assert!(!matches(w, "compressed_bytes", 49_000_000.0));
    assert!(matches(
        &numbers("1.47 M")[0],
        "append_samples_per_cpu_s",
        1_468_000.0
    ));
    assert!(matches(&numbers("1.35")[0], "x_s", 1.3549));
    assert!(!matches(&numbers("1.35")[0], "x_s", 1.3551));
    assert!(matches(&numbers("59.7 MiB")[0], "peak_rss_mib", 59.74));
}

#[test]
fn a_number_outside_a_figure_link_is_found() {
    let md = "a [1.5 s](x.json#/a) and 2.5 s and `--cycles 10` <!-- 7 --> (goal ≥ 2 M)";
    let ls = links(md);
    assert_eq!(ls.len(), 1);
    let prose = prose_outside(md, &[ls[0].range.clone()]);
    let found: Vec<String> = numbers(&prose)
        .into_iter()
        .filter(|n| !n.goal)
        .map(|n| n.text)
        .collect();
    assert_eq!(found, vec!["2.5"]);
}
