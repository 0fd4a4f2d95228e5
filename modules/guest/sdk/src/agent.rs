//! The [`Agent`] trait and the MessagePack helpers its default methods use.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Ctx;

/// How deep nested MessagePack input may go before decoding fails. Deep enough for any real
/// message; shallow enough that hostile nesting fails with an error code instead of running the
/// guest's 1 MiB stack out (which would trap).
pub const MAX_DECODE_DEPTH: usize = 256;

/// An agent: its state is the implementing type itself, and [`Agent::handle`] is its behaviour.
///
/// Only `Msg`, `Reply` and `handle` are required. The defaults encode the state with
/// [`encode`] (MessagePack, named fields) and start from `Default`. Override
/// [`Agent::restore`] when a new version changes the state's layout: it receives whatever an older
/// version's [`Agent::snapshot`] wrote, and migrating it is its job.
///
/// The state must encode deterministically — the same state gives the same bytes — because the
/// host compares snapshots across replays and versions: use `BTreeMap`/`BTreeSet`, never
/// `HashMap`/`HashSet`, whose order depends on insertion history.
pub trait Agent: Default + Serialize + DeserializeOwned {
    /// The messages this agent accepts, decoded from the host's MessagePack.
    type Msg: DeserializeOwned;
    /// What [`Agent::handle`] answers, encoded to MessagePack with named fields.
    type Reply: Serialize;

    /// Creates a fresh agent from the host's config bytes (`arbor_init`).
    ///
    /// The default accepts only empty config and starts from `Default`; override it to take
    /// config, conventionally MessagePack decoded with [`decode`]. An `Err` becomes error code -3
    /// with its text as the host-visible message.
    fn init(config: &[u8]) -> Result<Self, String> {
        if config.is_empty() {
            Ok(Self::default())
        } else {
            Err(format!(
                "this agent takes no init config, got {} bytes",
                config.len()
            ))
        }
    }

    /// Handles one message: the only place state changes and the only place [`Ctx`] (the host's
    /// imports) is available. A panic here traps, which the host treats as a crash.
    fn handle(&mut self, msg: Self::Msg, ctx: &mut Ctx) -> Self::Reply;

    /// Encodes the state (`arbor_snapshot`). Default: [`encode`] of `self`.
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        encode(self)
    }

    /// Rebuilds an agent from snapshot bytes (`arbor_restore`), possibly written by an older
    /// version: overriding this is how a new version migrates old state. Default: [`decode`].
    fn restore(state: &[u8]) -> Result<Self, String> {
        decode(state)
    }
}

/// Encodes `value` as MessagePack with named fields (`rmp_serde::to_vec_named`), the encoding of
/// every payload and of the default state.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(value).map_err(|err| format!("cannot encode: {err}"))
}

/// Decodes exactly one MessagePack value filling all of `bytes` (trailing bytes are an error),
/// nested at most [`MAX_DECODE_DEPTH`] deep. Accepts named (map) and positional (array) structs.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut rest = bytes;
    let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
    deserializer.set_max_depth(MAX_DECODE_DEPTH);
    let value = T::deserialize(&mut deserializer).map_err(|err| err.to_string())?;
    drop(deserializer);
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after a {}-byte value",
            rest.len(),
            bytes.len() - rest.len()
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn encode_uses_named_fields() {
        let bytes = encode(&Point { x: 1, y: 2 }).unwrap();
        // fixmap of 2, "x" => 1, "y" => 2
        assert_eq!(bytes, [0x82, 0xa1, b'x', 0x01, 0xa1, b'y', 0x02]);
        assert_eq!(decode::<Point>(&bytes).unwrap(), Point { x: 1, y: 2 });
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_garbage() {
        let mut bytes = encode(&Point { x: 1, y: 2 }).unwrap();
        bytes.push(0xc0);
        let err = decode::<Point>(&bytes).unwrap_err();
        assert!(err.contains("1 trailing bytes"), "{err}");
        assert!(decode::<Point>(&[]).is_err());
        assert!(decode::<Point>(&[0xc1]).is_err());
        assert!(decode::<Point>(&[0x81, 0xa1, b'x']).is_err());
    }

    #[test]
    fn decode_refuses_hostile_nesting_without_overflowing() {
        // 100k nested one-element arrays, as an ignored field of a map.
        let mut bytes = vec![0x83, 0xa1, b'x', 0x01, 0xa1, b'y', 0x02, 0xa1, b'z'];
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        let err = decode::<Point>(&bytes).unwrap_err();
        assert!(err.contains("depth"), "{err}");
    }

    #[test]
    fn btree_state_encodes_the_same_whatever_the_insertion_order() {
        let forward: BTreeMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        let backward: BTreeMap<String, u32> = (0..50).rev().map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(encode(&forward).unwrap(), encode(&backward).unwrap());
    }
}
