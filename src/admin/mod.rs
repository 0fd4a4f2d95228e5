//! The admin endpoint: a token-protected JSON API on a loopback address, which `arborctl`
//! talks to. [`Operator`] holds the operations (the endpoint serves them for a running
//! runtime; `arborctl --data-dir` runs them on a stopped host's directory).
//!
//! ```no_run
//! use arbor::admin::{AdminConfig, AdminToken};
//! use arbor::Runtime;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::builder()
//!     .data_dir("/var/lib/myhost/arbor")
//!     .admin(AdminConfig::new(
//!         "127.0.0.1:9465".parse()?,
//!         AdminToken::from_file("/etc/myhost/arbor-admin.token")?, // mode 0600
//!     ))
//!     .build()
//!     .await?;
//! println!("admin on {:?}", runtime.admin_addr());
//! # Ok(()) }
//! ```

pub mod api;
mod ops;
mod server;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use ops::{AdminError, Candidate, Operator};
pub(crate) use server::serve;

/// The secret an admin request must carry (`Authorization: Bearer <token>`).
#[derive(Clone)]
pub struct AdminToken(String);

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminToken {
    /// A token given in configuration (at least [`MIN_TOKEN_LEN`] characters, no whitespace).
    pub fn new(token: impl Into<String>) -> Result<AdminToken, AdminError> {
        let token = token.into();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(AdminError::BadRequest(format!(
                "an admin token needs at least {MIN_TOKEN_LEN} characters and no whitespace"
            )));
        }
        Ok(AdminToken(token))
    }

    /// The token in `path` (surrounding whitespace ignored). The file must be readable by its
    /// owner only (mode 0600 or stricter): a token others can read protects nothing.
    pub fn from_file(path: impl AsRef<Path>) -> Result<AdminToken, AdminError> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| {
            AdminError::BadRequest(format!("admin token file {}: {e}", path.display()))
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AdminError::BadRequest(format!(
                    "admin token file {} has mode {mode:o}: others can read it; chmod 600 it",
                    path.display()
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        AdminToken::new(text.trim())
    }

    /// The token's text (for a client to send).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this token, in time that does not depend on where they differ
    /// (both are hashed first, so not on their lengths either).
    pub fn matches(&self, offered: &str) -> bool {
        let expected = blake3::hash(self.0.as_bytes());
        let offered = blake3::hash(offered.as_bytes());
        constant_time_eq::constant_time_eq_32(expected.as_bytes(), offered.as_bytes())
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where the admin endpoint listens and the token it requires.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// A loopback address (port 0 picks a free port; see `Runtime::admin_addr`).
    pub addr: SocketAddr,
    /// The token.
    pub token: AdminToken,
}

impl AdminConfig {
    /// The endpoint on `addr` (which must be a loopback address) requiring `token`.
    pub fn new(addr: SocketAddr, token: AdminToken) -> AdminConfig {
        AdminConfig { addr, token }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let token = AdminToken::new("0123456789abcdef-secret").unwrap();
        assert!(token.matches("0123456789abcdef-secret"));
        assert!(!token.matches("0123456789abcdef-secreT"));
        assert!(!token.matches(""));
        assert!(!token.matches("0123456789abcdef-secret "));
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it, long enough").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = AdminToken::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            AdminToken::from_file(&path)
                .unwrap()
                .matches("0123456789abcdef-secret")
        );
    }
}
