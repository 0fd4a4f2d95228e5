#![doc = include_str!("../../../ABI.md")]

/// The ABI version this SDK implements; `arbor_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// `arbor_handle`: the input is not MessagePack of the agent's message type (or has trailing bytes).
/// The agent's state is unchanged.
pub const ERR_BAD_INPUT: i32 = -1;
/// `arbor_restore`: the state bytes were rejected (undecodable, or `Agent::restore` refused them).
/// The previous state, if any, is unchanged.
pub const ERR_RESTORE_REJECTED: i32 = -2;
/// `arbor_init`: `Agent::init` refused the config. The previous state, if any, is unchanged.
pub const ERR_INIT_FAILED: i32 = -3;
/// `arbor_handle` / `arbor_snapshot` before a successful `arbor_init` or `arbor_restore`.
pub const ERR_NOT_INITIALISED: i32 = -4;
/// The reply or the state could not be encoded. After `arbor_handle` the message was already
/// applied, so the host treats this as a crash of the agent.
pub const ERR_ENCODE_FAILED: i32 = -5;
/// An export other than `arbor_alloc` was called while an import was in progress.
pub const ERR_REENTERED: i32 = -6;
/// The reply or state buffer lies at or above 2 GiB and cannot be packed into a non-negative
/// `i64`. After `arbor_handle` the message was already applied: a crash, as for
/// [`ERR_ENCODE_FAILED`].
pub const ERR_OUT_OF_RANGE: i32 = -7;

/// `send` import: the recipient does not exist.
pub const SEND_UNKNOWN_RECIPIENT: i32 = -1;
/// `send` import: the host refused the send (not permitted for this agent, mailbox full, shutting
/// down).
pub const SEND_REFUSED: i32 = -2;

/// `call_tool` import: no tool of that name is granted to this agent.
pub const TOOL_UNKNOWN: i32 = -1;
/// `call_tool` import: the tool ran and failed.
pub const TOOL_FAILED: i32 = -2;
/// `call_tool` import: the host could not place the result in guest memory (`arbor_alloc`
/// returned 0).
pub const TOOL_NO_MEMORY: i32 = -3;

/// Packs a buffer's address and length as the ABI's `i64` return: `(ptr << 32) | len`.
///
/// `None` when `ptr` is at or above 2 GiB, where the packed value would be negative and so
/// indistinguishable from an error code.
pub fn pack(ptr: u32, len: u32) -> Option<i64> {
    if ptr > i32::MAX as u32 {
        return None;
    }
    Some((i64::from(ptr) << 32) | i64::from(len))
}

/// Splits a non-negative packed `i64` into `(ptr, len)`; `None` for a negative value (an error
/// code).
pub fn unpack(packed: i64) -> Option<(u32, u32)> {
    if packed < 0 {
        return None;
    }
    // Truncations are the point: high half is the address, low half the length.
    Some(((packed >> 32) as u32, packed as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_refuses_high_addresses() {
        assert_eq!(pack(0x10, 3), Some(0x10_0000_0003));
        assert_eq!(unpack(0x10_0000_0003), Some((0x10, 3)));
        assert_eq!(
            pack(i32::MAX as u32, u32::MAX).and_then(unpack),
            Some((i32::MAX as u32, u32::MAX))
        );
        assert_eq!(pack(1 << 31, 1), None);
        assert_eq!(unpack(i64::from(ERR_BAD_INPUT)), None);
        assert_eq!(unpack(0), Some((0, 0)));
    }
}
