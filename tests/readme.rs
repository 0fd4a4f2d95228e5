//! The README stays true: its embedding example is `examples/hello.rs` verbatim (which `cargo
//! test` compiles), its agent example is the SDK's doctested one, its test command is the one
//! `.ci/run` runs, and the files and commands it names exist.
#![allow(clippy::unwrap_used)]

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// The fenced code blocks of `markdown` with their info string.
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_embedding_example_is_examples_hello_rs() {
    let readme = read("README.md");
    let hello = read("examples/hello.rs");
    let body = &hello[hello.find("use arbor::").unwrap()..];
    assert!(
        code_blocks(&readme)
            .iter()
            .any(|(info, block)| info == "rust" && block == body),
        "README.md's embedding block differs from examples/hello.rs (from `use arbor::` on)"
    );
}

#[test]
fn the_agent_example_is_the_sdks_doctested_one() {
    let readme = read("README.md");
    // The SDK's crate-level example without its hidden (`# `) lines.
    let sdk_doc: String = read("modules/guest/sdk/src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let sdk_example: String = code_blocks(&sdk_doc)
        .into_iter()
        .find(|(_, block)| block.contains("export_agent!"))
        .expect("the SDK's docs have an agent example")
        .1
        .lines()
        .filter(|line| !line.starts_with("# ") && *line != "#")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        code_blocks(&readme)
            .iter()
            .any(|(info, block)| info == "rust" && *block == sdk_example),
        "README.md's agent example differs from the SDK's doctested one (modules/guest/sdk/src/lib.rs)"
    );
}

#[test]
fn the_quick_start_commands_are_what_ci_runs() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    let blocks = code_blocks(&readme);
    let quick_start: Vec<&str> = blocks
        .iter()
        .filter(|(info, _)| info == "sh")
        .flat_map(|(_, block)| block.lines())
        .collect();
    assert!(
        quick_start
            .iter()
            .any(|line| line.starts_with("cargo run --release --example demo")),
        "the quick start runs the demo"
    );
    assert!(Path::new(ROOT).join("examples/demo.rs").is_file());
    assert!(
        quick_start
            .iter()
            .any(|line| line.starts_with("bash .ci/run")),
        "the quick start runs the tests through .ci/run"
    );
    // The test command the README gives, split at `&&`, is run by CI line by line.
    let test_line = quick_start
        .iter()
        .find(|line| line.starts_with("cargo test"))
        .expect("the README gives the test command");
    for command in test_line.split("&&").map(str::trim) {
        assert!(
            ci.lines().any(|line| line.trim() == command),
            ".ci/run does not run the README's `{command}`"
        );
    }
}

#[test]
fn the_files_the_readme_names_exist() {
    let readme = read("README.md");
    for path in [
        "benches/README.md",
        "benches/run-all",
        "deploy/README.md",
        "deploy/grafana/arbor.json",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "modules/ABI.md",
        "modules/guest/sdk",
        "examples/embed.rs",
        "examples/hello.rs",
    ] {
        assert!(readme.contains(path), "README.md no longer names {path}");
        assert!(Path::new(ROOT).join(path).exists(), "{path} is gone");
    }
}
