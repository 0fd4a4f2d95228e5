//! Write arbor agents in Rust.
//!
//! An arbor agent is a core WebAssembly module that the arbor host runs under supervision: it is
//! handed MessagePack messages one at a time, keeps state, answers each with a MessagePack reply,
//! and is snapshotted, restored from snapshots, replayed from the host's journal and hot-swapped
//! for newer versions. This crate is everything between that and a plain Rust type: implement
//! [`Agent`] for your state and export it with [`export_agent!`]; the SDK provides every export of
//! the [ABI](abi), decodes messages, encodes replies and state, reports errors as the ABI's error
//! codes, and reaches the host's imports through [`Ctx`].
//!
//! # Example
//!
//! A counter agent: the whole crate (a `cdylib`, built with
//! `cargo build --release --target wasm32-unknown-unknown`). The hidden lines at the end run it
//! natively through [`testing::Harness`], which calls the same code as the Wasm exports.
//!
//! ```
//! use arbor_guest::{Agent, Ctx, Level};
//! use serde::{Deserialize, Serialize};
//!
//! /// The state: encoded with named fields, so a later version can add fields.
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Counter {
//!     count: i64,
//! }
//!
//! /// On the wire: `{"Inc": {"by": 5}}`, `"Get"`, `"Reset"`.
//! #[derive(Serialize, Deserialize)]
//! pub enum CounterMsg {
//!     Inc { by: i64 },
//!     Get,
//!     Reset,
//! }
//!
//! /// On the wire: `{"count": 5}`.
//! #[derive(Serialize, Deserialize)]
//! pub struct CounterReply {
//!     count: i64,
//! }
//!
//! impl Agent for Counter {
//!     type Msg = CounterMsg;
//!     type Reply = CounterReply;
//!
//!     fn handle(&mut self, msg: CounterMsg, ctx: &mut Ctx) -> CounterReply {
//!         match msg {
//!             CounterMsg::Inc { by } => self.count = self.count.wrapping_add(by),
//!             CounterMsg::Get => {}
//!             CounterMsg::Reset => {
//!                 // Calling `log` makes the module import `arbor.log`; without this line the
//!                 // module would import nothing.
//!                 ctx.log(Level::Info, "reset");
//!                 self.count = 0;
//!             }
//!         }
//!         CounterReply { count: self.count }
//!     }
//! }
//!
//! arbor_guest::export_agent!(Counter);
//! # fn main() {
//! # use arbor_guest::testing::Harness;
//! # let counter = Harness::<Counter>::initialised();
//! # let reply: CounterReply = counter.call(&CounterMsg::Inc { by: 5 }).unwrap();
//! # assert_eq!(reply.count, 5);
//! # let state = counter.snapshot().unwrap();
//! # let copy = Harness::<Counter>::new();
//! # copy.restore(&state).unwrap();
//! # let reply: CounterReply = copy.call(&CounterMsg::Get).unwrap();
//! # assert_eq!(reply.count, 5);
//! # }
//! ```
//!
//! Its `Cargo.toml` needs `crate-type = ["cdylib"]`, dependencies on `arbor-guest` and `serde`
//! (with `derive`), and for a small module a release profile with `opt-level = "s"`, `lto = true`,
//! `panic = "abort"` and `strip = "debuginfo"`.
//!
//! # Core concepts
//!
//! - [`Agent`]: the state type and its behaviour. `Msg`/`Reply` are its protocol; `init`,
//!   `snapshot` and `restore` have defaults (start from `Default`; MessagePack of `Self`).
//! - [`Ctx`]: the host's imports (`log`, `send`, `now`, `random`, `call_tool`), available inside
//!   `handle` only.
//! - [`export_agent!`]: generates the ABI's exports for one `Agent` type; one per module.
//! - [`params_as`] and [`tunables!`]: parameters the host hands the module, and the space of
//!   them it declares for evolution to search.
//! - [`abi`]: the exact contract with the host (the text of `modules/ABI.md`), with its error
//!   codes as constants.
//! - [`testing`] (native targets only): run an agent without Wasm against a fake host.
//!
//! # Rules an agent must follow
//!
//! - **Deterministic state encoding.** The same state must give the same snapshot bytes: the host
//!   compares them across replays and versions. Use `BTreeMap`/`BTreeSet`, not
//!   `HashMap`/`HashSet`, whose iteration order depends on insertion history and capacity.
//! - **Deterministic behaviour.** Given the state, the message and the imports' answers, `handle`
//!   must do the same thing every time: recovery replays journaled messages through it and
//!   expects the same state. Time, randomness and outside data come only from [`Ctx`], whose
//!   answers the host journals. Avoid floating-point NaN payloads in state.
//! - **Panics are crashes.** With `panic = "abort"` a panic executes `unreachable`, the call traps,
//!   and the host treats the agent as crashed: the instance is discarded and the supervisor
//!   restarts it from its last checkpoint. Running out of the memory the host allows traps the
//!   same way. Undecodable input never panics: it becomes error code -1 with a message.
//! - **Capabilities follow calls.** Every import is a capability the host grants per agent and a
//!   module importing an ungranted one is refused. The SDK declares all five imports, but the
//!   linker only keeps those the agent's code can reach, so a module imports exactly what it uses.

#![deny(missing_docs)]

pub mod abi;
mod agent;
mod ctx;
mod exports;
mod params;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use agent::{Agent, MAX_DECODE_DEPTH, decode, encode};
pub use ctx::{Ctx, Level, SendError, ToolError};
pub use params::{params, params_as};

/// Exports the ABI for one [`Agent`] type; write it once per module, at the crate root.
///
/// On wasm32 it defines `arbor_abi_version`, `arbor_alloc`, `arbor_configure`, `arbor_init`,
/// `arbor_handle`, `arbor_snapshot`, `arbor_restore` and `arbor_last_error` (see [`abi`]) over a single instance
/// of the agent held in a module-global. On other targets it only checks that the type is an
/// `Agent`, so agent crates also build natively for tests (drive them with [`testing::Harness`]).
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        const _: fn() = || {
            fn implements_agent<A: $crate::Agent>() {}
            implements_agent::<$agent>();
        };

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static ARBOR_AGENT: ::core::cell::RefCell<::core::option::Option<$agent>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_abi_version() -> i32 {
                $crate::abi::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_alloc(len: i32) -> i32 {
                $crate::__private::alloc(len)
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_configure(ptr: i32, len: i32) -> i32 {
                // SAFETY: the ABI obliges the host to pass a buffer from arbor_alloc(len).
                unsafe { $crate::__private::configure(ptr, len) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_init(ptr: i32, len: i32) -> i32 {
                // SAFETY: the ABI obliges the host to pass a buffer from arbor_alloc(len).
                unsafe { $crate::__private::init(&ARBOR_AGENT, ptr, len) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_handle(ptr: i32, len: i32) -> i64 {
                // SAFETY: the ABI obliges the host to pass a buffer from arbor_alloc(len).
                unsafe { $crate::__private::handle(&ARBOR_AGENT, ptr, len) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_snapshot() -> i64 {
                $crate::__private::snapshot(&ARBOR_AGENT)
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_restore(ptr: i32, len: i32) -> i32 {
                // SAFETY: the ABI obliges the host to pass a buffer from arbor_alloc(len).
                unsafe { $crate::__private::restore(&ARBOR_AGENT, ptr, len) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn arbor_last_error() -> i64 {
                $crate::__private::last_error()
            }
        };
    };
}

/// Used by [`export_agent!`]'s expansion; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::exports::{alloc, configure, handle, init, last_error, restore, snapshot};
}
