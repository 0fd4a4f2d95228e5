//! What every agent of a system uses and nothing owns alone: the Wasm host (one engine, one
//! linker, the module cache), the host's tools and native behaviours, and where modules'
//! bytes are kept — everything needed to make a behaviour's instance.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arbor_vault::{ModuleHash, ModuleInfo, Vault};
use parking_lot::RwLock;

use super::error::{StartError, SystemError};
use crate::behaviour::Behaviour;
use crate::envelope::BehaviourId;
use crate::tools::Tools;
use crate::wasm::{AgentLimits, Capabilities, WasmBehaviour, WasmHost};

/// Makes a fresh instance of a native behaviour (its state then comes from
/// [`Behaviour::init`] or [`Behaviour::restore`]).
pub type NativeFactory = Arc<dyn Fn() -> Box<dyn Behaviour> + Send + Sync>;

/// Where an agent's behaviour runs while it handles an input.
///
/// A guest call runs to completion once started (it is bounded by the agent's deadline, fuel
/// and memory cap, not by the async runtime): it occupies the thread it runs on until it
/// returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestCalls {
    /// On the agent actor's tokio task, like any other code of the actor: no hand-off at all,
    /// the fastest for calls that take microseconds. A long call holds its worker thread for
    /// up to the agent's deadline; other agents' tasks wait for another worker meanwhile.
    #[default]
    Inline,
    /// Inside [`tokio::task::block_in_place`] on a multi-threaded runtime: the worker's other
    /// tasks move to a fresh thread while the guest runs, so no long call starves them (at the
    /// cost of a thread hand-off per input). Inline on a current-thread runtime.
    BlockInPlace,
}

/// The engine, the tools, the native behaviours and the module store.
pub(crate) struct Services {
    pub(crate) wasm: WasmHost,
    pub(crate) tools: Tools,
    pub(crate) guest_calls: GuestCalls,
    natives: BTreeMap<String, NativeFactory>,
    /// The vault, where a journaled system keeps modules' bytes.
    vault: Option<Vault>,
    /// The bytes of every module added to a system without a vault, so that a module the Wasm
    /// host has released (nothing used it) can be compiled again. Bytes cost memory only, no
    /// file descriptor or mapping.
    modules: RwLock<HashMap<ModuleHash, Arc<[u8]>>>,
}

impl Services {
    pub(crate) fn new(
        wasm: WasmHost,
        tools: Tools,
        natives: BTreeMap<String, NativeFactory>,
        vault: Option<Vault>,
        guest_calls: GuestCalls,
    ) -> Services {
        Services {
            wasm,
            tools,
            guest_calls,
            natives,
            vault,
            modules: RwLock::new(HashMap::new()),
        }
    }

    /// Checks and compiles a module and keeps its bytes (in the vault, or in memory).
    pub(crate) fn add_module(&self, name: &str, bytes: &[u8]) -> Result<ModuleHash, SystemError> {
        let loaded = self.wasm.load(bytes);
        let outcome = if loaded.is_ok() { "loaded" } else { "refused" };
        metrics::counter!(arbor_metrics::MODULE_LOADS, "outcome" => outcome).increment(1);
        let module = loaded.map_err(|source| SystemError::Module {
            name: name.into(),
            source,
        })?;
        match &self.vault {
            Some(vault) => {
                let info = ModuleInfo {
                    name: name.into(),
                    version_label: String::new(),
                    abi_version: 1,
                    origin: "AgentSystem::add_module".into(),
                };
                if vault.put_module(bytes, &info)?.added {
                    vault.sync()?;
                }
            }
            None => {
                self.modules
                    .write()
                    .entry(module.hash())
                    .or_insert_with(|| Arc::from(bytes));
            }
        }
        metrics::gauge!(arbor_metrics::WASM_MODULES_LOADED).set(self.wasm.cached_modules() as f64);
        Ok(module.hash())
    }

    /// A fresh, uninitialised instance of `behaviour` for an agent with these limits and grants.
    pub(crate) fn instantiate(
        &self,
        behaviour: &BehaviourId,
        limits: &AgentLimits,
        capabilities: &Capabilities,
    ) -> Result<Box<dyn Behaviour>, StartError> {
        match behaviour {
            BehaviourId::Wasm(hash) => {
                let module = match self.wasm.cached(hash) {
                    Some(module) => module,
                    // Never loaded here, or released by the host since: compiled again.
                    None => {
                        let bytes = self
                            .module_bytes(hash)?
                            .ok_or(StartError::NoModule(*hash))?;
                        self.wasm.load(&bytes)?
                    }
                };
                let instance = WasmBehaviour::instantiate(
                    &self.wasm,
                    &module,
                    limits.clone(),
                    capabilities.clone(),
                )?;
                Ok(Box::new(instance))
            }
            BehaviourId::Native(name) => self
                .natives
                .get(name)
                .map(|factory| factory())
                .ok_or_else(|| StartError::NoNative(name.clone())),
        }
    }

    /// The bytes of an added module: in memory without a vault, else from the vault.
    fn module_bytes(&self, hash: &ModuleHash) -> Result<Option<Arc<[u8]>>, StartError> {
        if let Some(bytes) = self.modules.read().get(hash) {
            return Ok(Some(Arc::clone(bytes)));
        }
        let Some(vault) = &self.vault else {
            return Ok(None);
        };
        vault
            .module_bytes(hash)
            .map(|bytes| bytes.map(Arc::from))
            .map_err(|e| StartError::Vault(Arc::new(e)))
    }

    /// Which behaviour wrote a checkpoint with this module hash: the registered one, a native
    /// one, or a stored module.
    pub(crate) fn behaviour_for(&self, hash: &ModuleHash, registered: &BehaviourId) -> BehaviourId {
        if registered.checkpoint_hash() == *hash {
            return registered.clone();
        }
        self.natives
            .keys()
            .map(|name| BehaviourId::Native(name.clone()))
            .find(|native| native.checkpoint_hash() == *hash)
            .unwrap_or(BehaviourId::Wasm(*hash))
    }
}
