//! Module bytes rewritten without touching code: a module with other parameters (its
//! `arbor:params` section replaced) and a placebo (a module that differs from its original only
//! in a section no engine reads, so it must behave exactly the same).

use arbor_agent::wasm::{PARAMS_SECTION, TUNABLES_SECTION, custom_sections};
use wasm_encoder::{CustomSection, Module, RawSection};
use wasmparser::{Parser, Payload};

use crate::error::EvolveError;
use crate::tunable::{Params, Space};

/// The custom section a placebo carries.
pub const PLACEBO_SECTION: &str = "arbor:placebo";

/// The space `module` declares in its `arbor:tunables` section.
///
/// ```
/// let space = arbor_evolve::space_of(arbor_modules::CACHE)?;
/// assert!(space.tunables().iter().any(|t| t.name == "capacity"));
/// assert!(arbor_evolve::space_of(arbor_modules::KV).is_err());
/// # Ok::<(), arbor_evolve::EvolveError>(())
/// ```
pub fn space_of(module: &[u8]) -> Result<Space, EvolveError> {
    match sections(module, TUNABLES_SECTION)?.as_slice() {
        [json] => Space::parse(json),
        [] => Err(EvolveError::BadModule(format!(
            "no `{TUNABLES_SECTION}` section: the module declares nothing to tune"
        ))),
        more => Err(EvolveError::BadModule(format!(
            "{} `{TUNABLES_SECTION}` sections",
            more.len()
        ))),
    }
}

/// The parameters `module` carries (none: the module's defaults).
pub fn params_of(module: &[u8]) -> Result<Option<Params>, EvolveError> {
    match sections(module, PARAMS_SECTION)?.as_slice() {
        [] => Ok(None),
        [bytes] => Params::decode(bytes).map(Some),
        more => Err(EvolveError::BadModule(format!(
            "{} `{PARAMS_SECTION}` sections",
            more.len()
        ))),
    }
}

/// `module` with `params` as its parameters, checked against the space it declares: its
/// `arbor:params` section replaced (or added), every other byte of every other section kept.
pub fn with_params(module: &[u8], params: &Params) -> Result<Vec<u8>, EvolveError> {
    space_of(module)?.check(params)?;
    rewrite(module, PARAMS_SECTION, &params.encode())
}

/// A placebo of `module`: the same code and data, with an `arbor:placebo` section holding
/// `nonce`, so its content hash differs and the arbiter must judge it as a new candidate that
/// should pass.
pub fn placebo(module: &[u8], nonce: u64) -> Result<Vec<u8>, EvolveError> {
    rewrite(module, PLACEBO_SECTION, &nonce.to_le_bytes())
}

fn sections(module: &[u8], name: &str) -> Result<Vec<Vec<u8>>, EvolveError> {
    custom_sections(module, name).map_err(|e| EvolveError::BadModule(e.to_string()))
}

/// Copies every section of `module` but the custom ones called `name`, then appends one
/// called `name` holding `data`.
fn rewrite(module: &[u8], name: &str, data: &[u8]) -> Result<Vec<u8>, EvolveError> {
    let bad = |e: wasmparser::BinaryReaderError| EvolveError::BadModule(e.to_string());
    let mut out = Module::new();
    let mut saw_header = false;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(bad)?;
        match payload {
            Payload::Version { encoding, .. } => {
                if encoding != wasmparser::Encoding::Module {
                    return Err(EvolveError::BadModule("a component, not a module".into()));
                }
                saw_header = true;
            }
            Payload::CustomSection(section) if section.name() == name => {}
            Payload::End(_) => {}
            // A function body is part of the code section, copied whole below.
            Payload::CodeSectionEntry(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection {
                        id,
                        data: &module[range],
                    });
                }
            }
        }
    }
    if !saw_header {
        return Err(EvolveError::BadModule("no module header".into()));
    }
    out.section(&CustomSection {
        name: name.into(),
        data: data.into(),
    });
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arbor_modules::{CACHE, KV};

    use super::*;
    use crate::tunable::Value;

    fn params(capacity: i64) -> Params {
        let mut params = Params::default();
        params.0.insert("capacity".into(), Value::Int(capacity));
        params
            .0
            .insert("policy".into(), Value::Choice("lru".into()));
        params.0.insert("admit_after".into(), Value::Int(1));
        params
    }

    #[test]
    fn parameters_replace_the_section_and_keep_the_rest() {
        assert_eq!(params_of(CACHE).unwrap(), None);
        let once = with_params(CACHE, &params(8)).unwrap();
        let twice = with_params(&once, &params(16)).unwrap();
        assert_eq!(params_of(&twice).unwrap(), Some(params(16)));
        assert_eq!(sections(&twice, PARAMS_SECTION).unwrap().len(), 1);
        assert_eq!(with_params(&once, &params(16)).unwrap(), twice);
        assert_eq!(space_of(&twice).unwrap(), space_of(CACHE).unwrap());
        wasmparser::validate(&twice).unwrap();
        // Everything but the section is the original, in order.
        assert_eq!(&twice[..CACHE.len()], CACHE);
    }

    #[test]
    fn parameters_outside_the_space_or_for_a_module_without_one_are_refused() {
        assert!(matches!(
            with_params(CACHE, &params(100_000)),
            Err(EvolveError::BadParams(_))
        ));
        assert!(matches!(
            with_params(KV, &params(8)),
            Err(EvolveError::BadModule(_))
        ));
        assert!(matches!(
            with_params(b"\0asm\x01\0\0\0\x07", &params(8)),
            Err(EvolveError::BadModule(_))
        ));
        assert!(with_params(b"not wasm", &params(8)).is_err());
    }

    #[test]
    fn a_placebo_differs_only_in_its_section() {
        let one = placebo(KV, 1).unwrap();
        let two = placebo(&one, 2).unwrap();
        assert_ne!(one, two);
        assert_eq!(&two[..KV.len()], KV);
        wasmparser::validate(&two).unwrap();
        assert_eq!(
            sections(&two, PLACEBO_SECTION).unwrap(),
            vec![2u64.to_le_bytes().to_vec()]
        );
    }
}
