//! A segmented, crash-safe write-ahead log with group commit: the source of truth of an arbor
//! runtime. Every agent's inputs are appended here before they are applied; checkpoints in the
//! vault say which LSN they cover, and recovery replays the records after it.
//!
//! # Using it
//!
//! Open a directory (recovering whatever a crash left), append records, wait until they are
//! durable under the log's [`Durability`] policy, read them back from any LSN:
//!
//! ```
//! # fn main() -> Result<(), arbor_wal::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use arbor_wal::{Config, Durability, Wal};
//!
//! let config = Config::default()
//!     .segment_bytes(64 << 20)
//!     .durability(Durability::GroupCommit { max_delay: Duration::from_micros(200) });
//! let wal = Wal::open(dir.path(), config)?;
//!
//! let appended = wal.append(b"first")?;       // the LSN is known at once ...
//! appended.wait_blocking()?;                  // ... durability when the fdatasync returns
//! let batch = wal.append_batch(&[b"second".as_slice(), b"third"])?;
//! assert_eq!(batch.lsns(), 2..=3);
//! batch.wait_blocking()?;                     // from async code: `batch.wait().await?`
//!
//! let records: Vec<_> = wal.read_from(1)?.collect::<Result<_, _>>()?;
//! assert_eq!(records[2].payload, b"third");
//!
//! wal.truncate_before(3)?;                    // release segments wholly before LSN 3
//! wal.close()?;
//! # Ok(()) }
//! ```
//!
//! # On disk
//!
//! A log is a directory of segment files, each named by the LSN of its first record in 20
//! decimal digits (`00000000000000000001.wal`, then e.g. `00000000000000131073.wal`), plus a
//! `LOCK` file that keeps a second process out. A segment is a 40-byte header (magic `ARBORWAL`,
//! format version, a random segment id, the first LSN, a CRC) followed by records, each framed
//! as
//!
//! ```text
//! crc32 (4) | len (4) | lsn (8) | segment id (8) | payload (len) | zero padding to 8 bytes
//! ```
//!
//! little-endian, with the CRC-32 over everything after it up to the end of the payload. Frames
//! are 8-byte aligned, so a frame's CRC and length (its first 8 bytes) never straddle a sector. The segment id in every record makes
//! stale bytes from another segment fail the check even if their own CRC is intact. A segment is
//! created as a temporary file, its header written, its size preallocated (sparse) to
//! [`Config::segment_bytes`], fsynced, renamed into place, and the directory fsynced. Records are
//! written in place inside the preallocated file, so an fdatasync never has a file size to commit
//! (on ext4 that makes it markedly cheaper); the log rotates when the next record would not fit.
//!
//! # The recovery rule
//!
//! Open is recovery. Zeros after the last record are preallocated space that was never written,
//! not damage. Only the last segment's tail may be torn (a record cut short, or a bad CRC with
//! nothing valid after it): it is truncated to the last whole record, the cut bytes are kept
//! beside the segment as `<segment>.torn-<offset>`, and the log continues. A bad record
//! followed by valid ones, any bad record in an earlier segment, a bad segment header, or a gap
//! between segments is corruption: open fails with [`Error::Corrupt`] or [`Error::BadSegment`]
//! naming the segment and offset. [`repair`] is the explicit way past that: it cuts the log at the
//! first bad record and sets everything after it aside as `*.broken` files. [`verify`] reports
//! without changing anything.
//!
//! # Durability
//!
//! | policy | an [`Appended`] resolves when | survives a process crash | survives a power loss |
//! |---|---|---|---|
//! | [`Durability::Never`] | the record is written to the OS (page cache) | yes | no |
//! | [`Durability::GroupCommit`] | an fdatasync covering it returned | yes | yes |
//! | [`Durability::Always`] | its own fdatasync returned (one per append call) | yes | yes |
//!
//! Under group commit, records appended concurrently from any number of threads or tasks share
//! one write and one fdatasync; nobody is told "durable" before the fdatasync that covers them has
//! returned. A write or fsync error stops the log: the failed appends and every later one get
//! [`Error::Failed`] (after a failed fsync the kernel may drop the dirty pages, so a retry that
//! succeeds would prove nothing). A full disk is such an error; the files stay consistent and
//! the next open recovers them. [`Wal::sync`] forces an fdatasync under any policy (the runtime
//! calls it before a checkpoint claims to cover the log).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod frame;
mod reader;
mod recovery;
mod repair;
mod segment;
mod writer;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::{Error, Result};
pub use frame::Defect;
pub use reader::{Reader, Record};
pub use recovery::{Problem, ProblemKind, Recovery, SegmentReport, TornTail, VerifyReport};
pub use repair::{RepairReport, repair};

use writer::Shared;

/// A log sequence number. The first record of a log has LSN 1; each record's is one more than
/// the one before it. 0 stands for "no record".
pub type Lsn = u64;

/// When an appended record counts as durable. See the table in the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Records are written to the OS and never fdatasynced by the log (except on rotation,
    /// [`Wal::sync`] and [`Wal::close`]): they survive a crash of the process, not of the machine.
    Never,
    /// Records appended close together share one write + fdatasync. The flusher starts an
    /// fdatasync at most `max_delay` after the oldest waiting record arrived (sooner once
    /// [`Config::group_commit_bytes`] are waiting); with a zero delay it starts at once, and
    /// records that arrive while it runs share the next one.
    GroupCommit {
        /// The longest a record waits for company before its fdatasync starts.
        max_delay: Duration,
    },
    /// Every append call gets its own write + fdatasync.
    Always,
}

/// The longest group commit may hold a record back for company.
const MAX_GROUP_COMMIT_DELAY: Duration = Duration::from_secs(1);

/// How a log is laid out and how it commits. Configure, then open:
/// `Wal::open(dir, Config::default().segment_bytes(8 << 20))`.
#[derive(Debug, Clone)]
pub struct Config {
    segment_bytes: u64,
    max_record_bytes: usize,
    durability: Durability,
    max_queued_bytes: usize,
    group_commit_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            durability: Durability::GroupCommit {
                max_delay: Duration::ZERO,
            },
            max_queued_bytes: 64 << 20,
            group_commit_bytes: 4 << 20,
        }
    }
}

impl Config {
    /// Rotate to a new segment when the next record would make the current one larger than
    /// this (default 64 MiB). Must hold at least one maximum-size record.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Largest payload accepted (default 16 MiB); a larger append is refused before anything is
    /// written.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// The durability policy (default: group commit with no added delay).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Bytes of encoded records that may wait for the flusher before appends block (default
    /// 64 MiB): back-pressure when appenders outrun the disk.
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Under group commit, start the fdatasync before `max_delay` once this many bytes wait
    /// (default 4 MiB).
    pub fn group_commit_bytes(mut self, bytes: usize) -> Self {
        self.group_commit_bytes = bytes;
        self
    }

    /// The size at which segments rotate.
    pub fn segment_size(&self) -> u64 {
        self.segment_bytes
    }

    /// The durability policy.
    pub fn durability_policy(&self) -> Durability {
        self.durability
    }

    /// Largest payload accepted.
    pub fn max_record_size(&self) -> usize {
        self.max_record_bytes
    }

    fn validate(&self) -> Result<()> {
        if let Durability::GroupCommit { max_delay } = self.durability
            && max_delay > MAX_GROUP_COMMIT_DELAY
        {
            return Err(Error::InvalidConfig(format!(
                "group commit max_delay {max_delay:?} exceeds {MAX_GROUP_COMMIT_DELAY:?}"
            )));
        }
        if self.max_record_bytes > u32::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "max_record_bytes {} does not fit the 32-bit length field",
                self.max_record_bytes
            )));
        }
        let needed = (segment::SEGMENT_HEADER_LEN + frame::frame_len(self.max_record_bytes)) as u64;
        if self.segment_bytes < needed {
            return Err(Error::InvalidConfig(format!(
                "segment_bytes {} cannot hold one record of max_record_bytes {} ({needed} bytes needed)",
                self.segment_bytes, self.max_record_bytes
            )));
        }
        Ok(())
    }
}

/// An open write-ahead log. Cheap to clone; clones share the log. Appends from any number of
/// threads and tasks are safe. The log closes (writing and fdatasyncing what is queued) when
/// [`close`](Wal::close) is called or the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    owner: Arc<Owner>,
}

/// Owns the flusher thread; dropping the last one closes the log.
struct Owner {
    shared: Arc<Shared>,
    flusher: parking_lot::Mutex<Option<JoinHandle<()>>>,
    recovery: Recovery,
}

impl Owner {
    fn close(&self) -> Result<()> {
        self.shared.begin_close();
        if let Some(thread) = self.flusher.lock().take()
            && thread.join().is_err()
        {
            return Err(Error::Closed);
        }
        self.shared.release_lock();
        match self.shared.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Errors were already reported to the appenders waiting on them.
        let _ = self.close();
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it if needed) and recovers it: a torn tail of the last
    /// segment is cut; corruption anywhere else is an error (see the crate docs).
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Wal> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let (start, recovery) = recovery::open(&dir, &config)?;
        let shared = Shared::new(config, start);
        let flusher_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("arbor-wal-flusher".into())
            .spawn(move || writer::run_flusher(flusher_shared))
            .map_err(|source| Error::io("spawn flusher thread", dir.clone(), None, source))?;
        let owner = Arc::new(Owner {
            shared: Arc::clone(&shared),
            flusher: parking_lot::Mutex::new(Some(thread)),
            recovery,
        });
        Ok(Wal { shared, owner })
    }

    /// Appends one record. Returns at once with its LSN; wait on the result for durability.
    /// Refuses a payload over [`Config::max_record_bytes`] before anything is written. Blocks only
    /// when more than [`Config::max_queued_bytes`] are waiting for the disk.
    pub fn append(&self, payload: &[u8]) -> Result<Appended> {
        self.append_batch(&[payload])
    }

    /// Appends records with consecutive LSNs, in order, written together: under
    /// [`Durability::Always`] one write + fdatasync covers the whole batch. Every size is checked
    /// before anything is written. A crash during the write may keep a prefix of the batch (none
    /// of it was acknowledged).
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Appended> {
        let (first, last) = self.shared.append(payloads)?;
        Ok(Appended {
            first,
            last,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Forces an fdatasync of everything appended so far, whatever the policy, and waits for it.
    /// Returns the LSN now durable.
    pub fn sync(&self) -> Result<Lsn> {
        let upto = self.shared.request_sync()?;
        self.shared.wait_blocking(upto, Shared::synced_lsn)?;
        Ok(upto)
    }

    /// [`sync`](Wal::sync) for async callers.
    pub async fn sync_async(&self) -> Result<Lsn> {
        let upto = self.shared.request_sync()?;
        self.shared.wait_async(upto, Shared::synced_lsn).await?;
        Ok(upto)
    }

    /// Reads records from `lsn` on, in order, across segments; see [`Reader`].
    pub fn read_from(&self, lsn: Lsn) -> Result<Reader> {
        Reader::new(Arc::clone(&self.shared), lsn)
    }

    /// Removes the segments whose records all lie before `lsn`, oldest first, and fsyncs the
    /// directory. The segment being written is never removed. Returns how many were removed.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let mut segments = self.shared.segments.write();
        let mut removed = 0;
        while segments.len() > 1 && segments[1].first_lsn <= lsn {
            let oldest = segments.remove(0);
            if let Err(source) = std::fs::remove_file(&oldest.path) {
                segments.insert(0, oldest.clone());
                return Err(Error::io("remove segment", oldest.path, None, source));
            }
            removed += 1;
        }
        let oldest = segments.first().map_or(0, |s| s.first_lsn);
        drop(segments);
        if removed > 0 {
            self.shared.index.lock().retain(|e| e.segment >= oldest);
            segment::sync_dir(&self.shared.dir)?;
        }
        Ok(removed)
    }

    /// Checks every segment without changing anything, up to what the log has written when it
    /// is called (records still being written are not mistaken for a torn tail).
    pub fn verify(&self) -> Result<VerifyReport> {
        let live_end = self.shared.written_end();
        recovery::verify(&self.shared.dir, Some(live_end))
    }

    /// The oldest LSN still in the log (the first LSN of the oldest segment).
    pub fn first_lsn(&self) -> Lsn {
        self.shared
            .segments
            .read()
            .first()
            .map_or(1, |s| s.first_lsn)
    }

    /// The LSN of the newest record appended (0 if none).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.last_lsn()
    }

    /// The newest LSN that is durable under the log's policy.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn()
    }

    /// What recovery did when this log was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.owner.recovery
    }

    /// What the log has done since it was opened.
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.shared.stats;
        Stats {
            records_written: counters.records.load(Relaxed),
            bytes_written: counters.bytes.load(Relaxed),
            writes: counters.writes.load(Relaxed),
            syncs: counters.syncs.load(Relaxed),
            sync_time: Duration::from_nanos(counters.sync_nanos.load(Relaxed)),
            segments_created: counters.segments_created.load(Relaxed),
            segments: self.shared.segments.read().len(),
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The log's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.shared
            .segments
            .read()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    /// The first LSN of each segment, oldest first: a record with LSN `l` lies in the last
    /// segment whose first LSN is ≤ `l`, so [`truncate_before`](Wal::truncate_before)`(l)`
    /// removes exactly the segments before that one.
    pub fn segment_first_lsns(&self) -> Vec<Lsn> {
        self.shared
            .segments
            .read()
            .iter()
            .map(|s| s.first_lsn)
            .collect()
    }

    /// Writes and fdatasyncs everything queued, stops the flusher and releases the directory.
    /// Appends, syncs and truncations through other clones of this `Wal` get [`Error::Closed`]
    /// afterwards; reading what was written still works. Returns the log's failure, if
    /// it had one.
    pub fn close(self) -> Result<()> {
        self.owner.close()
    }
}

/// Checks the log in `dir` without opening it for writing or changing anything (for a stopped
/// host: `arborctl wal verify`).
pub fn verify(dir: impl AsRef<Path>, config: &Config) -> Result<VerifyReport> {
    config.validate()?;
    recovery::verify(dir.as_ref(), None)
}

/// Counters of what a log has done since it was opened (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written to the OS.
    pub records_written: u64,
    /// Bytes of frames written to the OS.
    pub bytes_written: u64,
    /// `write` calls (one per batch and segment).
    pub writes: u64,
    /// fdatasync calls on segments.
    pub syncs: u64,
    /// Total time spent in fdatasync.
    pub sync_time: Duration,
    /// Segments created by rotation.
    pub segments_created: u64,
    /// Segments in the log now.
    pub segments: usize,
}

/// The LSNs of one append call, and the way to wait until they are durable.
#[must_use = "an appended record is not durable until waited for"]
pub struct Appended {
    first: Lsn,
    last: Lsn,
    shared: Arc<Shared>,
}

impl Appended {
    /// The LSN of the (last) record appended.
    pub fn lsn(&self) -> Lsn {
        self.last
    }

    /// The LSNs of all records of the call.
    pub fn lsns(&self) -> RangeInclusive<Lsn> {
        self.first..=self.last
    }

    /// Whether the records are already durable under the log's policy.
    pub fn is_durable(&self) -> bool {
        self.shared.durable_lsn() >= self.last
    }

    /// Waits, blocking the thread, until the records are durable under the log's policy.
    pub fn wait_blocking(&self) -> Result<()> {
        self.shared.wait_blocking(self.last, Shared::durable_lsn)
    }

    /// Waits until the records are durable under the log's policy.
    pub async fn wait(&self) -> Result<()> {
        self.shared.wait_async(self.last, Shared::durable_lsn).await
    }
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("lsns", &self.lsns())
            .finish()
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("last_lsn", &self.last_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}
