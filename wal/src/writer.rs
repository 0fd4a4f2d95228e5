//! The write path: appenders encode records into a queue; whoever holds the io lock writes the
//! queue to the current segment and fdatasyncs it; waiters learn when their records are durable.
//! One file: the queue, the io lock and the waiters are one protocol (etcd's `wal.go` keeps it
//! together too).
//!
//! ```text
//!  append (any thread or task)        a round of writing (holds the io lock)
//!  ───────────────────────────        ─────────────────────────────────────
//!  lock queue                         take the queue (Always: one append call)
//!  assign LSNs, pick the segment      write it, rotating segments where the queue says
//!  encode frames into the queue       fdatasync (not under Never)
//!  unlock, wake the flusher           publish written/synced LSN, wake waiters
//! ```
//!
//! Two kinds of thread do rounds. A *blocking waiter* whose record is not yet durable takes the
//! io lock if it is free and does the round itself (leader/follower group commit, as in
//! LevelDB's writer queue or okaywal): no hand-off, and records appended while it syncs are left
//! for the next leader. The *flusher thread* does rounds for everything else: async waiters
//! (which must not block their executor on an fdatasync), appends nobody waits on, group commit
//! with a `max_delay` (whose timing it owns), and what is queued at close. Liveness never rests
//! on a leader: every append wakes the flusher.
//!
//! LSNs and segment placement are decided under the queue lock, so the order of records in the
//! files is the order of LSNs, and rounds (serialised by the io lock) write them in that order.
//! Two watermarks are published: `written` (in the OS page cache, survives a process crash) and
//! `synced` (fdatasync returned, survives a power loss). An `Appended` waits for the one its
//! log's policy promises.
//!
//! Any write or fsync error stops the log for good (`failure`): the kernel may drop dirty pages
//! after a failed fsync and clear the error, so a retry that succeeds proves nothing.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::{Config, Durability, Error, Result, frame};

/// A segment the log knows of.
#[derive(Debug, Clone)]
pub(crate) struct SegmentEntry {
    pub first_lsn: u64,
    pub segment_id: u64,
    pub path: PathBuf,
}

/// A record's place in the log: the sparse index readers seek with (see
/// [`INDEX_EVERY`](segment::INDEX_EVERY)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub lsn: u64,
    /// The segment holding it, by first LSN.
    pub segment: u64,
    pub offset: u64,
}

/// Counters of what the flusher did, for tests and metrics.
#[derive(Default)]
pub(crate) struct StatsCounters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub segments_created: AtomicU64,
}

/// Encoded records bound for one segment.
struct Chunk {
    segment: SegmentHeader,
    bytes: Vec<u8>,
    first_lsn: u64,
    last_lsn: u64,
}

/// What appenders share under the queue lock.
pub(crate) struct Queue {
    next_lsn: u64,
    /// The segment new records go to, and its length counting queued bytes.
    segment: SegmentHeader,
    segment_len: u64,
    chunks: VecDeque<Chunk>,
    queued_bytes: usize,
    /// When the oldest queued record was queued (group commit measures `max_delay` from it).
    oldest_queued_at: Option<Instant>,
    /// Highest LSN someone asked to have fdatasynced (explicit `sync`, or `close`).
    sync_requested: u64,
    closing: bool,
    /// The segment offset from which the next record is indexed.
    index_at: u64,
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: Config,
    queue: Mutex<Queue>,
    /// Wakes the flusher (records queued, sync requested, closing).
    flusher_wake: Condvar,
    /// Wakes appenders blocked because the queue is full.
    queue_space: Condvar,
    written: AtomicU64,
    /// Where the written bytes end: (first LSN of the segment being written, its length).
    written_end: Mutex<(u64, u64)>,
    synced: AtomicU64,
    failure: OnceLock<Arc<Error>>,
    pub stats: StatsCounters,
    progress_lock: Mutex<()>,
    progress: Condvar,
    progress_async: tokio::sync::Notify,
    pub segments: RwLock<Vec<SegmentEntry>>,
    /// Sparse, in LSN order; entries are added when records are queued (a reader uses one only
    /// for an LSN it already knows is written).
    pub index: Mutex<Vec<IndexEntry>>,
    /// The segment being written. Whoever holds this lock does a round of writing: the flusher
    /// thread, or a blocking waiter leading a group commit.
    io: Mutex<Io>,
    /// Held until the log is closed: its advisory lock keeps other processes out.
    lock_file: Mutex<Option<File>>,
}

/// Where recovery left the log: the state the writer starts from.
pub(crate) struct Start {
    pub dir: PathBuf,
    pub next_lsn: u64,
    pub segment: SegmentHeader,
    pub segment_len: u64,
    pub file: File,
    pub segments: Vec<SegmentEntry>,
    pub index: Vec<IndexEntry>,
    pub lock_file: File,
}

impl Shared {
    pub(crate) fn new(config: Config, start: Start) -> Arc<Self> {
        let last = start.next_lsn - 1;
        let io = Io {
            segment: start.segment,
            path: start.dir.join(segment::file_name(start.segment.first_lsn)),
            file: start.file,
            file_len: start.segment_len,
        };
        Arc::new(Self {
            dir: start.dir,
            config,
            queue: Mutex::new(Queue {
                next_lsn: start.next_lsn,
                segment: start.segment,
                segment_len: start.segment_len,
                chunks: VecDeque::new(),
                queued_bytes: 0,
                oldest_queued_at: None,
                sync_requested: 0,
                closing: false,
                index_at: start
                    .index
                    .last()
                    .filter(|e| e.segment == start.segment.first_lsn)
                    .map_or(0, |e| e.offset + segment::INDEX_EVERY),
            }),
            flusher_wake: Condvar::new(),
            queue_space: Condvar::new(),
            written: AtomicU64::new(last),
            written_end: Mutex::new((start.segment.first_lsn, start.segment_len)),
            synced: AtomicU64::new(last),
            failure: OnceLock::new(),
            stats: StatsCounters::default(),
            progress_lock: Mutex::new(()),
            progress: Condvar::new(),
            progress_async: tokio::sync::Notify::new(),
            segments: RwLock::new(start.segments),
            index: Mutex::new(start.index),
            io: Mutex::new(io),
            lock_file: Mutex::new(Some(start.lock_file)),
        })
    }

    pub(crate) fn failure(&self) -> Option<Error> {
        self.failure.get().map(|cause| Error::Failed {
            cause: cause.clone(),
        })
    }

    /// The last indexed record of `segment` at or before `lsn`.
    pub(crate) fn nearest_indexed(&self, segment: u64, lsn: u64) -> Option<IndexEntry> {
        let index = self.index.lock();
        let after = index.partition_point(|e| e.lsn <= lsn);
        index[..after]
            .last()
            .filter(|e| e.segment == segment)
            .copied()
    }

    /// Highest LSN written to the OS.
    pub(crate) fn written_lsn(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The segment being written (by first LSN) and how many of its bytes are written.
    pub(crate) fn written_end(&self) -> (u64, u64) {
        *self.written_end.lock()
    }

    /// Highest LSN fdatasynced.
    pub(crate) fn synced_lsn(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Highest LSN assigned to a record.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.queue.lock().next_lsn - 1
    }

    /// The watermark that the log's policy calls durable.
    pub(crate) fn durable_lsn(&self) -> u64 {
        match self.config.durability {
            Durability::Never => self.written_lsn(),
            _ => self.synced_lsn(),
        }
    }

    /// Queues records and returns the first and last LSN given to them.
    pub(crate) fn append<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<(u64, u64)> {
        let max = self.config.max_record_bytes;
        let mut batch_bytes = 0usize;
        for payload in payloads {
            let len = payload.as_ref().len();
            if len > max {
                return Err(Error::RecordTooLarge { len, max });
            }
            batch_bytes += frame::frame_len(len);
        }
        if payloads.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let mut queue = self.queue.lock();
        loop {
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
            if queue.closing {
                return Err(Error::Closed);
            }
            // Back-pressure: a batch waits while the queue is over its bound, unless the queue is
            // empty (a batch larger than the bound alone must still get through).
            let over_bound = queue.queued_bytes > 0
                && queue.queued_bytes + batch_bytes > self.config.max_queued_bytes;
            if !over_bound {
                break;
            }
            self.queue_space.wait(&mut queue);
        }
        let first = queue.next_lsn;
        for payload in payloads {
            let payload = payload.as_ref();
            let frame_len = frame::frame_len(payload.len()) as u64;
            let lsn = queue.next_lsn;
            if queue.segment_len + frame_len > self.config.segment_bytes
                && queue.segment_len > SEGMENT_HEADER_LEN as u64
            {
                queue.segment = SegmentHeader {
                    segment_id: segment::new_segment_id(lsn),
                    first_lsn: lsn,
                };
                queue.segment_len = SEGMENT_HEADER_LEN as u64;
                queue.index_at = 0;
            }
            let segment = queue.segment;
            if queue.segment_len >= queue.index_at {
                self.index.lock().push(IndexEntry {
                    lsn,
                    segment: segment.first_lsn,
                    offset: queue.segment_len,
                });
                queue.index_at = queue.segment_len + segment::INDEX_EVERY;
            }
            // Under Always every append call is its own write + fdatasync, so calls are never
            // merged into one chunk; otherwise records going to the same segment share a chunk.
            let merge = self.config.durability != Durability::Always || lsn != first;
            let can_merge = matches!(queue.chunks.back(), Some(c) if merge && c.segment == segment);
            if !can_merge {
                queue.chunks.push_back(Chunk {
                    segment,
                    bytes: Vec::with_capacity(batch_bytes.max(4096)),
                    first_lsn: lsn,
                    last_lsn: lsn,
                });
            }
            if let Some(chunk) = queue.chunks.back_mut() {
                frame::encode(&mut chunk.bytes, lsn, segment.segment_id, payload);
                chunk.last_lsn = lsn;
            }
            queue.segment_len += frame_len;
            queue.next_lsn += 1;
        }
        queue.queued_bytes += batch_bytes;
        if queue.oldest_queued_at.is_none()
            && let Durability::GroupCommit { max_delay } = self.config.durability
            && !max_delay.is_zero()
        {
            queue.oldest_queued_at = Some(Instant::now());
        }
        let last = queue.next_lsn - 1;
        drop(queue);
        self.flusher_wake.notify_one();
        Ok((first, last))
    }

    /// Asks the flusher to fdatasync everything appended so far; returns the LSN to wait for.
    pub(crate) fn request_sync(&self) -> Result<u64> {
        let mut queue = self.queue.lock();
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        if queue.closing {
            return Err(Error::Closed);
        }
        let upto = queue.next_lsn - 1;
        queue.sync_requested = queue.sync_requested.max(upto);
        drop(queue);
        self.flusher_wake.notify_one();
        Ok(upto)
    }

    /// Releases the directory's lock (after the flusher has stopped).
    pub(crate) fn release_lock(&self) {
        drop(self.lock_file.lock().take());
    }

    /// Whether `close` has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().closing
    }

    /// Tells the flusher to write and fdatasync everything queued, then stop.
    pub(crate) fn begin_close(&self) {
        let mut queue = self.queue.lock();
        queue.closing = true;
        queue.sync_requested = queue.next_lsn - 1;
        drop(queue);
        self.flusher_wake.notify_one();
        self.queue_space.notify_all();
    }

    /// Whether a blocking waiter may do the writing itself instead of waiting for the flusher:
    /// yes unless group commit asks for a delay, which the flusher thread times.
    fn waiters_may_lead(&self) -> bool {
        !matches!(self.config.durability, Durability::GroupCommit { max_delay } if !max_delay.is_zero())
    }

    /// Blocks until `watermark()` reaches `lsn` or the log fails. If nobody is writing, the
    /// waiting thread writes (and syncs) the queue itself: no hand-off to the flusher thread,
    /// whose wake-up can take long on a busy machine. Records appended while it syncs are left for
    /// the next leader, so concurrent waiters still share fdatasyncs.
    pub(crate) fn wait_blocking(&self, lsn: u64, watermark: fn(&Shared) -> u64) -> Result<()> {
        loop {
            if watermark(self) >= lsn {
                return Ok(());
            }
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
            // With the io lock held and nothing queued, everything appended before this wait has
            // been written (and synced, where the policy syncs): the loop then ends.
            if self.waiters_may_lead() && self.lead_round(Round::Leader) {
                continue;
            }
            let mut guard = self.progress_lock.lock();
            if watermark(self) >= lsn || self.failure.get().is_some() {
                continue;
            }
            self.progress.wait(&mut guard);
        }
    }

    /// Waits (asynchronously) until `watermark()` reaches `lsn` or the log fails. Async waiters
    /// never fdatasync themselves (that would block their executor); the flusher thread does it
    /// for them.
    pub(crate) async fn wait_async(&self, lsn: u64, watermark: fn(&Shared) -> u64) -> Result<()> {
        loop {
            // Under Never a round is usually one plain write, cheap enough to do on the caller's
            // task instead of waiting for the flusher thread to wake; rounds that would rotate or
            // fdatasync are left to the flusher (`Round::WriteOnly`).
            if self.config.durability == Durability::Never && watermark(self) < lsn {
                self.lead_round(Round::WriteOnly);
            }
            let notified = self.progress_async.notified();
            tokio::pin!(notified);
            // Registered before the check, so progress published after it cannot be missed.
            notified.as_mut().enable();
            if watermark(self) >= lsn {
                return Ok(());
            }
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
            notified.await;
        }
    }

    /// Does a round of writing on the caller's thread if nobody else is; returns whether it did.
    fn lead_round(&self, mode: Round) -> bool {
        let Some(io) = self.io.try_lock() else {
            return false;
        };
        self.round_locked(io, mode);
        true
    }

    /// Does one round with the io lock held. A failure is recorded before the lock is released:
    /// otherwise another round could write over the failed one's bytes, or fdatasync the same
    /// file again and succeed (the kernel reports an fsync error once), and report records durable
    /// that the failed round lost. Returns false if the log failed.
    fn round_locked(&self, mut io: parking_lot::MutexGuard<'_, Io>, mode: Round) -> bool {
        match self.flush_round(&mut io, mode) {
            Ok(_) => {
                drop(io);
                self.publish_progress();
                true
            }
            Err(error) => {
                self.fail(error);
                drop(io);
                false
            }
        }
    }

    fn publish_progress(&self) {
        drop(self.progress_lock.lock());
        self.progress.notify_all();
        self.progress_async.notify_waiters();
    }

    fn fail(&self, error: Error) {
        if self.failure.set(Arc::new(error)).is_ok()
            && let Some(error) = self.failure.get()
        {
            tracing::error!(dir = %self.dir.display(), %error, "wal failed; further appends are refused");
        }
        let mut queue = self.queue.lock();
        queue.chunks.clear();
        queue.queued_bytes = 0;
        drop(queue);
        self.queue_space.notify_all();
        self.flusher_wake.notify_one();
        self.publish_progress();
    }

    /// Whether there is anything for a round to do. After a failure there never is: the records
    /// a sync request covers may have been dropped unwritten, so it could never be met.
    fn has_work(&self, queue: &Queue) -> bool {
        self.failure.get().is_none()
            && (!queue.chunks.is_empty() || queue.sync_requested > self.synced_lsn())
    }

    /// One round of writing: takes what is queued (under `Always`, one append call), writes it,
    /// and fdatasyncs where the policy or a sync request says so. Returns whether there was
    /// anything to do. The caller holds the io lock and publishes progress after releasing it.
    fn flush_round(&self, io: &mut Io, mode: Round) -> Result<bool> {
        let mut queue = self.queue.lock();
        if !self.has_work(&queue) {
            return Ok(false);
        }
        if mode == Round::WriteOnly {
            let rotates = queue.chunks.iter().any(|c| c.segment != io.segment);
            if rotates || queue.sync_requested > self.synced_lsn() {
                return Ok(false);
            }
        }
        if let (Round::Flusher, Durability::GroupCommit { max_delay }, Some(since)) =
            (mode, self.config.durability, queue.oldest_queued_at)
        {
            let deadline = since + max_delay;
            while !queue.closing && queue.queued_bytes < self.config.group_commit_bytes {
                if self
                    .flusher_wake
                    .wait_until(&mut queue, deadline)
                    .timed_out()
                {
                    break;
                }
            }
        }
        let chunks: Vec<Chunk> = match self.config.durability {
            Durability::Always => queue.chunks.pop_front().into_iter().collect(),
            _ => queue.chunks.drain(..).collect(),
        };
        queue.queued_bytes -= chunks.iter().map(|c| c.bytes.len()).sum::<usize>();
        if queue.chunks.is_empty() {
            queue.oldest_queued_at = None;
        }
        let sync_requested = queue.sync_requested > self.synced_lsn();
        drop(queue);
        self.queue_space.notify_all();
        io.write_batch(self, chunks, sync_requested)?;
        Ok(true)
    }
}

/// Who does a round of writing, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The flusher thread: everything, including waiting out group commit's `max_delay`.
    Flusher,
    /// A blocking waiter: everything but waiting for company.
    Leader,
    /// An async waiter under `Never`: only a plain write; a round that would rotate or fdatasync
    /// (both block on the disk) is left to the flusher.
    WriteOnly,
}

/// The flusher thread: writes what blocking waiters do not write themselves (async waiters,
/// appends nobody waits on, group commit with a delay), and the last of it at close.
pub(crate) fn run_flusher(shared: Arc<Shared>) {
    loop {
        {
            let mut queue = shared.queue.lock();
            while !shared.has_work(&queue) {
                if queue.closing || shared.failure.get().is_some() {
                    return;
                }
                shared.flusher_wake.wait(&mut queue);
            }
        }
        if !shared.round_locked(shared.io.lock(), Round::Flusher) {
            return;
        }
    }
}

/// The segment being written.
pub(crate) struct Io {
    segment: SegmentHeader,
    path: PathBuf,
    file: File,
    /// Bytes in `file`, i.e. the offset of the next write.
    file_len: u64,
}

impl Io {
    fn write_batch(
        &mut self,
        shared: &Shared,
        chunks: Vec<Chunk>,
        sync_requested: bool,
    ) -> Result<()> {
        let mut last_written = None;
        for chunk in chunks {
            debug_assert_eq!(
                chunk.first_lsn,
                last_written.unwrap_or(shared.written_lsn()) + 1,
                "chunks are written in lsn order"
            );
            if chunk.segment != self.segment {
                debug_assert_eq!(
                    chunk.segment.first_lsn, chunk.first_lsn,
                    "a segment starts with a chunk"
                );
                self.rotate(shared, chunk.segment)?;
            }
            self.file
                .write_all_at(&chunk.bytes, self.file_len)
                .map_err(|source| {
                    Error::io(
                        "append records",
                        self.path.clone(),
                        Some(self.file_len),
                        source,
                    )
                })?;
            self.file_len += chunk.bytes.len() as u64;
            let stats = &shared.stats;
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            stats
                .records
                .fetch_add(chunk.last_lsn + 1 - chunk.first_lsn, Ordering::Relaxed);
            metrics::counter!(arbor_metrics::WAL_RECORDS)
                .increment(chunk.last_lsn + 1 - chunk.first_lsn);
            metrics::counter!(arbor_metrics::WAL_BYTES).increment(chunk.bytes.len() as u64);
            last_written = Some(chunk.last_lsn);
        }
        if let Some(lsn) = last_written {
            debug_assert!(lsn > shared.written_lsn(), "lsns are written in order");
            *shared.written_end.lock() = (self.segment.first_lsn, self.file_len);
            shared.written.store(lsn, Ordering::Release);
        }
        let policy_syncs = shared.config.durability != Durability::Never && last_written.is_some();
        if policy_syncs || sync_requested {
            let written = shared.written_lsn();
            if written > shared.synced_lsn() {
                self.sync_data(shared)?;
            }
            // Earlier segments were fdatasynced when the log left them.
            shared.synced.store(written, Ordering::Release);
        }
        Ok(())
    }

    fn sync_data(&mut self, shared: &Shared) -> Result<()> {
        let started = Instant::now();
        self.file
            .sync_data()
            .map_err(|source| Error::io("fdatasync", self.path.clone(), None, source))?;
        let stats = &shared.stats;
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        stats
            .sync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        metrics::histogram!(arbor_metrics::WAL_FSYNC_SECONDS).record(took);
        Ok(())
    }

    /// Switches to a new segment. The old one is fdatasynced first, under every policy: records
    /// never become durable out of LSN order across segments, a later sync need only cover the
    /// current segment, and a power loss can never leave a short earlier segment behind a newer
    /// one (which open would refuse as a gap). One fdatasync per segment is cheap.
    fn rotate(&mut self, shared: &Shared, next: SegmentHeader) -> Result<()> {
        self.sync_data(shared)?;
        let (path, file) = segment::create(&shared.dir, next, shared.config.segment_bytes)?;
        metrics::counter!(arbor_metrics::WAL_SEGMENTS_CREATED).increment(1);
        shared.segments.write().push(SegmentEntry {
            first_lsn: next.first_lsn,
            segment_id: next.segment_id,
            path: path.clone(),
        });
        shared
            .stats
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        self.segment = next;
        self.path = path;
        self.file = file;
        self.file_len = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }
}
