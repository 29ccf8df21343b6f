//! Scraping Prometheus text-format endpoints.
//!
//! One tokio task per target, each with its own interval and timeout, so a
//! slow or dead target never delays another. A scrape that fails (connection
//! refused, timeout, non-2xx, body too large, unparsable text) yields the
//! same synthetic series Prometheus would, `up = 0` plus
//! `scrape_duration_seconds` and `scrape_samples_scraped`, and is counted in
//! the target's status; it never stops the task.
//!
//! Labels follow Prometheus' rules with `honor_labels: false`:
//! - `job`, `instance` (`host:port` of the URL) and `site` are target
//!   labels; a scraped label with the same name is kept as `exported_<name>`.
//! - external labels are added only where the sample does not have them.
//! - labels are sorted by name and include `__name__`.
//!
//! Timestamps: the exposition's own timestamp when present, otherwise the
//! time the scrape started (as Prometheus does), in milliseconds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::Sample;
use crate::parse::{self, ParsedSample};

/// A scrape target, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub job: String,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Labels shared by every target of this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonLabels {
    pub site: String,
    /// Sorted by name.
    pub external: Vec<(String, String)>,
}

/// The result of one scrape, ready for classification.
#[derive(Debug, Clone)]
pub struct ScrapeOutcome {
    pub job: String,
    pub url: String,
    pub started_ms: i64,
    pub duration: Duration,
    /// `None` when the scrape succeeded.
    pub error: Option<String>,
    /// Scraped samples plus the synthetic `up` & co.
    pub samples: Vec<Sample>,
    /// Samples dropped because the same series appeared twice.
    pub duplicates: u64,
}

/// The largest body read from a target; a larger one fails the scrape.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// `host:port` of a URL, as Prometheus' `instance` label.
pub fn instance_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            }
        }
        Err(_) => url.to_owned(),
    }
}

/// Turns parsed lines into labelled samples (pure; see the module docs for
/// the label rules). Returns the samples and the number of duplicate series
/// dropped (a duplicate would make the receiver refuse the whole batch).
pub fn label_samples(
    parsed: Vec<ParsedSample>,
    target: &[(String, String)],
    common: &CommonLabels,
    scrape_ms: i64,
) -> (Vec<Sample>, u64) {
    let mut out = Vec::with_capacity(parsed.len());
    let mut seen: HashSet<Vec<(String, String)>> = HashSet::with_capacity(parsed.len());
    let mut dups = 0;
    for p in parsed {
        let mut labels = p.labels;
        for (tk, _) in target {
            if let Some(pos) = labels.iter().position(|(k, _)| k == tk) {
                let mut name = format!("exported_{tk}");
                while labels_contains(&labels, &name) || labels_contains(target, &name) {
                    name = format!("exported_{name}");
                }
                labels[pos].0 = name;
            }
        }
        labels.extend(target.iter().cloned());
        for (ek, ev) in &common.external {
            if !labels_contains(&labels, ek) {
                labels.push((ek.clone(), ev.clone()));
            }
        }
        labels.push(("__name__".to_owned(), p.name));
        labels.sort();
        if !seen.insert(labels.clone()) {
            dups += 1;
            continue;
        }
        out.push(Sample {
            labels,
            timestamp_ms: p.timestamp_ms.unwrap_or(scrape_ms),
            value: p.value,
        });
    }
    (out, dups)
}

fn labels_contains(labels: &[(String, String)], name: &str) -> bool {
    labels.iter().any(|(k, _)| k == name)
}

/// The target labels of a target: `instance`, `job`, `site`.
pub fn target_labels(t: &ScrapeTarget, common: &CommonLabels) -> Vec<(String, String)> {
    let mut v = vec![
        ("instance".to_owned(), instance_of(&t.url)),
        ("job".to_owned(), t.job.clone()),
    ];
    if !common.site.is_empty() {
        v.push(("site".to_owned(), common.site.clone()));
    }
    v
}

/// Scrapes a target once. Never fails: a failure is an outcome with
/// `error` set and `up = 0`.
pub async fn scrape_once(
    http: &reqwest::Client,
    t: &ScrapeTarget,
    common: &CommonLabels,
) -> ScrapeOutcome {
    let started_ms = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let fetched = tokio::time::timeout(t.timeout, fetch(http, &t.url)).await;
    let result = match fetched {
        Err(_) => Err(format!("scrape timed out after {:?}", t.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(body)) => parse::parse(&body).map_err(|e| format!("unparsable exposition: {e}")),
    };
    let duration = start.elapsed();
    let tl = target_labels(t, common);
    let (mut samples, duplicates, error, scraped) = match result {
        Ok(parsed) => {
            let n = parsed.len();
            let (s, d) = label_samples(parsed, &tl, common, started_ms);
            (s, d, None, n)
        }
        Err(e) => (Vec::new(), 0, Some(e), 0),
    };
    let up = if error.is_none() { 1.0 } else { 0.0 };
    let synthetic = vec![
        ParsedSample {
            name: "up".into(),
            labels: vec![],
            value: up,
            timestamp_ms: None,
        },
        ParsedSample {
            name: "scrape_duration_seconds".into(),
            labels: vec![],
            value: duration.as_secs_f64(),
            timestamp_ms: None,
        },
        ParsedSample {
            name: "scrape_samples_scraped".into(),
            labels: vec![],
            value: scraped as f64,
            timestamp_ms: None,
        },
    ];
    let (syn, _) = label_samples(synthetic, &tl, common, started_ms);
    samples.extend(syn);
    ScrapeOutcome {
        job: t.job.clone(),
        url: t.url.clone(),
        started_ms,
        duration,
        error,
        samples,
        duplicates,
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut resp = http
        .get(url)
        .header("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .send()
        .await
        .map_err(|e| format!("scrape failed: {}", error_chain(&e.without_url())))?;
    if !resp.status().is_success() {
        return Err(format!("scrape answered HTTP {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        format!(
            "reading the scrape body failed: {}",
            error_chain(&e.without_url())
        )
    })? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("scrape body larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "scrape body is not UTF-8".to_owned())
}

/// `err: cause: cause` — reqwest's Display alone hides the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common() -> CommonLabels {
        CommonLabels {
            site: "s1".into(),
            external: vec![("env".into(), "prod".into()), ("job".into(), "x".into())],
        }
    }

    #[test]
    fn instance_label() {
        assert_eq!(instance_of("http://10.0.0.1:2379/metrics"), "10.0.0.1:2379");
        assert_eq!(instance_of("http://etcd/metrics"), "etcd:80");
        assert_eq!(instance_of("https://h/metrics"), "h:443");
    }

    #[test]
    fn target_labels_win_and_scraped_ones_are_exported() {
        let t = ScrapeTarget {
            job: "node".into(),
            url: "http://h:9100/metrics".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
        };
        let parsed = parse::parse(
            "m{job=\"inner\",a=\"1\"} 1\nm{job=\"inner\",a=\"1\"} 2\nn{env=\"dev\"} 3 1700000000000\n",
        )
        .expect("parses");
        let (s, dups) = label_samples(parsed, &target_labels(&t, &common()), &common(), 42);
        assert_eq!(dups, 1);
        assert_eq!(s.len(), 2);
        let l = |i: usize| -> Vec<(&str, &str)> {
            s[i].labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        };
        assert_eq!(
            l(0),
            vec![
                ("__name__", "m"),
                ("a", "1"),
                ("env", "prod"),
                ("exported_job", "inner"),
                ("instance", "h:9100"),
                ("job", "node"),
                ("site", "s1"),
            ]
        );
        assert_eq!(s[0].timestamp_ms, 42);
        assert_eq!(s[0].value, 1.0);
        // The exposition's timestamp is kept; its own env wins over the
        // external label.
        assert_eq!(s[1].timestamp_ms, 1_700_000_000_000);
        assert!(l(1).contains(&("env", "dev")));
    }

    #[tokio::test]
    async fn a_dead_target_yields_up_zero() {
        let port = crate::local_prometheus::free_port().expect("port");
        let t = ScrapeTarget {
            job: "dead".into(),
            url: format!("http://127.0.0.1:{port}/metrics"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        };
        let out = scrape_once(
            &{
                crate::install_crypto_provider();
                reqwest::Client::new()
            },
            &t,
            &common(),
        )
        .await;
        assert!(out.error.is_some());
        let up = out
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == "up"))
            .expect("up sample");
        assert_eq!(up.value, 0.0);
    }
}
