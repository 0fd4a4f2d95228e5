//! Kill test: a child process writes checkpoints in a loop (put, retain 3, flush, then report)
//! and is SIGKILLed at random moments. After every kill the vault must hold every reported
//! checkpoint that retention could not have removed, readable, verified and equal to its
//! deterministic content, and nothing half-written: every metadata value has its state and every
//! state its metadata.
//!
//! Reproduce a failure with the seed it prints: `ARBOR_TEST_SEED=<seed> cargo test -p
//! arbor-vault --test kill_checkpoints`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use arbor_testkit::{ChildProcess, SplitMix64, child_role};
use support::{agent, checkpoint_key, open, put, state_for};

const DIR_VAR: &str = "ARBOR_VAULT_KILL_DIR";
/// Prefix-related ids on purpose.
const AGENTS: [&str; 4] = ["kv", "kv-1", "kv-10", "ledger"];
const KEEP: usize = 3;
const ROUNDS: usize = 48;

/// The child: only does anything when started by the kill test.
#[test]
fn child_process_entry() {
    let Some(role) = child_role() else { return };
    assert_eq!(role, "checkpointer");
    let dir = std::env::var(DIR_VAR).unwrap();
    let vault = open(Path::new(&dir));
    // Continue after whatever survived the previous kill.
    let mut next: Vec<u64> = AGENTS
        .iter()
        .map(|a| {
            vault
                .latest_meta(&agent(a))
                .unwrap()
                .map_or(1, |m| m.lsn + 1)
        })
        .collect();
    println!("ready");
    for i in (0..AGENTS.len()).cycle() {
        let id = agent(AGENTS[i]);
        let lsn = next[i];
        put(&vault, &id, lsn, &state_for(AGENTS[i], lsn));
        vault.retain(&id, KEEP).unwrap();
        vault.flush().unwrap();
        println!("stored {} {lsn}", AGENTS[i]);
        next[i] += 1;
    }
}

/// Records a `stored <agent> <lsn>` line. The test harness may print its own text before the
/// child's first line (`test child_process_entry ... ready`), so lines are matched by their end.
fn record(line: &str, reported: &mut BTreeMap<String, BTreeSet<u64>>) {
    let Some(at) = line.find("stored ") else {
        return;
    };
    let mut words = line[at..].split(' ').skip(1);
    let (Some(agent), Some(lsn)) = (words.next(), words.next()) else {
        panic!("malformed line {line:?}");
    };
    reported
        .entry(agent.to_owned())
        .or_default()
        .insert(lsn.parse().unwrap());
}

/// Checks the vault after a kill; then counts every checkpoint found as reported, since it has
/// now survived a crash and been verified (the next child may build on it, and retention in the
/// next round counts it).
fn verify(dir: &Path, reported: &mut BTreeMap<String, BTreeSet<u64>>, seed: u64, round: usize) {
    let ctx = format!("seed {seed} round {round}");
    {
        let vault = open(dir);
        let mut found = Vec::new();
        for id in AGENTS {
            let a = agent(id);
            let present: Vec<u64> = vault
                .list_checkpoints(&a)
                .unwrap()
                .iter()
                .map(|m| m.lsn)
                .collect();
            // Every checkpoint present is whole and has exactly its deterministic content.
            for &lsn in &present {
                let checkpoint = vault
                    .get_checkpoint(&a, lsn)
                    .unwrap_or_else(|e| panic!("{ctx}: {id}@{lsn}: {e}"))
                    .unwrap();
                assert!(
                    checkpoint.state == state_for(id, lsn),
                    "{ctx}: {id}@{lsn} differs"
                );
            }
            let Some(reported) = reported.get(id) else {
                found.push((id, present));
                continue;
            };
            // The newest reported ones cannot have been retained away: at most one unreported
            // put (the one in flight) can be newer, and retention keeps 3.
            for &lsn in reported.iter().rev().take(KEEP - 1) {
                assert!(
                    present.contains(&lsn),
                    "{ctx}: reported {id}@{lsn} lost; present {present:?}"
                );
            }
            // Nothing newer than the one in flight.
            let newest_reported = reported.iter().next_back().copied().unwrap_or(0);
            assert!(
                present.iter().all(|&lsn| lsn <= newest_reported + 1),
                "{ctx}: {id} has {present:?}, newest reported {newest_reported}"
            );
            let latest = vault.latest_valid(&a).unwrap();
            assert!(
                latest.skipped.is_empty(),
                "{ctx}: {id}: {:?}",
                latest.skipped
            );
            found.push((id, present));
        }
        for (id, present) in found {
            reported.entry(id.to_owned()).or_default().extend(present);
        }
    }
    // No half checkpoint: the two trees hold the same keys.
    let db = support::sled_open(dir);
    let keys = |tree: &str| -> BTreeSet<Vec<u8>> {
        db.open_tree(tree)
            .unwrap()
            .iter()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect()
    };
    let metas = keys("checkpoints");
    let states = keys("checkpoint_states");
    assert_eq!(metas, states, "{ctx}: metadata and state keys differ");
    assert!(metas.iter().all(|k| {
        AGENTS
            .iter()
            .any(|a| k.len() == a.len() + 9 && k.starts_with(&checkpoint_key(a, 0)[..a.len() + 1]))
    }));
}

#[test]
fn sigkill_never_loses_a_reported_checkpoint_or_leaves_half_of_one() {
    if child_role().is_some() {
        return;
    }
    let seed = SplitMix64::seed_from_env();
    eprintln!("kill test seed {seed} (set ARBOR_TEST_SEED to repeat)");
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let mut reported: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let started = Instant::now();
    let mut total = 0;
    for round in 0..ROUNDS {
        let mut child = ChildProcess::spawn(
            "child_process_entry",
            "checkpointer",
            &[(DIR_VAR, &dir_str)],
        )
        .unwrap();
        for lines in 0.. {
            let line = child
                .next_line_timeout(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("seed {seed} round {round}: child never got ready"));
            if line.ends_with("ready") {
                break;
            }
            assert!(
                lines < 20,
                "seed {seed} round {round}: no ready line, got {line:?}"
            );
        }
        // Let it store a random number of checkpoints, then kill it at a random moment: between
        // reports, or in the middle of a put, a retain or a flush.
        let wait_for = rng.below(24);
        for _ in 0..wait_for {
            match child.next_line_timeout(Duration::from_secs(30)) {
                Some(line) => record(&line, &mut reported),
                None => panic!("seed {seed} round {round}: child stopped reporting"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(4_000)));
        for line in child.kill() {
            record(&line, &mut reported);
        }
        verify(dir.path(), &mut reported, seed, round);
        total = reported.values().map(BTreeSet::len).sum::<usize>();
    }
    eprintln!(
        "{ROUNDS} kills, {total} checkpoints reported, {:.1?}",
        started.elapsed()
    );
    assert!(
        total >= ROUNDS,
        "the child stored too little to test anything"
    );
}
