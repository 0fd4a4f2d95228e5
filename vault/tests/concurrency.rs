//! Many threads using one vault at once: checkpoints of many agents (and of one shared agent),
//! retention, module dedup and lineage numbering.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Barrier;

use arbor_vault::{LineageEvent, ModuleHash, ModuleInfo};
use support::{agent, open, put, state_for, state_of_len};

const THREADS: u64 = 16;
const AGENTS_PER_THREAD: u64 = 4;
const ROUNDS: u64 = 12;

#[test]
fn sixteen_threads_checkpointing_many_agents() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let vault = vault.clone();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for round in 1..=ROUNDS {
                    for a in 0..AGENTS_PER_THREAD {
                        let id = format!("t{t}-a{a}");
                        let lsn = round * 10;
                        put(&vault, &agent(&id), lsn, &state_for(&id, lsn));
                        if round % 4 == 0 {
                            vault.retain(&agent(&id), 3).unwrap();
                        }
                    }
                    // Every thread also checkpoints one shared agent at its own LSNs.
                    let lsn = round * THREADS + t;
                    put(
                        &vault,
                        &agent("shared"),
                        lsn,
                        &state_of_len("shared", lsn, 0, 2_000),
                    );
                    // Readers run alongside the writers.
                    let latest = vault.latest_valid(&agent("shared")).unwrap();
                    assert!(latest.checkpoint.is_some() && latest.skipped.is_empty());
                }
            });
        }
    });
    vault.flush().unwrap();
    drop(vault);

    let vault = open(dir.path());
    for t in 0..THREADS {
        for a in 0..AGENTS_PER_THREAD {
            let id = format!("t{t}-a{a}");
            let lsns: Vec<u64> = vault
                .list_checkpoints(&agent(&id))
                .unwrap()
                .iter()
                .map(|m| m.lsn)
                .collect();
            // Retained to 3 at round 12.
            assert_eq!(lsns, vec![100, 110, 120], "{id}");
            for lsn in lsns {
                let checkpoint = vault.get_checkpoint(&agent(&id), lsn).unwrap().unwrap();
                assert_eq!(checkpoint.state, state_for(&id, lsn), "{id}@{lsn}");
            }
        }
    }
    let shared: BTreeSet<u64> = vault
        .list_checkpoints(&agent("shared"))
        .unwrap()
        .iter()
        .map(|m| m.lsn)
        .collect();
    let expected: BTreeSet<u64> = (1..=ROUNDS)
        .flat_map(|r| (0..THREADS).map(move |t| r * THREADS + t))
        .collect();
    assert_eq!(shared, expected, "a concurrent put was lost");
    for lsn in [THREADS, ROUNDS * THREADS + THREADS - 1] {
        let state = vault
            .get_checkpoint(&agent("shared"), lsn)
            .unwrap()
            .unwrap()
            .state;
        assert_eq!(state, state_of_len("shared", lsn, 0, 2_000));
    }
    assert_eq!(
        vault.checkpoint_agents().unwrap().len() as u64,
        THREADS * AGENTS_PER_THREAD + 1
    );
}

#[test]
fn concurrent_module_puts_and_lineage_appends() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let wasm = b"\0asm\x01\0\0\0\0\x03\x02hi".to_vec();
    let info = ModuleInfo {
        name: "hi".into(),
        version_label: "1".into(),
        abi_version: 1,
        origin: "test".into(),
    };
    let barrier = Barrier::new(THREADS as usize);
    let added: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (vault, wasm, info, barrier) = (vault.clone(), &wasm, &info, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let added = vault.put_module(wasm, info).unwrap().added;
                    for i in 0..20u64 {
                        vault
                            .append_lineage(LineageEvent::Promoted {
                                agent: agent(&format!("t{t}")),
                                from: ModuleHash::of(b"a"),
                                to: ModuleHash::of(b"b"),
                                checkpoint_lsn: i,
                            })
                            .unwrap();
                    }
                    added
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        added.iter().filter(|&&a| a).count(),
        1,
        "exactly one put stores the module"
    );
    assert_eq!(vault.list_modules().unwrap().len(), 1);

    let lineage = vault.lineage().unwrap();
    let seqs: Vec<u64> = lineage.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=THREADS * 20).collect::<Vec<_>>(),
        "numbers without gaps"
    );
    for t in 0..THREADS {
        let lsns: Vec<u64> = vault
            .lineage_for(&agent(&format!("t{t}")))
            .unwrap()
            .iter()
            .map(|r| match r.event {
                LineageEvent::Promoted { checkpoint_lsn, .. } => checkpoint_lsn,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(
            lsns,
            (0..20).collect::<Vec<_>>(),
            "each thread's events in its order"
        );
    }
}
