//! The parent and child sides of a kill -9 test, shared by every crash test.
//!
//! The test function runs twice: in the parent, which starts children, kills them and checks
//! what they left on disk, and in each child (the same binary, started by [`KillTest::spawn`]),
//! which does the work and prints a line per acknowledged input. [`KillTest::start`] says which
//! side this process is on. The children print their reports as `<tag> <key> <value>` lines
//! (`ACK kv 12`, `STATE top 7`); [`last_reports`] reads them back.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::{ChildProcess, SplitMix64, Watchdog, child_role, watchdog};

/// The environment variable by which a child learns its parent's scratch directory.
const DIR_VAR: &str = "ARBOR_TEST_DIR";

/// How long a child may stay silent before the parent gives up on it.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which side of a kill -9 test this process is on.
pub enum Side {
    /// The test itself, which spawns and kills children.
    Parent(KillTest),
    /// A child started by [`KillTest::spawn`].
    Child(CrashChild),
}

/// The parent side of a kill -9 test: a watchdog over the whole test, a seeded generator for
/// when to kill (the seed is printed, and `ARBOR_TEST_SEED` repeats it), and a scratch directory
/// that every child is given.
pub struct KillTest {
    test: &'static str,
    dir: tempfile::TempDir,
    rng: SplitMix64,
    _watchdog: Watchdog,
}

impl KillTest {
    /// The side of the test `test` (the test function's name) this process is on. In the parent,
    /// arms a [`watchdog`] of `limit`, prints the seed and makes the scratch directory.
    ///
    /// # Panics
    /// If the scratch directory cannot be made, or a child's directory was not passed to it.
    pub fn start(test: &'static str, limit: Duration) -> Side {
        if let Some(role) = child_role() {
            let dir = std::env::var_os(DIR_VAR)
                .unwrap_or_else(|| panic!("{test}: a child without {DIR_VAR}"));
            return Side::Child(CrashChild {
                role,
                dir: PathBuf::from(dir),
            });
        }
        let watchdog = watchdog(test, limit);
        let seed = SplitMix64::seed_from_env();
        println!("seed {seed}");
        let dir = tempfile::tempdir()
            .unwrap_or_else(|err| panic!("{test}: cannot make a scratch directory: {err}"));
        Side::Parent(KillTest {
            test,
            dir,
            rng: SplitMix64::new(seed),
            _watchdog: watchdog,
        })
    }

    /// The scratch directory the children share (removed when the test ends).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test's generator, seeded from the printed seed.
    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// Starts a child in `role` with the scratch directory and `envs`.
    ///
    /// # Panics
    /// If the child cannot be started.
    pub fn spawn(&self, role: &str, envs: &[(&str, &str)]) -> ChildProcess {
        let dir = self.dir.path().to_string_lossy();
        let mut all = vec![(DIR_VAR, dir.as_ref())];
        all.extend_from_slice(envs);
        ChildProcess::spawn(self.test, role, &all)
            .unwrap_or_else(|err| panic!("{}: cannot start a {role} child: {err}", self.test))
    }

    /// Lets `child` print `at_least` plus a random `0..spread` more lines, each within a minute
    /// (else panics naming what it was `doing`), then SIGKILLs it: those lines and any it
    /// printed before it died.
    pub fn kill_at_random(
        &mut self,
        child: ChildProcess,
        at_least: usize,
        spread: u64,
        doing: &str,
    ) -> Vec<String> {
        // The draw is the seed's: a rerun with the same seed kills at the same points.
        let lines = at_least + self.rng.below(spread) as usize;
        child.kill_after_lines(lines, LINE_TIMEOUT, doing)
    }
}

/// The child side of a kill -9 test: its role and the parent's scratch directory.
pub struct CrashChild {
    role: String,
    dir: PathBuf,
}

impl CrashChild {
    /// The role the parent gave it.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The parent's scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The environment variable `name` the parent passed, parsed.
    ///
    /// # Panics
    /// If it is missing or does not parse.
    pub fn var<T: FromStr>(&self, name: &str) -> T
    where
        T::Err: Debug,
    {
        let value = std::env::var(name).unwrap_or_else(|err| panic!("{name}: {err}"));
        value
            .parse()
            .unwrap_or_else(|err| panic!("{name}={value:?}: {err:?}"))
    }
}

/// The last value reported per key among the lines `<tag> <key> <value>` of `lines`, the value
/// being the rest of the line, parsed: a child's acknowledgements (`ACK kv 12`) read back.
/// Other lines are skipped.
///
/// # Panics
/// If a value does not parse: the child and the parent disagree on the format.
pub fn last_reports<V: FromStr>(lines: &[String], tag: &str) -> BTreeMap<String, V>
where
    V::Err: Debug,
{
    let mut last = BTreeMap::new();
    for line in lines {
        let Some((key, value)) = line
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        let value = value
            .parse()
            .unwrap_or_else(|err| panic!("{line:?}: the value does not parse: {err:?}"));
        last.insert(key.to_string(), value);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_reports_keeps_the_last_value_per_key_of_its_tag() {
        let lines: Vec<String> = [
            "ACK kv 1",
            "STATE kv 40",
            "ACK toolbox 1 00ff",
            "ACK kv 2",
            "ACKNOWLEDGED kv 9",
            "promoted at 12",
            "ACK",
        ]
        .map(String::from)
        .into();
        let acks: BTreeMap<String, String> = last_reports(&lines, "ACK");
        assert_eq!(acks.len(), 2);
        assert_eq!(acks["kv"], "2");
        assert_eq!(acks["toolbox"], "1 00ff");
        let states: BTreeMap<String, i64> = last_reports(&lines, "STATE");
        assert_eq!(states["kv"], 40);
    }
}
