//! Which defect a build of this crate has: the [`Variant`] enum and the marker the host patches.
//!
//! The module carries the 32 bytes `arbor-kv-hostile-variant-marker\0` in its data: 31 bytes of
//! ASCII no other module contains, then the variant byte, 0 as built. The host
//! (`arbor_modules::kv_hostile`) finds that text in the compiled module and overwrites the last
//! byte, so one build yields a distinct module per variant. The catalog's build refuses a module
//! in which the text does not occur exactly once.

/// The marker; only its last byte ever changes. Read only through [`marked_byte`].
static VARIANT_MARKER: [u8; 32] = *b"arbor-kv-hostile-variant-marker\x00";

/// The variant byte as it is in this module's memory: 0 as built, whatever the host patched in.
pub fn marked_byte() -> u8 {
    // The optimiser cannot see through `black_box`, so any byte of the marker might be read
    // here: the whole text stays in the module's data, for the host to find.
    let marker = std::hint::black_box(&raw const VARIANT_MARKER).cast::<u8>();
    // SAFETY: `black_box` returns its argument, so `marker` points at the immutable static,
    // which is initialised and 32 bytes long; byte 31 is in bounds and a `u8` needs no
    // alignment. Volatile because the host rewrites the byte after compilation: the compiler
    // must not fold in the 0 it sees.
    unsafe { core::ptr::read_volatile(marker.add(VARIANT_MARKER.len() - 1)) }
}

/// One deliberately defective behaviour; the discriminant is the variant byte. The crate docs
/// state each defect and how often it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Variant {
    /// kv exactly: same answers, state and (roughly) fuel. A placebo.
    Kv = 0,
    /// kv-v2's layout; migrating kv's state drops entries whose value is longer than 16 bytes.
    LossyLongValues = 1,
    /// kv-v2's layout; migrating kv's state drops entries whose key's FNV-1a hash is divisible
    /// by 3.
    LossyKeys = 2,
    /// `Get` of a key starting with `zz` answers nil.
    RarePrefix = 3,
    /// Traps on a `Put` whose key-then-value FNV-1a hash is divisible by 500.
    RareTrap = 4,
    /// Every `Scan` costs about 30 % more fuel.
    CostlyScan = 5,
    /// Inputs whose key (or `Scan` prefix) hashes to 0 mod 10 cost about 10x the fuel.
    Spiky = 6,
    /// Probes for a memory cap of at least 96 MiB; where it gets that much, every `Get` answers
    /// nil.
    MemoryProbe = 7,
    /// After 3,000 messages in one instance, every `Get` answers nil.
    Aging = 8,
    /// Every reply is wrong, in a type-correct way; the state is kv's.
    AllWrong = 9,
}

impl Variant {
    /// Every variant, in byte order (`ALL[b]` has byte `b`).
    pub const ALL: [Variant; 10] = [
        Variant::Kv,
        Variant::LossyLongValues,
        Variant::LossyKeys,
        Variant::RarePrefix,
        Variant::RareTrap,
        Variant::CostlyScan,
        Variant::Spiky,
        Variant::MemoryProbe,
        Variant::Aging,
        Variant::AllWrong,
    ];

    /// The variant with byte `byte`, if there is one.
    pub fn from_byte(byte: u8) -> Option<Variant> {
        Variant::ALL.get(usize::from(byte)).copied()
    }

    /// The variant this module was patched to be; `Err` names a byte no variant has (the host's
    /// list and this build disagree).
    pub fn marked() -> Result<Variant, String> {
        let byte = marked_byte();
        Variant::from_byte(byte).ok_or_else(|| {
            format!(
                "kv-hostile: variant byte {byte} is unknown (this build has {} variants)",
                Variant::ALL.len()
            )
        })
    }

    /// Whether its state is kv-v2's layout, `{"version": 2, "entries": {...}}`, rather than kv's
    /// bare map.
    pub fn has_v2_layout(self) -> bool {
        matches!(self, Variant::LossyLongValues | Variant::LossyKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_byte_order_and_from_byte_inverts_it() {
        for (index, variant) in Variant::ALL.iter().enumerate() {
            assert_eq!(usize::from(*variant as u8), index);
            assert_eq!(Variant::from_byte(*variant as u8), Some(*variant));
        }
        assert_eq!(Variant::from_byte(10), None);
        assert_eq!(Variant::from_byte(u8::MAX), None);
    }

    #[test]
    fn an_unpatched_build_is_kv() {
        assert_eq!(marked_byte(), 0);
        assert_eq!(Variant::marked(), Ok(Variant::Kv));
    }
}
