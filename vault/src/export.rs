//! Checkpoint export files: one checkpoint as a standalone file, for backups and `arborctl`
//! restore.
//!
//! ```text
//! offset    size  field
//!      0       8  magic "ARBORCKP"
//!      8       4  export format version, u32 little-endian (1)
//!     12       4  metadata length m, u32 little-endian
//!     16       m  CheckpointMeta, MessagePack with named fields
//!   16+m       8  state length n, u64 little-endian
//!   24+m       n  the state, zstd-compressed (as stored in the vault)
//! 24+m+n      32  BLAKE3 of every byte before it
//! ```
//!
//! Import checks everything before storing anything: the magic, the version, that the lengths
//! add up to exactly the file's size (so a truncated file is named as such), the trailing
//! checksum, the metadata, and that the state decompresses to the size and checksum the metadata
//! gives. Export writes a temporary file beside the target, fsyncs it, renames it into place and
//! fsyncs the directory, so an export file is whole or absent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::checkpoint::{Checkpoint, CheckpointMeta, checkpoint_key, render_key};
use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::AgentId;
use crate::vault::{Vault, tree};

/// The first 8 bytes of every export file.
pub(crate) const EXPORT_MAGIC: [u8; 8] = *b"ARBORCKP";
/// The export format version written.
pub(crate) const EXPORT_VERSION: u32 = 1;
const HEAD_LEN: usize = 16;
const TRAILER_LEN: usize = 32;
/// Checkpoint metadata is a few hundred bytes; anything beyond this is not ours.
const MAX_META_LEN: usize = 64 << 10;

/// A parsed, fully verified export file.
struct Parsed {
    meta: CheckpointMeta,
    compressed: Vec<u8>,
    state: Vec<u8>,
}

impl Vault {
    /// Writes checkpoint (`agent`, `lsn`) to `path` as a standalone export file (replacing any
    /// file there), after verifying it; returns its metadata. [`Error::Corrupt`] if the
    /// checkpoint does not verify (nothing is written then); `Ok(None)` if there is no such
    /// checkpoint.
    ///
    /// ```
    /// use arbor_vault::{AgentId, Config, ModuleHash, NewCheckpoint, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path().join("vault"), Config::default())?;
    /// let agent = AgentId::new("kv")?;
    /// let module = ModuleHash::of(b"kv module");
    /// let state = b"state bytes";
    /// vault.put_checkpoint(&NewCheckpoint {
    ///     agent: &agent, lsn: 7, seq: 0, module, abi_version: 1, state_schema: 1, state,
    /// })?;
    /// let file = dir.path().join("kv-7.ckpt");
    /// vault.export_checkpoint(&agent, 7, &file)?;
    ///
    /// let other = Vault::open(dir.path().join("restored"), Config::default())?;
    /// let meta = other.import_checkpoint(&file)?;
    /// assert_eq!((meta.agent.as_str(), meta.lsn), ("kv", 7));
    /// assert_eq!(other.latest(&agent)?.map(|c| c.state), Some(state.to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_checkpoint(
        &self,
        agent: &AgentId,
        lsn: u64,
        path: impl AsRef<Path>,
    ) -> Result<Option<CheckpointMeta>> {
        let path = path.as_ref();
        let Some(meta) = self.checkpoint_meta(agent, lsn)? else {
            return Ok(None);
        };
        let key = checkpoint_key(agent, lsn);
        let render = || render_key(agent, lsn);
        let state_tree = tree::CHECKPOINT_STATES;
        let value = self
            .inner
            .checkpoint_states
            .get(&key)
            .map_err(|e| Error::from_sled_read(state_tree, render, e))?
            .ok_or_else(|| {
                Error::corrupt(state_tree, render(), "state missing for stored metadata")
            })?;
        let compressed = codec::decode(state_tree, &key, render, Kind::CheckpointState, &value)?;
        // Verify before writing: an export is a backup, and a backup of garbage is worse than
        // none.
        self.decompress_verified(&meta, compressed, state_tree, render)?;

        let meta_bytes = codec::to_msgpack("checkpoint metadata", &meta)?;
        let mut file_bytes =
            Vec::with_capacity(HEAD_LEN + meta_bytes.len() + 8 + compressed.len() + TRAILER_LEN);
        file_bytes.extend_from_slice(&EXPORT_MAGIC);
        file_bytes.extend_from_slice(&EXPORT_VERSION.to_le_bytes());
        file_bytes.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        file_bytes.extend_from_slice(&meta_bytes);
        file_bytes.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
        file_bytes.extend_from_slice(compressed);
        let sum = blake3::hash(&file_bytes);
        file_bytes.extend_from_slice(sum.as_bytes());
        write_atomically(path, &file_bytes)?;
        Ok(Some(meta))
    }

    /// Reads and verifies an export file without storing it: the checkpoint it holds, with its
    /// state decompressed. [`Error::BadExport`] naming the file if anything does not verify.
    pub fn read_export(&self, path: impl AsRef<Path>) -> Result<Checkpoint> {
        let parsed = self.parse_export(path.as_ref())?;
        Ok(Checkpoint {
            meta: parsed.meta,
            state: parsed.state,
        })
    }

    /// Verifies an export file completely, then stores its checkpoint (replacing one at the same
    /// agent and LSN) exactly as it was exported, creation time included. Nothing is stored unless
    /// every check passes. Durable like [`Vault::put_checkpoint`].
    pub fn import_checkpoint(&self, path: impl AsRef<Path>) -> Result<CheckpointMeta> {
        let parsed = self.parse_export(path.as_ref())?;
        self.store_checkpoint(&parsed.meta, &parsed.compressed)?;
        Ok(parsed.meta)
    }

    fn parse_export(&self, path: &Path) -> Result<Parsed> {
        let bad = |reason: String| Error::BadExport {
            path: path.to_path_buf(),
            reason,
        };
        let limit = (HEAD_LEN + MAX_META_LEN + 8 + TRAILER_LEN) as u64
            + zstd::zstd_safe::compress_bound(self.inner.config.max_value_bytes as usize) as u64;
        let file_len = std::fs::metadata(path)
            .map_err(Error::io("stat", path))?
            .len();
        if file_len > limit {
            return Err(bad(format!(
                "file is {file_len} bytes, larger than any export this vault accepts ({limit})"
            )));
        }
        let bytes = std::fs::read(path).map_err(Error::io("read", path))?;

        if bytes.len() < EXPORT_MAGIC.len() || bytes[..EXPORT_MAGIC.len()] != EXPORT_MAGIC {
            let looks_truncated =
                bytes.len() < EXPORT_MAGIC.len() && EXPORT_MAGIC.starts_with(&bytes);
            return Err(bad(if looks_truncated {
                format!("truncated: {} bytes, shorter than the magic", bytes.len())
            } else {
                "not an arbor checkpoint export (bad magic)".to_owned()
            }));
        }
        if bytes.len() < HEAD_LEN {
            return Err(bad(format!(
                "truncated: {} bytes, shorter than the {HEAD_LEN}-byte header",
                bytes.len()
            )));
        }
        let version = u32_le(&bytes[8..12]);
        if version != EXPORT_VERSION {
            return Err(bad(format!(
                "export format version {version}, this build reads version {EXPORT_VERSION}"
            )));
        }
        let meta_len = u32_le(&bytes[12..16]) as usize;
        if meta_len > MAX_META_LEN {
            return Err(bad(format!("metadata length {meta_len} is implausible")));
        }
        let state_len_at = HEAD_LEN + meta_len;
        if bytes.len() < state_len_at + 8 {
            return Err(bad(format!(
                "truncated: {} bytes, the header and metadata need {}",
                bytes.len(),
                state_len_at + 8
            )));
        }
        let state_len = u64::from_le_bytes(
            <[u8; 8]>::try_from(&bytes[state_len_at..state_len_at + 8]).unwrap_or_default(),
        );
        let state_at = state_len_at + 8;
        let expected = (state_at as u64)
            .saturating_add(state_len)
            .saturating_add(TRAILER_LEN as u64);
        if (bytes.len() as u64) < expected {
            return Err(bad(format!(
                "truncated: {} bytes, the lengths it declares need {expected}",
                bytes.len()
            )));
        }
        if (bytes.len() as u64) > expected {
            return Err(bad(format!(
                "{} bytes after the trailing checksum",
                bytes.len() as u64 - expected
            )));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        if blake3::hash(body).as_bytes() != trailer {
            return Err(bad("checksum mismatch".to_owned()));
        }
        let meta: CheckpointMeta = rmp_serde::from_slice(&bytes[HEAD_LEN..state_len_at])
            .map_err(|e| bad(format!("metadata does not decode: {e}")))?;
        let compressed = &bytes[state_at..body.len()];
        if meta.compressed_bytes != compressed.len() as u64 {
            return Err(bad(format!(
                "state is {} bytes, metadata says {}",
                compressed.len(),
                meta.compressed_bytes
            )));
        }
        let state = self
            .decompress_verified(&meta, compressed, "export", || {
                render_key(&meta.agent, meta.lsn)
            })
            .map_err(|e| match e {
                Error::Corrupt { reason, .. } => bad(reason),
                other => other,
            })?;
        let compressed = compressed.to_vec();
        Ok(Parsed {
            meta,
            compressed,
            state,
        })
    }
}

fn u32_le(bytes: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(buf)
}

/// Writes `bytes` to `path` via a temporary file in the same directory: write, fsync, rename,
/// fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".to_owned());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{unique}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        file.write_all(bytes).map_err(Error::io("write", &tmp))?;
        file.sync_all().map_err(Error::io("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync", &dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
