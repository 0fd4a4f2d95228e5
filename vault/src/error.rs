//! The vault's one error type.
//!
//! Every variant names what failed and where: the sled tree and the key for a stored value, the
//! file for an export, the agent id or hash for bad input. Messages are lowercase without a final
//! period so they compose into larger messages (`"restoring agent kv-1: {err}"`).

use std::path::{Path, PathBuf};

/// A vault result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the vault.
///
/// The variants are public so callers can match on them; the accessor methods ([`Error::tree`],
/// [`Error::key`], [`Error::path`], [`Error::is_corrupt`]) answer the common questions without a
/// `match`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stored value failed verification: bad framing, a checksum mismatch, a state that does not
    /// decompress to what its metadata says, or a body that does not decode. `key` is a readable
    /// rendering of the sled key (`kv-1@42` for a checkpoint, a hex hash for a module, `seq 7`
    /// for a lineage event, the agent id for a registry record).
    #[error("corrupt value in tree {tree} at key {key}: {reason}")]
    Corrupt {
        /// The sled tree holding the value.
        tree: &'static str,
        /// The key, rendered for people.
        key: String,
        /// What did not verify.
        reason: String,
    },

    /// The vault (or one of its values) was written by a newer format than this build reads.
    #[error("vault format version {found} is newer than this build supports (version {supported})")]
    UnsupportedVersion {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// The directory holds a sled database that is not an arbor vault (it has data but no vault
    /// format version).
    #[error("{path} holds a sled database that is not an arbor vault")]
    NotAVault {
        /// The directory given to [`Vault::open`](crate::Vault::open).
        path: PathBuf,
    },

    /// A value is larger than [`Config::max_value_bytes`](crate::Config::max_value_bytes) allows.
    #[error("{what} is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// What was too large, e.g. `state of agent kv-1`.
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The configured limit.
        max: u64,
    },

    /// Bytes offered to the module store are not a Wasm module.
    #[error("module {name:?} is not a wasm module: {reason}")]
    NotWasm {
        /// The name the module was offered under.
        name: String,
        /// What was wrong with the bytes.
        reason: &'static str,
    },

    /// An agent id that is empty, too long or contains NUL.
    #[error("invalid agent id {id:?}: {reason}")]
    InvalidAgentId {
        /// The rejected id (lossily converted if it was not UTF-8).
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A module hash string that is not 64 hex digits.
    #[error("invalid module hash {input:?}: expected 64 hex digits")]
    InvalidModuleHash {
        /// The rejected text.
        input: String,
    },

    /// A value the vault will not store as it is, e.g. an archive score that is not a finite
    /// number. Nothing was stored.
    #[error("cannot store {what}: {reason}")]
    Refused {
        /// What was offered.
        what: String,
        /// Why it is refused.
        reason: String,
    },

    /// A configuration value out of range.
    #[error("invalid vault config: {reason}")]
    InvalidConfig {
        /// What is out of range.
        reason: String,
    },

    /// A checkpoint export file that is truncated, foreign, or fails its checksum. Nothing was
    /// stored.
    #[error("bad checkpoint export file {path}: {reason}")]
    BadExport {
        /// The export file.
        path: PathBuf,
        /// What did not verify.
        reason: String,
    },

    /// A value could not be encoded (a serializer failure; not expected for vault types).
    #[error("encoding {what} failed: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The serializer's message.
        reason: String,
    },

    /// Compressing a state failed.
    #[error("compressing the state of agent {agent} failed: {source}")]
    Compress {
        /// The agent whose state it was.
        agent: String,
        /// zstd's error.
        source: std::io::Error,
    },

    /// Opening the sled database failed (including: another process has it open).
    #[error("opening vault at {path} failed: {source}")]
    Open {
        /// The vault directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },

    /// A sled operation failed for a reason other than a corrupt value.
    #[error("sled {op} on tree {tree} failed: {source}")]
    Sled {
        /// The operation (`insert`, `get`, `flush`, `transaction`, ...).
        op: &'static str,
        /// The tree, or `*` for the whole database.
        tree: &'static str,
        /// sled's error.
        source: sled::Error,
    },

    /// A file operation failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// The operation (`create`, `fsync`, `read`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// The sled tree involved, for [`Error::Corrupt`] and [`Error::Sled`].
    pub fn tree(&self) -> Option<&str> {
        match self {
            Error::Corrupt { tree, .. } | Error::Sled { tree, .. } => Some(tree),
            _ => None,
        }
    }

    /// The rendered key of a corrupt value.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Corrupt { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The file or directory involved, where there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::NotAVault { path }
            | Error::BadExport { path, .. }
            | Error::Open { path, .. }
            | Error::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether this is a stored value that failed verification ([`Error::Corrupt`]): the kind of
    /// error [`Vault::latest_valid`](crate::Vault::latest_valid) skips over.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }

    pub(crate) fn corrupt(
        tree: &'static str,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            tree,
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn sled(op: &'static str, tree: &'static str) -> impl FnOnce(sled::Error) -> Self {
        move |source| Error::Sled { op, tree, source }
    }

    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    }

    /// Maps a sled error met while reading the value at `key`: sled's own corruption report, or a
    /// large value whose blob file is missing or short (what a power loss between sled's log write
    /// and its blob write leaves), is a corrupt value at that key; anything else is a sled error.
    pub(crate) fn from_sled_read(
        tree: &'static str,
        key: impl FnOnce() -> String,
        source: sled::Error,
    ) -> Self {
        match &source {
            sled::Error::Corruption { .. } => {
                Error::corrupt(tree, key(), format!("sled: {source}"))
            }
            sled::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Error::corrupt(tree, key(), format!("sled value unreadable: {source}"))
            }
            _ => Error::Sled {
                op: "read",
                tree,
                source,
            },
        }
    }
}
