//! Why a module cannot be loaded or instantiated.

/// A module refused at load (ABI v1 checks, compilation) or at instantiation (capabilities,
/// ABI version, pool capacity). Each variant names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not a valid Wasm module (or use features the host does not enable).
    #[error("invalid module: {0}")]
    Invalid(String),
    /// A required export is missing.
    #[error("missing export `{name}`")]
    MissingExport {
        /// The export.
        name: String,
    },
    /// An export or import has another type than ABI v1 gives it.
    #[error("`{name}` has type {found}, expected {expected}")]
    WrongSignature {
        /// The export (or `arbor.<import>`).
        name: String,
        /// Its ABI v1 type.
        expected: String,
        /// Its type in the module.
        found: String,
    },
    /// `arbor_abi_version` returned a version this host does not speak.
    #[error("unsupported ABI version {found} (this host speaks 1)")]
    UnsupportedAbi {
        /// What the module returned.
        found: i32,
    },
    /// An import from a module other than `arbor`.
    #[error("import `{name}` is not from module `arbor`")]
    ForeignImport {
        /// `module.name`.
        name: String,
    },
    /// An `arbor` import this host does not know.
    #[error("unknown import `{name}`")]
    UnknownImport {
        /// `arbor.name`.
        name: String,
    },
    /// The module imports a capability the agent was not granted.
    #[error("import `{name}` not granted to this agent")]
    UngrantedImport {
        /// `arbor.name`.
        name: String,
    },
    /// Instantiation failed: the pool is full, the module's memory exceeds the agent's cap, or
    /// its start code trapped.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The engine could not be set up.
    #[error("engine: {0}")]
    Engine(String),
}

impl LoadError {
    pub(crate) fn engine(error: wasmtime::Error) -> LoadError {
        LoadError::Engine(format!("{error:#}"))
    }
}
