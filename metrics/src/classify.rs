//! Classification: which priority class a sample belongs to.
//!
//! A pure function of the configured rules and the sample's labels. The first
//! rule whose metric-name glob matches and whose label matchers all hold wins;
//! otherwise the default class applies. Because the decision depends only on
//! the series' labels, every sample of a series lands in the same class, which
//! is what lets the uplink keep per-series order by keeping per-class order.

use std::collections::BTreeMap;

/// One classification rule (the resolved form of a `[[metrics.rules]]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Glob over the metric name: `*` matches any run of characters, `?` one.
    pub metric: String,
    /// Every label listed must be present with exactly this value.
    pub labels: BTreeMap<String, String>,
    pub class: String,
}

/// The classifier: rules in order plus the default class.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    default_class: String,
}

impl Classifier {
    /// `rules` are tried in order. A rule naming a class that is not in
    /// `classes` (config validation should have refused it) falls back to the
    /// default class rather than creating a class nobody drains.
    pub fn new(rules: Vec<Rule>, default_class: String, classes: &[String]) -> Self {
        let rules = rules
            .into_iter()
            .map(|mut r| {
                if !classes.contains(&r.class) {
                    tracing::warn!(
                        rule = %r.metric,
                        class = %r.class,
                        "A metrics rule names an unknown class; it will use the default class."
                    );
                    r.class.clone_from(&default_class);
                }
                r
            })
            .collect();
        Classifier {
            rules,
            default_class,
        }
    }

    /// The class of a sample with metric `name` and `labels` (which may
    /// include `__name__`; it is ignored).
    pub fn classify<'a>(&'a self, name: &str, labels: &[(String, String)]) -> &'a str {
        classify(&self.rules, &self.default_class, name, labels)
    }
}

/// First-match classification; see the module docs.
pub fn classify<'a>(
    rules: &'a [Rule],
    default_class: &'a str,
    name: &str,
    labels: &[(String, String)],
) -> &'a str {
    for rule in rules {
        if glob_match(&rule.metric, name)
            && rule
                .labels
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        {
            return &rule.class;
        }
    }
    default_class
}

/// Glob matching with `*` (any run, possibly empty) and `?` (exactly one
/// character). Linear-time two-pointer algorithm with a single backtrack point.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(metric: &str, labels: &[(&str, &str)], class: &str) -> Rule {
        Rule {
            metric: metric.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            class: class.into(),
        }
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("etcd_*", "etcd_server_has_leader"));
        assert!(!glob_match("etcd_*", "process_cpu"));
        assert!(glob_match("up", "up"));
        assert!(!glob_match("up", "upx"));
        assert!(glob_match("u?", "up"));
        assert!(!glob_match("u?", "u"));
        assert!(glob_match("*_total", "http_requests_total"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYYbZ"));
        assert!(glob_match("**x", "x"));
        assert!(glob_match("node_*_bytes?", "node_memory_bytes1"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn first_match_wins_and_labels_must_all_match() {
        let rules = vec![
            rule("etcd_server_*", &[], "critical"),
            rule("*", &[("job", "etcd"), ("severity", "page")], "critical"),
            rule("etcd_*", &[], "normal"),
            rule("node_*", &[("job", "node")], "low"),
        ];
        let c = |name: &str, labels: &[(&str, &str)]| {
            classify(&rules, "default", name, &l(labels)).to_string()
        };
        assert_eq!(c("etcd_server_has_leader", &[]), "critical");
        assert_eq!(c("etcd_disk_wal_fsync", &[]), "normal");
        assert_eq!(c("x", &[("job", "etcd"), ("severity", "page")]), "critical");
        assert_eq!(c("x", &[("job", "etcd")]), "default");
        assert_eq!(c("node_load1", &[("job", "node")]), "low");
        assert_eq!(c("node_load1", &[("job", "other")]), "default");
        assert_eq!(c("process_cpu_seconds_total", &[]), "default");
    }

    #[test]
    fn unknown_class_falls_back_to_default() {
        let classes = vec!["critical".to_string(), "low".to_string()];
        let c = Classifier::new(
            vec![rule("a", &[], "nope"), rule("b", &[], "critical")],
            "low".into(),
            &classes,
        );
        assert_eq!(c.classify("a", &[]), "low");
        assert_eq!(c.classify("b", &[]), "critical");
        assert_eq!(c.classify("c", &[]), "low");
    }
}
