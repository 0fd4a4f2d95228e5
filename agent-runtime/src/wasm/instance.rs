//! [`WasmBehaviour`]: one agent's instance of a loaded module, behind the [`Behaviour`] trait.

use std::time::Instant;

use wasmtime::{Memory, Store, Trap, TypedFunc};

use super::abi::{self, Import};
use super::engine::{LoadedModule, WasmHost};
use super::error::LoadError;
use super::imports::{self, CapLimiter, StoreState};
use crate::behaviour::{Behaviour, BehaviourError, Cost};
use crate::host::Host;
pub use crate::limits::{AgentLimits, Capabilities};

impl Capabilities {
    fn grants(&self, import: Import) -> bool {
        match import {
            Import::Log => self.log,
            Import::Send => self.send,
            Import::Now => self.now,
            Import::Random => self.random,
            Import::CallTool => !self.tools.is_empty(),
        }
    }
}

/// The exports, looked up once per instance.
#[derive(Clone)]
struct Exports {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    init: TypedFunc<(i32, i32), i32>,
    handle: TypedFunc<(i32, i32), i64>,
    snapshot: TypedFunc<(), i64>,
    restore: TypedFunc<(i32, i32), i32>,
    last_error: Option<TypedFunc<(), i64>>,
}

/// An agent backed by a Wasm module instance (ABI v1), with its own store, memory cap,
/// per-call deadline and fuel meter.
///
/// ```no_run
/// use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
/// use arbor_agent::Behaviour;
///
/// let host = WasmHost::new(EngineConfig::default())?;
/// let module = host.load(arbor_modules::COUNTER)?;
/// let mut counter =
///     WasmBehaviour::init(&host, &module, AgentLimits::default(), Capabilities::none(), b"")?;
/// let state = counter.snapshot()?;
/// println!("{} used {:?} fuel", counter.describe(), counter.last_cost().fuel);
/// # let _ = state;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WasmBehaviour {
    store: Store<StoreState>,
    exports: Exports,
    module: LoadedModule,
    limits: AgentLimits,
    /// The deadline in epoch ticks, the first check of the call's real clock.
    deadline_ticks: u64,
    last_cost: Cost,
    /// Set by the first crash; the instance is then never entered again.
    dead: Option<BehaviourError>,
    /// A call into the guest never returned (its host panicked and unwound through it): the
    /// store's state is unknown, so the instance is gone.
    lost: bool,
}

/// Why [`WasmBehaviour::init`] or [`WasmBehaviour::from_state`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The module could not be instantiated for this agent.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The module refused the config or the state, or crashed doing so.
    #[error(transparent)]
    Start(#[from] BehaviourError),
}

impl WasmBehaviour {
    /// Instantiates `module` for an agent with `limits` and `capabilities` and checks its ABI
    /// version, without creating the agent: follow with [`init_agent`](Self::init_agent) or
    /// [`Behaviour::restore`].
    pub fn instantiate(
        host: &WasmHost,
        module: &LoadedModule,
        limits: AgentLimits,
        capabilities: Capabilities,
    ) -> Result<WasmBehaviour, LoadError> {
        if let Some(import) = module
            .import_list()
            .iter()
            .find(|i| !capabilities.grants(**i))
        {
            return Err(LoadError::UngrantedImport {
                name: format!("{}.{}", abi::IMPORT_MODULE, import.name()),
            });
        }
        let tick = host.config().epoch_tick;
        let deadline_ticks = imports::ticks(limits.deadline, tick);
        let cap = limits.memory_bytes.min(host.config().max_memory_bytes);
        let state = StoreState {
            limiter: CapLimiter {
                cap_bytes: usize::try_from(cap).unwrap_or(usize::MAX),
                table_elements: host.config().max_table_elements,
                denied: false,
            },
            host: None,
            fault: None,
            tools: capabilities.tools,
            call_started: Instant::now(),
            deadline: limits.deadline,
        };
        let mut store = Store::new(host.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(move |store| Ok(store.data().on_epoch_deadline(tick)));
        store.set_epoch_deadline(deadline_ticks);
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(LoadError::engine)?;
        let instance = module
            .pre()
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        // The load checks guarantee these exist with these types; a failure here is a bug in
        // them, reported rather than unwrapped.
        let missing = |e: wasmtime::Error| LoadError::Invalid(format!("{e:#}"));
        let exports = Exports {
            memory: instance
                .get_memory(&mut store, abi::MEMORY)
                .ok_or_else(|| LoadError::MissingExport {
                    name: abi::MEMORY.into(),
                })?,
            alloc: instance
                .get_typed_func(&mut store, abi::ALLOC)
                .map_err(missing)?,
            init: instance
                .get_typed_func(&mut store, abi::INIT)
                .map_err(missing)?,
            handle: instance
                .get_typed_func(&mut store, abi::HANDLE)
                .map_err(missing)?,
            snapshot: instance
                .get_typed_func(&mut store, abi::SNAPSHOT)
                .map_err(missing)?,
            restore: instance
                .get_typed_func(&mut store, abi::RESTORE)
                .map_err(missing)?,
            last_error: instance.get_typed_func(&mut store, abi::LAST_ERROR).ok(),
        };
        let version: TypedFunc<(), i32> = instance
            .get_typed_func(&mut store, abi::ABI_VERSION_FN)
            .map_err(missing)?;
        let found = version
            .call(&mut store, ())
            .map_err(|e| LoadError::Instantiate(format!("arbor_abi_version: {e:#}")))?;
        if found != abi::ABI_VERSION {
            return Err(LoadError::UnsupportedAbi { found });
        }
        let configure: Option<TypedFunc<(i32, i32), i32>> =
            match instance.get_typed_func(&mut store, abi::CONFIGURE) {
                Ok(configure) => Some(configure),
                Err(_) if module.params().is_none() => None,
                Err(e) => return Err(missing(e)),
            };
        let mut agent = WasmBehaviour {
            store,
            exports,
            module: module.clone(),
            limits,
            deadline_ticks,
            last_cost: Cost::default(),
            dead: None,
            lost: false,
        };
        if let (Some(configure), Some(params)) = (configure, module.params()) {
            agent.configure(&configure, params)?;
        }
        Ok(agent)
    }

    /// Hands the module's parameters to `arbor_configure`, once, before the agent exists.
    /// Refused parameters or a crash doing so mean the module cannot run at all.
    fn configure(
        &mut self,
        configure: &TypedFunc<(i32, i32), i32>,
        params: &[u8],
    ) -> Result<(), LoadError> {
        let result = self.guarded(|this| {
            let (ptr, len) = this.put(params)?;
            match configure
                .call(&mut this.store, (ptr, len))
                .map_err(|e| this.crash(e))?
            {
                0 => Ok(()),
                code => Err(this.code_error(abi::CONFIGURE, code)),
            }
        });
        result.map_err(|e| LoadError::Instantiate(format!("{}: {e}", abi::CONFIGURE)))
    }

    /// A new agent: instantiates and calls `arbor_init(config)`.
    pub fn init(
        host: &WasmHost,
        module: &LoadedModule,
        limits: AgentLimits,
        capabilities: Capabilities,
        config: &[u8],
    ) -> Result<WasmBehaviour, SpawnError> {
        let mut agent = WasmBehaviour::instantiate(host, module, limits, capabilities)?;
        agent.init_agent(config)?;
        Ok(agent)
    }

    /// An agent continued from `state` (written by this module or an older version of it):
    /// instantiates and calls `arbor_restore(state)`.
    pub fn from_state(
        host: &WasmHost,
        module: &LoadedModule,
        limits: AgentLimits,
        capabilities: Capabilities,
        state: &[u8],
    ) -> Result<WasmBehaviour, SpawnError> {
        let mut agent = WasmBehaviour::instantiate(host, module, limits, capabilities)?;
        agent.restore(state)?;
        Ok(agent)
    }

    /// Calls `arbor_init(config)`: creates the agent, replacing any existing one. A refused
    /// config is [`BehaviourError::BadInput`] and keeps the instance usable.
    pub fn init_agent(&mut self, config: &[u8]) -> Result<(), BehaviourError> {
        self.guarded(|this| {
            let (ptr, len) = this.put(config)?;
            let code = this.exports.init.call(&mut this.store, (ptr, len));
            match code.map_err(|e| this.crash(e))? {
                0 => Ok(()),
                abi::ERR_INIT_FAILED => Err(BehaviourError::BadInput(format!(
                    "arbor_init refused the config: {}",
                    this.last_error()
                ))),
                code => Err(this.code_error(abi::INIT, code)),
            }
        })
    }

    /// The module this agent runs.
    pub fn module(&self) -> &LoadedModule {
        &self.module
    }

    /// The agent's limits.
    pub fn limits(&self) -> &AgentLimits {
        &self.limits
    }

    /// The agent's linear memory size in bytes (0 once the instance is lost).
    pub fn memory_bytes(&self) -> usize {
        if self.lost {
            return 0;
        }
        self.exports.memory.data_size(&self.store)
    }

    /// Runs one guest operation with a fresh deadline and fuel budget, keeps the instance dead
    /// after a crash.
    fn guarded<R>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<R, BehaviourError>,
    ) -> Result<R, BehaviourError> {
        if let Some(dead) = &self.dead {
            return Err(BehaviourError::Contract(format!(
                "instance discarded after an earlier crash ({dead})"
            )));
        }
        self.arm()?;
        let result = op(self);
        if let Err(error) = &result
            && error.is_crash()
        {
            self.dead = Some(error.clone());
        }
        result
    }

    fn arm(&mut self) -> Result<(), BehaviourError> {
        let data = self.store.data_mut();
        data.fault = None;
        data.limiter.denied = false;
        data.call_started = Instant::now();
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store
            .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| BehaviourError::Contract(format!("fuel: {e:#}")))
    }

    /// The memory cap in force: the agent's, bounded by the engine's.
    fn cap_bytes(&self) -> u64 {
        self.store.data().limiter.cap_bytes as u64
    }

    fn fuel_used(&self) -> Option<u64> {
        let left = self.store.get_fuel().ok()?;
        Some(self.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left))
    }

    /// Copies `bytes` into a buffer from `arbor_alloc`.
    fn put(&mut self, bytes: &[u8]) -> Result<(i32, i32), BehaviourError> {
        let len = i32::try_from(bytes.len())
            .map_err(|_| BehaviourError::BadInput(format!("{} bytes is too long", bytes.len())))?;
        let ptr = self
            .exports
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| self.crash(e))?;
        if ptr == 0 {
            return Err(self.out_of_memory("arbor_alloc returned 0"));
        }
        self.exports
            .memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|_| {
                BehaviourError::Contract(format!(
                    "arbor_alloc({len}) returned {ptr:#x}, outside memory"
                ))
            })?;
        Ok((ptr, len))
    }

    /// Copies out a buffer the guest returned packed.
    fn take(&mut self, export: &str, packed: i64, max: usize) -> Result<Vec<u8>, BehaviourError> {
        let (ptr, len) = abi::unpack(packed).map_err(|code| self.code_error(export, code))?;
        let len = len as usize;
        if len == 0 {
            return Err(BehaviourError::Contract(format!(
                "{export} returned an empty buffer"
            )));
        }
        if len > max {
            return Err(BehaviourError::ReplyTooLarge { len, max });
        }
        let start = ptr as usize;
        start
            .checked_add(len)
            .and_then(|end| self.exports.memory.data(&self.store).get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                BehaviourError::Contract(format!(
                    "{export} returned {start:#x}+{len}, outside memory"
                ))
            })
    }

    /// `arbor_last_error`'s message, or a placeholder.
    fn last_error(&mut self) -> String {
        let Some(last_error) = self.exports.last_error.clone() else {
            return "(no arbor_last_error)".into();
        };
        match last_error.call(&mut self.store, ()).map(abi::unpack) {
            Ok(Ok((_, 0))) => "(no message)".into(),
            Ok(Ok((ptr, len))) => {
                let start = ptr as usize;
                // Bounded: a hostile module must not make the host copy megabytes per error.
                let end = start.saturating_add((len as usize).min(4096));
                match self.exports.memory.data(&self.store).get(start..end) {
                    Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    None => "(message outside memory)".into(),
                }
            }
            _ => "(arbor_last_error failed)".into(),
        }
    }

    /// A guest error code that is not the operation's refusal: a crash-kind error.
    fn code_error(&mut self, export: &str, code: i32) -> BehaviourError {
        let message = self.last_error();
        BehaviourError::Contract(format!(
            "{export} returned {code} ({}): {message}",
            abi::code_name(code)
        ))
    }

    fn out_of_memory(&mut self, what: &str) -> BehaviourError {
        if self.store.data().limiter.denied {
            BehaviourError::MemoryCap {
                cap_bytes: self.cap_bytes(),
            }
        } else {
            BehaviourError::Contract(what.into())
        }
    }

    /// Names the reason a call into the guest failed.
    fn crash(&mut self, error: wasmtime::Error) -> BehaviourError {
        if let Some(fault) = self.store.data_mut().fault.take() {
            return fault;
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => BehaviourError::OutOfFuel,
            Some(Trap::Interrupt) => BehaviourError::DeadlineExceeded {
                limit: self.limits.deadline,
                elapsed: self.store.data().call_started.elapsed(),
            },
            // A trap right after a denied grow is the SDK allocator giving up at the cap.
            _ if self.store.data().limiter.denied => BehaviourError::MemoryCap {
                cap_bytes: self.cap_bytes(),
            },
            Some(trap) => BehaviourError::Trap(trap.to_string()),
            None => BehaviourError::Trap(format!("{error:#}")),
        }
    }

    /// `arbor_handle` on the input buffer. The host moves into the store's data for the call
    /// (the imports reach it through `Caller::data_mut`) and comes back after, whatever the
    /// call's outcome.
    fn call_handle(&mut self, ptr: i32, len: i32, host: &mut Host) -> Result<i64, BehaviourError> {
        self.store.data_mut().host = Some(host.lend());
        // Should a panic unwind through the call (a host bug: wasmtime re-raises a panic
        // from an import once out of the guest), the instance stays marked lost.
        self.lost = true;
        self.dead = Some(BehaviourError::Contract(
            "the instance was lost while handling a message".into(),
        ));
        let result = self.exports.handle.call(&mut self.store, (ptr, len));
        self.lost = false;
        self.dead = None;
        if let Some(lent) = self.store.data_mut().host.take() {
            host.restore(lent);
        }
        result.map_err(|e| self.crash(e))
    }

    fn handle_inner(&mut self, input: &[u8], host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        let (ptr, len) = self.put(input)?;
        let called = self.call_handle(ptr, len, host);
        // Measured before arbor_last_error runs, so the cost is the message's alone.
        self.last_cost = Cost {
            fuel: self.fuel_used(),
            memory: Some(self.memory_bytes() as u64),
        };
        let packed = called?;
        match abi::unpack(packed) {
            Err(abi::ERR_BAD_INPUT) => Err(BehaviourError::BadInput(self.last_error())),
            _ => self.take(abi::HANDLE, packed, self.limits.max_reply_bytes),
        }
    }
}

impl Behaviour for WasmBehaviour {
    fn handle(&mut self, input: &[u8], host: &mut Host) -> Result<Vec<u8>, BehaviourError> {
        if input.len() > self.limits.max_message_bytes {
            return Err(BehaviourError::BadInput(format!(
                "message of {} bytes exceeds the maximum of {}",
                input.len(),
                self.limits.max_message_bytes
            )));
        }
        self.last_cost = Cost::default();
        self.guarded(|this| this.handle_inner(input, host))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        self.guarded(|this| {
            let packed = this
                .exports
                .snapshot
                .call(&mut this.store, ())
                .map_err(|e| this.crash(e))?;
            this.take(abi::SNAPSHOT, packed, usize::MAX)
        })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), BehaviourError> {
        self.guarded(|this| {
            let (ptr, len) = this.put(state)?;
            let code = this.exports.restore.call(&mut this.store, (ptr, len));
            match code.map_err(|e| this.crash(e))? {
                0 => Ok(()),
                abi::ERR_RESTORE_REJECTED => Err(BehaviourError::StateRejected(this.last_error())),
                code => Err(this.code_error(abi::RESTORE, code)),
            }
        })
    }

    fn init(&mut self, config: &[u8]) -> Result<(), BehaviourError> {
        self.init_agent(config)
    }

    fn last_cost(&self) -> Cost {
        self.last_cost
    }

    fn describe(&self) -> String {
        format!("wasm:{}", self.module.hash().short())
    }
}

impl std::fmt::Debug for WasmBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBehaviour")
            .field("module", &self.module)
            .field("limits", &self.limits)
            .field("dead", &self.dead)
            .finish()
    }
}
