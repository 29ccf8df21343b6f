//! `uplink.headers` and basic auth (#18 §2): the receiver gets the extra
//! headers and the credentials on every request, and the password (planted,
//! read from its file) never shows in a log line, the status or the
//! metrics, even when the receiver echoes the request back in its error.
//!
//! A local listener stands in for the receiver: what is checked is the
//! bytes of our own requests, which no real receiver run without auth
//! would show.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use edgeplane_metrics::pipeline::Pipeline;

const PLANTED: &str = "PLANTED-pw-5b1e9d77c0a4";
/// base64("site-7:PLANTED-pw-5b1e9d77c0a4")
const PLANTED_B64: &str = "c2l0ZS03OlBMQU5URUQtcHctNWIxZTlkNzdjMGE0";

/// One request's headers (names in lower case).
type Headers = Vec<(String, String)>;

/// Every log line of this test process, at every level (hyper's and
/// reqwest's traces included).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_basic_auth_reach_the_receiver_and_the_password_never_leaks() {
    let logs = Captured::default();
    let w = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .init();

    // The receiver: records every request's headers; answers `status`,
    // echoing the request's headers in any error body as some proxies do.
    let seen: Arc<Mutex<Vec<Headers>>> = Arc::default();
    let status = Arc::new(AtomicU16::new(204));
    let (rec, st) = (seen.clone(), status.clone());
    let port = serve(move |req| {
        let code = st.load(Ordering::SeqCst);
        let body = if code == 204 {
            String::new()
        } else {
            let echo: Vec<String> = req
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            format!("denied; you sent {} password={PLANTED}", echo.join("; "))
        };
        rec.lock().unwrap().push(req.headers);
        (code, vec![], body.into_bytes())
    })
    .await;

    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("region.pass");
    std::fs::write(&pw, format!("{PLANTED}\n")).unwrap();
    let mut opts = options(
        tmp.path(),
        Some(format!("http://127.0.0.1:{port}/api/v1/write")),
    );
    {
        let u = opts.uplink.as_mut().unwrap();
        u.headers = vec![("X-Scope-OrgID".into(), "tenant-a".into())];
        u.basic_auth = Some(("site-7".into(), pw.clone()));
    }
    let p = Pipeline::start_with_store(opts, buffer(tmp.path(), 64 << 20, 1 << 20)).unwrap();
    let now = now_ms();
    p.inject(series("crit_a", 3, now - 2_000, now, 1_000), true)
        .await;
    wait_for(Duration::from_secs(20), "a write accepted", || async {
        p.status().counters.live_samples_sent > 0
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty());
        // Every request (probes and writes alike) carries both.
        for h in seen.iter() {
            let get = |k: &str| {
                h.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            assert_eq!(get("x-scope-orgid"), "tenant-a", "{h:?}");
            assert_eq!(get("authorization"), format!("Basic {PLANTED_B64}"));
            assert_eq!(get("content-encoding"), "snappy");
            assert_eq!(get("x-prometheus-remote-write-version"), "0.1.0");
        }
    }

    // The receiver now refuses (401, then a malformed-batch 400), echoing
    // the credentials back.
    for code in [401u16, 400] {
        status.store(code, Ordering::SeqCst);
        let before = seen.lock().unwrap().len();
        let t = now_ms();
        p.inject(series("crit_b", 3, t - 1_000, t, 1_000), true)
            .await;
        wait_for(Duration::from_secs(20), "a refused request", || async {
            seen.lock().unwrap().len() > before
                && p.status()
                    .counters
                    .responses
                    .contains_key(&code.to_string())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = p.status();
    let outputs = [
        String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned(),
        serde_json::to_string(&st).unwrap(),
        p.render_prometheus(),
        format!("{st:?}"),
    ];
    // The echo did reach us: the redaction had something to do.
    assert!(
        outputs[0].contains("denied; you sent") || outputs[1].contains("denied; you sent"),
        "the refusal is reported: {}",
        outputs[1]
    );
    for out in &outputs {
        assert!(!out.contains(PLANTED), "password leaked:\n{out}");
        assert!(!out.contains(PLANTED_B64), "credentials leaked:\n{out}");
    }
    p.shutdown().await.unwrap();
}
