//! The cluster-wide registry: every agent's spec and whether it should run (KV bucket
//! `arbor_agents`), and every module's bytes (object store `arbor_modules`).
//!
//! Each node keeps a view of the registry, fed by a KV watch (last value per key, then every
//! change), so the ownership loop reads memory, not the bucket, on every tick; a change wakes
//! the loop at once. Writes go to the bucket with compare-and-swap on the key's revision, so
//! two nodes changing one agent never overwrite each other blindly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbor_agent::AgentSpec;
use arbor_cluster::encode_agent;
use arbor_vault::{AgentId, AgentRecord, AgentState, ModuleHash, Vault};
use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use super::ClusterError;

const AGENTS: &str = "arbor_agents";
const MODULES: &str = "arbor_modules";

/// An agent as the cluster registry holds it: its record (what runs it, where in the tree,
/// its limits and grants, whether it should run) and its init config (for its first start,
/// which may be on another node than the spawn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Registered {
    pub(crate) record: AgentRecord,
    #[serde(with = "serde_bytes")]
    pub(crate) config: Vec<u8>,
}

impl Registered {
    pub(crate) fn name(&self) -> &str {
        self.record.id.as_str()
    }

    /// The spec to start it from.
    pub(crate) fn spec(&self) -> AgentSpec {
        let mut spec = AgentSpec::from_record(&self.record);
        spec.config = self.config.clone();
        spec
    }
}

/// The registry's bucket, the module store and this node's view of the registry.
#[derive(Clone)]
pub(crate) struct Registry {
    agents: kv::Store,
    modules: object_store::ObjectStore,
    view: Arc<RwLock<BTreeMap<String, (Registered, u64)>>>,
    /// Modules known to be in the module store (uploaded or listed by this node).
    stored: Arc<parking_lot::Mutex<std::collections::BTreeSet<String>>>,
    /// Wakes whoever waits for the registry to change (the ownership loop).
    pub(crate) changed: Arc<Notify>,
}

fn bucket(what: &str, source: impl Into<async_nats::Error>) -> ClusterError {
    ClusterError::Bucket {
        what: what.to_string(),
        source: source.into(),
    }
}

impl Registry {
    /// Opens (creating if needed) the bucket and the module store, and starts the watch.
    pub(crate) async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Registry, ClusterError> {
        let agents = match js.get_key_value(AGENTS).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: AGENTS.into(),
                    description: "arbor: the cluster's agents (spec, state)".into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| bucket("creating KV arbor_agents", e))?,
        };
        let modules = match js.get_object_store(MODULES).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: MODULES.into(),
                    description: Some("arbor: Wasm modules by content hash".into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| bucket("creating object store arbor_modules", e))?,
        };
        let registry = Registry {
            agents,
            modules,
            view: Arc::default(),
            stored: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        // The view is complete once the watch has delivered every key's last value.
        let feed = registry.clone();
        let view = Arc::downgrade(&registry.view);
        let mut ready_rx = super::follow::follow(
            registry.agents.clone(),
            "arbor_agents",
            move |entry| feed.apply(entry),
            // The task's own clone is the last one once the node is gone.
            move || view.strong_count() > 1,
        )
        .await
        .map_err(|e| bucket("watching arbor_agents", e))?;
        // An empty bucket delivers nothing: don't wait for a first entry that never comes.
        let empty = registry
            .agents
            .status()
            .await
            .map(|status| status.values() == 0)
            .unwrap_or(false);
        if !empty {
            let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r)).await;
        }
        Ok(registry)
    }

    fn apply(&self, entry: kv::Entry) {
        let mut view = self.view.write();
        match entry.operation {
            kv::Operation::Put => match rmp_serde::from_slice::<Registered>(&entry.value) {
                Ok(registered) => {
                    view.insert(registered.name().to_string(), (registered, entry.revision));
                }
                Err(error) => {
                    tracing::error!(key = entry.key, %error, "registry value does not decode");
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                view.retain(|name, _| encode_agent(name) != entry.key);
            }
        }
        drop(view);
        self.changed.notify_waiters();
    }

    /// The agent `name` as this node's view has it.
    pub(crate) fn get(&self, name: &str) -> Option<Registered> {
        self.view.read().get(name).map(|(r, _)| r.clone())
    }

    /// Every agent the view has, by name.
    pub(crate) fn all(&self) -> Vec<Registered> {
        self.view.read().values().map(|(r, _)| r.clone()).collect()
    }

    /// Registers a new agent; `false` if the name is taken (cluster-wide).
    pub(crate) async fn create(&self, spec: &AgentSpec, id: AgentId) -> Result<bool, ClusterError> {
        let registered = Registered {
            record: spec.record(id, AgentState::Running),
            config: spec.config.clone(),
        };
        // `create` succeeds only if the key has no value (never written, or deleted: a removed
        // agent's name is free again).
        match self
            .agents
            .create(encode_agent(&spec.name), encode(&registered)?)
            .await
        {
            Ok(revision) => {
                self.view
                    .write()
                    .insert(spec.name.clone(), (registered, revision));
                Ok(true)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(bucket("registering an agent", e)),
        }
    }

    /// Sets `name`'s state (and reason) by compare-and-swap, re-reading on a conflict.
    pub(crate) async fn set_state(
        &self,
        name: &str,
        state: AgentState,
        reason: Option<String>,
    ) -> Result<(), ClusterError> {
        let mut backoff = Duration::from_millis(20);
        for _ in 0..10 {
            let Some(entry) = self
                .agents
                .entry(encode_agent(name))
                .await
                .map_err(|e| bucket("reading the registry", e))?
            else {
                return Ok(());
            };
            let mut registered: Registered =
                rmp_serde::from_slice(&entry.value).map_err(|e| ClusterError::Corrupt {
                    what: format!("registry entry of `{name}`"),
                    reason: e.to_string(),
                })?;
            if registered.record.state == state && registered.record.reason == reason {
                return Ok(());
            }
            registered.record.state = state;
            registered.record.reason = reason.clone();
            match self
                .agents
                .update(encode_agent(name), encode(&registered)?, entry.revision)
                .await
            {
                Ok(_) => return Ok(()),
                // Another writer's update landed after our read, or a leader elected a moment
                // ago has not applied the log yet: read again after a moment.
                Err(e)
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision
                        || arbor_cluster::is_conflict(&e) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(bucket("updating the registry", e)),
            }
        }
        Err(bucket(
            "updating the registry",
            format!("`{name}` kept changing under ten attempts"),
        ))
    }

    /// Forgets `name` cluster-wide.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), ClusterError> {
        self.agents
            .delete(encode_agent(name))
            .await
            .map_err(|e| bucket("removing from the registry", e))?;
        self.view.write().remove(name);
        Ok(())
    }

    /// Uploads every module of the local vault the module store is not known to hold. Asks
    /// the store about each unknown one by name (a direct read): no consumer is made, so a
    /// spawn can call it every time.
    pub(crate) async fn upload_modules(&self, vault: &Vault) -> Result<(), ClusterError> {
        for meta in vault.list_modules().map_err(ClusterError::Vault)? {
            let name = meta.hash.to_string();
            if self.stored.lock().contains(&name) {
                continue;
            }
            match self.modules.info(name.as_str()).await {
                Ok(info) if !info.deleted => {}
                Ok(_) => self.upload(vault, &meta.hash, &name).await?,
                Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => {
                    self.upload(vault, &meta.hash, &name).await?;
                }
                Err(e) => return Err(bucket("reading arbor_modules", e)),
            }
            self.stored.lock().insert(name);
        }
        Ok(())
    }

    async fn upload(
        &self,
        vault: &Vault,
        hash: &ModuleHash,
        name: &str,
    ) -> Result<(), ClusterError> {
        let Some(bytes) = vault.module_bytes(hash).map_err(ClusterError::Vault)? else {
            return Ok(());
        };
        self.modules
            .put(name, &mut bytes.as_slice())
            .await
            .map_err(|e| bucket("uploading a module", e))?;
        Ok(())
    }

    /// The bytes of module `hash` from the module store, `None` if it holds none by that name
    /// (a direct read: no consumer is made).
    pub(crate) async fn fetch_module(
        &self,
        hash: &ModuleHash,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut object = match self.modules.get(hash.to_string().as_str()).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bucket("downloading a module", e)),
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| bucket("downloading a module", e))?;
        Ok(Some(bytes))
    }

    /// Uploads what the module store lacks and returns the bytes of every module the local
    /// vault lacks, for the caller to add (modules are few and content-addressed: both sides
    /// only grow). Listing makes a consumer on the store's stream: callers rate-limit it.
    pub(crate) async fn sync_modules(&self, vault: &Vault) -> Result<Vec<Vec<u8>>, ClusterError> {
        let mut remote = Vec::new();
        let mut list = self
            .modules
            .list()
            .await
            .map_err(|e| bucket("listing arbor_modules", e))?;
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| bucket("listing arbor_modules", e))?;
            if !info.deleted {
                remote.push(info.name);
            }
        }
        drop(list);
        self.stored.lock().extend(remote.iter().cloned());
        self.upload_modules(vault).await?;
        let local: Vec<String> = vault
            .list_modules()
            .map_err(ClusterError::Vault)?
            .iter()
            .map(|meta| meta.hash.to_string())
            .collect();
        let mut fetched = Vec::new();
        for name in remote.iter().filter(|name| !local.contains(name)) {
            let mut object = self
                .modules
                .get(name.as_str())
                .await
                .map_err(|e| bucket("downloading a module", e))?;
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| bucket("downloading a module", e))?;
            fetched.push(bytes);
        }
        Ok(fetched)
    }
}

fn encode(registered: &Registered) -> Result<bytes::Bytes, ClusterError> {
    rmp_serde::to_vec_named(registered)
        .map(bytes::Bytes::from)
        .map_err(|e| ClusterError::Corrupt {
            what: format!("registry entry of `{}`", registered.name()),
            reason: e.to_string(),
        })
}
