//! Test support shared by arbor's crash and fault tests.
//!
//! Crash tests need a process that can be killed with SIGKILL in the middle of its work while the
//! test itself survives to check what was left on disk. [`ChildProcess`] re-runs the current test
//! binary as a child, with one test selected and a role in its environment; that test calls
//! [`child_role`] first and, when it names a role, does the child's work instead of testing.
//!
//! [`KillTest`] wraps that for a whole kill -9 test: which side this process is on, a watchdog, a
//! seed, a scratch directory for the children, killing a child at a random point, and reading
//! back what it acknowledged ([`last_reports`]).
//!
//! ```no_run
//! use arbor_testkit::{child_role, ChildProcess};
//!
//! #[test]
//! fn child_process_entry() {
//!     // Only does anything when started by `ChildProcess::spawn`.
//!     if let Some(role) = child_role() {
//!         assert_eq!(role, "appender");
//!         println!("ack 1"); // the parent reads these lines
//!     }
//! }
//!
//! #[test]
//! fn killed_mid_write() {
//!     let mut child = ChildProcess::spawn("child_process_entry", "appender", &[]).unwrap();
//!     let line = child.next_line();
//!     child.kill();
//!     assert_eq!(line.as_deref(), Some("ack 1"));
//! }
//! ```

mod crash;

pub use crash::{CrashChild, KillTest, Side, last_reports};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ROLE_VAR: &str = "ARBOR_TESTKIT_CHILD_ROLE";

/// The role this process was started with by [`ChildProcess::spawn`], or `None` in a normal test
/// run.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// A child process running one test of the current test binary in a given role, with its standard
/// output read line by line on a background thread.
pub struct ChildProcess {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Starts the current test binary running only `test_name`, with [`child_role`] returning
    /// `role` there and `envs` added to its environment.
    pub fn spawn(test_name: &str, role: &str, envs: &[(&str, &str)]) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("child has no stdout pipe"))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints "test NAME ... " without a newline before running the test, so
                // the child's first line arrives behind it.
                let line = match line.split_once(" ... ") {
                    Some((prefix, rest)) if prefix.starts_with("test ") => rest.to_string(),
                    _ => line,
                };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The child's process id (for signals such as SIGSTOP / SIGCONT).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child printed, waiting for it; `None` once the child's output has ended.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.recv().ok()
    }

    /// The next line the child printed within `timeout`, if any.
    pub fn next_line_timeout(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The lines before the first line equal to `marker` (libtest prints its own lines first),
    /// or `None` if the child stops or is silent for `timeout` before printing it.
    pub fn lines_until(&mut self, marker: &str, timeout: Duration) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line_timeout(timeout)?;
            if line == marker {
                return Some(lines);
            }
            lines.push(line);
        }
    }

    /// Reads `n` more lines (each within `timeout`; panics naming `what` if they do not come),
    /// then kills the child: those lines and every line it printed up to its death.
    pub fn kill_after_lines(mut self, n: usize, timeout: Duration, what: &str) -> Vec<String> {
        let mut lines = Vec::with_capacity(n);
        while lines.len() < n {
            match self.next_line_timeout(timeout) {
                Some(line) => lines.push(line),
                None => panic!("the child stopped {what} after {} lines", lines.len()),
            }
        }
        lines.extend(self.kill());
        lines
    }

    /// Sends SIGKILL (the child gets no chance to clean up), waits for it to die, and returns
    /// every line it printed that was not read yet.
    pub fn kill(mut self) -> Vec<String> {
        // Already exited is fine: the point is that it is not running any more.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.iter().collect()
    }

    /// Waits for the child to exit by itself, returning whether it succeeded and the lines not
    /// read yet.
    pub fn wait(mut self) -> std::io::Result<(bool, Vec<String>)> {
        let status = self.child.wait()?;
        Ok((status.success(), self.lines.iter().collect()))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic pseudo-random generator (splitmix64) for crash tests: seeded runs are
/// reproducible from the seed a failing test prints.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the environment variable `ARBOR_TEST_SEED`, or from the clock; print it so a
    /// failing run can be repeated.
    pub fn seed_from_env() -> u64 {
        std::env::var("ARBOR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x5eed)
            })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`; `bound` must not be zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no values");
        self.next_u64() % bound
    }
}

/// Whether `path` is on a filesystem we may fill up: a fresh tmpfs mounted by the caller. Used by
/// full-disk tests to refuse to fill a real disk by mistake.
pub fn is_tmpfs(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        fs_type == "tmpfs" && Path::new(mount_point) == path
    })
}

/// A tmpfs of a fixed size mounted on a fresh directory, unmounted and removed on drop: a real
/// filesystem that really fills up, for full-disk (ENOSPC) tests. Mounting needs root (CI and the
/// development machines run as root); without it [`Tmpfs::mount`] returns the error `mount` gave.
pub struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes on a new directory under the system temp dir.
    pub fn mount(bytes: u64) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "arbor-tmpfs-{}-{}",
            std::process::id(),
            SplitMix64::new(SplitMix64::seed_from_env()).next_u64()
        ));
        std::fs::create_dir_all(&dir)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output()?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(std::io::Error::other(format!(
                "mount -t tmpfs failed (full-disk tests need root): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Aborts the whole test process with a message if the returned guard is still alive after
/// `limit`: a hang (a lost wake-up, a livelock) fails the run quickly instead of running into
/// CI's time limit. Keep the guard alive for the length of the test.
pub fn watchdog(test: &'static str, limit: Duration) -> Watchdog {
    let (done, finished) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
            eprintln!("watchdog: {test} still running after {limit:?}; aborting the test process");
            std::process::abort();
        }
    });
    Watchdog { _done: done }
}

/// Disarms the [`watchdog`] when dropped.
pub struct Watchdog {
    _done: mpsc::Sender<()>,
}
