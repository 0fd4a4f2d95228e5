//! The module's parameters: values the host hands every instance before the agent exists, so
//! one agent's code can run with different configurations (`arbor:params`, see [`crate::abi`]).
//!
//! Parameters travel inside the module, in its `arbor:params` custom section, rather than in
//! the init config: a running agent's next version is restored from state and never sees an
//! init config, while the module goes everywhere the agent does (restart, promotion,
//! rollback, another node), and its content hash then names code and configuration together.
//! The host's evolution writes that section when it searches the space a module declares with
//! [`tunables!`](crate::tunables).

use std::cell::RefCell;

use serde::de::DeserializeOwned;

use crate::decode;

thread_local! {
    static PARAMS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The raw parameter bytes (empty when the module carries none).
pub fn params() -> Vec<u8> {
    PARAMS.with(|params| params.borrow().clone())
}

/// The parameters decoded as `T` (MessagePack, named fields, as the host's evolution writes
/// them); `T::default()` when the module carries none.
pub fn params_as<T: DeserializeOwned + Default>() -> Result<T, String> {
    PARAMS.with(|params| {
        let params = params.borrow();
        if params.is_empty() {
            Ok(T::default())
        } else {
            decode(&params).map_err(|err| format!("parameters: {err}"))
        }
    })
}

/// Sets the parameters (`arbor_configure`, or [`crate::testing`]).
pub(crate) fn set(bytes: Vec<u8>) {
    PARAMS.with(|params| *params.borrow_mut() = bytes);
}

/// Declares the module's tunable parameters for the host's evolution, as JSON in the
/// `arbor:tunables` custom section: a list of `{"name", "kind": "int"|"float"|"choice", "min",
/// "max", "options"}`, given as a byte string (a literal or a `&[u8]` constant). Write it once,
/// at the crate root; it adds no code.
///
/// ```
/// arbor_guest::tunables!(br#"[
///     {"name": "capacity", "kind": "int", "min": 0, "max": 512},
///     {"name": "policy", "kind": "choice", "options": ["lru", "fifo"]}
/// ]"#);
/// ```
#[macro_export]
macro_rules! tunables {
    ($json:expr) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "arbor:tunables")]
        #[used]
        static ARBOR_TUNABLES: [u8; $json.len()] = {
            const JSON: &[u8] = $json;
            let mut out = [0u8; JSON.len()];
            let mut at = 0;
            while at < JSON.len() {
                out[at] = JSON[at];
                at += 1;
            }
            out
        };
    };
}
