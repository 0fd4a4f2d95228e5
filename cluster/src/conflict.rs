//! Recognising a compare-and-swap conflict in a JetStream error.
//!
//! A publish with an expected sequence (a journal append, a KV update at a revision) that
//! lost the race is refused with JetStream error 10071 ("wrong last sequence: N") — or, from
//! newer servers on some paths, 10164 (the same message without the number). async-nats 0.51
//! maps only 10071 to its `WrongLastSequence` / `WrongLastRevision` kinds and reports 10164 as
//! `Other`, so arbor looks for either code down the error's source chain. Mistaking a
//! conflict for a transient failure would make a fenced writer retry for its whole timeout.
//!
//! The opposite mistake is worse: a refusal is not always a lost race. A stream leader
//! elected a moment ago refuses with the same code until it has applied the log, and a
//! write whose reply was lost may have landed. Believing such a refusal made an owner step
//! down from a lease it held, or halt its journal as fenced, after partitions and under
//! load; [`update_checked`] reads the key before deciding (the decision table is [`judge`]).

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, ErrorCode, kv};
use bytes::Bytes;

/// Whether `error` (or any error in its source chain) is a JetStream expected-sequence
/// conflict.
///
/// ```
/// let error = std::io::Error::other("timed out");
/// assert!(!arbor_cluster::is_conflict(&error));
/// ```
pub fn is_conflict(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            let code = js.error_code();
            if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                || code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// What a refused compare-and-swap on a KV key means, judged from the key's latest entry as
/// the stream's leader holds it.
///
/// The refusal alone does not say: a leader elected a moment ago refuses with the same error
/// until it has applied the log (seen after partitions and under load), and an earlier
/// attempt of this writer whose reply was lost (a timeout) may have landed. Only an entry
/// after the expected revision that another writer wrote means the race was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nothing newer than the expected revision: retry the same write.
    Retry,
    /// This writer's own earlier write landed at this revision: expect it and write again.
    Adopt(u64),
    /// Another writer wrote (or the key was removed): the caller lost the key.
    Lost,
}

/// The key's latest entry: its revision and whether this writer wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Latest {
    pub revision: u64,
    pub ours: bool,
}

/// Decides a refusal from the key's latest entry (`None`: the key holds no entry at all).
pub(crate) fn judge(expected: u64, latest: Option<Latest>) -> Refusal {
    match latest {
        // Expected to create it and it is still absent: a lagging leader.
        None if expected == 0 => Refusal::Retry,
        // Expected an entry that is gone: purged by someone else.
        None => Refusal::Lost,
        Some(latest) if latest.revision <= expected => Refusal::Retry,
        Some(latest) if latest.ours => Refusal::Adopt(latest.revision),
        Some(_) => Refusal::Lost,
    }
}

/// Why [`update_checked`] did not write.
#[derive(Debug)]
pub(crate) enum CasError {
    /// Another writer wrote the key since the expected revision.
    Lost,
    /// The write's outcome stayed unknown until the deadline (or the request was invalid).
    Failed(async_nats::Error),
}

/// Writes `value` to `key` expecting `revision`, telling a lost race from a refusal that only
/// looks like one (see [`Refusal`]). `ours` says whether an entry's value was written by this
/// writer (for instance: it carries this writer's epoch). Transient failures and spurious
/// refusals are retried with backoff until `deadline`; the compare-and-swap guards every
/// retry, so a retry can never overwrite another writer's entry.
pub(crate) async fn update_checked(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    mut revision: u64,
    deadline: Instant,
    ours: impl Fn(&[u8]) -> bool,
) -> Result<u64, CasError> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let failure: async_nats::Error = match store.update(key, value.clone(), revision).await {
            Ok(written) => return Ok(written),
            Err(e) if e.kind() == kv::UpdateErrorKind::InvalidKey => {
                return Err(CasError::Failed(e.into()));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || is_conflict(&e) => {
                match latest_entry(store, key).await {
                    Ok(latest) => {
                        let latest = latest.map(|(rev, value)| Latest {
                            revision: rev,
                            ours: value.is_some_and(|v| ours(&v)),
                        });
                        match judge(revision, latest) {
                            Refusal::Lost => return Err(CasError::Lost),
                            Refusal::Adopt(rev) => {
                                revision = rev;
                                continue;
                            }
                            Refusal::Retry => e.into(),
                        }
                    }
                    // Cannot tell yet (no leader to read from): retry and look again.
                    Err(read) => read,
                }
            }
            // Timed out, connection lost, no leader yet: the write may or may not have landed;
            // a retry either lands or is refused and judged.
            Err(e) => e.into(),
        };
        if Instant::now() + backoff > deadline {
            return Err(CasError::Failed(failure));
        }
        tracing::debug!(key, error = %failure, "compare-and-swap retried");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// The header a KV delete or purge marker carries (async-nats keeps its name private).
const KV_OPERATION: &str = "KV-Operation";

/// The key's latest entry from the stream leader (a replica's direct get may lag): its
/// revision and its value (`None` for a delete or purge marker); `None` if the key holds no
/// entry at all.
pub(crate) async fn latest_entry(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(u64, Option<Bytes>)>, async_nats::Error> {
    let subject = format!("{}{}", store.prefix, key);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let deleted = message
                .headers
                .get(KV_OPERATION)
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            Ok(Some((
                message.sequence,
                (!deleted).then_some(message.payload),
            )))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(revision: u64, ours: bool) -> Option<Latest> {
        Some(Latest { revision, ours })
    }

    // One test per row of `judge`.

    #[test]
    fn a_create_refused_while_the_key_is_still_absent_is_retried() {
        assert_eq!(judge(0, None), Refusal::Retry);
    }

    #[test]
    fn an_expected_entry_that_is_gone_is_lost() {
        assert_eq!(judge(7, None), Refusal::Lost);
    }

    #[test]
    fn a_refusal_with_nothing_newer_is_retried() {
        assert_eq!(judge(7, latest(7, false)), Refusal::Retry);
        // A leader behind the revision this writer already saw.
        assert_eq!(judge(7, latest(5, false)), Refusal::Retry);
    }

    #[test]
    fn a_newer_entry_of_our_own_is_adopted() {
        assert_eq!(judge(7, latest(9, true)), Refusal::Adopt(9));
    }

    #[test]
    fn a_newer_entry_of_another_writer_is_lost() {
        assert_eq!(judge(7, latest(8, false)), Refusal::Lost);
    }
}
