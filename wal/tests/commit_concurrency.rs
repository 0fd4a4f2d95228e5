//! Appenders in parallel: group commit shares fdatasyncs without telling anyone "durable" early,
//! every record lands once in LSN order with each appender's records in its own order, and
//! readers follow the log while it grows and is truncated.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbor_wal::{Config, Durability, Error, Wal};
use support::*;

/// Checks that the log holds `appenders × per_appender` records, LSNs contiguous from 1, and
/// each appender's records (payload "appender/seq") in its own order.
fn assert_each_appender_in_order(wal: &Wal, appenders: u64, per_appender: u64) {
    let records = read_all(wal);
    assert_eq!(records.len() as u64, appenders * per_appender);
    let mut next: HashMap<u64, u64> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.lsn, index as u64 + 1, "lsns are contiguous");
        let text = std::str::from_utf8(&record.payload).unwrap();
        let (appender, seq) = text.split_once('/').unwrap();
        let (appender, seq): (u64, u64) = (appender.parse().unwrap(), seq.parse().unwrap());
        let expected = next.entry(appender).or_insert(0);
        assert_eq!(
            seq, *expected,
            "appender {appender}'s records are in its order"
        );
        *expected += 1;
    }
    assert!(next.values().all(|&n| n == per_appender));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_async_appenders_share_fdatasyncs_and_keep_their_order() {
    let _watchdog = arbor_testkit::watchdog(
        "sixty_four_async_appenders_share_fdatasyncs_and_keep_their_order",
        std::time::Duration::from_secs(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(64 << 10)
        .max_record_bytes(1024)
        .durability(Durability::GroupCommit {
            max_delay: Duration::ZERO,
        });
    let wal = Wal::open(dir.path(), config).unwrap();
    const APPENDERS: u64 = 64;
    const EACH: u64 = 50;
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let wal = wal.clone();
            tokio::spawn(async move {
                for seq in 0..EACH {
                    let appended = wal.append(format!("{appender}/{seq}").as_bytes()).unwrap();
                    appended.wait().await.unwrap();
                    // Durable means an fdatasync that covers it has returned.
                    assert!(wal.durable_lsn() >= appended.lsn());
                    assert!(appended.is_durable());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records_written, APPENDERS * EACH);
    // 64 appenders each waiting for durability: fdatasyncs are shared, not one per record.
    assert!(
        stats.syncs * 4 <= stats.records_written,
        "group commit should share fdatasyncs: {} syncs for {} records",
        stats.syncs,
        stats.records_written
    );
    assert!(stats.segments_created > 0, "the run crossed segments");
    assert_each_appender_in_order(&wal, APPENDERS, EACH);
    wal.close().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    assert_each_appender_in_order(&wal, APPENDERS, EACH);
}

#[test]
fn threads_under_each_policy_land_every_record_once() {
    let _watchdog = arbor_testkit::watchdog(
        "threads_under_each_policy_land_every_record_once",
        std::time::Duration::from_secs(120),
    );
    for durability in [
        Durability::Never,
        Durability::Always,
        Durability::GroupCommit {
            max_delay: Duration::from_micros(300),
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), Config::default().durability(durability)).unwrap();
        const THREADS: u64 = 8;
        const EACH: u64 = 40;
        std::thread::scope(|scope| {
            for appender in 0..THREADS {
                let wal = wal.clone();
                scope.spawn(move || {
                    for seq in 0..EACH {
                        wal.append(format!("{appender}/{seq}").as_bytes())
                            .unwrap()
                            .wait_blocking()
                            .unwrap();
                    }
                });
            }
        });
        let stats = wal.stats();
        match durability {
            Durability::Never => assert_eq!(stats.syncs, 0, "Never does not fdatasync"),
            Durability::Always => assert_eq!(
                stats.syncs,
                THREADS * EACH,
                "Always: one fdatasync per append"
            ),
            Durability::GroupCommit { .. } => assert!(stats.syncs < THREADS * EACH, "{stats:?}"),
        }
        assert_each_appender_in_order(&wal, THREADS, EACH);
        // sync() covers Never's records too.
        wal.sync().unwrap();
        assert_eq!(wal.durable_lsn(), THREADS * EACH);
    }
}

#[test]
fn reader_follows_appends_across_segments_and_truncation() {
    let _watchdog = arbor_testkit::watchdog(
        "reader_follows_appends_across_segments_and_truncation",
        std::time::Duration::from_secs(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments(Durability::Never)).unwrap();
    const TOTAL: u64 = 3000;
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let writer = wal.clone();
        let done_writing = done.clone();
        scope.spawn(move || {
            for lsn in 1..=TOTAL {
                assert_eq!(writer.append(&payload_for(lsn)).unwrap().lsn(), lsn);
                if lsn % 500 == 0 {
                    // Releasing old segments while the reader may still be in them.
                    writer.truncate_before(lsn - 400).unwrap();
                }
            }
            done_writing.store(true, Ordering::Release);
        });
        let mut reader = wal.read_from(1).unwrap();
        let mut expected = 1;
        while expected <= TOTAL {
            match reader.next() {
                Some(Ok(record)) => {
                    assert_eq!(record.lsn, expected);
                    assert_eq!(record.payload, payload_for(expected));
                    expected += 1;
                }
                Some(Err(Error::Truncated { oldest, .. })) => {
                    // The reader fell behind a truncation: it may resume from the oldest kept LSN.
                    assert!(oldest > expected);
                    expected = oldest;
                    reader = wal.read_from(oldest).unwrap();
                }
                Some(Err(error)) => panic!(
                    "read failed at {expected}: {error}; segments {:?} last {} durable {}",
                    wal.segment_paths(),
                    wal.last_lsn(),
                    wal.durable_lsn()
                ),
                None => std::thread::yield_now(),
            }
        }
    });
    assert!(done.load(Ordering::Acquire));
    assert!(wal.first_lsn() > 1, "segments were released");
    assert!(matches!(
        wal.read_from(1).unwrap_err(),
        Error::Truncated { requested: 1, .. }
    ));
    let report = wal.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.last_lsn, Some(TOTAL));
    assert_eq!(report.first_lsn, Some(wal.first_lsn()));
}

#[test]
fn live_verify_does_not_mistake_records_being_written_for_a_torn_tail() {
    let _watchdog = arbor_testkit::watchdog(
        "live_verify_does_not_mistake_records_being_written_for_a_torn_tail",
        std::time::Duration::from_secs(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_segments(Durability::Never)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut lsn = 1;
            while !stop.load(Ordering::Relaxed) {
                let _queued = wal.append(&payload_for(lsn)).unwrap();
                lsn += 1;
            }
        });
        for _ in 0..50 {
            let report = wal.verify().unwrap();
            assert!(report.is_clean(), "{:?}", report.problems);
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn closed_log_refuses_appends_from_other_clones() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    let other = wal.clone();
    wal.close().unwrap();
    assert!(matches!(other.append(b"late").unwrap_err(), Error::Closed));
}
