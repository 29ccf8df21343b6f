//! A small, strict parser for the Prometheus text exposition format 0.0.4.
//!
//! Why our own: the crates on crates.io for this either regroup histograms and
//! summaries into their own structures (we want them as plain series, exactly
//! as Prometheus stores them), drop exposition timestamps, or pull in a regex
//! engine. The format is small; this parser follows Prometheus' own lexer
//! (`model/textparse/promlex.l`) on the points that matter:
//!
//! - `# HELP` and `# TYPE` lines are read (a `# TYPE` with an unknown type is
//!   an error, as in Prometheus); any other comment is ignored.
//! - Label values understand the escapes `\\`, `\"` and `\n`; any other
//!   backslash sequence is kept verbatim.
//! - Values are Go-style floats, including `+Inf`, `-Inf` and `NaN`.
//! - An optional integer timestamp in milliseconds follows the value.
//! - Histograms and summaries are ordinary series (`_bucket{le=..}`,
//!   `{quantile=..}`, `_sum`, `_count`).
//! - Like Prometheus, any malformed line fails the whole scrape: a half-read
//!   exposition would silently lose series.
//!
//! Labels with an empty value are dropped (an empty label is the same as an
//! absent one in Prometheus' data model), and a label name repeated within one
//! line is an error.

use std::fmt;

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// The metric name (becomes the `__name__` label).
    pub name: String,
    /// The labels in the order they were written, without `__name__`.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The exposition's own timestamp, if the line carried one.
    pub timestamp_ms: Option<i64>,
}

/// Why an exposition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Vec<ParsedSample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| ParseError { line: i + 1, msg };
        if let Some(rest) = line.strip_prefix('#') {
            parse_comment(rest).map_err(err)?;
            continue;
        }
        out.push(parse_sample_line(line).map_err(err)?);
    }
    Ok(out)
}

fn parse_comment(rest: &str) -> Result<(), String> {
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    match words.next() {
        Some("TYPE") => {
            let name = words.next().ok_or("TYPE line without a metric name")?;
            if !is_metric_name(name) {
                return Err(format!("invalid metric name {name:?} in TYPE line"));
            }
            let kind = words.next().ok_or("TYPE line without a type")?;
            match kind {
                "counter" | "gauge" | "histogram" | "summary" | "untyped" => Ok(()),
                other => Err(format!("unknown metric type {other:?}")),
            }
        }
        Some("HELP") => {
            let name = words.next().ok_or("HELP line without a metric name")?;
            if is_metric_name(name) {
                Ok(())
            } else {
                Err(format!("invalid metric name {name:?} in HELP line"))
            }
        }
        // Plain comments, and OpenMetrics' `# EOF`.
        _ => Ok(()),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }
    fn skip_ws(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }
    fn take_while(&mut self, f: impl Fn(u8, bool) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !f(b, self.pos == start) {
                break;
            }
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
    fn token(&mut self) -> &'a str {
        self.take_while(|b, _| b != b' ' && b != b'\t')
    }
}

fn parse_sample_line(line: &str) -> Result<ParsedSample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.take_while(|b, first| {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || (!first && b.is_ascii_digit())
    });
    if name.is_empty() {
        return Err(format!("expected a metric name, found {:?}", excerpt(line)));
    }
    let mut ws = c.skip_ws();
    let mut labels = Vec::new();
    if c.peek() == Some(b'{') {
        c.pos += 1;
        parse_labels(&mut c, &mut labels)?;
        ws = c.skip_ws();
    }
    if ws == 0 && c.peek().is_some() {
        return Err(format!(
            "expected whitespace after the labels of {name:?}, found {:?}",
            excerpt(&line[c.pos..])
        ));
    }
    let value_tok = c.token();
    if value_tok.is_empty() {
        return Err(format!("sample {name:?} has no value"));
    }
    let value = parse_value(value_tok).ok_or_else(|| format!("invalid value {value_tok:?}"))?;
    c.skip_ws();
    let ts_tok = c.token();
    let timestamp_ms = if ts_tok.is_empty() {
        None
    } else {
        Some(
            ts_tok
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts_tok:?}"))?,
        )
    };
    c.skip_ws();
    if c.peek().is_some() {
        return Err(format!(
            "unexpected text after the sample: {:?}",
            excerpt(&line[c.pos..])
        ));
    }
    labels.retain(|(_, v): &(String, String)| !v.is_empty());
    Ok(ParsedSample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

fn parse_labels(c: &mut Cursor<'_>, labels: &mut Vec<(String, String)>) -> Result<(), String> {
    loop {
        c.skip_ws();
        match c.peek() {
            Some(b'}') => {
                c.pos += 1;
                return Ok(());
            }
            None => return Err("unterminated label set".into()),
            _ => {}
        }
        let lname = c.take_while(|b, first| {
            b.is_ascii_alphabetic() || b == b'_' || (!first && b.is_ascii_digit())
        });
        if lname.is_empty() {
            return Err(format!(
                "expected a label name, found {:?}",
                excerpt(&c.s[c.pos..])
            ));
        }
        if lname == "__name__" || labels.iter().any(|(n, _)| n == lname) {
            return Err(format!("label {lname:?} given twice"));
        }
        c.skip_ws();
        if c.peek() != Some(b'=') {
            return Err(format!("expected '=' after label {lname:?}"));
        }
        c.pos += 1;
        c.skip_ws();
        if c.peek() != Some(b'"') {
            return Err(format!(
                "expected '\"' to open the value of label {lname:?}"
            ));
        }
        c.pos += 1;
        let value =
            parse_label_value(c).ok_or_else(|| format!("unterminated value of label {lname:?}"))?;
        labels.push((lname.to_owned(), value));
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.pos += 1,
            Some(b'}') => {}
            _ => return Err(format!("expected ',' or '}}' after label {lname:?}")),
        }
    }
}

/// Reads up to the closing quote (consumed); `None` if the line ends first.
fn parse_label_value(c: &mut Cursor<'_>) -> Option<String> {
    let rest = &c.s[c.pos..];
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => {
                c.pos += i + 1;
                return Some(out);
            }
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            },
            other => out.push(other),
        }
    }
    None
}

/// Go's `strconv.ParseFloat` spellings that appear in expositions. Rust's
/// parser already accepts `inf`, `+inf`, `infinity`, `nan` in any case.
fn parse_value(tok: &str) -> Option<f64> {
    tok.parse::<f64>().ok()
}

fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> ParsedSample {
        let mut v = parse(text).expect("parses");
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn plain_sample() {
        let s = one("up 1\n");
        assert_eq!(s.name, "up");
        assert!(s.labels.is_empty());
        assert_eq!(s.value, 1.0);
        assert_eq!(s.timestamp_ms, None);
    }

    #[test]
    fn labels_escapes_and_timestamp() {
        let s = one(
            r#"http_requests_total{method="post",path="/a\"b\\c\nd",odd="x\ty",} 1027 1395066363000"#,
        );
        assert_eq!(s.name, "http_requests_total");
        assert_eq!(
            s.labels,
            vec![
                ("method".into(), "post".into()),
                ("path".into(), "/a\"b\\c\nd".into()),
                ("odd".into(), "x\\ty".into()),
            ]
        );
        assert_eq!(s.value, 1027.0);
        assert_eq!(s.timestamp_ms, Some(1395066363000));
    }

    #[test]
    fn special_values() {
        assert_eq!(one("a +Inf").value, f64::INFINITY);
        assert_eq!(one("a -Inf").value, f64::NEG_INFINITY);
        assert!(one("a NaN").value.is_nan());
        assert_eq!(one("a 1.5e-3").value, 0.0015);
        assert_eq!(one("a -0").value, 0.0);
        assert_eq!(one("a 1 -5").timestamp_ms, Some(-5));
    }

    #[test]
    fn histogram_and_summary_are_plain_series() {
        let text = "\
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile=\"0.5\"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE h histogram
h_bucket{le=\"0.05\"} 24054
h_bucket{le=\"+Inf\"} 144320
h_sum 53423
h_count 144320
";
        let v = parse(text).expect("parses");
        assert_eq!(v.len(), 7);
        assert_eq!(v[3].labels, vec![("le".into(), "0.05".into())]);
        assert_eq!(v[4].labels, vec![("le".into(), "+Inf".into())]);
    }

    #[test]
    fn whitespace_crlf_comments_and_empty_labels() {
        let text = "  # just a comment\r\n\r\n\tm { a = \"1\" , b=\"\" }\t 2 \r\n# EOF\n";
        let s = one(text);
        assert_eq!(s.labels, vec![("a".into(), "1".into())]);
        assert_eq!(s.value, 2.0);
        assert!(parse("").expect("empty is fine").is_empty());
        assert_eq!(one("m{} 3").value, 3.0);
    }

    #[test]
    fn garbage_is_refused_with_the_line_number() {
        for bad in [
            "<html>oops</html>",
            "m{a=\"1\" 2",
            "m{a=1} 2",
            "m 1 2 3",
            "m abc",
            "m",
            "m{a=\"1\",a=\"2\"} 1",
            "m 1 1.5",
            "# TYPE m wrong",
            "m{a=\"unterminated} 1",
            "m{a=\"1\"}2",
            "9m 1",
        ] {
            let err = parse(&format!("ok 1\n{bad}\n")).expect_err(bad);
            assert_eq!(err.line, 2, "{bad}: {err}");
        }
    }
}
