//! Shadows on another node: an arbiter on an agent's owner runs the evaluation's shadow
//! instances on another node of the cluster, so that production's CPU, memory and compile
//! cache are left to production.
//!
//! The arbiter keeps everything but the Wasm work: the mirror of production, the journal
//! reads, the comparison, the verdict and the lineage. Each instance lives on the shadow node
//! ([`serve`], subject `arbor.shadow.<node>`); the arbiter's node sends it production's inputs
//! with their recorded host answers, and gets back what the instance did
//! ([`arbor_shadow::instance::Run`]), over NATS request/reply ([`Shadows`], the arbiter's
//! [`ShadowNodes`]). The candidate module reaches the shadow node through the module store
//! (`arbor_modules`), like every module.
//!
//! An instance is bounded in number ([`MAX_HOSTED`]) and in life: the arbiter releases it when
//! it drops it, and one not used for [`IDLE`] (its arbiter's node died) is released by the
//! shadow node. A lost shadow node fails the evaluation with the reason; production never
//! notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arbor_agent::BehaviourId;
use arbor_agent::envelope::Answer;
use arbor_shadow::ShadowNodes;
use arbor_shadow::instance::{Instance, InstanceError, InstanceSpec, RemoteInstance, Run};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::{Local, Node};

/// The subject a node runs shadows on.
fn subject(node: &str) -> String {
    format!("arbor.shadow.{node}")
}

/// Instances a node holds for other nodes' arbiters at most; an open past it is refused.
pub(crate) const MAX_HOSTED: usize = 64;

/// An instance unused this long is released (the arbiter that opened it is gone).
pub(crate) const IDLE: Duration = Duration::from_secs(600);

/// Requests a node works on at once; more wait in the subscription.
const IN_FLIGHT: usize = 16;

/// What an arbiter asks a shadow node.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Make an instance.
    Open(InstanceSpec),
    /// Run an input through instance `id`.
    Run {
        id: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        answers: Vec<Answer>,
        /// Set for a candidate: the control's tool calls to answer its calls against
        /// (`Instance::run_against`).
        #[serde(default)]
        reference: Option<Vec<(String, Vec<u8>)>>,
    },
    /// Instance `id`'s state.
    Snapshot { id: u64 },
    /// Release instance `id`.
    Close { id: u64 },
}

/// What the shadow node answers.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Opened(u64),
    Ran(Run),
    State(#[serde(with = "serde_bytes")] Vec<u8>),
    Closed,
    Failed(String),
}

/// One instance held for another node.
struct Hosted {
    instance: Arc<Mutex<Instance>>,
    used: Instant,
}

/// The instances this node holds for others.
#[derive(Default)]
struct Held {
    next: AtomicU64,
    instances: Mutex<HashMap<u64, Hosted>>,
}

impl Held {
    fn get(&self, id: u64) -> Option<Arc<Mutex<Instance>>> {
        let mut instances = self.instances.lock();
        let hosted = instances.get_mut(&id)?;
        hosted.used = Instant::now();
        Some(Arc::clone(&hosted.instance))
    }

    /// Holds `instance`, releasing idle ones first; `None` when full.
    fn hold(&self, instance: Instance) -> Option<u64> {
        let mut instances = self.instances.lock();
        instances.retain(|_, hosted| hosted.used.elapsed() < IDLE);
        if instances.len() >= MAX_HOSTED {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        instances.insert(
            id,
            Hosted {
                instance: Arc::new(Mutex::new(instance)),
                used: Instant::now(),
            },
        );
        Some(id)
    }

    fn release(&self, id: u64) {
        self.instances.lock().remove(&id);
    }

    fn count(&self) -> usize {
        self.instances.lock().len()
    }
}

/// Runs shadows for other nodes' arbiters until the runtime is gone. The tasks hold the
/// registry and the client, not the node: the node (and the sled databases it holds) is
/// dropped where the runtime drops it, never on a task of this server.
pub(crate) async fn serve(
    node: &Arc<Node>,
    local: Weak<dyn Local>,
) -> Result<(), async_nats::SubscribeError> {
    let client = node.client.clone();
    let registry = node.registry.clone();
    let mut requests = client.subscribe(subject(node.name())).await?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let held = Arc::new(Held::default());
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            if local.strong_count() == 0 {
                return;
            }
            let (client, held, registry, local) = (
                client.clone(),
                Arc::clone(&held),
                registry.clone(),
                local.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let reply = match rmp_serde::from_slice::<Request>(&message.payload) {
                    Ok(request) => answer(&registry, local, &held, request).await,
                    Err(error) => Reply::Failed(format!("undecodable request: {error}")),
                };
                metrics::gauge!(arbor_metrics::CLUSTER_SHADOWS_HOSTED).set(held.count() as f64);
                let Some(reply_to) = message.reply else {
                    return; // a close
                };
                super::rpc::respond(&client, reply_to, &reply).await;
            });
        }
    });
    Ok(())
}

async fn answer(
    registry: &super::Registry,
    local: Weak<dyn Local>,
    held: &Arc<Held>,
    request: Request,
) -> Reply {
    let wanted = match &request {
        Request::Open(spec) => match &spec.module {
            BehaviourId::Wasm(hash) => Some(*hash),
            BehaviourId::Native(_) => None,
        },
        _ => None,
    };
    if let Some(hash) = wanted {
        let missing = match local.upgrade() {
            Some(local) => matches!(local.vault().map(|v| v.module_bytes(&hash)), Some(Ok(None))),
            None => return Reply::Failed("the node is shutting down".into()),
        };
        if missing {
            let fetched = match registry.fetch_module(&hash).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Reply::Failed(format!("module {hash} is not in the store")),
                Err(error) => return Reply::Failed(arbor_agent::report::chain(&error)),
            };
            let adding = local.clone();
            let added = tokio::task::spawn_blocking(move || match adding.upgrade() {
                Some(local) => local
                    .add_module(&fetched)
                    .map_err(|e| format!("module {hash}: {e}")),
                None => Err("the node is shutting down".into()),
            })
            .await;
            match added {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Reply::Failed(reason),
                Err(error) => return Reply::Failed(format!("adding the module failed: {error}")),
            }
        }
    }
    let held = Arc::clone(held);
    // The Wasm work runs off the async workers, and so does dropping the runtime if this
    // request held it last.
    let worked = tokio::task::spawn_blocking(move || {
        let Some(local) = local.upgrade() else {
            return Reply::Failed("the node is shutting down".into());
        };
        match request {
            Request::Open(spec) => {
                let opened = Instance::open(
                    local.system(),
                    &spec.module,
                    &spec.limits,
                    &spec.capabilities,
                    &spec.state,
                );
                match opened {
                    Ok(instance) => match held.hold(instance) {
                        Some(id) => Reply::Opened(id),
                        None => Reply::Failed(format!(
                            "this node already holds {MAX_HOSTED} shadow instances"
                        )),
                    },
                    Err(reason) => Reply::Failed(reason),
                }
            }
            Request::Run {
                id,
                payload,
                answers,
                reference,
            } => match held.get(id) {
                Some(instance) => Reply::Ran(match reference {
                    Some(reference) => instance.lock().run_against(&payload, answers, reference),
                    None => instance.lock().run(&payload, answers),
                }),
                None => Reply::Failed(format!("no shadow instance {id} here")),
            },
            Request::Snapshot { id } => match held.get(id) {
                Some(instance) => match instance.lock().snapshot() {
                    Ok(state) => Reply::State(state),
                    Err(error) => Reply::Failed(error.to_string()),
                },
                None => Reply::Failed(format!("no shadow instance {id} here")),
            },
            Request::Close { id } => {
                held.release(id);
                Reply::Closed
            }
        }
    });
    worked
        .await
        .unwrap_or_else(|error| Reply::Failed(format!("the shadow task failed: {error}")))
}

/// The cluster's nodes as an arbiter's [`ShadowNodes`].
pub(crate) struct Shadows {
    pub(crate) node: Weak<Node>,
    pub(crate) local: Weak<dyn Local>,
    pub(crate) handle: Handle,
}

impl Shadows {
    fn node(&self) -> Result<Arc<Node>, String> {
        self.node
            .upgrade()
            .ok_or_else(|| "the runtime has shut down".to_string())
    }
}

impl ShadowNodes for Shadows {
    fn this_node(&self) -> String {
        self.node
            .upgrade()
            .map(|node| node.name().to_string())
            .unwrap_or_default()
    }

    fn choose(&self, agent: &str) -> Result<String, String> {
        let node = self.node()?;
        // Any live node but this one; one that hosts no agents (a client node) too.
        let others: Vec<String> = node
            .members
            .all()
            .into_iter()
            .filter(|(beat, live)| *live && beat.node != node.name())
            .map(|(beat, _)| beat.node)
            .collect();
        super::placement::place(agent, &others)
            .map(str::to_string)
            .ok_or_else(|| "no other live node to run the shadows on".to_string())
    }

    fn open(&self, on: &str, spec: InstanceSpec) -> Result<Box<dyn RemoteInstance>, InstanceError> {
        let lost = |reason: String| InstanceError::Node {
            node: on.to_string(),
            reason,
        };
        let node = self.node().map_err(lost)?;
        let local = self
            .local
            .upgrade()
            .ok_or_else(|| lost("the runtime has shut down".to_string()))?;
        let timeout = request_timeout(&spec);
        let opened = self
            .handle
            .block_on(async {
                if let Some(vault) = local.vault() {
                    node.registry
                        .upload_modules(vault)
                        .await
                        .map_err(|e| arbor_agent::report::chain(&e))?;
                }
                // An open may fetch the module from the store and compile it first: work no
                // instance deadline bounds, given its own allowance.
                let open_timeout = timeout + OPEN_ALLOWANCE;
                ask(&node.client, on, &Request::Open(spec), open_timeout).await
            })
            .map_err(lost)?;
        match opened {
            Reply::Opened(id) => Ok(Box::new(Remote {
                client: node.client.clone(),
                handle: self.handle.clone(),
                node: on.to_string(),
                id,
                timeout,
            })),
            Reply::Failed(reason) => Err(InstanceError::Open(format!("on node `{on}`: {reason}"))),
            other => Err(lost(format!("answered {other:?} to an open"))),
        }
    }
}

/// What an open may take beyond [`request_timeout`]: fetching the module from the store and
/// compiling it on a loaded node (seen to pass 10 s on a busy 2-core CI machine).
const OPEN_ALLOWANCE: Duration = Duration::from_secs(50);

/// How long a request to a shadow node may take: the instance's deadline (a run, a snapshot
/// or a restore each get that much) and a margin for the network and the node's queue.
fn request_timeout(spec: &InstanceSpec) -> Duration {
    spec.limits.deadline.saturating_mul(2) + Duration::from_secs(10)
}

async fn ask(
    client: &async_nats::Client,
    node: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, String> {
    let payload = rmp_serde::to_vec_named(request).map_err(|e| e.to_string())?;
    let request = async_nats::Request::new()
        .payload(Bytes::from(payload))
        .timeout(Some(timeout));
    let message = client
        .send_request(subject(node), request)
        .await
        .map_err(|e| format!("asking node `{node}`: {e}"))?;
    rmp_serde::from_slice(&message.payload)
        .map_err(|e| format!("undecodable answer from node `{node}`: {e}"))
}

/// An instance on another node.
struct Remote {
    client: async_nats::Client,
    handle: Handle,
    node: String,
    id: u64,
    timeout: Duration,
}

impl Remote {
    fn ask(&self, request: &Request) -> Result<Reply, InstanceError> {
        self.handle
            .block_on(ask(&self.client, &self.node, request, self.timeout))
            .map_err(|reason| self.lost(reason))
    }

    fn ran(&self, request: Request) -> Result<Run, InstanceError> {
        match self.ask(&request)? {
            Reply::Ran(run) => Ok(run),
            Reply::Failed(reason) => Err(self.lost(reason)),
            other => Err(self.lost(format!("answered {other:?} to a run"))),
        }
    }

    fn lost(&self, reason: String) -> InstanceError {
        InstanceError::Node {
            node: self.node.clone(),
            reason,
        }
    }
}

impl RemoteInstance for Remote {
    fn node(&self) -> &str {
        &self.node
    }

    fn run(&mut self, payload: &[u8], answers: Vec<Answer>) -> Result<Run, InstanceError> {
        self.ran(Request::Run {
            id: self.id,
            payload: payload.to_vec(),
            answers,
            reference: None,
        })
    }

    fn run_against(
        &mut self,
        payload: &[u8],
        answers: Vec<Answer>,
        reference: Vec<(String, Vec<u8>)>,
    ) -> Result<Run, InstanceError> {
        self.ran(Request::Run {
            id: self.id,
            payload: payload.to_vec(),
            answers,
            reference: Some(reference),
        })
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, InstanceError> {
        match self.ask(&Request::Snapshot { id: self.id })? {
            Reply::State(state) => Ok(state),
            Reply::Failed(reason) => Err(self.lost(reason)),
            other => Err(self.lost(format!("answered {other:?} to a snapshot"))),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Fire and forget: a node that misses it releases the instance when it idles out.
        let Ok(payload) = rmp_serde::to_vec_named(&Request::Close { id: self.id }) else {
            return;
        };
        let (client, subject) = (self.client.clone(), subject(&self.node));
        self.handle.spawn(async move {
            let _ = client.publish(subject, Bytes::from(payload)).await;
        });
    }
}
