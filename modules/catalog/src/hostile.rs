//! kv-hostile's variants: [`Hostile`] names them (the guest's own list, from `arbor-protocols`),
//! [`kv_hostile`] makes each one's module by patching the variant byte of
//! [`KV_HOSTILE`](crate::KV_HOSTILE).

pub use arbor_protocols::hostile::Hostile;

use crate::KV_HOSTILE;

// KV_HOSTILE_MARKER and KV_HOSTILE_VARIANT_OFFSET, found in the built module by build.rs, which
// fails unless the marker occurs exactly once.
include!(concat!(env!("OUT_DIR"), "/kv_hostile_marker.rs"));

/// The module of `variant`: [`KV_HOSTILE`](crate::KV_HOSTILE) with its variant byte patched.
/// Each variant's bytes (and so its content hash) differ from every other's and from every
/// other module's; `kv_hostile(Hostile::Kv)` is `KV_HOSTILE` itself.
///
/// Infallible: the build located the marker, exactly once, in these very bytes.
pub fn kv_hostile(variant: Hostile) -> Vec<u8> {
    let mut bytes = KV_HOSTILE.to_vec();
    debug_assert_eq!(
        bytes.get(
            KV_HOSTILE_VARIANT_OFFSET + 1 - KV_HOSTILE_MARKER.len()..=KV_HOSTILE_VARIANT_OFFSET
        ),
        Some(&KV_HOSTILE_MARKER[..])
    );
    if let Some(byte) = bytes.get_mut(KV_HOSTILE_VARIANT_OFFSET) {
        *byte = variant as u8;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
        haystack
            .windows(needle.len())
            .enumerate()
            .filter(|(_, window)| *window == needle)
            .map(|(start, _)| start)
            .collect()
    }

    #[test]
    fn the_marker_occurs_exactly_once_where_the_build_found_it() {
        assert_eq!(&KV_HOSTILE_MARKER[..31], b"arbor-kv-hostile-variant-marker");
        assert_eq!(KV_HOSTILE_MARKER[31], Hostile::Kv as u8);
        assert_eq!(
            occurrences(KV_HOSTILE, &KV_HOSTILE_MARKER),
            [KV_HOSTILE_VARIANT_OFFSET + 1 - KV_HOSTILE_MARKER.len()]
        );
        // The text without its variant byte, too: nothing else looks like the marker.
        assert_eq!(occurrences(KV_HOSTILE, &KV_HOSTILE_MARKER[..31]).len(), 1);
    }

    #[test]
    fn the_build_looked_for_the_marker_the_guest_keeps() {
        // build.rs keeps its own copy (a build script would have to compile serde to use the
        // protocols crate); this is where the two must agree.
        assert_eq!(KV_HOSTILE_MARKER, arbor_protocols::hostile::MARKER);
    }

    #[test]
    fn each_variant_differs_from_the_build_in_its_byte_only() {
        assert_eq!(kv_hostile(Hostile::Kv), KV_HOSTILE);
        for variant in Hostile::ALL {
            let bytes = kv_hostile(variant);
            let differ: Vec<usize> = (0..bytes.len())
                .filter(|&at| bytes[at] != KV_HOSTILE[at])
                .collect();
            if variant == Hostile::Kv {
                assert_eq!(differ, [] as [usize; 0]);
            } else {
                assert_eq!(differ, [KV_HOSTILE_VARIANT_OFFSET], "{variant:?}");
            }
            assert_eq!(bytes[KV_HOSTILE_VARIANT_OFFSET], variant as u8);
        }
    }
}
