//! The block codec: a set of samples, columnar per series, before compression.
//!
//! A block is self-contained (its own series table), so one damaged frame never
//! makes another undecodable. Layout of the uncompressed payload, every integer
//! an unsigned LEB128 varint, signed ones zigzag-mapped first:
//!
//! ```text
//! series section   n_series, then per series: n_labels, (name_len name value_len value)*
//! rows section     per sample in append order: zigzag(local_series - (previous + 1))
//! ts section       per series, its samples in order: t0, t1 - t0, then delta-of-delta
//! ctrl section     per series, per sample: one control byte (see `VALUE_*`)
//! ints section     integer / decimal deltas for the control bytes that need one
//! xor section      the non-zero middle bytes of `value XOR previous` (big-endian)
//! ```
//! Each section is preceded by its byte length. Series are numbered in order of
//! first appearance, so a scrape that repeats the same series order encodes its
//! row column as a run of zeros. Values round-trip bit for bit (NaN payloads,
//! -0.0, infinities): every shortcut is checked by decoding it before it is used.

use std::collections::HashMap;

pub(crate) type Labels = Vec<(String, String)>;

/// The value equals the previous one of the same series (bit for bit).
const VALUE_SAME: u8 = 0;
/// Both are integers below 2^53: zigzag(v - prev) follows in the ints section.
const VALUE_INT: u8 = 1;
/// 2..=4: both have at most k = ctrl - 1 decimals: zigzag(scaled delta) in ints.
const VALUE_DEC_MAX: u8 = 4;
/// 0x80 | leading_zero_bytes << 3 | trailing_zero_bytes: XOR bytes follow.
const VALUE_XOR: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
#[error("malformed block: {0}")]
pub(crate) struct CodecError(pub &'static str);

/// Columns of samples that all refer to a shared series table by index.
#[derive(Default, Debug, Clone)]
pub(crate) struct Columns {
    pub series: Vec<u32>,
    pub ts: Vec<i64>,
    pub vals: Vec<u64>,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.series.len()
    }
    pub fn push(&mut self, series: u32, ts: i64, val: u64) {
        self.series.push(series);
        self.ts.push(ts);
        self.vals.push(val);
    }
    pub fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        self.series.drain(..n);
        self.ts.drain(..n);
        self.vals.drain(..n);
    }
    pub fn clear(&mut self) {
        self.series.clear();
        self.ts.clear();
        self.vals.clear();
    }
}

/// A decoded block: a series table and rows in append order.
#[derive(Debug, Default)]
pub(crate) struct Block {
    pub table: Vec<Labels>,
    pub cols: Columns,
}

/// Interns label sets into a table of series.
#[derive(Default, Debug)]
pub(crate) struct Dictionary {
    pub table: Vec<Labels>,
    index: HashMap<Labels, u32>,
    /// The id seen at each position of the previous batch: scrapes repeat the
    /// same series in the same order, so a comparison usually replaces a hash.
    guess: Vec<u32>,
}

impl Dictionary {
    /// The id of `labels`, which was at position `pos` of its batch.
    pub fn intern_at(&mut self, pos: usize, labels: &[(String, String)]) -> u32 {
        if let Some(&g) = self.guess.get(pos)
            && self
                .table
                .get(g as usize)
                .is_some_and(|t| t.as_slice() == labels)
        {
            return g;
        }
        let id = self.intern(labels);
        if pos >= self.guess.len() {
            self.guess.resize(pos + 1, u32::MAX);
        }
        self.guess[pos] = id;
        id
    }

    pub fn intern(&mut self, labels: &[(String, String)]) -> u32 {
        if let Some(&id) = self.index.get(labels) {
            return id;
        }
        let id = self.table.len() as u32;
        self.table.push(labels.to_vec());
        self.index.insert(labels.to_vec(), id);
        id
    }

    pub fn clear(&mut self) {
        self.table.clear();
        self.index.clear();
        self.guess.clear();
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn uvarint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(CodecError("truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(CodecError("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(CodecError("varint too long"));
            }
        }
    }
    fn ivarint(&mut self) -> Result<i64, CodecError> {
        self.uvarint().map(unzigzag)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CodecError("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(CodecError("truncated section"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }
    fn len_prefixed(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| CodecError("length overflow"))?;
        self.bytes(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let b = self.len_prefixed()?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError("label is not UTF-8"))
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

const POW10: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// The integer that represents `bits` with `k` decimals, if it does exactly.
/// Shared by encoder and decoder so both compute the same thing.
fn scaled(bits: u64, k: usize) -> Option<i64> {
    let f = f64::from_bits(bits);
    if !f.is_finite() {
        return None;
    }
    let s = (f * POW10[k]).round();
    if s.abs() >= 9.0e15 {
        return None;
    }
    let i = s as i64;
    (unscale(i, k).to_bits() == bits).then_some(i)
}

fn unscale(i: i64, k: usize) -> f64 {
    if k == 0 {
        i as f64
    } else {
        i as f64 / POW10[k]
    }
}

/// Encode rows `cols` (indexes into `table`) into a block payload.
pub(crate) fn encode(table: &[Labels], cols: &Columns, out: &mut Vec<u8>) {
    let n = cols.len();
    const UNSEEN: u32 = u32::MAX;
    let mut local_of: Vec<u32> = vec![UNSEEN; table.len()];
    let mut order: Vec<u32> = Vec::new();
    let mut rows_local: Vec<u32> = Vec::with_capacity(n);
    for &s in &cols.series {
        let slot = &mut local_of[s as usize];
        if *slot == UNSEEN {
            *slot = order.len() as u32;
            order.push(s);
        }
        rows_local.push(*slot);
    }
    // Group row indexes by series (counting sort keeps append order inside a series).
    let mut starts = vec![0usize; order.len() + 1];
    for &l in &rows_local {
        starts[l as usize + 1] += 1;
    }
    for i in 0..order.len() {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut by_series = vec![0u32; n];
    for (i, &l) in rows_local.iter().enumerate() {
        by_series[fill[l as usize]] = i as u32;
        fill[l as usize] += 1;
    }

    let mut sec = Vec::with_capacity(64 * 1024);
    // series section
    put_uvarint(&mut sec, order.len() as u64);
    for &g in &order {
        let labels = &table[g as usize];
        put_uvarint(&mut sec, labels.len() as u64);
        for (k, v) in labels {
            put_bytes(&mut sec, k.as_bytes());
            put_bytes(&mut sec, v.as_bytes());
        }
    }
    put_bytes(out, &sec);

    // rows section
    sec.clear();
    put_uvarint(&mut sec, n as u64);
    let mut prev: i64 = -1;
    for &l in &rows_local {
        put_uvarint(&mut sec, zigzag(i64::from(l).wrapping_sub(prev + 1)));
        prev = i64::from(l);
    }
    put_bytes(out, &sec);

    // ts, ctrl, ints, xor sections, series-major
    sec.clear();
    let mut ctrl = Vec::with_capacity(n);
    let mut ints = Vec::with_capacity(n);
    let mut xors = Vec::with_capacity(n);
    for l in 0..order.len() {
        let rows = &by_series[starts[l]..starts[l + 1]];
        let mut prev_ts = 0i64;
        let mut prev_delta = 0i64;
        let mut prev_val = Scaled::new(0);
        for (j, &r) in rows.iter().enumerate() {
            let t = cols.ts[r as usize];
            match j {
                0 => put_uvarint(&mut sec, zigzag(t)),
                1 => {
                    prev_delta = t.wrapping_sub(prev_ts);
                    put_uvarint(&mut sec, zigzag(prev_delta));
                }
                _ => {
                    let d = t.wrapping_sub(prev_ts);
                    put_uvarint(&mut sec, zigzag(d.wrapping_sub(prev_delta)));
                    prev_delta = d;
                }
            }
            prev_ts = t;
            let v = Scaled::new(cols.vals[r as usize]);
            prev_val = encode_value(prev_val, v, &mut ctrl, &mut ints, &mut xors);
        }
    }
    put_bytes(out, &sec);
    put_bytes(out, &ctrl);
    put_bytes(out, &ints);
    put_bytes(out, &xors);
}

/// A value with its decimal scalings, computed on demand and kept for the
/// next value of the series.
#[derive(Clone, Copy)]
struct Scaled {
    bits: u64,
    vals: [Option<i64>; 4],
    done: u8,
}

impl Scaled {
    fn new(bits: u64) -> Self {
        Scaled {
            bits,
            vals: [None; 4],
            done: 0,
        }
    }
    fn get(&mut self, k: usize) -> Option<i64> {
        if self.done & (1 << k) == 0 {
            self.vals[k] = scaled(self.bits, k);
            self.done |= 1 << k;
        }
        self.vals[k]
    }
}

/// Encode `v` after `prev`; returns `v` (with what was learned about it).
fn encode_value(
    mut prev: Scaled,
    mut v: Scaled,
    ctrl: &mut Vec<u8>,
    ints: &mut Vec<u8>,
    xors: &mut Vec<u8>,
) -> Scaled {
    if v.bits == prev.bits {
        ctrl.push(VALUE_SAME);
        return prev;
    }
    if f64::from_bits(v.bits).is_finite() && f64::from_bits(prev.bits).is_finite() {
        for k in 0..VALUE_DEC_MAX as usize {
            if let Some(b) = v.get(k)
                && let Some(a) = prev.get(k)
            {
                ctrl.push(VALUE_INT + k as u8);
                put_uvarint(ints, zigzag(b.wrapping_sub(a)));
                return v;
            }
        }
    }
    let x = prev.bits ^ v.bits;
    let lz = (x.leading_zeros() / 8) as usize;
    let tz = (x.trailing_zeros() / 8) as usize;
    ctrl.push(VALUE_XOR | ((lz as u8) << 3) | tz as u8);
    xors.extend_from_slice(&x.to_be_bytes()[lz..8 - tz]);
    v
}

/// Decode a block payload. Never panics on malformed input.
pub(crate) fn decode(buf: &[u8], expect_rows: usize) -> Result<Block, CodecError> {
    let mut top = Reader::new(buf);
    let mut series_sec = Reader::new(top.len_prefixed()?);
    let mut rows_sec = Reader::new(top.len_prefixed()?);
    let mut ts_sec = Reader::new(top.len_prefixed()?);
    let mut ctrl_sec = Reader::new(top.len_prefixed()?);
    let mut ints_sec = Reader::new(top.len_prefixed()?);
    let mut xor_sec = Reader::new(top.len_prefixed()?);
    if !top.done() {
        return Err(CodecError("trailing bytes"));
    }

    let n_series = series_sec.uvarint()? as usize;
    if n_series > expect_rows || n_series > buf.len() {
        return Err(CodecError("series count out of range"));
    }
    let mut table = Vec::with_capacity(n_series);
    for _ in 0..n_series {
        let n_labels = series_sec.uvarint()? as usize;
        if n_labels > buf.len() {
            return Err(CodecError("label count out of range"));
        }
        let mut labels = Vec::with_capacity(n_labels);
        for _ in 0..n_labels {
            let k = series_sec.string()?;
            let v = series_sec.string()?;
            labels.push((k, v));
        }
        table.push(labels);
    }
    if !series_sec.done() {
        return Err(CodecError("trailing bytes in series section"));
    }

    let n = rows_sec.uvarint()? as usize;
    if n != expect_rows {
        return Err(CodecError("row count does not match the frame header"));
    }
    let mut rows = Vec::with_capacity(n);
    let mut counts = vec![0usize; n_series];
    let mut prev: i64 = -1;
    for _ in 0..n {
        let l = (prev + 1).wrapping_add(rows_sec.ivarint()?);
        if l < 0 || l as usize >= n_series {
            return Err(CodecError("row refers to a missing series"));
        }
        counts[l as usize] += 1;
        rows.push(l as u32);
        prev = l;
    }
    if !rows_sec.done() {
        return Err(CodecError("trailing bytes in rows section"));
    }

    // Series-major columns, then scattered back into append order.
    let mut starts = vec![0usize; n_series + 1];
    for l in 0..n_series {
        starts[l + 1] = starts[l] + counts[l];
    }
    let mut ts_sm = Vec::with_capacity(n);
    let mut val_sm = Vec::with_capacity(n);
    for &count in &counts {
        let mut prev_ts = 0i64;
        let mut prev_delta = 0i64;
        let mut prev_val = 0u64;
        for j in 0..count {
            let z = ts_sec.ivarint()?;
            let t = match j {
                0 => z,
                1 => {
                    prev_delta = z;
                    prev_ts.wrapping_add(z)
                }
                _ => {
                    prev_delta = prev_delta.wrapping_add(z);
                    prev_ts.wrapping_add(prev_delta)
                }
            };
            ts_sm.push(t);
            prev_ts = t;
            let c = ctrl_sec.u8()?;
            let v = match c {
                VALUE_SAME => prev_val,
                VALUE_INT..=VALUE_DEC_MAX => {
                    let k = (c - VALUE_INT) as usize;
                    let a = scaled(prev_val, k).ok_or(CodecError("bad decimal base"))?;
                    let d = ints_sec.ivarint()?;
                    unscale(a.wrapping_add(d), k).to_bits()
                }
                c if c & VALUE_XOR != 0 => {
                    let lz = ((c >> 3) & 0x0f) as usize;
                    let tz = (c & 0x07) as usize;
                    if lz + tz >= 8 {
                        return Err(CodecError("bad xor control byte"));
                    }
                    let b = xor_sec.bytes(8 - lz - tz)?;
                    let mut x = [0u8; 8];
                    x[lz..8 - tz].copy_from_slice(b);
                    prev_val ^ u64::from_be_bytes(x)
                }
                _ => return Err(CodecError("unknown control byte")),
            };
            val_sm.push(v);
            prev_val = v;
        }
    }
    if !(ts_sec.done() && ctrl_sec.done() && ints_sec.done() && xor_sec.done()) {
        return Err(CodecError("trailing bytes in value sections"));
    }
    let mut cursor = starts;
    let mut cols = Columns {
        series: Vec::with_capacity(n),
        ts: Vec::with_capacity(n),
        vals: Vec::with_capacity(n),
    };
    for &l in &rows {
        let i = cursor[l as usize];
        cursor[l as usize] += 1;
        cols.push(l, ts_sm[i], val_sm[i]);
    }
    Ok(Block { table, cols })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(table: &[Labels], cols: &Columns) -> Block {
        let mut buf = Vec::new();
        encode(table, cols, &mut buf);
        decode(&buf, cols.len()).expect("decodes")
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        let table = vec![
            vec![("__name__".to_string(), "a".to_string())],
            vec![("__name__".to_string(), "b".to_string())],
        ];
        let specials = [
            0.0f64.to_bits(),
            (-0.0f64).to_bits(),
            f64::NAN.to_bits(),
            0x7ff0_0000_0000_0002, // Prometheus stale marker
            0xfff8_dead_beef_0001, // negative NaN with payload
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            1.5f64.to_bits(),
            12345.67f64.to_bits(),
            0.1f64.to_bits(),
            0.3f64.to_bits(),
            9.0e15f64.to_bits(),
            f64::MAX.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
            1.0e-310f64.to_bits(),
            (1u64 << 53) as f64 as u64,
        ];
        let mut cols = Columns::default();
        for (i, &a) in specials.iter().enumerate() {
            for &b in &specials {
                cols.push((i % 2) as u32, i64::MIN + i as i64, a);
                cols.push((i % 2) as u32, i64::MAX - i as i64, b);
            }
        }
        let back = roundtrip(&table, &cols);
        assert_eq!(back.cols.vals, cols.vals);
        assert_eq!(back.cols.ts, cols.ts);
        let names: Vec<_> = back
            .cols
            .series
            .iter()
            .map(|&s| &back.table[s as usize])
            .collect();
        let want: Vec<_> = cols.series.iter().map(|&s| &table[s as usize]).collect();
        assert_eq!(names, want);
    }

    #[test]
    fn garbage_never_panics() {
        let table = vec![vec![("__name__".to_string(), "a".to_string())]];
        let mut cols = Columns::default();
        for i in 0..100 {
            cols.push(0, 1000 + i * 15000, (i as f64 * 1.25).to_bits());
        }
        let mut buf = Vec::new();
        encode(&table, &cols, &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let _ = decode(&b, 100);
            }
            let _ = decode(&buf[..i], 100);
        }
    }
}
