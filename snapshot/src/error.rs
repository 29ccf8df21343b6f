//! One error type for the crate. Messages say what happened to which file;
//! the cause is the `source`, never repeated in the message.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is an etcd learner: it refuses the Snapshot RPC.
    #[error(
        "{endpoint} is an etcd learner (standby); learners refuse the Snapshot RPC (\"rpc not supported for learner\"): take the snapshot from a voter"
    )]
    Learner { endpoint: String },

    #[error("etcd {what} failed on {endpoint}")]
    Etcd {
        what: &'static str,
        endpoint: String,
        #[source]
        err: etcd_client::Error,
    },

    /// The snapshot stream ended before all the bytes etcd announced arrived.
    #[error("the snapshot stream from {endpoint} ended early: got {got} of {expected} bytes")]
    ShortStream {
        endpoint: String,
        got: u64,
        expected: u64,
    },

    /// etcd's own sha256 trailer does not match the bytes received.
    #[error("the snapshot stream from {endpoint} fails etcd's own sha256 check: {detail}")]
    StreamChecksum { endpoint: String, detail: String },

    /// The file is damaged or not a snapshot; it must not be restored.
    #[error("{} is corrupt: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    #[error(
        "{} is not a valid snapshot name (want letters, digits, '.', '_', '-', ending in .etcd.zst, no leading dot)",
        name
    )]
    BadName { name: String },

    #[error("{} already exists with different content", path.display())]
    Exists { path: PathBuf },

    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },

    #[error("refusing to restore into {}: it exists and is not empty", path.display())]
    DataDirNotEmpty { path: PathBuf },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },

    #[error("peer {url} answered {status}: {body}")]
    PeerStatus {
        url: String,
        status: u16,
        body: String,
    },

    #[error("request to peer {url} failed")]
    Http {
        url: String,
        #[source]
        err: reqwest::Error,
    },

    #[error("background task failed: {0}")]
    Task(String),

    /// A peer may upload only the snapshots it took itself: the origin in
    /// the snapshot's footer must be the host its certificate names.
    #[error(
        "refused snapshot copy {name}: {}",
        match (origin, caller) {
            (Some(o), Some(c)) => format!("its origin is {o}, but the caller's certificate names {c}; a peer uploads only its own snapshots"),
            _ => "the caller presented no host certificate; a peer uploads only its own snapshots".to_string(),
        }
    )]
    NotOwnSnapshot {
        name: String,
        origin: Option<String>,
        caller: Option<String>,
    },

    /// Too many uploads in progress; the caller tries again later.
    #[error("too many snapshot uploads at once: {why}; try again later")]
    Busy { why: String },

    /// Refused for space: the snapshot budget or the free-space reserve
    /// (see `space`).
    #[error("refused {what}: {refusal}")]
    NoSpace {
        what: String,
        refusal: crate::space::Refusal,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, err: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.into(),
            err,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }

    /// Whether this error means the file itself is bad (as opposed to a
    /// failure to read it, a full disk, or a missing tool).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
