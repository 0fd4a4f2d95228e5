//! A static checker for ABI v1 (`modules/ABI.md`), written against wasmparser so the tests do not
//! need a Wasm engine: what a module exports and imports, with which types, and what its exported
//! functions' bodies contain.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use wasmparser::{
    CompositeInnerType, ExternalKind, FuncType, Operator, Parser, Payload, TypeRef, ValType,
    Validator, WasmFeatures,
};

/// Whether the host refuses a module without the export.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// ABI v1's function exports: name, params, results, need. (`memory` is checked separately.)
pub const ABI_EXPORTS: &[(&str, &[ValType], &[ValType], Need)] = &[
    ("arbor_abi_version", &[], &[ValType::I32], Need::Required),
    (
        "arbor_alloc",
        &[ValType::I32],
        &[ValType::I32],
        Need::Required,
    ),
    (
        "arbor_init",
        &[ValType::I32, ValType::I32],
        &[ValType::I32],
        Need::Required,
    ),
    (
        "arbor_handle",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
        Need::Required,
    ),
    ("arbor_snapshot", &[], &[ValType::I64], Need::Required),
    (
        "arbor_restore",
        &[ValType::I32, ValType::I32],
        &[ValType::I32],
        Need::Required,
    ),
    ("arbor_last_error", &[], &[ValType::I64], Need::Optional),
    (
        "arbor_configure",
        &[ValType::I32, ValType::I32],
        &[ValType::I32],
        Need::Optional,
    ),
];

/// ABI v1's imports, all from module `arbor`: name, params, results.
pub const ABI_IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("log", &[ValType::I32, ValType::I32, ValType::I32], &[]),
    (
        "send",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
    ("now", &[], &[ValType::I64]),
    ("random", &[], &[ValType::I64]),
    (
        "call_tool",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[ValType::I64],
    ),
];

/// The globals rustc's wasm-ld invocation exports from every wasm32-unknown-unknown module.
pub const RUSTC_GLOBALS: &[&str] = &["__data_end", "__heap_base"];

/// One way a module breaks ABI v1, as a host would find at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// wasmparser's validator refuses it.
    Invalid(String),
    /// A required export is absent (or is not a function / memory).
    MissingExport(String),
    /// An ABI export has another type.
    WrongType { export: String, found: String },
    /// An import from a module other than `arbor`.
    ForeignImport { module: String, name: String },
    /// An `arbor` import the ABI does not define.
    UnknownImport(String),
    /// An ABI import with another type.
    WrongImportType { import: String, found: String },
    /// An ABI import the agent was not granted.
    Ungranted(String),
    /// `arbor_abi_version`'s body is the constant given, not 1.
    AbiVersion(i32),
}

/// What a module exports and imports, and the operators of its exported functions.
pub struct Inspection {
    /// Export name → kind (and the type, for functions).
    pub exports: BTreeMap<String, ExportDesc>,
    /// (module, name, type if it is a function).
    pub imports: Vec<(String, String, Option<FuncType>)>,
    /// Exported function name → its body's operators, `Debug`-formatted.
    pub bodies: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportDesc {
    Func(FuncType),
    Memory,
    Global,
    Other(String),
}

fn signature(ty: &FuncType) -> String {
    format!("{:?} -> {:?}", ty.params(), ty.results())
}

/// Validates and inspects `bytes`; `Err` with the validator's message if it is not valid Wasm.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, String> {
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(|err| err.to_string())?;

    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new(); // type index per function, imports first
    let mut imports = Vec::new();
    let mut raw_exports = Vec::new();
    let mut bodies_by_index: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut imported_funcs = 0;
    let mut next_body = 0;

    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|err| err.to_string())? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(|err| err.to_string())?.into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(func) => Some(func),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|err| err.to_string())?;
                    let func = match import.ty {
                        TypeRef::Func(index) => {
                            func_types.push(index);
                            imported_funcs += 1;
                            types.get(index as usize).cloned().flatten()
                        }
                        _ => None,
                    };
                    imports.push((import.module.to_string(), import.name.to_string(), func));
                }
            }
            Payload::FunctionSection(reader) => {
                for index in reader {
                    func_types.push(index.map_err(|err| err.to_string())?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|err| err.to_string())?;
                    raw_exports.push((export.name.to_string(), export.kind, export.index));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = Vec::new();
                for op in body.get_operators_reader().map_err(|err| err.to_string())? {
                    let op: Operator<'_> = op.map_err(|err| err.to_string())?;
                    ops.push(format!("{op:?}"));
                }
                bodies_by_index.insert(imported_funcs + next_body, ops);
                next_body += 1;
            }
            _ => {}
        }
    }

    let mut exports = BTreeMap::new();
    let mut bodies = BTreeMap::new();
    for (name, kind, index) in raw_exports {
        let desc = match kind {
            ExternalKind::Func => {
                let ty = func_types
                    .get(index as usize)
                    .and_then(|ty| types.get(*ty as usize).cloned().flatten())
                    .ok_or_else(|| format!("export {name}: no type"))?;
                if let Some(ops) = bodies_by_index.get(&index) {
                    bodies.insert(name.clone(), ops.clone());
                }
                ExportDesc::Func(ty)
            }
            ExternalKind::Memory => ExportDesc::Memory,
            ExternalKind::Global => ExportDesc::Global,
            other => ExportDesc::Other(format!("{other:?}")),
        };
        exports.insert(name, desc);
    }
    Ok(Inspection {
        exports,
        imports,
        bodies,
    })
}

/// Everything a host would refuse `bytes` for, given the imports the agent is granted.
pub fn violations(bytes: &[u8], granted: &[&str]) -> Vec<Violation> {
    let module = match inspect(bytes) {
        Ok(module) => module,
        Err(err) => return vec![Violation::Invalid(err)],
    };
    let mut found = Vec::new();
    if module.exports.get("memory") != Some(&ExportDesc::Memory) {
        found.push(Violation::MissingExport("memory".into()));
    }
    for (name, params, results, need) in ABI_EXPORTS {
        match module.exports.get(*name) {
            None if *need == Need::Optional => {}
            Some(ExportDesc::Func(ty)) if ty.params() == *params && ty.results() == *results => {}
            Some(ExportDesc::Func(ty)) => found.push(Violation::WrongType {
                export: name.to_string(),
                found: signature(ty),
            }),
            _ => found.push(Violation::MissingExport(name.to_string())),
        }
    }
    if let Some(ops) = module.bodies.get("arbor_abi_version")
        && let [only, end] = ops.as_slice()
        && end == "End"
        && let Some(value) = only
            .strip_prefix("I32Const { value: ")
            .and_then(|rest| rest.strip_suffix(" }"))
        && let Ok(value) = value.parse::<i32>()
        && value != 1
    {
        found.push(Violation::AbiVersion(value));
    }
    for (module_name, name, ty) in &module.imports {
        if module_name != "arbor" {
            found.push(Violation::ForeignImport {
                module: module_name.clone(),
                name: name.clone(),
            });
            continue;
        }
        let Some((_, params, results)) = ABI_IMPORTS.iter().find(|(abi_name, ..)| abi_name == name)
        else {
            found.push(Violation::UnknownImport(name.clone()));
            continue;
        };
        match ty {
            Some(ty) if ty.params() == *params && ty.results() == *results => {}
            other => found.push(Violation::WrongImportType {
                import: name.clone(),
                found: other
                    .as_ref()
                    .map_or_else(|| "not a function".into(), signature),
            }),
        }
        if !granted.contains(&name.as_str()) {
            found.push(Violation::Ungranted(name.clone()));
        }
    }
    found
}

/// What `arbor_handle` does wrong at run time, judged from its body alone (for the hand-written
/// fixtures; a compiled agent's body is too varied for this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeDefect {
    /// An empty `loop` that branches to itself.
    InfiniteLoop,
    /// Calls `memory.grow`.
    MemoryBomb,
    /// Starts with `unreachable`.
    Trap,
}

pub fn runtime_defect(bytes: &[u8]) -> Option<RuntimeDefect> {
    let module = inspect(bytes).ok()?;
    let ops = module.bodies.get("arbor_handle")?;
    if ops.iter().any(|op| op.starts_with("MemoryGrow")) {
        return Some(RuntimeDefect::MemoryBomb);
    }
    if ops.first().is_some_and(|op| op == "Unreachable") {
        return Some(RuntimeDefect::Trap);
    }
    let spins = ops
        .windows(3)
        .any(|w| w[0].starts_with("Loop") && w[1] == "Br { relative_depth: 0 }" && w[2] == "End");
    spins.then_some(RuntimeDefect::InfiniteLoop)
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
