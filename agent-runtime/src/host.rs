//! [`Host`]: what a behaviour reaches the world through while it handles one input — and an
//! owned value, so a Wasm instance can hold it in its store for the call (wasmtime's model:
//! the store owns the embedder's data while the guest runs; imports reach it through
//! `Caller::data_mut`; it comes back when the call returns). No thread, channel or borrow is
//! needed between the guest's imports and the host.
//!
//! A `Host` is one of three:
//!
//! - **live** (the agent actor's): answers from the clock, the RNG, the tools
//!   and the agent directory, and records every answer for the journal; sends are only
//!   queued — they leave once the input's outcome is durable;
//! - **replay** ([`Host::replay`]): answers from a journaled recording, performs nothing;
//!   recovery, rollbacks and the evolution arbiter's shadows use it;
//! - **custom** ([`Host::custom`]): any [`HostCalls`] implementation (tests, experiments).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::behaviour::{HostCalls, HostError};
use crate::envelope::{Answer, check_msgpack};
use crate::limits::Capabilities;
use crate::tools::Tools;

/// The host a behaviour handles one input with (see the module docs).
pub struct Host(Kind);

enum Kind {
    Live(LiveHost),
    Replay(ReplayHost),
    Custom(Box<dyn HostCalls>),
    /// Lent out (into a Wasm store for a call); taking it twice is a bug.
    Lent,
}

impl Host {
    /// A host answering from `answers` (a journaled recording), in order; see [`ReplayHost`].
    pub fn replay(answers: Vec<Answer>) -> Host {
        Host(Kind::Replay(ReplayHost::new(answers)))
    }

    /// A host for a *candidate* shadow: like [`Host::replay`] for `now`, `random` and sends,
    /// but tool calls are matched by content against `reference`, the tool calls the current
    /// module made while replaying the same `answers` (in order, one per recorded tool answer).
    /// A call equal to an unused reference call gets that call's recorded answer; a call to a
    /// tool `tools` declares pure is performed; any other call is an unanswerable effect:
    /// refused, remembered ([`ReplayHost::unanswerable`]), never performed. Recorded tool
    /// answers the candidate did not ask for are not a divergence here (the callers compare
    /// the calls themselves).
    ///
    /// ```
    /// use arbor_agent::Host;
    /// use arbor_agent::envelope::Answer;
    /// use arbor_agent::tools::{Echo, Tools};
    ///
    /// let tools = Tools::new().with_pure("echo", Echo).with("mail", Echo);
    /// let recorded = vec![Answer::Tool(Ok(vec![1])), Answer::Now(Ok(7))];
    /// let reference = vec![("mail".to_string(), vec![0x90])];
    /// let mut host = Host::replay_against(recorded, reference, tools);
    /// assert_eq!(host.call_tool("echo", &[0xc3]), Ok(vec![0xc3])); // pure: performed
    /// assert!(host.call_tool("mail", &[0xc2]).is_err()); // not production's call
    /// assert_eq!(host.call_tool("mail", &[0x90]), Ok(vec![1])); // production's: recorded
    /// assert_eq!(host.now(), Ok(7));
    /// let replayed = host.replayed().unwrap();
    /// assert_eq!(replayed.unanswerable(), &[("mail".to_string(), vec![0xc2])]);
    /// assert_eq!(replayed.divergence(), None);
    /// ```
    pub fn replay_against(
        answers: Vec<Answer>,
        reference: Vec<(String, Vec<u8>)>,
        tools: Tools,
    ) -> Host {
        let mut rest = Vec::with_capacity(answers.len());
        let mut recorded = Vec::new();
        let mut reference = reference.into_iter();
        for answer in answers {
            match answer {
                Answer::Tool(result) => {
                    if let Some((tool, args)) = reference.next() {
                        recorded.push(Some((tool, args, result)));
                    }
                }
                other => rest.push(other),
            }
        }
        let mut host = ReplayHost::new(rest);
        host.against = Some(Against {
            recorded,
            tools,
            unanswerable: Vec::new(),
        });
        Host(Kind::Replay(host))
    }

    /// A host answering with `calls`.
    pub fn custom(calls: impl HostCalls) -> Host {
        Host(Kind::Custom(Box::new(calls)))
    }

    pub(crate) fn live(live: LiveHost) -> Host {
        Host(Kind::Live(live))
    }

    /// The replay host inside, for what it captured (sends, tool calls, divergence).
    pub fn replayed(&self) -> Option<&ReplayHost> {
        match &self.0 {
            Kind::Replay(replay) => Some(replay),
            _ => None,
        }
    }

    /// The custom host inside, if it is a `T`.
    pub fn custom_ref<T: HostCalls>(&self) -> Option<&T> {
        match &self.0 {
            Kind::Custom(calls) => (&**calls as &dyn Any).downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The custom host inside, if it is a `T`, given back (the host is consumed either way).
    pub fn into_custom<T: HostCalls>(self) -> Option<T> {
        match self.0 {
            Kind::Custom(calls) => {
                let calls: Box<dyn Any> = calls;
                calls.downcast::<T>().ok().map(|calls| *calls)
            }
            _ => None,
        }
    }

    pub(crate) fn live_mut(&mut self) -> Option<&mut LiveHost> {
        match &mut self.0 {
            Kind::Live(live) => Some(live),
            _ => None,
        }
    }

    /// Moves the host out (into a Wasm store for one call), leaving a placeholder; give it back
    /// with [`Host::restore`].
    pub(crate) fn lend(&mut self) -> Host {
        std::mem::replace(self, Host(Kind::Lent))
    }

    /// Puts back a host [`lend`](Self::lend) took.
    pub(crate) fn restore(&mut self, host: Host) {
        *self = host;
    }

    fn calls(&mut self) -> Result<&mut dyn HostCalls, HostError> {
        match &mut self.0 {
            Kind::Live(live) => Ok(live),
            Kind::Replay(replay) => Ok(replay),
            Kind::Custom(calls) => Ok(&mut **calls),
            Kind::Lent => Err(HostError::Refused(
                "the host is lent to another call".into(),
            )),
        }
    }

    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub fn now(&mut self) -> Result<u64, HostError> {
        self.calls()?.now()
    }

    /// 64 random bits.
    pub fn random(&mut self) -> Result<u64, HostError> {
        self.calls()?.random()
    }

    /// Queues a cast of `message` (MessagePack) to the agent `to`, delivered after this input
    /// is handled successfully.
    pub fn send(&mut self, to: &str, message: &[u8]) -> Result<(), HostError> {
        self.calls()?.send(to, message)
    }

    /// Runs the host tool `name` with MessagePack `args`; returns its MessagePack result.
    pub fn call_tool(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.calls()?.call_tool(name, args)
    }

    /// A log line from the behaviour (0 trace … 4 error).
    pub fn log(&mut self, level: u8, line: &str) {
        if let Ok(calls) = self.calls() {
            calls.log(level, line);
        }
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0 {
            Kind::Live(_) => "Host::Live",
            Kind::Replay(_) => "Host::Replay",
            Kind::Custom(_) => "Host::Custom",
            Kind::Lent => "Host::Lent",
        })
    }
}

/// A send the behaviour asked for, performed once its input's outcome is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingSend {
    pub(crate) to: String,
    pub(crate) payload: Vec<u8>,
}

/// What a live host asks of the system it runs in.
pub(crate) trait World: Send + Sync {
    /// Whether an agent of this name runs (sends to unknown agents are refused).
    fn agent_exists(&self, name: &str) -> bool;
    /// Runs a tool.
    fn call_tool(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError>;
}

/// Answers from the clock, the RNG, the tools and the agent directory, recording each one.
/// Sends are only queued: they leave after the input's outcome is journaled. One per agent,
/// reused for every input ([`begin`](Self::begin), then [`finish`](Self::finish)).
pub(crate) struct LiveHost {
    agent: Arc<str>,
    seq: u64,
    capabilities: Arc<Capabilities>,
    world: Arc<dyn World>,
    answers: Vec<Answer>,
    sends: Vec<PendingSend>,
}

impl LiveHost {
    pub(crate) fn new(
        agent: Arc<str>,
        capabilities: Arc<Capabilities>,
        world: Arc<dyn World>,
    ) -> LiveHost {
        LiveHost {
            agent,
            seq: 0,
            capabilities,
            world,
            answers: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Starts recording for input `seq`.
    pub(crate) fn begin(&mut self, seq: u64) {
        self.seq = seq;
        self.answers.clear();
        self.sends.clear();
    }

    /// The answers recorded and the sends queued for the input.
    pub(crate) fn finish(&mut self) -> (Vec<Answer>, Vec<PendingSend>) {
        (
            std::mem::take(&mut self.answers),
            std::mem::take(&mut self.sends),
        )
    }

    fn granted(&self, granted: bool, what: &str) -> Result<(), HostError> {
        if granted {
            Ok(())
        } else {
            Err(HostError::NotGranted(what.into()))
        }
    }
}

impl HostCalls for LiveHost {
    fn now(&mut self) -> Result<u64, HostError> {
        let answer = self.granted(self.capabilities.now, "now").map(|()| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        self.answers.push(Answer::Now(answer.clone()));
        answer
    }

    fn random(&mut self) -> Result<u64, HostError> {
        let answer = self
            .granted(self.capabilities.random, "random")
            .map(|()| rand::random::<u64>());
        self.answers.push(Answer::Random(answer.clone()));
        answer
    }

    fn send(&mut self, to: &str, message: &[u8]) -> Result<(), HostError> {
        let answer = self.granted(self.capabilities.send, "send").and_then(|()| {
            check_msgpack(message)
                .map_err(|e| HostError::Refused(format!("malformed MessagePack: {e}")))?;
            if !self.world.agent_exists(to) {
                return Err(HostError::NoSuchAgent(to.into()));
            }
            self.sends.push(PendingSend {
                to: to.into(),
                payload: message.to_vec(),
            });
            Ok(())
        });
        self.answers.push(Answer::Send(answer.clone()));
        answer
    }

    fn call_tool(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        let answer = if self.capabilities.tools.contains(name) {
            self.world.call_tool(name, args)
        } else {
            Err(HostError::NotGranted(format!("tool {name}")))
        };
        self.answers.push(Answer::Tool(answer.clone()));
        answer
    }

    fn log(&mut self, level: u8, line: &str) {
        if !self.capabilities.log {
            return;
        }
        let (agent, seq) = (&*self.agent, self.seq);
        match level {
            0 => tracing::trace!(agent, seq, "{line}"),
            1 => tracing::debug!(agent, seq, "{line}"),
            2 => tracing::info!(agent, seq, "{line}"),
            3 => tracing::warn!(agent, seq, "{line}"),
            _ => tracing::error!(agent, seq, "{line}"),
        }
    }
}

/// Answers from a journaled recording, in order; performs no effect and logs nothing. A
/// question the recording does not have (the behaviour asks something else than it did live)
/// is answered with a refusal and remembered as a divergence. Sends the recording accepted are
/// captured, not delivered: recovery drops them, the evolution arbiter compares them.
///
/// ```
/// use arbor_agent::Host;
/// use arbor_agent::envelope::Answer;
///
/// let mut host = Host::replay(vec![Answer::Now(Ok(42)), Answer::Send(Ok(()))]);
/// assert_eq!(host.now(), Ok(42));
/// host.send("other", &[0xc0]).unwrap();
/// let replayed = host.replayed().unwrap();
/// assert_eq!(replayed.sends(), &[("other".to_string(), vec![0xc0])]);
/// assert_eq!(replayed.divergence(), None);
/// assert!(host.random().is_err()); // not in the recording
/// assert!(host.replayed().unwrap().divergence().is_some());
/// ```
pub struct ReplayHost {
    answers: VecDeque<Answer>,
    diverged: Option<String>,
    sends: Vec<(String, Vec<u8>)>,
    tool_calls: Vec<(String, Vec<u8>)>,
    /// Tool calls matched by content ([`Host::replay_against`]).
    against: Option<Against>,
}

/// A reference call (tool, arguments) and production's recorded answer to it.
type Recorded = (String, Vec<u8>, Result<Vec<u8>, HostError>);

/// A candidate's tool answers: the reference's calls with their recorded answers (`None` once
/// used), the host's tools (the pure ones run), and the calls nobody could answer.
struct Against {
    recorded: Vec<Option<Recorded>>,
    tools: Tools,
    unanswerable: Vec<(String, Vec<u8>)>,
}

impl Against {
    fn call(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        let same = self
            .recorded
            .iter_mut()
            .find(|slot| matches!(slot, Some((tool, a, _)) if tool == name && a == args));
        if let Some(slot) = same
            && let Some((_, _, answer)) = slot.take()
        {
            return answer;
        }
        if self.tools.is_pure(name) {
            return self.tools.call(name, args);
        }
        self.unanswerable.push((name.to_string(), args.to_vec()));
        Err(HostError::Refused(format!(
            "unanswerable effect: production did not call `{name}` with these arguments, \
             and it is not a pure tool"
        )))
    }
}

impl ReplayHost {
    fn new(answers: Vec<Answer>) -> Self {
        ReplayHost {
            answers: answers.into(),
            diverged: None,
            sends: Vec::new(),
            tool_calls: Vec::new(),
            against: None,
        }
    }

    /// Tool calls that were neither production's (by content) nor to a pure tool: effects a
    /// shadow cannot be answered for, refused and never performed ([`Host::replay_against`]).
    pub fn unanswerable(&self) -> &[(String, Vec<u8>)] {
        self.against
            .as_ref()
            .map_or(&[], |against| &against.unanswerable)
    }

    /// The sends the behaviour made that the recording accepted (recipient, message), in order.
    pub fn sends(&self) -> &[(String, Vec<u8>)] {
        &self.sends
    }

    /// The tool calls the behaviour made (tool, arguments), in order; each was answered from
    /// the recording, none ran.
    pub fn tool_calls(&self) -> &[(String, Vec<u8>)] {
        &self.tool_calls
    }

    /// Why the replay did not match the recording, if it did not (including answers left over).
    pub fn divergence(&self) -> Option<String> {
        self.diverged.clone().or_else(|| {
            self.answers.front().map(|next| {
                format!(
                    "the behaviour did not ask `{}` as it did when live",
                    next.import()
                )
            })
        })
    }

    fn next(&mut self, asked: &str) -> Option<Answer> {
        if self.diverged.is_some() {
            return None;
        }
        match self.answers.pop_front() {
            Some(answer) if answer.import() == asked => Some(answer),
            other => {
                self.diverged = Some(match other {
                    Some(answer) => format!(
                        "the behaviour asked `{asked}` where it asked `{}` live",
                        answer.import()
                    ),
                    None => format!("the behaviour asked `{asked}`, more than it did live"),
                });
                None
            }
        }
    }

    fn refused() -> HostError {
        HostError::Refused("replay diverged from the journal".into())
    }
}

impl HostCalls for ReplayHost {
    fn now(&mut self) -> Result<u64, HostError> {
        match self.next("now") {
            Some(Answer::Now(answer)) => answer,
            _ => Err(Self::refused()),
        }
    }

    fn random(&mut self) -> Result<u64, HostError> {
        match self.next("random") {
            Some(Answer::Random(answer)) => answer,
            _ => Err(Self::refused()),
        }
    }

    fn send(&mut self, to: &str, message: &[u8]) -> Result<(), HostError> {
        match self.next("send") {
            Some(Answer::Send(answer)) => {
                if answer.is_ok() {
                    self.sends.push((to.to_string(), message.to_vec()));
                }
                answer
            }
            _ => Err(Self::refused()),
        }
    }

    fn call_tool(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        self.tool_calls.push((name.to_string(), args.to_vec()));
        if let Some(against) = &mut self.against {
            return against.call(name, args);
        }
        match self.next("call_tool") {
            Some(Answer::Tool(answer)) => answer,
            _ => Err(Self::refused()),
        }
    }

    fn log(&mut self, _level: u8, _line: &str) {}
}
