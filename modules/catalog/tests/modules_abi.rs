//! Every built example module against ABI v1, statically: valid Wasm, exactly the ABI's exports
//! with their types, and imports from `arbor` only — exactly the ones the agent calls. Each
//! kv-hostile variant's patched module is checked as a module of its own.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_modules::{Hostile, MODULES, kv_hostile, module};
use support::{
    ABI_EXPORTS, ABI_IMPORTS, ExportDesc, RUSTC_GLOBALS, Violation, inspect, violations,
};

/// The imports each agent's code calls, and so the only ones its module may import.
const EXPECTED_IMPORTS: &[(&str, &[&str])] = &[
    ("counter", &[]),
    ("kv", &[]),
    ("kv-v2", &[]),
    ("kv-buggy", &[]),
    ("kv-slow", &[]),
    ("kv-placebo", &[]),
    ("kv-badmigrate", &[]),
    ("kv-hostile", &[]),
    ("toolbox", &["log", "send", "now", "random", "call_tool"]),
    ("cache", &[]),
];

/// Every module to check: [`MODULES`], then each kv-hostile variant but `Kv` (which is
/// `KV_HOSTILE`, already in `MODULES`) as `kv-hostile:<name>`.
fn every_module() -> Vec<(String, Vec<u8>)> {
    let listed = MODULES
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()));
    let variants = Hostile::ALL[1..].iter().map(|variant| {
        (
            format!("kv-hostile:{}", variant.name()),
            kv_hostile(*variant),
        )
    });
    listed.chain(variants).collect()
}

fn expected_imports(name: &str) -> &'static [&'static str] {
    let name = name.split(':').next().unwrap_or(name);
    EXPECTED_IMPORTS
        .iter()
        .find(|(agent, _)| *agent == name)
        .map(|(_, imports)| *imports)
        .unwrap_or_else(|| panic!("{name} has no expected imports listed"))
}

#[test]
fn every_module_is_listed_once_and_found_by_name() {
    let names: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
    let expected: Vec<&str> = EXPECTED_IMPORTS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected);
    for (name, bytes) in MODULES {
        assert_eq!(module(name), Some(*bytes));
    }
    assert_eq!(module("nope"), None);
}

#[test]
fn every_module_passes_the_load_checks_with_its_grants() {
    for (name, bytes) in every_module() {
        assert_eq!(violations(&bytes, expected_imports(&name)), [], "{name}");
    }
}

#[test]
fn exports_are_exactly_the_abi_and_rustcs_two_globals() {
    for (name, bytes) in every_module() {
        let exports = inspect(&bytes).unwrap().exports;
        let mut expected: Vec<&str> = ABI_EXPORTS.iter().map(|(export, ..)| *export).collect();
        expected.push("memory");
        expected.extend(RUSTC_GLOBALS);
        expected.sort_unstable();
        let actual: Vec<&str> = exports.keys().map(String::as_str).collect();
        assert_eq!(actual, expected, "{name}");
        for global in RUSTC_GLOBALS {
            assert_eq!(exports[*global], ExportDesc::Global, "{name}: {global}");
        }
    }
}

/// The SDK declares all five imports in one extern block; the linker must keep only those the
/// agent calls, because each import is a capability the host must grant.
#[test]
fn modules_import_only_what_their_agent_calls() {
    for (name, bytes) in every_module() {
        let imports = inspect(&bytes).unwrap().imports;
        let mut actual: Vec<&str> = imports
            .iter()
            .map(|(_, import, _)| import.as_str())
            .collect();
        let mut expected = expected_imports(&name).to_vec();
        actual.sort_unstable();
        expected.sort_unstable();
        assert_eq!(actual, expected, "{name}");
        assert!(
            imports.iter().all(|(module, ..)| module == "arbor"),
            "{name}"
        );
    }
}

#[test]
fn toolbox_without_grants_is_refused_for_each_import() {
    let refused: Vec<Violation> = violations(arbor_modules::TOOLBOX, &[]);
    let mut names: Vec<String> = refused
        .into_iter()
        .map(|violation| match violation {
            Violation::Ungranted(import) => import,
            other => panic!("unexpected {other}"),
        })
        .collect();
    names.sort_unstable();
    let mut all: Vec<&str> = ABI_IMPORTS.iter().map(|(import, ..)| *import).collect();
    all.sort_unstable();
    assert_eq!(names, all);
}

#[test]
fn abi_version_is_the_constant_one() {
    for (name, bytes) in every_module() {
        let bodies = inspect(&bytes).unwrap().bodies;
        assert_eq!(
            bodies["arbor_abi_version"],
            ["I32Const { value: 1 }", "End"],
            "{name}"
        );
    }
}

#[test]
fn every_module_has_distinct_bytes() {
    // kv-placebo exists to be a different build of kv's behaviour, and each kv-hostile variant
    // a candidate of its own: same bytes (the same content hash) would defeat them.
    let modules = every_module();
    assert_eq!(modules.len(), MODULES.len() + Hostile::ALL.len() - 1);
    for (i, (a, a_bytes)) in modules.iter().enumerate() {
        for (b, b_bytes) in &modules[i + 1..] {
            assert_ne!(a_bytes, b_bytes, "{a} and {b}");
        }
    }
}

#[test]
fn modules_stay_small() {
    for (name, bytes) in every_module() {
        assert!(bytes.len() < 400 * 1024, "{name} is {} bytes", bytes.len());
    }
}
