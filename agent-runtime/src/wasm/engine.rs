//! The shared engine: one wasmtime [`Engine`] for every agent, its epoch ticker, the linker with
//! the `arbor` imports, and the cache of checked, precompiled modules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 10_000,
            max_memory_bytes: 64 << 20,
            max_table_elements: 10_000,
            epoch_tick: Duration::from_millis(1),
        }
    }
}

/// A module that passed the ABI v1 load checks and is compiled and pre-linked, ready to
/// instantiate many times. Cheap to clone (shared).
#[derive(Clone)]
pub struct LoadedModule {
    inner: Arc<LoadedInner>,
}

struct LoadedInner {
    hash: ModuleHash,
    pre: InstancePre<StoreState>,
    imports: Vec<Import>,
}

impl LoadedModule {
    /// The BLAKE3 hash of the module's bytes.
    pub fn hash(&self) -> ModuleHash {
        self.inner.hash
    }

    /// The `arbor` imports the module declares (each must be granted to instantiate it).
    pub fn imports(&self) -> Vec<&'static str> {
        self.inner.imports.iter().map(|i| i.name()).collect()
    }

    pub(crate) fn pre(&self) -> &InstancePre<StoreState> {
        &self.inner.pre
    }

    pub(crate) fn import_list(&self) -> &[Import] {
        &self.inner.imports
    }
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("hash", &self.inner.hash.short())
            .field("imports", &self.imports())
            .finish()
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
    cache: Mutex<HashMap<ModuleHash, LoadedModule>>,
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
                config,
                cache: Mutex::new(HashMap::new()),
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
    /// bytes again returns the cached module without compiling.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        let hash = ModuleHash::of(bytes);
        if let Some(found) = self.inner.cache.lock().get(&hash) {
            return Ok(found.clone());
        }
        // Compiled outside the lock: a slow compile must not block loads of other modules.
        let module = Module::from_binary(&self.inner.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let imports = check_module(&module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let loaded = LoadedModule {
            inner: Arc::new(LoadedInner { hash, pre, imports }),
        };
        Ok(self
            .inner
            .cache
            .lock()
            .entry(hash)
            .or_insert(loaded)
            .clone())
    }

    /// The loaded module with this content hash, if [`load`](WasmHost::load) has seen it.
    pub fn cached(&self, hash: &ModuleHash) -> Option<LoadedModule> {
        self.inner.cache.lock().get(hash).cloned()
    }

    /// How many distinct modules are cached.
    pub fn cached_modules(&self) -> usize {
        self.inner.cache.lock().len()
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
    std::thread::Builder::new()
        .name("arbor-epoch".into())
        .spawn(move || {
            // Holds only a weak reference so the engine (and this thread) can go away.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// The ABI v1 load checks; returns the module's `arbor` imports.
fn check_module(module: &Module) -> Result<Vec<Import>, LoadError> {
    for (name, expected) in abi::EXPORTS {
        match module.get_export(name) {
            None if *name == abi::LAST_ERROR => {}
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
