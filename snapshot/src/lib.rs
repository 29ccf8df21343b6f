//! etcd snapshots for Edgeplane: taken from a voter over the Snapshot RPC,
//! zstd-compressed while they stream in, checksummed, verified end to end,
//! kept with retention, copied to the peers' agents, and restored with
//! `etcdctl snapshot restore`.
//!
//! # The file format
//!
//! One self-describing file per snapshot, `NAME.etcd.zst`:
//!
//! ```text
//! +--------------------------------------------------------------+
//! | zstd frame(s): the etcd Snapshot RPC stream, compressed      |  "data region"
//! |   = bbolt db bytes  ++  sha256(db bytes) (32 bytes, etcd's)  |
//! +--------------------------------------------------------------+
//! | zstd skippable frame (magic 0x184D2A5E, u32le size):         |  footer
//! |   footer JSON (SnapshotInfo)                                 |
//! |   u32le length of the JSON                                   |
//! |   b"EPSNAP01"                                                |
//! +--------------------------------------------------------------+
//! ```
//!
//! - The data region decompresses to exactly the file `etcdctl snapshot
//!   save` writes (db plus etcd's 32-byte sha256 trailer), so a plain
//!   `zstd -d NAME.etcd.zst -o NAME.db` followed by `etcdctl snapshot restore
//!   NAME.db` works without Edgeplane. `zstd` skips the skippable footer frame.
//! - The footer's `sha256` is the sha256 of the data region (everything
//!   before the footer): it catches a flipped byte without decompressing,
//!   and a truncated file has no footer at all. The zstd frames also carry
//!   zstd's own content checksum.
//! - Why one file and not a data file plus a JSON sidecar: a snapshot becomes
//!   visible with ONE atomic rename, a copy to a peer is one upload, and there
//!   is never a data file without its metadata (or the reverse) to clean up.
//!   Listing reads only the last few hundred bytes of each file.
//!
//! # Invariants
//!
//! - A file named `*.etcd.zst` in a snapshot directory is complete and was
//!   checked while written: writes go to a dot-prefixed temporary file in the
//!   same directory, which is fsynced, renamed, and the directory fsynced.
//!   Received peer copies are fully verified before the rename.
//! - [`restore`] refuses a file that fails verification before it touches the
//!   target data dir; the restored data dir appears with one rename.
//!
//! # How the agent uses it
//!
//! - Periodically (one agent per site, e.g. the coordinator, from its local
//!   voter): [`save`] into `cfg.paths.snapshot_dir`, then [`prune`] with
//!   `retain_count` / `retain_age`, then, with `copy_to_peers`,
//!   [`push_to_peer`] to every other node's `agent_url`.
//! - In the agent's router: `.merge(routes(snapshot_dir, DEFAULT_MAX_RECEIVE_BYTES))`.
//! - Recovery: [`list`] local snapshots (and peers' via `GET /snapshots`,
//!   [`fetch_from_peer`]), then [`restore`] the freshest (or
//!   [`restore_db_file`] on a surviving member's `member/snap/db`).
//!
//! # Where things are
//!
//! [`save`] (etcd → file), [`verify`] / [`verify_with_etcdctl`],
//! [`scrub_file`] / [`quarantine`] (re-verifying what is stored),
//! [`restore`] / [`restore_db_file`], [`list`] / [`prune`] (a snapshot
//! directory), [`receive`] / [`push_to_peer`] / [`fetch_from_peer`] /
//! [`list_peer`] / [`routes`] (copies between agents), [`Progress`] (long
//! operations).

mod bbolt;
mod child;
mod error;
mod format;
mod peer;
mod progress;
mod restore;
mod save;
mod scrub;
mod space;
mod store;
mod verify;

pub use child::{child_command, preload_var};
pub use error::{Error, Result};
pub use format::{EXTENSION, SnapshotInfo, SnapshotMeta, read_meta, valid_name};
pub use peer::{
    DEFAULT_MAX_CONCURRENT_UPLOADS, DEFAULT_MAX_RECEIVE_BYTES, UploadPolicy, Uploader, Uploads,
    fetch_from_peer, list_peer, may_reserve, may_start, push_to_peer, receive, receive_file,
    routes, routes_with_budget, routes_with_policy,
};
pub use progress::{Progress, terminal_reporter};
pub use restore::{RestoreReport, RestoreTarget, etcdctl_bin, restore, restore_db_file};
pub use save::{SaveOptions, save, save_db_file};
pub use scrub::{
    QUARANTINE_DIR, QUARANTINE_KEEP, ScrubDoc, ScrubReport, Scrubbed, quarantine, scrub_file,
};
pub use space::{Budget, FreeSpace, Refusal, SpaceDoc, SpaceReport, Statvfs, admit, used_bytes};
pub use store::{PruneReport, file_names, list, prune};
pub use verify::{EtcdctlStatus, FileKind, VerifyReport, verify, verify_with_etcdctl};
