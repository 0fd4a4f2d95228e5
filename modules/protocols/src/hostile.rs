//! kv-hostile's defects: [`Hostile`] names each one by the variant byte the guest reads, and
//! [`MARKER`] is the text around that byte, which the host finds in the built module and patches
//! (`arbor_modules::kv_hostile`).

/// kv-hostile's variant marker as built: 31 bytes of ASCII no other module contains, then the
/// variant byte, 0 ([`Hostile::Kv`]) as built. The guest keeps it in its data; only the last
/// byte ever changes.
pub const MARKER: [u8; 32] = *b"arbor-kv-hostile-variant-marker\0";

/// One deliberately defective kv candidate, for testing that the evolution arbiter rejects what
/// it must (all but [`Hostile::Kv`]). The discriminant is the variant byte.
///
/// Each speaks kv's protocol ([`crate::kv`]) and answers exactly like kv except for the defect
/// stated; every defect is deterministic (no randomness, no clock). The state layout is kv's
/// bare map unless stated. None imports anything.
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
    /// `modules/catalog/tests/hostile_run.rs`). Other messages cost what kv's do.
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
    /// Every variant, in byte order (`ALL[b]` has byte `b`).
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

    /// The variant with byte `byte`, if there is one.
    pub fn from_byte(byte: u8) -> Option<Hostile> {
        Hostile::ALL.get(usize::from(byte)).copied()
    }

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

    /// Whether its state is kv-v2's layout, `{"version": 2, "entries": {...}}`, rather than kv's
    /// bare map.
    pub fn has_v2_layout(self) -> bool {
        matches!(self, Hostile::LossyLongValues | Hostile::LossyKeys)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    #[test]
    fn all_is_in_byte_order_and_from_byte_inverts_it() {
        for (index, variant) in Hostile::ALL.iter().enumerate() {
            assert_eq!(usize::from(*variant as u8), index);
            assert_eq!(Hostile::from_byte(*variant as u8), Some(*variant));
        }
        assert_eq!(Hostile::from_byte(10), None);
        assert_eq!(Hostile::from_byte(u8::MAX), None);
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

    #[test]
    fn the_marker_ends_in_the_variant_byte_of_kv() {
        assert_eq!(&MARKER[..31], b"arbor-kv-hostile-variant-marker");
        assert_eq!(MARKER[31], Hostile::Kv as u8);
    }
}
