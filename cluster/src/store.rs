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
//!    agent's own last position ([`JournalStore::last_of`], the one seam change this needed:
//!    the local WAL's positions are shared by all agents and `last_of` is its `last`). The
//!    store-wide [`JournalStore::last`] is the largest of the agents' positions.
//! 2. **Sync outside, async inside.** Each acquired agent has one writer task (spawned on the
//!    runtime that called `acquire`) fed by an unbounded channel: `append` numbers the
//!    records, keeps them in the agent's read cache (the contract: reads see records appended
//!    but not yet durable), queues them and returns `Ack::pending`. The task publishes one
//!    entry at a time — each names the previous one's stream sequence, so one agent's appends
//!    cannot be pipelined — and publishes its acknowledged position on a watch channel;
//!    [`Pending::wait`] resolves when that position reaches the ack's. Nothing blocks a tokio
//!    worker except [`JournalStore::sync_blocking`] and [`JournalStore::sync_checkpoints`]
//!    while writes are still queued, which then wait inside `block_in_place` (on a
//!    current-thread runtime they cannot wait; see 3).
//! 3. **Checkpoints** go to a KV bucket (default `arbor_checkpoints`, R3): the key
//!    `<agent>.<position>` holds the metadata and the zstd state (the vault's format:
//!    [`CheckpointMeta`] with the BLAKE3 of the uncompressed state), and the key `<agent>`
//!    the list of the agent's positions that have one. `put_checkpoint` updates the agent's
//!    cache at once and queues the upload **in the agent's writer queue**, behind the appends
//!    it covers and ahead of every later one: so a record that names a checkpoint (a rebase)
//!    is never stored before the checkpoint. A checkpoint larger than the server's max payload
//!    (1 MiB by default) fails the writer; the object store is the next step for large
//!    states. Sealing and verifying are the vault's own (`arbor_vault::seal_checkpoint`,
//!    `open_checkpoint`, added for this), so `latest_valid` skips a checkpoint that does not
//!    verify exactly as the vault does.
//! 4. **Fencing.** After a takeover, the former owner's next entry is refused by the stream;
//!    its writer halts and the [`Ack`] of every append queued from then on fails with
//!    [`JournalError::Fenced`], and every later `append` (and checkpoint) fails with it at
//!    once — the agent crashes on the next input instead of serving state the log does not
//!    hold. Any other failure of a publish (outcome unknown after the append timeout, too
//!    large) halts the writer the same way, as [`JournalError::Store`]; positions stay
//!    contiguous because nothing after a failure is published. Re-acquiring starts over from
//!    the log. Checkpoint writes are not fenced: a checkpoint only claims records that were
//!    acknowledged (the journal syncs first, and a halted writer refuses it), so a late one
//!    from a former owner is a true state of the log's prefix.
//! 5. **Registry.** The store has no vault (`vault()` is `None`): no registry, module store
//!    or lineage. `AgentSystem::recover` needs the registry's record, so a system on this
//!    store recovers with `AgentSystem::recover_as(spec)` (added to arbor-agent for this),
//!    the spec coming from the caller (next: the placement layer). Modules are added to each
//!    system (`add_module`), kept in memory.
//!
//! # Not yet
//!
//! Release: nothing is trimmed (`release_points` is empty), neither the stream nor the
//! in-memory cache of an acquired agent's records, which holds the agent's whole journal.
//! Checkpoints over the KV value limit. Renewing the lease and stepping down when it is lost
//! are the caller's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbor_agent::agent::{Ack, Pending, Records};
use arbor_agent::{JournalError, JournalStore};
use arbor_vault::{AgentId, Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint};
use async_nats::jetstream::{self, kv, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

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
    /// Replicas of the checkpoint bucket.
    pub checkpoint_replicas: usize,
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

/// A checkpoint as the bucket holds it.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: CheckpointMeta,
    #[serde(with = "serde_bytes")]
    compressed: Vec<u8>,
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
    /// Every record of the agent, in position order.
    records: Vec<(Lsn, Arc<[u8]>)>,
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
    node: String,
    config: StoreConfig,
    agents: Mutex<HashMap<String, Arc<Slot>>>,
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
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                bucket,
                node: node.to_string(),
                config,
                agents: Mutex::new(HashMap::new()),
            }),
        })
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
        let mut last = 0;
        let mut records = Vec::new();
        for entry in inner.log.read(agent, 1).await? {
            if entry.kind != EntryKind::Append || entry.records.is_empty() {
                continue;
            }
            let positions = |what| StoreError::Positions {
                agent: agent.to_string(),
                seq: entry.seq,
                what,
            };
            let first = entry.position.ok_or_else(|| positions("no position"))?;
            if first <= last {
                return Err(positions("a position at or before the one before it"));
            }
            for (i, record) in entry.records.iter().enumerate() {
                records.push((first + i as u64, Arc::<[u8]>::from(record.as_ref())));
            }
            last = first + entry.records.len() as u64 - 1;
        }
        let checkpoints = self.load_checkpoints(agent).await?;
        let (ops, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot {
            agent: agent.to_string(),
            state: Mutex::new(SlotState {
                last,
                records,
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
        let index = checkpoints.keys().copied().collect();
        tokio::spawn(run_writer(
            Arc::clone(&slot),
            writer,
            inner.bucket.clone(),
            index,
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

    /// Whether this store serves `agent`, and its writer has not halted.
    pub fn owns(&self, agent: &str) -> bool {
        self.slot(agent).is_ok_and(|slot| slot.failed().is_none())
    }

    async fn load_checkpoints(
        &self,
        agent: &str,
    ) -> Result<BTreeMap<Lsn, Arc<Stored>>, StoreError> {
        let failed = |source: async_nats::Error| StoreError::Checkpoints {
            agent: agent.to_string(),
            source,
        };
        let bucket = &self.inner.bucket;
        let key = encode_agent(agent);
        let mut checkpoints = BTreeMap::new();
        let Some(index) = latest(bucket, &key).await.map_err(failed)? else {
            return Ok(checkpoints);
        };
        let lsns: Vec<Lsn> = rmp_serde::from_slice(&index).map_err(|e| failed(e.into()))?;
        for lsn in lsns {
            let Some(value) = latest(bucket, &format!("{key}.{lsn}"))
                .await
                .map_err(failed)?
            else {
                tracing::warn!(agent, lsn, "checkpoint listed but missing");
                continue;
            };
            match rmp_serde::from_slice::<Stored>(&value) {
                Ok(stored) if stored.meta.lsn == lsn && stored.meta.agent.as_str() == agent => {
                    checkpoints.insert(lsn, Arc::new(stored));
                }
                _ => tracing::warn!(agent, lsn, "checkpoint unreadable, skipped"),
            }
        }
        Ok(checkpoints)
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
    fn flush_blocking(&self) {
        if self.flushed() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => {
                    tracing::warn!(
                        "journal store: cannot wait for queued writes on a current-thread \
                         runtime; their order still holds"
                    );
                }
                _ => tokio::task::block_in_place(|| handle.block_on(self.flush())),
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
            }
        }
    }
}

/// The value of `key` in `bucket`, read from the stream leader (a lagging replica's direct
/// get could miss the newest write; see `Leases::get`).
async fn latest(bucket: &kv::Store, key: &str) -> Result<Option<Bytes>, async_nats::Error> {
    let subject = format!("{}{}", bucket.prefix, key);
    match bucket
        .stream
        .get_last_raw_message_by_subject(&subject)
        .await
    {
        Ok(message) => {
            let deleted = message
                .headers
                .get("KV-Operation")
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            Ok((!deleted).then_some(message.payload))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

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
        LogError::Fenced { .. } => JournalError::Fenced {
            agent: agent.to_string(),
        },
        other => store_error(format!("append for agent `{agent}`"), other),
    }
}

/// One agent's writer: does its queue in order, halting at the first failure.
async fn run_writer(
    slot: Arc<Slot>,
    mut writer: AgentWriter,
    bucket: kv::Store,
    mut index: Vec<Lsn>,
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
                match writer.append_at(first, &records).await {
                    Ok(_) => {
                        slot.progress.send_modify(|p| p.acked = last);
                        Ok(())
                    }
                    Err(e) => Err(log_error(&agent, e)),
                }
            }
            Op::PutCheckpoint(stored) => {
                let lsn = stored.meta.lsn;
                let what = || format!("checkpoint {lsn} of agent `{agent}`");
                let value = rmp_serde::to_vec_named(&*stored).map_err(|e| store_error(what(), e));
                match value {
                    Err(e) => Err(e),
                    Ok(value) => match bucket.put(format!("{key}.{lsn}"), value.into()).await {
                        Err(e) => Err(store_error(what(), e)),
                        Ok(_) => {
                            if !index.contains(&lsn) {
                                index.push(lsn);
                                index.sort_unstable();
                            }
                            put_index(&bucket, &key, &index)
                                .await
                                .map_err(|e| store_error(what(), e))
                        }
                    },
                }
            }
            Op::DeleteCheckpoints(lsns) => {
                index.retain(|lsn| !lsns.contains(lsn));
                let what = || format!("deleting checkpoints of agent `{agent}`");
                let mut result = put_index(&bucket, &key, &index)
                    .await
                    .map_err(|e| store_error(what(), e));
                if result.is_ok() {
                    for lsn in lsns {
                        if let Err(e) = bucket.purge(format!("{key}.{lsn}")).await {
                            // Unlisted already: a leftover value is harmless.
                            tracing::warn!(agent, lsn, error = %e, "checkpoint not purged");
                        }
                    }
                    result = Ok(());
                }
                result
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

async fn put_index(bucket: &kv::Store, key: &str, index: &[Lsn]) -> Result<(), async_nats::Error> {
    let value = rmp_serde::to_vec(index)?;
    bucket.put(key, value.into()).await?;
    Ok(())
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
            state.records.push((first + i as u64, Arc::from(*record)));
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
        let start = state.records.partition_point(|(lsn, _)| *lsn < from);
        let records: Vec<_> = state.records[start..]
            .iter()
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
        self.flush_blocking();
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
        self.flush_blocking();
        Ok(())
    }
}
