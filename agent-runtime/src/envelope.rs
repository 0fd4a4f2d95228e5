//! What travels to an agent and what the journal keeps of it.
//!
//! Every input is an [`Envelope`]. Once the agent has handled it, it journals it as
//! [`Entry::Input`] followed by its [`Entry::Outcome`] — whether it was applied, refused or
//! crashed the behaviour, and the answers the host gave while it ran (`now`, `random`, tool
//! results, whether each send was accepted) — both in one append, so an input costs one
//! durability wait. Nothing is answered or sent before both are durable. Replay feeds the
//! answers back, so it needs no clock, no randomness and no tool. A swap of the agent's
//! behaviour is [`Entry::Swap`], a rebuilt state [`Entry::Rebase`]. All entries are MessagePack
//! with named fields, so records stay readable as the format grows.
//!
//! Format versions: data directories written before the records were appended together (the
//! input appended before handling, its outcome after) hold the same records in the same order
//! and read the same; an input whose outcome never came is read as unacknowledged either way.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::behaviour::HostError;

/// One message to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The recipient agent.
    pub to: String,
    /// The sending agent, or `None` for the host.
    pub from: Option<String>,
    /// The recipient's input number: 1 for an agent's first input, then one more per input.
    pub seq: u64,
    /// Whether the sender waits for a reply.
    pub kind: Kind,
    /// The message, MessagePack.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Call or cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The sender waits for the reply.
    Call,
    /// Fire and forget.
    Cast,
}

/// One journal record of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// An input, journaled before it is handled.
    Input(Envelope),
    /// What handling input `seq` did.
    Outcome {
        /// The agent.
        agent: String,
        /// The input's number.
        seq: u64,
        /// Applied, refused or crashed.
        status: Status,
        /// The host's answers, in the order the behaviour asked.
        answers: Vec<Answer>,
    },
    /// The agent's behaviour was replaced after input `seq`.
    Swap {
        /// The agent.
        agent: String,
        /// Inputs up to this number ran on the old behaviour.
        seq: u64,
        /// The new behaviour.
        behaviour: BehaviourId,
    },
    /// The agent's state was rebuilt after input `seq` (a rollback): from here on it is the
    /// checkpoint at `checkpoint_lsn`, restored into `behaviour`. The rollback stores that
    /// checkpoint before journaling this record, so recovery from any checkpoint before it
    /// reaches the same state.
    Rebase {
        /// The agent.
        agent: String,
        /// Inputs up to this number are in the checkpoint.
        seq: u64,
        /// The behaviour the agent runs from here on.
        behaviour: BehaviourId,
        /// The checkpoint holding the rebuilt state.
        checkpoint_lsn: u64,
    },
}

impl Entry {
    /// The agent the record belongs to.
    pub fn agent(&self) -> &str {
        match self {
            Entry::Input(envelope) => &envelope.to,
            Entry::Outcome { agent, .. }
            | Entry::Swap { agent, .. }
            | Entry::Rebase { agent, .. } => agent,
        }
    }

    /// MessagePack, named fields.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// [`Entry::Input`] of a borrowed envelope, encoded as [`Entry::encode`] would.
    pub(crate) fn encode_input(envelope: &Envelope) -> Vec<u8> {
        rmp_serde::to_vec_named(&EntryRef::Input(envelope)).unwrap_or_default()
    }

    /// [`Entry::Outcome`] from borrowed parts, encoded as [`Entry::encode`] would.
    pub(crate) fn encode_outcome(
        agent: &str,
        seq: u64,
        status: &Status,
        answers: &[Answer],
    ) -> Vec<u8> {
        rmp_serde::to_vec_named(&EntryRef::Outcome {
            agent,
            seq,
            status,
            answers,
        })
        .unwrap_or_default()
    }

    /// Decodes a record written by [`Entry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Entry, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// The borrowed form of the input and outcome entries: encodes identically (a test checks)
/// without cloning what the agent still needs.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Input(&'a Envelope),
    Outcome {
        agent: &'a str,
        seq: u64,
        status: &'a Status,
        answers: &'a [Answer],
    },
}

/// How handling an input ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Handled; the state may have changed.
    Applied,
    /// The behaviour refused the input; the state is unchanged.
    Refused(String),
    /// The behaviour crashed; its instance was discarded, so the input had no effect.
    Crashed(String),
}

/// One answer the host gave a behaviour while it handled an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// `now`.
    Now(Result<u64, HostError>),
    /// `random`.
    Random(Result<u64, HostError>),
    /// `send`: whether it was accepted.
    Send(Result<(), HostError>),
    /// `call_tool`: the tool's result.
    Tool(#[serde(with = "tool_result")] Result<Vec<u8>, HostError>),
}

impl Answer {
    /// The import the answer is to, for messages about replay mismatches.
    pub fn import(&self) -> &'static str {
        match self {
            Answer::Now(_) => "now",
            Answer::Random(_) => "random",
            Answer::Send(_) => "send",
            Answer::Tool(_) => "call_tool",
        }
    }
}

/// Tool results as MessagePack binary rather than an array of numbers.
mod tool_result {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::behaviour::HostError;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Wire {
        Ok(#[serde(with = "serde_bytes")] Vec<u8>),
        Err(HostError),
    }

    pub(super) fn serialize<S: Serializer>(
        value: &Result<Vec<u8>, HostError>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Ok(bytes) => Wire::Ok(bytes.clone()),
            Err(error) => Wire::Err(error.clone()),
        }
        .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Vec<u8>, HostError>, D::Error> {
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Ok(bytes) => Ok(bytes),
            Wire::Err(error) => Err(error),
        })
    }
}

/// What names a behaviour in the journal and the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BehaviourId {
    /// A Wasm module, by content hash.
    Wasm(arbor_vault::ModuleHash),
    /// A native behaviour registered with the host under this name.
    Native(String),
}

impl BehaviourId {
    /// The hash a checkpoint records for this behaviour: the module's, or for a native one the
    /// BLAKE3 of `native:<name>`.
    pub fn checkpoint_hash(&self) -> arbor_vault::ModuleHash {
        match self {
            BehaviourId::Wasm(hash) => *hash,
            BehaviourId::Native(name) => {
                arbor_vault::ModuleHash::of(format!("native:{name}").as_bytes())
            }
        }
    }
}

impl From<&BehaviourId> for arbor_vault::Behaviour {
    fn from(id: &BehaviourId) -> Self {
        match id {
            BehaviourId::Wasm(hash) => arbor_vault::Behaviour::Wasm(*hash),
            BehaviourId::Native(name) => arbor_vault::Behaviour::Native(name.clone()),
        }
    }
}

impl From<&arbor_vault::Behaviour> for BehaviourId {
    fn from(registered: &arbor_vault::Behaviour) -> Self {
        match registered {
            arbor_vault::Behaviour::Wasm(hash) => BehaviourId::Wasm(*hash),
            arbor_vault::Behaviour::Native(name) => BehaviourId::Native(name.clone()),
        }
    }
}

impl std::fmt::Display for BehaviourId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BehaviourId::Wasm(hash) => write!(f, "wasm:{}", hash.short()),
            BehaviourId::Native(name) => write!(f, "native:{name}"),
        }
    }
}

/// How deeply MessagePack from outside (messages, guest replies, tool arguments) may nest.
/// Decoding recurses per level, and rmp-serde's own limit (1024) is deep enough to overflow a
/// thread's stack in a debug build — a hostile message must never abort the host.
pub const MAX_NESTING: usize = 128;

/// Decodes MessagePack that came from outside the host, with nesting bounded by
/// [`MAX_NESTING`].
pub fn decode_untrusted<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::new(bytes);
    deserializer.set_max_depth(MAX_NESTING);
    T::deserialize(&mut deserializer)
}

/// Why bytes are not one well-formed MessagePack value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MsgpackError {
    /// They do not decode (truncated, a reserved byte, nested deeper than [`MAX_NESTING`]).
    #[error(transparent)]
    Decode(std::sync::Arc<rmp_serde::decode::Error>),
    /// One value, then more bytes.
    #[error("{0} bytes after the MessagePack value")]
    Trailing(usize),
}

/// Checks that `bytes` is exactly one well-formed MessagePack value nested at most
/// [`MAX_NESTING`] deep, without building it.
pub fn check_msgpack(bytes: &[u8]) -> Result<(), MsgpackError> {
    let mut rest = bytes;
    // Reading from `&mut &[u8]` advances the slice past what the value used.
    let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
    deserializer.set_max_depth(MAX_NESTING);
    IgnoredAny::deserialize(&mut deserializer)
        .map_err(|e| MsgpackError::Decode(std::sync::Arc::new(e)))?;
    drop(deserializer);
    let rest = rest.len();
    if rest != 0 {
        return Err(MsgpackError::Trailing(rest));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = [
            Entry::Input(Envelope {
                to: "a".into(),
                from: Some("b".into()),
                seq: 7,
                kind: Kind::Call,
                payload: vec![0x90],
            }),
            Entry::Outcome {
                agent: "a".into(),
                seq: 7,
                status: Status::Crashed("trap".into()),
                answers: vec![
                    Answer::Now(Ok(5)),
                    Answer::Random(Err(HostError::NotGranted("random".into()))),
                    Answer::Send(Ok(())),
                    Answer::Tool(Ok(vec![1, 2, 3])),
                    Answer::Tool(Err(HostError::NoSuchTool("x".into()))),
                ],
            },
            Entry::Swap {
                agent: "a".into(),
                seq: 7,
                behaviour: BehaviourId::Native("echo".into()),
            },
            Entry::Rebase {
                agent: "a".into(),
                seq: 9,
                behaviour: BehaviourId::Native("echo".into()),
                checkpoint_lsn: 41,
            },
        ];
        for entry in entries {
            assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn msgpack_check_refuses_garbage_truncation_and_trailing_bytes() {
        check_msgpack(&rmp_serde::to_vec(&(1, "x")).unwrap()).unwrap();
        assert!(check_msgpack(&[0xc1]).is_err()); // never used
        assert!(check_msgpack(&[0x92, 0x01]).is_err()); // array of 2, one element
        assert!(check_msgpack(&[0x01, 0x02]).is_err());
        assert!(check_msgpack(&[]).is_err());
        assert!(check_msgpack(&vec![0x91; 100_000]).is_err()); // nesting bomb
        let mut deep = vec![0x91; MAX_NESTING - 1];
        deep.push(0xc0);
        check_msgpack(&deep).unwrap();
    }

    #[test]
    fn borrowed_entries_encode_as_owned_ones() {
        let envelope = Envelope {
            to: "a".into(),
            from: Some("b".into()),
            seq: 7,
            kind: Kind::Cast,
            payload: vec![0x91, 0x01],
        };
        assert_eq!(
            Entry::encode_input(&envelope),
            Entry::Input(envelope.clone()).encode()
        );
        let answers = vec![
            Answer::Now(Ok(1)),
            Answer::Tool(Ok(vec![0xc0])),
            Answer::Send(Err(HostError::NoSuchAgent("x".into()))),
        ];
        for status in [
            Status::Applied,
            Status::Refused("no".into()),
            Status::Crashed("trap".into()),
        ] {
            let owned = Entry::Outcome {
                agent: "a".into(),
                seq: 7,
                status: status.clone(),
                answers: answers.clone(),
            };
            assert_eq!(
                Entry::encode_outcome("a", 7, &status, &answers),
                owned.encode()
            );
        }
    }
}
