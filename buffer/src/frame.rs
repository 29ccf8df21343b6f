//! Frames: the checksummed unit written to segment and head files.
//!
//! ```text
//! offset size field
//!      0    4 magic "EPF1"
//!      4    1 format version (1)
//!      5    1 codec (1 = columnar block, zstd)
//!      6    2 reserved, zero
//!      8    4 payload_len   compressed payload bytes that follow the header
//!     12    4 raw_len       payload bytes after decompression (bounds memory)
//!     16    8 first_seq     sequence number of the first sample
//!     24    4 count         samples in the frame
//!     28    4 reserved, zero
//!     32    8 min_ts        smallest timestamp (ms) in the frame
//!     40    8 max_ts        largest timestamp (ms) in the frame
//!     48    4 payload_crc   CRC32C of the payload
//!     52    4 header_crc    CRC32C of bytes 0..52
//!     56    … payload
//! ```
//! The header has its own checksum so a scan can trust lengths and sequence
//! numbers without reading payloads, and can find the next frame after damage.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::codec::{self, Block, Columns, Labels};

pub(crate) const MAGIC: [u8; 4] = *b"EPF1";
pub(crate) const VERSION: u8 = 1;
pub(crate) const CODEC_ZSTD_COLUMNAR: u8 = 1;
pub(crate) const HEADER_LEN: u64 = 56;
/// No frame decompresses to more than this; a header that claims more is corrupt.
pub(crate) const MAX_RAW_LEN: u32 = 512 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub payload_len: u32,
    pub raw_len: u32,
    pub first_seq: u64,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub payload_crc: u32,
}

impl FrameHeader {
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
    pub fn total_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.payload_len)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = CODEC_ZSTD_COLUMNAR;
        b[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..28].copy_from_slice(&self.count.to_le_bytes());
        b[32..40].copy_from_slice(&self.min_ts.to_le_bytes());
        b[40..48].copy_from_slice(&self.max_ts.to_le_bytes());
        b[48..52].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse and check a header; `None` if anything is off.
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; HEADER_LEN as usize] = b.get(..HEADER_LEN as usize)?.try_into().ok()?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if b[0..4] != MAGIC || b[4] != VERSION || b[5] != CODEC_ZSTD_COLUMNAR {
            return None;
        }
        if u32_at(52) != crc32c::crc32c(&b[0..52]) {
            return None;
        }
        let h = FrameHeader {
            payload_len: u32_at(8),
            raw_len: u32_at(12),
            first_seq: u64_at(16),
            count: u32_at(24),
            min_ts: u64_at(32) as i64,
            max_ts: u64_at(40) as i64,
            payload_crc: u32_at(48),
        };
        let sane = h.count > 0
            && h.raw_len <= MAX_RAW_LEN
            && h.min_ts <= h.max_ts
            && h.first_seq.checked_add(u64::from(h.count)).is_some();
        sane.then_some(h)
    }
}

/// Encode and compress rows into a complete frame (header + payload).
pub(crate) fn build(
    table: &[Labels],
    cols: &Columns,
    first_seq: u64,
    level: i32,
) -> Result<Vec<u8>, std::io::Error> {
    let mut raw = Vec::with_capacity(cols.len() * 4 + 1024);
    codec::encode(table, cols, &mut raw);
    let payload = zstd::bulk::compress(&raw, level)?;
    let (min_ts, max_ts) = cols
        .ts
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let h = FrameHeader {
        payload_len: u32::try_from(payload.len()).map_err(|_| invalid("frame too large"))?,
        raw_len: u32::try_from(raw.len())
            .ok()
            .filter(|&n| n <= MAX_RAW_LEN)
            .ok_or_else(|| invalid("frame too large"))?,
        first_seq,
        count: u32::try_from(cols.len()).map_err(|_| invalid("too many samples"))?,
        min_ts,
        max_ts,
        payload_crc: crc32c::crc32c(&payload),
    };
    let mut out = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Why a frame's payload could not be used.
#[derive(Debug)]
pub(crate) enum PayloadError {
    Io(std::io::Error),
    Corrupt,
}

/// Check the CRC, decompress and decode a payload.
pub(crate) fn decode_payload(h: &FrameHeader, payload: &[u8]) -> Result<Block, PayloadError> {
    if crc32c::crc32c(payload) != h.payload_crc {
        return Err(PayloadError::Corrupt);
    }
    let raw =
        zstd::bulk::decompress(payload, h.raw_len as usize).map_err(|_| PayloadError::Corrupt)?;
    if raw.len() != h.raw_len as usize {
        return Err(PayloadError::Corrupt);
    }
    codec::decode(&raw, h.count as usize).map_err(|_| PayloadError::Corrupt)
}

/// Read and decode the frame at `offset`.
pub(crate) fn read_frame(file: &File, offset: u64, h: &FrameHeader) -> Result<Block, PayloadError> {
    let mut payload = vec![0u8; h.payload_len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN)
        .map_err(PayloadError::Io)?;
    decode_payload(h, &payload)
}

/// One frame found by a scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameInfo {
    pub offset: u64,
    pub header: FrameHeader,
}

/// A damaged region found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub len: u64,
    /// Samples lost, when the damaged frame's header was still readable.
    pub samples: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub frames: Vec<FrameInfo>,
    /// Damaged regions followed by at least one good frame.
    pub damaged: Vec<Damage>,
    /// End of the last good frame: everything after it is a torn tail.
    pub valid_end: u64,
    /// Samples in a torn tail whose header was readable.
    pub tail_samples: u64,
}

/// Walk the frames of a file of length `len`. With `verify`, payload checksums
/// are checked too (the active segment and the head); otherwise only headers
/// are read (sealed segments: payloads are checked when read).
pub(crate) fn scan(file: &File, len: u64, verify: bool) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut pos = 0u64;
    let mut hdr = [0u8; HEADER_LEN as usize];
    let mut pending_damage: Option<Damage> = None;
    let mut payload = Vec::new();
    while pos < len {
        let mut good = None;
        if pos + HEADER_LEN <= len {
            file.read_exact_at(&mut hdr, pos)?;
            if let Some(h) = FrameHeader::parse(&hdr)
                && pos + h.total_len() <= len
            {
                good = Some(h);
            }
        }
        match good {
            Some(h) => {
                let mut ok = true;
                if verify {
                    payload.resize(h.payload_len as usize, 0);
                    file.read_exact_at(&mut payload, pos + HEADER_LEN)?;
                    ok = crc32c::crc32c(&payload) == h.payload_crc;
                }
                if ok {
                    if let Some(d) = pending_damage.take() {
                        out.damaged.push(d);
                    }
                    out.frames.push(FrameInfo {
                        offset: pos,
                        header: h,
                    });
                    pos += h.total_len();
                    out.valid_end = pos;
                } else {
                    // The header is good, so the frame's extent is known: skip it.
                    if let Some(d) = pending_damage.take() {
                        out.damaged.push(d);
                    }
                    pending_damage = Some(Damage {
                        offset: pos,
                        len: h.total_len(),
                        samples: u64::from(h.count),
                    });
                    pos += h.total_len();
                }
            }
            None => {
                // Unreadable header: look for the next good one.
                let next = resync(file, pos + 1, len)?;
                let end = next.unwrap_or(len);
                match &mut pending_damage {
                    Some(d) if d.offset + d.len == pos => d.len = end - d.offset,
                    _ => {
                        if let Some(d) = pending_damage.take() {
                            out.damaged.push(d);
                        }
                        pending_damage = Some(Damage {
                            offset: pos,
                            len: end - pos,
                            samples: 0,
                        });
                    }
                }
                pos = end;
            }
        }
    }
    // Damage with no good frame after it is the torn tail.
    out.tail_samples = pending_damage.map_or(0, |d| d.samples);
    Ok(out)
}

/// The offset of the next plausible frame header at or after `from`.
fn resync(file: &File, from: u64, len: u64) -> std::io::Result<Option<u64>> {
    if from >= len {
        return Ok(None);
    }
    let mut rest = vec![0u8; (len - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    let mut i = 0usize;
    while i + HEADER_LEN as usize <= rest.len() {
        if rest[i..i + 4] == MAGIC
            && let Some(h) = FrameHeader::parse(&rest[i..])
            && from + i as u64 + h.total_len() <= len
        {
            return Ok(Some(from + i as u64));
        }
        i += 1;
    }
    Ok(None)
}
