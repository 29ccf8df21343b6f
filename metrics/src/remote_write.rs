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
    /// The receiver refused this data for good (4xx, or a 500 saying the
    /// samples are too old): set it aside in the dead-letter area.
    Permanent { reason: String },
    /// The receiver refused *us*, not the data (401, 403, 404, 405, 407): the
    /// endpoint or credentials are wrong. Retrying the same batch is
    /// pointless until the configuration or the region is fixed, but
    /// dead-lettering would move the whole backlog into a bounded area and
    /// lose it, so the link is treated as down and the batch kept.
    Endpoint { reason: String },
}

/// The longest `Retry-After` honoured; a larger value is clamped so a
/// confused receiver cannot park the uplink for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Decides what a reply means for the batch. `body` is (the start of) the
/// response body, `retry_after` the raw `Retry-After` header.
pub fn verdict(status: u16, body: &str, retry_after: Option<&str>) -> Verdict {
    let excerpt = body_excerpt(body);
    match status {
        200..=299 => Verdict::Delivered,
        401 | 403 | 404 | 405 | 407 => Verdict::Endpoint {
            reason: format!("HTTP {status}: {excerpt}"),
        },
        429 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP 429: {excerpt}"),
        },
        400..=499 => Verdict::Permanent {
            reason: format!("HTTP {status}: {excerpt}"),
        },
        500..=599 if says_too_old(body) => Verdict::Permanent {
            reason: format!("HTTP {status} (too old, permanent): {excerpt}"),
        },
        500..=599 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP {status}: {excerpt}"),
        },
        _ => Verdict::Retry {
            after: None,
            reason: format!("unexpected HTTP {status}: {excerpt}"),
        },
    }
}

/// Prometheus before 2.50 answers 500 to samples outside its accept window
/// (prometheus#13334, #13972); retrying those would loop forever.
fn says_too_old(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("too old sample") || b.contains("out of bounds")
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
        assert!(matches!(
            verdict(400, "out of order sample", None),
            Verdict::Permanent { .. }
        ));
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
            verdict(500, "too old sample", None),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            verdict(500, "failed: Out Of Bounds", None),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            verdict(500, "disk full", None),
            Verdict::Retry { after: None, .. }
        ));
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
