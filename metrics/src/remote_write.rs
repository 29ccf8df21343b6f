//! Prometheus remote write 1.0: the wire format and the verdict on a reply.
//!
//! The protobuf messages are written by hand with `prost` derives (the four
//! messages we need from `prometheus/prompb`; no protoc, no build script).
//! A request is a snappy *block* (not framed) compressed `WriteRequest`, sent
//! with the three headers in [`HEADERS`].
//!
//! Ordering rule (remote write 1.0): within one request the samples of a
//! series are in timestamp order. [`encode`] groups a batch by series, keeps
//! the series in order of first appearance and sorts each series' samples by
//! timestamp (stable, so the order of equal timestamps is kept).

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;

use crate::Sample;

/// The headers every remote-write request carries.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

/// `prometheus.WriteRequest` (metadata, field 3, is never sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries` (exemplars and histograms are never sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Builds the `WriteRequest` for a batch (see the module docs for ordering).
/// Labels are sorted by name, as the protocol requires.
pub fn build_request(samples: &[Sample]) -> WriteRequest {
    let mut index: HashMap<&[(String, String)], usize> = HashMap::new();
    let mut series: Vec<TimeSeries> = Vec::new();
    for s in samples {
        let i = *index.entry(s.labels.as_slice()).or_insert_with(|| {
            let mut labels: Vec<Label> = s
                .labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect();
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            series.push(TimeSeries {
                labels,
                samples: Vec::new(),
            });
            series.len() - 1
        });
        series[i].samples.push(WireSample {
            value: s.value,
            timestamp: s.timestamp_ms,
        });
    }
    for ts in &mut series {
        ts.samples.sort_by_key(|s| s.timestamp);
    }
    WriteRequest { timeseries: series }
}

/// The snappy-compressed protobuf body for a batch.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    compress(&build_request(samples).encode_to_vec())
}

/// Snappy block compression of an encoded message.
pub fn compress(protobuf: &[u8]) -> Vec<u8> {
    // snap fails only for inputs over ~4 GiB (u32 length); a batch is
    // `batch_samples` samples, a few hundred KiB at most.
    snap::raw::Encoder::new()
        .compress_vec(protobuf)
        .expect("a remote-write batch is far below snappy's 4 GiB limit")
}

/// Decodes a request body (the receiving side; used by tests and tools).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

/// What to do with a batch after the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: acknowledge it to the buffer.
    Delivered,
    /// 5xx, 429 (and anything that is not the receiver judging the data):
    /// keep it and try again later, not before `after` if given.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The receiver refused this data for good because it is malformed (a
    /// 4xx that is not about the samples' age or order): set it aside in the
    /// dead-letter area.
    Permanent { reason: String },
    /// The receiver does not accept these samples *because of its own
    /// setup*: they are older than its newest sample of the series (out of
    /// order) or than its accept window (out of bounds, too old). Answered
    /// with 400 or 500 (Prometheus, Mimir, Cortex) or 409 (Thanos Receive).
    /// Never dead-lettered: the backlog stays in the buffer and is retried
    /// on a slow schedule; see [`Refusal`].
    Refused { refusal: Refusal, reason: String },
    /// The receiver refused *us*, not the data (401, 403, 404, 405, 407): the
    /// endpoint or credentials are wrong. Retrying the same batch is
    /// pointless until the configuration or the region is fixed, but
    /// dead-lettering would move the whole backlog into a bounded area and
    /// lose it, so the link is treated as down and the batch kept.
    Endpoint { reason: String },
}

/// Why a receiver refused old samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Older than the series' newest sample, and no out-of-order window.
    OutOfOrder,
    /// Older than the receiver's accept window (Prometheus: head max time
    /// − 1 h; Mimir/Cortex: "too old"; Thanos: 409 conflict).
    TooOld,
}

impl Refusal {
    /// What the operator should do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Refusal::OutOfOrder => {
                "region refuses samples older than the newest one of their series: set `out_of_order_time_window` under `storage.tsdb` in prometheus.yml (Mimir/Cortex: the `out_of_order_time_window` limit per tenant; Thanos Receive: `--tsdb.out-of-order.time-window`) to cover the outages you expect (and keep the retention longer)"
            }
            Refusal::TooOld => {
                "region refuses samples older than ~1h: set `out_of_order_time_window` under `storage.tsdb` in prometheus.yml (Mimir/Cortex: the `out_of_order_time_window` limit per tenant; Thanos Receive: `--tsdb.out-of-order.time-window`) to cover the outages you expect (and keep the retention longer)"
            }
        }
    }
}

/// The longest `Retry-After` honoured; a larger value is clamped so a
/// confused receiver cannot park the uplink for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Decides what a reply means for the batch. `body` is (the start of) the
/// response body, `retry_after` the raw `Retry-After` header.
pub fn verdict(status: u16, body: &str, retry_after: Option<&str>) -> Verdict {
    let excerpt = body_excerpt(body);
    let refused = |refusal| Verdict::Refused {
        refusal,
        reason: format!("HTTP {status}: {excerpt}"),
    };
    match (status, refusal_in(body)) {
        (200..=299, _) => Verdict::Delivered,
        (401 | 403 | 404 | 405 | 407, _) => Verdict::Endpoint {
            reason: format!("HTTP {status}: {excerpt}"),
        },
        (429, _) => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP 429: {excerpt}"),
        },
        // Thanos Receive answers 409 to out-of-order, out-of-bounds and
        // duplicate samples alike (its body only says "conflict").
        (409, r) => refused(r.unwrap_or(Refusal::OutOfOrder)),
        (400..=599, Some(r)) => refused(r),
        (400..=499, None) => Verdict::Permanent {
            reason: format!("HTTP {status}: {excerpt}"),
        },
        (500..=599, None) => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP {status}: {excerpt}"),
        },
        _ => Verdict::Retry {
            after: None,
            reason: format!("unexpected HTTP {status}: {excerpt}"),
        },
    }
}

/// Whether a reply body says the samples are refused for their age or
/// order, as Prometheus (`out of order sample`, `out of bounds`, `too old
/// sample`; 400, or 500 when wrapped: prometheus#13334), Mimir
/// (`err-mimir-sample-out-of-order`, `err-mimir-sample-timestamp-too-old`,
/// `err-mimir-sample-out-of-bounds`) and Cortex (`sample timestamp out of
/// bounds`, `out of order sample`) word it.
pub fn refusal_in(body: &str) -> Option<Refusal> {
    let b = body.to_ascii_lowercase();
    let has = |xs: &[&str]| xs.iter().any(|x| b.contains(x));
    if has(&[
        "out of bounds",
        "out-of-bounds",
        "too old",
        "too-old",
        "timestamp too old",
    ]) {
        Some(Refusal::TooOld)
    } else if has(&[
        "out of order sample",
        "sample-out-of-order",
        "out-of-order samples are not allowed",
    ]) {
        Some(Refusal::OutOfOrder)
    } else {
        None
    }
}

fn body_excerpt(body: &str) -> String {
    let t = body.trim();
    let mut end = t.len().min(300);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_string()
}

/// `Retry-After` as delta-seconds or an HTTP date, clamped to
/// [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(labels: &[(&str, &str)], ts: i64, v: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp_ms: ts,
            value: v,
        }
    }

    #[test]
    fn groups_by_series_and_orders_by_time() {
        let a = [("__name__", "a"), ("job", "x")];
        let b = [("__name__", "b"), ("job", "x")];
        let batch = vec![
            s(&a, 30, 3.0),
            s(&b, 10, 1.0),
            s(&a, 10, 1.0),
            s(&a, 20, 2.0),
        ];
        let req = decode(&encode(&batch)).expect("round trip");
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(req.timeseries[0].labels[0].value, "a");
        let ts: Vec<i64> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| s.timestamp)
            .collect();
        assert_eq!(ts, vec![10, 20, 30]);
        assert_eq!(req.timeseries[1].samples.len(), 1);
    }

    #[test]
    fn labels_are_sorted_on_the_wire() {
        let batch = vec![s(&[("z", "1"), ("__name__", "m"), ("a", "2")], 1, 1.0)];
        let req = build_request(&batch);
        let names: Vec<&str> = req.timeseries[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, vec!["__name__", "a", "z"]);
    }

    #[test]
    fn wire_format_is_prompb() {
        // Hand-encoded prompb bytes for one series {__name__="m"} with one
        // sample (value 1.0, timestamp 5): checks tags and wire types.
        let req = build_request(&[s(&[("__name__", "m")], 5, 1.0)]);
        let bytes = req.encode_to_vec();
        let expected: Vec<u8> = vec![
            0x0a, 0x1c, // field 1 (timeseries), len 28
            0x0a, 0x0d, // labels, len 13
            0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', // name
            0x12, 0x01, b'm', // value
            0x12, 0x0b, // samples, len 11
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // double 1.0
            0x10, 0x05, // int64 5
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(204, "", None), Verdict::Delivered);
        assert_eq!(verdict(200, "", None), Verdict::Delivered);
        assert!(matches!(verdict(413, "", None), Verdict::Permanent { .. }));
        assert!(matches!(verdict(401, "", None), Verdict::Endpoint { .. }));
        assert!(matches!(verdict(404, "", None), Verdict::Endpoint { .. }));
        assert_eq!(
            verdict(429, "slow down", Some("7")),
            Verdict::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429: slow down".into()
            }
        );
        assert!(matches!(
            verdict(503, "", Some("100000")),
            Verdict::Retry { after: Some(d), .. } if d == MAX_RETRY_AFTER
        ));
        assert!(matches!(
            verdict(500, "disk full", None),
            Verdict::Retry { after: None, .. }
        ));
    }

    fn refusal(status: u16, body: &str) -> Option<Refusal> {
        match verdict(status, body, None) {
            Verdict::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }

    /// The exact texts receivers answer, from their sources.
    #[test]
    fn refusals_of_old_samples_are_told_from_malformed_batches() {
        use Refusal::*;
        // Prometheus 2.42 (storage/remote/write_handler.go: `http.Error(w,
        // err.Error(), 400)` for storage.ErrOutOfOrderSample /
        // ErrOutOfBounds; a wrapped one, or ErrTooOldSample with an OOO
        // window, falls through to 500).
        assert_eq!(refusal(400, "out of order sample\n"), Some(OutOfOrder));
        assert_eq!(refusal(400, "out of bounds\n"), Some(TooOld));
        assert_eq!(refusal(500, "too old sample\n"), Some(TooOld));
        assert_eq!(
            refusal(500, "failed to append: Out Of Bounds"),
            Some(TooOld)
        );
        // Mimir (pkg/ingester/errors.go, 400).
        assert_eq!(
            refusal(
                400,
                "failed pushing to ingester: user=anonymous: the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed (err-mimir-sample-out-of-order). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__=\"test\"}"
            ),
            Some(OutOfOrder)
        );
        assert_eq!(
            refusal(
                400,
                "the sample has been rejected because its timestamp is too old (err-mimir-sample-timestamp-too-old). The affected sample has timestamp 1970-01-19T05:30:43.969Z and is from series {__name__=\"test\"}"
            ),
            Some(TooOld)
        );
        // Cortex (pkg/ingester/errors.go, 400).
        assert_eq!(
            refusal(
                400,
                "user=fake: sample timestamp out of bounds; last timestamp: 1575043969, incoming timestamp: 1575043900 for series {__name__=\"test\"}"
            ),
            Some(TooOld)
        );
        assert_eq!(
            refusal(
                400,
                "user=fake: out of order sample. timestamp=1970-01-19T05:30:43.969Z, series={__name__=\"test\"}"
            ),
            Some(OutOfOrder)
        );
        // Thanos Receive (pkg/receive/handler.go): out of order, out of
        // bounds and duplicates all become errConflict, HTTP 409.
        assert_eq!(
            refusal(
                409,
                "store locally for endpoint 127.0.0.1:10901: conflict\n"
            ),
            Some(OutOfOrder)
        );
        // Malformed batches stay permanent (dead letter).
        for (status, body) in [
            (400, "snappy: corrupt input"),
            (400, "duplicate sample for timestamp"),
            // VictoriaMetrics: never refuses old samples (drops those
            // outside its retention with a log line and answers 204); a
            // malformed request is a 400.
            (
                400,
                "cannot parse remote write request: unexpected end of stream",
            ),
            (422, "invalid metric name"),
        ] {
            assert!(
                matches!(verdict(status, body, None), Verdict::Permanent { .. }),
                "{status} {body}"
            );
        }
        assert_eq!(verdict(204, "", None), Verdict::Delivered);
    }

    #[test]
    fn retry_after_http_date() {
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        let v = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let d = parse_retry_after(&v).expect("parses");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
