//! Checkpoint export files: round trip, and every kind of bad file refused with nothing stored.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use arbor_vault::{Error, Vault};
use support::{agent, open, put, state_of_len};

/// A vault with checkpoint kv@42 and its export file; returns the file's bytes.
fn exported(dir: &Path) -> Vec<u8> {
    let vault = open(&dir.join("source"));
    put(&vault, &agent("kv"), 41, b"older");
    put(
        &vault,
        &agent("kv"),
        42,
        &state_of_len("kv", 42, 0, 300_000),
    );
    let meta = vault
        .export_checkpoint(&agent("kv"), 42, dir.join("kv.ckpt"))
        .unwrap()
        .unwrap();
    assert_eq!(meta.lsn, 42);
    std::fs::read(dir.join("kv.ckpt")).unwrap()
}

/// Imports `bytes` as a file into a fresh vault; returns the error and checks nothing was stored.
fn import_fails(dir: &Path, name: &str, bytes: &[u8]) -> Error {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let target = open(&dir.join(format!("target-{name}")));
    let err = target.import_checkpoint(&file).unwrap_err();
    assert!(target.read_export(&file).is_err());
    assert!(
        target.checkpoint_agents().unwrap().is_empty(),
        "{name}: something was stored"
    );
    assert_eq!(err.path(), Some(file.as_path()), "{err}");
    err
}

fn reason(err: &Error) -> String {
    match err {
        Error::BadExport { reason, .. } => reason.clone(),
        other => panic!("expected BadExport, got {other}"),
    }
}

#[test]
fn export_then_import_restores_the_checkpoint_exactly() {
    let dir = tempfile::tempdir().unwrap();
    exported(dir.path());
    let source = open(&dir.path().join("source"));
    let original = source.get_checkpoint(&agent("kv"), 42).unwrap().unwrap();
    drop(source);

    let target = open(&dir.path().join("target"));
    let read = target.read_export(dir.path().join("kv.ckpt")).unwrap();
    assert_eq!(read, original);
    assert!(
        target.latest(&agent("kv")).unwrap().is_none(),
        "read_export must not store"
    );
    let meta = target
        .import_checkpoint(dir.path().join("kv.ckpt"))
        .unwrap();
    assert_eq!(meta, original.meta, "creation time and all metadata kept");
    assert_eq!(target.latest(&agent("kv")).unwrap().unwrap(), original);
    // No temporary file left beside the export.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("source") && !n.starts_with("target"))
        .collect();
    assert_eq!(names, vec!["kv.ckpt"]);
}

#[test]
fn exporting_a_missing_checkpoint_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(&dir.path().join("v"));
    let file = dir.path().join("none.ckpt");
    assert!(
        vault
            .export_checkpoint(&agent("kv"), 1, &file)
            .unwrap()
            .is_none()
    );
    assert!(!file.exists());
}

#[test]
fn a_truncated_export_is_refused_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = exported(dir.path());
    let len = bytes.len();
    for cut in [
        0,
        1,
        7,
        8,
        12,
        15,
        16,
        17,
        100,
        len / 2,
        len - 33,
        len - 32,
        len - 1,
    ] {
        let err = import_fails(dir.path(), &format!("cut-{cut}"), &bytes[..cut]);
        assert!(reason(&err).starts_with("truncated"), "cut at {cut}: {err}");
    }
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = exported(dir.path());
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";
    let err = import_fails(dir.path(), "png", png);
    assert_eq!(reason(&err), "not an arbor checkpoint export (bad magic)");
    let err = import_fails(dir.path(), "text", b"{\"agent\": \"kv\", \"lsn\": 42}\n");
    assert_eq!(reason(&err), "not an arbor checkpoint export (bad magic)");
    // The state alone (what a careless `arborctl` user might copy out of the vault).
    let err = import_fails(dir.path(), "state", &bytes[40..]);
    assert_eq!(reason(&err), "not an arbor checkpoint export (bad magic)");
    let err = import_fails(dir.path(), "empty-name", b"ARBORCKX\x01\0\0\0");
    assert_eq!(reason(&err), "not an arbor checkpoint export (bad magic)");
}

#[test]
fn damaged_or_extended_exports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = exported(dir.path());
    for at in [20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        let err = import_fails(dir.path(), &format!("flip-{at}"), &bad);
        assert_eq!(reason(&err), "checksum mismatch", "flip at {at}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    let err = import_fails(dir.path(), "longer", &longer);
    assert_eq!(reason(&err), "4 bytes after the trailing checksum");

    let mut newer = bytes.clone();
    newer[8] = 2;
    let err = import_fails(dir.path(), "newer", &newer);
    assert_eq!(
        reason(&err),
        "export format version 2, this build reads version 1"
    );
}

#[test]
fn a_consistent_file_whose_state_does_not_match_its_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = exported(dir.path());
    let source = open(&dir.path().join("source"));
    let meta = source.checkpoint_meta(&agent("kv"), 42).unwrap().unwrap();
    drop(source);
    // Change the state checksum inside the metadata and re-seal the file with a correct trailer:
    // only the decompressed-state check can catch it.
    let at = bytes
        .windows(32)
        .position(|w| w == meta.state_checksum)
        .unwrap();
    let mut bad = bytes[..bytes.len() - 32].to_vec();
    bad[at] ^= 0x01;
    let trailer = *blake3::hash(&bad).as_bytes();
    bad.extend_from_slice(&trailer);
    let err = import_fails(dir.path(), "resealed", &bad);
    assert_eq!(reason(&err), "decompressed state checksum mismatch");
}

#[test]
fn an_export_over_the_size_limit_is_refused_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    exported(dir.path());
    let small = Vault::open(
        dir.path().join("small"),
        arbor_vault::Config::default().max_value_bytes(1 << 10),
    )
    .unwrap();
    let err = small
        .import_checkpoint(dir.path().join("kv.ckpt"))
        .unwrap_err();
    assert!(reason(&err).contains("larger than any export"), "{err}");
}
