//! Fault injection on closed logs: torn tails are cut, corruption anywhere else is refused with
//! the segment and offset named, and `repair` is the explicit way past it.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;

use arbor_wal::{Config, Defect, Durability, Error, ProblemKind, Wal, repair, verify};
use support::*;

/// One preallocated 16 KiB segment is enough for these tests' records.
fn one_segment() -> Config {
    Config::default()
        .segment_bytes(16 << 10)
        .max_record_bytes(1024)
        .durability(Durability::Never)
}

/// Where the records of a closed one-segment log of `n` records end.
fn used_len(n: u64) -> u64 {
    let (lsn, at) = *record_offsets(1, n).last().unwrap();
    at + (24 + payload_for(lsn).len() as u64).next_multiple_of(8)
}

#[test]
fn truncation_at_every_byte_offset_of_the_last_records_keeps_every_whole_record() {
    let source = tempfile::tempdir().unwrap();
    write_log(source.path(), 12, one_segment());
    let [segment] = segment_files(source.path()).try_into().unwrap();
    let original = fs::read(&segment).unwrap();
    let used = used_len(12);
    assert!(
        original[used as usize..].iter().all(|&b| b == 0),
        "preallocated space is zeros"
    );
    let offsets = record_offsets(1, 12);
    // Every byte offset of the last two records: every position inside a frame (CRC, length, LSN,
    // segment id, payload, padding) and both frame boundaries.
    let from = offsets[10].1;
    // Two shapes of a torn write: the file ends at the cut (a crash before preallocation), or
    // the preallocated zeros follow it (the bytes after the cut never reached the disk).
    for zero_filled in [false, true] {
        for cut in from..=used {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(segment.file_name().unwrap());
            let mut bytes = original[..cut as usize].to_vec();
            if zero_filled {
                bytes.resize(original.len(), 0);
            }
            fs::write(&path, &bytes).unwrap();
            // A record survives a cut at or after its end; zero filled, its padding reads back as
            // the zeros it was, so the end of its payload is enough.
            let frame_end = |lsn: u64, at: u64| {
                let end = at + 24 + payload_for(lsn).len() as u64;
                if zero_filled {
                    end
                } else {
                    end.next_multiple_of(8)
                }
            };
            let whole = offsets
                .iter()
                .filter(|(lsn, at)| frame_end(*lsn, *at) <= cut)
                .count() as u64;
            let partial_start = offsets
                .get(whole as usize)
                .map_or(cut, |(_, at)| *at)
                .min(cut);
            let torn = original[partial_start as usize..cut as usize]
                .iter()
                .any(|&b| b != 0);
            let wal = Wal::open(dir.path(), one_segment()).unwrap();
            assert_holds_exactly(&wal, whole);
            assert_eq!(
                wal.recovery().torn_tail.is_some(),
                torn,
                "cut at {cut}, zero filled {zero_filled}"
            );
            // The log continues after recovery, and the continuation survives another reopen
            // (checked on a sample of cuts: each reopen fdatasyncs, which adds up).
            if cut % 16 != 0 && torn {
                continue;
            }
            wal.append(&payload_for(whole + 1))
                .unwrap()
                .wait_blocking()
                .unwrap();
            wal.close().unwrap();
            let wal = Wal::open(dir.path(), one_segment()).unwrap();
            assert_holds_exactly(&wal, whole + 1);
            assert!(wal.recovery().torn_tail.is_none());
        }
    }
}

#[test]
fn zero_tail_is_clean_and_garbage_tail_is_cut_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 30, one_segment());
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let size = fs::metadata(&segment).unwrap().len();
    // Zeros after the records are preallocated space, even where the file was extended.
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    assert_holds_exactly(&wal, 30);
    assert!(wal.recovery().torn_tail.is_none());
    wal.close().unwrap();

    // Garbage after the last record is a torn tail: cut, kept aside, the log goes on.
    let used = used_len(30);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[used as usize..used as usize + garbage.len()].copy_from_slice(&garbage);
    fs::write(&segment, &bytes).unwrap();
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    assert_holds_exactly(&wal, 30);
    let torn = wal.recovery().torn_tail.clone().unwrap();
    assert_eq!(torn.offset, used);
    assert_eq!(torn.bytes, garbage.len() as u64);
    assert_eq!(
        fs::read(&torn.saved_to).unwrap(),
        garbage,
        "the cut bytes are kept"
    );
    let after = fs::read(&segment).unwrap();
    assert!(
        after.len() as u64 >= size,
        "the segment is preallocated again"
    );
    assert!(after[used as usize..].iter().all(|&b| b == 0));
    wal.append(&payload_for(31))
        .unwrap()
        .wait_blocking()
        .unwrap();
    wal.close().unwrap();
    assert_holds_exactly(&Wal::open(dir.path(), one_segment()).unwrap(), 31);
}

/// Flips one bit in the LSN field of the record that starts at `at` (the CRC covers it).
fn flip_bit_in_record(path: &std::path::Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize + 12] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn bit_flip_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, one_segment());
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let (_, at) = record_offsets(1, 10)[9];
    flip_bit_in_record(&segment, at);
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    assert_holds_exactly(&wal, 9);
    assert_eq!(wal.recovery().torn_tail.as_ref().unwrap().offset, at);
}

#[test]
fn bit_flip_in_a_middle_record_is_refused_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, one_segment());
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let (_, at) = record_offsets(1, 10)[4];
    flip_bit_in_record(&segment, at);
    let error = Wal::open(dir.path(), one_segment()).unwrap_err();
    assert!(error.is_corruption(), "{error}");
    assert_eq!(error.segment(), Some(segment.as_path()));
    assert_eq!(error.offset(), Some(at));
    assert!(
        matches!(
            error,
            Error::Corrupt {
                defect: Defect::ChecksumMismatch,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!("offset {at}")),
        "{error}"
    );

    // verify reports the same without changing anything; repair cuts there; open then works.
    let report = verify(dir.path(), &one_segment()).unwrap();
    assert!(report.needs_repair());
    assert_eq!(report.problems[0].offset, at);
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::Corrupt {
            valid_records_follow: true,
            ..
        }
    ));
    let repaired = repair(dir.path(), &one_segment()).unwrap();
    assert_eq!(repaired.cut_at, Some((segment.clone(), at)));
    assert_eq!(repaired.last_kept_lsn, 4);
    assert!(
        repaired.set_aside[0].exists(),
        "the damaged segment is kept as .broken"
    );
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    assert_holds_exactly(&wal, 4);
    assert_eq!(wal.append(b"after repair").unwrap().lsn(), 5);
}

#[test]
fn any_bad_record_in_an_earlier_segment_is_refused() {
    let config = small_segments(Durability::Never);
    for pick in ["first record", "last record"] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 60, config.clone());
        let segments = segment_files(dir.path());
        assert!(segments.len() >= 3, "small segments rotate");
        let victim = &segments[1];
        let first_lsn: u64 = victim
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let next_first: u64 = segments[2]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let offsets = record_offsets(first_lsn, next_first - first_lsn);
        let (_, at) = if pick == "first record" {
            offsets[0]
        } else {
            *offsets.last().unwrap()
        };
        flip_bit_in_record(victim, at);
        let error = Wal::open(dir.path(), config.clone()).unwrap_err();
        assert_eq!(error.segment(), Some(victim.as_path()), "{pick}: {error}");
        assert_eq!(error.offset(), Some(at), "{pick}: {error}");

        let repaired = repair(dir.path(), &config).unwrap();
        assert_eq!(
            repaired.last_kept_lsn,
            first_lsn + offsets.iter().position(|o| o.1 == at).unwrap() as u64 - 1
        );
        let wal = Wal::open(dir.path(), config.clone()).unwrap();
        assert_holds_exactly(&wal, repaired.last_kept_lsn);
    }
}

#[test]
fn bad_segment_header_or_a_missing_segment_is_refused() {
    let config = small_segments(Durability::Never);
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60, config.clone());
    let segments = segment_files(dir.path());
    let mut bytes = fs::read(&segments[1]).unwrap();
    bytes[3] ^= 1; // the magic
    fs::write(&segments[1], &bytes).unwrap();
    let error = Wal::open(dir.path(), config.clone()).unwrap_err();
    assert!(matches!(error, Error::BadSegment { .. }), "{error}");
    assert_eq!(error.segment(), Some(segments[1].as_path()));
    bytes[3] ^= 1;
    fs::write(&segments[1], &bytes).unwrap();
    Wal::open(dir.path(), config.clone())
        .unwrap()
        .close()
        .unwrap();

    fs::remove_file(&segments[2]).unwrap();
    let error = Wal::open(dir.path(), config.clone()).unwrap_err();
    assert!(matches!(error, Error::BadSegment { .. }), "{error}");
    assert_eq!(error.segment(), Some(segments[3].as_path()));
    assert!(
        error.to_string().contains("previous segment ends"),
        "{error}"
    );
}

#[test]
fn leftover_temporary_segment_is_removed_and_a_second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, one_segment());
    let temp = dir.path().join(".4.wal.tmp");
    fs::write(&temp, b"half a header").unwrap();
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    assert!(!temp.exists());
    assert_holds_exactly(&wal, 3);
    let error = Wal::open(dir.path(), one_segment()).unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    wal.close().unwrap();
    Wal::open(dir.path(), one_segment()).unwrap();
}

#[test]
fn oversized_record_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .max_record_bytes(1000)
        .durability(Durability::Always);
    let wal = Wal::open(dir.path(), config).unwrap();
    wal.append(b"small").unwrap().wait_blocking().unwrap();
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let size = fs::metadata(&segment).unwrap().len();
    let error = wal.append(&vec![7u8; 1001]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::RecordTooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{error}"
    );
    let error = wal
        .append_batch(&[vec![1u8; 10], vec![2u8; 1001]])
        .unwrap_err();
    assert!(matches!(error, Error::RecordTooLarge { .. }), "{error}");
    assert_eq!(wal.last_lsn(), 1, "no lsn was used");
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        size,
        "nothing was written"
    );
    assert!(matches!(
        wal.append_batch::<&[u8]>(&[]).unwrap_err(),
        Error::EmptyBatch
    ));
    assert_eq!(wal.append(b"next").unwrap().lsn(), 2);
}

#[test]
fn configuration_that_cannot_hold_a_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_bytes(1024).max_record_bytes(4096);
    assert!(matches!(
        Wal::open(dir.path(), config).unwrap_err(),
        Error::InvalidConfig(_)
    ));
}

#[test]
fn lowering_max_record_bytes_keeps_records_written_under_a_larger_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    let _first = wal.append(&[7u8; 2000]).unwrap();
    wal.append(&[8u8; 3000]).unwrap().wait_blocking().unwrap();
    wal.close().unwrap();
    let smaller = Config::default().max_record_bytes(1024);
    let wal = Wal::open(dir.path(), smaller).unwrap();
    assert!(
        wal.recovery().torn_tail.is_none(),
        "a valid record is not a torn tail"
    );
    let records = read_all(&wal);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload, vec![8u8; 3000]);
    // The lower limit applies to new appends.
    assert!(matches!(
        wal.append(&[9u8; 2000]).unwrap_err(),
        Error::RecordTooLarge { .. }
    ));
}

#[test]
fn close_releases_the_directory_while_handles_of_the_closed_log_live_on() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), one_segment()).unwrap();
    let appended = wal.append(b"kept").unwrap();
    let clone = wal.clone();
    let reader = wal.read_from(1).unwrap();
    wal.close().unwrap();
    assert!(appended.is_durable());
    assert!(matches!(
        clone.truncate_before(1).unwrap_err(),
        Error::Closed
    ));
    assert!(matches!(clone.sync().unwrap_err(), Error::Closed));
    let started = std::time::Instant::now();
    let reopened = Wal::open(dir.path(), one_segment()).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(400),
        "no wait for our own lock"
    );
    assert_eq!(read_all(&reopened)[0].payload, b"kept");
    drop((reader, clone, appended));
}

#[test]
fn a_second_cut_at_the_same_offset_keeps_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, one_segment());
    let [segment] = segment_files(dir.path()).try_into().unwrap();
    let used = used_len(5) as usize;
    let mut copies = Vec::new();
    for garbage in [[0xabu8; 100], [0xcdu8; 100]] {
        let mut bytes = fs::read(&segment).unwrap();
        bytes[used..used + 100].copy_from_slice(&garbage);
        fs::write(&segment, &bytes).unwrap();
        let wal = Wal::open(dir.path(), one_segment()).unwrap();
        assert_holds_exactly(&wal, 5);
        copies.push(wal.recovery().torn_tail.clone().unwrap().saved_to);
    }
    assert_ne!(copies[0], copies[1], "the second copy got a fresh name");
    assert_eq!(fs::read(&copies[0]).unwrap(), [0xabu8; 100]);
    assert_eq!(fs::read(&copies[1]).unwrap(), [0xcdu8; 100]);
}
