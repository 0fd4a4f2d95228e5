//! Data directories written before an input and its outcome shared one append (issue 18.7):
//! the records are the same, only their grouping into appends changed, so the old layout —
//! each input appended and synced on its own, its outcome in a second append — recovers to
//! the same state, and an input whose outcome never made it is still not applied.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_agent::envelope::{Entry, Envelope, Kind, Status};
use arbor_agent::{AgentSpec, AgentSystem};
use support::{CounterMsg, Tally, count};

fn system(dir: &std::path::Path) -> AgentSystem {
    AgentSystem::builder()
        .journal(dir)
        .native("tally", || Box::new(Tally::default()))
        .build()
        .unwrap()
}

fn inc(by: i64) -> Vec<u8> {
    rmp_serde::to_vec_named(&CounterMsg::Inc { by }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_with_inputs_and_outcomes_appended_apart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let system = system(dir.path());
    let tally = system
        .spawn(AgentSpec::native("tally-1", "tally"))
        .await
        .unwrap();
    for by in 1..=3 {
        tally.call(inc(by)).await.unwrap();
    }
    system.shutdown().await.unwrap();
    drop((tally, system));

    // The previous writer: an Input append, then an Outcome append, per input.
    let wal = arbor_wal::Wal::open(dir.path().join("wal"), arbor_wal::Config::default()).unwrap();
    let envelope = |seq: u64, by: i64| Envelope {
        to: "tally-1".into(),
        from: None,
        seq,
        kind: Kind::Call,
        payload: inc(by),
    };
    for (seq, by) in [(4, 10), (5, 100)] {
        let input = wal.append(&Entry::Input(envelope(seq, by)).encode());
        input.unwrap().wait().await.unwrap();
        let outcome = Entry::Outcome {
            agent: "tally-1".into(),
            seq,
            status: Status::Applied,
            answers: Vec::new(),
        };
        wal.append(&outcome.encode()).unwrap().wait().await.unwrap();
    }
    // Its crash window: an input synced whose outcome never was (never acknowledged).
    let unacknowledged = wal.append(&Entry::Input(envelope(6, 1_000)).encode());
    unacknowledged.unwrap().wait().await.unwrap();
    drop(wal);

    let system = self::system(dir.path());
    let recovered = system.recover_all().await.unwrap();
    assert_eq!(recovered.len(), 1);
    let tally = system.lookup("tally-1").unwrap();
    assert_eq!(count(&tally).await, 1 + 2 + 3 + 10 + 100);
    // Numbering goes on after the last journaled input, and new inputs journal as now.
    tally.call(inc(7)).await.unwrap();
    system.shutdown().await.unwrap();
    drop((tally, system));
    let system = self::system(dir.path());
    system.recover_all().await.unwrap();
    let tally = system.lookup("tally-1").unwrap();
    assert_eq!(count(&tally).await, 1 + 2 + 3 + 10 + 100 + 7);
}
