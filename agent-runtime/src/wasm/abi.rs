//! The ABI v1 vocabulary (`modules/ABI.md`): export and import names, their types, and the
//! guest's error codes. The one place these are spelled out on the host side.

/// The only ABI version this host speaks.
pub(crate) const ABI_VERSION: i32 = 1;

pub(crate) const MEMORY: &str = "memory";
pub(crate) const ABI_VERSION_FN: &str = "arbor_abi_version";
pub(crate) const ALLOC: &str = "arbor_alloc";
pub(crate) const INIT: &str = "arbor_init";
pub(crate) const HANDLE: &str = "arbor_handle";
pub(crate) const SNAPSHOT: &str = "arbor_snapshot";
pub(crate) const RESTORE: &str = "arbor_restore";
/// Optional; every other export is required.
pub(crate) const LAST_ERROR: &str = "arbor_last_error";
/// Optional: receives the module's parameters (its `arbor:params` section) once per instance,
/// before `arbor_init`/`arbor_restore`. Required of a module that carries parameters.
pub(crate) const CONFIGURE: &str = "arbor_configure";

/// The custom section holding a module's parameters: the bytes `arbor_configure` receives.
pub const PARAMS_SECTION: &str = "arbor:params";
/// The custom section in which a module declares its tunable parameters (JSON, read by the
/// host's evolution; the host's runtime ignores it).
pub const TUNABLES_SECTION: &str = "arbor:tunables";

/// Every function export and its type, as [`signature_of`](super::engine) writes types.
pub(crate) const EXPORTS: &[(&str, &str)] = &[
    (ABI_VERSION_FN, "() -> i32"),
    (ALLOC, "(i32) -> i32"),
    (INIT, "(i32, i32) -> i32"),
    (HANDLE, "(i32, i32) -> i64"),
    (SNAPSHOT, "() -> i64"),
    (RESTORE, "(i32, i32) -> i32"),
    (LAST_ERROR, "() -> i64"),
    (CONFIGURE, "(i32, i32) -> i32"),
];

/// The module every import must come from.
pub(crate) const IMPORT_MODULE: &str = "arbor";

/// One of the host imports, each a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Import {
    Log,
    Send,
    Now,
    Random,
    CallTool,
}

impl Import {
    pub(crate) const ALL: [Import; 5] = [
        Import::Log,
        Import::Send,
        Import::Now,
        Import::Random,
        Import::CallTool,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Import::Log => "log",
            Import::Send => "send",
            Import::Now => "now",
            Import::Random => "random",
            Import::CallTool => "call_tool",
        }
    }

    pub(crate) fn signature(self) -> &'static str {
        match self {
            Import::Log => "(i32, i32, i32)",
            Import::Send => "(i32, i32, i32, i32) -> i32",
            Import::Now | Import::Random => "() -> i64",
            Import::CallTool => "(i32, i32, i32, i32) -> i64",
        }
    }

    pub(crate) fn by_name(name: &str) -> Option<Import> {
        Import::ALL.into_iter().find(|i| i.name() == name)
    }
}

// Error codes returned by the guest's exports.
pub(crate) const ERR_BAD_INPUT: i32 = -1;
pub(crate) const ERR_RESTORE_REJECTED: i32 = -2;
pub(crate) const ERR_INIT_FAILED: i32 = -3;

/// The ABI name of a guest error code, for messages.
pub(crate) fn code_name(code: i32) -> &'static str {
    match code {
        -1 => "ERR_BAD_INPUT",
        -2 => "ERR_RESTORE_REJECTED",
        -3 => "ERR_INIT_FAILED",
        -4 => "ERR_NOT_INITIALISED",
        -5 => "ERR_ENCODE_FAILED",
        -6 => "ERR_REENTERED",
        -7 => "ERR_OUT_OF_RANGE",
        _ => "unknown error code",
    }
}

// Codes the host's imports return to the guest.
pub(crate) const SEND_NO_RECIPIENT: i32 = -1;
pub(crate) const SEND_REFUSED: i32 = -2;
pub(crate) const SEND_OTHER: i32 = -3;
pub(crate) const TOOL_NOT_GRANTED: i64 = -1;
pub(crate) const TOOL_FAILED: i64 = -2;
pub(crate) const TOOL_NO_MEMORY: i64 = -3;
pub(crate) const TOOL_OTHER: i64 = -4;

/// Packs a buffer as `(ptr << 32) | len`, or `None` if it cannot be (at or above 2 GiB).
pub(crate) fn pack(ptr: u32, len: u32) -> Option<i64> {
    (ptr < 1 << 31).then(|| (i64::from(ptr) << 32) | i64::from(len))
}

/// Splits a packed buffer; `Err(code)` for a negative value.
pub(crate) fn unpack(value: i64) -> Result<(u32, u32), i32> {
    if value < 0 {
        // Codes are small negatives; anything that does not fit is reported as unknown.
        Err(i32::try_from(value).unwrap_or(i32::MIN))
    } else {
        Ok(((value >> 32) as u32, value as u32))
    }
}
