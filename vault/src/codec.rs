//! Value framing: every value the vault stores in sled is one frame.
//!
//! ```text
//! offset  size  field
//!      0     2  magic "AV" (0x41 0x56)
//!      2     1  format version (1; the vault's format version, see `VERSION_KEY`)
//!      3     1  kind (1 vault meta, 2 checkpoint meta, 3 checkpoint state, 4 module meta,
//!               5 module bytes, 6 lineage event, 7 agent record)
//!      4     4  body length n, u32 little-endian
//!      8    32  BLAKE3 of: key length (u32 LE) ‖ key ‖ bytes 0..8 of this header ‖ body
//!     40     n  body
//! ```
//!
//! The checksum covers the sled key as well as the value, so a value that ends up under the wrong
//! key (a misdirected write, a bug, a copy by hand) fails verification just like a flipped bit.
//! Decoding checks, in order: length ≥ 40, magic, version, kind, length field = actual length,
//! checksum; each failure is an [`Error::Corrupt`] naming the tree and key.

use crate::error::{Error, Result};

/// The two magic bytes that open every frame.
pub(crate) const MAGIC: [u8; 2] = *b"AV";
/// The format version written in every frame; also the vault's format version.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Bytes before the body.
pub(crate) const HEADER_LEN: usize = 40;
/// The largest body a frame can carry (its length field is a u32).
pub(crate) const MAX_BODY: u64 = u32::MAX as u64;

const _: () = assert!(HEADER_LEN == 2 + 1 + 1 + 4 + 32);

/// What a frame holds; a frame decoded as the wrong kind is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    VaultMeta = 1,
    CheckpointMeta = 2,
    CheckpointState = 3,
    ModuleMeta = 4,
    ModuleBytes = 5,
    LineageEvent = 6,
    AgentRecord = 7,
    ArchiveEntry = 8,
}

fn checksum(key: &[u8], head: &[u8], body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    // Keys are at most a few hundred bytes; u32 cannot truncate them.
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(head);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// Frames `body` for storage under `key`. The caller has checked the body against the configured
/// size limit, which is never above [`MAX_BODY`].
pub(crate) fn encode(key: &[u8], kind: Kind, body: &[u8]) -> Vec<u8> {
    debug_assert!(body.len() as u64 <= MAX_BODY);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let sum = checksum(key, &out[..8], body);
    out.extend_from_slice(&sum);
    out.extend_from_slice(body);
    debug_assert_eq!(out.len(), HEADER_LEN + body.len());
    out
}

/// The format version byte of a frame, if the value is long enough and has the magic; used by
/// `open` to tell "newer vault" from "corrupt vault".
pub(crate) fn peek_version(value: &[u8]) -> Option<u8> {
    (value.len() >= 3 && value[..2] == MAGIC).then(|| value[2])
}

/// Verifies a frame read from `tree` at `key` and returns its body. `render` names the key for
/// the error message and is only called on failure.
pub(crate) fn decode<'v>(
    tree: &'static str,
    key: &[u8],
    render: impl FnOnce() -> String,
    kind: Kind,
    value: &'v [u8],
) -> Result<&'v [u8]> {
    let fail = |reason: String| Err(Error::corrupt(tree, render(), reason));
    if value.len() < HEADER_LEN {
        return fail(format!(
            "value is {} bytes, shorter than the {HEADER_LEN}-byte frame header",
            value.len()
        ));
    }
    let (head, rest) = value.split_at(HEADER_LEN);
    if head[..2] != MAGIC {
        return fail(format!("bad frame magic {:02x}{:02x}", head[0], head[1]));
    }
    if head[2] != FORMAT_VERSION {
        return fail(format!(
            "frame format version {} (this build reads {FORMAT_VERSION})",
            head[2]
        ));
    }
    if head[3] != kind as u8 {
        return fail(format!(
            "frame kind {} where {} was expected",
            head[3], kind as u8
        ));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len != rest.len() {
        return fail(format!(
            "frame says {len} body bytes but {} are stored",
            rest.len()
        ));
    }
    if checksum(key, &head[..8], rest) != head[8..HEADER_LEN] {
        return fail("checksum mismatch".to_owned());
    }
    Ok(rest)
}

/// MessagePack with named fields (so records can gain fields between versions).
pub(crate) fn to_msgpack<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Decodes a MessagePack body; a failure is a corrupt value at `key`.
pub(crate) fn from_msgpack<'a, T: serde::Deserialize<'a>>(
    tree: &'static str,
    render: impl FnOnce() -> String,
    body: &'a [u8],
) -> Result<T> {
    rmp_serde::from_slice(body)
        .map_err(|e| Error::corrupt(tree, render(), format!("body does not decode: {e}")))
}

/// `#[serde(with = "crate::codec::bytes")]`: a `Vec<u8>` as MessagePack `bin` rather than an
/// array of numbers.
pub(crate) mod bytes {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }

        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> String {
        "k".to_owned()
    }

    #[test]
    fn round_trip_and_every_single_byte_flip_is_detected() {
        let key = b"agent\0\0\0\0\0\0\0\0\x2a";
        let frame = encode(key, Kind::CheckpointState, b"hello world");
        assert_eq!(frame.len(), HEADER_LEN + 11);
        let body = decode("t", key, render, Kind::CheckpointState, &frame).ok();
        assert_eq!(body, Some(&b"hello world"[..]));
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x10;
            let err = decode("t", key, render, Kind::CheckpointState, &bad).err();
            assert!(
                matches!(err, Some(Error::Corrupt { .. })),
                "flip at byte {i} not detected"
            );
        }
    }

    #[test]
    fn wrong_key_wrong_kind_and_truncation_are_corrupt() {
        let frame = encode(b"a", Kind::AgentRecord, b"body");
        assert!(decode("t", b"b", render, Kind::AgentRecord, &frame).is_err());
        assert!(decode("t", b"a", render, Kind::ModuleMeta, &frame).is_err());
        for cut in 0..frame.len() {
            assert!(decode("t", b"a", render, Kind::AgentRecord, &frame[..cut]).is_err());
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decode("t", b"a", render, Kind::AgentRecord, &longer).is_err());
    }

    #[test]
    fn corrupt_error_names_tree_and_key() {
        let err = decode(
            "checkpoints",
            b"x",
            || "kv@7".to_owned(),
            Kind::AgentRecord,
            b"short",
        );
        let err = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.starts_with("corrupt value in tree checkpoints at key kv@7: "),
            "{err}"
        );
    }
}
