//! The arbor example agents as built Wasm modules, and the hostile fixtures as WAT text, for host
//! tests, benches and the demo.
//!
//! The agents are written in Rust against the `arbor-guest` SDK in `modules/guest`, a separate
//! cargo workspace. This crate's build script compiles that workspace for
//! `wasm32-unknown-unknown` (release: `opt-level = "s"`, LTO, `panic = "abort"`, DWARF stripped)
//! and embeds every module, so a host test just uses the bytes:
//!
//! ```
//! let kv: &[u8] = arbor_modules::KV;
//! assert_eq!(&kv[..4], b"\0asm");
//! assert_eq!(arbor_modules::module("kv-v2"), Some(arbor_modules::KV_V2));
//! assert!(arbor_modules::fixtures::TRAP.contains("unreachable"));
//!
//! // One of the deliberately defective kv candidates, for testing the evolution arbiter.
//! use arbor_modules::{Hostile, kv_hostile};
//! assert_ne!(kv_hostile(Hostile::RarePrefix), kv_hostile(Hostile::Kv));
//! ```
//!
//! Every module speaks ABI version 1 (`modules/ABI.md`): it exports `memory`, `arbor_abi_version`,
//! `arbor_alloc`, `arbor_configure`, `arbor_init`, `arbor_handle`, `arbor_snapshot`,
//! `arbor_restore` and `arbor_last_error`, plus the two globals rustc gives every wasm32-unknown-unknown module,
//! `__data_end` and `__heap_base`; and it imports from `arbor` exactly the functions its code
//! calls. Payloads are MessagePack with named fields; each constant below gives its agent's
//! protocol, and the agents' crate docs give it in full.
//!
//! | module | role | imports |
//! |---|---|---|
//! | [`COUNTER`] | the smallest agent | none |
//! | [`KV`] | the v1 key-value store, naive on purpose | none |
//! | [`KV_V2`] | kv rewritten: same answers, much less fuel, new state layout that migrates kv's | none |
//! | [`KV_BUGGY`] | kv, wrong on ~1% of `Get`s | none |
//! | [`KV_SLOW`] | kv's answers at ~900k extra fuel per message | none |
//! | [`KV_PLACEBO`] | kv's behaviour, different bytes | none |
//! | [`KV_BADMIGRATE`] | kv's behaviour; cannot restore kv's state | none |
//! | [`KV_HOSTILE`] | kv as built; [`kv_hostile`] patches in one of ten [`Hostile`] defects | none |
//! | [`CACHE`] | records behind a read cache tuned by its parameters | none |
//! | [`TOOLBOX`] | calls every import | `log`, `send`, `now`, `random`, `call_tool` |
//!
//! The agents' protocols are host-side types here, the very types the guests use: [`counter`],
//! [`kv`] and [`toolbox`] re-export `arbor-protocols` (`modules/protocols`), which both
//! workspaces build. [`fnv1a`] is the hash by which the test variants pick the inputs they get
//! wrong ([`kv::is_unlucky`], several [`Hostile`] variants), so tests can predict them.
//!
//! Building needs the `wasm32-unknown-unknown` target (`rustup target add
//! wasm32-unknown-unknown`); the build script says so if it is missing.

#![deny(missing_docs)]

mod hostile;

pub use hostile::{Hostile, kv_hostile};

macro_rules! guest_module {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// `counter`: `{"Inc": {"by": i64}}` / `"Get"` / `"Reset"` → `{"count": i64}`; `"Fail"` traps
/// (a guest panic). State `{"count": i64}`. Imports nothing. Types: [`counter`].
pub const COUNTER: &[u8] = guest_module!("counter.wasm");

/// `kv`, the v1 store: `{"Get": {"key"}}` → `{"Value": {"value": str|nil}}`,
/// `{"Put": {"key", "value"}}` → `{"Stored": {"replaced": bool}}`, `{"Delete": {"key"}}` →
/// `{"Deleted": {"existed": bool}}`, `{"Scan": {"prefix", "limit": u32}}` →
/// `{"Entries": {"entries": [{"key", "value"}]}}` (key order). Keys and values are strings.
/// State: the bare map `{key: value}`. Written naively on purpose — `Get` is a linear walk,
/// writes look up twice, `Scan` copies the whole map — so that [`KV_V2`] can be cheaper.
/// Types: [`kv`].
pub const KV: &[u8] = guest_module!("kv.wasm");

/// `kv-v2`: kv's protocol and the same answer to every input, with direct lookups and a range
/// seek for `Scan`: about half kv's fuel per message over 100 keys, a tenth over 1,000. State
/// `{"version": 2, "entries": {key: value}}`; its restore also accepts (migrates) kv's state.
pub const KV_V2: &[u8] = guest_module!("kv_v2.wasm");

/// `kv-buggy`: kv, except that `Get` of a present key whose 64-bit FNV-1a hash is divisible by
/// 100 answers `{"Value": {"value": nil}}`. Same state layout as kv.
pub const KV_BUGGY: &[u8] = guest_module!("kv_buggy.wasm");

/// `kv-slow`: kv's answers and state after a deterministic busy loop of about 900,000 fuel per
/// message (~50x kv over 100 keys).
pub const KV_SLOW: &[u8] = guest_module!("kv_slow.wasm");

/// `kv-placebo`: kv's behaviour, state and fuel, built from a source that differs only in an
/// error message no kv message can trigger, so its bytes (and content hash) differ from kv's.
pub const KV_PLACEBO: &[u8] = guest_module!("kv_placebo.wasm");

/// `kv-badmigrate`: kv's answers; its state is `{"schema": 1, "entries": {...}}` and restoring
/// kv's state fails with error code -2 (missing `schema`). Restores its own state fine.
pub const KV_BADMIGRATE: &[u8] = guest_module!("kv_badmigrate.wasm");

/// `kv-hostile` as built: a test fixture of deliberately defective kv candidates whose defect is
/// a byte in its data, 0 (kv's behaviour, a placebo) here. Use [`kv_hostile`] for the module of
/// each [`Hostile`] variant; this constant is `kv_hostile(Hostile::Kv)`.
pub const KV_HOSTILE: &[u8] = guest_module!("kv_hostile.wasm");

/// `cache`: `{"Put": {"key": u32, "value"}}` → `"Stored"`, `{"Get": {"key": u32}}` →
/// `{"Value": {"value": str|nil}}`, records behind a read cache whose capacity, eviction policy
/// and admission rule are the module's parameters (`arbor:params`; the space it declares is in
/// its `arbor:tunables` section). Every configuration answers the same and keeps the same state
/// (`{"records": {key: value}}`); fuel per read is lowest at a capacity that depends on the
/// traffic. Types: [`cache`].
pub const CACHE: &[u8] = guest_module!("cache.wasm");

/// `toolbox`: `"Now"`, `"Random"`, `{"Echo": {"text"}}` (tool `echo`, which must return its
/// arguments), `{"Send": {"to", "by": i64}}` (sends counter's `{"Inc": {"by"}}` to `to`),
/// `{"Log": {"level": 0..=4, "text"}}`, and `{"All": {"to", "by", "text"}}` (all five imports,
/// answered with `{"Report": {"nanos", "value", "echoed", "sent"}}`). State
/// `{"handled": u64, "digest": u64}`, the digest folding in every import result, so replay with
/// different import answers shows in the snapshot. Types: [`toolbox`].
pub const TOOLBOX: &[u8] = guest_module!("toolbox.wasm");

/// Every example module by its agent's name (kv-hostile as built; its variants come from
/// [`kv_hostile`]).
pub const MODULES: &[(&str, &[u8])] = &[
    ("counter", COUNTER),
    ("kv", KV),
    ("kv-v2", KV_V2),
    ("kv-buggy", KV_BUGGY),
    ("kv-slow", KV_SLOW),
    ("kv-placebo", KV_PLACEBO),
    ("kv-badmigrate", KV_BADMIGRATE),
    ("kv-hostile", KV_HOSTILE),
    ("toolbox", TOOLBOX),
    ("cache", CACHE),
];

/// The module of the agent `name` (as in [`MODULES`]), if there is one.
pub fn module(name: &str) -> Option<&'static [u8]> {
    MODULES
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, bytes)| *bytes)
}

pub use arbor_protocols::{cache, counter, fnv1a, kv, toolbox};

/// Hand-written WAT modules, each a complete ABI v1 module except for exactly one defect, which
/// its leading comment states. Turn them into bytes with wasmtime's `Module::new` (it accepts
/// text) or the `wat` crate.
pub mod fixtures {
    /// `arbor_handle` spins forever: only fuel or an epoch deadline stops it.
    pub const INFINITE_LOOP: &str = include_str!("../../fixtures/infinite_loop.wat");
    /// `arbor_handle` grows memory 64 MiB at a time towards 4 GiB, then traps when growth is
    /// denied; it never touches the pages.
    pub const MEMORY_BOMB: &str = include_str!("../../fixtures/memory_bomb.wat");
    /// `arbor_handle` executes `unreachable`.
    pub const TRAP: &str = include_str!("../../fixtures/trap.wat");
    /// No `arbor_handle` export.
    pub const MISSING_EXPORT: &str = include_str!("../../fixtures/missing_export.wat");
    /// `arbor_abi_version` returns 99.
    pub const WRONG_ABI: &str = include_str!("../../fixtures/wrong_abi.wat");
    /// Imports `arbor.call_tool` (correctly typed); refuse it when `call_tool` is not granted.
    /// With the grant, `arbor_handle` replies with what the tool `echo` returns for its input
    /// (nil if the tool fails).
    pub const UNGRANTED_IMPORT: &str = include_str!("../../fixtures/ungranted_import.wat");
    /// `arbor_handle` has type `(i32, i32) -> i32` instead of `(i32, i32) -> i64`.
    pub const BAD_SIGNATURE: &str = include_str!("../../fixtures/bad_signature.wat");

    /// Every fixture by its file stem.
    pub const ALL: &[(&str, &str)] = &[
        ("infinite_loop", INFINITE_LOOP),
        ("memory_bomb", MEMORY_BOMB),
        ("trap", TRAP),
        ("missing_export", MISSING_EXPORT),
        ("wrong_abi", WRONG_ABI),
        ("ungranted_import", UNGRANTED_IMPORT),
        ("bad_signature", BAD_SIGNATURE),
    ];
}
