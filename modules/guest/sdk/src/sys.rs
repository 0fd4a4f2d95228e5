//! The host's imports behind safe functions over slices.
//!
//! On wasm32 each function calls its `arbor` import. All imports are declared in one extern block,
//! but wasm-ld only emits an import for a symbol something references, so an agent that never
//! calls [`crate::Ctx::send`] has no `send` import and needs no `send` grant.
//!
//! Elsewhere (native `cargo test`) the same functions talk to the thread-local fake host in
//! [`crate::testing`].

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "arbor")]
    unsafe extern "C" {
        fn log(level: i32, ptr: i32, len: i32);
        fn send(to_ptr: i32, to_len: i32, msg_ptr: i32, msg_len: i32) -> i32;
        fn now() -> i64;
        fn random() -> i64;
        fn call_tool(name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32) -> i64;
    }

    /// A slice as the ABI's (ptr, len) pair. wasm32 addresses and lengths fit in 32 bits; the
    /// host reads both as unsigned.
    fn raw(bytes: &[u8]) -> (i32, i32) {
        (bytes.as_ptr() as usize as i32, bytes.len() as i32)
    }

    pub fn log_text(level: i32, text: &[u8]) {
        let (ptr, len) = raw(text);
        // SAFETY: (ptr, len) is a live slice the host only reads during the call.
        unsafe { log(level, ptr, len) }
    }

    pub fn send_message(to: &[u8], msg: &[u8]) -> i32 {
        let (to_ptr, to_len) = raw(to);
        let (msg_ptr, msg_len) = raw(msg);
        // SAFETY: both are live slices the host only reads during the call.
        unsafe { send(to_ptr, to_len, msg_ptr, msg_len) }
    }

    pub fn now_nanos() -> i64 {
        // SAFETY: no arguments; the host returns a plain integer.
        unsafe { now() }
    }

    pub fn random_bits() -> i64 {
        // SAFETY: no arguments; the host returns a plain integer.
        unsafe { random() }
    }

    pub fn call_tool_raw(name: &[u8], args: &[u8]) -> Result<Vec<u8>, i32> {
        let (name_ptr, name_len) = raw(name);
        let (args_ptr, args_len) = raw(args);
        // SAFETY: both are live slices the host only reads during the call.
        let packed = unsafe { call_tool(name_ptr, name_len, args_ptr, args_len) };
        let Some((ptr, len)) = crate::abi::unpack(packed) else {
            return Err(i32::try_from(packed).unwrap_or(i32::MIN));
        };
        // SAFETY: the ABI has the host put the result in a buffer it got from our arbor_alloc(len)
        // and hand it to us, so we own it and it has exactly that layout.
        Ok(unsafe { crate::exports::take_buffer(ptr, len) })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::testing::with_fake_host;

    pub fn log_text(level: i32, text: &[u8]) {
        with_fake_host(|host| host.record_log(level, text));
    }

    pub fn send_message(to: &[u8], msg: &[u8]) -> i32 {
        with_fake_host(|host| host.record_send(to, msg))
    }

    pub fn now_nanos() -> i64 {
        with_fake_host(|host| host.next_now())
    }

    pub fn random_bits() -> i64 {
        with_fake_host(|host| host.next_random())
    }

    pub fn call_tool_raw(name: &[u8], args: &[u8]) -> Result<Vec<u8>, i32> {
        crate::testing::run_fake_tool(name, args)
    }
}

pub(crate) use imp::*;
