//! Property test: put / delete / retain / reopen against an in-memory `BTreeMap` model, checking
//! listings and `latest_at_or_before` after every step. Agent ids prefix one another on purpose.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use support::{agent, open, put, state_of_len};

const AGENTS: [&str; 4] = ["a", "a-b", "ab", "a\u{1}"];

#[derive(Debug, Clone)]
enum Op {
    Put { agent: usize, lsn: u64 },
    Delete { agent: usize, lsn: u64 },
    Retain { agent: usize, keep: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    // LSNs around 255/256 catch byte-order mistakes.
    let lsn = prop_oneof![0u64..8, 250u64..262, Just(u64::MAX)];
    prop_oneof![
        6 => (0..AGENTS.len(), lsn.clone()).prop_map(|(agent, lsn)| Op::Put { agent, lsn }),
        2 => (0..AGENTS.len(), lsn).prop_map(|(agent, lsn)| Op::Delete { agent, lsn }),
        2 => (0..AGENTS.len(), 0usize..5).prop_map(|(agent, keep)| Op::Retain { agent, keep }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn vault_matches_a_btreemap_model(
        ops in proptest::collection::vec(op(), 1..40),
        probes in proptest::collection::vec(prop_oneof![0u64..10, 248u64..264, Just(u64::MAX)], 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut vault = open(dir.path());
        // (agent index, lsn) -> generation: a put over an existing LSN replaces the state.
        let mut model: BTreeMap<(usize, u64), u64> = BTreeMap::new();
        for (generation, op) in ops.iter().enumerate() {
            let generation = generation as u64;
            match *op {
                Op::Put { agent: a, lsn } => {
                    let state = state_of_len(AGENTS[a], lsn, generation, 64 + (lsn % 7) as usize * 100);
                    put(&vault, &agent(AGENTS[a]), lsn, &state);
                    model.insert((a, lsn), generation);
                }
                Op::Delete { agent: a, lsn } => {
                    let existed = vault.delete_checkpoint(&agent(AGENTS[a]), lsn).unwrap();
                    prop_assert_eq!(existed, model.remove(&(a, lsn)).is_some());
                }
                Op::Retain { agent: a, keep } => {
                    let mut lsns: Vec<u64> = model.range((a, 0)..=(a, u64::MAX)).map(|(k, _)| k.1).collect();
                    let keep = keep.max(2);
                    let doomed: Vec<u64> = if lsns.len() > keep {
                        lsns.drain(..lsns.len() - keep).collect()
                    } else {
                        Vec::new()
                    };
                    for lsn in &doomed {
                        model.remove(&(a, *lsn));
                    }
                    prop_assert_eq!(vault.retain(&agent(AGENTS[a]), keep).unwrap(), doomed);
                }
                Op::Reopen => {
                    vault.flush().unwrap();
                    drop(vault);
                    vault = open(dir.path());
                }
            }
            for (a, id) in AGENTS.iter().enumerate() {
                let expected: Vec<u64> = model.range((a, 0)..=(a, u64::MAX)).map(|(k, _)| k.1).collect();
                let listed: Vec<u64> = vault.list_checkpoints(&agent(id)).unwrap().iter().map(|m| m.lsn).collect();
                prop_assert_eq!(&listed, &expected, "agent {:?} after {:?}", id, op);
                for &probe in &probes {
                    let want = model.range((a, 0)..=(a, probe)).next_back().map(|(k, g)| (k.1, *g));
                    let got = vault.latest_at_or_before(&agent(id), probe).unwrap();
                    match (want, got) {
                        (None, None) => {}
                        (Some((lsn, generation)), Some(c)) => {
                            prop_assert_eq!(c.meta.lsn, lsn);
                            let state = state_of_len(id, lsn, generation, 64 + (lsn % 7) as usize * 100);
                            prop_assert_eq!(c.state, state);
                        }
                        (want, got) => prop_assert!(false, "{id:?} at {probe}: want {want:?}, got {:?}", got.map(|c| c.meta.lsn)),
                    }
                }
            }
        }
    }
}
