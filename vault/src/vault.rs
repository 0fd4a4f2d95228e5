//! [`Vault`]: opening the database, the format version, and the two durability calls
//! ([`Vault::flush`], [`Vault::sync`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{self, Kind};
use crate::config::Config;
use crate::error::{Error, Result};

/// Tree names, as listed in the crate docs.
pub(crate) mod tree {
    pub(crate) const META: &str = "vault_meta";
    pub(crate) const CHECKPOINTS: &str = "checkpoints";
    pub(crate) const CHECKPOINT_STATES: &str = "checkpoint_states";
    pub(crate) const MODULES: &str = "modules";
    pub(crate) const MODULE_BYTES: &str = "module_bytes";
    pub(crate) const LINEAGE: &str = "lineage";
    pub(crate) const AGENTS: &str = "agents";
    pub(crate) const ARCHIVE: &str = "archive";
}

/// The key in [`tree::META`] holding the format version.
pub(crate) const VERSION_KEY: &[u8] = b"format_version";

/// The vault: one sled database holding checkpoints, modules, lineage and the agent registry.
///
/// Open it once per process (sled locks the directory) and clone it freely: clones share the
/// database, and every method takes `&self` and may be called from many threads at once.
///
/// ```
/// use arbor_vault::{Config, Vault};
///
/// let dir = tempfile::tempdir()?;
/// let vault = Vault::open(dir.path(), Config::default().zstd_level(3))?;
/// assert_eq!(vault.path(), dir.path());
/// vault.flush()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    pub(crate) config: Config,
    pub(crate) meta: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
    pub(crate) checkpoint_states: sled::Tree,
    pub(crate) modules: sled::Tree,
    pub(crate) module_bytes: sled::Tree,
    pub(crate) lineage: sled::Tree,
    pub(crate) agents: sled::Tree,
    pub(crate) archive: sled::Tree,
    /// Serializes lineage appends (the next sequence number is the last key + 1).
    pub(crate) lineage_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The vault format version this build writes and reads.
    pub const FORMAT_VERSION: u32 = codec::FORMAT_VERSION as u32;

    /// Opens the vault in `dir`, creating it if the directory is new or empty.
    ///
    /// Fails with [`Error::InvalidConfig`] for a bad config, [`Error::Open`] if sled cannot open
    /// the directory (for example another process has it open: the lock is retried for
    /// [`Config::lock_wait`] first), [`Error::UnsupportedVersion`] if
    /// the vault was written by a newer format, and [`Error::NotAVault`] if the directory holds a
    /// sled database with data but no vault format version.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        config.validate()?;
        let path = dir.as_ref().to_path_buf();
        let db = open_waiting_for_lock(&path, &config).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        // Refuse a foreign database before creating any tree in it.
        let is_ours = db
            .tree_names()
            .iter()
            .any(|name| name == tree::META.as_bytes());
        if !is_ours && has_any_data(&db)? {
            return Err(Error::NotAVault { path });
        }
        let open_tree = |name: &'static str| db.open_tree(name).map_err(Error::sled("open", name));
        let inner = Inner {
            meta: open_tree(tree::META)?,
            checkpoints: open_tree(tree::CHECKPOINTS)?,
            checkpoint_states: open_tree(tree::CHECKPOINT_STATES)?,
            modules: open_tree(tree::MODULES)?,
            module_bytes: open_tree(tree::MODULE_BYTES)?,
            lineage: open_tree(tree::LINEAGE)?,
            agents: open_tree(tree::AGENTS)?,
            archive: open_tree(tree::ARCHIVE)?,
            lineage_lock: std::sync::Mutex::new(()),
            db,
            path,
            config,
        };
        let vault = Self {
            inner: Arc::new(inner),
        };
        vault.check_or_write_version()?;
        Ok(vault)
    }

    fn check_or_write_version(&self) -> Result<()> {
        let inner = &*self.inner;
        let stored = inner
            .meta
            .get(VERSION_KEY)
            .map_err(|e| Error::from_sled_read(tree::META, || "format_version".to_owned(), e))?;
        if let Some(value) = stored {
            // A newer build may have changed the frame itself: look at its version byte before
            // trying to verify it as ours.
            if let Some(found) = codec::peek_version(&value)
                && found > codec::FORMAT_VERSION
            {
                return Err(Error::UnsupportedVersion {
                    found: u32::from(found),
                    supported: Self::FORMAT_VERSION,
                });
            }
            let render = || "format_version".to_owned();
            let body = codec::decode(tree::META, VERSION_KEY, render, Kind::VaultMeta, &value)?;
            let found = <[u8; 4]>::try_from(body)
                .map(u32::from_le_bytes)
                .map_err(|_| Error::corrupt(tree::META, render(), "version is not 4 bytes"))?;
            return match found {
                v if v == Self::FORMAT_VERSION => Ok(()),
                v if v > Self::FORMAT_VERSION => Err(Error::UnsupportedVersion {
                    found: v,
                    supported: Self::FORMAT_VERSION,
                }),
                v => Err(Error::corrupt(
                    tree::META,
                    render(),
                    format!("format version {v} was never written by any build"),
                )),
            };
        }
        if has_any_data(&inner.db)? {
            return Err(Error::NotAVault {
                path: inner.path.clone(),
            });
        }
        let value = codec::encode(
            VERSION_KEY,
            Kind::VaultMeta,
            &Self::FORMAT_VERSION.to_le_bytes(),
        );
        inner
            .meta
            .insert(VERSION_KEY, value)
            .map_err(Error::sled("insert", tree::META))?;
        self.flush()?;
        Ok(())
    }

    /// The directory the vault lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The configuration the vault was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Writes everything stored so far to the operating system: afterwards it survives a crash of
    /// this process, but not necessarily a power loss (sled 0.34.7 writes with `pwrite` +
    /// `sync_file_range`, which neither flushes the disk's cache nor the file's metadata, and
    /// never fsyncs its large-value blob files). Returns the bytes sled wrote. See the guarantees
    /// table in the crate docs.
    pub fn flush(&self) -> Result<usize> {
        self.inner.db.flush().map_err(Error::sled("flush", "*"))
    }

    /// [`Vault::flush`], then fsync of every file of the database (sled's log, its snapshot and
    /// config files, and its blob files for large values) and of the directories: afterwards
    /// everything stored so far survives a power loss, as far as the disk honours fsync and sled's
    /// recovery reads back what it wrote. Costs one fsync per file; call it when releasing WAL
    /// segments, not per checkpoint (see [`Vault::safe_release_lsn`]).
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        let root = &self.inner.path;
        let blobs = root.join("blobs");
        for dir in [&blobs, root] {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(Error::io("list", dir))?;
                let file_path = entry.path();
                let file_type = entry.file_type().map_err(Error::io("stat", &file_path))?;
                if !file_type.is_file() {
                    continue;
                }
                match std::fs::File::open(&file_path) {
                    Ok(file) => file.sync_all().map_err(Error::io("fsync", &file_path))?,
                    // sled removes blobs of deleted values in the background; a vanished file
                    // needs no syncing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("open", &file_path)(e)),
                }
            }
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Bytes the database occupies on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner
            .db
            .size_on_disk()
            .map_err(Error::sled("size_on_disk", "*"))
    }
}

/// Opens sled, retrying for up to `config.lock_wait` while its directory lock is held.
fn open_waiting_for_lock(path: &Path, config: &Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + config.lock_wait;
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.flush_every_ms)
            .open();
        match result {
            // sled 0.34.7 reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether any tree of the database (ours or foreign) holds a value.
fn has_any_data(db: &sled::Db) -> Result<bool> {
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(Error::sled("open", "*"))?;
        if !tree.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", dir))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Vault>();
    }
}
