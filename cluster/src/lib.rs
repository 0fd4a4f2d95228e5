//! arbor's cluster on NATS JetStream: who owns an agent, and a journal only its owner can
//! append to.
//!
//! arbor runs each agent on exactly one node of a cluster. This crate holds the two
//! storage-level pieces that make that safe, on a NATS JetStream cluster run by the operator
//! (no home-made consensus: ordering, replication and compare-and-swap come from JetStream):
//!
//! - [`Leases`] (`lease.rs`): an agent's owner is claimed in a KV bucket by revision CAS,
//!   held by a lease the owner renews, and carries an **epoch** that grows with every claim.
//! - [`JournalLog`] / [`AgentWriter`] (`log.rs`): every agent's journal in one replicated
//!   stream, a subject per agent; each append carries the owner's epoch and demands the
//!   subject's last sequence, so once a new owner has taken over, a former owner's append is
//!   refused by the stream ([`LogError::Fenced`]) and never stored — even if the former owner
//!   was paused (SIGSTOP) or partitioned and still believes its lease is live.
//! - [`JetStreamStore`] (`store.rs`): arbor-agent's journal seam on the log and a checkpoint
//!   bucket, so an `AgentSystem` journals into the replicated stream and recovers from it on
//!   another node (positions, sync/async, checkpoints, fencing and retention are decided in
//!   its docs).
//! - `conflict.rs`: a refused compare-and-swap is judged by the key's entry before anyone is
//!   declared fenced or a lease lost — a freshly elected stream leader refuses with the same
//!   error until it has applied the log, and a write whose reply was lost may have landed
//!   ([`is_conflict`] recognises the refusal).
//! - [`server`]: the server version and settings arbor requires, from Jepsen's NATS 2.12.1
//!   analysis: **≥ 2.10.23** and **`jetstream { sync_interval: always }`**.
//! - `harness` (feature `harness`): a real 3-server cluster on loopback for tests.
//!
//! # The takeover, in call order
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use arbor_cluster::{JournalLog, LeaseConfig, Leases, LogConfig, LogError};
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! arbor_cluster::check_server(&client)?;
//! let js = async_nats::jetstream::new(client);
//! let leases = Leases::open(js.clone(), LeaseConfig::default()).await?;
//! let log = JournalLog::open(js, LogConfig::default()).await?;
//!
//! // 1. Claim: succeeds only if nobody holds a live lease; the epoch is one past the last.
//! let mut lease = leases.claim("counter-7", "node-a").await?;
//! // 2. Fence: a takeover marker at the subject's last sequence; older epochs can't append.
//! let mut writer = log.take_over("counter-7", lease.epoch(), "node-a").await?;
//! // 3. Recover from what is in the log (entries carry their epochs), then serve.
//! let history = log.read("counter-7", 1).await?;
//! // 4. Append; the ack is the durability point. Renew the lease well before it ends.
//! match writer.append(&[b"input", b"outcome"]).await {
//!     Ok(at) => println!("stored at {}", at.seq),
//!     Err(LogError::Fenced { .. }) => println!("another node owns counter-7 now: step down"),
//!     Err(e) => return Err(e.into()),
//! }
//! leases.renew(&mut lease).await?;
//! # let _ = history; Ok(()) }
//! ```
//!
//! # Guarantees and their assumptions
//!
//! - **Never two writers**: at most one writer's appends land after any takeover marker; this
//!   rests only on the stream's expected-sequence check, not on clocks.
//! - **Leases** end by the owner's wall clock; a claimer waits an extra
//!   [`LeaseConfig::max_clock_skew`]. Clock error can make a takeover early (the former owner
//!   is then fenced, not doubled) or late (unavailability), never unsafe.
//! - **Nothing acknowledged is lost** while a majority of the stream's replicas survive, given
//!   the required server settings: an append returns only after the stream's acknowledgement.

mod conflict;
mod lease;
mod log;
mod names;
pub mod server;
mod store;

#[cfg(feature = "harness")]
pub mod harness;

pub use conflict::is_conflict;
pub use lease::{Lease, LeaseConfig, LeaseError, LeaseRecord, Leases};
pub use log::{AgentWriter, Appended, Entry, EntryKind, JournalLog, LogConfig, LogError};
pub use names::encode_agent;
pub use server::{MIN_SERVER_VERSION, ServerError, check_server, check_version, parse_version};
pub use store::{JetStreamStore, StoreConfig, StoreError, SyncError};
