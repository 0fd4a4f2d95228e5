//! The shared engine: one wasmtime [`Engine`] for every agent, its epoch ticker, the linker with
//! the `arbor` imports, and the cache of checked, precompiled modules.
//!
//! The cache, and why it holds what it holds: a compiled module with a data segment keeps a
//! memfd (its copy-on-write memory image) and a few memory mappings until it is dropped, so a
//! host that kept every module it ever loaded would run out of file descriptors or mappings
//! after some tens of thousands of them (the evolution arbiter loads a module per candidate).
//! So the cache refers to modules in use only weakly, and holds strongly just a bounded list of
//! recently released ones:
//!
//! | a module is … | held by | found by hash |
//! |---|---|---|
//! | in use (a [`LoadedModule`] clone exists: an agent, a shadow, an evaluation, a caller) | its users | yes, the same compiled module |
//! | idle, among the last [`EngineConfig::idle_modules`] released | the idle list | yes, without compiling |
//! | idle, released before those | nobody: dropped | no: [`WasmHost::load`] compiles it again |

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arbor_vault::ModuleHash;
use parking_lot::Mutex;
use wasmtime::{
    Config, Engine, ExternType, FuncType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    OptLevel, PoolingAllocationConfig,
};

use super::abi::{self, Import};
use super::error::LoadError;
use super::imports::{self, StoreState};

/// How the shared engine is sized. The pool reserves address space (not memory) for
/// `max_instances` instances up front, so instantiation is a slot lookup and a copy-on-write
/// mapping of the module's memory image.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many agent instances may be live at once (pool slots).
    pub max_instances: u32,
    /// The largest linear memory any agent may have; each agent's own cap
    /// ([`AgentLimits::memory_bytes`](super::AgentLimits::memory_bytes)) is at most this.
    pub max_memory_bytes: u64,
    /// The largest table (function references) a module may define.
    pub max_table_elements: usize,
    /// How often the epoch advances; per-message deadlines are counted in these ticks.
    pub epoch_tick: Duration,
    /// How many idle compiled modules (ones no [`LoadedModule`] refers to any more: their
    /// agents, shadows and evaluations have stopped) stay in memory, the most recently released
    /// first, so that restarting an agent does not compile its module again. A module in use is
    /// always kept and shared, whatever this bound; an idle module beyond it is dropped with its
    /// compiled code, memory image (a file descriptor) and mappings, and is compiled again if
    /// it is loaded again. 0 drops every module as soon as nothing uses it.
    pub idle_modules: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 10_000,
            max_memory_bytes: 64 << 20,
            max_table_elements: 10_000,
            epoch_tick: Duration::from_millis(1),
            idle_modules: 32,
        }
    }
}

/// A module that passed the ABI v1 load checks and is compiled and pre-linked, ready to
/// instantiate many times. Cheap to clone (shared). While any clone (or an instance made from
/// it) exists the module stays compiled and [`WasmHost::cached`] finds it; after the last is
/// dropped it is idle (see [`EngineConfig::idle_modules`]).
#[derive(Clone)]
pub struct LoadedModule {
    users: Arc<Users>,
}

/// What every clone of one [`LoadedModule`] shares. Dropping the last clone hands the module
/// to the host's idle list.
struct Users {
    compiled: Arc<Compiled>,
    cache: Weak<Mutex<Cache>>,
}

impl Drop for Users {
    fn drop(&mut self) {
        // The host may be gone; then the module simply goes with this.
        if let Some(cache) = self.cache.upgrade() {
            let evicted = cache.lock().release(Arc::clone(&self.compiled));
            // Dropped outside the lock: dropping a module unmaps its code and image.
            drop(evicted);
        }
    }
}

/// The compiled, pre-linked module.
struct Compiled {
    hash: ModuleHash,
    /// BLAKE3 of everything but the sections that do not reach the code ([`code_key`]):
    /// modules that differ only there share one compilation.
    code: [u8; 32],
    pre: InstancePre<StoreState>,
    imports: Vec<Import>,
    /// The `arbor:params` section, when the module exports `arbor_configure` (empty without
    /// the section).
    params: Option<Arc<[u8]>>,
}

impl LoadedModule {
    /// The BLAKE3 hash of the module's bytes.
    pub fn hash(&self) -> ModuleHash {
        self.users.compiled.hash
    }

    /// The `arbor` imports the module declares (each must be granted to instantiate it).
    pub fn imports(&self) -> Vec<&'static str> {
        self.users
            .compiled
            .imports
            .iter()
            .map(|i| i.name())
            .collect()
    }

    pub(crate) fn pre(&self) -> &InstancePre<StoreState> {
        &self.users.compiled.pre
    }

    pub(crate) fn import_list(&self) -> &[Import] {
        &self.users.compiled.imports
    }

    /// What each instance's `arbor_configure` receives: the module's `arbor:params` section
    /// (empty when it has none), or `None` when the module does not export `arbor_configure`.
    pub fn params(&self) -> Option<&[u8]> {
        self.users.compiled.params.as_deref()
    }
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("hash", &self.hash().short())
            .field("imports", &self.imports())
            .finish()
    }
}

/// The module cache: every module held in memory, by hash, and the idle ones in release order.
///
/// Invariants: a module is alive while it has users or is in `idle`, and its entry goes when
/// it leaves `idle` unused (an entry found dead otherwise is swept); a module in `idle` has no
/// users; `idle` holds at most `idle_max` modules. Nothing here holds a [`Users`], so no
/// `Users` is ever dropped with the lock held (its drop takes the lock).
struct Cache {
    entries: HashMap<ModuleHash, Entry>,
    /// Idle modules, the least recently released at the front.
    idle: VecDeque<Arc<Compiled>>,
    idle_max: usize,
    /// `entries` is swept of dead entries when it reaches this size.
    sweep_at: usize,
}

struct Entry {
    users: Weak<Users>,
    compiled: Weak<Compiled>,
}

impl Cache {
    fn new(idle_max: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            idle: VecDeque::new(),
            idle_max,
            sweep_at: 64,
        }
    }

    /// The module with this hash, if it is in use or idle; an idle one is in use again.
    fn find(&mut self, hash: &ModuleHash, cache: &Arc<Mutex<Cache>>) -> Option<LoadedModule> {
        let entry = self.entries.get_mut(hash)?;
        if let Some(users) = entry.users.upgrade() {
            return Some(LoadedModule { users });
        }
        let Some(compiled) = entry.compiled.upgrade() else {
            self.entries.remove(hash);
            return None;
        };
        // Idle, or its last user is being dropped right now (then `release` sees the new
        // users and keeps nothing).
        self.idle.retain(|idle| !Arc::ptr_eq(idle, &compiled));
        let users = Arc::new(Users {
            compiled,
            cache: Arc::downgrade(cache),
        });
        entry.users = Arc::downgrade(&users);
        Some(LoadedModule { users })
    }

    /// Registers a freshly compiled module, unless another thread registered the same bytes
    /// first: then that one is returned and `compiled` given back to be dropped (outside the
    /// lock).
    fn insert(
        &mut self,
        compiled: Compiled,
        cache: &Arc<Mutex<Cache>>,
    ) -> (LoadedModule, Option<Compiled>) {
        if let Some(found) = self.find(&compiled.hash, cache) {
            return (found, Some(compiled));
        }
        if self.entries.len() >= self.sweep_at {
            self.entries
                .retain(|_, entry| entry.compiled.strong_count() > 0);
            self.sweep_at = (self.entries.len() * 2).max(64);
        }
        let compiled = Arc::new(compiled);
        let users = Arc::new(Users {
            compiled: Arc::clone(&compiled),
            cache: Arc::downgrade(cache),
        });
        self.entries.insert(
            compiled.hash,
            Entry {
                users: Arc::downgrade(&users),
                compiled: Arc::downgrade(&compiled),
            },
        );
        (LoadedModule { users }, None)
    }

    /// The last user of `compiled` is gone: it becomes the most recently released idle
    /// module. Returns what no longer fits, to be dropped outside the lock.
    fn release(&mut self, compiled: Arc<Compiled>) -> Vec<Arc<Compiled>> {
        let registered = self.entries.get(&compiled.hash).is_some_and(|entry| {
            entry.users.strong_count() == 0
                && Weak::ptr_eq(&entry.compiled, &Arc::downgrade(&compiled))
        });
        if !registered {
            // `find` gave it new users meanwhile (or the entry is another compile of the
            // same bytes): nothing to keep.
            return vec![compiled];
        }
        self.idle.push_back(compiled);
        let mut evicted = Vec::new();
        while self.idle.len() > self.idle_max {
            let Some(oldest) = self.idle.pop_front() else {
                break;
            };
            // Idle means no users: with the idle list's reference gone it is dropped.
            self.entries.remove(&oldest.hash);
            evicted.push(oldest);
        }
        debug_assert!(self.idle.len() <= self.idle_max);
        debug_assert!(self.idle.iter().all(|idle| {
            self.entries
                .get(&idle.hash)
                .is_some_and(|entry| entry.users.strong_count() == 0)
        }));
        evicted
    }

    /// The compiled code of a module held in memory whose code key is `code`.
    fn code(&self, code: &[u8; 32]) -> Option<(InstancePre<StoreState>, Vec<Import>)> {
        self.entries.values().find_map(|entry| {
            let compiled = entry.compiled.upgrade()?;
            (compiled.code == *code).then(|| (compiled.pre.clone(), compiled.imports.clone()))
        })
    }

    /// How many modules are held in memory.
    fn held(&mut self) -> usize {
        self.entries
            .retain(|_, entry| entry.compiled.strong_count() > 0);
        self.entries.len()
    }
}

/// The Wasm host: the shared engine, the linker and the module cache. Create one per process
/// and share it (it is cheap to clone).
///
/// ```no_run
/// use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
///
/// let host = WasmHost::new(EngineConfig::default())?;
/// let module = host.load(arbor_modules::COUNTER)?;
/// let agent = WasmBehaviour::init(&host, &module, AgentLimits::default(), Capabilities::none(), b"")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<StoreState>,
    config: EngineConfig,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl WasmHost {
    /// Builds the engine (reserving the instance pool) and starts its epoch ticker, a thread that
    /// stops by itself once the last clone of this host is dropped.
    pub fn new(config: EngineConfig) -> Result<WasmHost, LoadError> {
        let engine = Engine::new(&engine_config(&config)).map_err(LoadError::engine)?;
        let mut linker = Linker::new(&engine);
        imports::define(&mut linker).map_err(LoadError::engine)?;
        spawn_ticker(&engine, config.epoch_tick)?;
        Ok(WasmHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                cache: Arc::new(Mutex::new(Cache::new(config.idle_modules))),
                config,
            }),
        })
    }

    /// The engine configuration this host was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Checks `bytes` against ABI v1 (exports, their types, imports only from `arbor` with known
    /// names and types), compiles and pre-links it. Cached by content hash: loading the same
    /// bytes again while the module is in use or idle (see [`EngineConfig::idle_modules`])
    /// returns it without compiling.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        let hash = ModuleHash::of(bytes);
        if let Some(found) = self.cached(&hash) {
            return Ok(found);
        }
        let code = code_key(bytes)?;
        let shared = self.inner.cache.lock().code(&code);
        let (pre, imports) = match shared {
            // The same code with other parameters (or a placebo section): compiled already.
            Some(found) => found,
            None => {
                // Compiled outside the lock: a slow compile must not block other loads.
                let module = Module::from_binary(&self.inner.engine, bytes)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                let imports = check_module(&module)?;
                let pre = self
                    .inner
                    .linker
                    .instantiate_pre(&module)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                (pre, imports)
            }
        };
        let params = params_for(pre.module(), bytes)?;
        let compiled = Compiled {
            hash,
            code,
            pre,
            imports,
            params,
        };
        let cache = &self.inner.cache;
        let (loaded, duplicate) = cache.lock().insert(compiled, cache);
        drop(duplicate);
        Ok(loaded)
    }

    /// The module with this content hash, if it is in memory: in use, or idle and not yet
    /// dropped (see [`EngineConfig::idle_modules`]). A module that is not has to be
    /// [`load`](WasmHost::load)ed from its bytes again.
    pub fn cached(&self, hash: &ModuleHash) -> Option<LoadedModule> {
        let cache = &self.inner.cache;
        cache.lock().find(hash, cache)
    }

    /// How many distinct compiled modules are held in memory: in use, or idle and kept (at
    /// most [`EngineConfig::idle_modules`] of those).
    pub fn cached_modules(&self) -> usize {
        self.inner.cache.lock().held()
    }
}

fn engine_config(config: &EngineConfig) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(config.max_table_elements)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Each slot reserves only the largest memory allowed (plus a small guard) instead of
        // 4 GiB: ten thousand 4 GiB slots would exhaust the address space. The price is
        // explicit bounds checks in compiled code.
        .memory_reservation(config.max_memory_bytes)
        .memory_guard_size(64 << 10)
        .memory_init_cow(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        // Determinism across hosts: replay compares snapshots.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true);
    wasm
}

fn spawn_ticker(engine: &Engine, tick: Duration) -> Result<(), LoadError> {
    let weak = engine.weak();
    let tick_nanos = tick.as_nanos().max(1);
    std::thread::Builder::new()
        .name("arbor-epoch".into())
        .spawn(move || {
            let started = Instant::now();
            let mut ticks: u64 = 0;
            // Holds only a weak reference so the engine (and this thread) can go away.
            while let Some(engine) = weak.upgrade() {
                // As many ticks as real time says have passed: a late wakeup (a loaded machine)
                // catches up instead of stretching every deadline by its lateness.
                let due =
                    u64::try_from(started.elapsed().as_nanos() / tick_nanos).unwrap_or(u64::MAX);
                while ticks < due {
                    engine.increment_epoch();
                    ticks += 1;
                }
                drop(engine);
                let next = u64::try_from(tick_nanos.saturating_mul(u128::from(ticks) + 1))
                    .map_or(Duration::MAX, Duration::from_nanos);
                std::thread::sleep(next.saturating_sub(started.elapsed()));
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// The ABI v1 load checks; returns the module's `arbor` imports.
fn check_module(module: &Module) -> Result<Vec<Import>, LoadError> {
    for (name, expected) in abi::EXPORTS {
        match module.get_export(name) {
            None if *name == abi::LAST_ERROR || *name == abi::CONFIGURE => {}
            None => {
                return Err(LoadError::MissingExport {
                    name: name.to_string(),
                });
            }
            Some(ExternType::Func(found)) => check_sig(name, expected, &found)?,
            Some(other) => {
                return Err(LoadError::WrongSignature {
                    name: name.to_string(),
                    expected: expected.to_string(),
                    found: extern_kind(&other).to_string(),
                });
            }
        }
    }
    match module.get_export(abi::MEMORY) {
        Some(ExternType::Memory(memory)) if !memory.is_64() && !memory.is_shared() => {}
        Some(other) => {
            return Err(LoadError::WrongSignature {
                name: abi::MEMORY.to_string(),
                expected: "memory (32-bit, unshared)".to_string(),
                found: extern_kind(&other).to_string(),
            });
        }
        None => {
            return Err(LoadError::MissingExport {
                name: abi::MEMORY.to_string(),
            });
        }
    }
    let mut found_imports = Vec::new();
    for import in module.imports() {
        let qualified = format!("{}.{}", import.module(), import.name());
        if import.module() != abi::IMPORT_MODULE {
            return Err(LoadError::ForeignImport { name: qualified });
        }
        let Some(known) = Import::by_name(import.name()) else {
            return Err(LoadError::UnknownImport { name: qualified });
        };
        match import.ty() {
            ExternType::Func(found) => check_sig(&qualified, known.signature(), &found)?,
            other => {
                return Err(LoadError::WrongSignature {
                    name: qualified,
                    expected: known.signature().to_string(),
                    found: extern_kind(&other).to_string(),
                });
            }
        }
        found_imports.push(known);
    }
    Ok(found_imports)
}

/// The parameters each instance is configured with: the `arbor:params` section for a module
/// exporting `arbor_configure` (empty without one). A module with parameters but no
/// `arbor_configure` could not receive them, so it is refused; one with two sections is
/// ambiguous, so it is refused too.
fn params_for(module: &Module, bytes: &[u8]) -> Result<Option<Arc<[u8]>>, LoadError> {
    let mut sections = custom_sections(bytes, abi::PARAMS_SECTION)?;
    if sections.len() > 1 {
        return Err(LoadError::Invalid(format!(
            "{} `{}` sections, expected at most one",
            sections.len(),
            abi::PARAMS_SECTION
        )));
    }
    let section = sections.pop();
    match (module.get_export(abi::CONFIGURE).is_some(), section) {
        (true, section) => Ok(Some(section.unwrap_or_default().into())),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(LoadError::MissingExport {
            name: format!(
                "{} (the module carries `{}`)",
                abi::CONFIGURE,
                abi::PARAMS_SECTION
            ),
        }),
    }
}

/// Custom sections no engine reads that evolution rewrites: a module that differs from another
/// only in these has the same code.
const NOT_CODE: [&str; 2] = [abi::PARAMS_SECTION, "arbor:placebo"];

/// BLAKE3 over every section of the module but the custom sections in [`NOT_CODE`], each
/// with its id and length so that sections cannot run into each other.
fn code_key(bytes: &[u8]) -> Result<[u8; 32], LoadError> {
    let mut hasher = blake3::Hasher::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Invalid(format!("{e}")))?;
        if let wasmparser::Payload::CustomSection(section) = &payload
            && NOT_CODE.contains(&section.name())
        {
            continue;
        }
        if let Some((id, range)) = payload.as_section() {
            let section = bytes
                .get(range.clone())
                .ok_or_else(|| LoadError::Invalid("a section past the end".into()))?;
            hasher.update(&[id]);
            hasher.update(&(section.len() as u64).to_le_bytes());
            hasher.update(section);
        }
    }
    // The header (magic and version) is part of the code too.
    hasher.update(bytes.get(..8).unwrap_or(bytes));
    Ok(*hasher.finalize().as_bytes())
}

/// The payloads of every custom section called `name` in the module `bytes`, in order.
///
/// ```
/// let module = wat::parse_str(r#"(module (@custom "arbor:params" "\01\02"))"#).unwrap();
/// let found = arbor_agent::wasm::custom_sections(&module, "arbor:params").unwrap();
/// assert_eq!(found, vec![vec![1, 2]]);
/// ```
pub fn custom_sections(bytes: &[u8], name: &str) -> Result<Vec<Vec<u8>>, LoadError> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Invalid(format!("{e}")))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == name
        {
            found.push(section.data().to_vec());
        }
    }
    Ok(found)
}

fn check_sig(name: &str, expected: &str, found: &FuncType) -> Result<(), LoadError> {
    let found = signature_of(found);
    if found == expected {
        Ok(())
    } else {
        Err(LoadError::WrongSignature {
            name: name.to_string(),
            expected: expected.to_string(),
            found,
        })
    }
}

/// A function type written as ABI.md does in its tables: `(i32, i32) -> i64`.
fn signature_of(ty: &FuncType) -> String {
    let list = |types: Vec<String>| types.join(", ");
    let params = list(ty.params().map(|t| t.to_string()).collect());
    let results: Vec<String> = ty.results().map(|t| t.to_string()).collect();
    match results.len() {
        0 => format!("({params})"),
        1 => format!("({params}) -> {}", results.join("")),
        _ => format!("({params}) -> ({})", list(results)),
    }
}

fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn module(sections: &str, answer: i32) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
              (memory (export "memory") 1)
              (func (export "arbor_abi_version") (result i32) (i32.const 1))
              (func (export "arbor_alloc") (param i32) (result i32) (i32.const 1024))
              (func (export "arbor_configure") (param i32 i32) (result i32) (i32.const 0))
              (func (export "arbor_init") (param i32 i32) (result i32) (i32.const 0))
              (func (export "arbor_snapshot") (result i64) (i64.const 0))
              (func (export "arbor_restore") (param i32 i32) (result i32) (i32.const 0))
              (func (export "arbor_handle") (param i32 i32) (result i64) (i64.const {answer}))
              {sections})"#
        ))
        .unwrap()
    }

    #[test]
    fn modules_that_differ_only_in_parameters_or_placebo_share_their_compilation() {
        let host = WasmHost::new(EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        })
        .unwrap();
        let plain = host.load(&module("", 1)).unwrap();
        let tuned = host
            .load(&module(r#"(@custom "arbor:params" "\80")"#, 1))
            .unwrap();
        let placebo = host
            .load(&module(r#"(@custom "arbor:placebo" "\01")"#, 1))
            .unwrap();
        let other = host.load(&module("", 2)).unwrap();
        let declared = host
            .load(&module(r#"(@custom "arbor:tunables" "[]")"#, 1))
            .unwrap();
        assert_ne!(plain.hash(), tuned.hash());
        assert!(Module::same(plain.pre().module(), tuned.pre().module()));
        assert!(Module::same(plain.pre().module(), placebo.pre().module()));
        // Other code, or another section that is not one evolution rewrites: compiled anew.
        assert!(!Module::same(plain.pre().module(), other.pre().module()));
        assert!(!Module::same(plain.pre().module(), declared.pre().module()));
        assert_eq!(tuned.params(), Some(&b"\x80"[..]));
        assert_eq!(plain.params(), Some(&[][..]));
        assert_eq!(host.cached_modules(), 5);
        // Dropped and gone from the cache, the code is compiled again when needed.
        drop((plain, tuned, placebo, other, declared));
        assert!(host.load(&module("", 1)).is_ok());
    }
}
