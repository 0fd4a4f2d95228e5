//! The journal seam on JetStream: [`JetStreamStore`] implements arbor-agent's
//! [`JournalStore`], so an `AgentSystem` built with
//! `AgentSystemBuilder::journal_store(Arc::new(store))` journals into the replicated stream of
//! [`JournalLog`] and keeps its checkpoints in a replicated KV bucket; another node recovers
//! the agent from there after taking it over.
//!
//! # Ownership: acquire first
//!
//! The store only serves agents this node has acquired: [`JetStreamStore::acquire`] takes
//! the agent's log over at an epoch (from a [`Lease`](crate::Lease) the caller claimed),
//! which fences every former owner, then loads the agent's records and checkpoints. Every
//! per-agent operation on an agent not acquired fails with [`JournalError::Fenced`] (reads
//! too: a node that does not own an agent must not act on a view of it). Spawning or
//! recovering an agent comes after `acquire` (`AgentSystem::spawn`,
//! `AgentSystem::recover_as`).
//!
//! # Decisions
//!
//! 1. **Positions are per agent, numbered by the writer.** `append` is synchronous and
//!    returns an [`Ack`] carrying the records' position at once, but JetStream assigns stream
//!    sequences only when it acknowledges. So the store numbers each agent's records itself:
//!    1, 2, 3, … in append order, continuing after the last position in the log when the
//!    agent is acquired. An entry carries the position of its first record in the
//!    `Arbor-Position` header ([`AgentWriter::append_at`]); the stream sequence stays inside
//!    the writer, for the expected-last-subject-sequence check. A checkpoint is stored at the
//!    agent's own last position ([`JournalStore::last_of`], a seam change this needed: the
//!    local WAL's positions are shared by all agents and `last_of` is its `last`). The
//!    store-wide [`JournalStore::last`] is the largest of the agents' positions.
//! 2. **Sync outside, async inside.** Each acquired agent has one writer task (spawned on the
//!    runtime that called `acquire`) fed by an unbounded channel: `append` numbers the
//!    records, keeps them in the agent's read cache (the contract: reads see records appended
//!    but not yet durable), queues them and returns `Ack::pending`. The task publishes one
//!    entry at a time — each names the previous one's stream sequence, so one agent's appends
//!    cannot be pipelined — and publishes its acknowledged position on a watch channel;
//!    [`Pending::wait`] resolves when that position reaches the ack's. Nothing blocks a tokio
//!    worker except [`JournalStore::sync_blocking`] and [`JournalStore::sync_checkpoints`]
//!    while writes are still queued, which then wait inside `block_in_place`. On a
//!    current-thread runtime they cannot wait — the writers and the connection run on the
//!    very thread that would block — so they fail at once with [`SyncError::CurrentThread`]
//!    (inside [`JournalError::Store`]) rather than return with writes still queued. Async
//!    callers await [`JournalStore::sync`] and [`JournalStore::sync_checkpoints_async`] (a
//!    seam method added for this), which wait on any runtime; `AgentSystem::shutdown` and
//!    the rebase commit do, so they are correct on a current-thread runtime too.
//! 3. **Checkpoints** go to a KV bucket (default `arbor_checkpoints`, R3): the key
//!    `<agent>.<position>` holds the metadata and the zstd state (the vault's format:
//!    [`CheckpointMeta`] with the BLAKE3 of the uncompressed state), and the key `<agent>`
//!    the index: the positions that have one and the epoch of the owner that wrote it (see
//!    6). `put_checkpoint` updates the agent's cache at once and queues the upload **in the
//!    agent's writer queue**, behind the appends it covers and ahead of every later one: so a
//!    record that names a checkpoint (a rebase) is never stored before the checkpoint. A
//!    compressed state over [`StoreConfig::inline_state_bytes`] (256 KiB) does not fit a KV
//!    value (a NATS message: 1 MiB by default) and goes to the object store bucket
//!    [`StoreConfig::blob_bucket`] (`arbor_checkpoint_blobs`, the KV bucket's replicas) under
//!    the same name; the KV value then holds the metadata and the blob's name. The blob is
//!    written first, then the value, then the index, so a listed checkpoint always has both;
//!    deleting one unlists it first, then removes the value and the blob (a leftover is never
//!    read). The value's messages are purged from the bucket's stream rather than KV-purged,
//!    which would leave a marker per deleted checkpoint for ever; likewise the marker the
//!    object store's delete leaves (under async-nats's encoding of the name, which the
//!    retention test checks). An acquired agent's retained checkpoints are kept in memory, states included
//!    (`checkpoint` is synchronous); retention bounds them. Sealing and verifying are the
//!    vault's own (`arbor_vault::seal_checkpoint`, `open_checkpoint`, added for this), so
//!    `latest_valid` skips a checkpoint that does not verify exactly as the vault does.
//! 4. **Fencing.** After a takeover, the former owner's next entry is refused by the stream;
//!    its writer halts and the [`Ack`] of every append queued from then on fails with
//!    [`JournalError::Fenced`], and every later `append` (and checkpoint) fails with it at
//!    once — the agent crashes on the next input instead of serving state the log does not
//!    hold. Any other failure of a publish (outcome unknown after the append timeout, too
//!    large) halts the writer the same way, as [`JournalError::Store`]; positions stay
//!    contiguous because nothing after a failure is published. Re-acquiring starts over from
//!    the log. A checkpoint's value and blob are not fenced: a checkpoint only claims records
//!    that were acknowledged (the journal syncs first, and a halted writer refuses it), so a
//!    late one from a former owner is a true state of the log's prefix. Its index is (6).
//! 5. **Registry.** Opened with [`JetStreamStore::open`] the store has no vault (`vault()` is
//!    `None`): no registry, module store or lineage, and a system on it recovers with
//!    `AgentSystem::recover_as(spec)`. A cluster node opens it with
//!    [`JetStreamStore::open_with_vault`]: a local vault that holds the records of the agents
//!    this node runs now (the runtime writes one before it starts an agent and removes it
//!    when it gives the agent up), the modules and the lineage — a node-local cache; the
//!    cluster-wide registry is the runtime's (a KV bucket).
//! 6. **Retention, as the journal decides.** The store releases nothing on its own: the
//!    journal's release rule (pins at the older of the two newest checkpoints, holds, the
//!    history checkpoint within the history budget) decides, as for the local WAL. Its
//!    positions are per agent, so the seam got `positions_per_agent` and the journal applies
//!    the rule to each agent alone (`release_agent_before`, `history_floor`; the history
//!    budget is split evenly over the agents). Releasing drops the agent's records before the
//!    bound from the cache at once (reading them then fails with [`JournalError::Released`])
//!    and queues a purge of the stream behind the checkpoint uploads already queued, so the
//!    stream loses records only once the checkpoints covering them are in the bucket. The
//!    purge ([`JournalLog::purge_before`]) removes whole entries whose records all lie before
//!    the bound, and the takeover markers among them — never the agent's newest append
//!    entry: a new owner numbers on from its last position, and with it the subject's last
//!    message, which a takeover's expected-sequence check needs, stays too. `acquire` takes
//!    the first position still in the stream as the released bound. The store-wide
//!    [`JournalStore::first`] stays 1 (positions are per agent; `read` checks the agent's
//!    own bound). A failed purge does not halt the writer (the entries only take space; the
//!    next release purges them).
//!    Checkpoints beyond retention are unlisted and deleted with their blobs.
//!
//!    Purging makes a former owner's late index write dangerous: listing its own checkpoints
//!    over the new owner's would point recovery at records the new owner has purged. So the
//!    index is compare-and-swapped: `acquire` claims it (rewrites it with its epoch at the
//!    revision read, after the takeover and before reading the log), and every later index
//!    write expects the revision this writer last wrote. A former owner's next index write
//!    then fails and halts its writer as [`JournalError::Fenced`] before it deletes or purges
//!    anything more; what it purged before was covered by checkpoints the claimed index
//!    lists. A purge racing `acquire`'s read of the log shows as a jump in positions, and the
//!    read starts over.
//!
//!    Memory: an acquired agent's cache holds the records after its release bound — two
//!    checkpoint intervals, plus its history within its share of
//!    `CheckpointPolicy::history_max_bytes` (which, for this store, is memory: size it so).
//!
//! # Not yet
//!
//! Renewing the lease and stepping down when it is lost are the caller's. A stopped agent
//! (unpinned) keeps its records in this store until the store releases the agent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbor_agent::agent::{Ack, Pending, Records};
use arbor_agent::{JournalError, JournalStore};
use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint};
use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::conflict::{CasError, is_conflict, latest_entry, update_checked};
use crate::log::{AgentWriter, EntryKind, JournalLog, LogConfig, LogError};
use crate::names::encode_agent;

/// A position in an agent's journal (arbor-wal's `Lsn`).
type Lsn = u64;

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The journal stream.
    pub log: LogConfig,
    /// The checkpoint bucket's name.
    pub checkpoint_bucket: String,
    /// Replicas of the checkpoint bucket (and of the blob bucket).
    pub checkpoint_replicas: usize,
    /// The object store bucket holding checkpoint states too large to go inline.
    pub blob_bucket: String,
    /// The largest compressed state kept inline in the checkpoint bucket; a larger one goes
    /// to the blob bucket (a KV value must fit the server's max payload, 1 MiB by default).
    pub inline_state_bytes: usize,
    /// The zstd level of checkpoint states.
    pub zstd_level: i32,
    /// The largest checkpoint state read back (a corrupt size cannot allocate more).
    pub max_state_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            checkpoint_bucket: "arbor_checkpoints".to_string(),
            checkpoint_replicas: 3,
            blob_bucket: "arbor_checkpoint_blobs".to_string(),
            inline_state_bytes: 256 << 10,
            zstd_level: 3,
            max_state_bytes: 64 << 20,
        }
    }
}

impl StoreConfig {
    /// Sets the replicas of the stream and the bucket.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.log.replicas = replicas;
        self.checkpoint_replicas = replicas;
        self
    }

    /// Sets the append timeout (see [`LogConfig::append_timeout`]).
    pub fn append_timeout(mut self, timeout: Duration) -> Self {
        self.log.append_timeout = timeout;
        self
    }
}

/// Why a blocking sync ([`JournalStore::sync_blocking`], [`JournalStore::sync_checkpoints`])
/// did not wait (the source of the [`JournalError::Store`] it fails with).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Writes are queued and the caller is on a current-thread runtime: the writers run on
    /// that thread, so blocking it would never let them finish. Await
    /// [`JournalStore::sync`] or [`JournalStore::sync_checkpoints_async`] instead.
    #[error("cannot wait for queued writes on a current-thread runtime (await the async sync)")]
    CurrentThread,
}

/// What opening the store or acquiring an agent failed on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal log (the stream, a takeover, a read).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoint bucket could not be created or opened.
    #[error("checkpoint bucket `{bucket}`")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The checkpoint blob bucket could not be created or opened.
    #[error("checkpoint blob bucket `{bucket}`")]
    Blobs {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Reading an agent's checkpoints failed.
    #[error("reading checkpoints of agent `{agent}`")]
    Checkpoints {
        /// The agent.
        agent: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// An entry of the agent's log has no position, or positions that do not increase.
    #[error("agent `{agent}`: entry {seq} has {what}")]
    Positions {
        /// The agent.
        agent: String,
        /// The entry's stream sequence.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// A checkpoint: its metadata and its zstd state.
struct Stored {
    meta: CheckpointMeta,
    compressed: Vec<u8>,
}

/// A checkpoint as the bucket holds it: the state inline, or the name of the blob holding it
/// (see the module docs, decision 3).
#[derive(Serialize, Deserialize)]
struct StoredValue {
    meta: CheckpointMeta,
    /// The zstd state when inline; empty when in a blob.
    #[serde(with = "serde_bytes", default)]
    compressed: Vec<u8>,
    /// The blob holding the zstd state (in [`StoreConfig::blob_bucket`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<String>,
}

/// The list of an agent's checkpoints as the bucket holds it (under the agent's key): the
/// positions that have one, and the epoch of the owner that wrote it.
#[derive(Serialize, Deserialize)]
struct Index {
    epoch: u64,
    lsns: Vec<Lsn>,
}

/// How far an agent's writer got.
#[derive(Clone, Default)]
struct Progress {
    acked: Lsn,
    failed: Option<JournalError>,
}

enum Op {
    Append {
        first: Lsn,
        last: Lsn,
        records: Vec<Vec<u8>>,
    },
    PutCheckpoint(Arc<Stored>),
    DeleteCheckpoints(Vec<Lsn>),
    /// Purge the agent's entries whose records all lie before this position.
    Release(Lsn),
    Flush(oneshot::Sender<()>),
}

/// One acquired agent: its numbering, cache and writer queue.
struct Slot {
    agent: String,
    state: Mutex<SlotState>,
    ops: mpsc::UnboundedSender<Op>,
    progress: watch::Sender<Progress>,
    /// Operations queued and operations done, for [`JetStreamStore::flushed`].
    queued: AtomicU64,
    done: AtomicU64,
}

struct SlotState {
    /// The last position numbered (appended, maybe not yet durable).
    last: Lsn,
    /// The agent's records from `released` on, in position order.
    records: VecDeque<(Lsn, Arc<[u8]>)>,
    /// Records before this position were released: dropped here, purged (or being purged)
    /// from the stream.
    released: Lsn,
    /// The bytes of the records kept (for the history budget).
    bytes: u64,
    checkpoints: BTreeMap<Lsn, Arc<Stored>>,
    /// Set when the writer halted: every later operation fails with it.
    failed: Option<JournalError>,
}

impl Slot {
    fn failed(&self) -> Option<JournalError> {
        self.state.lock().failed.clone()
    }

    fn halt(&self, error: JournalError) {
        self.state.lock().failed.get_or_insert(error.clone());
        self.progress.send_modify(|p| {
            p.failed.get_or_insert(error);
        });
    }

    fn queue(&self, op: Op) -> Result<(), JournalError> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.ops.send(op).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            JournalError::DeliveryStopped
        })
    }
}

/// The journal seam on JetStream (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

struct Inner {
    log: JournalLog,
    bucket: kv::Store,
    blobs: object_store::ObjectStore,
    blob_stream: jetstream::stream::Stream,
    node: String,
    config: StoreConfig,
    agents: Mutex<HashMap<String, Arc<Slot>>>,
    /// The node's local vault, when it keeps one (see decision 5).
    vault: Option<arbor_vault::Vault>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl JetStreamStore {
    /// Opens the journal stream and the checkpoint bucket (creating them if needed) for
    /// `node`.
    pub async fn open(
        js: jetstream::Context,
        node: &str,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        let log = JournalLog::open(js.clone(), config.log.clone()).await?;
        let bucket_err = |source: async_nats::Error| StoreError::Bucket {
            bucket: config.checkpoint_bucket.clone(),
            source,
        };
        let bucket = match js.get_key_value(config.checkpoint_bucket.clone()).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: config.checkpoint_bucket.clone(),
                    description: "arbor: agent checkpoints (zstd)".to_string(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: config.checkpoint_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| bucket_err(e.into()))?,
        };
        let blobs_err = |source: async_nats::Error| StoreError::Blobs {
            bucket: config.blob_bucket.clone(),
            source,
        };
        let blobs = match js.get_object_store(&config.blob_bucket).await {
            Ok(blobs) => blobs,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: config.blob_bucket.clone(),
                    description: Some("arbor: large checkpoint states (zstd)".to_string()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: config.checkpoint_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| blobs_err(e.into()))?,
        };
        // The object store keeps its stream to itself; deleting markers needs it.
        let blob_stream = js
            .get_stream(format!("OBJ_{}", config.blob_bucket))
            .await
            .map_err(|e| blobs_err(e.into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                bucket,
                blobs,
                blob_stream,
                node: node.to_string(),
                config,
                agents: Mutex::new(HashMap::new()),
                vault: None,
            }),
        })
    }

    /// [`open`](Self::open), with the node's local `vault` as the store's vault: the agent
    /// system keeps its registry of the agents this node runs, its modules and its lineage
    /// there (see decision 5). Nothing in it is needed to recover an agent elsewhere.
    pub async fn open_with_vault(
        js: jetstream::Context,
        node: &str,
        config: StoreConfig,
        vault: arbor_vault::Vault,
    ) -> Result<Self, StoreError> {
        let mut store = Self::open(js, node, config).await?;
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.vault = Some(vault);
        }
        Ok(store)
    }

    /// The journal log underneath.
    pub fn log(&self) -> &JournalLog {
        &self.inner.log
    }

    /// Takes `agent`'s log over at `epoch` (the caller's lease; fences every former owner) and
    /// loads its records and checkpoints; from then on the store serves the agent. Must run
    /// on the runtime the agents run on (the agent's writer task is spawned on it).
    pub async fn acquire(&self, agent: &str, epoch: u64) -> Result<(), StoreError> {
        let inner = &self.inner;
        let writer = inner.log.take_over(agent, epoch, &inner.node).await?;
        // The index before the log: once claimed, a former owner still running halts at its
        // next index write, so at most the releases it queued before can still purge.
        let (index, index_revision) = self.claim_index(agent, epoch).await?;
        let checkpoints = self.load_checkpoints(agent, &index).await?;
        let Loaded {
            mut last,
            records,
            entries,
        } = self.load_records(agent).await?;
        // Release keeps the newest append entry, so the log alone gives the last position; a
        // checkpoint claims only records that were in the log, so this changes nothing unless
        // entries were removed by other means — then numbering must still never reuse a
        // position a checkpoint covers.
        last = last.max(checkpoints.keys().next_back().copied().unwrap_or(0));
        // Whatever is before the first record still in the log was released.
        let released = records.front().map_or(last + 1, |(lsn, _)| *lsn);
        let bytes = records.iter().map(|(_, r)| r.len() as u64).sum();
        let (ops, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot {
            agent: agent.to_string(),
            state: Mutex::new(SlotState {
                last,
                records,
                released,
                bytes,
                checkpoints: checkpoints.clone(),
                failed: None,
            }),
            ops,
            progress: watch::Sender::new(Progress {
                acked: last,
                failed: None,
            }),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
        });
        tokio::spawn(run_writer(
            Arc::clone(&slot),
            Stores {
                log: inner.log.clone(),
                bucket: inner.bucket.clone(),
                blobs: inner.blobs.clone(),
                blob_bucket: inner.config.blob_bucket.clone(),
                blob_stream: inner.blob_stream.clone(),
                inline_state_bytes: inner.config.inline_state_bytes,
            },
            Written {
                writer,
                index,
                index_revision,
                entries,
                purged_before: 0,
            },
            rx,
        ));
        // A slot of an earlier acquisition goes: its writer ends once its queue is empty.
        inner.agents.lock().insert(agent.to_string(), slot);
        Ok(())
    }

    /// Stops serving `agent` (after its queued writes are done; nothing is deleted).
    pub async fn release(&self, agent: &str) {
        let slot = self.inner.agents.lock().remove(agent);
        if let Some(slot) = slot {
            let (tx, rx) = oneshot::channel();
            if slot.queue(Op::Flush(tx)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// How many of `agent`'s records this store keeps in memory (`None` if it does not serve
    /// the agent): those after its release point (for operators and tests).
    pub fn cached_records(&self, agent: &str) -> Option<usize> {
        self.slot(agent)
            .ok()
            .map(|slot| slot.state.lock().records.len())
    }

    /// Whether this store serves `agent`, and its writer has not halted.
    pub fn owns(&self, agent: &str) -> bool {
        self.slot(agent).is_ok_and(|slot| slot.failed().is_none())
    }

    /// The agent's records in the stream. A former owner's release may purge while this
    /// reads (it purges only what its checkpoints, now in the claimed index, cover): a read
    /// that lost entries in the middle sees positions jump, and reads again.
    async fn load_records(&self, agent: &str) -> Result<Loaded, StoreError> {
        let mut attempts = 0;
        'read: loop {
            attempts += 1;
            let mut loaded = Loaded {
                last: 0,
                records: VecDeque::new(),
                entries: VecDeque::new(),
            };
            for entry in self.inner.log.read(agent, 1).await? {
                if entry.kind != EntryKind::Append || entry.records.is_empty() {
                    continue;
                }
                let positions = |what| StoreError::Positions {
                    agent: agent.to_string(),
                    seq: entry.seq,
                    what,
                };
                let first = entry.position.ok_or_else(|| positions("no position"))?;
                if first <= loaded.last {
                    return Err(positions("a position at or before the one before it"));
                }
                if loaded.last > 0 && first != loaded.last + 1 {
                    if attempts < READ_ATTEMPTS {
                        continue 'read;
                    }
                    return Err(positions("a gap before it"));
                }
                for (i, record) in entry.records.iter().enumerate() {
                    loaded
                        .records
                        .push_back((first + i as u64, Arc::<[u8]>::from(record.as_ref())));
                }
                loaded.last = first + entry.records.len() as u64 - 1;
                loaded.entries.push_back((entry.seq, loaded.last));
            }
            return Ok(loaded);
        }
    }

    /// Makes the agent's checkpoint index this owner's: rewrites it with `epoch` at the
    /// revision read, so that a former owner's next index write (a late checkpoint, a
    /// deletion) fails its compare-and-swap and halts that writer before it deletes or purges
    /// anything (see the module docs, decision 6). Returns the positions listed and the
    /// revision written.
    async fn claim_index(&self, agent: &str, epoch: u64) -> Result<(Vec<Lsn>, u64), StoreError> {
        let failed = |source: async_nats::Error| StoreError::Checkpoints {
            agent: agent.to_string(),
            source,
        };
        let fenced = |found| {
            StoreError::Log(LogError::Fenced {
                agent: agent.to_string(),
                epoch,
                found,
            })
        };
        let bucket = &self.inner.bucket;
        let key = encode_agent(agent);
        let mut backoff = Duration::from_millis(20);
        for _ in 0..CLAIM_ATTEMPTS {
            let (value, revision) = latest_at(bucket, &key).await.map_err(failed)?;
            let lsns = match value {
                None => Vec::new(),
                Some(value) => {
                    let index: Index =
                        rmp_serde::from_slice(&value).map_err(|e| failed(e.into()))?;
                    if index.epoch > epoch {
                        return Err(fenced(Some(index.epoch)));
                    }
                    index.lsns
                }
            };
            let value = encode_index(epoch, &lsns).map_err(failed)?;
            match bucket.update(&key, value, revision).await {
                Ok(revision) => return Ok((lsns, revision)),
                // A former owner's write landed after our read (read it too), or a leader
                // elected a moment ago has not applied the log yet (give it a moment).
                Err(e) if is_conflict(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(failed(e.into())),
            }
        }
        Err(fenced(None))
    }

    async fn load_checkpoints(
        &self,
        agent: &str,
        lsns: &[Lsn],
    ) -> Result<BTreeMap<Lsn, Arc<Stored>>, StoreError> {
        let failed = |source: async_nats::Error| StoreError::Checkpoints {
            agent: agent.to_string(),
            source,
        };
        let bucket = &self.inner.bucket;
        let key = encode_agent(agent);
        let mut checkpoints = BTreeMap::new();
        for &lsn in lsns {
            let Some(value) = latest(bucket, &format!("{key}.{lsn}"))
                .await
                .map_err(failed)?
            else {
                tracing::warn!(agent, lsn, "checkpoint listed but missing");
                continue;
            };
            let stored = match rmp_serde::from_slice::<StoredValue>(&value) {
                Ok(stored) if stored.meta.lsn == lsn && stored.meta.agent.as_str() == agent => {
                    stored
                }
                _ => {
                    tracing::warn!(agent, lsn, "checkpoint unreadable, skipped");
                    continue;
                }
            };
            let compressed = match &stored.blob {
                None => stored.compressed,
                Some(name) => match self.read_blob(name).await {
                    Ok(Some(compressed)) => compressed,
                    // Listed but its blob is gone or unreadable: like a missing value, the
                    // checkpoint is skipped (an older one, whose records are kept, serves).
                    Ok(None) => {
                        tracing::warn!(
                            agent,
                            lsn,
                            blob = name,
                            "checkpoint blob missing or over max_state_bytes, skipped"
                        );
                        continue;
                    }
                    Err(e) => return Err(failed(e)),
                },
            };
            checkpoints.insert(
                lsn,
                Arc::new(Stored {
                    meta: stored.meta,
                    compressed,
                }),
            );
        }
        Ok(checkpoints)
    }

    /// The blob `name` from the blob bucket; `None` if there is no such blob, or it is larger
    /// than any state this store reads back.
    async fn read_blob(&self, name: &str) -> Result<Option<Vec<u8>>, async_nats::Error> {
        let mut object = match self.inner.blobs.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The compressed size never exceeds what the state may decompress to by much; a blob
        // beyond that is not read into memory (verification would refuse it anyway).
        let size = object.info().size;
        if size as u64 > self.inner.config.max_state_bytes {
            return Ok(None);
        }
        let mut compressed = Vec::with_capacity(size);
        object.read_to_end(&mut compressed).await?;
        Ok(Some(compressed))
    }

    fn slot(&self, agent: &str) -> Result<Arc<Slot>, JournalError> {
        self.inner
            .agents
            .lock()
            .get(agent)
            .cloned()
            .ok_or_else(|| JournalError::Fenced {
                agent: agent.to_string(),
            })
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.inner.agents.lock().values().cloned().collect()
    }

    /// Waits until every live writer has done everything queued so far.
    async fn flush(&self) {
        let mut waits = Vec::new();
        for slot in self.slots() {
            if slot.failed().is_some() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if slot.queue(Op::Flush(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for wait in waits {
            // A writer that halted drops its flushes: its records will never be durable, and
            // its agent's own operations report that.
            let _ = wait.await;
        }
    }

    /// Whether every live writer has acknowledged everything numbered and has nothing
    /// queued.
    fn flushed(&self) -> bool {
        self.slots().iter().all(|slot| {
            slot.failed().is_some()
                || slot.done.load(Ordering::Acquire) >= slot.queued.load(Ordering::Acquire)
        })
    }

    /// [`flush`](Self::flush) from synchronous code (see the module docs, decision 2).
    fn flush_blocking(&self) -> Result<(), JournalError> {
        if self.flushed() {
            return Ok(());
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.runtime_flavor() {
                // The writers (and the connection) run on this thread: waiting here would wait
                // for ever. Async callers await `sync` / `sync_checkpoints_async` instead.
                tokio::runtime::RuntimeFlavor::CurrentThread => Err(store_error(
                    "waiting for queued writes".to_string(),
                    SyncError::CurrentThread,
                )),
                _ => {
                    tokio::task::block_in_place(|| handle.block_on(self.flush()));
                    Ok(())
                }
            },
            // Not on a runtime: no worker to block. The writers run on the agents' runtime.
            Err(_) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let waits: Vec<_> = self
                    .slots()
                    .into_iter()
                    .filter_map(|slot| {
                        let (done, wait) = oneshot::channel();
                        slot.queue(Op::Flush(done)).ok().map(|()| wait)
                    })
                    .collect();
                std::thread::spawn(move || {
                    for wait in waits {
                        let _ = wait.blocking_recv();
                    }
                    let _ = tx.send(());
                });
                let _ = rx.recv();
                Ok(())
            }
        }
    }
}

/// The value of `key` in `bucket`, read from the stream leader (a lagging replica's direct
/// get could miss the newest write; see `Leases::get`).
async fn latest(bucket: &kv::Store, key: &str) -> Result<Option<Bytes>, async_nats::Error> {
    Ok(latest_at(bucket, key).await?.0)
}

/// [`latest`], with the key's revision: what an update must expect (0: the key was never
/// written).
async fn latest_at(
    bucket: &kv::Store,
    key: &str,
) -> Result<(Option<Bytes>, u64), async_nats::Error> {
    Ok(latest_entry(bucket, key)
        .await?
        .map_or((None, 0), |(revision, value)| (value, revision)))
}

/// How often `acquire` reads the log again after a concurrent purge left a gap.
const READ_ATTEMPTS: usize = 5;

/// An agent's records as `acquire` read them from the stream.
struct Loaded {
    /// The last position.
    last: Lsn,
    records: VecDeque<(Lsn, Arc<[u8]>)>,
    /// The append entries: (stream sequence, last position).
    entries: VecDeque<(u64, Lsn)>,
}

/// How often `acquire` re-reads the index after a former owner's write beat its claim (a
/// former owner writes the index at most once per queued checkpoint operation).
const CLAIM_ATTEMPTS: usize = 20;

fn store_error(
    what: String,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> JournalError {
    JournalError::Store {
        what,
        source: Arc::from(source.into()),
    }
}

fn log_error(agent: &str, error: LogError) -> JournalError {
    match error {
        LogError::Fenced { epoch, found, .. } => {
            tracing::warn!(
                agent,
                epoch,
                ?found,
                "journal append fenced by a later epoch"
            );
            JournalError::Fenced {
                agent: agent.to_string(),
            }
        }
        other => store_error(format!("append for agent `{agent}`"), other),
    }
}

/// Where an agent's writer writes.
struct Stores {
    log: JournalLog,
    bucket: kv::Store,
    blobs: object_store::ObjectStore,
    blob_bucket: String,
    /// The blob bucket's stream.
    blob_stream: jetstream::stream::Stream,
    inline_state_bytes: usize,
}

/// What an agent's writer knows of what it wrote.
struct Written {
    writer: AgentWriter,
    /// The positions that have a checkpoint, as the bucket's index lists them.
    index: Vec<Lsn>,
    /// The index's revision this writer last wrote (its next write expects it).
    index_revision: u64,
    /// The append entries in the stream, oldest first: (stream sequence, last position).
    entries: VecDeque<(u64, Lsn)>,
    /// Everything of the agent before this stream sequence has been purged.
    purged_before: u64,
}

/// One agent's writer: does its queue in order, halting at the first failure.
async fn run_writer(
    slot: Arc<Slot>,
    stores: Stores,
    mut written: Written,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let agent = slot.agent.clone();
    let key = encode_agent(&agent);
    while let Some(op) = rx.recv().await {
        if slot.failed().is_some() {
            slot.done.fetch_add(1, Ordering::AcqRel);
            // Nothing after a failure is written (the log stays contiguous); flushes are
            // dropped, appends' waits see the failure.
            continue;
        }
        let result = match op {
            Op::Append {
                first,
                last,
                records,
            } => {
                let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                match written.writer.append_at(first, &records).await {
                    Ok(appended) => {
                        written.entries.push_back((appended.seq, last));
                        slot.progress.send_modify(|p| p.acked = last);
                        Ok(())
                    }
                    Err(e) => Err(log_error(&agent, e)),
                }
            }
            Op::PutCheckpoint(stored) => {
                put_checkpoint(&stores, &agent, &key, &stored, &mut written).await
            }
            Op::DeleteCheckpoints(lsns) => {
                written.index.retain(|lsn| !lsns.contains(lsn));
                let what = format!("deleting checkpoints of agent `{agent}`");
                match put_index(&stores, &agent, &mut written, what).await {
                    Err(e) => Err(e),
                    Ok(()) => {
                        // Unlisted already: a leftover value or blob is harmless (never read).
                        for lsn in lsns {
                            let name = format!("{key}.{lsn}");
                            // The key's messages go from the bucket's stream: a KV purge
                            // would leave a marker per deleted checkpoint for ever.
                            let subject = format!("{}{name}", stores.bucket.prefix);
                            if let Err(e) = stores.bucket.stream.purge().filter(subject).await {
                                tracing::warn!(agent, lsn, error = %e, "checkpoint not purged");
                            }
                            match stores.blobs.delete(&name).await {
                                Ok(()) => purge_blob_marker(&stores, &agent, &name).await,
                                // An inline checkpoint has no blob.
                                Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {}
                                Err(e) => {
                                    tracing::warn!(agent, lsn, error = %e, "blob not deleted");
                                }
                            }
                        }
                        Ok(())
                    }
                }
            }
            Op::Release(before) => {
                release_entries(&stores.log, &agent, &mut written, before).await;
                Ok(())
            }
            Op::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::warn!(agent, %error, "journal writer halted");
            slot.halt(error);
        }
        slot.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Purges the marker the object store's delete leaves (the object's metadata with `deleted`
/// set), which would otherwise stay for ever, one per deleted blob. Its subject is
/// `$O.<bucket>.M.<base64url(name)>` (async-nats 0.51's encoding; the retention test checks
/// that nothing of a deleted blob is left). A failure only leaves the marker.
async fn purge_blob_marker(stores: &Stores, agent: &str, name: &str) {
    use base64::Engine as _;
    let subject = format!(
        "$O.{}.M.{}",
        stores.blob_bucket,
        base64::engine::general_purpose::URL_SAFE.encode(name)
    );
    if let Err(e) = stores.blob_stream.purge().filter(subject).await {
        tracing::warn!(agent, blob = name, error = %e, "blob marker not purged");
    }
}

/// Stores one checkpoint: its blob first if it is large, then its value, then the index that
/// lists it — so a listed checkpoint always has its value and its blob.
async fn put_checkpoint(
    stores: &Stores,
    agent: &str,
    key: &str,
    stored: &Stored,
    written: &mut Written,
) -> Result<(), JournalError> {
    let lsn = stored.meta.lsn;
    let what = || format!("checkpoint {lsn} of agent `{agent}`");
    put_checkpoint_value(stores, key, stored)
        .await
        .map_err(|e| store_error(what(), e))?;
    if !written.index.contains(&lsn) {
        written.index.push(lsn);
        written.index.sort_unstable();
    }
    put_index(stores, agent, written, what()).await
}

/// A checkpoint's value (and blob).
async fn put_checkpoint_value(
    stores: &Stores,
    key: &str,
    stored: &Stored,
) -> Result<(), async_nats::Error> {
    let lsn = stored.meta.lsn;
    let name = format!("{key}.{lsn}");
    let value = if stored.compressed.len() > stores.inline_state_bytes {
        stores
            .blobs
            .put(name.as_str(), &mut stored.compressed.as_slice())
            .await?;
        StoredValue {
            meta: stored.meta.clone(),
            compressed: Vec::new(),
            blob: Some(name.clone()),
        }
    } else {
        StoredValue {
            meta: stored.meta.clone(),
            compressed: stored.compressed.clone(),
            blob: None,
        }
    };
    stores
        .bucket
        .put(name, rmp_serde::to_vec_named(&value)?.into())
        .await?;
    Ok(())
}

/// Purges the agent's append entries whose records all lie before `before`, and the takeover
/// markers among them, from the stream — never its newest append entry: that one gives a new
/// owner the last position (numbering continues after it), and with it the subject's last
/// message (what a takeover's fencing check expects) stays too. Runs in the agent's writer
/// queue, behind every checkpoint stored before the release, so the checkpoints that cover
/// the purged records are in the bucket first.
///
/// A failed purge is not the writer's failure: the records stay in the stream, which costs
/// space but nothing else, and the next release purges them.
async fn release_entries(log: &JournalLog, agent: &str, written: &mut Written, before: Lsn) {
    let entries = &mut written.entries;
    while entries.len() > 1 && entries.front().is_some_and(|(_, last)| *last < before) {
        entries.pop_front();
    }
    let Some(&(keep, _)) = entries.front() else {
        return;
    };
    if keep <= written.purged_before {
        return;
    }
    match log.purge_before(agent, keep).await {
        Ok(_) => written.purged_before = keep,
        Err(error) => {
            tracing::warn!(agent, %error, "journal entries not purged; the next release retries");
        }
    }
}

/// Writes the writer's index at the revision it last wrote: if another owner claimed the
/// index since, the write fails and the writer is fenced (decision 6). A refusal is believed
/// only once the index shows another owner's entry (see [`crate::conflict`]): a freshly
/// elected leader's refusal, or an earlier write of ours whose reply was lost, is retried.
async fn put_index(
    stores: &Stores,
    agent: &str,
    written: &mut Written,
    what: String,
) -> Result<(), JournalError> {
    let epoch = written.writer.epoch();
    let value = encode_index(epoch, &written.index).map_err(|e| store_error(what.clone(), e))?;
    let deadline = Instant::now() + stores.log.config().append_timeout;
    let ours = |value: &[u8]| rmp_serde::from_slice::<Index>(value).is_ok_and(|i| i.epoch == epoch);
    match update_checked(
        &stores.bucket,
        &encode_agent(agent),
        value,
        written.index_revision,
        deadline,
        ours,
    )
    .await
    {
        Ok(revision) => {
            written.index_revision = revision;
            Ok(())
        }
        Err(CasError::Lost) => {
            tracing::warn!(agent, epoch, "checkpoint index claimed by another owner");
            Err(JournalError::Fenced {
                agent: agent.to_string(),
            })
        }
        Err(CasError::Failed(e)) => Err(store_error(what, e)),
    }
}

fn encode_index(epoch: u64, lsns: &[Lsn]) -> Result<Bytes, async_nats::Error> {
    let index = Index {
        epoch,
        lsns: lsns.to_vec(),
    };
    Ok(rmp_serde::to_vec(&index)?.into())
}

/// The wait of one append: until the agent's writer acknowledged its last position.
struct AppendWait {
    slot: Arc<Slot>,
    lsn: Lsn,
}

impl Pending for AppendWait {
    fn is_durable(&self) -> bool {
        self.slot.progress.borrow().acked >= self.lsn
    }

    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + '_>> {
        Box::pin(async move {
            let mut rx = self.slot.progress.subscribe();
            loop {
                {
                    let progress = rx.borrow_and_update();
                    if progress.acked >= self.lsn {
                        return Ok(());
                    }
                    if let Some(error) = &progress.failed {
                        return Err(error.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(JournalError::DeliveryStopped);
                }
            }
        })
    }
}

/// What a checkpoint that does not verify is reported under.
const CHECKPOINT_STORE: &str = "cluster checkpoints";

fn verify(stored: &Stored, max_bytes: u64) -> Result<Checkpoint, arbor_vault::Error> {
    arbor_vault::open_checkpoint(
        CHECKPOINT_STORE,
        stored.meta.clone(),
        &stored.compressed,
        max_bytes,
    )
}

impl JournalStore for JetStreamStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn append(&self, agent: &str, records: &[&[u8]]) -> Result<Ack, JournalError> {
        let slot = self.slot(agent)?;
        let mut state = slot.state.lock();
        if let Some(error) = &state.failed {
            return Err(error.clone());
        }
        if records.is_empty() {
            return Ok(Ack::done(state.last));
        }
        let first = state.last + 1;
        let last = state.last + records.len() as u64;
        // Queued under the lock, so queue order is position order.
        slot.queue(Op::Append {
            first,
            last,
            records: records.iter().map(|r| r.to_vec()).collect(),
        })?;
        for (i, record) in records.iter().enumerate() {
            state
                .records
                .push_back((first + i as u64, Arc::from(*record)));
            state.bytes += record.len() as u64;
        }
        state.last = last;
        drop(state);
        Ok(Ack::pending(
            last,
            Arc::new(AppendWait {
                slot: Arc::clone(&slot),
                lsn: last,
            }),
        ))
    }

    fn read(&self, agent: &str, from: Lsn) -> Result<Records, JournalError> {
        let slot = self.slot(agent)?;
        let state = slot.state.lock();
        // Positions start at 1: asking from 0 misses nothing.
        if from.max(1) < state.released {
            return Err(JournalError::Released {
                first: state.released,
                asked: from,
            });
        }
        let start = state.records.partition_point(|(lsn, _)| *lsn < from);
        let records: Vec<_> = state
            .records
            .range(start..)
            .map(|(lsn, record)| Ok((*lsn, record.to_vec())))
            .collect();
        Ok(Box::new(records.into_iter()))
    }

    fn first(&self) -> Lsn {
        1
    }

    fn last(&self) -> Lsn {
        self.slots()
            .iter()
            .map(|slot| slot.state.lock().last)
            .max()
            .unwrap_or(0)
    }

    fn last_of(&self, agent: &str) -> Lsn {
        self.slot(agent).map_or(0, |slot| slot.state.lock().last)
    }

    fn sync(&self) -> Pin<Box<dyn Future<Output = Result<Lsn, JournalError>> + Send + '_>> {
        Box::pin(async move {
            self.flush().await;
            Ok(self.last())
        })
    }

    fn sync_blocking(&self) -> Result<Lsn, JournalError> {
        self.flush_blocking()?;
        Ok(self.last())
    }

    fn release_points(&self) -> Vec<Lsn> {
        Vec::new()
    }

    fn release_before(&self, _lsn: Lsn) -> Result<(), JournalError> {
        Ok(())
    }

    fn release_point_bytes(&self) -> u64 {
        1
    }

    fn positions_per_agent(&self) -> bool {
        true
    }

    fn release_agent_before(&self, agent: &str, lsn: Lsn) -> Result<(), JournalError> {
        // An agent this store does not serve (any more) has nothing to release here; one whose
        // writer halted neither: the next owner reads the log again.
        let Ok(slot) = self.slot(agent) else {
            return Ok(());
        };
        let mut state = slot.state.lock();
        // Records not numbered yet are not released (a caller's bound past the end).
        let lsn = lsn.min(state.last + 1);
        if state.failed.is_some() || lsn <= state.released {
            return Ok(());
        }
        // The stream's copy goes behind the checkpoints queued before (see `release_entries`).
        slot.queue(Op::Release(lsn))?;
        while let Some((_, record)) = state.records.pop_front_if(|(at, _)| *at < lsn) {
            state.bytes -= record.len() as u64;
        }
        state.released = lsn;
        Ok(())
    }

    fn history_floor(&self, agent: &str, bytes: u64) -> Lsn {
        let Ok(slot) = self.slot(agent) else {
            return 0;
        };
        let state = slot.state.lock();
        // Walk the oldest records off until the rest fits: the walk covers only what is over
        // the budget.
        let mut over = state.bytes.saturating_sub(bytes);
        for (lsn, record) in &state.records {
            if over == 0 {
                return *lsn;
            }
            over = over.saturating_sub(record.len() as u64);
        }
        state.last + 1
    }

    fn put_checkpoint(&self, checkpoint: &NewCheckpoint<'_>) -> Result<(), JournalError> {
        let agent = checkpoint.agent.as_str();
        let slot = self.slot(agent)?;
        let (meta, compressed) =
            arbor_vault::seal_checkpoint(checkpoint, self.inner.config.zstd_level)?;
        let stored = Arc::new(Stored { meta, compressed });
        let mut state = slot.state.lock();
        if let Some(error) = &state.failed {
            return Err(error.clone());
        }
        slot.queue(Op::PutCheckpoint(Arc::clone(&stored)))?;
        state.checkpoints.insert(checkpoint.lsn, stored);
        Ok(())
    }

    fn checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<Option<Checkpoint>, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let stored = slot.state.lock().checkpoints.get(&lsn).cloned();
        let max = self.inner.config.max_state_bytes;
        Ok(stored.map(|stored| verify(&stored, max)).transpose()?)
    }

    fn checkpoint_meta(
        &self,
        agent: &AgentId,
        lsn: Lsn,
    ) -> Result<Option<CheckpointMeta>, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let state = slot.state.lock();
        Ok(state.checkpoints.get(&lsn).map(|s| s.meta.clone()))
    }

    fn latest_valid(&self, agent: &AgentId) -> Result<LatestValid, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let stored: Vec<Arc<Stored>> = slot.state.lock().checkpoints.values().cloned().collect();
        let mut latest = LatestValid::none();
        for stored in stored.iter().rev() {
            match verify(stored, self.inner.config.max_state_bytes) {
                Ok(checkpoint) => {
                    latest.checkpoint = Some(checkpoint);
                    break;
                }
                Err(error) => latest
                    .skipped
                    .push(arbor_vault::Skipped::new(stored.meta.lsn, error)),
            }
        }
        Ok(latest)
    }

    fn latest_meta(&self, agent: &AgentId) -> Result<Option<CheckpointMeta>, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let state = slot.state.lock();
        Ok(state
            .checkpoints
            .values()
            .next_back()
            .map(|s| s.meta.clone()))
    }

    fn list_checkpoints(&self, agent: &AgentId) -> Result<Vec<CheckpointMeta>, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let state = slot.state.lock();
        Ok(state.checkpoints.values().map(|s| s.meta.clone()).collect())
    }

    fn retain_checkpoints(
        &self,
        agent: &AgentId,
        keep: usize,
        also: Option<Lsn>,
    ) -> Result<(), JournalError> {
        let slot = self.slot(agent.as_str())?;
        let mut state = slot.state.lock();
        let keep = keep.max(2);
        let doomed: Vec<Lsn> = state
            .checkpoints
            .keys()
            .rev()
            .filter(|lsn| Some(**lsn) != also)
            .skip(keep)
            .copied()
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        slot.queue(Op::DeleteCheckpoints(doomed.clone()))?;
        for lsn in doomed {
            state.checkpoints.remove(&lsn);
        }
        Ok(())
    }

    fn delete_checkpoint(&self, agent: &AgentId, lsn: Lsn) -> Result<bool, JournalError> {
        let slot = self.slot(agent.as_str())?;
        let mut state = slot.state.lock();
        if !state.checkpoints.contains_key(&lsn) {
            return Ok(false);
        }
        slot.queue(Op::DeleteCheckpoints(vec![lsn]))?;
        state.checkpoints.remove(&lsn);
        Ok(true)
    }

    fn sync_checkpoints(&self) -> Result<(), JournalError> {
        self.flush_blocking()
    }

    fn sync_checkpoints_async(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + '_>> {
        // Checkpoint uploads are in the writers' queues: flushing them is the sync.
        Box::pin(async move {
            self.flush().await;
            Ok(())
        })
    }

    fn vault(&self) -> Option<&arbor_vault::Vault> {
        self.inner.vault.as_ref()
    }
}
