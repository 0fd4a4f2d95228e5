//! [`AgentSystemBuilder`]: how an [`AgentSystem`] is put together — which journal store, which
//! engine, which tools and native behaviours, how large mailboxes are, where guest code runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arbor_vault::{AgentState, Vault};
use arbor_wal::Wal;

use super::context::Context;
use super::error::{JournalError, SystemError};
use super::journal::{CheckpointPolicy, Ephemeral, Journal, JournalStore, LocalStore};
use super::services::{GuestCalls, NativeFactory, Services};
use super::system::AgentSystem;
use crate::behaviour::Behaviour;
use crate::tools::Tools;
use crate::wasm::{EngineConfig, WasmHost};

/// The default bound on each agent's mailbox.
pub const DEFAULT_MAILBOX: usize = 10_000;

// Here rather than in `system`, so that the facade does not import its builder back.
impl AgentSystem {
    /// A builder.
    pub fn builder() -> AgentSystemBuilder {
        AgentSystemBuilder::default()
    }
}

/// Builds an [`AgentSystem`].
#[derive(Default)]
pub struct AgentSystemBuilder {
    journal: Option<PathBuf>,
    store: Option<Arc<dyn JournalStore>>,
    wal: Option<arbor_wal::Config>,
    vault: Option<arbor_vault::Config>,
    checkpoints: CheckpointPolicy,
    engine: Option<EngineConfig>,
    wasm: Option<WasmHost>,
    tools: Tools,
    natives: BTreeMap<String, NativeFactory>,
    mailbox: Option<usize>,
    guest_calls: GuestCalls,
}

impl AgentSystemBuilder {
    /// At most `capacity` inputs wait in each agent's mailbox (default [`DEFAULT_MAILBOX`]);
    /// beyond it calls and casts fail with
    /// [`AgentError::MailboxFull`](super::AgentError::MailboxFull) at once.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = Some(capacity.max(1));
        self
    }

    /// Journal every input into `dir` (`dir/wal`, `dir/vault`). Without it (or
    /// [`journal_store`](Self::journal_store)) agents are ephemeral: nothing is journaled or
    /// checkpointed.
    pub fn journal(mut self, dir: impl Into<PathBuf>) -> Self {
        self.journal = Some(dir.into());
        self
    }

    /// Journal into this store instead of a local data directory (see [`JournalStore`] for
    /// the contract a store keeps).
    pub fn journal_store(mut self, store: Arc<dyn JournalStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The WAL's configuration (durability policy, segment size, …).
    pub fn wal(mut self, config: arbor_wal::Config) -> Self {
        self.wal = Some(config);
        self
    }

    /// When a call is acknowledged (keeps the rest of the WAL's configuration).
    pub fn durability(mut self, durability: arbor_wal::Durability) -> Self {
        self.wal = Some(self.wal.unwrap_or_default().durability(durability));
        self
    }

    /// The vault's configuration.
    pub fn vault(mut self, config: arbor_vault::Config) -> Self {
        self.vault = Some(config);
        self
    }

    /// When agents checkpoint.
    pub fn checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoints = policy;
        self
    }

    /// Build a Wasm engine with this configuration (default: [`EngineConfig::default`]).
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = Some(config);
        self
    }

    /// Use this Wasm host (shares its engine and module cache).
    pub fn wasm_host(mut self, host: WasmHost) -> Self {
        self.wasm = Some(host);
        self
    }

    /// The tools agents may be granted.
    pub fn tools(mut self, tools: Tools) -> Self {
        self.tools = tools;
        self
    }

    /// Registers a native behaviour under `name`.
    pub fn native(
        mut self,
        name: impl Into<String>,
        factory: impl Fn() -> Box<dyn Behaviour> + Send + Sync + 'static,
    ) -> Self {
        self.natives.insert(name.into(), Arc::new(factory));
        self
    }

    /// Where agents' behaviours run while they handle inputs (default
    /// [`GuestCalls::Inline`]).
    pub fn guest_calls(mut self, guest_calls: GuestCalls) -> Self {
        self.guest_calls = guest_calls;
        self
    }

    /// Opens the journal (recovering the WAL) and the vault, and pins the journal for every
    /// agent the registry says is running, so nothing they need is released before they
    /// recover.
    pub fn build(self) -> Result<AgentSystem, SystemError> {
        let wasm = match self.wasm {
            Some(host) => host,
            None => WasmHost::new(self.engine.unwrap_or_default()).map_err(SystemError::Engine)?,
        };
        let store: Arc<dyn JournalStore> = match (self.store, self.journal) {
            (Some(store), _) => store,
            (None, Some(dir)) => {
                let open = |source: JournalError| SystemError::OpenJournal {
                    dir: dir.clone(),
                    source,
                };
                let wal = Wal::open(dir.join("wal"), self.wal.unwrap_or_default())
                    .map_err(|e| open(e.into()))?;
                let vault = Vault::open(dir.join("vault"), self.vault.unwrap_or_default())
                    .map_err(|e| open(e.into()))?;
                Arc::new(LocalStore { wal, vault })
            }
            (None, None) => Arc::new(Ephemeral::default()),
        };
        let vault = store.vault().cloned();
        let journal = Journal::new(store, self.checkpoints);
        if let Some(vault) = &vault {
            for record in vault.agents()? {
                if record.state == AgentState::Running {
                    journal
                        .pin_from_store(&record.id)
                        .map_err(SystemError::Journal)?;
                }
            }
        }
        let services = Services::new(wasm, self.tools, self.natives, vault, self.guest_calls);
        Ok(AgentSystem::from_context(Arc::new(Context::new(
            services,
            journal,
            self.mailbox.unwrap_or(DEFAULT_MAILBOX),
        ))))
    }
}
