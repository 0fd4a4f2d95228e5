//! [`Config`]: what [`Vault::open`](crate::Vault::open) is built from.

use std::time::Duration;

use crate::error::{Error, Result};

/// Vault settings; start from [`Config::default`] and change what you need.
///
/// ```
/// use arbor_vault::Config;
///
/// let config = Config::default()
///     .zstd_level(1)                    // faster checkpoints, a little larger
///     .max_value_bytes(32 << 20)        // refuse states and modules over 32 MiB
///     .cache_capacity_bytes(64 << 20);  // sled's page cache
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) zstd_level: i32,
    pub(crate) max_value_bytes: u64,
    pub(crate) cache_capacity_bytes: u64,
    pub(crate) flush_every_ms: Option<u64>,
    pub(crate) lock_wait: Duration,
}

impl Default for Config {
    /// zstd level 3, values up to 64 MiB, a 128 MiB sled cache, sled's background flush every
    /// 500 ms, up to 1 s of waiting for the directory lock.
    fn default() -> Self {
        Self {
            zstd_level: 3,
            max_value_bytes: 64 << 20,
            cache_capacity_bytes: 128 << 20,
            flush_every_ms: Some(500),
            lock_wait: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// The smallest accepted [`Config::max_value_bytes`].
    pub const MIN_VALUE_LIMIT: u64 = 1 << 10;
    /// The largest accepted [`Config::max_value_bytes`] (2 GiB: a compressed state, which can be a
    /// little larger than its input, must still fit a frame's u32 length).
    pub const MAX_VALUE_LIMIT: u64 = 2 << 30;

    /// The zstd level for checkpoint states (default 3). Any level zstd accepts (1..=22, and the
    /// negative fast levels); checked by `open`. Changing it affects new checkpoints only: every
    /// level decompresses the same way.
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// The largest value the vault accepts (default 64 MiB): an uncompressed agent state, a
    /// module's bytes, an encoded lineage event or agent record. Larger input is refused with
    /// [`Error::TooLarge`] before anything is stored; a stored checkpoint whose metadata claims a
    /// larger state is not decompressed. Accepted range:
    /// [`Config::MIN_VALUE_LIMIT`]..=[`Config::MAX_VALUE_LIMIT`], checked by `open`.
    pub fn max_value_bytes(mut self, bytes: u64) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// sled's page cache size (default 128 MiB).
    pub fn cache_capacity_bytes(mut self, bytes: u64) -> Self {
        self.cache_capacity_bytes = bytes;
        self
    }

    /// How often sled's background thread flushes and fsyncs (default every 500 ms; `None` turns
    /// it off, leaving durability entirely to [`Vault::flush`](crate::Vault::flush) and
    /// [`Vault::sync`](crate::Vault::sync)).
    pub fn flush_every_ms(mut self, every: Option<u64>) -> Self {
        self.flush_every_ms = every;
        self
    }

    /// How long [`Vault::open`](crate::Vault::open) keeps retrying while the database's lock is
    /// held (default 1 s; zero: fail at once). sled 0.34 releases its file lock from a background
    /// thread a moment *after* the last handle is dropped (sled issues #1234, #1289), so closing
    /// and reopening a vault in one process, or opening it right after a host stopped, can find it
    /// still locked. A vault held open by a live process is still an [`Error::Open`], after this
    /// wait.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let levels = zstd::compression_level_range();
        if !levels.contains(&self.zstd_level) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "zstd level {} is outside {}..={}",
                    self.zstd_level,
                    levels.start(),
                    levels.end()
                ),
            });
        }
        if !(Self::MIN_VALUE_LIMIT..=Self::MAX_VALUE_LIMIT).contains(&self.max_value_bytes) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "max value bytes {} is outside {}..={}",
                    self.max_value_bytes,
                    Self::MIN_VALUE_LIMIT,
                    Self::MAX_VALUE_LIMIT
                ),
            });
        }
        if self.flush_every_ms == Some(0) {
            return Err(Error::InvalidConfig {
                reason: "flush every 0 ms: use None to turn the background flush off".to_owned(),
            });
        }
        Ok(())
    }

    /// Refuses `size` bytes of `what` if over the limit.
    pub(crate) fn check_size(&self, what: impl FnOnce() -> String, size: usize) -> Result<()> {
        let size = size as u64;
        if size > self.max_value_bytes {
            return Err(Error::TooLarge {
                what: what(),
                size,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::default().zstd_level(23).validate().is_err());
        assert!(Config::default().zstd_level(19).validate().is_ok());
        assert!(Config::default().max_value_bytes(10).validate().is_err());
        assert!(
            Config::default()
                .max_value_bytes(3 << 30)
                .validate()
                .is_err()
        );
        assert!(
            Config::default()
                .flush_every_ms(Some(0))
                .validate()
                .is_err()
        );
        assert!(Config::default().flush_every_ms(None).validate().is_ok());
    }
}
