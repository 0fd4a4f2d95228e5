//! Dependencies inside `agent/` point one way: the modules (a directory counts as one) form no
//! import circle. Read from the sources, so a new `use` that closes a circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};

/// `agent/`'s modules and their sources (a directory's files together).
fn modules() -> BTreeMap<&'static str, Vec<(&'static str, bool)>> {
    // (source, nested: whether the file is inside the module's directory, where `super::` is
    // the directory itself and `super::super::` is `agent`).
    let top = |s| vec![(s, false)];
    BTreeMap::from([
        (
            "actor",
            vec![
                (include_str!("actor/mod.rs"), false),
                (include_str!("actor/input.rs"), true),
                (include_str!("actor/checkpoint.rs"), true),
                (include_str!("actor/swap.rs"), true),
                (include_str!("actor/completer.rs"), true),
            ],
        ),
        ("agent_ref", top(include_str!("agent_ref.rs"))),
        ("builder", top(include_str!("builder.rs"))),
        ("context", top(include_str!("context.rs"))),
        ("directory", top(include_str!("directory.rs"))),
        ("error", top(include_str!("error.rs"))),
        (
            "journal",
            vec![
                (include_str!("journal/mod.rs"), false),
                (include_str!("journal/store.rs"), true),
                (include_str!("journal/local.rs"), true),
                (include_str!("journal/ephemeral.rs"), true),
            ],
        ),
        ("mirror", top(include_str!("mirror.rs"))),
        ("msg", top(include_str!("msg.rs"))),
        ("recovery", top(include_str!("recovery.rs"))),
        ("registry", top(include_str!("registry.rs"))),
        ("services", top(include_str!("services.rs"))),
        ("spec", top(include_str!("spec.rs"))),
        ("steps", top(include_str!("steps.rs"))),
        ("system", top(include_str!("system.rs"))),
    ])
}

/// The first segment of each path after `prefix` in `code` (`prefix::{a, b::c}` names a and b).
fn named_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        // `super::super::x` also contains `super::x`: count each path once, by its full prefix.
        let rest = &code[at + prefix.len()..];
        if prefix == "super::" && (code[..at].ends_with("super::") || rest.starts_with("super::")) {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c == '{' {
                    item.push(c);
                }
            }
            found.push(ident(&item));
        } else {
            found.push(ident(rest));
        }
    }
    found
}

/// Module → the other `agent/` modules it uses.
fn graph() -> BTreeMap<&'static str, BTreeSet<String>> {
    let modules = modules();
    let names: BTreeSet<&str> = modules.keys().copied().collect();
    let mut graph = BTreeMap::new();
    for (name, sources) in &modules {
        let mut uses = BTreeSet::new();
        for (source, nested) in sources {
            // Comments and doc links name modules without importing them.
            let code: String = source
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut named = named_after(&code, "crate::agent::");
            named.extend(named_after(
                &code,
                if *nested { "super::super::" } else { "super::" },
            ));
            uses.extend(
                named
                    .into_iter()
                    .filter(|used| used != name && names.contains(used.as_str())),
            );
        }
        graph.insert(*name, uses);
    }
    graph
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let code = "use super::{error::{A, B}, journal::Journal};\nlet x = super::spec::X;";
    assert_eq!(named_after(code, "super::"), ["error", "journal", "spec"]);
    assert_eq!(
        named_after("super::super::msg::M", "super::"),
        Vec::<String>::new()
    );
    assert_eq!(
        named_after("super::super::msg::M", "super::super::"),
        ["msg"]
    );
}

#[test]
fn no_import_circle_inside_agent() {
    let graph = graph();
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 10,
        "the scanner found too few imports to judge: {graph:?}"
    );
    // Kahn's algorithm: a module is placed once everything it uses is placed.
    let mut placed: Vec<&str> = Vec::new();
    while placed.len() < graph.len() {
        let next = graph.iter().find(|(name, uses)| {
            !placed.contains(name) && uses.iter().all(|used| placed.contains(&used.as_str()))
        });
        match next {
            Some((name, _)) => placed.push(name),
            None => {
                let circle: BTreeMap<_, _> = graph
                    .iter()
                    .filter(|(name, _)| !placed.contains(name))
                    .collect();
                panic!("an import circle among {circle:#?}");
            }
        }
    }
}
