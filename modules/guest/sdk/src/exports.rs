//! What [`crate::export_agent!`] expands to.
//!
//! Two layers: the core functions below work on slices and return `Result`s, and run on every
//! target (the native [`crate::testing::Harness`] drives them); the `wasm` glue turns the ABI's raw
//! (ptr, len) pairs into owned buffers, calls the core, and turns results back into packed `i64`s
//! and error codes. The agent itself lives in a `RefCell<Option<A>>` declared by the macro in the
//! agent's crate: `None` until init/restore, and a failed `try_borrow` means the host re-entered
//! the guest from inside an import.

use std::any::type_name;
use std::cell::RefCell;

use crate::abi::{
    ERR_BAD_INPUT, ERR_ENCODE_FAILED, ERR_INIT_FAILED, ERR_NOT_INITIALISED, ERR_REENTERED,
    ERR_RESTORE_REJECTED,
};
use crate::{Agent, Ctx, decode, encode};

/// A failed export call: the negative code the host sees and the text `arbor_last_error` gives.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

fn reentered() -> Failure {
    Failure {
        code: ERR_REENTERED,
        message: "guest re-entered: only arbor_alloc may be called while an import runs".into(),
    }
}

fn not_initialised() -> Failure {
    Failure {
        code: ERR_NOT_INITIALISED,
        message: "agent not initialised: call arbor_init or arbor_restore first".into(),
    }
}

/// `arbor_init`: replaces the agent with `A::init(config)`; on failure the old one stays.
pub(crate) fn init_agent<A: Agent>(
    slot: &RefCell<Option<A>>,
    config: &[u8],
) -> Result<(), Failure> {
    let mut slot = slot.try_borrow_mut().map_err(|_| reentered())?;
    let agent = A::init(config).map_err(|err| Failure {
        code: ERR_INIT_FAILED,
        message: format!("init of {} failed: {err}", type_name::<A>()),
    })?;
    *slot = Some(agent);
    Ok(())
}

/// `arbor_handle`: decodes one message, lets the agent handle it, encodes the reply.
pub(crate) fn handle_message<A: Agent>(
    slot: &RefCell<Option<A>>,
    input: &[u8],
) -> Result<Vec<u8>, Failure> {
    let mut slot = slot.try_borrow_mut().map_err(|_| reentered())?;
    let agent = slot.as_mut().ok_or_else(not_initialised)?;
    let msg: A::Msg = decode(input).map_err(|err| Failure {
        code: ERR_BAD_INPUT,
        message: format!(
            "message ({} bytes) not decodable as {}: {err}",
            input.len(),
            type_name::<A::Msg>()
        ),
    })?;
    let reply = agent.handle(msg, &mut Ctx::new());
    encode(&reply).map_err(|err| Failure {
        code: ERR_ENCODE_FAILED,
        message: format!("reply {} not encodable: {err}", type_name::<A::Reply>()),
    })
}

/// `arbor_snapshot`: the agent's state bytes.
pub(crate) fn snapshot_agent<A: Agent>(slot: &RefCell<Option<A>>) -> Result<Vec<u8>, Failure> {
    let slot = slot.try_borrow().map_err(|_| reentered())?;
    let agent = slot.as_ref().ok_or_else(not_initialised)?;
    agent.snapshot().map_err(|err| Failure {
        code: ERR_ENCODE_FAILED,
        message: format!("snapshot of {} failed: {err}", type_name::<A>()),
    })
}

/// `arbor_restore`: replaces the agent with `A::restore(state)`; on failure the old one stays.
pub(crate) fn restore_agent<A: Agent>(
    slot: &RefCell<Option<A>>,
    state: &[u8],
) -> Result<(), Failure> {
    let mut slot = slot.try_borrow_mut().map_err(|_| reentered())?;
    let agent = A::restore(state).map_err(|err| Failure {
        code: ERR_RESTORE_REJECTED,
        message: format!(
            "{} rejected the state ({} bytes): {err}",
            type_name::<A>(),
            state.len()
        ),
    })?;
    *slot = Some(agent);
    Ok(())
}

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::alloc::Layout;
    use std::cell::{Cell, RefCell};
    use std::ptr::NonNull;
    use std::thread::LocalKey;

    use super::{Failure, handle_message, init_agent, restore_agent, snapshot_agent};
    use crate::Agent;
    use crate::abi::{ERR_OUT_OF_RANGE, pack};

    // wasm32-unknown-unknown has one thread, so these are plain globals. `Cell` (take/replace)
    // rather than `RefCell`: no borrow flag, so no panic path.
    thread_local! {
        /// The reply or state of the last successful handle/snapshot: what the packed result
        /// points at, kept alive until the next one replaces it.
        static OUTPUT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
        /// The message of the last failed init/handle/snapshot/restore; empty after a success.
        static LAST_ERROR: Cell<String> = const { Cell::new(String::new()) };
    }

    /// `arbor_alloc`: a zero-filled buffer of exactly `len` bytes, or 0.
    pub fn alloc(len: i32) -> i32 {
        let Ok(len) = usize::try_from(len) else {
            return 0;
        };
        if len == 0 {
            // Non-zero so the host can tell it from failure; `take_buffer` never frees it.
            return NonNull::<u8>::dangling().as_ptr() as usize as i32;
        }
        let Ok(layout) = Layout::array::<u8>(len) else {
            return 0;
        };
        // SAFETY: `layout` has a non-zero size. Zero-filled so the bytes are initialised whatever
        // the host writes; null (allocation failure) comes back as 0, which is what the ABI wants.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        ptr as usize as i32
    }

    /// Takes ownership of a buffer `arbor_alloc(len)` returned.
    ///
    /// # Safety
    /// `(ptr, len)` must be exactly a pointer `alloc(len)` returned and its `len`, and the buffer
    /// must not have been taken already. The ABI puts this on the host.
    pub unsafe fn take_buffer(ptr: u32, len: u32) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let len = len as usize;
        // SAFETY: by the contract, `ptr` came from `alloc_zeroed(Layout::array::<u8>(len))` (the
        // layout `Vec<u8>` with capacity `len` uses), it is initialised, and nobody else owns it.
        unsafe { Vec::from_raw_parts(ptr as usize as *mut u8, len, len) }
    }

    fn fail(failure: Failure) -> i32 {
        LAST_ERROR.with(|last| last.set(failure.message));
        failure.code
    }

    fn status(result: Result<(), Failure>) -> i32 {
        match result {
            Ok(()) => 0,
            Err(failure) => fail(failure),
        }
    }

    fn output(result: Result<Vec<u8>, Failure>) -> i64 {
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(failure) => return i64::from(fail(failure)),
        };
        let (ptr, len) = (bytes.as_ptr() as usize as u32, bytes.len() as u32);
        // Moving the Vec into the global keeps its heap buffer where it is.
        OUTPUT.with(|output| output.set(bytes));
        match pack(ptr, len) {
            Some(packed) => packed,
            None => i64::from(fail(Failure {
                code: ERR_OUT_OF_RANGE,
                message: format!("output at {ptr:#x} is above 2 GiB and cannot be packed"),
            })),
        }
    }

    fn begin() {
        LAST_ERROR.with(|last| last.set(String::new()));
    }

    /// `arbor_configure`: keeps the module's parameters for [`crate::params_as`].
    ///
    /// # Safety
    /// As [`take_buffer`] for `(ptr, len)`.
    pub unsafe fn configure(ptr: i32, len: i32) -> i32 {
        begin();
        // SAFETY: forwarded contract.
        let params = unsafe { take_buffer(ptr as u32, len as u32) };
        crate::params::set(params);
        0
    }

    /// `arbor_init`.
    ///
    /// # Safety
    /// As [`take_buffer`] for `(ptr, len)`.
    pub unsafe fn init<A: Agent>(
        slot: &'static LocalKey<RefCell<Option<A>>>,
        ptr: i32,
        len: i32,
    ) -> i32 {
        begin();
        // SAFETY: forwarded contract.
        let config = unsafe { take_buffer(ptr as u32, len as u32) };
        status(slot.with(|slot| init_agent(slot, &config)))
    }

    /// `arbor_handle`.
    ///
    /// # Safety
    /// As [`take_buffer`] for `(ptr, len)`.
    pub unsafe fn handle<A: Agent>(
        slot: &'static LocalKey<RefCell<Option<A>>>,
        ptr: i32,
        len: i32,
    ) -> i64 {
        begin();
        // SAFETY: forwarded contract.
        let input = unsafe { take_buffer(ptr as u32, len as u32) };
        let result = slot.with(|slot| handle_message(slot, &input));
        drop(input);
        output(result)
    }

    /// `arbor_snapshot`.
    pub fn snapshot<A: Agent>(slot: &'static LocalKey<RefCell<Option<A>>>) -> i64 {
        begin();
        output(slot.with(snapshot_agent))
    }

    /// `arbor_restore`.
    ///
    /// # Safety
    /// As [`take_buffer`] for `(ptr, len)`.
    pub unsafe fn restore<A: Agent>(
        slot: &'static LocalKey<RefCell<Option<A>>>,
        ptr: i32,
        len: i32,
    ) -> i32 {
        begin();
        // SAFETY: forwarded contract.
        let state = unsafe { take_buffer(ptr as u32, len as u32) };
        status(slot.with(|slot| restore_agent(slot, &state)))
    }

    /// `arbor_last_error`: packed message of the last failure, 0 if none.
    pub fn last_error() -> i64 {
        LAST_ERROR.with(|last| {
            let message = last.take();
            let packed = if message.is_empty() {
                0
            } else {
                pack(message.as_ptr() as usize as u32, message.len() as u32).unwrap_or(0)
            };
            last.set(message);
            packed
        })
    }
}
