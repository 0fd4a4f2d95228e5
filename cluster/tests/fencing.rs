//! Fencing against a real 3-server NATS cluster: once a new owner has taken over, a former
//! owner's appends are refused by the stream and never stored.

mod support;

use std::time::Duration;

use arbor_cluster::harness::signal_process;
use arbor_cluster::{EntryKind, JournalLog, LogError};
use arbor_testkit::{ChildProcess, child_role};
use support::{claim_when_free, setup};

/// Every entry's epoch is at least the one before, and no entry of an epoch below a takeover
/// marker's comes after that marker.
async fn check_epochs(log: &JournalLog, agent: &str) -> Vec<arbor_cluster::Entry> {
    let entries = log.read(agent, 1).await.expect("read checks epochs");
    let mut floor = 0;
    for e in &entries {
        assert!(
            e.epoch >= floor,
            "entry {} epoch {} after {floor}",
            e.seq,
            e.epoch
        );
        if e.kind == EntryKind::TakeOver {
            floor = e.epoch;
        }
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_writer_is_fenced_after_takeover() {
    let s = setup(Duration::from_millis(800)).await;
    let agent = "fenced.agent";
    // Node B runs on its own connection, as another host would.
    let b_client = s.cluster.connect().await.expect("connect");
    let (b_leases, b_log) = support::open(&b_client, Duration::from_millis(800)).await;

    let a_lease = s.leases.claim(agent, "node-a").await.expect("claim");
    let mut a = s
        .log
        .take_over(agent, a_lease.epoch(), "node-a")
        .await
        .expect("take over");
    let mut a_acked = Vec::new();
    for i in 0..3u8 {
        a_acked.push(a.append(&[&[i], b"outcome"]).await.expect("append").seq);
    }

    // A pauses (stops renewing); B claims after expiry and fences the log.
    let b_lease = claim_when_free(&b_leases, agent, "node-b", Duration::from_secs(5)).await;
    assert_eq!(b_lease.epoch(), 2);
    let mut b = b_log
        .take_over(agent, b_lease.epoch(), "node-b")
        .await
        .expect("take over");
    b.append(&[b"b-1"]).await.expect("b appends");

    // A wakes up and tries to append: refused, and refused again without publishing.
    for _ in 0..2 {
        match a.append(&[b"late"]).await {
            Err(LogError::Fenced { epoch: 1, .. }) => {}
            other => panic!("expected Fenced, got {other:?}"),
        }
    }
    // A cannot re-fence with its old epoch either: the log holds a later one.
    match s.log.take_over(agent, a_lease.epoch(), "node-a").await {
        Err(LogError::Fenced { found: Some(2), .. }) => {}
        other => panic!("expected Fenced by epoch 2, got {other:?}"),
    }

    let entries = check_epochs(&s.log, agent).await;
    assert!(
        entries
            .iter()
            .all(|e| e.records.iter().all(|r| r.as_ref() != b"late")),
        "a fenced append never lands: {entries:?}"
    );
    for seq in &a_acked {
        let e = entries
            .iter()
            .find(|e| e.seq == *seq)
            .expect("acknowledged append kept");
        assert_eq!((e.epoch, e.records.len()), (1, 2));
    }
    let kinds: Vec<_> = entries.iter().map(|e| (e.kind.clone(), e.epoch)).collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::TakeOver, 1),
            (EntryKind::Append, 1),
            (EntryKind::Append, 1),
            (EntryKind::Append, 1),
            (EntryKind::TakeOver, 2),
            (EntryKind::Append, 2),
        ]
    );
    assert_eq!(
        s.log.last(agent).await.expect("last").map(|e| e.epoch),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_writers_cannot_both_start_an_empty_log() {
    let s = setup(Duration::from_secs(5)).await;
    // Two writers that both read "empty" expect sequence 0; only one marker can land there.
    let mut w1 = s.log.take_over("fresh", 1, "node-a").await.expect("first");
    let w2 = s
        .log
        .take_over("fresh", 2, "node-b")
        .await
        .expect("second fences the first");
    assert!(w2.last_seq() > w1.last_seq());
    assert!(matches!(
        w1.append(&[b"x"]).await,
        Err(LogError::Fenced { .. })
    ));
    check_epochs(&s.log, "fresh").await;
}

const PAUSED_AGENT: &str = "paused-owner";

/// The child side of `paused_owner_cannot_append_after_resume`: claims the agent, fences the
/// log, then appends every 50 ms and renews its lease after each append, printing each
/// acknowledgement, until refused. It appends even after a failed renew, as a process paused
/// between its lease check and its append would: the log alone must refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_child() {
    let Some(_role) = child_role() else { return };
    let urls: Vec<String> = std::env::var("ARBOR_NATS_URLS")
        .expect("urls")
        .split(',')
        .map(str::to_string)
        .collect();
    let client = arbor_cluster::harness::connect(&urls)
        .await
        .expect("connect");
    let (leases, log) = support::open(&client, Duration::from_millis(1000)).await;
    let mut lease = leases.claim(PAUSED_AGENT, "child").await.expect("claim");
    let mut writer = log
        .take_over(PAUSED_AGENT, lease.epoch(), "child")
        .await
        .expect("fence");
    println!("epoch {}", lease.epoch());
    for i in 0u64.. {
        match writer.append(&[&i.to_le_bytes()]).await {
            Ok(at) => {
                println!("ack {i} {}", at.seq);
                if let Err(e) = leases.renew(&mut lease).await {
                    println!("renew failed: {e}");
                }
            }
            Err(LogError::Fenced { .. }) => {
                println!("fenced {i}");
                return;
            }
            Err(e) => {
                println!("error {e}");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_cannot_append_after_resume() {
    if child_role().is_some() {
        return;
    }
    let s = setup(Duration::from_millis(1000)).await;
    let urls = s.cluster.urls().join(",");
    let mut child = ChildProcess::spawn(
        "paused_owner_child",
        "owner",
        &[("ARBOR_NATS_URLS", urls.as_str())],
    )
    .expect("spawn child");
    let mut lines = Vec::new();
    let wait = Duration::from_secs(20);
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("ack "))
        .count()
        < 5
    {
        let line = child
            .next_line_timeout(wait)
            .expect("child acknowledges appends");
        lines.push(line);
    }

    // SIGSTOP the owner past its lease; take over; SIGCONT it.
    signal_process(child.id(), "-STOP").expect("SIGSTOP");
    let lease = claim_when_free(&s.leases, PAUSED_AGENT, "parent", Duration::from_secs(10)).await;
    assert_eq!(lease.epoch(), 2);
    let mut writer = s
        .log
        .take_over(PAUSED_AGENT, 2, "parent")
        .await
        .expect("take over");
    let marker = writer.last_seq();
    writer
        .append(&[b"parent"])
        .await
        .expect("new owner appends");
    signal_process(child.id(), "-CONT").expect("SIGCONT");

    loop {
        let line = child
            .next_line_timeout(wait)
            .expect("child reports its end");
        let done = line.starts_with("fenced") || line.starts_with("error");
        lines.push(line);
        if done {
            break;
        }
    }
    let (ok, rest) = child.wait().expect("child exits");
    assert!(ok, "child failed: {lines:?} {rest:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("fenced"),
        "the resumed owner is refused: {lines:?}"
    );

    let entries = check_epochs(&s.log, PAUSED_AGENT).await;
    let after_marker: Vec<_> = entries.iter().filter(|e| e.seq > marker).collect();
    assert!(
        after_marker.iter().all(|e| e.epoch == 2),
        "nothing of epoch 1 after the takeover: {after_marker:?}"
    );
    // Every append the child saw acknowledged is in the log, before the marker, at epoch 1.
    for line in lines.iter().filter(|l| l.starts_with("ack ")) {
        let mut parts = line.split(' ').skip(1);
        let i: u64 = parts.next().and_then(|p| p.parse().ok()).expect("index");
        let seq: u64 = parts.next().and_then(|p| p.parse().ok()).expect("seq");
        let entry = entries
            .iter()
            .find(|e| e.seq == seq)
            .expect("acknowledged entry kept");
        assert!(seq < marker);
        assert_eq!(entry.epoch, 1);
        assert_eq!(
            entry.records,
            vec![bytes::Bytes::copy_from_slice(&i.to_le_bytes())]
        );
    }
}
