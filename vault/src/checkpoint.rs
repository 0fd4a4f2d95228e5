//! Checkpoints: an agent's state at a WAL position, zstd-compressed, with metadata that can be
//! listed without touching the state. One file: storing, verifying, listing and retaining share
//! the key layout and the frame below.
//!
//! Two trees share one key per checkpoint, `agent id bytes ‖ 0x00 ‖ lsn (u64 big-endian)`:
//! [`tree::CHECKPOINTS`] holds the [`CheckpointMeta`] (MessagePack, named fields) and
//! [`tree::CHECKPOINT_STATES`] the compressed state. Both are written in one sled transaction, so
//! a checkpoint is either wholly there or not at all. Big-endian LSNs sort numerically, so "latest
//! at or before L" is one reverse range scan; the 0x00 separator (agent ids contain no NUL) keeps
//! agent `kv` from ever seeing the keys of agent `kv-1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::IVec;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use crate::ids::{AgentId, ModuleHash};
use crate::vault::{Vault, now_millis, tree};

/// What the caller hands to [`Vault::put_checkpoint`]: the agent's serialized state and where it
/// stands.
#[derive(Debug, Clone, Copy)]
pub struct NewCheckpoint<'a> {
    /// The agent whose state this is.
    pub agent: &'a AgentId,
    /// The WAL LSN the state covers: the state after applying every record with LSN ≤ `lsn`.
    pub lsn: u64,
    /// The agent's input sequence number the state covers: inputs numbered up to `seq` were
    /// received before it (0 for callers that do not number inputs).
    pub seq: u64,
    /// The module that produced the state.
    pub module: ModuleHash,
    /// The agent ABI version of that module.
    pub abi_version: u32,
    /// The version of the state's own schema (the guest's, for migrations).
    pub state_schema: u32,
    /// The state, uncompressed (MessagePack from `arbor_snapshot`).
    pub state: &'a [u8],
}

/// A checkpoint's metadata, stored apart from its state so that listing never decompresses (or
/// even reads) states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckpointMeta {
    /// The agent.
    pub agent: AgentId,
    /// The WAL LSN the state covers.
    pub lsn: u64,
    /// The agent's input sequence number the state covers (0 in checkpoints written before
    /// the field existed).
    #[serde(default)]
    pub seq: u64,
    /// The module that produced the state.
    pub module: ModuleHash,
    /// That module's agent ABI version.
    pub abi_version: u32,
    /// The state's schema version.
    pub state_schema: u32,
    /// When the checkpoint was stored, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The zstd level the state was compressed with.
    pub zstd_level: i32,
    /// Size of the compressed state as stored.
    pub compressed_bytes: u64,
    /// Size of the state before compression.
    pub uncompressed_bytes: u64,
    /// BLAKE3 of the uncompressed state.
    #[serde(with = "digest")]
    pub state_checksum: [u8; 32],
}

impl CheckpointMeta {
    /// `uncompressed / compressed` (1.0 for an empty state).
    pub fn compression_ratio(&self) -> f64 {
        if self.compressed_bytes == 0 {
            1.0
        } else {
            self.uncompressed_bytes as f64 / self.compressed_bytes as f64
        }
    }
}

/// A verified checkpoint: its metadata and the decompressed state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The metadata.
    pub meta: CheckpointMeta,
    /// The uncompressed state; its BLAKE3 equals `meta.state_checksum`.
    pub state: Vec<u8>,
}

/// What [`Vault::latest_valid`] found: the newest checkpoint that verified, and the newer ones it
/// had to skip.
#[derive(Debug)]
#[non_exhaustive]
pub struct LatestValid {
    /// The newest checkpoint whose framing checksums and decompressed-state checksum all verify.
    pub checkpoint: Option<Checkpoint>,
    /// Checkpoints newer than `checkpoint` that failed verification, newest first. Recovery from
    /// `checkpoint` must replay the WAL from its LSN, past these.
    pub skipped: Vec<Skipped>,
}

impl LatestValid {
    /// Nothing found (an agent with no checkpoint).
    pub fn none() -> LatestValid {
        LatestValid {
            checkpoint: None,
            skipped: Vec::new(),
        }
    }

    /// Whether checkpoints exist for the agent but none verified: the agent cannot be recovered
    /// from the vault, and starting it empty would silently lose state if the WAL before the
    /// skipped checkpoints has been released.
    pub fn is_unrecoverable(&self) -> bool {
        self.checkpoint.is_none() && !self.skipped.is_empty()
    }
}

/// A checkpoint that failed verification.
#[derive(Debug)]
#[non_exhaustive]
pub struct Skipped {
    /// Its LSN.
    pub lsn: u64,
    /// Why it was skipped (an [`Error::Corrupt`] naming the tree and key).
    pub error: Error,
}

impl Skipped {
    /// A checkpoint skipped at `lsn` because of `error` (for stores other than the vault that
    /// report what [`Vault::latest_valid`] does).
    pub fn new(lsn: u64, error: Error) -> Skipped {
        Skipped { lsn, error }
    }
}

/// Seals a checkpoint as the vault stores it, for a store other than the vault (a cluster's
/// checkpoint bucket): its metadata (creation time now, BLAKE3 of the state) and its state
/// compressed with zstd at `zstd_level`. [`open_checkpoint`] verifies it back.
pub fn seal_checkpoint(
    checkpoint: &NewCheckpoint<'_>,
    zstd_level: i32,
) -> Result<(CheckpointMeta, Vec<u8>)> {
    let compressed =
        zstd::bulk::compress(checkpoint.state, zstd_level).map_err(|source| Error::Compress {
            agent: checkpoint.agent.to_string(),
            source,
        })?;
    let meta = CheckpointMeta {
        agent: checkpoint.agent.clone(),
        lsn: checkpoint.lsn,
        seq: checkpoint.seq,
        module: checkpoint.module,
        abi_version: checkpoint.abi_version,
        state_schema: checkpoint.state_schema,
        created_at_ms: now_millis(),
        zstd_level,
        compressed_bytes: compressed.len() as u64,
        uncompressed_bytes: checkpoint.state.len() as u64,
        state_checksum: *blake3::hash(checkpoint.state).as_bytes(),
    };
    Ok((meta, compressed))
}

/// Decompresses a sealed checkpoint ([`seal_checkpoint`]) and checks it against its metadata
/// (sizes, BLAKE3); [`Error::Corrupt`] naming `store` and the checkpoint if it does not
/// verify. `max_bytes` bounds the state's size, so a corrupt size cannot make it allocate
/// without bound.
pub fn open_checkpoint(
    store: &'static str,
    meta: CheckpointMeta,
    compressed: &[u8],
    max_bytes: u64,
) -> Result<Checkpoint> {
    let render = || render_key(&meta.agent, meta.lsn);
    let corrupt = |reason: String| Error::corrupt(store, render(), reason);
    if compressed.len() as u64 != meta.compressed_bytes {
        return Err(corrupt(format!(
            "state is {} bytes, metadata says {}",
            compressed.len(),
            meta.compressed_bytes
        )));
    }
    if meta.uncompressed_bytes > max_bytes {
        return Err(corrupt(format!(
            "state of {} bytes exceeds {max_bytes}",
            meta.uncompressed_bytes
        )));
    }
    let state = zstd::bulk::decompress(compressed, meta.uncompressed_bytes as usize)
        .map_err(|e| corrupt(format!("state does not decompress: {e}")))?;
    if state.len() as u64 != meta.uncompressed_bytes {
        return Err(corrupt(format!(
            "state decompresses to {} bytes, metadata says {}",
            state.len(),
            meta.uncompressed_bytes
        )));
    }
    if *blake3::hash(&state).as_bytes() != meta.state_checksum {
        return Err(corrupt("decompressed state checksum mismatch".to_string()));
    }
    Ok(Checkpoint { meta, state })
}

/// The sled key of a checkpoint: `agent ‖ 0x00 ‖ lsn (big-endian)`.
pub(crate) fn checkpoint_key(agent: &AgentId, lsn: u64) -> Vec<u8> {
    let mut key = agent_prefix(agent);
    key.extend_from_slice(&lsn.to_be_bytes());
    key
}

fn agent_prefix(agent: &AgentId) -> Vec<u8> {
    let mut key = Vec::with_capacity(agent.as_bytes().len() + 9);
    key.extend_from_slice(agent.as_bytes());
    key.push(0);
    key
}

pub(crate) fn render_key(agent: &AgentId, lsn: u64) -> String {
    format!("{agent}@{lsn}")
}

fn render_raw(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

/// Splits a checkpoint key read from disk.
fn parse_key(tree: &'static str, key: &[u8]) -> Result<(AgentId, u64)> {
    let bad = |reason: &str| {
        Error::corrupt(
            tree,
            render_raw(key),
            format!("bad checkpoint key: {reason}"),
        )
    };
    if key.len() < 10 {
        return Err(bad("too short"));
    }
    let (agent, rest) = key.split_at(key.len() - 9);
    if rest[0] != 0 {
        return Err(bad("no separator"));
    }
    let lsn = <[u8; 8]>::try_from(&rest[1..])
        .map(u64::from_be_bytes)
        .map_err(|_| bad("lsn"))?;
    let agent = AgentId::from_bytes(agent).map_err(|_| bad("agent id"))?;
    Ok((agent, lsn))
}

fn tx_error(tree: &'static str) -> impl FnOnce(TransactionError<Error>) -> Error {
    move |e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(source) => Error::Sled {
            op: "transaction",
            tree,
            source,
        },
    }
}

impl Vault {
    /// Compresses and stores a checkpoint, returning its metadata.
    ///
    /// The metadata and the state are written in one sled transaction: a crash leaves both or
    /// neither. When this returns, the checkpoint is visible to every reader of the vault; it
    /// survives a process crash only after a following [`Vault::flush`] (or sled's background
    /// flush, every 500 ms by default) and a power loss only after [`Vault::sync`]. A checkpoint
    /// already stored at the same agent and LSN is replaced.
    ///
    /// Fails with [`Error::TooLarge`] for a state over
    /// [`Config::max_value_bytes`](crate::Config::max_value_bytes), before storing anything.
    ///
    /// ```
    /// use arbor_vault::{AgentId, Config, ModuleHash, NewCheckpoint, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let agent = AgentId::new("counter")?;
    /// let meta = vault.put_checkpoint(&NewCheckpoint {
    ///     agent: &agent,
    ///     lsn: 41,
    ///     seq: 0,
    ///     module: ModuleHash::of(b"module bytes"),
    ///     abi_version: 1,
    ///     state_schema: 1,
    ///     state: b"\x81\xa5count\x2a",
    /// })?;
    /// assert_eq!(meta.lsn, 41);
    /// let back = vault.latest(&agent)?.expect("stored");
    /// assert_eq!(back.state, b"\x81\xa5count\x2a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_checkpoint(&self, checkpoint: &NewCheckpoint<'_>) -> Result<CheckpointMeta> {
        let config = &self.inner.config;
        let agent = checkpoint.agent;
        config.check_size(
            || format!("state of agent {agent} at lsn {}", checkpoint.lsn),
            checkpoint.state.len(),
        )?;
        let (meta, compressed) = seal_checkpoint(checkpoint, config.zstd_level)?;
        if compressed.len() as u64 > codec::MAX_BODY {
            return Err(Error::TooLarge {
                what: format!(
                    "compressed state of agent {agent} at lsn {}",
                    checkpoint.lsn
                ),
                size: compressed.len() as u64,
                max: codec::MAX_BODY,
            });
        }
        self.store_checkpoint(&meta, &compressed)?;
        Ok(meta)
    }

    /// Stores already-compressed state under `meta` (used by `put_checkpoint` and by import,
    /// which have both verified what they store).
    pub(crate) fn store_checkpoint(&self, meta: &CheckpointMeta, compressed: &[u8]) -> Result<()> {
        debug_assert_eq!(meta.compressed_bytes, compressed.len() as u64);
        let inner = &*self.inner;
        let key = checkpoint_key(&meta.agent, meta.lsn);
        let meta_body = codec::to_msgpack("checkpoint metadata", meta)?;
        let meta_value = IVec::from(codec::encode(&key, Kind::CheckpointMeta, &meta_body));
        let state_value = IVec::from(codec::encode(&key, Kind::CheckpointState, compressed));
        (&inner.checkpoints, &inner.checkpoint_states)
            .transaction(|(metas, states)| {
                metas.insert(key.as_slice(), meta_value.clone())?;
                states.insert(key.as_slice(), state_value.clone())?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(tx_error(tree::CHECKPOINTS))
    }

    /// Decodes a metadata value read at `key`, checking it names the same agent and LSN.
    fn decode_meta(&self, key: &[u8], value: &[u8]) -> Result<CheckpointMeta> {
        let (agent, lsn) = parse_key(tree::CHECKPOINTS, key)?;
        let render = || render_key(&agent, lsn);
        let body = codec::decode(tree::CHECKPOINTS, key, render, Kind::CheckpointMeta, value)?;
        let meta: CheckpointMeta = codec::from_msgpack(tree::CHECKPOINTS, render, body)?;
        if meta.agent != agent || meta.lsn != lsn {
            return Err(Error::corrupt(
                tree::CHECKPOINTS,
                render(),
                format!("metadata is for {}", render_key(&meta.agent, meta.lsn)),
            ));
        }
        Ok(meta)
    }

    /// Reads, verifies and decompresses the state belonging to `meta`.
    fn load_state(&self, meta: CheckpointMeta) -> Result<Checkpoint> {
        let inner = &*self.inner;
        let key = checkpoint_key(&meta.agent, meta.lsn);
        let render = || render_key(&meta.agent, meta.lsn);
        let tree = tree::CHECKPOINT_STATES;
        let value = inner
            .checkpoint_states
            .get(&key)
            .map_err(|e| Error::from_sled_read(tree, render, e))?
            .ok_or_else(|| Error::corrupt(tree, render(), "state missing for stored metadata"))?;
        let compressed = codec::decode(tree, &key, render, Kind::CheckpointState, &value)?;
        if compressed.len() as u64 != meta.compressed_bytes {
            return Err(Error::corrupt(
                tree,
                render(),
                format!(
                    "state is {} bytes, metadata says {}",
                    compressed.len(),
                    meta.compressed_bytes
                ),
            ));
        }
        let state = self.decompress_verified(&meta, compressed, tree, render)?;
        Ok(Checkpoint { meta, state })
    }

    /// Decompresses `compressed` and checks it against `meta`'s size and checksum.
    pub(crate) fn decompress_verified(
        &self,
        meta: &CheckpointMeta,
        compressed: &[u8],
        tree: &'static str,
        render: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        let config = &self.inner.config;
        config.check_size(
            || format!("state of agent {} at lsn {}", meta.agent, meta.lsn),
            usize::try_from(meta.uncompressed_bytes).unwrap_or(usize::MAX),
        )?;
        // The capacity is checked above, so a corrupt size cannot make us allocate without bound.
        let state =
            zstd::bulk::decompress(compressed, meta.uncompressed_bytes as usize).map_err(|e| {
                Error::corrupt(tree, render(), format!("state does not decompress: {e}"))
            })?;
        if state.len() as u64 != meta.uncompressed_bytes {
            return Err(Error::corrupt(
                tree,
                render(),
                format!(
                    "state decompresses to {} bytes, metadata says {}",
                    state.len(),
                    meta.uncompressed_bytes
                ),
            ));
        }
        if *blake3::hash(&state).as_bytes() != meta.state_checksum {
            return Err(Error::corrupt(
                tree,
                render(),
                "decompressed state checksum mismatch",
            ));
        }
        Ok(state)
    }

    /// The metadata of one checkpoint, without reading its state.
    pub fn checkpoint_meta(&self, agent: &AgentId, lsn: u64) -> Result<Option<CheckpointMeta>> {
        let key = checkpoint_key(agent, lsn);
        let value =
            self.inner.checkpoints.get(&key).map_err(|e| {
                Error::from_sled_read(tree::CHECKPOINTS, || render_key(agent, lsn), e)
            })?;
        value.map(|v| self.decode_meta(&key, &v)).transpose()
    }

    /// One checkpoint, verified and decompressed; [`Error::Corrupt`] naming the key if any part of
    /// it fails verification.
    pub fn get_checkpoint(&self, agent: &AgentId, lsn: u64) -> Result<Option<Checkpoint>> {
        match self.checkpoint_meta(agent, lsn)? {
            Some(meta) => self.load_state(meta).map(Some),
            None => Ok(None),
        }
    }

    /// Metadata of the agent's checkpoints with LSN ≤ `lsn`, newest first (lazily: each item is
    /// decoded when reached).
    fn metas_at_or_before(
        &self,
        agent: &AgentId,
        lsn: u64,
    ) -> impl Iterator<Item = (u64, Result<CheckpointMeta>)> + '_ {
        let start = checkpoint_key(agent, 0);
        let end = checkpoint_key(agent, lsn);
        self.inner
            .checkpoints
            .range(start..=end)
            .rev()
            .map(move |item| match item {
                Ok((key, value)) => {
                    let lsn = parse_key(tree::CHECKPOINTS, &key).map_or(0, |(_, lsn)| lsn);
                    (lsn, self.decode_meta(&key, &value))
                }
                Err(source) => (
                    0,
                    Err(Error::Sled {
                        op: "scan",
                        tree: tree::CHECKPOINTS,
                        source,
                    }),
                ),
            })
    }

    /// The newest checkpoint of `agent`, verified; [`Error::Corrupt`] if it does not verify (use
    /// [`Vault::latest_valid`] to fall back to an older one instead).
    pub fn latest(&self, agent: &AgentId) -> Result<Option<Checkpoint>> {
        self.latest_at_or_before(agent, u64::MAX)
    }

    /// The newest checkpoint of `agent` with LSN ≤ `lsn`, verified.
    pub fn latest_at_or_before(&self, agent: &AgentId, lsn: u64) -> Result<Option<Checkpoint>> {
        match self.metas_at_or_before(agent, lsn).next() {
            Some((_, meta)) => self.load_state(meta?).map(Some),
            None => Ok(None),
        }
    }

    /// The metadata of the newest checkpoint of `agent`, without reading its state.
    pub fn latest_meta(&self, agent: &AgentId) -> Result<Option<CheckpointMeta>> {
        self.metas_at_or_before(agent, u64::MAX)
            .next()
            .map(|(_, meta)| meta)
            .transpose()
    }

    /// The newest checkpoint of `agent` that verifies completely (both frames' checksums, sizes,
    /// the decompressed state's checksum), skipping corrupt ones and reporting them in
    /// [`LatestValid::skipped`]. Errors other than a corrupt value (I/O, sled) are returned.
    ///
    /// ```
    /// use arbor_vault::{AgentId, Config, ModuleHash, NewCheckpoint, Vault};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let vault = Vault::open(dir.path(), Config::default())?;
    /// let agent = AgentId::new("kv")?;
    /// let found = vault.latest_valid(&agent)?;
    /// assert!(found.checkpoint.is_none() && found.skipped.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn latest_valid(&self, agent: &AgentId) -> Result<LatestValid> {
        self.latest_valid_at_or_before(agent, u64::MAX)
    }

    /// [`Vault::latest_valid`] among checkpoints with LSN ≤ `lsn`.
    pub fn latest_valid_at_or_before(&self, agent: &AgentId, lsn: u64) -> Result<LatestValid> {
        let mut skipped = Vec::new();
        for (lsn, meta) in self.metas_at_or_before(agent, lsn) {
            match meta.and_then(|meta| self.load_state(meta)) {
                Ok(checkpoint) => {
                    return Ok(LatestValid {
                        checkpoint: Some(checkpoint),
                        skipped,
                    });
                }
                Err(error) if error.is_corrupt() => skipped.push(Skipped { lsn, error }),
                Err(error) => return Err(error),
            }
        }
        Ok(LatestValid {
            checkpoint: None,
            skipped,
        })
    }

    /// Metadata of all checkpoints of `agent`, oldest first, without reading states. A corrupt
    /// metadata value is an error naming its key.
    pub fn list_checkpoints(&self, agent: &AgentId) -> Result<Vec<CheckpointMeta>> {
        let mut out: Vec<CheckpointMeta> = self
            .metas_at_or_before(agent, u64::MAX)
            .map(|(_, meta)| meta)
            .collect::<Result<_>>()?;
        out.reverse();
        Ok(out)
    }

    /// Every agent that has at least one checkpoint, in key order.
    pub fn checkpoint_agents(&self) -> Result<Vec<AgentId>> {
        let checkpoints = &self.inner.checkpoints;
        let mut agents = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(item) = checkpoints.range(from.as_slice()..).next() else {
                return Ok(agents);
            };
            let (key, _) = item.map_err(Error::sled("scan", tree::CHECKPOINTS))?;
            let (agent, _) = parse_key(tree::CHECKPOINTS, &key)?;
            // Skip past every key of this agent: they all start with `agent ‖ 0x00`, so the next
            // agent's keys start at or after `agent ‖ 0x01`.
            from = agent.as_bytes().to_vec();
            from.push(1);
            agents.push(agent);
        }
    }

    /// Deletes one checkpoint (metadata and state together); returns whether it existed.
    pub fn delete_checkpoint(&self, agent: &AgentId, lsn: u64) -> Result<bool> {
        let inner = &*self.inner;
        let key = checkpoint_key(agent, lsn);
        (&inner.checkpoints, &inner.checkpoint_states)
            .transaction(|(metas, states)| {
                let had_meta = metas.remove(key.as_slice())?.is_some();
                let had_state = states.remove(key.as_slice())?.is_some();
                Ok::<_, ConflictableTransactionError<Error>>(had_meta || had_state)
            })
            .map_err(tx_error(tree::CHECKPOINTS))
    }

    /// Keeps the newest `keep_last` checkpoints of `agent` (never fewer than 2, whatever
    /// `keep_last` says) and deletes older ones; returns the deleted LSNs, oldest first.
    ///
    /// Only checkpoints whose metadata verifies count towards the number kept; states are not
    /// read (that would cost a full read per checkpoint), so call it right after a
    /// [`Vault::put_checkpoint`] that succeeded. A corrupt checkpoint newer than the oldest kept
    /// one is left in place (for inspection; [`Vault::latest_valid`] skips it).
    pub fn retain(&self, agent: &AgentId, keep_last: usize) -> Result<Vec<u64>> {
        self.retain_keeping(agent, keep_last, None)
    }

    /// [`Vault::retain`] that also keeps the checkpoint at `also` (e.g. the one the runtime
    /// keeps history from, for the evolution arbiter's replay gate), however old.
    pub fn retain_keeping(
        &self,
        agent: &AgentId,
        keep_last: usize,
        also: Option<u64>,
    ) -> Result<Vec<u64>> {
        let keep = keep_last.max(2);
        let mut kept = 0;
        let mut doomed = Vec::new();
        for (lsn, meta) in self.metas_at_or_before(agent, u64::MAX) {
            if Some(lsn) == also {
                continue;
            }
            match meta {
                Ok(_) if kept < keep => kept += 1,
                Ok(_) => doomed.push(lsn),
                Err(e) if e.is_corrupt() && kept < keep => {}
                Err(e) if e.is_corrupt() => doomed.push(lsn),
                Err(e) => return Err(e),
            }
        }
        doomed.reverse();
        for &lsn in &doomed {
            self.delete_checkpoint(agent, lsn)?;
        }
        Ok(doomed)
    }

    /// The LSN up to which the runtime may release (delete) WAL records of `agent`: the LSN of the
    /// **second-newest** checkpoint that verifies completely, after [`Vault::sync`] has made
    /// every checkpoint stored so far durable. `None` while fewer than two checkpoints verify:
    /// keep all of the agent's WAL.
    ///
    /// Why the older of two: the newest checkpoint is the one a crash, a bug or bit rot is most
    /// likely to have damaged; with the WAL kept back to the previous checkpoint, recovery can
    /// always fall back to it ([`Vault::latest_valid`]) and replay a longer tail. Keep at least
    /// two checkpoints per agent ([`Vault::retain`] enforces it).
    ///
    /// Costs one `sync` and reading, decompressing and hashing the checkpoints it walks (usually
    /// the newest two): call it when deciding to delete WAL segments, not per message.
    pub fn safe_release_lsn(&self, agent: &AgentId) -> Result<Option<u64>> {
        self.sync()?;
        self.second_valid_lsn(agent)
    }

    /// [`Vault::safe_release_lsn`] for every agent with checkpoints, with a single `sync`. Agents
    /// mapped to `None` pin their whole WAL; agents with no checkpoint at all are not listed (the
    /// runtime knows them from its registry and must keep their WAL too).
    pub fn safe_release_lsns(&self) -> Result<BTreeMap<AgentId, Option<u64>>> {
        self.sync()?;
        let mut out = BTreeMap::new();
        for agent in self.checkpoint_agents()? {
            let lsn = self.second_valid_lsn(&agent)?;
            out.insert(agent, lsn);
        }
        Ok(out)
    }

    fn second_valid_lsn(&self, agent: &AgentId) -> Result<Option<u64>> {
        let mut valid = 0;
        for (lsn, meta) in self.metas_at_or_before(agent, u64::MAX) {
            match meta.and_then(|meta| self.load_state(meta)) {
                Ok(_) => {
                    valid += 1;
                    if valid == 2 {
                        return Ok(Some(lsn));
                    }
                }
                Err(error) if error.is_corrupt() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }
}

/// `#[serde(with = "digest")]`: a 32-byte digest as MessagePack `bin`.
pub(crate) mod digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        // ModuleHash reads the same shape (bytes, a 32-number sequence or hex).
        crate::ids::ModuleHash::deserialize(deserializer).map(|h| *h.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_agent_then_lsn_and_parse_back() {
        let a = AgentId::new("kv").unwrap_or_else(|e| panic!("{e}"));
        let b = AgentId::new("kv-1").unwrap_or_else(|e| panic!("{e}"));
        let mut keys = [
            checkpoint_key(&b, 1),
            checkpoint_key(&a, 256),
            checkpoint_key(&a, 1),
            checkpoint_key(&a, u64::MAX),
        ];
        keys.sort();
        let parsed: Vec<_> = keys
            .iter()
            .map(|k| parse_key("t", k).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(
            parsed,
            vec![
                (a.clone(), 1),
                (a.clone(), 256),
                (a.clone(), u64::MAX),
                (b, 1)
            ]
        );
        assert!(parse_key("t", b"short").is_err());
        assert!(parse_key("t", b"kv\x01\0\0\0\0\0\0\0\x01").is_err());
    }
}
