//! Random sequences of append / batch append / reopen / truncate / read against an in-memory
//! model of the log: what the log returns must always be what the model says.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use arbor_wal::{Durability, Error, Lsn, Wal};
use proptest::prelude::*;
use support::small_segments;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    Reopen,
    /// Truncate before the LSN at this fraction (per mille) of the kept range.
    TruncateBefore(u16),
    /// Read from the LSN at this fraction of the kept range.
    ReadFrom(u16),
    Sync,
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 64..1024),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => payload().prop_map(Op::Append),
        3 => proptest::collection::vec(payload(), 1..12).prop_map(Op::AppendBatch),
        1 => Just(Op::Reopen),
        1 => (0u16..=1000).prop_map(Op::TruncateBefore),
        2 => (0u16..=1000).prop_map(Op::ReadFrom),
        1 => Just(Op::Sync),
    ]
}

/// The LSN at `per_mille` of the way through `first..=last + 1`.
fn pick(first: Lsn, last: Lsn, per_mille: u16) -> Lsn {
    first + (last + 1 - first) * u64::from(per_mille) / 1000
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(Durability::Never);
        let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
        let mut model: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
        let mut first_kept: Lsn = 1;
        for op in ops {
            let last = model.keys().next_back().copied().unwrap_or(0);
            match op {
                Op::Append(payload) => {
                    let appended = wal.append(&payload).unwrap();
                    prop_assert_eq!(appended.lsn(), last + 1);
                    model.insert(last + 1, payload);
                }
                Op::AppendBatch(payloads) => {
                    let appended = wal.append_batch(&payloads).unwrap();
                    prop_assert_eq!(appended.lsns(), last + 1..=last + payloads.len() as u64);
                    for (i, payload) in payloads.into_iter().enumerate() {
                        model.insert(last + 1 + i as u64, payload);
                    }
                }
                Op::Reopen => {
                    wal.close().unwrap();
                    wal = Wal::open(dir.path(), config.clone()).unwrap();
                    prop_assert!(wal.recovery().torn_tail.is_none());
                    prop_assert_eq!(wal.last_lsn(), last);
                    prop_assert_eq!(wal.first_lsn(), first_kept);
                }
                Op::TruncateBefore(per_mille) => {
                    let lsn = pick(first_kept, last, per_mille);
                    wal.truncate_before(lsn).unwrap();
                    let now_first = wal.first_lsn();
                    // Only whole segments before `lsn` go; the log never loses what is at or
                    // after it.
                    prop_assert!(now_first >= first_kept && now_first <= lsn.max(first_kept));
                    first_kept = now_first;
                    model.retain(|&k, _| k >= first_kept);
                }
                Op::ReadFrom(per_mille) => {
                    let from = pick(first_kept, last, per_mille);
                    let read: Vec<(Lsn, Vec<u8>)> = wal
                        .read_from(from)
                        .unwrap()
                        .map(|r| r.map(|r| (r.lsn, r.payload)))
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let expected: Vec<(Lsn, Vec<u8>)> =
                        model.range(from..).map(|(k, v)| (*k, v.clone())).collect();
                    prop_assert_eq!(read, expected);
                    if first_kept > 1 {
                        let is_truncated = matches!(wal.read_from(first_kept - 1), Err(Error::Truncated { .. }));
                        prop_assert!(is_truncated);
                    }
                }
                Op::Sync => {
                    prop_assert_eq!(wal.sync().unwrap(), last);
                    prop_assert_eq!(wal.durable_lsn(), last);
                }
            }
        }
        // verify covers what is written; under Never records may still be queued until a sync.
        wal.sync().unwrap();
        let report = wal.verify().unwrap();
        prop_assert!(report.is_clean());
        prop_assert_eq!(report.records, model.len() as u64);
    }
}
