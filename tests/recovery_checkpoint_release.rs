//! Cross-crate recovery: an agent's state is checkpointed into the vault while its inputs are
//! journaled in the WAL, and WAL segments are released by the vault's rule (up to the older of
//! the two newest checkpoints). Losing the newest checkpoint must still leave a covered fallback:
//! the older checkpoint plus the WAL kept after it rebuild exactly the same state.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use arbor::vault::{self, AgentId, ModuleHash, NewCheckpoint, Vault};
use arbor::wal::{self, Wal};

type State = BTreeMap<u64, u64>;

fn input(lsn: u64) -> Vec<u8> {
    rmp_serde::to_vec(&(lsn % 13, lsn * 7)).unwrap()
}

fn apply(state: &mut State, payload: &[u8]) {
    let (key, value): (u64, u64) = rmp_serde::from_slice(payload).unwrap();
    *state.entry(key).or_default() += value;
}

fn checkpoint(vault: &Vault, agent: &AgentId, lsn: u64, state: &State) {
    vault
        .put_checkpoint(&NewCheckpoint {
            agent,
            lsn,
            seq: 0,
            module: ModuleHash::of(b"native:test"),
            abi_version: 1,
            state_schema: 1,
            state: &rmp_serde::to_vec(state).unwrap(),
        })
        .unwrap();
}

/// Rebuilds the state from the newest valid checkpoint and the WAL after it.
fn recover(wal: &Wal, vault: &Vault, agent: &AgentId) -> (u64, State) {
    let checkpoint = vault.latest_valid(agent).unwrap().checkpoint.unwrap();
    let mut state: State = rmp_serde::from_slice(&checkpoint.state).unwrap();
    for record in wal.read_from(checkpoint.meta.lsn + 1).unwrap() {
        apply(&mut state, &record.unwrap().payload);
    }
    (checkpoint.meta.lsn, state)
}

#[test]
fn losing_the_newest_checkpoint_falls_back_to_the_older_one_and_the_wal_kept_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal_config = || {
        wal::Config::default()
            .segment_bytes(16 << 10)
            .max_record_bytes(1024)
    };
    let wal = Wal::open(dir.path().join("wal"), wal_config()).unwrap();
    let vault = Vault::open(dir.path().join("vault"), vault::Config::default()).unwrap();
    let agent = AgentId::new("ledger").unwrap();

    let mut state = State::new();
    for lsn in 1..=5_000u64 {
        let appended = wal.append(&input(lsn)).unwrap();
        assert_eq!(appended.lsn(), lsn);
        apply(&mut state, &input(lsn));
        if lsn % 1_000 == 0 {
            // A checkpoint claims to cover the WAL only once the WAL is durable that far.
            wal.sync().unwrap();
            checkpoint(&vault, &agent, lsn, &state);
            let safe = vault.safe_release_lsn(&agent).unwrap();
            if let Some(safe) = safe {
                wal.truncate_before(safe + 1).unwrap();
                assert!(
                    wal.first_lsn() <= safe + 1,
                    "records after the safe lsn are kept"
                );
            }
        }
    }
    for lsn in 5_001..=5_400u64 {
        let _queued = wal.append(&input(lsn)).unwrap();
        apply(&mut state, &input(lsn));
    }
    wal.sync().unwrap();
    assert!(wal.first_lsn() > 1, "segments were released");
    assert!(
        wal.first_lsn() <= 4_001,
        "the WAL reaches back to the older checkpoint"
    );

    // Normal recovery: the newest checkpoint (5000) plus 400 records.
    let (from, recovered) = recover(&wal, &vault, &agent);
    assert_eq!(from, 5_000);
    assert_eq!(recovered, state);

    // The newest checkpoint is lost (as sled may lose it in a power failure): the older one plus
    // the longer WAL tail must give the same state.
    assert!(vault.delete_checkpoint(&agent, 5_000).unwrap());
    wal.close().unwrap();
    drop(vault);
    let wal = Wal::open(dir.path().join("wal"), wal_config()).unwrap();
    let vault = Vault::open(dir.path().join("vault"), vault::Config::default()).unwrap();
    let (from, recovered) = recover(&wal, &vault, &agent);
    assert_eq!(from, 4_000);
    assert_eq!(recovered, state);
}
