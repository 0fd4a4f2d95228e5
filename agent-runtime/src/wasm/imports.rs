//! The `arbor` imports and the per-instance store data they work with.
//!
//! The store owns the [`Host`] while `arbor_handle` runs (moved in for the call, taken back
//! after), and each import reaches it through `Caller::data_mut` — wasmtime's own model: no
//! thread, channel or borrow between the guest and its host.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Extern, Linker, ResourceLimiter, UpdateDeadline};

use super::abi::{self, Import};
use crate::behaviour::{BehaviourError, HostError};
use crate::host::Host;

/// What a running instance's store holds.
pub(crate) struct StoreState {
    pub(crate) limiter: CapLimiter,
    /// The host, while `arbor_handle` runs (`None` otherwise: imports are refused then).
    pub(crate) host: Option<Host>,
    /// Why an import stopped the guest, when it did (a trap alone would lose the reason).
    pub(crate) fault: Option<BehaviourError>,
    /// The tools `call_tool` may name.
    pub(crate) tools: BTreeSet<String>,
    /// When the current guest operation started (set when it is armed).
    pub(crate) call_started: Instant,
    /// How long one guest operation may run.
    pub(crate) deadline: Duration,
}

impl StoreState {
    /// Called when the store's epoch deadline is reached. The epoch only approximates real
    /// time (it is counted from when the ticker started, not from when this call did), so the
    /// call's own clock decides: stopped if its deadline has really passed, else given the
    /// ticks that are left.
    pub(crate) fn on_epoch_deadline(&self, tick: Duration) -> UpdateDeadline {
        let elapsed = self.call_started.elapsed();
        match self.deadline.checked_sub(elapsed) {
            Some(left) if !left.is_zero() => UpdateDeadline::Continue(ticks(left, tick)),
            _ => UpdateDeadline::Interrupt,
        }
    }
}

/// How many epoch ticks cover `span` (at least one).
pub(crate) fn ticks(span: Duration, tick: Duration) -> u64 {
    let ticks = span.as_nanos().div_ceil(tick.as_nanos().max(1));
    // Far beyond any real deadline, and far from wasmtime's epoch arithmetic overflowing.
    u64::try_from(ticks)
        .unwrap_or(u64::MAX / 2)
        .clamp(1, u64::MAX / 2)
}

/// The memory cap, recording whether it denied a grow so a following trap can be named
/// [`BehaviourError::MemoryCap`].
pub(crate) struct CapLimiter {
    pub(crate) cap_bytes: usize,
    pub(crate) table_elements: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for CapLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.cap_bytes && maximum.is_none_or(|max| desired <= max);
        if !allowed {
            self.denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements && maximum.is_none_or(|max| desired <= max))
    }
}

/// Stops the guest with `error` as the reason.
fn fault(caller: &mut Caller<'_, StoreState>, error: BehaviourError) -> wasmtime::Error {
    let message = error.to_string();
    caller.data_mut().fault = Some(error);
    wasmtime::Error::msg(message)
}

/// The host, or the fault of an import called outside a message.
fn host<'a>(caller: &'a mut Caller<'_, StoreState>) -> wasmtime::Result<&'a mut Host> {
    if caller.data().host.is_none() {
        return Err(fault(
            caller,
            BehaviourError::Contract("imports may only be called while handling a message".into()),
        ));
    }
    match caller.data_mut().host.as_mut() {
        Some(host) => Ok(host),
        None => Err(wasmtime::Error::msg("no host")),
    }
}

fn memory(caller: &mut Caller<'_, StoreState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export(abi::MEMORY) {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(fault(
            caller,
            BehaviourError::Contract("no exported memory".into()),
        )),
    }
}

fn read(caller: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let start = ptr as u32 as usize;
    let bytes = start
        .checked_add(len as u32 as usize)
        .and_then(|end| memory.data(&*caller).get(start..end))
        .map(<[u8]>::to_vec);
    bytes.ok_or_else(|| {
        fault(
            caller,
            BehaviourError::Contract(format!(
                "import argument {start:#x}+{} lies outside memory",
                len as u32
            )),
        )
    })
}

fn read_text(caller: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// A host error inside `now`/`random` has no code to return: it stops the guest.
fn value(
    caller: &mut Caller<'_, StoreState>,
    answer: Result<u64, HostError>,
    what: &str,
) -> wasmtime::Result<i64> {
    match answer {
        // Bits reinterpreted: `random` is any i64; `now` fits until the year 2262.
        Ok(v) => Ok(v as i64),
        Err(e) => Err(fault(
            caller,
            BehaviourError::Trap(format!("host {what}: {e}")),
        )),
    }
}

/// Defines every `arbor` import; which ones an agent may use is checked before instantiation.
pub(crate) fn define(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(
        m,
        Import::Log.name(),
        |mut caller: Caller<'_, StoreState>, level: i32, ptr: i32, len: i32| {
            let line = read_text(&mut caller, ptr, len)?;
            let level = level.clamp(0, 4) as u8;
            host(&mut caller)?.log(level, &line);
            Ok(())
        },
    )?;
    linker.func_wrap(
        m,
        Import::Send.name(),
        |mut caller: Caller<'_, StoreState>, to_ptr: i32, to_len: i32, ptr: i32, len: i32| {
            let to = read_text(&mut caller, to_ptr, to_len)?;
            let message = read(&mut caller, ptr, len)?;
            Ok(match host(&mut caller)?.send(&to, &message) {
                Ok(()) => 0,
                Err(HostError::NoSuchAgent(_)) => abi::SEND_NO_RECIPIENT,
                Err(HostError::NotGranted(_) | HostError::Refused(_)) => abi::SEND_REFUSED,
                Err(_) => abi::SEND_OTHER,
            })
        },
    )?;
    linker.func_wrap(
        m,
        Import::Now.name(),
        |mut caller: Caller<'_, StoreState>| {
            let answer = host(&mut caller)?.now();
            value(&mut caller, answer, "now")
        },
    )?;
    linker.func_wrap(
        m,
        Import::Random.name(),
        |mut caller: Caller<'_, StoreState>| {
            let answer = host(&mut caller)?.random();
            value(&mut caller, answer, "random")
        },
    )?;
    linker.func_wrap(
        m,
        Import::CallTool.name(),
        |mut caller: Caller<'_, StoreState>, name_ptr: i32, name_len: i32, ptr: i32, len: i32| {
            call_tool(&mut caller, name_ptr, name_len, ptr, len)
        },
    )?;
    Ok(())
}

fn call_tool(
    caller: &mut Caller<'_, StoreState>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
) -> wasmtime::Result<i64> {
    let name = read_text(caller, name_ptr, name_len)?;
    if !caller.data().tools.contains(&name) {
        return Ok(abi::TOOL_NOT_GRANTED);
    }
    let args = read(caller, args_ptr, args_len)?;
    let result = match host(caller)?.call_tool(&name, &args) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        Ok(_) | Err(HostError::ToolFailed { .. }) => return Ok(abi::TOOL_FAILED),
        Err(HostError::NoSuchTool(_) | HostError::NotGranted(_)) => {
            return Ok(abi::TOOL_NOT_GRANTED);
        }
        Err(_) => return Ok(abi::TOOL_OTHER),
    };
    let Ok(len) = i32::try_from(result.len()) else {
        return Ok(abi::TOOL_NO_MEMORY);
    };
    let alloc = match caller.get_export(abi::ALLOC).and_then(Extern::into_func) {
        Some(func) => func.typed::<i32, i32>(&*caller)?,
        None => {
            return Err(fault(
                caller,
                BehaviourError::Contract("no arbor_alloc".into()),
            ));
        }
    };
    // The one export the ABI lets the host call while an import runs.
    let ptr = alloc.call(&mut *caller, len)?;
    if ptr == 0 {
        return Ok(abi::TOOL_NO_MEMORY);
    }
    let memory = memory(caller)?;
    let ptr = ptr as u32;
    let packed = abi::pack(ptr, len as u32);
    match packed {
        Some(packed) if memory.write(&mut *caller, ptr as usize, &result).is_ok() => Ok(packed),
        _ => Err(fault(
            caller,
            BehaviourError::Contract(format!(
                "arbor_alloc({len}) returned {ptr:#x}, outside memory or above 2 GiB"
            )),
        )),
    }
}
