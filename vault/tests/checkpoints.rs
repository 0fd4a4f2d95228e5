//! Checkpoint round trips, ordered scans, prefix-safe keys, retention and the WAL release rule.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_vault::{Config, Error, ModuleHash, NewCheckpoint, Vault};
use support::{agent, module, open, put, state_for, state_of_len};

#[test]
fn round_trip_keeps_every_field_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kv = agent("kv");
    let state = state_of_len("kv", 42, 0, 50_000);
    let meta = {
        let vault = open(dir.path());
        let meta = vault
            .put_checkpoint(&NewCheckpoint {
                agent: &kv,
                lsn: 42,
                seq: 0,
                module: ModuleHash::of(b"kv v3"),
                abi_version: 2,
                state_schema: 7,
                state: &state,
            })
            .unwrap();
        assert_eq!(meta.agent, kv);
        assert_eq!(meta.lsn, 42);
        assert_eq!(meta.module, ModuleHash::of(b"kv v3"));
        assert_eq!((meta.abi_version, meta.state_schema), (2, 7));
        assert_eq!(meta.uncompressed_bytes, state.len() as u64);
        assert_eq!(meta.zstd_level, 3);
        assert!(
            meta.compressed_bytes < meta.uncompressed_bytes / 2,
            "{meta:?}"
        );
        assert!(meta.compression_ratio() > 2.0);
        assert_eq!(&meta.state_checksum, blake3::hash(&state).as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(meta.created_at_ms <= now && meta.created_at_ms + 60_000 > now);

        let back = vault.get_checkpoint(&kv, 42).unwrap().unwrap();
        assert_eq!(back.meta, meta);
        assert_eq!(back.state, state);
        assert_eq!(vault.checkpoint_meta(&kv, 42).unwrap(), Some(meta.clone()));
        vault.flush().unwrap();
        meta
    };
    let vault = open(dir.path());
    let back = vault.get_checkpoint(&kv, 42).unwrap().unwrap();
    assert_eq!(back.meta, meta);
    assert_eq!(back.state, state);
    assert!(vault.get_checkpoint(&kv, 41).unwrap().is_none());
    assert!(vault.get_checkpoint(&agent("other"), 42).unwrap().is_none());
}

#[test]
fn empty_large_and_incompressible_states_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let kv = agent("kv");
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![7],
        state_for("kv", 6), // incompressible, stored by sled as a blob
        state_of_len("kv", 1, 0, 3 << 20),
    ];
    for (lsn, state) in cases.iter().enumerate() {
        put(&vault, &kv, lsn as u64, state);
    }
    for (lsn, state) in cases.iter().enumerate() {
        let back = vault.get_checkpoint(&kv, lsn as u64).unwrap().unwrap();
        assert_eq!(&back.state, state, "lsn {lsn}");
    }
}

#[test]
fn latest_and_latest_at_or_before_follow_lsn_order_not_insert_order() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let kv = agent("kv");
    assert!(vault.latest(&kv).unwrap().is_none());
    // Inserted out of order; 255/256/65536 catch little-endian or text keys.
    for lsn in [256u64, 10, 65_536, 255, 30] {
        put(&vault, &kv, lsn, &state_for("kv", lsn));
    }
    let lsn_of = |c: Option<arbor_vault::Checkpoint>| c.map(|c| c.meta.lsn);
    assert_eq!(lsn_of(vault.latest(&kv).unwrap()), Some(65_536));
    assert_eq!(vault.latest_meta(&kv).unwrap().map(|m| m.lsn), Some(65_536));
    let at = |lsn| lsn_of(vault.latest_at_or_before(&kv, lsn).unwrap());
    assert_eq!(at(9), None);
    assert_eq!(at(10), Some(10));
    assert_eq!(at(29), Some(10));
    assert_eq!(at(255), Some(255));
    assert_eq!(at(256), Some(256));
    assert_eq!(at(65_535), Some(256));
    assert_eq!(at(u64::MAX), Some(65_536));
    let listed: Vec<u64> = vault
        .list_checkpoints(&kv)
        .unwrap()
        .iter()
        .map(|m| m.lsn)
        .collect();
    assert_eq!(listed, vec![10, 30, 255, 256, 65_536]);
    let state = vault.latest_at_or_before(&kv, 40).unwrap().unwrap().state;
    assert_eq!(state, state_for("kv", 30));

    let valid = vault.latest_valid_at_or_before(&kv, 300).unwrap();
    assert_eq!(lsn_of(valid.checkpoint), Some(256));
    assert!(valid.skipped.is_empty());
}

#[test]
fn an_agent_id_that_prefixes_another_never_sees_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    // "kv" is a prefix of the others; "kv\u{1}" sorts right after every "kv" key.
    let ids = ["k", "kv", "kv-1", "kv\u{1}", "kv\u{ff}", "kw"];
    for (i, id) in ids.iter().enumerate() {
        let a = agent(id);
        // Each agent's LSNs are distinct and interleave with the others'.
        for j in 0..3u64 {
            let lsn = j * 100 + i as u64;
            put(&vault, &a, lsn, &state_for(id, lsn));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let a = agent(id);
        let lsns: Vec<u64> = vault
            .list_checkpoints(&a)
            .unwrap()
            .iter()
            .map(|m| m.lsn)
            .collect();
        assert_eq!(
            lsns,
            vec![i as u64, 100 + i as u64, 200 + i as u64],
            "{id:?}"
        );
        let latest = vault.latest(&a).unwrap().unwrap();
        assert_eq!(latest.meta.agent, a);
        assert_eq!(latest.state, state_for(id, 200 + i as u64));
        let before = vault.latest_at_or_before(&a, 150).unwrap().unwrap();
        assert_eq!(before.meta.lsn, 100 + i as u64, "{id:?}");
        assert_eq!(
            vault
                .latest_at_or_before(&a, i as u64)
                .unwrap()
                .map(|c| c.meta.lsn),
            Some(i as u64)
        );
        if i > 0 {
            assert!(
                vault
                    .latest_at_or_before(&a, i as u64 - 1)
                    .unwrap()
                    .is_none(),
                "{id:?}"
            );
        }
    }
    let agents: Vec<String> = vault
        .checkpoint_agents()
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    // In key (byte) order.
    let mut sorted = ids.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(agents, sorted);
    // Retention on "kv" leaves "kv-1" alone.
    vault.retain(&agent("kv"), 2).unwrap();
    assert_eq!(vault.list_checkpoints(&agent("kv")).unwrap().len(), 2);
    assert_eq!(vault.list_checkpoints(&agent("kv-1")).unwrap().len(), 3);
    assert_eq!(vault.list_checkpoints(&agent("k")).unwrap().len(), 3);
}

#[test]
fn retention_keeps_the_newest_and_never_fewer_than_two() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let kv = agent("kv");
    for lsn in 1..=10 {
        put(&vault, &kv, lsn * 10, &state_for("kv", lsn));
    }
    assert_eq!(
        vault.retain(&kv, 3).unwrap(),
        vec![10, 20, 30, 40, 50, 60, 70]
    );
    let lsns = |v: &Vault| -> Vec<u64> {
        v.list_checkpoints(&kv)
            .unwrap()
            .iter()
            .map(|m| m.lsn)
            .collect()
    };
    assert_eq!(lsns(&vault), vec![80, 90, 100]);
    assert!(vault.get_checkpoint(&kv, 70).unwrap().is_none());
    assert_eq!(vault.retain(&kv, 3).unwrap(), Vec::<u64>::new());
    assert_eq!(vault.retain(&kv, 0).unwrap(), vec![80]);
    assert_eq!(lsns(&vault), vec![90, 100]);
    assert_eq!(vault.retain(&kv, 1).unwrap(), Vec::<u64>::new());
    assert_eq!(lsns(&vault), vec![90, 100]);
    assert_eq!(
        vault.latest(&kv).unwrap().unwrap().state,
        state_for("kv", 10)
    );
    // Nothing to retain for an unknown agent.
    assert!(vault.retain(&agent("nobody"), 2).unwrap().is_empty());
}

#[test]
fn delete_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let kv = agent("kv");
    put(&vault, &kv, 5, b"first");
    put(&vault, &kv, 5, b"second");
    assert_eq!(vault.list_checkpoints(&kv).unwrap().len(), 1);
    assert_eq!(
        vault.get_checkpoint(&kv, 5).unwrap().unwrap().state,
        b"second"
    );
    assert!(vault.delete_checkpoint(&kv, 5).unwrap());
    assert!(!vault.delete_checkpoint(&kv, 5).unwrap());
    assert!(vault.get_checkpoint(&kv, 5).unwrap().is_none());
    assert!(vault.latest(&kv).unwrap().is_none());
    assert!(vault.checkpoint_agents().unwrap().is_empty());
}

#[test]
fn safe_release_lsn_is_the_older_of_the_two_newest() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let kv = agent("kv");
    assert_eq!(vault.safe_release_lsn(&kv).unwrap(), None);
    put(&vault, &kv, 100, b"one");
    assert_eq!(vault.safe_release_lsn(&kv).unwrap(), None);
    put(&vault, &kv, 200, b"two");
    assert_eq!(vault.safe_release_lsn(&kv).unwrap(), Some(100));
    put(&vault, &kv, 300, b"three");
    assert_eq!(vault.safe_release_lsn(&kv).unwrap(), Some(200));
    let other = agent("other");
    put(&vault, &other, 7, b"x");
    let all = vault.safe_release_lsns().unwrap();
    assert_eq!(all.get(&kv), Some(&Some(200)));
    assert_eq!(all.get(&other), Some(&None));
    assert_eq!(all.len(), 2);
}

#[test]
fn oversized_state_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), Config::default().max_value_bytes(64 << 10)).unwrap();
    let kv = agent("kv");
    let state = state_of_len("kv", 1, 0, (64 << 10) + 1);
    let err = vault
        .put_checkpoint(&NewCheckpoint {
            agent: &kv,
            lsn: 1,
            seq: 0,
            module: module(),
            abi_version: 1,
            state_schema: 1,
            state: &state,
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { size, max, .. } if size == (64 << 10) + 1 && max == 64 << 10),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "state of agent kv at lsn 1 is 65537 bytes, over the limit of 65536 bytes"
    );
    assert!(vault.latest(&kv).unwrap().is_none());
    // Exactly at the limit is fine.
    put(&vault, &kv, 2, &state[..64 << 10]);
}

#[test]
fn compression_level_is_configurable_and_every_level_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let kv = agent("kv");
    let state = state_of_len("kv", 1, 0, 200_000);
    let mut sizes = Vec::new();
    for (lsn, level) in [(1u64, 1), (2, 9), (3, 19)] {
        let vault = Vault::open(dir.path(), Config::default().zstd_level(level)).unwrap();
        let meta = put(&vault, &kv, lsn, &state);
        assert_eq!(meta.zstd_level, level);
        sizes.push(meta.compressed_bytes);
    }
    assert!(
        sizes[2] < sizes[0],
        "level 19 should beat level 1: {sizes:?}"
    );
    let vault = Vault::open(dir.path(), Config::default().zstd_level(-5)).unwrap();
    for lsn in 1..=3 {
        assert_eq!(
            vault.get_checkpoint(&kv, lsn).unwrap().unwrap().state,
            state
        );
    }
    drop(vault);
    let err = Vault::open(dir.path(), Config::default().zstd_level(99)).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
}

#[test]
fn a_second_open_of_the_same_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _vault = open(dir.path());
    let started = std::time::Instant::now();
    let config = Config::default().lock_wait(std::time::Duration::from_millis(200));
    let err = Vault::open(dir.path(), config).unwrap_err();
    // It waited for the lock (sled releases it lazily after a close), then gave up.
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert_eq!(err.path(), Some(dir.path()));
}
