//! [`EvolveError`].

use std::path::PathBuf;

/// What went wrong in evolution's own work (a candidate that fails to build is not an error:
/// it is an [`Offer::Refused`](crate::Offer::Refused)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvolveError {
    /// A module's `arbor:tunables` section, or a space given by the host, is not a valid space.
    #[error("tunable parameters: {0}")]
    BadSpace(String),
    /// Parameters outside their module's space.
    #[error("parameters: {0}")]
    BadParams(String),
    /// The module is not valid Wasm, or has no space to search.
    #[error("module: {0}")]
    BadModule(String),
    /// A search was configured with values it cannot run with.
    #[error("configuration: {0}")]
    BadConfig(String),
    /// A build could not be run at all (not the source failing to compile).
    #[error("cannot run the build in {dir}: {source}")]
    Build {
        /// The build directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The arbiter refused (the agent is unknown, busy with an evaluation a person must
    /// decide, …).
    #[error(transparent)]
    Arbiter(#[from] arbor_shadow::ShadowError),
    /// The vault refused a read or write.
    #[error(transparent)]
    Vault(#[from] arbor_vault::Error),
}
