//! Reading an agent's journaled history back from the WAL: each input paired with its
//! outcome, and the swaps and rebases between them. Rollbacks and the evolution arbiter's
//! replay gate read it this way.

use arbor_wal::{Lsn, Reader, Wal};

use crate::envelope::{Answer, Entry, Envelope, Status};

/// One step of an agent's journaled history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journaled {
    /// An input and how handling it ended, with the host's answers in the order asked.
    Handled {
        /// The input.
        input: Envelope,
        /// Applied, refused or crashed.
        status: Status,
        /// What the host answered.
        answers: Vec<Answer>,
    },
    /// The behaviour changed after this point: an [`Entry::Swap`] or [`Entry::Rebase`].
    Changed(Entry),
}

/// The history of one agent from an LSN on; see [`history`].
pub struct History {
    records: Reader,
    agent: String,
    pending: Option<Envelope>,
}

/// The journaled history of `agent` in `wal` from `from` on, with each step's LSN (an input's is
/// its outcome's). Other agents' records are passed over, and so is an input without an
/// outcome: the crash came before it was acknowledged.
///
/// ```
/// use arbor_agent::agent::{Journaled, history};
/// use arbor_agent::envelope::{Entry, Envelope, Kind, Status};
///
/// let dir = tempfile::tempdir()?;
/// let wal = arbor_wal::Wal::open(dir.path(), arbor_wal::Config::default())?;
/// let input = Envelope { to: "a".into(), from: None, seq: 1, kind: Kind::Call, payload: vec![0xc0] };
/// wal.append(&Entry::Input(input.clone()).encode())?;
/// let outcome = Entry::Outcome { agent: "a".into(), seq: 1, status: Status::Applied, answers: vec![] };
/// wal.append(&outcome.encode())?;
/// let steps: Vec<_> = history(&wal, "a", 1)?.collect::<Result<_, _>>()?;
/// assert_eq!(steps, vec![(2, Journaled::Handled { input, status: Status::Applied, answers: vec![] })]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn history(wal: &Wal, agent: &str, from: Lsn) -> Result<History, String> {
    if from < wal.first_lsn() {
        return Err(format!(
            "the WAL before {} has been released (asked from {from})",
            wal.first_lsn()
        ));
    }
    Ok(History {
        records: wal.read_from(from).map_err(|e| e.to_string())?,
        agent: agent.to_string(),
        pending: None,
    })
}

impl Iterator for History {
    type Item = Result<(Lsn, Journaled), String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let record = match self.records.next()? {
                Ok(record) => record,
                Err(error) => return Some(Err(error.to_string())),
            };
            let entry = match Entry::decode(&record.payload) {
                Ok(entry) => entry,
                Err(error) => {
                    return Some(Err(format!(
                        "WAL record {} is not a journal entry: {error}",
                        record.lsn
                    )));
                }
            };
            if entry.agent() != self.agent {
                continue;
            }
            match entry {
                Entry::Input(envelope) => self.pending = Some(envelope),
                Entry::Outcome {
                    seq,
                    status,
                    answers,
                    ..
                } => {
                    if let Some(input) = self.pending.take().filter(|input| input.seq == seq) {
                        let handled = Journaled::Handled {
                            input,
                            status,
                            answers,
                        };
                        return Some(Ok((record.lsn, handled)));
                    }
                }
                changed @ (Entry::Swap { .. } | Entry::Rebase { .. }) => {
                    return Some(Ok((record.lsn, Journaled::Changed(changed))));
                }
            }
        }
    }
}
