//! `arbor-vault`: where agent state, agent code and every evolution decision are kept — one sled
//! database (sled `=0.34.7`) under the runtime's data directory.
//!
//! It knows nothing of actors or of the WAL crate: LSNs are plain `u64`s, agents are
//! [`AgentId`]s, modules are [`ModuleHash`]es.
//!
//! # Trees and keys
//!
//! | tree                | key                                          | value (body of a frame)                  |
//! | ------------------- | -------------------------------------------- | ---------------------------------------- |
//! | `vault_meta`        | `format_version`                             | u32 LE: the vault format version (1)     |
//! | `checkpoints`       | agent id ‖ `0x00` ‖ LSN (u64 big-endian)     | [`CheckpointMeta`], MessagePack, named   |
//! | `checkpoint_states` | same key as `checkpoints`                    | the state, zstd-compressed               |
//! | `modules`           | [`ModuleHash`] (32 bytes, BLAKE3 of the Wasm) | [`ModuleMeta`], MessagePack, named       |
//! | `module_bytes`      | same key as `modules`                        | the Wasm bytes                           |
//! | `lineage`           | sequence number (u64 big-endian, from 1)     | time + [`LineageEvent`], MessagePack     |
//! | `agents`            | agent id                                     | [`AgentRecord`], MessagePack, named      |
//! | `archive`           | agent id ‖ `0x00` ‖ [`ModuleHash`]           | [`ArchiveEntry`], MessagePack, named     |
//!
//! Checkpoint keys of agent `kv` at LSN 42 are `6b 76 00 00 00 00 00 00 00 00 2a`: big-endian
//! LSNs sort numerically, so "the latest checkpoint at or before LSN L" is one reverse range scan
//! over `kv ‖ 00 ‖ 0 ..= kv ‖ 00 ‖ L`; agent ids contain no NUL, so agent `kv`'s range never
//! includes a key of agent `kv-1` (`6b 76 2d 31 00 …`). A checkpoint's metadata and state, and a
//! module's metadata and bytes, are each written in one sled transaction (crash-atomic: sled
//! recovers a transaction's writes together or not at all); every other value is one insert.
//!
//! # Value layout
//!
//! Every value in every tree is a frame (`codec.rs`):
//!
//! ```text
//! offset  size  field
//!      0     2  magic "AV"
//!      2     1  format version (1)
//!      3     1  kind: 1 vault meta, 2 checkpoint meta, 3 checkpoint state, 4 module meta,
//!               5 module bytes, 6 lineage event, 7 agent record, 8 archive entry
//!      4     4  body length n, u32 little-endian
//!      8    32  BLAKE3 of: key length (u32 LE) ‖ key ‖ bytes 0..8 ‖ body
//!     40     n  body
//! ```
//!
//! The checksum covers the key too, so a value under the wrong key is caught like a flipped bit.
//! Every read verifies the frame; a checkpoint read also checks that the state decompresses to
//! the size in its metadata and that the decompressed bytes hash to its
//! [`CheckpointMeta::state_checksum`]; a module read checks the bytes hash to their key. A value
//! that fails is [`Error::Corrupt`] naming the tree and the key (`kv@42`). Opening a vault whose
//! format version is newer than [`Vault::FORMAT_VERSION`] is [`Error::UnsupportedVersion`], never
//! a misread.
//!
//! # Guarantees
//!
//! sled 0.34.7 writes its log with `pwrite` + `sync_file_range` on [`Vault::flush`]: the data
//! reaches the disk's queue but neither the disk's cache nor the file's metadata is flushed, and
//! the separate blob files sled uses for large values (over ~128 KiB) are never fsynced by sled.
//! Its background thread (every 500 ms by default) adds an fsync of the log file only.
//! [`Vault::sync`] adds what is missing: fsync of every file of the database and of its
//! directories. So:
//!
//! | failure | after `put_*` returned | after [`Vault::flush`] | after [`Vault::sync`] |
//! | --- | --- | --- | --- |
//! | process crash (panic, abort, SIGKILL, OOM kill) | may be lost, whole (sled's background flush narrows the window to ~500 ms); never half-stored | kept | kept |
//! | power loss, kernel crash | may be lost, or found corrupt | may be lost, or found corrupt | kept, as far as the disk honours fsync and sled's recovery reads back what it wrote |
//! | corrupt value on disk (bit rot, bad sector, a stray write) | detected on read: [`Error::Corrupt`] naming tree and key; [`Vault::latest_valid`] falls back to the previous checkpoint | same | same |
//! | torn value (crash mid-write) | never visible: transactions plus sled's log CRCs drop it whole, and any remaining damage fails the value's checksum | same | same |
//!
//! Tests behind the rows: `tests/kill_checkpoints.rs` (SIGKILL at random moments: every
//! checkpoint reported after `flush` is there and whole, no half checkpoint anywhere),
//! `tests/corruption.rs` (flipped bytes found and named, fallback), `tests/checkpoints.rs`. The
//! power-loss column is not tested here (it needs a fault-injecting block device); it is why the
//! WAL, not the vault, is the source of truth.
//!
//! ## The rule for releasing WAL segments
//!
//! A checkpoint at LSN L covers every WAL record with LSN ≤ L. The runtime may delete WAL
//! records of an agent only up to the LSN of the **older** of the agent's two newest valid
//! checkpoints, and only once those checkpoints are durable: [`Vault::safe_release_lsn`] (one
//! agent) and [`Vault::safe_release_lsns`] (all) do both — they [`Vault::sync`] and then verify
//! checkpoints newest first, returning the second valid one's LSN (`None`: keep everything).
//! Keeping the WAL back to the older checkpoint means a newest checkpoint found damaged later
//! still leaves a covered fallback: recovery takes [`Vault::latest_valid`] and replays a longer
//! tail. [`Vault::retain`] never keeps fewer than two checkpoints for the same reason.
//!
//! # Example
//!
//! ```
//! use arbor_vault::{
//!     AgentId, Config, LineageEvent, ModuleInfo, NewCheckpoint, Vault,
//! };
//!
//! let dir = tempfile::tempdir()?;
//! let vault = Vault::open(dir.path(), Config::default().zstd_level(3).max_value_bytes(64 << 20))?;
//!
//! // Code: stored once per distinct content.
//! let wasm = b"\0asm\x01\0\0\0";
//! let info = ModuleInfo {
//!     name: "counter".into(),
//!     version_label: "1.0".into(),
//!     abi_version: 1,
//!     origin: "example".into(),
//! };
//! let module = vault.put_module(wasm, &info)?.meta.hash;
//! vault.append_lineage(LineageEvent::ModuleAdmitted {
//!     agent: AgentId::new("counter-1")?,
//!     parent: None,
//!     candidate: module,
//! })?;
//!
//! // State: a checkpoint every so many WAL records.
//! let agent = AgentId::new("counter-1")?;
//! for (lsn, count) in [(100u64, 10u8), (200, 20), (300, 30)] {
//!     let state = [0x81, 0xa5, b'c', b'o', b'u', b'n', b't', count];
//!     vault.put_checkpoint(&NewCheckpoint {
//!         agent: &agent,
//!         lsn,
//!         seq: 0,
//!         module,
//!         abi_version: 1,
//!         state_schema: 1,
//!         state: &state,
//!     })?;
//! }
//! vault.retain(&agent, 2)?; // drops LSN 100
//!
//! // Recovery: newest valid checkpoint, then replay the WAL after its LSN.
//! let found = vault.latest_valid(&agent)?;
//! let checkpoint = found.checkpoint.expect("a checkpoint");
//! assert_eq!(checkpoint.meta.lsn, 300);
//! assert_eq!(checkpoint.state.last(), Some(&30));
//!
//! // WAL truncation: records up to LSN 200 may go.
//! assert_eq!(vault.safe_release_lsn(&agent)?, Some(200));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod archive;
mod checkpoint;
mod codec;
mod config;
mod error;
mod export;
mod ids;
mod lineage;
mod module;
mod registry;
mod vault;

pub use archive::{ArchiveEntry, Origin, Reached};
pub use checkpoint::{
    Checkpoint, CheckpointMeta, LatestValid, NewCheckpoint, Skipped, open_checkpoint,
    seal_checkpoint,
};
pub use config::Config;
pub use error::{Error, Result};
pub use ids::{AgentId, ModuleHash};
pub use lineage::{Evidence, LineageEvent, LineageRecord, Step, Verdict};
pub use module::{ModuleInfo, ModuleMeta, PutModule};
pub use registry::{AgentRecord, AgentState, Behaviour, Limits};
pub use vault::Vault;
