//! Candidates built from source: a crate that builds gives its module; one that does not, a
//! hung build, a symbolic link or an oversized source give a refusal with the reason, and the
//! host carries on.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use arbor_evolve::{
    BuildLimits, Built, CandidateSource, FromSource, Offer, Request, SourceCode, build,
};

fn write_crate(dir: &Path, lib: &str, build_rs: Option<&str>) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let build_line = if build_rs.is_some() {
        "build = \"build.rs\"\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"candidate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{build_line}\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[profile.release]\nopt-level = \"s\"\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
    if let Some(build_rs) = build_rs {
        std::fs::write(dir.join("build.rs"), build_rs).unwrap();
    }
}

const ANSWER: &str = "#[no_mangle]\npub extern \"C\" fn answer() -> i32 { 42 }\n";

fn limits(seconds: u64) -> BuildLimits {
    BuildLimits {
        time: Duration::from_secs(seconds),
        ..BuildLimits::default()
    }
}

#[test]
fn a_crate_builds_in_a_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), ANSWER, None);
    let Built::Module(bytes) = build(&SourceCode::Crate(dir.path().into()), &limits(240)).unwrap()
    else {
        panic!("did not build");
    };
    wasmparser::validate(&bytes).unwrap();
    // Built in a copy: nothing was written beside the source.
    assert!(!dir.path().join("target").exists());
    assert!(!dir.path().join("Cargo.lock").exists());
}

#[test]
fn a_compile_error_is_a_refused_candidate_with_the_compilers_output() {
    let dir = tempfile::tempdir().unwrap();
    write_crate(
        dir.path(),
        "#[no_mangle]\npub extern \"C\" fn answer() -> i32 { \"forty-two\" }\n",
        None,
    );
    let mut source = FromSource::new(limits(240));
    source.add("broken", SourceCode::Crate(dir.path().into()));
    source.add(
        "wat",
        SourceCode::Wat("(module (func (export \"f\")))".into()),
    );
    let offers = source
        .propose(&Request {
            parents: &[],
            max: 5,
        })
        .unwrap();
    assert_eq!(offers.len(), 2);
    match &offers[0] {
        Offer::Refused { name, reason, .. } => {
            assert_eq!(name, "broken");
            assert!(reason.contains("error[E0308]"), "{reason}");
            assert!(reason.contains("mismatched types"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&offers[1], Offer::Candidate(c) if c.name == "wat"));
}

#[test]
fn a_build_past_its_time_is_killed_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("build-script.pid");
    // The build script records its pid, then hangs.
    let build_rs = format!(
        "fn main() {{\n    std::fs::write({:?}, std::process::id().to_string()).unwrap();\n    \
         std::thread::sleep(std::time::Duration::from_secs(600));\n}}\n",
        pid_file
    );
    let source_dir = dir.path().join("candidate");
    write_crate(&source_dir, ANSWER, Some(&build_rs));
    let started = Instant::now();
    let built = build(&SourceCode::Crate(source_dir), &limits(20)).unwrap();
    let took = started.elapsed();
    let Built::Failed { output } = built else {
        panic!("a hung build gave a module");
    };
    assert!(output.contains("did not finish within 20s"), "{output}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("the build script ran");
    // Killed with its process group: give the kernel a moment to reap it.
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "))
    });
    assert!(gone, "the build script {pid} still runs");
}

#[test]
fn a_symbolic_link_or_an_oversized_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_crate(dir.path(), ANSWER, None);
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("src/secret")).unwrap();
    let Built::Failed { output } =
        build(&SourceCode::Crate(dir.path().into()), &limits(60)).unwrap()
    else {
        panic!("built with a link");
    };
    assert!(output.contains("symbolic link"), "{output}");

    let dir = tempfile::tempdir().unwrap();
    write_crate(
        dir.path(),
        &format!("{ANSWER}// {}\n", "x".repeat(4096)),
        None,
    );
    let small = BuildLimits {
        max_source_bytes: 1024,
        ..limits(60)
    };
    let Built::Failed { output } = build(&SourceCode::Crate(dir.path().into()), &small).unwrap()
    else {
        panic!("built past the size limit");
    };
    assert!(output.contains("over the limit of 1024 bytes"), "{output}");
    let Built::Failed { output } = build(&SourceCode::Wat("x".repeat(2048)), &small).unwrap()
    else {
        panic!("parsed past the size limit");
    };
    assert!(output.contains("over the limit"), "{output}");
}
