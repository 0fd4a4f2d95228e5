//! Damage done to the database behind the vault's back (through sled directly) is detected,
//! named, and — for checkpoints — fallen back from. Also: the documented frame layout is the one
//! written, and format versions are checked at open.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use arbor_vault::{
    AgentRecord, AgentState, Behaviour, Config, Error, Limits, LineageEvent, ModuleHash,
    ModuleInfo, Vault,
};
use support::{agent, checkpoint_key, frame, open, put, state_for, state_of_len};

/// Opens the vault's sled database directly, applies `edit` to `tree`, flushes and closes it.
fn edit_tree(dir: &Path, tree: &str, edit: impl FnOnce(&sled::Tree)) {
    let db = support::sled_open(dir);
    let tree = db.open_tree(tree).unwrap();
    edit(&tree);
    db.flush().unwrap();
}

fn flip_byte(dir: &Path, tree: &str, key: &[u8], at: usize) {
    edit_tree(dir, tree, |t| {
        let mut value = t.get(key).unwrap().expect("value to corrupt").to_vec();
        let at = at.min(value.len() - 1);
        value[at] ^= 0x01;
        t.insert(key, value).unwrap();
    });
}

/// Three checkpoints of agent "kv" at LSNs 1, 2, 3 (LSN 3's state large enough for a sled blob).
fn three_checkpoints(dir: &Path) {
    let vault = open(dir);
    let kv = agent("kv");
    put(&vault, &kv, 1, &state_for("kv", 1));
    put(&vault, &kv, 2, &state_for("kv", 2));
    put(&vault, &kv, 3, &state_of_len("kv", 3, 0, 400_000));
    vault.flush().unwrap();
}

#[test]
fn a_flipped_state_byte_is_named_and_latest_valid_falls_back() {
    let kv = agent("kv");
    // Header magic, version, kind, length, checksum, body start, body middle, last byte.
    for at in [0usize, 2, 3, 5, 20, 40, 5_000, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        three_checkpoints(dir.path());
        flip_byte(
            dir.path(),
            "checkpoint_states",
            &checkpoint_key("kv", 3),
            at,
        );

        let vault = open(dir.path());
        let err = vault.get_checkpoint(&kv, 3).unwrap_err();
        assert!(err.is_corrupt(), "flip at {at}: {err}");
        assert_eq!(err.tree(), Some("checkpoint_states"));
        assert_eq!(err.key(), Some("kv@3"));
        assert!(
            err.to_string()
                .starts_with("corrupt value in tree checkpoint_states at key kv@3: "),
            "{err}"
        );
        assert!(vault.latest(&kv).unwrap_err().is_corrupt());

        let found = vault.latest_valid(&kv).unwrap();
        let checkpoint = found.checkpoint.as_ref().unwrap();
        assert_eq!(checkpoint.meta.lsn, 2, "flip at {at}");
        assert_eq!(checkpoint.state, state_for("kv", 2));
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].lsn, 3);
        assert_eq!(found.skipped[0].error.key(), Some("kv@3"));
        assert!(!found.is_unrecoverable());

        // Metadata is intact, so listing still shows all three without reading states.
        assert_eq!(vault.list_checkpoints(&kv).unwrap().len(), 3);
        // The WAL may only be released up to the second *valid* checkpoint.
        assert_eq!(vault.safe_release_lsn(&kv).unwrap(), Some(1));
        // The other checkpoints are untouched.
        assert_eq!(
            vault.get_checkpoint(&kv, 1).unwrap().unwrap().state,
            state_for("kv", 1)
        );
    }
}

#[test]
fn a_flipped_metadata_byte_is_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    flip_byte(dir.path(), "checkpoints", &checkpoint_key("kv", 3), 60);
    let vault = open(dir.path());
    let kv = agent("kv");
    let err = vault.checkpoint_meta(&kv, 3).unwrap_err();
    assert_eq!((err.tree(), err.key()), (Some("checkpoints"), Some("kv@3")));
    assert!(vault.list_checkpoints(&kv).unwrap_err().is_corrupt());
    let found = vault.latest_valid(&kv).unwrap();
    assert_eq!(found.checkpoint.map(|c| c.meta.lsn), Some(2));
    assert_eq!(found.skipped.len(), 1);
    // Retention counts only checkpoints whose metadata verifies: 2 and 1 are kept, and the
    // corrupt 3 (newer) is left for inspection.
    assert!(vault.retain(&kv, 2).unwrap().is_empty());
    assert!(vault.get_checkpoint(&kv, 1).unwrap().is_some());
}

#[test]
fn every_checkpoint_corrupt_is_reported_as_unrecoverable() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    for lsn in 1..=3 {
        flip_byte(
            dir.path(),
            "checkpoint_states",
            &checkpoint_key("kv", lsn),
            41,
        );
    }
    let vault = open(dir.path());
    let found = vault.latest_valid(&agent("kv")).unwrap();
    assert!(found.checkpoint.is_none());
    assert_eq!(
        found.skipped.iter().map(|s| s.lsn).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert!(found.is_unrecoverable());
    assert_eq!(vault.safe_release_lsn(&agent("kv")).unwrap(), None);
}

#[test]
fn a_value_copied_under_another_key_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    edit_tree(dir.path(), "checkpoint_states", |t| {
        let one = t.get(checkpoint_key("kv", 1)).unwrap().unwrap();
        t.insert(checkpoint_key("kv", 2), one).unwrap();
    });
    let vault = open(dir.path());
    let err = vault.get_checkpoint(&agent("kv"), 2).unwrap_err();
    assert_eq!(err.key(), Some("kv@2"));
    assert!(err.to_string().ends_with("checksum mismatch"), "{err}");
}

#[test]
fn a_well_framed_state_that_decompresses_to_other_bytes_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    // A valid frame (built from the documented layout) around a valid zstd stream of the wrong
    // state with the right compressed length: only the decompressed-state checksum can tell.
    let key = checkpoint_key("kv", 2);
    let vault = open(dir.path());
    let meta = vault.checkpoint_meta(&agent("kv"), 2).unwrap().unwrap();
    drop(vault);
    let mut wrong = state_for("kv", 2);
    wrong[0] ^= 0xff;
    let compressed = zstd::bulk::compress(&wrong, 3).unwrap();
    assert_eq!(compressed.len() as u64, meta.compressed_bytes);
    edit_tree(dir.path(), "checkpoint_states", |t| {
        t.insert(&key, frame(&key, 3, 1, &compressed)).unwrap();
    });
    let vault = open(dir.path());
    let err = vault.get_checkpoint(&agent("kv"), 2).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("decompressed state checksum mismatch"),
        "{err}"
    );
}

#[test]
fn stored_values_match_the_documented_frame_layout() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let record = AgentRecord {
        id: agent("kv"),
        behaviour: Behaviour::Native("echo".into()),
        supervisor: vec!["root".into()],
        limits: Limits::default(),
        capabilities: vec![],
        state: AgentState::Running,
        reason: None,
    };
    vault.put_agent(&record).unwrap();
    put(&vault, &agent("kv"), 9, b"state");
    drop(vault);
    let db = support::sled_open(dir.path());
    let check = |tree: &str, key: &[u8], kind: u8| {
        let raw = db.open_tree(tree).unwrap().get(key).unwrap().unwrap();
        assert_eq!(&raw[..], &frame(key, kind, 1, &raw[40..])[..], "{tree}");
    };
    check("agents", b"kv", 7);
    check("checkpoints", &checkpoint_key("kv", 9), 2);
    check("checkpoint_states", &checkpoint_key("kv", 9), 3);
    check("vault_meta", b"format_version", 1);
    let version = db
        .open_tree("vault_meta")
        .unwrap()
        .get("format_version")
        .unwrap()
        .unwrap();
    assert_eq!(&version[40..], &1u32.to_le_bytes());
}

#[test]
fn corrupt_module_lineage_and_registry_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = b"\0asm\x01\0\0\0\x00\x04name";
    let hash = {
        let vault = open(dir.path());
        let info = ModuleInfo {
            name: "m".into(),
            version_label: "1".into(),
            abi_version: 1,
            origin: "test".into(),
        };
        let hash = vault.put_module(wasm, &info).unwrap().meta.hash;
        for _ in 0..3 {
            vault
                .append_lineage(LineageEvent::ModuleAdmitted {
                    agent: agent("kv"),
                    parent: None,
                    candidate: hash,
                })
                .unwrap();
        }
        vault
            .put_agent(&AgentRecord {
                id: agent("kv"),
                behaviour: Behaviour::Wasm(hash),
                supervisor: vec![],
                limits: Limits::default(),
                capabilities: vec![],
                state: AgentState::Running,
                reason: None,
            })
            .unwrap();
        hash
    };
    flip_byte(dir.path(), "module_bytes", hash.as_bytes(), 45);
    flip_byte(dir.path(), "lineage", &2u64.to_be_bytes(), 50);
    flip_byte(dir.path(), "agents", b"kv", 50);
    let vault = open(dir.path());
    let err = vault.module_bytes(&hash).unwrap_err();
    assert_eq!(
        (err.tree(), err.key()),
        (Some("module_bytes"), Some(hash.to_string().as_str()))
    );
    assert!(vault.module_meta(&hash).unwrap().is_some());
    let err = vault.lineage().unwrap_err();
    assert_eq!((err.tree(), err.key()), (Some("lineage"), Some("seq 2")));
    let err = vault.agent(&agent("kv")).unwrap_err();
    assert_eq!((err.tree(), err.key()), (Some("agents"), Some("kv")));
}

#[test]
fn a_newer_format_version_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    // A well-formed version-1 frame saying the vault is version 2.
    edit_tree(dir.path(), "vault_meta", |t| {
        t.insert(
            "format_version",
            frame(b"format_version", 1, 1, &2u32.to_le_bytes()),
        )
        .unwrap();
    });
    let err = Vault::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "vault format version 2 is newer than this build supports (version 1)"
    );
    // A frame of a future layout (version byte 9): refused by version, not reported as corrupt.
    edit_tree(dir.path(), "vault_meta", |t| {
        t.insert(
            "format_version",
            frame(b"format_version", 1, 9, b"whatever a v9 says"),
        )
        .unwrap();
    });
    let err = Vault::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 9,
                supported: 1
            }
        ),
        "{err}"
    );
    // A damaged version value is corrupt, not a guess.
    edit_tree(dir.path(), "vault_meta", |t| {
        t.insert("format_version", &b"AV\x01\x01garbage"[..])
            .unwrap();
    });
    let err = Vault::open(dir.path(), Config::default()).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
}

#[test]
fn a_foreign_sled_database_is_not_taken_for_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = support::sled_open(dir.path());
        db.insert("someone else's", "data").unwrap();
        db.flush().unwrap();
    }
    let err = Vault::open(dir.path(), Config::default()).unwrap_err();
    assert!(matches!(err, Error::NotAVault { .. }), "{err}");
    assert_eq!(err.path(), Some(dir.path()));
    // Untouched: still the foreign data, no vault trees filled.
    let db = support::sled_open(dir.path());
    assert_eq!(
        db.get("someone else's").unwrap().as_deref(),
        Some(&b"data"[..])
    );
    assert!(!db.tree_names().iter().any(|name| name == b"vault_meta"));
}

#[test]
fn a_module_hash_not_matching_its_bytes_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = b"\0asm\x01\0\0\0";
    let hash = ModuleHash::of(wasm);
    {
        let vault = open(dir.path());
        let info = ModuleInfo {
            name: "m".into(),
            version_label: "1".into(),
            abi_version: 1,
            origin: "test".into(),
        };
        vault.put_module(wasm, &info).unwrap();
    }
    // Re-frame other bytes correctly under the hash's key: the frame verifies, the hash does not.
    edit_tree(dir.path(), "module_bytes", |t| {
        t.insert(
            hash.as_bytes(),
            frame(hash.as_bytes(), 5, 1, b"\0asm\x01\0\0\0\0"),
        )
        .unwrap();
    });
    let vault = open(dir.path());
    let err = vault.module_bytes(&hash).unwrap_err();
    assert!(
        err.to_string().ends_with("bytes do not hash to their key"),
        "{err}"
    );
}
