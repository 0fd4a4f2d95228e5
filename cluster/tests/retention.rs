//! Retention on a real 3-server NATS cluster: the JetStream store releases what the journal's
//! release rule allows (the agent's records in memory and its entries in the stream, old
//! checkpoints and their blobs in the buckets), and whatever it trimmed, another node
//! recovering the agent gets the same state — also when the writer crashes mid-run. And a
//! checkpoint larger than a NATS message goes to the blob bucket and back.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arbor_agent::{
    AgentError, AgentRef, AgentSpec, AgentSystem, Behaviour, BehaviourError, CheckpointPolicy,
    Host, JournalError, JournalStore,
};
use arbor_cluster::{JetStreamStore, StoreConfig};
use arbor_protocols::counter::{CounterMsg, CounterReply};
use futures_util::TryStreamExt;
use support::{REPLICAS, claim_when_free, setup};

const LEASE: Duration = Duration::from_millis(800);
const CHECKPOINTS: &str = "arbor_checkpoints";
const BLOBS: &str = "arbor_checkpoint_blobs";

/// A state that only grows: each input appends that many MiB of deterministic, incompressible
/// bytes (0 adds nothing); the reply is the state's length and BLAKE3.
struct Blob(Vec<u8>);

impl Blob {
    fn grow(&mut self, bytes: usize) {
        // xorshift64, seeded by the length so far: the same inputs give the same state.
        let mut x = (self.0.len() as u64) ^ 0x9E37_79B9_7F4A_7C15;
        for _ in 0..bytes / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

impl Behaviour for Blob {
    fn handle(&mut self, input: &[u8], _host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let mib: usize =
            rmp_serde::from_slice(input).map_err(|e| BehaviourError::BadInput(e.to_string()))?;
        self.grow(mib << 20);
        let reply = (
            self.0.len() as u64,
            blake3::hash(&self.0).to_hex().to_string(),
        );
        rmp_serde::to_vec(&reply).map_err(|e| BehaviourError::BadInput(e.to_string()))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        Ok(self.0.clone())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError> {
        self.0 = state.to_vec();
        Ok(())
    }
    fn describe(&self) -> String {
        "blob".into()
    }
}

/// One node: its own connection, store and agent system (counter module, blob behaviour).
struct Node {
    store: JetStreamStore,
    system: AgentSystem,
    counter: arbor_vault::ModuleHash,
}

async fn node(client: &async_nats::Client, name: &str, policy: CheckpointPolicy) -> Node {
    let js = async_nats::jetstream::new(client.clone());
    let store = JetStreamStore::open(js, name, StoreConfig::default().replicas(REPLICAS))
        .await
        .expect("open the store");
    let system = AgentSystem::builder()
        .journal_store(Arc::new(store.clone()))
        .checkpoints(policy)
        .native("blob", || Box::new(Blob(Vec::new())))
        .build()
        .expect("system");
    let counter = system
        .add_module("counter", arbor_modules::COUNTER)
        .expect("module");
    Node {
        store,
        system,
        counter,
    }
}

/// Checkpoints every `every` inputs (never on time), keeps 2 and `history` inputs behind.
fn often(every: u64, history: u64) -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: every,
        every: Duration::from_secs(3600),
        keep: 2,
        history,
        ..CheckpointPolicy::default()
    }
}

async fn inc(agent: &AgentRef, by: i64) -> Result<(), AgentError> {
    agent
        .call_msg::<_, CounterReply>(&CounterMsg::Inc { by })
        .await
        .map(|_| ())
}

async fn count(agent: &AgentRef) -> i64 {
    let reply: CounterReply = agent.call_msg(&CounterMsg::Get).await.expect("get");
    reply.count
}

/// Whether `error` is (or wraps) the journal's Released.
fn is_released(error: &AgentError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if matches!(
            e.downcast_ref::<JournalError>(),
            Some(JournalError::Released { .. })
        ) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The subjects of `agent`'s keys in the checkpoint bucket's stream that hold any message
/// (its index and one per checkpoint; a deleted key's marker would count), from the
/// stream's subject state.
async fn checkpoint_subjects(client: &async_nats::Client, agent: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream(format!("KV_{CHECKPOINTS}"))
        .await
        .expect("the bucket's stream");
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("$KV.{CHECKPOINTS}.>"))
        .await
        .expect("subjects")
        .try_collect()
        .await
        .expect("subjects");
    let key = format!("$KV.{CHECKPOINTS}.{agent}");
    subjects
        .into_iter()
        .filter(|(s, n)| *n > 0 && (*s == key || s.starts_with(&format!("{key}."))))
        .map(|(s, _)| s)
        .collect()
}

/// Damages the newest checkpoint of `agent` in the bucket (its state's last byte), as a
/// disk or a bug could; returns its position. Recovery then falls back to the one before,
/// and replays from there: the records the release rule had to keep.
///
/// The index is first rewritten unchanged at the revision read (a compare-and-swap, as a new
/// owner's claim does): a dead writer's index write still in flight at the server then fails
/// instead of listing a newer, undamaged checkpoint after this one was chosen.
async fn damage_newest_checkpoint(client: &async_nats::Client, agent: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let bucket = js.get_key_value(CHECKPOINTS).await.expect("bucket");
    let (_epoch, lsns) = support::rewrite_index(client, agent, None).await;
    let newest = lsns.into_iter().max().expect("a checkpoint");
    let key = format!("{agent}.{newest}");
    let value = js
        .get_stream(format!("KV_{CHECKPOINTS}"))
        .await
        .expect("the bucket's stream")
        .get_last_raw_message_by_subject(&format!("$KV.{CHECKPOINTS}.{key}"))
        .await
        .expect("stored")
        .payload;
    // The value ends with the zstd state (inline: the counter's state is small).
    let mut damaged = value.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF;
    bucket.put(&key, damaged.into()).await.expect("put");
    newest
}

/// How many subjects under `filter` of the blob bucket's stream hold messages (from the
/// stream's subject state).
async fn blob_subjects(client: &async_nats::Client, filter: &str) -> usize {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream(format!("OBJ_{BLOBS}"))
        .await
        .expect("the blob bucket's stream");
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("$O.{BLOBS}.{filter}.>"))
        .await
        .expect("subjects")
        .try_collect()
        .await
        .expect("subjects");
    subjects.iter().filter(|(_, n)| *n > 0).count()
}

/// Whether the blob of `agent`'s checkpoint at `lsn` is in the blob bucket.
async fn has_blob(client: &async_nats::Client, agent: &str, lsn: u64) -> bool {
    let js = async_nats::jetstream::new(client.clone());
    let blobs = js.get_object_store(BLOBS).await.expect("blob bucket");
    match blobs.info(format!("{agent}.{lsn}")).await {
        Ok(info) => !info.deleted,
        Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => false,
        Err(e) => panic!("blob info: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_stays_bounded_and_recovers_the_same_state_elsewhere() {
    // Not a multiple of EVERY: some inputs follow the newest checkpoint.
    const INPUTS: i64 = 2010;
    const EVERY: u64 = 20;
    // The history's budget (one agent: all of it is its share). A record is at least 16
    // bytes, so this is at most 512 records.
    const BUDGET: u64 = 8 << 10;
    // What the release rule keeps: two checkpoint intervals behind the newest checkpoint and
    // one more whose release may still be queued (two records, an input and its outcome in
    // one stream entry, per input), and the history within its budget. Without release it
    // would be every input.
    const KEPT_RECORDS: u64 = 2 * 4 * EVERY + BUDGET / 16;
    let policy = CheckpointPolicy {
        history_max_bytes: BUDGET,
        ..often(EVERY, 50)
    };
    let s = setup(LEASE).await;
    let agent = "counter-long";

    let a = node(&s.client, "node-a", policy.clone()).await;
    let lease = s.leases.claim(agent, "node-a").await.expect("claim");
    a.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let counter = a
        .system
        .spawn(AgentSpec::wasm(agent, a.counter))
        .await
        .expect("spawn");
    let (mut most_cached, mut most_entries) = (0, 0);
    for i in 1..=INPUTS {
        inc(&counter, 1).await.expect("inc");
        if i % 100 == 0 {
            most_cached = most_cached.max(a.store.cached_records(agent).expect("served"));
            most_entries = most_entries.max(s.log.entry_count(agent).await.expect("count"));
        }
    }
    assert!(
        most_cached as u64 <= KEPT_RECORDS,
        "records in memory: {most_cached}"
    );
    assert!(
        most_entries <= KEPT_RECORDS / 2 + 2,
        "entries in the stream: {most_entries}"
    );
    // The released records are gone, and reading them says so.
    let refused = a.system.steps(agent, 1).err().expect("released");
    assert!(is_released(&refused), "{refused:?}");
    assert_eq!(count(&counter).await, INPUTS);
    let last = a.store.last_of(agent);
    // Node A dies: nothing is shut down, the lease is not renewed.
    drop(counter);
    drop(a);
    let damaged = damage_newest_checkpoint(&s.client, agent).await;

    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b", policy).await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    assert_eq!(b.store.last_of(agent), last, "numbering continues");
    let loaded = b.store.cached_records(agent).expect("served");
    assert!(
        loaded as u64 <= KEPT_RECORDS,
        "node b loaded {loaded} records"
    );
    let id = arbor_vault::AgentId::new(agent).unwrap();
    let kept = b.store.list_checkpoints(&id).expect("checkpoints");
    assert!(
        (2..=3).contains(&kept.len()),
        "two newest and the history's: {kept:?}"
    );
    let subjects = checkpoint_subjects(&s.client, agent).await;
    assert_eq!(
        subjects.len(),
        kept.len() + 1,
        "old checkpoints left the bucket: {subjects:?}"
    );
    let (counter, report) = b
        .system
        .recover_as(AgentSpec::wasm(agent, b.counter))
        .await
        .expect("recover from the checkpoint before the damaged one");
    assert_eq!(report.skipped_checkpoints, vec![damaged]);
    assert!(report.replayed > EVERY, "{report:?}");
    assert_eq!(count(&counter).await, INPUTS);
    inc(&counter, 1).await.expect("node b serves");
    assert_eq!(count(&counter).await, INPUTS + 1);
    b.system.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_crashing_mid_release_leaves_a_recoverable_log() {
    let s = setup(LEASE).await;
    let agent = "counter-crash";
    let lease = s.leases.claim(agent, "node-a").await.expect("claim");

    // Node A runs on a runtime of its own, with its own connection: shutting that runtime
    // down stops everything of A at whatever point it reached — appends, checkpoints,
    // deletions, purges — and closes its connection, as a crash would.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(AtomicI64::new(0));
    let urls = s.cluster.urls();
    let epoch = lease.epoch();
    let a_acked = Arc::clone(&acked);
    let a_run = a_runtime.spawn(async move {
        let client = arbor_cluster::harness::connect(&urls)
            .await
            .expect("connect");
        let a = node(&client, "node-a", often(3, 0)).await;
        a.store.acquire(agent, epoch).await.expect("acquire");
        let counter = a
            .system
            .spawn(AgentSpec::wasm(agent, a.counter))
            .await
            .expect("spawn");
        loop {
            inc(&counter, 1).await.expect("inc");
            a_acked.fetch_add(1, Ordering::SeqCst);
        }
    });
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(!a_run.is_finished(), "node a stopped early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The crash: A's threads stop at whatever point they reached (waited for, so that nothing
    // of A runs on after this; what A had sent may still reach the server).
    tokio::task::spawn_blocking(move || a_runtime.shutdown_timeout(Duration::from_secs(5)))
        .await
        .expect("stop node a");
    let acked_at_crash = acked.load(Ordering::SeqCst);
    // Whatever A's last release purged, the checkpoint before its newest still has every
    // record after it.
    let damaged = damage_newest_checkpoint(&s.client, agent).await;

    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b", often(3, 0)).await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    assert!(
        b.store.cached_records(agent).expect("served") < 100,
        "the log was trimmed while A ran"
    );
    let (counter, report) = b
        .system
        .recover_as(AgentSpec::wasm(agent, b.counter))
        .await
        .expect("recover from the checkpoint before the damaged one");
    assert_eq!(report.skipped_checkpoints, vec![damaged], "{report:?}");
    // Every acknowledged input is there; the one in flight at the crash may be too.
    let recovered = count(&counter).await;
    let acked = acked.load(Ordering::SeqCst);
    assert!(
        (acked_at_crash..=acked + 1).contains(&recovered),
        "recovered {recovered}, acknowledged {acked_at_crash}..{acked}"
    );
    if let Err(e) = inc(&counter, 1).await {
        panic!("node b serves: {e:?} ({:?})", b.store.cached_records(agent));
    }
    assert_eq!(count(&counter).await, recovered + 1);
    b.system.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_larger_than_a_message_goes_to_the_blob_bucket() {
    let s = setup(LEASE).await;
    let agent = "blob-1";
    let grow = |agent: AgentRef, mib: usize| async move {
        let reply: (u64, String) = agent.call_msg(&mib).await.expect("grow");
        reply
    };

    let a = node(&s.client, "node-a", often(10_000, 0)).await;
    let lease = s.leases.claim(agent, "node-a").await.expect("claim");
    a.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let blob = a
        .system
        .spawn(AgentSpec::native(agent, "blob"))
        .await
        .expect("spawn");
    grow(blob.clone(), 4).await;
    // 4 MiB that do not compress: four times the server's max payload.
    let at = blob.checkpoint().await.expect("a large checkpoint");
    // One input after it, replayed on recovery.
    let (len, hash) = grow(blob.clone(), 1).await;
    assert_eq!(len, 5 << 20);
    JournalStore::sync(&a.store).await.expect("sync");
    assert!(
        has_blob(&s.client, agent, at).await,
        "the state is in the blob bucket"
    );
    assert!(a.store.owns(agent), "the writer did not fail");
    drop(blob);
    drop(a);

    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b", often(10_000, 0)).await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let (blob, report) = b
        .system
        .recover_as(AgentSpec::native(agent, "blob"))
        .await
        .expect("recover");
    assert_eq!(
        report.checkpoint_lsn, at,
        "recovered from the large checkpoint"
    );
    assert_eq!(report.replayed, 1);
    assert_eq!(grow(blob.clone(), 0).await, (len, hash), "the same state");

    // Two newer checkpoints push it out of retention: its blob goes with it.
    for _ in 0..2 {
        grow(blob.clone(), 0).await;
        blob.checkpoint().await.expect("checkpoint");
    }
    JournalStore::sync(&b.store).await.expect("sync");
    assert!(
        !has_blob(&s.client, agent, at).await,
        "a deleted checkpoint's blob is deleted"
    );
    // Nothing of it is left in the bucket's stream, no deletion marker either: the two
    // checkpoints kept, both 5 MiB, are all there is (this test's agent is the bucket's only
    // user).
    let kept = b
        .store
        .list_checkpoints(&arbor_vault::AgentId::new(agent).unwrap())
        .expect("checkpoints");
    assert_eq!(kept.len(), 2);
    assert_eq!(blob_subjects(&s.client, "M").await, 2, "blob metadata");
    assert_eq!(blob_subjects(&s.client, "C").await, 2, "blob chunks");
    b.system.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owners_late_checkpoint_cannot_unlist_the_new_owners() {
    let s = setup(LEASE).await;
    let agent = "counter-late";

    let a = node(&s.client, "node-a", often(10_000, 0)).await;
    let lease = s.leases.claim(agent, "node-a").await.expect("claim");
    a.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let a_counter = a
        .system
        .spawn(AgentSpec::wasm(agent, a.counter))
        .await
        .expect("spawn");
    for _ in 0..3 {
        inc(&a_counter, 1).await.expect("inc");
    }

    // Node A stalls; node B takes over, serves, checkpoints twice and so releases what its
    // older checkpoint covers.
    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b", often(10_000, 0)).await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let (b_counter, _) = b
        .system
        .recover_as(AgentSpec::wasm(agent, b.counter))
        .await
        .expect("recover");
    for _ in 0..2 {
        for _ in 0..3 {
            inc(&b_counter, 1).await.expect("inc");
        }
        b_counter.checkpoint().await.expect("checkpoint");
    }
    JournalStore::sync(&b.store).await.expect("sync");
    assert_eq!(count(&b_counter).await, 9);

    // A wakes up and checkpoints what it has (it appends nothing, so its log writes are not
    // what stops it): the index it would list its checkpoint in is B's now.
    let _ = a_counter.checkpoint().await;
    JournalStore::sync(&a.store).await.expect("sync");
    assert!(
        !a.store.owns(agent),
        "a former owner's index write is fenced"
    );

    // B dies (no final checkpoint); a third node recovers B's state: B's checkpoints are
    // still the listed ones, and the records after them are in the stream.
    drop(b_counter);
    drop(b);
    let c_client = s.cluster.connect().await.expect("connect");
    let c = node(&c_client, "node-c", often(10_000, 0)).await;
    let lease = claim_when_free(&s.leases, agent, "node-c", Duration::from_secs(5)).await;
    c.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let (c_counter, _) = c
        .system
        .recover_as(AgentSpec::wasm(agent, c.counter))
        .await
        .expect("recover");
    assert_eq!(count(&c_counter).await, 9);
}
