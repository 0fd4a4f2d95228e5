//! Candidates built from source: WAT text, or a guest crate compiled by cargo for
//! `wasm32-unknown-unknown` in a temporary directory of its own, with limits on the source's
//! size, the build's time, its captured output and the module's size. A build that fails is not
//! an error of the host: it is [`Built::Failed`] with the compiler's output, which becomes a
//! refused candidate in the archive.
//!
//! The crate is copied into the temporary directory (symbolic links refused, `target/` left
//! out), built there with its own target directory, `--offline`, and an environment reduced to
//! what cargo and rustup need; at the time limit the whole process group (cargo and every rustc
//! it started) is killed. This contains a broken or runaway build. It is not a security
//! boundary: a build script or procedural macro runs with the host's user, so source from
//! people or programs the host does not trust belongs in a container or a VM.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::error::EvolveError;

/// Where a candidate's source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCode {
    /// A module in the WebAssembly text format.
    Wat(String),
    /// A cargo crate (`crate-type = ["cdylib"]`) building one `.wasm`. Path dependencies must be
    /// absolute, since the crate is built from a copy.
    Crate(PathBuf),
}

impl SourceCode {
    /// `wat` or `rust`.
    pub fn language(&self) -> &'static str {
        match self {
            SourceCode::Wat(_) => "wat",
            SourceCode::Crate(_) => "rust",
        }
    }
}

/// The limits of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLimits {
    /// Wall-clock time for the whole build.
    pub time: Duration,
    /// Total bytes of source (a crate's files, or the WAT text).
    pub max_source_bytes: u64,
    /// Bytes of the built module.
    pub max_module_bytes: usize,
    /// Bytes of the compiler's output kept (the rest is counted, not kept).
    pub max_output_bytes: usize,
}

impl Default for BuildLimits {
    fn default() -> BuildLimits {
        BuildLimits {
            time: Duration::from_secs(300),
            max_source_bytes: 8 << 20,
            max_module_bytes: 16 << 20,
            max_output_bytes: 64 << 10,
        }
    }
}

/// What a build gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The module's bytes.
    Module(Vec<u8>),
    /// It did not build: why, with the compiler's output.
    Failed {
        /// The reason and the compiler's output.
        output: String,
    },
}

/// BLAKE3 of a source, hex: the archive's record of what was built.
pub fn source_hash(source: &SourceCode) -> Result<String, EvolveError> {
    let mut hasher = blake3::Hasher::new();
    match source {
        SourceCode::Wat(text) => {
            hasher.update(text.as_bytes());
        }
        SourceCode::Crate(dir) => {
            let files = crate_files(dir, u64::MAX)?.map_err(|why| EvolveError::Build {
                dir: dir.clone(),
                source: std::io::Error::other(why),
            })?;
            for (path, bytes) in files {
                hasher.update(path.to_string_lossy().as_bytes());
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
            }
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Builds `source` within `limits`.
///
/// ```
/// use arbor_evolve::{BuildLimits, Built, SourceCode, build};
///
/// let broken = SourceCode::Wat("(module (func (result i32)))".into());
/// let Built::Failed { output } = build(&broken, &BuildLimits::default())? else {
///     panic!("a function returning nothing for an i32 builds");
/// };
/// assert!(output.contains("type mismatch"), "{output}");
/// # Ok::<(), arbor_evolve::EvolveError>(())
/// ```
pub fn build(source: &SourceCode, limits: &BuildLimits) -> Result<Built, EvolveError> {
    match source {
        SourceCode::Wat(text) => Ok(build_wat(text, limits)),
        SourceCode::Crate(dir) => build_crate(dir, limits),
    }
}

fn build_wat(text: &str, limits: &BuildLimits) -> Built {
    if text.len() as u64 > limits.max_source_bytes {
        return failed(format!(
            "the source is {} bytes, over the limit of {}",
            text.len(),
            limits.max_source_bytes
        ));
    }
    let module = match wat::parse_str(text) {
        Ok(module) => module,
        Err(e) => return failed(format!("wat: {e}")),
    };
    // The text format parses without validating; a module that does not validate is a
    // compile error of its source, like rustc's.
    if let Err(e) = wasmparser::validate(&module) {
        return failed(format!("invalid module: {e}"));
    }
    checked_size(module, limits)
}

fn checked_size(module: Vec<u8>, limits: &BuildLimits) -> Built {
    if module.len() > limits.max_module_bytes {
        return failed(format!(
            "the module is {} bytes, over the limit of {}",
            module.len(),
            limits.max_module_bytes
        ));
    }
    Built::Module(module)
}

fn failed(output: String) -> Built {
    Built::Failed { output }
}

/// The files of one crate, relative path and bytes.
type Files = Vec<(PathBuf, Vec<u8>)>;

/// Every file of the crate at `dir` but `target/`, in path order; `Ok(Err(why))` when the
/// source is unacceptable (a symbolic link, more than `max_bytes` in all).
fn crate_files(dir: &Path, max_bytes: u64) -> Result<Result<Files, String>, EvolveError> {
    let io = |source| EvolveError::Build {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join(&relative))
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = relative.join(entry.file_name());
            let kind = entry.file_type().map_err(io)?;
            if kind.is_symlink() {
                return Ok(Err(format!("{} is a symbolic link", path.display())));
            } else if kind.is_dir() {
                if path != Path::new("target") {
                    pending.push(path);
                }
            } else {
                let bytes = std::fs::read(dir.join(&path)).map_err(io)?;
                total += bytes.len() as u64;
                if total > max_bytes {
                    return Ok(Err(format!(
                        "the source is over the limit of {max_bytes} bytes"
                    )));
                }
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    Ok(Ok(files))
}

fn build_crate(dir: &Path, limits: &BuildLimits) -> Result<Built, EvolveError> {
    let files = match crate_files(dir, limits.max_source_bytes)? {
        Ok(files) => files,
        // The source itself is unacceptable: the candidate's fault, not the host's.
        Err(why) => return Ok(failed(why)),
    };
    let work = tempfile::Builder::new()
        .prefix("arbor-build-")
        .tempdir()
        .map_err(|source| EvolveError::Build {
            dir: std::env::temp_dir(),
            source,
        })?;
    let io = |source| EvolveError::Build {
        dir: work.path().to_owned(),
        source,
    };
    let src = work.path().join("src");
    for (path, bytes) in &files {
        let to = src.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&to, bytes).map_err(io)?;
    }
    let target = work.path().join("target");
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .args(["build", "--release", "--offline", "--target"])
        .arg("wasm32-unknown-unknown")
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .env_clear()
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for kept in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(io)?;
    let readers = [
        child
            .stdout
            .take()
            .map(|out| keep(out, limits.max_output_bytes)),
        child
            .stderr
            .take()
            .map(|err| keep(err, limits.max_output_bytes)),
    ];
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break Some(status);
        }
        if started.elapsed() >= limits.time {
            // The group is cargo's own (process_group(0)): cargo and every rustc it started.
            let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
            child.wait().map_err(io)?;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    for reader in readers.into_iter().flatten() {
        if let Ok(text) = reader.join() {
            output.push_str(&text);
        }
    }
    let Some(status) = status else {
        return Ok(failed(format!(
            "the build did not finish within {:?} and was killed\n{output}",
            limits.time
        )));
    };
    if !status.success() {
        return Ok(failed(format!("cargo build failed ({status})\n{output}")));
    }
    let release = target.join("wasm32-unknown-unknown").join("release");
    let modules: Vec<PathBuf> = std::fs::read_dir(&release)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    let [module] = modules.as_slice() else {
        return Ok(failed(format!(
            "the build made {} .wasm files, expected one (a cdylib)\n{output}",
            modules.len()
        )));
    };
    let size = std::fs::metadata(module).map_err(io)?.len();
    if size > limits.max_module_bytes as u64 {
        return Ok(failed(format!(
            "the module is {size} bytes, over the limit of {}",
            limits.max_module_bytes
        )));
    }
    let bytes = std::fs::read(module).map_err(io)?;
    Ok(checked_size(bytes, limits))
}

/// Reads all of `from` on a thread of its own (so a full pipe never stalls the build), keeping
/// the first `max` bytes as text.
fn keep(mut from: impl Read + Send + 'static, max: usize) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        let mut dropped = 0usize;
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let room = max.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buffer[..room]);
            dropped += n - room;
        }
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if dropped > 0 {
            text.push_str(&format!("\n[{dropped} more bytes of output not kept]\n"));
        }
        text
    })
}
