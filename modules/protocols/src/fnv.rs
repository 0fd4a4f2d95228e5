//! 64-bit FNV-1a, the hash by which the test variants (kv-buggy, several kv-hostile defects) pick
//! the inputs they get wrong, so that host tests can predict them.

/// FNV-1a's 64-bit offset basis: the hash of no bytes, where [`fnv1a_extend`] starts.
pub const FNV1A_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `key`'s UTF-8 bytes.
///
/// ```
/// assert_eq!(arbor_protocols::fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(key: &str) -> u64 {
    fnv1a_extend(FNV1A_OFFSET, key.as_bytes())
}

/// Continues a 64-bit FNV-1a `hash` over `bytes`: hashing `a` then `b` gives the hash of their
/// concatenation, without building it.
pub fn fnv1a_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fnv1a_extend_continues_over_a_concatenation() {
        assert_eq!(fnv1a_extend(fnv1a("foo"), b"bar"), fnv1a("foobar"));
        assert_eq!(fnv1a_extend(fnv1a("foobar"), b""), fnv1a("foobar"));
    }
}
