//! Run agents natively, without Wasm: a [`Harness`] drives an [`Agent`] through the same code the
//! exports run (decoding, error codes, snapshot/restore), and a thread-local [`FakeHost`] answers
//! the imports. Only on non-wasm targets, for `cargo test`.
//!
//! ```
//! # use arbor_guest::{Agent, Ctx};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)]
//! # struct Echo;
//! # impl Agent for Echo {
//! #     type Msg = String;
//! #     type Reply = String;
//! #     fn handle(&mut self, msg: String, ctx: &mut Ctx) -> String { format!("{msg}@{}", ctx.now()) }
//! # }
//! use arbor_guest::testing::{Harness, with_fake_host};
//!
//! with_fake_host(|host| host.clock = 7);
//! let echo = Harness::<Echo>::initialised();
//! let reply: String = echo.call(&"hi").unwrap();
//! assert_eq!(reply, "hi@7");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::TOOL_UNKNOWN;
use crate::exports::{Failure, handle_message, init_agent, restore_agent, snapshot_agent};
use crate::{Agent, Level, decode, encode};

/// A failed export call as the host would see it: the negative code and the
/// `arbor_last_error` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbiError {
    /// The negative error code (see [`crate::abi`]).
    pub code: i32,
    /// What `arbor_last_error` would return.
    pub message: String,
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error code {}: {}", self.code, self.message)
    }
}

impl std::error::Error for AbiError {}

impl From<Failure> for AbiError {
    fn from(failure: Failure) -> AbiError {
        AbiError {
            code: failure.code,
            message: failure.message,
        }
    }
}

/// One agent instance without Wasm: the byte-level export calls, natively.
pub struct Harness<A> {
    slot: RefCell<Option<A>>,
}

impl<A: Agent> Default for Harness<A> {
    fn default() -> Self {
        Harness {
            slot: RefCell::new(None),
        }
    }
}

impl<A: Agent> Harness<A> {
    /// An instance before `arbor_init`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An instance after `arbor_init` with empty config (which the default `init` accepts).
    ///
    /// # Panics
    /// If the agent's `init` refuses empty config (a test helper; use [`Harness::init`] then).
    pub fn initialised() -> Self {
        let harness = Self::new();
        if let Err(err) = harness.init(&[]) {
            panic!("init with empty config failed: {err}");
        }
        harness
    }

    /// `arbor_configure(params)`: what [`crate::params_as`] returns from now on, on this
    /// thread (the parameters are per instance in Wasm, per thread natively).
    pub fn configure(&self, params: &[u8]) {
        crate::params::set(params.to_vec());
    }

    /// `arbor_init(config)`.
    pub fn init(&self, config: &[u8]) -> Result<(), AbiError> {
        Ok(init_agent(&self.slot, config)?)
    }

    /// `arbor_handle(msg)` on raw MessagePack: the reply bytes.
    pub fn handle_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, AbiError> {
        Ok(handle_message(&self.slot, msg)?)
    }

    /// Encodes `msg` as the host does, handles it, decodes the reply as `R`. An [`AbiError`] with
    /// code 0 means the harness itself could not encode `msg` or decode the reply.
    pub fn call<M: Serialize + ?Sized, R: DeserializeOwned>(&self, msg: &M) -> Result<R, AbiError> {
        let bytes = encode(msg).map_err(|message| AbiError { code: 0, message })?;
        let reply = self.handle_bytes(&bytes)?;
        decode(&reply).map_err(|message| AbiError { code: 0, message })
    }

    /// `arbor_snapshot()`.
    pub fn snapshot(&self) -> Result<Vec<u8>, AbiError> {
        Ok(snapshot_agent(&self.slot)?)
    }

    /// `arbor_restore(state)`.
    pub fn restore(&self, state: &[u8]) -> Result<(), AbiError> {
        Ok(restore_agent(&self.slot, state)?)
    }
}

/// A message the agent sent through [`crate::Ctx::send`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The recipient's name.
    pub to: String,
    /// The MessagePack message.
    pub msg: Vec<u8>,
}

/// A fake tool: MessagePack args in, MessagePack result or a negative ABI code out.
pub type FakeTool = Box<dyn FnMut(&[u8]) -> Result<Vec<u8>, i32>>;

/// The imports' answers and records for native tests; one per thread, reached with
/// [`with_fake_host`].
pub struct FakeHost {
    /// What the next `now` returns.
    pub clock: u64,
    /// How far `clock` advances after each `now`.
    pub clock_step: u64,
    /// State of the splitmix64 generator behind `random`.
    pub random_state: u64,
    /// What `send` returns (0, or a negative code to test failures).
    pub send_result: i32,
    /// Every `log` line, in order.
    pub logs: Vec<(Level, String)>,
    /// Every accepted `send`, in order.
    pub sent: Vec<Sent>,
    tools: BTreeMap<String, FakeTool>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            clock: 1_700_000_000_000_000_000,
            clock_step: 1_000,
            random_state: 0x5eed,
            send_result: 0,
            logs: Vec::new(),
            sent: Vec::new(),
            tools: BTreeMap::new(),
        }
    }
}

impl FakeHost {
    /// Registers (or replaces) the tool `name`.
    pub fn add_tool(
        &mut self,
        name: &str,
        tool: impl FnMut(&[u8]) -> Result<Vec<u8>, i32> + 'static,
    ) {
        self.tools.insert(name.to_owned(), Box::new(tool));
    }

    /// Registers `echo`, which returns its arguments unchanged.
    pub fn add_echo_tool(&mut self) {
        self.add_tool("echo", |args| Ok(args.to_vec()));
    }

    pub(crate) fn record_log(&mut self, level: i32, text: &[u8]) {
        let text = String::from_utf8_lossy(text).into_owned();
        self.logs.push((Level::from_abi(level), text));
    }

    pub(crate) fn record_send(&mut self, to: &[u8], msg: &[u8]) -> i32 {
        if self.send_result == 0 {
            self.sent.push(Sent {
                to: String::from_utf8_lossy(to).into_owned(),
                msg: msg.to_vec(),
            });
        }
        self.send_result
    }

    pub(crate) fn next_now(&mut self) -> i64 {
        let now = self.clock;
        self.clock = self.clock.wrapping_add(self.clock_step);
        now as i64
    }

    pub(crate) fn next_random(&mut self) -> i64 {
        // splitmix64
        self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as i64
    }
}

thread_local! {
    static FAKE_HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
}

/// Runs `f` on this thread's fake host (to configure it, or to read what the agent did).
///
/// # Panics
/// If called from inside a fake tool (tools must not touch the fake host).
pub fn with_fake_host<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    FAKE_HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Replaces this thread's fake host with a fresh default one.
pub fn reset_fake_host() {
    with_fake_host(|host| *host = FakeHost::default());
}

/// Runs a fake tool with the host unborrowed, so the tool may be anything.
pub(crate) fn run_fake_tool(name: &[u8], args: &[u8]) -> Result<Vec<u8>, i32> {
    let name = String::from_utf8_lossy(name).into_owned();
    let Some(mut tool) = with_fake_host(|host| host.tools.remove(&name)) else {
        return Err(TOOL_UNKNOWN);
    };
    let result = tool(args);
    // A tool that re-registered itself meanwhile wins over the one we took out.
    with_fake_host(|host| {
        host.tools.entry(name).or_insert(tool);
    });
    result
}
