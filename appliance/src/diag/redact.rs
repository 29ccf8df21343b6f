//! Redaction for everything `diag` prints or bundles.
//!
//! Three layers, applied to every string that leaves this host in a bundle
//! (config values, status documents, log tails):
//!
//! 1. **Known secrets**: the contents of `uplink.bearer_token_file`,
//!    `uplink.basic_auth_password_file` and `uplink.client_key` and the
//!    values of `recovery.fence_environment_file` are read only to be
//!    searched for and replaced (the files themselves are never copied). A
//!    value too short to replace wherever it appears (an IPMI PIN of 3
//!    digits would blank every "123" in a log) is replaced where it follows
//!    its own name: the environment file's variable names count as secret
//!    keys (layer 3);
//! 2. **Private key blocks**: anything between `-----BEGIN … PRIVATE KEY-----`
//!    and its `-----END`;
//! 3. **Credentials in text**: URL user-info (`https://user:pass@host`),
//!    `Bearer …`, and values of `password=`, `token=`, `secret=`-style keys.

use edgeplane_config::Config;

pub const REDACTED: &str = "<redacted>";

/// Words that mark the value after them (`=`, `:`) as a secret.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
];

/// What this host's config says is secret.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Strings replaced wherever they appear, longest first.
    pub values: Vec<String>,
    /// Extra key names (lowercase) whose value is replaced, as the words of
    /// `SECRET_KEYS` are: the fence environment file's variable names.
    pub keys: Vec<String>,
}

/// The shortest secret replaced wherever it appears.
const MIN_ANYWHERE: usize = 4;

/// Secret strings this host's config points at: the bearer token and the
/// client key's content (whole, and each long line of it), and the values
/// of the fence command's environment file (its variable names as keys, so
/// that a short PIN is caught as `IPMI_PIN=123`).
pub fn known_secrets(cfg: &Config) -> Secrets {
    let mut out = Vec::new();
    let mut keys = Vec::new();
    if let Some(p) = &cfg.recovery.fence_environment_file
        && let Ok(pairs) = crate::secrets::environment_file(p)
    {
        for (k, v) in pairs {
            keys.push(k.to_ascii_lowercase());
            if v.len() >= MIN_ANYWHERE {
                out.push(v);
            }
        }
    }
    for p in [
        &cfg.uplink.bearer_token_file,
        &cfg.uplink.basic_auth_password_file,
        &cfg.uplink.client_key,
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(p) {
            let t = text.trim();
            if t.len() >= MIN_ANYWHERE {
                out.push(t.to_string());
            }
            for line in t.lines() {
                let l = line.trim();
                if l.len() >= 12 && !l.starts_with("-----") {
                    out.push(l.to_string());
                }
            }
        }
    }
    // The basic auth header's form of the password, as a log of the
    // request or a receiver's echo of it would show it.
    if let (Some(user), Some(p)) = (
        &cfg.uplink.basic_auth_user,
        &cfg.uplink.basic_auth_password_file,
    ) && let Ok(pw) = std::fs::read_to_string(p)
    {
        out.push(edgeplane_metrics::uplink::basic_credentials(
            user,
            pw.trim(),
        ));
    }
    // Longest first, so a whole secret is replaced before its parts.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    keys.sort();
    keys.dedup();
    Secrets { values: out, keys }
}

/// `s` with every secret, key block and credential replaced.
pub fn text(s: &str, secrets: &Secrets) -> String {
    let mut out = s.to_string();
    for sec in &secrets.values {
        if !sec.is_empty() && out.contains(sec.as_str()) {
            out = out.replace(sec.as_str(), REDACTED);
        }
    }
    out = key_blocks(&out);
    out = url_userinfo(&out);
    out = bearer(&out);
    secret_values(&out, &secrets.keys)
}

/// Applies [`text`] to every string in a JSON value, and replaces whole
/// values of keys that name a secret.
pub fn json(v: &mut serde_json::Value, secrets: &Secrets) {
    match v {
        serde_json::Value::String(s) => *s = text(s, secrets),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| json(x, secrets)),
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let kl = k.to_ascii_lowercase();
                let secret_key = SECRET_KEYS
                    .iter()
                    .any(|w| kl == *w || kl.ends_with(&format!("_{w}")))
                    || secrets.keys.contains(&kl);
                if secret_key && x.is_string() {
                    *x = serde_json::Value::String(REDACTED.into());
                } else {
                    json(x, secrets);
                }
            }
        }
        _ => {}
    }
}

fn key_blocks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("-----BEGIN") {
        let head = &rest[i..];
        let line_end = head.find('\n').unwrap_or(head.len());
        if !head[..line_end].contains("PRIVATE KEY") {
            out.push_str(&rest[..i + 10]);
            rest = &rest[i + 10..];
            continue;
        }
        out.push_str(&rest[..i]);
        out.push_str("<redacted private key>");
        match head.find("-----END") {
            Some(j) => {
                let after = &head[j + 8..];
                let close = after.find("-----").map(|k| k + 5).unwrap_or(after.len());
                rest = &after[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn is_token_end(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '<' | '>' | '`' | ',' | ';' | ')' | ']' | '}'
        )
}

fn url_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| is_token_end(c) || c == '/' || c == '?' || c == '#')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn bearer(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(i) = lower.find("bearer ") else {
            break;
        };
        out.push_str(&rest[..i + 7]);
        let after = &rest[i + 7..];
        let end = after.find(is_token_end).unwrap_or(after.len());
        if end > 0 {
            out.push_str(REDACTED);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn secret_values(s: &str, extra_keys: &[String]) -> String {
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for w in SECRET_KEYS
        .iter()
        .copied()
        .chain(extra_keys.iter().map(String::as_str))
    {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(w) {
            let start = from + pos;
            let mut j = start + w.len();
            from = j;
            // Skip a closing quote of a JSON/TOML key, spaces, then the separator.
            while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b' ') {
                j += 1;
            }
            if j >= bytes.len() || !matches!(bytes[j], b'=' | b':') {
                continue;
            }
            j += 1;
            while j < bytes.len() && matches!(bytes[j], b' ' | b'"' | b'\'') {
                j += 1;
            }
            let end = s[j..]
                .find(|c: char| is_token_end(c) || c == '&')
                .map_or(s.len(), |e| j + e);
            if end > j && &s[j..end] != REDACTED {
                cuts.push((j, end));
            }
        }
    }
    if cuts.is_empty() {
        return s.to_string();
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (a, b) in cuts {
        if a < at {
            continue;
        }
        out.push_str(&s[at..a]);
        out.push_str(REDACTED);
        at = b;
    }
    out.push_str(&s[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_removed() {
        assert_eq!(
            text(
                "url = https://alice:s3cret@region.example/api/v1/write",
                &Secrets::default()
            ),
            "url = https://<redacted>@region.example/api/v1/write"
        );
        assert_eq!(
            text("http://127.0.0.1:2379", &Secrets::default()),
            "http://127.0.0.1:2379"
        );
    }

    #[test]
    fn known_secrets_key_blocks_and_key_values() {
        let secrets = Secrets {
            values: vec!["tok-123456".to_string()],
            keys: Vec::new(),
        };
        let s = "sent tok-123456 to region; Authorization: Bearer abc.def\n\
                 -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n\
                 password=hunter2&x=1 {\"token\": \"zzz\"}";
        let r = text(s, &secrets);
        for gone in ["tok-123456", "abc.def", "MHcCAQEEIB", "hunter2", "zzz"] {
            assert!(!r.contains(gone), "{gone} left in {r}");
        }
        assert!(r.contains("<redacted private key>"));
        assert!(r.contains("x=1"));
    }

    /// A fence credential too short to replace everywhere (a 3-digit IPMI
    /// PIN) is still gone where it follows its name, in text and JSON, and
    /// other numbers that happen to equal it stay.
    #[test]
    fn a_short_fence_pin_is_redacted_after_its_name_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let env = dir.path().join("fence.env");
        std::fs::write(&env, "IPMI_PIN=917\nIPMI_PASSWORD=PLANTED-fence-pw-77\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = edgeplane_config::defaults(edgeplane_config::Profile::Edge);
        cfg.recovery.fence_environment_file = Some(env);
        let secrets = known_secrets(&cfg);
        let r = text(
            "fence: ipmitool IPMI_PIN=917 IPMI_PASSWORD=PLANTED-fence-pw-77 failed; ipmi_pin: 917; applied index 917",
            &secrets,
        );
        assert!(!r.contains("PLANTED"), "{r}");
        assert!(!r.contains("PIN=917") && !r.contains("pin: 917"), "{r}");
        assert!(r.contains("applied index 917"), "{r}");
        let mut v = serde_json::json!({"env": {"IPMI_PIN": "917"}, "index": "917"});
        json(&mut v, &secrets);
        assert_eq!(v["env"]["IPMI_PIN"], REDACTED);
        assert_eq!(v["index"], "917");
    }

    #[test]
    fn basic_auth_password_is_a_known_secret_raw_and_encoded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pw = dir.path().join("pass");
        std::fs::write(&pw, "PLANTED-basic-pw-31\n").unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = edgeplane_config::defaults(edgeplane_config::Profile::Edge);
        cfg.uplink.basic_auth_user = Some("site-7".into());
        cfg.uplink.basic_auth_password_file = Some(pw);
        let secrets = known_secrets(&cfg);
        let encoded = edgeplane_metrics::uplink::basic_credentials("site-7", "PLANTED-basic-pw-31");
        let r = text(
            &format!("sent PLANTED-basic-pw-31 as Authorization: Basic {encoded}"),
            &secrets,
        );
        assert!(!r.contains("PLANTED"), "{r}");
        assert!(!r.contains(&encoded), "{r}");
    }

    #[test]
    fn json_walk_redacts_strings_and_secret_keys() {
        let mut v = serde_json::json!({
            "uplink": {"url": "https://u:p@h/x", "bearer_token_file": "/etc/t"},
            "db_password": "x",
            "n": 3
        });
        json(&mut v, &Secrets::default());
        assert_eq!(v["uplink"]["url"], "https://<redacted>@h/x");
        assert_eq!(v["uplink"]["bearer_token_file"], "/etc/t");
        assert_eq!(v["db_password"], REDACTED);
        assert_eq!(v["n"], 3);
    }
}
