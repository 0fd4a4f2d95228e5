//! Each hand-written WAT fixture has exactly the one defect it is named for: the load-time ones
//! show up as exactly one violation, the run-time ones as a valid module whose `arbor_handle`
//! does that one bad thing.
#![allow(clippy::unwrap_used)]

mod support;

use arbor_modules::fixtures;
use support::{RuntimeDefect, Violation, runtime_defect, violations};

enum Defect {
    AtLoad(Violation),
    AtRun(RuntimeDefect),
}

/// The decision table: fixture → its one defect (for an agent granted nothing).
fn intended(fixture: &str) -> Defect {
    match fixture {
        "infinite_loop" => Defect::AtRun(RuntimeDefect::InfiniteLoop),
        "memory_bomb" => Defect::AtRun(RuntimeDefect::MemoryBomb),
        "trap" => Defect::AtRun(RuntimeDefect::Trap),
        "missing_export" => Defect::AtLoad(Violation::MissingExport("arbor_handle".into())),
        "wrong_abi" => Defect::AtLoad(Violation::AbiVersion(99)),
        "ungranted_import" => Defect::AtLoad(Violation::Ungranted("call_tool".into())),
        "bad_signature" => Defect::AtLoad(Violation::WrongType {
            export: "arbor_handle".into(),
            found: "[I32, I32] -> [I32]".into(),
        }),
        other => panic!("fixture {other} has no intended defect listed"),
    }
}

#[test]
fn each_fixture_has_exactly_its_one_defect() {
    for (name, text) in fixtures::ALL {
        let bytes = wat::parse_str(text).unwrap_or_else(|err| panic!("{name}: {err}"));
        let (load, run) = (violations(&bytes, &[]), runtime_defect(&bytes));
        match intended(name) {
            Defect::AtLoad(violation) => {
                assert_eq!(load, [violation], "{name}");
                assert_eq!(run, None, "{name}");
            }
            Defect::AtRun(defect) => {
                assert_eq!(load, [], "{name}");
                assert_eq!(run, Some(defect), "{name}");
            }
        }
    }
}

#[test]
fn ungranted_import_is_fine_once_granted() {
    let bytes = wat::parse_str(fixtures::UNGRANTED_IMPORT).unwrap();
    assert_eq!(violations(&bytes, &["call_tool"]), []);
}

#[test]
fn every_fixture_file_is_listed_and_says_its_defect_first() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wat"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort_unstable();
    let mut listed: Vec<&str> = fixtures::ALL.iter().map(|(name, _)| *name).collect();
    listed.sort_unstable();
    assert_eq!(on_disk, listed);
    for (name, text) in fixtures::ALL {
        assert!(
            text.starts_with(";; Defect"),
            "{name} must open with its defect"
        );
    }
}
