//! The fenced journal log: every agent's journal entries in one replicated JetStream stream.
//!
//! # Layout
//!
//! One stream (default `ARBOR_JOURNAL`, file storage, replicas configurable; R3 in the tests)
//! holds the subjects `arbor.journal.<agent>` (agent names encoded by
//! [`encode_agent`](crate::encode_agent)). One [`AgentWriter::append`] is **one stream
//! message**: its records framed in the payload (`u32` little-endian length, then the bytes,
//! per record), with headers
//!
//! | header | value |
//! |---|---|
//! | `Arbor-Epoch` | the writer's ownership epoch (from its [`Lease`](crate::Lease)) |
//! | `Arbor-Kind` | `append`, or `takeover` for the marker a new owner writes |
//! | `Arbor-Node` | the writing node (for operators) |
//! | `Arbor-Position` | optional: the writer's position of the first record ([`AgentWriter::append_at`]) |
//! | `Nats-Expected-Last-Subject-Sequence` | the last sequence of the agent's subject the writer knows |
//! | `Nats-Msg-Id` | `<subject>:<epoch>:<expected>`, so a retried publish is not stored twice |
//!
//! One message per append makes an append atomic (an input and its outcome land together or
//! not at all) and costs one replication round, whatever the number of records. A record's
//! position is the stream sequence of its message (records of one append share it).
//!
//! # Fencing
//!
//! The stream refuses a publish whose expected sequence is not the subject's last; arbor maps
//! that to [`LogError::Fenced`]. A new owner first calls [`JournalLog::take_over`], which reads
//! the subject's last sequence from the stream leader and appends a `takeover` marker at it
//! (retrying if a late append of the former owner lands in between — that append was
//! acknowledged to the former owner, so it must stay). From the moment the marker lands, every
//! append of a former owner expects a sequence that is no longer the last, so it is refused
//! and never stored: uniqueness is enforced where the data is written, whatever the clocks and
//! whether the former owner was paused (SIGSTOP) or cut off. Epochs in the log therefore never
//! decrease; [`JournalLog::read`] checks it.
//!
//! A refusal is checked before it is believed: the writer reads what follows its expected
//! sequence. Its own message there (an earlier attempt whose ack was lost) is success;
//! another writer's entry is [`LogError::Fenced`]; nothing at all means the refusal came
//! from a stream leader that had not yet applied the log after an election, and the append
//! is retried under the same check. (Before this check, the failover test twice saw a sole
//! writer refused right after the stream leader was killed; which of the first and last cases
//! it was is not pinned down yet — the check handles both.)
//!
//! # Purging
//!
//! [`JournalLog::purge_before`] removes an agent's entries before a stream sequence (the
//! journal store's release, once checkpoints cover their records). Fencing needs only the
//! subject's last message — a takeover reads it and expects it, a writer expects its own last
//! append — so a purge that keeps the agent's newest entry never disturbs either; a reader
//! simply starts at the first entry left.
//!
//! # One append in flight per agent
//!
//! The next append must name the sequence the previous one got, and the stream assigns
//! sequences across all agents, so an agent cannot publish its next append before the
//! previous one's acknowledgement (no pipelining per agent; `append` takes `&mut self`).
//! Different agents append concurrently over the one connection, and an agent that has
//! several inputs waiting appends them as one message (one append, many records), which is
//! where per-agent throughput comes from. The cost is one R3 round trip per append per agent
//! (measured by the `append_latency` test).
//!
//! # Acknowledgement
//!
//! `append` returns once the stream acknowledged the message: stored by a quorum of replicas
//! and — with the server setting arbor requires (`sync_interval: always`, see the crate docs)
//! — synced to their disks. A publish whose acknowledgement does not come (timeout, server
//! lost) is retried with the same message id until [`LogConfig::append_timeout`]; if the
//! outcome is still unknown the writer halts with [`LogError::Indeterminate`], and the caller
//! must not acknowledge the records (they may or may not be in the log; recovery treats them
//! as unacknowledged, as it does a torn local WAL tail).

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::TryStreamExt;

use crate::conflict::is_conflict;
use crate::names::encode_agent;

const EPOCH: &str = "Arbor-Epoch";
const KIND: &str = "Arbor-Kind";
const NODE: &str = "Arbor-Node";
const POSITION: &str = "Arbor-Position";
const MSG_ID: &str = "Nats-Msg-Id";
/// How often a takeover re-reads after losing the race for the subject's last sequence.
const TAKE_OVER_ATTEMPTS: usize = 20;

/// Settings of the journal stream.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The stream's name.
    pub stream: String,
    /// The subject prefix; an agent's subject is `<prefix>.<encoded agent>`.
    pub subject_prefix: String,
    /// Replicas of the stream (3 in a 3-server cluster; 1 only for development).
    pub replicas: usize,
    /// How long an append keeps retrying a publish whose acknowledgement did not come.
    pub append_timeout: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            stream: "ARBOR_JOURNAL".to_string(),
            subject_prefix: "arbor.journal".to_string(),
            replicas: 3,
            append_timeout: Duration::from_secs(15),
        }
    }
}

impl LogConfig {
    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the append timeout.
    pub fn append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self
    }
}

/// What a log operation failed on.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another writer appended for the agent since this writer's last append (a newer owner
    /// took over): nothing of this append was stored, and the writer refuses every further
    /// append; the node must step down (or re-claim and [`JournalLog::take_over`] again).
    #[error(
        "fenced: agent `{agent}` was appended to by another owner (this writer: epoch {epoch})"
    )]
    Fenced {
        /// The agent.
        agent: String,
        /// This writer's epoch.
        epoch: u64,
        /// The newer epoch found in the log, when known.
        found: Option<u64>,
    },
    /// The acknowledgement of an append never came within the append timeout: the records may
    /// or may not be stored. The writer refuses further appends (take over again to re-read).
    #[error("append for agent `{agent}` at epoch {epoch}: outcome unknown")]
    Indeterminate {
        /// The agent.
        agent: String,
        /// This writer's epoch.
        epoch: u64,
        /// The last failure seen.
        #[source]
        source: async_nats::Error,
    },
    /// The append is larger than the server's `max_payload`.
    #[error("append for agent `{agent}` of {bytes} bytes exceeds the server's max payload")]
    TooLarge {
        /// The agent.
        agent: String,
        /// The message size.
        bytes: usize,
    },
    /// An entry's epoch is lower than the one before it: the log holds appends of two owners
    /// out of order, which fencing exists to prevent.
    #[error("agent `{agent}`: entry {seq} has epoch {epoch} after epoch {previous}")]
    EpochRegressed {
        /// The agent.
        agent: String,
        /// The entry's stream sequence.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// The epoch before it.
        previous: u64,
    },
    /// An entry arbor cannot decode.
    #[error("agent `{agent}`: entry {seq} is malformed: {what}")]
    Corrupt {
        /// The agent.
        agent: String,
        /// Its stream sequence.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// The stream could not be created or opened.
    #[error("journal stream `{stream}`")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Purging an agent's entries failed (nothing or everything before the sequence went).
    #[error("purging agent `{agent}` before entry {before}")]
    Purge {
        /// The agent.
        agent: String,
        /// The first stream sequence that was to be kept.
        before: u64,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A read failed.
    #[error("reading agent `{agent}` from {from}")]
    Read {
        /// The agent.
        agent: String,
        /// The position.
        from: u64,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// What kind of entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Records appended by an owner.
    Append,
    /// The marker a new owner writes when it takes over (no records).
    TakeOver,
}

/// One entry of an agent's log: one append, or a takeover marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream sequence (the records' position).
    pub seq: u64,
    /// The writer's epoch.
    pub epoch: u64,
    /// Append or takeover.
    pub kind: EntryKind,
    /// The writing node.
    pub node: String,
    /// The writer's position of the first record, if it gave one ([`AgentWriter::append_at`]).
    pub position: Option<u64>,
    /// The records, in append order.
    pub records: Vec<Bytes>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream sequence of the append's message.
    pub seq: u64,
    /// Whether the stream had stored this append already (a retry after a lost
    /// acknowledgement).
    pub duplicate: bool,
}

/// The journal stream (cheap to clone; clones share the connection).
#[derive(Clone)]
pub struct JournalLog {
    js: jetstream::Context,
    stream: stream::Stream,
    config: LogConfig,
}

impl std::fmt::Debug for JournalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalLog")
            .field("config", &self.config)
            .finish()
    }
}

impl JournalLog {
    /// Opens the journal stream, creating it if it does not exist.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use arbor_cluster::{JournalLog, LeaseConfig, Leases, LogConfig};
    /// let client = async_nats::connect("127.0.0.1:4222").await?;
    /// let js = async_nats::jetstream::new(client);
    /// let leases = Leases::open(js.clone(), LeaseConfig::default()).await?;
    /// let log = JournalLog::open(js, LogConfig::default()).await?;
    ///
    /// let lease = leases.claim("counter-7", "node-a").await?;
    /// let mut writer = log.take_over("counter-7", lease.epoch(), "node-a").await?;
    /// let at = writer.append(&[b"input", b"outcome"]).await?; // acknowledged by the stream
    /// for entry in log.read("counter-7", 1).await? {
    ///     println!("{} epoch {}: {} records", entry.seq, entry.epoch, entry.records.len());
    /// }
    /// # let _ = at; Ok(()) }
    /// ```
    pub async fn open(js: jetstream::Context, config: LogConfig) -> Result<Self, LogError> {
        let stream_err = |source: async_nats::Error| LogError::Stream {
            stream: config.stream.clone(),
            source,
        };
        let stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                description: Some("arbor: agent journals".to_string()),
                subjects: vec![format!("{}.>", config.subject_prefix)],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                // Retries of a publish whose ack was lost are recognised within this window.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(e.into()))?;
        Ok(Self { js, stream, config })
    }

    /// The settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The subject holding `agent`'s entries.
    pub fn subject(&self, agent: &str) -> String {
        format!("{}.{}", self.config.subject_prefix, encode_agent(agent))
    }

    /// The agent's last entry, read from the stream leader.
    pub async fn last(&self, agent: &str) -> Result<Option<Entry>, LogError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(agent))
            .await
        {
            Ok(message) => decode(agent, &message).map(Some),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(LogError::Read {
                agent: agent.to_string(),
                from: u64::MAX,
                source: e.into(),
            }),
        }
    }

    /// The agent's entries from stream sequence `from` on, in order, read from the stream
    /// leader; fails with [`LogError::EpochRegressed`] if an epoch decreases.
    pub async fn read(&self, agent: &str, from: u64) -> Result<Vec<Entry>, LogError> {
        let mut entries: Vec<Entry> = Vec::new();
        for message in self.raw_from(agent, from).await? {
            let entry = decode(agent, &message)?;
            if let Some(previous) = entries.last()
                && entry.epoch < previous.epoch
            {
                return Err(LogError::EpochRegressed {
                    agent: agent.to_string(),
                    seq: entry.seq,
                    epoch: entry.epoch,
                    previous: previous.epoch,
                });
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn raw_from(
        &self,
        agent: &str,
        from: u64,
    ) -> Result<Vec<jetstream::message::StreamMessage>, LogError> {
        // One leader request per entry: simple and consistent (a follower's direct get could
        // miss the newest entries); a catch-up of a long journal wants an ordered consumer.
        let subject = self.subject(agent);
        let mut messages = Vec::new();
        let mut next = from.max(1);
        loop {
            match self
                .stream
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    messages.push(message);
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(messages);
                }
                Err(e) => {
                    return Err(LogError::Read {
                        agent: agent.to_string(),
                        from: next,
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Removes the agent's entries before stream sequence `before` (other agents' entries
    /// stay); returns how many went. The caller keeps what a takeover and a recovery need:
    /// the subject's last entry (the takeover marker or append a fencing check expects) must
    /// be at or after `before`, and so must every record no durable checkpoint covers.
    pub async fn purge_before(&self, agent: &str, before: u64) -> Result<u64, LogError> {
        self.stream
            .purge()
            .filter(self.subject(agent))
            .sequence(before)
            .await
            .map(|response| response.purged)
            .map_err(|e| LogError::Purge {
                agent: agent.to_string(),
                before,
                source: e.into(),
            })
    }

    /// How many entries of the agent the stream holds (from the stream's subject state).
    pub async fn entry_count(&self, agent: &str) -> Result<u64, LogError> {
        let subject = self.subject(agent);
        let failed = |source: async_nats::Error| LogError::Read {
            agent: agent.to_string(),
            from: 0,
            source,
        };
        let mut subjects = self
            .stream
            .info_with_subjects(&subject)
            .await
            .map_err(|e| failed(e.into()))?;
        let mut count = 0;
        while let Some((name, n)) = subjects.try_next().await.map_err(|e| failed(e.into()))? {
            if name == subject {
                count += n as u64;
            }
        }
        Ok(count)
    }

    /// Becomes the agent's writer at `epoch` (from a freshly claimed lease): writes a takeover
    /// marker at the subject's last sequence, after which no writer of an earlier epoch can
    /// append. [`LogError::Fenced`] if the log already holds a later epoch.
    pub async fn take_over(
        &self,
        agent: &str,
        epoch: u64,
        node: &str,
    ) -> Result<AgentWriter, LogError> {
        let mut writer = AgentWriter {
            log: self.clone(),
            agent: agent.to_string(),
            subject: self.subject(agent),
            node: node.to_string(),
            epoch,
            last_seq: 0,
            halted: None,
        };
        // Each retry means another append landed between our read and our marker; a former
        // owner appends one at a time, so this ends quickly unless two claimers share an epoch.
        for _ in 0..TAKE_OVER_ATTEMPTS {
            let last = self.last(agent).await?;
            if let Some(last) = &last
                && last.epoch > epoch
            {
                return Err(writer.fenced(Some(last.epoch)));
            }
            writer.last_seq = last.map_or(0, |e| e.seq);
            match writer.publish(EntryKind::TakeOver, None, &[]).await {
                Ok(_) => return Ok(writer),
                // A late append of the former owner (or a rival) landed after our read:
                // read again; the epoch check above decides who is newer.
                Err(LogError::Fenced { .. }) => writer.halted = None,
                Err(e) => return Err(e),
            }
        }
        Err(writer.fenced(None))
    }
}

/// Why a writer stopped.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Fenced,
    Indeterminate,
}

/// The only writer of one agent's log, at one epoch.
#[derive(Debug)]
pub struct AgentWriter {
    log: JournalLog,
    agent: String,
    subject: String,
    node: String,
    epoch: u64,
    last_seq: u64,
    halted: Option<Halt>,
}

impl AgentWriter {
    /// The agent.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The writer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence of the last entry this writer knows (its own last append or the marker).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends `records` as one entry and returns once the stream acknowledged it (see the
    /// module docs). [`LogError::Fenced`] if another owner appended since: nothing is stored
    /// and this writer refuses every later append.
    pub async fn append(&mut self, records: &[&[u8]]) -> Result<Appended, LogError> {
        self.check_halted()?;
        self.publish(EntryKind::Append, None, records).await
    }

    /// [`append`](Self::append), stamping the entry with `position`: the writer's own number
    /// for its first record (the journal store numbers each agent's records itself, because
    /// it must name a record's position before the stream acknowledges it).
    pub async fn append_at(
        &mut self,
        position: u64,
        records: &[&[u8]],
    ) -> Result<Appended, LogError> {
        self.check_halted()?;
        self.publish(EntryKind::Append, Some(position), records)
            .await
    }

    fn check_halted(&self) -> Result<(), LogError> {
        match self.halted {
            Some(Halt::Fenced) => Err(self.fenced(None)),
            Some(Halt::Indeterminate) => Err(LogError::Indeterminate {
                agent: self.agent.clone(),
                epoch: self.epoch,
                source: "an earlier append's outcome is unknown; take over again".into(),
            }),
            None => Ok(()),
        }
    }

    fn fenced(&self, found: Option<u64>) -> LogError {
        LogError::Fenced {
            agent: self.agent.clone(),
            epoch: self.epoch,
            found,
        }
    }

    async fn publish(
        &mut self,
        kind: EntryKind,
        position: Option<u64>,
        records: &[&[u8]],
    ) -> Result<Appended, LogError> {
        let expected = self.last_seq;
        let msg_id = format!("{}:{}:{}", self.subject, self.epoch, expected);
        let payload = frame(records);
        let size = payload.len();
        let mut headers = HeaderMap::new();
        headers.insert(EPOCH, self.epoch.to_string().as_str());
        headers.insert(
            KIND,
            match kind {
                EntryKind::Append => "append",
                EntryKind::TakeOver => "takeover",
            },
        );
        headers.insert(NODE, self.node.as_str());
        if let Some(position) = position {
            headers.insert(POSITION, position.to_string().as_str());
        }
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(&msg_id)
            .expected_last_subject_sequence(expected);

        let deadline = Instant::now() + self.log.config.append_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let failure: async_nats::Error = match self
                .log
                .js
                .send_publish(self.subject.clone(), message.clone())
                .await
            {
                // Not necessarily unsent: the client may have written it before failing.
                Err(e) => e.into(),
                Ok(ack) => match ack.await {
                    Ok(ack) => {
                        debug_assert!(ack.sequence > expected);
                        self.last_seq = ack.sequence;
                        return Ok(Appended {
                            seq: ack.sequence,
                            duplicate: ack.duplicate,
                        });
                    }
                    Err(e)
                        if e.kind() == PublishErrorKind::WrongLastSequence || is_conflict(&e) =>
                    {
                        // Look at what follows our expected sequence before believing it.
                        match self.after_expected(&msg_id).await {
                            Ok(After::Ours(seq)) => {
                                // An earlier attempt of ours landed (its ack was lost).
                                self.last_seq = seq;
                                return Ok(Appended {
                                    seq,
                                    duplicate: true,
                                });
                            }
                            Ok(After::Other(found)) => {
                                self.halted = Some(Halt::Fenced);
                                return Err(self.fenced(Some(found)));
                            }
                            // Nothing after our sequence: the refusal came from a leader that
                            // had not applied the log yet (seen right after a leader change).
                            // The check still guards the retry.
                            Ok(After::Nothing) => e.into(),
                            // Cannot tell yet (no leader to read from): retry and look again.
                            Err(read) => read.into(),
                        }
                    }
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        return Err(LogError::TooLarge {
                            agent: self.agent.clone(),
                            bytes: size,
                        });
                    }
                    // Timed out, connection lost, no stream leader yet (no responders), or a
                    // server-side refusal during an election: the message may or may not be
                    // stored; retry the same message (same id, same expectation).
                    Err(e) => e.into(),
                },
            };
            if Instant::now() + backoff > deadline {
                self.halted = Some(Halt::Indeterminate);
                return Err(LogError::Indeterminate {
                    agent: self.agent.clone(),
                    epoch: self.epoch,
                    source: failure,
                });
            }
            tracing::debug!(agent = %self.agent, error = %failure, "journal append retried");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// What the log holds after this writer's expected sequence: its own message `msg_id`
    /// (stored by an attempt whose ack was lost), another writer's entries, or nothing.
    async fn after_expected(&self, msg_id: &str) -> Result<After, LogError> {
        let messages = self.log.raw_from(&self.agent, self.last_seq + 1).await?;
        if let Some(own) = messages
            .iter()
            .find(|m| m.headers.get(MSG_ID).map(|v| v.as_str()) == Some(msg_id))
        {
            return Ok(After::Ours(own.sequence));
        }
        match messages.last() {
            None => Ok(After::Nothing),
            Some(last) => Ok(After::Other(decode(&self.agent, last)?.epoch)),
        }
    }
}

/// What follows a writer's expected sequence.
enum After {
    Ours(u64),
    Other(u64),
    Nothing,
}

fn frame(records: &[&[u8]]) -> Bytes {
    let mut buf = BytesMut::with_capacity(records.iter().map(|r| r.len() + 4).sum());
    for record in records {
        // A record over 4 GiB cannot fit in a NATS message anyway (max_payload ≤ 64 MiB).
        buf.put_u32_le(record.len() as u32);
        buf.put_slice(record);
    }
    buf.freeze()
}

fn decode(agent: &str, message: &jetstream::message::StreamMessage) -> Result<Entry, LogError> {
    let corrupt = |what| LogError::Corrupt {
        agent: agent.to_string(),
        seq: message.sequence,
        what,
    };
    let header = |name| message.headers.get(name).map(|v| v.as_str());
    let epoch = header(EPOCH)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("no epoch"))?;
    let kind = match header(KIND) {
        Some("append") => EntryKind::Append,
        Some("takeover") => EntryKind::TakeOver,
        _ => return Err(corrupt("unknown kind")),
    };
    let node = header(NODE).unwrap_or_default().to_string();
    let position = match header(POSITION) {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| corrupt("bad position"))?),
    };
    let mut records = Vec::new();
    let mut rest = message.payload.clone();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("torn length"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = rest.slice(4..);
        if body.len() < len {
            return Err(corrupt("torn record"));
        }
        records.push(body.slice(..len));
        rest = body.slice(len..);
    }
    Ok(Entry {
        seq: message.sequence,
        epoch,
        kind,
        node,
        position,
        records,
    })
}
