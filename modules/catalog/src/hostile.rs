//! kv-hostile's variants: [`Hostile`] names them, [`kv_hostile`] makes each one's module by
//! patching the variant byte of [`KV_HOSTILE`](crate::KV_HOSTILE).

use crate::KV_HOSTILE;

// KV_HOSTILE_MARKER and KV_HOSTILE_VARIANT_OFFSET, found in the built module by build.rs, which
// fails unless the marker occurs exactly once.
include!(concat!(env!("OUT_DIR"), "/kv_hostile_marker.rs"));

/// One deliberately defective kv candidate that [`kv_hostile`] builds, for testing that the
/// evolution arbiter rejects what it must (all but [`Hostile::Kv`]). The discriminant is the
/// variant byte the guest reads (`modules/guest/agents/kv-hostile`, whose crate docs have the
/// same list).
///
/// Each speaks kv's protocol ([`crate::kv`]) and answers exactly like [`KV`](crate::KV) except
/// for the defect stated; every defect is deterministic (no randomness, no clock). The state
/// layout is kv's bare map unless stated. None imports anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Hostile {
    /// Nothing wrong: kv's answers, state bytes and fuel, as a different module. The arbiter
    /// must find it neither better nor worse.
    ///
    /// Every variant, this one included, costs some 175 fuel a message more than kv (reading
    /// its byte, dispatching): under 3 % of kv's cheapest message, 0.4 % of a mixed workload.
    Kv = 0,
    /// kv-v2's state layout, `{"version": 2, "entries": {...}}`, and kv's answers. Restoring
    /// kv's state (a migration) silently drops every entry whose value is longer than 16 bytes;
    /// restoring its own layout keeps everything. After that it answers every input correctly
    /// for the entries it kept: only the migration loses data.
    LossyLongValues = 1,
    /// As [`Hostile::LossyLongValues`], but the migration drops every entry whose key's
    /// [`fnv1a`](crate::fnv1a) hash is divisible by 3 (about a third of keys), whatever the
    /// value.
    LossyKeys = 2,
    /// `Get` of a key starting with `zz` answers `{"Value": {"value": nil}}` even when the key is
    /// present: wrong on every such `Get` of a present key, and nowhere else.
    RarePrefix = 3,
    /// Traps (a guest panic) on a `Put` whose key and value, hashed as one string
    /// (`fnv1a(&format!("{key}{value}"))`), hash to a multiple of 500: about 1 `Put` in 500.
    /// The trapping `Put` is not applied.
    RareTrap = 4,
    /// Every `Scan` first runs a busy loop whose result nothing sees, sized by the store: about
    /// +30 % of kv's fuel for that `Scan` (+28 % to +32 % measured over 100 to 3,000 keys in
    /// `tests/hostile_run.rs`). Other messages cost what kv's do.
    CostlyScan = 5,
    /// An input whose key (a `Scan`'s prefix) has an [`fnv1a`](crate::fnv1a) hash divisible by
    /// 10 — about 1 input in 10 — costs about 10x kv's fuel for it (a `Get` redoes kv's walk 9
    /// times; every kind burns a busy loop sized by kv's cost; 8.7x to 12.3x by kind, measured over
    /// 100 to 3,000 keys). Per input the mean cost is about +85 %, the median unchanged;
    /// nothing allocates, so other inputs cost exactly what they cost under kv.
    Spiky = 6,
    /// On its first message after instantiation it grows its linear memory to 96 MiB in one
    /// `memory.grow`. If the host allows it (a production-sized cap), every `Get` answers nil
    /// from then on; if the cap refuses it, nothing changes and it is kv. The pages are never
    /// touched, so they cost no resident memory.
    MemoryProbe = 7,
    /// kv for the first 3,000 messages an instance handles, then every `Get` answers nil. The
    /// count lives in the instance, not the state: a fresh instance starts again at 0, restored
    /// or not.
    Aging = 8,
    /// Every reply wrong, with the right type: `Get` answers `"wrong"` (nil if the value is
    /// `"wrong"`), `Put` `!replaced`, `Delete` `!existed`, `Scan` no entries (one invented
    /// entry, key = the prefix, value `"wrong"`, where kv's answer is empty). The state evolves
    /// exactly as kv's, so comparing states alone would pass it.
    AllWrong = 9,
}

impl Hostile {
    /// Every variant, in byte order.
    pub const ALL: [Hostile; 10] = [
        Hostile::Kv,
        Hostile::LossyLongValues,
        Hostile::LossyKeys,
        Hostile::RarePrefix,
        Hostile::RareTrap,
        Hostile::CostlyScan,
        Hostile::Spiky,
        Hostile::MemoryProbe,
        Hostile::Aging,
        Hostile::AllWrong,
    ];

    /// A short kebab-case name, e.g. `"lossy-long-values"`, for agent names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Hostile::Kv => "kv",
            Hostile::LossyLongValues => "lossy-long-values",
            Hostile::LossyKeys => "lossy-keys",
            Hostile::RarePrefix => "rare-prefix",
            Hostile::RareTrap => "rare-trap",
            Hostile::CostlyScan => "costly-scan",
            Hostile::Spiky => "spiky",
            Hostile::MemoryProbe => "memory-probe",
            Hostile::Aging => "aging",
            Hostile::AllWrong => "all-wrong",
        }
    }
}

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

    #[test]
    fn all_is_in_byte_order_with_distinct_names() {
        for (index, variant) in Hostile::ALL.iter().enumerate() {
            assert_eq!(usize::from(*variant as u8), index);
        }
        let mut names: Vec<&str> = Hostile::ALL.iter().map(|v| v.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Hostile::ALL.len());
    }
}
