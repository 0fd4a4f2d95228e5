//! Helpers shared by the vault's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use arbor_testkit::SplitMix64;
use arbor_vault::{AgentId, CheckpointMeta, Config, ModuleHash, NewCheckpoint, Vault};

/// The module hash every test checkpoint claims.
pub fn module() -> ModuleHash {
    ModuleHash::of(b"test module")
}

pub fn agent(id: &str) -> AgentId {
    AgentId::new(id).unwrap()
}

pub fn open(dir: &Path) -> Vault {
    Vault::open(dir, Config::default()).unwrap()
}

/// A deterministic, somewhat compressible state for (`agent`, `lsn`, `generation`) of about
/// `len` bytes: MessagePack-ish text of words and numbers.
pub fn state_of_len(agent: &str, lsn: u64, generation: u64, len: usize) -> Vec<u8> {
    let seed = u64::from_le_bytes(
        blake3::hash(agent.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap(),
    );
    let mut rng = SplitMix64::new(seed ^ lsn.rotate_left(17) ^ generation.rotate_left(41));
    const WORDS: [&str; 12] = [
        "alpha", "bravo", "counter", "delta", "echo", "ledger", "mailbox", "quota", "shadow",
        "tenant", "vault", "wal",
    ];
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(format!("{agent}/{lsn}/{generation};").as_bytes());
    while out.len() < len {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(&rng.below(100_000).to_le_bytes()[..3]);
    }
    out.truncate(len.max(1));
    out
}

/// The state a test stores for (`agent`, `lsn`): mostly small, sometimes large, sometimes
/// incompressible (so sled keeps it in a separate blob file).
pub fn state_for(agent: &str, lsn: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(lsn.wrapping_mul(0x9e37_79b9) ^ agent.len() as u64);
    match rng.below(6) {
        0 => {
            // Incompressible, over sled's blob threshold once compressed.
            let len = 140_000 + rng.below(120_000) as usize;
            let mut out = format!("{agent}/{lsn};").into_bytes();
            while out.len() < len {
                out.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            out
        }
        1 => state_of_len(agent, lsn, 0, 60_000 + rng.below(60_000) as usize),
        _ => state_of_len(agent, lsn, 0, 50 + rng.below(4_000) as usize),
    }
}

pub fn put(vault: &Vault, agent: &AgentId, lsn: u64, state: &[u8]) -> CheckpointMeta {
    vault
        .put_checkpoint(&NewCheckpoint {
            agent,
            lsn,
            seq: 0,
            module: module(),
            abi_version: 1,
            state_schema: 1,
            state,
        })
        .unwrap()
}

/// The sled key of a checkpoint, per the layout in the crate docs.
pub fn checkpoint_key(agent: &str, lsn: u64) -> Vec<u8> {
    let mut key = agent.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&lsn.to_be_bytes());
    key
}

/// A value frame built from the layout in the crate docs (independently of the crate's codec).
pub fn frame(key: &[u8], kind: u8, version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![b'A', b'V', version, kind];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(&out);
    hasher.update(body);
    out.extend_from_slice(hasher.finalize().as_bytes());
    out.extend_from_slice(body);
    out
}

/// `sled::open`, retrying for up to 2 s while the lock of a just-closed vault is still held (sled
/// 0.34 releases it from a background thread after the last handle is dropped).
pub fn sled_open(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("sled open {}: {e}", dir.display()),
        }
    }
}
