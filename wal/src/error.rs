//! The log's one error type.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::frame::Defect;

/// Everything that can go wrong with a write-ahead log. Errors about a place on disk name the
/// segment file and, where it matters, the byte offset: see [`Error::segment`] and
/// [`Error::offset`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record larger than the configured maximum was refused before anything was written.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Size of the refused payload.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// `append_batch` was given no records.
    #[error("empty batch: nothing to append")]
    EmptyBatch,
    /// An I/O operation failed.
    #[error("{op} failed for {}{}: {source}", path.display(), offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The byte offset in the file, where one applies.
        offset: Option<u64>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A record in the middle of the log, or in a segment other than the last, is damaged.
    /// [`repair`](crate::repair) can cut the log at this point, losing what follows.
    #[error("corrupt wal: segment {} at offset {offset}: {defect}", segment.display())]
    Corrupt {
        /// The damaged segment.
        segment: PathBuf,
        /// Where the first bad record starts.
        offset: u64,
        /// What is wrong with it.
        defect: Defect,
    },
    /// A segment's header or its place in the sequence of segments is wrong.
    #[error("corrupt wal: segment {}: {reason}", segment.display())]
    BadSegment {
        /// The segment.
        segment: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or fsync failed, so the log refuses further appends: after a failed fsync
    /// the kernel may have dropped the dirty pages, and retrying would report data durable that is
    /// not. Reopen the log to recover to what is on disk.
    #[error("the log stopped after an earlier failure and refuses appends: {cause}")]
    Failed {
        /// The first failure, shared by every caller that sees it.
        cause: Arc<Error>,
    },
    /// The requested LSN lies before the oldest record still kept (segments were released by
    /// `truncate_before`).
    #[error("lsn {requested} is no longer in the log; the oldest kept lsn is {oldest}")]
    Truncated {
        /// The LSN asked for.
        requested: u64,
        /// The oldest LSN in the log.
        oldest: u64,
    },
    /// Another process (or another `Wal` in this one) holds the directory.
    #[error("wal directory {} is in use by another open log", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The configuration cannot work.
    #[error("invalid wal configuration: {0}")]
    InvalidConfig(String),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: PathBuf,
        offset: Option<u64>,
        source: io::Error,
    ) -> Self {
        Error::Io {
            op,
            path,
            offset,
            source,
        }
    }

    /// The segment file (or, for directory operations, the directory) the error is about.
    pub fn segment(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } => Some(path),
            Error::Corrupt { segment, .. } | Error::BadSegment { segment, .. } => Some(segment),
            Error::Locked { dir } => Some(dir),
            Error::Failed { cause } => cause.segment(),
            _ => None,
        }
    }

    /// The byte offset in [`segment`](Self::segment) the error is about.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Io { offset, .. } => *offset,
            Error::Corrupt { offset, .. } => Some(*offset),
            Error::Failed { cause } => cause.offset(),
            _ => None,
        }
    }

    /// Whether the failure was the disk (or quota) being full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                )
            }
            Error::Failed { cause } => cause.is_storage_full(),
            _ => false,
        }
    }

    /// Whether the on-disk log is damaged (as opposed to an I/O or usage error).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::BadSegment { .. })
    }
}

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
