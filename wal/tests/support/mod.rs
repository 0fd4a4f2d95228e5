//! Helpers shared by the WAL's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use arbor_wal::{Config, Durability, Lsn, Record, Wal};

/// The payload the tests write as record `lsn`: its size varies with the LSN (0 to ~700 bytes)
/// and its content names it, so any record read back can be checked on its own.
pub fn payload_for(lsn: Lsn) -> Vec<u8> {
    let len = ((lsn * 7919) % 701) as usize;
    let tag = format!("<{lsn}>");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

/// A configuration with small segments so tests cross segment boundaries.
pub fn small_segments(durability: Durability) -> Config {
    Config::default()
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .durability(durability)
}

/// Opens a log in `dir`, appends records `1..=n` with `payload_for`, and closes it.
pub fn write_log(dir: &Path, n: u64, config: Config) {
    let wal = Wal::open(dir, config).unwrap();
    for lsn in 1..=n {
        let appended = wal.append(&payload_for(lsn)).unwrap();
        assert_eq!(appended.lsn(), lsn);
    }
    wal.close().unwrap();
}

/// Every record from the oldest on.
pub fn read_all(wal: &Wal) -> Vec<Record> {
    wal.read_from(wal.first_lsn())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Asserts that the log holds exactly records `1..=n` as written by `write_log`.
pub fn assert_holds_exactly(wal: &Wal, n: u64) {
    let records = read_all(wal);
    let lsns: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
    assert_eq!(
        lsns,
        (1..=n).collect::<Vec<_>>(),
        "the log must hold exactly 1..={n}"
    );
    for record in records {
        assert_eq!(
            record.payload,
            payload_for(record.lsn),
            "payload of lsn {}",
            record.lsn
        );
    }
    assert_eq!(wal.last_lsn(), n);
}

/// The segment files in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// Offsets at which each record of a segment written by `write_log` starts, by LSN, given the
/// segment's first LSN and record count (frames are 24-byte headers + payload, 8-byte aligned,
/// after a 40-byte segment header).
pub fn record_offsets(first_lsn: Lsn, count: u64) -> Vec<(Lsn, u64)> {
    let mut offset = 40u64;
    (first_lsn..first_lsn + count)
        .map(|lsn| {
            let at = offset;
            offset += (24 + payload_for(lsn).len() as u64).next_multiple_of(8);
            (lsn, at)
        })
        .collect()
}
