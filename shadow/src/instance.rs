//! Shadow instances and where they run: in this process ([`Instance`]), or on another node of
//! a cluster ([`ShadowNodes`]), so that production's CPU is left to production.
//!
//! An instance is a behaviour outside the agent directory and outside the journal. It handles
//! an input with a [`Host`] holding the answers production's host gave for that input: `now`,
//! `random` and tool calls return production's recorded values, and sends are captured, never
//! delivered. A candidate's tool calls are matched against the control's by content
//! ([`Instance::run_against`]): tools the host declares pure run, other calls production did
//! not make are unanswerable effects, reported and never performed. What a run did comes back as a [`Run`], which is plain data: a node that runs
//! shadows for another sends it back over the network, and the comparison happens where the
//! arbiter is.

use std::time::{Duration, Instant};

use arbor_agent::envelope::Answer;
use arbor_agent::tools::Tools;
use arbor_agent::wasm::{AgentLimits, Capabilities};
use arbor_agent::{AgentSystem, Behaviour, BehaviourError, BehaviourId, Host, MirroredStatus};
use serde::{Deserialize, Serialize};

use crate::compare::render;

/// How one run of an input ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ended {
    /// The behaviour replied (MessagePack).
    Replied(#[serde(with = "serde_bytes")] Vec<u8>),
    /// It refused the input.
    Refused(String),
    /// It crashed (trapped, ran out of fuel or time, …).
    Crashed(String),
}

impl Ended {
    pub(crate) fn render(&self) -> String {
        match self {
            Ended::Replied(reply) => render(reply, 200),
            Ended::Refused(why) => format!("refused: {why}"),
            Ended::Crashed(why) => format!("crashed: {why}"),
        }
    }
}

impl From<&MirroredStatus> for Ended {
    fn from(status: &MirroredStatus) -> Ended {
        match status {
            MirroredStatus::Applied(reply) => Ended::Replied(reply.clone()),
            MirroredStatus::Refused(why) => Ended::Refused(why.clone()),
            MirroredStatus::Crashed(why) => Ended::Crashed(why.clone()),
        }
    }
}

/// What one run of an input did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// How it ended.
    pub ended: Ended,
    /// The sends it asked for (recipient, message), captured.
    pub sends: Vec<(String, Vec<u8>)>,
    /// The tool calls it made (tool, arguments), answered from the recording.
    pub tools: Vec<(String, Vec<u8>)>,
    /// Tool calls that were neither production's nor to a pure tool: effects nobody could
    /// answer for a shadow, refused and never performed (only a candidate run, answered
    /// against the control's calls, has them).
    #[serde(default)]
    pub unanswerable: Vec<(String, Vec<u8>)>,
    /// The run asked the host for something else than production did.
    pub divergence: Option<String>,
    /// The fuel it used (Wasm behaviours).
    pub fuel: Option<u64>,
    /// Its linear memory after the input, in bytes (Wasm behaviours).
    #[serde(default)]
    pub memory: Option<u64>,
    /// How long the behaviour took.
    pub took: Duration,
}

/// What a shadow instance is made of: a module, exactly production's limits and grants, and
/// the state it starts from (restored: for another module than the one that wrote it, a
/// migration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The module.
    pub module: BehaviourId,
    /// Production's limits.
    pub limits: AgentLimits,
    /// Production's grants.
    pub capabilities: Capabilities,
    /// The state to restore.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// A shadow instance in this process.
///
/// ```
/// use arbor_agent::{AgentSystem, Behaviour, BehaviourId};
/// use arbor_shadow::instance::{Ended, Instance};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let system = AgentSystem::builder().build()?;
/// let kv = BehaviourId::Wasm(system.add_module("kv", arbor_modules::KV)?);
/// let (limits, grants) = (Default::default(), Default::default());
/// // A fresh instance's state, as production's snapshot would be.
/// let mut fresh = system.instantiate(&kv, &limits, &grants)?;
/// fresh.init(b"")?;
/// let state = fresh.snapshot()?;
/// let mut instance = Instance::open(&system, &kv, &limits, &grants, &state)
///     .map_err(std::io::Error::other)?;
///
/// #[derive(serde::Serialize)]
/// enum Kv { Put { key: String, value: String } }
/// let put = rmp_serde::to_vec_named(&Kv::Put { key: "k".into(), value: "v".into() })?;
/// assert!(matches!(instance.run(&put, Vec::new()).ended, Ended::Replied(_)));
/// assert!(matches!(instance.run(b"not msgpack", Vec::new()).ended, Ended::Refused(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Instance {
    behaviour: Box<dyn Behaviour>,
    /// The host's tools: a candidate's calls to the pure ones are performed.
    tools: Tools,
}

impl Instance {
    /// An instance of `module` under `limits` and `capabilities`, holding `state`; `Err`
    /// says why it cannot be made (an unknown module, refused imports, a state it cannot
    /// restore).
    pub fn open(
        system: &AgentSystem,
        module: &BehaviourId,
        limits: &AgentLimits,
        capabilities: &Capabilities,
        state: &[u8],
    ) -> Result<Instance, String> {
        let mut behaviour = system
            .instantiate(module, limits, capabilities)
            .map_err(|e| e.to_string())?;
        behaviour
            .restore(state)
            .map_err(|e| format!("{module} cannot restore the state: {e}"))?;
        Ok(Instance {
            behaviour,
            tools: system.tools(),
        })
    }

    /// Handles `payload` with production's recorded `answers`. A panic in the behaviour is a
    /// crash of this run, not of the caller.
    pub fn run(&mut self, payload: &[u8], answers: Vec<Answer>) -> Run {
        self.run_with(payload, Host::replay(answers))
    }

    /// Handles `payload` as a candidate: with production's recorded `answers`, its tool calls
    /// matched against `reference`, the calls the current module made on the same input
    /// ([`Host::replay_against`]: pure tools run, other calls production did not make are
    /// [`Run::unanswerable`]).
    pub fn run_against(
        &mut self,
        payload: &[u8],
        answers: Vec<Answer>,
        reference: Vec<(String, Vec<u8>)>,
    ) -> Run {
        let host = Host::replay_against(answers, reference, self.tools.clone());
        self.run_with(payload, host)
    }

    fn run_with(&mut self, payload: &[u8], mut host: Host) -> Run {
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.behaviour.handle(payload, &mut host)
        }))
        .unwrap_or_else(|_| Err(BehaviourError::Trap("panicked".into())));
        let took = started.elapsed();
        let ended = match result {
            Ok(reply) => Ended::Replied(reply),
            Err(error) if error.is_crash() => Ended::Crashed(error.to_string()),
            Err(error) => Ended::Refused(error.to_string()),
        };
        let replayed = host.replayed();
        let cost = self.behaviour.last_cost();
        Run {
            ended,
            sends: replayed.map(|r| r.sends().to_vec()).unwrap_or_default(),
            tools: replayed
                .map(|r| r.tool_calls().to_vec())
                .unwrap_or_default(),
            unanswerable: replayed
                .map(|r| r.unanswerable().to_vec())
                .unwrap_or_default(),
            divergence: replayed.and_then(|r| r.divergence()),
            fuel: cost.fuel,
            memory: cost.memory,
            took,
        }
    }

    /// The instance's state.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, BehaviourError> {
        self.behaviour.snapshot()
    }
}

/// Why an instance could not answer.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The behaviour failed (here, or on the node running it, which reported it).
    #[error(transparent)]
    Behaviour(#[from] BehaviourError),
    /// The instance could not be made (an unknown module, refused imports, a state it cannot
    /// restore).
    #[error("{0}")]
    Open(String),
    /// The node running it failed or could not be reached: the instance is lost.
    #[error("the shadow node `{node}`: {reason}")]
    Node {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
}

/// Other nodes that run shadow instances: a cluster's (arbor's cluster mode provides one; an
/// [`Arbiter`](crate::Arbiter) uses it when it is given one with
/// [`place_shadows_on`](crate::Arbiter::place_shadows_on)).
///
/// Calls block (the arbiter's shadows run on threads of their own, outside the async
/// runtime's workers).
pub trait ShadowNodes: Send + Sync + 'static {
    /// The node the arbiter is on.
    fn this_node(&self) -> String;
    /// A live node other than this one to run `agent`'s shadows, or why there is none.
    fn choose(&self, agent: &str) -> Result<String, String>;
    /// Makes an instance on `node`: [`InstanceError::Node`] when the node cannot be reached,
    /// [`InstanceError::Open`] when it refused (an unknown module, a state it cannot restore).
    fn open(
        &self,
        node: &str,
        spec: InstanceSpec,
    ) -> Result<Box<dyn RemoteInstance>, InstanceError>;
}

/// An instance on another node. Dropping it releases it there.
pub trait RemoteInstance: Send {
    /// The node it runs on.
    fn node(&self) -> &str;
    /// [`Instance::run`] there.
    fn run(&mut self, payload: &[u8], answers: Vec<Answer>) -> Result<Run, InstanceError>;
    /// [`Instance::run_against`] there (with that node's tools: a cluster's nodes must
    /// declare the same pure tools).
    fn run_against(
        &mut self,
        payload: &[u8],
        answers: Vec<Answer>,
        reference: Vec<(String, Vec<u8>)>,
    ) -> Result<Run, InstanceError>;
    /// [`Instance::snapshot`] there.
    fn snapshot(&mut self) -> Result<Vec<u8>, InstanceError>;
}
