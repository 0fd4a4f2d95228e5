//! A full disk is an error to the appender and leaves the log consistent and reopenable. Runs on
//! a real tmpfs of a few hundred KiB (mounting needs root, as CI and the development machines
//! have).
#![allow(clippy::unwrap_used)]

mod support;

use arbor_testkit::{Tmpfs, is_tmpfs};
use arbor_wal::{Config, Durability, Error, Wal};
use support::*;

#[test]
fn enospc_fails_the_append_stops_the_log_and_reopen_keeps_every_acknowledged_record() {
    let _watchdog = arbor_testkit::watchdog(
        "enospc_fails_the_append_stops_the_log_and_reopen_keeps_every_acknowledged_record",
        std::time::Duration::from_secs(120),
    );
    let disk = Tmpfs::mount(256 << 10).expect("full-disk test needs a tmpfs");
    assert!(is_tmpfs(disk.path()));
    let dir = disk.path().join("wal");
    let config = Config::default()
        .segment_bytes(64 << 10)
        .max_record_bytes(1024)
        .durability(Durability::Always);
    let wal = Wal::open(&dir, config.clone()).unwrap();
    let mut acknowledged = 0;
    let error = loop {
        let lsn = acknowledged + 1;
        match wal
            .append(&payload_for(lsn))
            .and_then(|a| a.wait_blocking())
        {
            Ok(()) => acknowledged = lsn,
            Err(error) => break error,
        }
        assert!(acknowledged < 10_000, "a 256 KiB disk must fill up");
    };
    assert!(error.is_storage_full(), "{error}");
    assert!(
        acknowledged > 100,
        "records fit before the disk filled ({acknowledged})"
    );
    // The log refuses everything after the failure, saying why.
    let later = wal.append(b"more").unwrap_err();
    assert!(matches!(later, Error::Failed { .. }), "{later}");
    assert!(later.is_storage_full(), "{later}");
    let _ = wal.close();

    // Reopen on the same full disk: every acknowledged record is there, intact; a partial record
    // left by the failed write is cut as a torn tail.
    let wal = Wal::open(&dir, config.clone()).unwrap();
    let last = wal.last_lsn();
    assert!(
        last >= acknowledged && last <= acknowledged + 1,
        "acknowledged {acknowledged}, found {last}"
    );
    assert_holds_exactly(&wal, last);
    let report = wal.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    // Space freed by releasing old segments lets the log go on.
    wal.truncate_before(last).unwrap();
    wal.append(&payload_for(last + 1))
        .unwrap()
        .wait_blocking()
        .unwrap();
    assert_eq!(wal.last_lsn(), last + 1);
}

#[test]
fn concurrent_appenders_on_a_full_disk_never_see_a_lost_record_acknowledged() {
    let _watchdog = arbor_testkit::watchdog(
        "concurrent_appenders_on_a_full_disk_never_see_a_lost_record_acknowledged",
        std::time::Duration::from_secs(120),
    );
    for durability in [
        Durability::Always,
        Durability::GroupCommit {
            max_delay: std::time::Duration::ZERO,
        },
    ] {
        let disk = Tmpfs::mount(192 << 10).expect("full-disk test needs a tmpfs");
        let dir = disk.path().join("wal");
        let config = Config::default()
            .segment_bytes(32 << 10)
            .max_record_bytes(1024)
            .durability(durability);
        let wal = Wal::open(&dir, config.clone()).unwrap();
        // Eight threads append until the disk is full; each keeps what it was told is durable.
        let acknowledged: Vec<(u64, Vec<u8>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8u8)
                .map(|thread| {
                    let wal = wal.clone();
                    scope.spawn(move || {
                        let mut acked = Vec::new();
                        for seq in 0u32.. {
                            let payload: Vec<u8> = [thread]
                                .iter()
                                .copied()
                                .chain(seq.to_le_bytes())
                                .cycle()
                                .take(300)
                                .collect();
                            match wal
                                .append(&payload)
                                .and_then(|a| a.wait_blocking().map(|()| a.lsn()))
                            {
                                Ok(lsn) => acked.push((lsn, payload)),
                                Err(error) => {
                                    assert!(error.is_storage_full(), "{error}");
                                    break;
                                }
                            }
                        }
                        acked
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        assert!(!acknowledged.is_empty());
        let _ = wal.close();
        let wal = Wal::open(&dir, config).unwrap();
        let records: std::collections::BTreeMap<u64, Vec<u8>> = read_all(&wal)
            .into_iter()
            .map(|r| (r.lsn, r.payload))
            .collect();
        for (lsn, payload) in &acknowledged {
            assert_eq!(
                records.get(lsn),
                Some(payload),
                "{durability:?}: acknowledged lsn {lsn} lost"
            );
        }
    }
}
