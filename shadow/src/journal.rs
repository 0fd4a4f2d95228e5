//! The agent's journal as the gate and the shadows' catch-up read it: the agent system's one
//! step reader with its decision table's gate column
//! ([`Purpose::Gate`](arbor_agent::agent::Purpose::Gate)), so the arbiter passes over exactly
//! the steps recovery and rollback pass over, by construction. One exception, asked for by
//! name: the watch reads production's inputs across the swap of the promotion it watches.

use arbor_agent::agent::{Action, Purpose, Step, decide};
use arbor_agent::envelope::{Answer, Envelope, Status};
use arbor_agent::{AgentError, AgentSystem, BehaviourId};
use arbor_wal::Lsn;

use crate::error::ShadowError;

/// One journaled input as the arbiter uses it.
#[derive(Debug)]
pub(crate) enum Read {
    /// An input production handled: compared when applied or refused, counted and passed over
    /// when it crashed (the table's `Compare` and `Skip` rows; both move the position).
    Handled {
        input: Envelope,
        status: Status,
        answers: Vec<Answer>,
    },
    /// What follows is not this module's history (a swap, a rebase, an orphan outcome).
    Stop(String),
}

/// `agent`'s inputs journaled after `from`, each with its position. Inputs never
/// acknowledged are passed over without moving the position (their numbers were given again),
/// and so is a swap to `through`: the watch of a promotion to `through` follows production's
/// inputs across that promotion's swap (its reverse shadow keeps running the module before).
pub(crate) fn read<'a>(
    system: &AgentSystem,
    agent: &str,
    from: Lsn,
    through: Option<&'a BehaviourId>,
) -> Result<impl Iterator<Item = Result<(Lsn, Read), ShadowError>> + 'a, ShadowError> {
    let steps = system.steps(agent, from).map_err(ShadowError::Journal)?;
    Ok(steps.filter_map(move |next| {
        let (lsn, step) = match next {
            Ok(next) => next,
            Err(error) => return Some(Err(ShadowError::Journal(AgentError::Journal(error)))),
        };
        let action = decide(&step, Purpose::Gate);
        let read = match (action, step) {
            (
                Action::Compare | Action::Skip,
                Step::Handled {
                    input,
                    status,
                    answers,
                },
            ) => Read::Handled {
                input,
                status,
                answers,
            },
            (Action::Skip | Action::SkipUnacknowledged, Step::Unacknowledged(_)) => return None,
            (Action::Stop, Step::Swap { behaviour, .. }) if through == Some(&behaviour) => {
                return None;
            }
            (_, step) => Read::Stop(format!("the agent's history changes there ({step:?})")),
        };
        Some(Ok((lsn, read)))
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arbor_agent::{AgentRef, AgentSpec};
    use arbor_modules::kv::{KvMsg, KvReply};

    use super::*;

    async fn puts(agent: &AgentRef, keys: std::ops::Range<u64>) {
        for i in keys {
            let put = KvMsg::Put {
                key: format!("k{i}"),
                value: "v".into(),
            };
            let _: KvReply = agent.call_msg(&put).await.unwrap();
        }
    }

    /// The inputs read from the start, and why the reading stopped (if it did).
    fn inputs(system: &AgentSystem, through: Option<&BehaviourId>) -> (Vec<u64>, Option<String>) {
        let mut seqs = Vec::new();
        for next in read(system, "kv", 1, through).unwrap() {
            match next.unwrap().1 {
                Read::Handled { input, .. } => seqs.push(input.seq),
                Read::Stop(reason) => return (seqs, Some(reason)),
            }
        }
        (seqs, None)
    }

    /// The watch of a promotion reads production's inputs across that promotion's swap (a
    /// reverse shadow that fell behind just before it used to stop there, and end its watch
    /// incomplete having compared nothing); the gate, and a watch of another module, stop at it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_reads_across_the_swap_of_its_promotion_only() {
        let dir = tempfile::tempdir().unwrap();
        let system = AgentSystem::builder().journal(dir.path()).build().unwrap();
        let kv = system.add_module("kv", arbor_modules::KV).unwrap();
        let placebo = system
            .add_module("kv-placebo", arbor_modules::KV_PLACEBO)
            .unwrap();
        let agent = system.spawn(AgentSpec::wasm("kv", kv)).await.unwrap();
        puts(&agent, 0..5).await;
        let promoted = BehaviourId::Wasm(placebo);
        let swap = system
            .promote_module(&agent, promoted.clone())
            .await
            .unwrap();
        puts(&agent, 5..10).await;
        let every: Vec<u64> = (1..=10).collect();
        assert_eq!(swap.seq, 5);

        assert_eq!(inputs(&system, Some(&promoted)), (every.clone(), None));
        for through in [None, Some(&BehaviourId::Wasm(kv))] {
            let (seqs, stop) = inputs(&system, through);
            assert_eq!(seqs, every[..5], "{through:?}");
            assert!(stop.unwrap().contains("Swap"), "{through:?}");
        }
    }
}
