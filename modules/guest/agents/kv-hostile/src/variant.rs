//! Which defect a build of this crate has: the [`Variant`] the module's marker names.
//!
//! The module carries the 32 bytes `arbor-kv-hostile-variant-marker\0`
//! (`arbor_protocols::hostile::MARKER`) in its data: 31 bytes of ASCII no other module contains,
//! then the variant byte, 0 as built. The host (`arbor_modules::kv_hostile`) finds that text in
//! the compiled module and overwrites the last byte, so one build yields a distinct module per
//! variant. The catalog's build refuses a module in which the text does not occur exactly once.

/// One deliberately defective behaviour; the discriminant is the variant byte. The list is
/// `arbor-protocols`' `Hostile`, shared with the host, which patches the byte; the crate docs
/// state each defect and how often it shows.
pub use arbor_protocols::hostile::Hostile as Variant;
use arbor_protocols::hostile::MARKER;

/// The marker; only its last byte ever changes. Read only through [`marked_byte`].
static VARIANT_MARKER: [u8; 32] = MARKER;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpatched_build_is_kv() {
        assert_eq!(marked_byte(), 0);
        assert_eq!(marked(), Ok(Variant::Kv));
    }
}
