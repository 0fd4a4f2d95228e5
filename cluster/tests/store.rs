//! arbor-agent's journal seam on a real 3-server NATS cluster: an `AgentSystem` on the
//! JetStream store journals into the R3 stream, another system recovers the agent from it,
//! and after a takeover the former owner's appends fail Fenced.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use arbor_agent::{AgentError, AgentSpec, AgentSystem, JournalError, JournalStore};
use arbor_cluster::{JetStreamStore, StoreConfig, SyncError};
use arbor_protocols::counter::{CounterMsg, CounterReply};
use support::{REPLICAS, claim_when_free, rewrite_index, setup};

const LEASE: Duration = Duration::from_millis(800);

/// One node: its own connection, store and agent system (with the counter module added).
struct Node {
    store: JetStreamStore,
    system: AgentSystem,
    counter: arbor_vault::ModuleHash,
}

async fn node(client: &async_nats::Client, name: &str) -> Node {
    let js = async_nats::jetstream::new(client.clone());
    let store = JetStreamStore::open(js, name, StoreConfig::default().replicas(REPLICAS))
        .await
        .expect("open the store");
    let system = AgentSystem::builder()
        .journal_store(Arc::new(store.clone()))
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

async fn inc(agent: &arbor_agent::AgentRef, by: i64) -> Result<(), AgentError> {
    agent
        .call_msg::<_, CounterReply>(&CounterMsg::Inc { by })
        .await
        .map(|_| ())
}

async fn count(agent: &arbor_agent::AgentRef) -> i64 {
    let reply: CounterReply = agent.call_msg(&CounterMsg::Get).await.expect("get");
    reply.count
}

/// Whether `error` is (or wraps) the journal's Fenced.
fn is_fenced(error: &AgentError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if matches!(
            e.downcast_ref::<JournalError>(),
            Some(JournalError::Fenced { .. })
        ) {
            return true;
        }
        current = e.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_recovers_on_another_system_from_the_stream() {
    let s = setup(LEASE).await;
    let agent = "counter-1";

    let a = node(&s.client, "node-a").await;
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
    for by in 1..=5 {
        inc(&counter, by).await.expect("inc");
    }
    // A checkpoint in the middle: recovery starts from it and replays what follows.
    let at = counter.checkpoint().await.expect("checkpoint");
    assert_eq!(at, 10, "5 inputs and their outcomes");
    for by in 6..=10 {
        inc(&counter, by).await.expect("inc");
    }
    assert_eq!(count(&counter).await, 55);
    let acked = a.store.last_of(agent);
    assert_eq!(acked, 22, "11 calls, an input and an outcome each");
    // Node A dies: nothing is shut down, the lease is not renewed.
    drop(counter);
    drop(a);

    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b").await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    assert_eq!(lease.epoch(), 2);
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    assert_eq!(
        b.store.last_of(agent),
        acked,
        "every acknowledged record is there"
    );
    let (counter, report) = b
        .system
        .recover_as(AgentSpec::wasm(agent, b.counter))
        .await
        .expect("recover");
    assert_eq!(report.checkpoint_lsn, 10);
    assert_eq!(
        report.replayed, 6,
        "5 incs and one get after the checkpoint"
    );
    assert_eq!(count(&counter).await, 55);
    inc(&counter, 45).await.expect("node b serves");
    assert_eq!(count(&counter).await, 100);
    b.system.shutdown().await.expect("shutdown");

    // The log holds two owners' entries, epochs never going back.
    let entries = s.log.read(agent, 1).await.expect("read checks epochs");
    assert!(entries.iter().any(|e| e.epoch == 1) && entries.iter().any(|e| e.epoch == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_owner_is_fenced_and_loses_nothing_acknowledged() {
    let s = setup(LEASE).await;
    let agent = "counter-2";

    let a = node(&s.client, "node-a").await;
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

    // Node A stalls past its lease; node B takes the agent over and serves it.
    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b").await;
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
    assert_eq!(count(&b_counter).await, 3);

    // A wakes up: its next append is refused by the stream; the caller gets an error.
    let late = inc(&a_counter, 100)
        .await
        .expect_err("a former owner must not append");
    assert!(is_fenced(&late), "{late:?}");
    assert!(!a.store.owns(agent));
    // And every later input fails at once (the agent crashed; a new one is refused too).
    match inc(&a_counter, 100).await {
        Err(_) => {}
        Ok(()) => panic!("a fenced agent answered"),
    }
    let refused = a.store.append(agent, &[b"late"]).expect_err("fenced");
    assert!(
        matches!(refused, JournalError::Fenced { .. }),
        "{refused:?}"
    );

    // Nothing unacknowledged was applied, nothing acknowledged lost: B sees 3, then its own.
    assert_eq!(count(&b_counter).await, 3);
    inc(&b_counter, 4).await.expect("b serves");
    assert_eq!(count(&b_counter).await, 7);
    drop(b_counter);
    b.system.shutdown().await.expect("shutdown");

    // A third system recovers B's state.
    let c_client = s.cluster.connect().await.expect("connect");
    let c = node(&c_client, "node-c").await;
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
    assert_eq!(count(&c_counter).await, 7);
}

// A checkpoint index write whose reply was lost (a timeout, a connection cut just after the
// server stored it) leaves the index one revision past what the writer knows; its next write
// is refused as if another owner had claimed the index. The writer used to believe it and
// halt as fenced; it now reads the index, finds its own epoch there, and writes on. An entry
// of another owner still fences it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_write_whose_reply_was_lost_does_not_fence_its_writer() {
    let s = setup(LEASE).await;
    let agent = "counter-lost-reply";
    let a = node(&s.client, "node-a").await;
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
    inc(&counter, 1).await.expect("inc");
    counter.checkpoint().await.expect("first checkpoint");

    // Our own write, landed without our writer learning its revision.
    let (held, _) = rewrite_index(&s.client, agent, None).await;
    assert_eq!(held, lease.epoch());
    inc(&counter, 2).await.expect("inc");
    counter
        .checkpoint()
        .await
        .expect("a checkpoint after our own write landed unseen");
    inc(&counter, 3).await.expect("the writer is not halted");
    assert_eq!(count(&counter).await, 6);

    // Another owner's claim of the index.
    rewrite_index(&s.client, agent, Some(lease.epoch() + 1)).await;
    inc(&counter, 4).await.expect("inc");
    // Queued behind the checkpoint, whose index write halts the writer.
    counter.checkpoint().await.expect("queued");
    let refused = inc(&counter, 5).await.expect_err("fenced by a newer owner");
    assert!(is_fenced(&refused), "{refused:?}");
    // Shutting down reports the fenced writer too.
    let _ = a.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_not_acquired_are_refused() {
    let s = setup(LEASE).await;
    let a = node(&s.client, "node-a").await;
    let refused = a
        .system
        .spawn(AgentSpec::wasm("nobody-owns-me", a.counter))
        .await
        .expect_err("not acquired");
    assert!(is_fenced(&refused), "{refused:?}");
}

/// Whether `error` is the store's current-thread refusal (the source of a
/// `JournalError::Store`, which holds it in an `Arc`).
fn cannot_wait(error: &JournalError) -> bool {
    match error {
        JournalError::Store { source, .. } => matches!(
            source.downcast_ref::<SyncError>(),
            Some(SyncError::CurrentThread)
        ),
        _ => false,
    }
}

// A current-thread runtime: the writers and the connection run on the test's own thread.
#[tokio::test]
async fn on_a_current_thread_runtime_blocking_syncs_refuse_and_async_ones_wait() {
    let s = setup(LEASE).await;
    let a = node(&s.client, "node-a").await;

    // Straight after an append its write is queued; the writer cannot run until this task
    // yields, so a blocking wait could never end: it is refused, typed.
    let lease = s.leases.claim("raw-1", "node-a").await.expect("claim");
    a.store
        .acquire("raw-1", lease.epoch())
        .await
        .expect("acquire");
    let ack = a.store.append("raw-1", &[b"record"]).expect("append");
    let refused = a.store.sync_blocking().expect_err("cannot wait here");
    assert!(cannot_wait(&refused), "{refused:?}");
    let refused = a.store.sync_checkpoints().expect_err("cannot wait here");
    assert!(cannot_wait(&refused), "{refused:?}");
    // The async sync waits; then there is nothing left to wait for.
    assert_eq!(JournalStore::sync(&a.store).await.expect("sync"), 1);
    assert!(ack.is_durable());
    assert_eq!(a.store.sync_blocking().expect("nothing queued"), 1);

    // An agent system shuts down on it: its final checkpoint is stored before `shutdown`
    // returns, and another node recovers from it with nothing to replay.
    let agent = "counter-ct";
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
    inc(&counter, 7).await.expect("inc");
    drop(counter);
    a.system
        .shutdown()
        .await
        .expect("shutdown waits for its writes");
    let last = a.store.last_of(agent);

    let b_client = s.cluster.connect().await.expect("connect");
    let b = node(&b_client, "node-b").await;
    let lease = claim_when_free(&s.leases, agent, "node-b", Duration::from_secs(5)).await;
    b.store
        .acquire(agent, lease.epoch())
        .await
        .expect("acquire");
    let (counter, report) = b
        .system
        .recover_as(AgentSpec::wasm(agent, b.counter))
        .await
        .expect("recover");
    assert_eq!(report.checkpoint_lsn, last, "the shutdown checkpoint");
    assert_eq!(report.replayed, 0);
    assert_eq!(count(&counter).await, 7);
}
