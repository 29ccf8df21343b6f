//! Just enough of the bbolt file format to tell a sane etcd database from
//! garbage, without opening it: the two meta pages that bbolt (and
//! `etcdctl snapshot status`, which opens the file with bbolt) validate first.
//!
//! Layout (little endian, 64-bit Go structs): each page starts with a 16-byte
//! header `id u64, flags u16, count u16, overflow u32`; pages 0 and 1 are meta
//! pages (flags 0x04) whose body is `magic u32 (0xED0CDAED), version u32 (2),
//! pageSize u32, flags u32, root {pgid u64, sequence u64}, freelist u64,
//! pgid u64 (high-water mark), txid u64, checksum u64` where checksum is
//! FNV-1a 64 of the 56 bytes before it. A snapshot streamed by etcd is
//! `tx.WriteTo`, so its length is exactly `pgid * pageSize`.

use serde::Serialize;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const META_FLAG: u16 = 0x04;
const PAGE_HEADER: usize = 16;
const META_LEN: usize = 64;
/// Enough to hold both meta pages for any page size bbolt uses (≤ 64 KiB).
pub(crate) const HEAD_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub page_size: u32,
    pub pgid: u64,
    pub txid: u64,
    pub root: u64,
    pub freelist: u64,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Parses the meta page `id` starting at `off`.
fn meta_at(head: &[u8], off: usize, id: u64) -> Result<Meta, String> {
    let Some(page) = head.get(off..off + PAGE_HEADER + META_LEN) else {
        return Err(format!("meta page {id}: file too short"));
    };
    let m = &page[PAGE_HEADER..];
    if u32_at(m, 0) != MAGIC {
        return Err(format!("meta page {id}: bad magic {:#010x}", u32_at(m, 0)));
    }
    if u32_at(m, 4) != VERSION {
        return Err(format!("meta page {id}: version {} (want 2)", u32_at(m, 4)));
    }
    if u64_at(page, 0) != id {
        return Err(format!("meta page {id}: page id {}", u64_at(page, 0)));
    }
    let flags = u16::from_le_bytes([page[8], page[9]]);
    if flags & META_FLAG == 0 {
        return Err(format!(
            "meta page {id}: flags {flags:#x} lack the meta flag"
        ));
    }
    if fnv1a64(&m[..56]) != u64_at(m, 56) {
        return Err(format!("meta page {id}: checksum mismatch"));
    }
    let page_size = u32_at(m, 8);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("meta page {id}: implausible page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16),
        freelist: u64_at(m, 32),
        pgid: u64_at(m, 40),
        txid: u64_at(m, 48),
    })
}

/// Whether `head` starts like a bbolt file (page 0's meta magic): how a
/// plain `etcdctl snapshot save` file is told from an Edgeplane snapshot,
/// which starts with a zstd frame.
pub(crate) fn looks_like_bbolt(head: &[u8]) -> bool {
    head.len() >= PAGE_HEADER + 4 && u32_at(head, PAGE_HEADER) == MAGIC
}

/// Checks the head of a bbolt file (its first [`HEAD_BYTES`] or all of it if
/// shorter) against the file's total length. `exact`: the length must equal
/// the high-water mark (a streamed snapshot); otherwise it must be at least
/// that (a live data dir's `member/snap/db` is pre-grown).
pub(crate) fn check(head: &[u8], db_len: u64, exact: bool) -> Result<Meta, String> {
    let m0 = meta_at(head, 0, 0);
    // Page 1 sits at page_size, known only from a valid page 0; try the common sizes otherwise.
    let m1 = match &m0 {
        Ok(m) => meta_at(head, m.page_size as usize, 1),
        Err(_) => [4096usize, 8192, 16384, 65536]
            .iter()
            .map(|&ps| meta_at(head, ps, 1))
            .find(|r| r.is_ok())
            .unwrap_or_else(|| Err("meta page 1: not found".to_string())),
    };
    let meta = match (m0, m1) {
        (Ok(a), Ok(b)) => {
            if a.txid >= b.txid {
                a
            } else {
                b
            }
        }
        (Ok(a), Err(_)) => a,
        (Err(_), Ok(b)) => b,
        (Err(a), Err(b)) => return Err(format!("not a bbolt database: {a}; {b}")),
    };
    let hwm = meta.pgid.saturating_mul(u64::from(meta.page_size));
    // etcd runs bbolt with NoFreelistSync: the freelist page id is then
    // pgidNoFreelist (all ones).
    let freelist_ok = meta.freelist == u64::MAX || meta.freelist < meta.pgid;
    if meta.pgid < 2 || meta.root >= meta.pgid || !freelist_ok {
        return Err(format!(
            "bbolt meta is inconsistent: pgid {}, root {}, freelist {}",
            meta.pgid, meta.root, meta.freelist
        ));
    }
    if (exact && db_len != hwm) || db_len < hwm {
        return Err(format!(
            "database is {db_len} bytes but its meta page says {hwm} ({} pages of {})",
            meta.pgid, meta.page_size
        ));
    }
    Ok(meta)
}
