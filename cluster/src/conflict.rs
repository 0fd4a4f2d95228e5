//! Recognising a compare-and-swap conflict in a JetStream error.
//!
//! A publish with an expected sequence (a journal append, a KV update at a revision) that
//! lost the race is refused with JetStream error 10071 ("wrong last sequence: N") — or, from
//! newer servers on some paths, 10164 (the same message without the number). async-nats 0.51
//! maps only 10071 to its `WrongLastSequence` / `WrongLastRevision` kinds and reports 10164 as
//! `Other`, so arbor looks for either code down the error's source chain. Mistaking a
//! conflict for a transient failure would make a fenced writer retry for its whole timeout.

use std::error::Error as StdError;

use async_nats::jetstream::{self, ErrorCode};

/// Whether `error` (or any error in its source chain) is a JetStream expected-sequence
/// conflict.
pub(crate) fn is_conflict(error: &(dyn StdError + 'static)) -> bool {
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
