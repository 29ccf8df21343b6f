//! Durations and byte sizes as they are written in the file.
//!
//! Durations are humantime strings (`"15s"`, `"500ms"`, `"3d"`). Byte sizes
//! are either a plain integer (bytes) or a string with a unit: decimal
//! (`"100MB"` = 100 × 1000²) or binary (`"512MiB"` = 512 × 1024²). Units are
//! case-sensitive except that `B` may be omitted (`"512Mi"`, `"100M"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parse a byte size such as `"512MiB"`, `"2GiB"`, `"100MB"`, `"4096"`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!("{text:?} does not start with a number"));
    }
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KB" | "kB" | "k" => 1000,
        "M" | "MB" => 1000u64.pow(2),
        "G" | "GB" => 1000u64.pow(3),
        "T" | "TB" => 1000u64.pow(4),
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    if num.contains('.') {
        let f: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a number with a unit"))?;
        let bytes = f * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        if bytes.fract() != 0.0 {
            return Err(format!("{text:?} is not a whole number of bytes"));
        }
        Ok(bytes as u64)
    } else {
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a number with a unit"))?;
        n.checked_mul(mult)
            .ok_or_else(|| format!("{text:?} is out of range"))
    }
}

/// Format a byte count the way a person would write it in the file: the
/// largest binary unit that divides it exactly, else plain bytes.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

/// Format a duration the way it is written in the file, in the largest units
/// that are exact (`"15s"`, `"1m 30s"`, `"7d"`, `"500ms"`); humantime reads
/// every result back to the same duration.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string();
    }
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut parts = Vec::new();
    for (size, unit) in [
        (86_400_000u128, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
        (1, "ms"),
    ] {
        if ms >= size {
            parts.push(format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    parts.join(" ")
}

/// Serde helper: serialize a `Duration` as a humantime string.
pub fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Serde helper: serialize an `Option<Duration>` as a humantime string or null.
pub fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string such as \"15s\", \"500ms\" or \"3d\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v.trim()).map_err(|e| {
            E::custom(format!(
                "invalid duration {v:?}: {e}; write a duration such as \"15s\", \"500ms\" or \"3d\""
            ))
        })
    }
}

/// Serde helper for `Option<Duration>` raw fields (use with `default`).
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_str(DurationVisitor).map(Some)
}

struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte size: an integer or a string such as \"512MiB\", \"2GiB\" or \"100MB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("a byte size cannot be negative ({v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_bytes(v).map_err(|e| E::custom(format!("invalid byte size: {e}")))
    }
}

/// Serde helper for `Option<u64>` byte-size raw fields (use with `default`).
pub fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(BytesVisitor).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes(" 8 MiB "), Ok(8 << 20));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
        assert!(parse_bytes("0.5B").is_err());
    }

    #[test]
    fn format_round_trips() {
        for n in [0, 1, 1023, 1024, 64 << 20, 2 << 30, 100_000_000] {
            assert_eq!(parse_bytes(&format_bytes(n)), Ok(n));
        }
        assert_eq!(format_bytes(2 << 30), "2GiB");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(29 * 86_400 + 61),
            Duration::from_nanos(5),
        ] {
            assert_eq!(humantime::parse_duration(&format_duration(d)).ok(), Some(d));
        }
    }
}
