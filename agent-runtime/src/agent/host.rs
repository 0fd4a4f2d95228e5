//! The two [`Host`]s an agent's behaviour meets: [`LiveHost`] answers from the world and records
//! every answer; [`ReplayHost`] answers from a recording and performs nothing.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use super::system::Shared;
use crate::behaviour::{Host, HostError};
use crate::envelope::{Answer, check_msgpack};
use crate::wasm::Capabilities;

/// A send the behaviour asked for, performed once its input's outcome is durable.
pub(crate) struct PendingSend {
    pub(crate) to: String,
    pub(crate) payload: Vec<u8>,
}

/// Answers from the clock, the RNG, the tools and the agent directory, recording each one.
/// Sends are only queued: they leave after the input's outcome is journaled.
pub(crate) struct LiveHost<'a> {
    pub(crate) agent: &'a str,
    pub(crate) seq: u64,
    pub(crate) capabilities: &'a Capabilities,
    pub(crate) shared: &'a Shared,
    pub(crate) answers: Vec<Answer>,
    pub(crate) sends: Vec<PendingSend>,
}

impl<'a> LiveHost<'a> {
    pub(crate) fn new(
        agent: &'a str,
        seq: u64,
        capabilities: &'a Capabilities,
        shared: &'a Shared,
    ) -> Self {
        LiveHost {
            agent,
            seq,
            capabilities,
            shared,
            answers: Vec::new(),
            sends: Vec::new(),
        }
    }

    fn granted(&self, granted: bool, what: &str) -> Result<(), HostError> {
        if granted {
            Ok(())
        } else {
            Err(HostError::NotGranted(what.into()))
        }
    }
}

impl Host for LiveHost<'_> {
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
            if !self.shared.is_running(to) {
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
            self.shared.tools.call(name, args)
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
        let (agent, seq) = (self.agent, self.seq);
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
/// use arbor_agent::{Host, ReplayHost};
/// use arbor_agent::envelope::Answer;
///
/// let mut host = ReplayHost::new(vec![Answer::Now(Ok(42)), Answer::Send(Ok(()))]);
/// assert_eq!(host.now(), Ok(42));
/// host.send("other", &[0xc0]).unwrap();
/// assert_eq!(host.sends(), &[("other".to_string(), vec![0xc0])]);
/// assert_eq!(host.divergence(), None);
/// assert!(host.random().is_err()); // not in the recording
/// assert!(host.divergence().is_some());
/// ```
pub struct ReplayHost {
    answers: VecDeque<Answer>,
    diverged: Option<String>,
    sends: Vec<(String, Vec<u8>)>,
    tool_calls: Vec<(String, Vec<u8>)>,
}

impl ReplayHost {
    /// A host answering with `answers`, in order.
    pub fn new(answers: Vec<Answer>) -> Self {
        ReplayHost {
            answers: answers.into(),
            diverged: None,
            sends: Vec::new(),
            tool_calls: Vec::new(),
        }
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

impl Host for ReplayHost {
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
        match self.next("call_tool") {
            Some(Answer::Tool(answer)) => answer,
            _ => Err(Self::refused()),
        }
    }

    fn log(&mut self, _level: u8, _line: &str) {}
}
