//! Durability by crashing: a child process appends and reports what was acknowledged; the parent
//! SIGKILLs it at random moments, reopens the log, and checks that every acknowledged record is
//! present and intact and that nothing else is there.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use arbor_testkit::{ChildProcess, SplitMix64, child_role};
use arbor_wal::{Durability, Wal};
use support::*;

const DIR_VAR: &str = "ARBOR_WAL_KILL_DIR";

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_process_entry() {
    let Some(role) = child_role() else { return };
    let dir = std::env::var(DIR_VAR).unwrap();
    match role.as_str() {
        // One appender under Always: record `lsn` carries `payload_for(lsn)`.
        "always" => {
            let wal = Wal::open(&dir, small_segments(Durability::Always)).unwrap();
            println!("ready");
            loop {
                let lsn = wal.last_lsn() + 1;
                let appended = wal.append(&payload_for(lsn)).unwrap();
                assert_eq!(appended.lsn(), lsn);
                appended.wait_blocking().unwrap();
                println!("ack {lsn}");
            }
        }
        // Batches of 32 records under Never: acknowledged means written to the OS, which a
        // process crash keeps. Big multi-page writes make kills land mid-write (torn tails).
        "never" => {
            let wal = Wal::open(
                &dir,
                small_segments(Durability::Never).segment_bytes(256 << 10),
            )
            .unwrap();
            println!("ready");
            loop {
                let first = wal.last_lsn() + 1;
                let batch: Vec<Vec<u8>> = (first..first + 32).map(payload_for).collect();
                let appended = wal.append_batch(&batch).unwrap();
                assert_eq!(appended.lsns(), first..=first + 31);
                appended.wait_blocking().unwrap();
                println!("ack {}", appended.lsn());
            }
        }
        // Four threads under group commit: each record says which thread wrote it and its
        // sequence number in that thread.
        "group" => {
            let wal = Wal::open(
                &dir,
                small_segments(Durability::GroupCommit {
                    max_delay: Duration::ZERO,
                }),
            )
            .unwrap();
            let start: u64 = wal.last_lsn();
            println!("ready");
            let threads: Vec<_> = (0..4u64)
                .map(|thread| {
                    let wal = wal.clone();
                    std::thread::spawn(move || {
                        for seq in 0.. {
                            let payload = format!("{start}/{thread}/{seq}").into_bytes();
                            let appended = wal.append(&payload).unwrap();
                            appended.wait_blocking().unwrap();
                            println!("ack {} {start}/{thread}/{seq}", appended.lsn());
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Runs the child until it is ready, lets it work for a random while, kills it, and returns the
/// acknowledgement lines it printed.
fn run_and_kill(role: &str, dir: &std::path::Path, rng: &mut SplitMix64) -> Vec<String> {
    let mut child = ChildProcess::spawn(
        "child_process_entry",
        role,
        &[(DIR_VAR, dir.to_str().unwrap())],
    )
    .unwrap();
    let mut lines = Vec::new();
    loop {
        let line = child
            .next_line_timeout(Duration::from_secs(60))
            .expect("child never became ready");
        if line == "ready" {
            break;
        }
    }
    std::thread::sleep(Duration::from_micros(2_000 + rng.below(40_000)));
    lines.extend(child.kill());
    lines.retain(|l| l.starts_with("ack "));
    lines
}

#[test]
fn kill_9_under_always_keeps_exactly_the_acknowledged_prefix() {
    let _watchdog = arbor_testkit::watchdog(
        "kill_9_under_always_keeps_exactly_the_acknowledged_prefix",
        std::time::Duration::from_secs(120),
    );
    let seed = SplitMix64::seed_from_env();
    eprintln!("seed {seed} (ARBOR_TEST_SEED={seed} repeats this run)");
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0u64;
    let mut torn_tails = 0;
    for round in 0..50 {
        let acks = run_and_kill("always", dir.path(), &mut rng);
        for line in acks {
            let lsn: u64 = line["ack ".len()..].parse().unwrap();
            acknowledged = acknowledged.max(lsn);
        }
        let wal = Wal::open(dir.path(), small_segments(Durability::Always)).unwrap();
        torn_tails += usize::from(wal.recovery().torn_tail.is_some());
        let last = wal.last_lsn();
        // Every acknowledged record is there; at most one more (appended, written, not yet
        // acknowledged when the kill came) may be; each is exactly what was written.
        assert!(
            last >= acknowledged,
            "round {round} (seed {seed}): acknowledged {acknowledged} but log ends at {last}"
        );
        assert!(
            last <= acknowledged + 1,
            "round {round} (seed {seed}): log ends at {last}, acknowledged {acknowledged}"
        );
        assert_holds_exactly(&wal, last);
        assert!(wal.verify().unwrap().is_clean());
        acknowledged = last;
        wal.close().unwrap();
    }
    assert!(
        acknowledged > 50,
        "the children appended something ({acknowledged} records)"
    );
    eprintln!("{acknowledged} records over 50 kills, {torn_tails} torn tails cut");
}

#[test]
fn kill_9_under_never_keeps_every_record_written_to_the_os() {
    let _watchdog = arbor_testkit::watchdog(
        "kill_9_under_never_keeps_every_record_written_to_the_os",
        std::time::Duration::from_secs(120),
    );
    let seed = SplitMix64::seed_from_env();
    eprintln!("seed {seed} (ARBOR_TEST_SEED={seed} repeats this run)");
    let mut rng = SplitMix64::new(seed ^ 0x7f4a);
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(Durability::Never).segment_bytes(256 << 10);
    let mut acknowledged = 0u64;
    let mut torn_tails = 0;
    for round in 0..30 {
        for line in run_and_kill("never", dir.path(), &mut rng) {
            acknowledged = acknowledged.max(line["ack ".len()..].parse().unwrap());
        }
        let wal = Wal::open(dir.path(), config.clone()).unwrap();
        torn_tails += usize::from(wal.recovery().torn_tail.is_some());
        let last = wal.last_lsn();
        assert!(
            last >= acknowledged,
            "round {round} (seed {seed}): acknowledged {acknowledged} but log ends at {last}"
        );
        assert_holds_exactly(&wal, last);
        acknowledged = last;
        wal.close().unwrap();
    }
    eprintln!("{acknowledged} records over 30 kills, {torn_tails} torn tails cut");
}

#[test]
fn kill_9_under_group_commit_with_four_threads_loses_nothing_acknowledged() {
    let _watchdog = arbor_testkit::watchdog(
        "kill_9_under_group_commit_with_four_threads_loses_nothing_acknowledged",
        std::time::Duration::from_secs(120),
    );
    let seed = SplitMix64::seed_from_env();
    eprintln!("seed {seed} (ARBOR_TEST_SEED={seed} repeats this run)");
    let mut rng = SplitMix64::new(seed ^ 0x9e37);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let acks = run_and_kill("group", dir.path(), &mut rng);
        let wal = Wal::open(
            dir.path(),
            small_segments(Durability::GroupCommit {
                max_delay: Duration::ZERO,
            }),
        )
        .unwrap();
        let records: BTreeMap<u64, Vec<u8>> = read_all(&wal)
            .into_iter()
            .map(|r| (r.lsn, r.payload))
            .collect();
        for line in &acks {
            let mut parts = line["ack ".len()..].splitn(2, ' ');
            let lsn: u64 = parts.next().unwrap().parse().unwrap();
            let payload = parts.next().unwrap().as_bytes();
            assert_eq!(
                records.get(&lsn).map(Vec::as_slice),
                Some(payload),
                "round {round} (seed {seed}): acknowledged lsn {lsn} lost"
            );
        }
        // Nothing else: every record in the log is one a thread wrote, and each thread's records
        // of each run are in its own order without gaps.
        let mut next_seq: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for payload in records.values() {
            let text = std::str::from_utf8(payload).unwrap();
            let fields: Vec<u64> = text.split('/').map(|f| f.parse().unwrap()).collect();
            let [start, thread, seq] = fields[..] else {
                panic!("foreign record {text:?}")
            };
            let expected = next_seq.entry((start, thread)).or_insert(0);
            assert_eq!(
                seq, *expected,
                "round {round} (seed {seed}): thread {thread} out of order"
            );
            *expected += 1;
        }
        wal.close().unwrap();
    }
}
