//! The journal against a real 3-server NATS cluster under a server's death: appends and reads
//! keep working and nothing acknowledged is lost. (The cost of an append is for `benches/`, not a
//! test: issue 19's cluster bench.)

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbor_cluster::JournalLog;
use support::setup;

const AGENTS: usize = 4;

/// Appends `i` as little-endian bytes for `agent` until told to stop; returns every
/// (index, sequence) acknowledged.
async fn writer(
    log: JournalLog,
    agent: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(u64, u64)> {
    let mut writer = log.take_over(&agent, 1, "node-a").await.expect("take over");
    let mut acked = Vec::new();
    for i in 0u64.. {
        if *stop.borrow() {
            break;
        }
        match writer.append(&[&i.to_le_bytes()]).await {
            Ok(at) => acked.push((i, at.seq)),
            Err(e) => panic!("{agent}: append {i} failed: {e}"),
        }
    }
    acked
}

/// The stream's leader, as an index into the cluster's servers (`n1` is 0).
async fn stream_leader(client: &async_nats::Client, stream: &str) -> Option<usize> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    let leader = info.cluster.as_ref()?.leader.clone()?;
    leader
        .strip_prefix('n')?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// A fault done to the stream leader mid-traffic.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, then a restart on the same store.
    Kill,
    /// SIGSTOP, then SIGCONT: the server keeps its sockets but answers nothing meanwhile.
    Pause,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_server_loses_nothing_acknowledged() {
    appends_survive(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_server_loses_nothing_acknowledged() {
    appends_survive(Fault::Pause).await;
}

async fn appends_survive(fault: Fault) {
    let mut s = setup(Duration::from_secs(5)).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..AGENTS)
        .map(|a| tokio::spawn(writer(s.log.clone(), format!("agent-{a}"), stop.clone())))
        .collect();

    // Hit the stream leader (the worst server to lose) mid-traffic, then bring it back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = stream_leader(&s.client, &s.log.config().stream)
        .await
        .unwrap_or(0);
    let hit_at = Instant::now();
    match fault {
        Fault::Kill => {
            s.cluster.kill(victim);
            tokio::time::sleep(Duration::from_secs(3)).await;
            s.cluster.restart(victim).await.expect("restart");
        }
        Fault::Pause => {
            s.cluster.pause(victim).expect("SIGSTOP");
            tokio::time::sleep(Duration::from_secs(3)).await;
            s.cluster.resume(victim).expect("SIGCONT");
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop_tx.send(true);

    let mut acked: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (a, task) in tasks.into_iter().enumerate() {
        acked.insert(format!("agent-{a}"), task.await.expect("writer task"));
    }
    println!(
        "{fault:?} n{} {:?} ago; acknowledged per agent: {:?}",
        victim + 1,
        hit_at.elapsed(),
        acked.values().map(Vec::len).collect::<Vec<_>>()
    );

    // Read through a fresh connection: every acknowledged append, exactly once, in order.
    let reader = s.cluster.connect().await.expect("connect");
    let (_, log) = support::open(&reader, Duration::from_secs(5)).await;
    for (agent, acked) in &acked {
        assert!(acked.len() > 10, "{agent} kept appending: {}", acked.len());
        let entries = log.read(agent, 1).await.expect("read");
        let appends: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.kind == arbor_cluster::EntryKind::Append)
            .map(|e| {
                let bytes: [u8; 8] = e.records[0].as_ref().try_into().expect("8 bytes");
                (u64::from_le_bytes(bytes), e.seq)
            })
            .collect();
        assert_eq!(
            &appends, acked,
            "{agent}: the log is exactly what was acknowledged"
        );
    }
}
