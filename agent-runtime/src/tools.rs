//! Host tools: functions a host registers for agents to call through `call_tool`, each granted
//! per agent by name. Arguments and results are MessagePack. Results are journaled, so a tool
//! runs once per input: replay reads its answer from the journal.
//!
//! Three come with arbor: [`Echo`], [`Calculator`] and [`FileReader`] (reads files under one
//! directory and nowhere else).
//!
//! ```
//! use arbor_agent::tools::{Calculator, Echo, Tools};
//!
//! #[derive(serde::Serialize)]
//! struct Args {
//!     op: &'static str,
//!     a: f64,
//!     b: f64,
//! }
//! #[derive(serde::Deserialize)]
//! struct Value {
//!     value: f64,
//! }
//!
//! let tools = Tools::new().with("echo", Echo).with("calculator", Calculator);
//! let args = rmp_serde::to_vec_named(&Args { op: "mul", a: 6.0, b: 7.0 })?;
//! let result: Value = rmp_serde::from_slice(&tools.call("calculator", &args)?)?;
//! assert_eq!(result.value, 42.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::behaviour::HostError;

/// A host function agents may call by name.
pub trait Tool: Send + Sync + 'static {
    /// Runs the tool on MessagePack `args`; returns its MessagePack result or why it failed.
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError>;
}

/// Why a tool call failed. The behaviour sees it as [`HostError::ToolFailed`], with the whole
/// chain of causes as its reason (that is what the journal records and replay gives back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments are not the MessagePack the tool takes.
    #[error("bad arguments")]
    BadArguments(#[source] rmp_serde::decode::Error),
    /// The tool refused the request (a domain error: division by zero, a path outside the
    /// readable directory, …).
    #[error("{0}")]
    Refused(String),
    /// The tool's I/O failed.
    #[error("{what}")]
    Io {
        /// What it was doing.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The result could not be encoded.
    #[error("cannot encode the result")]
    Encode(#[source] rmp_serde::encode::Error),
}

impl ToolError {
    /// The error and its causes, `: `-separated (the reason the behaviour is given).
    pub fn chain(&self) -> String {
        crate::report::chain(self)
    }
}

/// The tools a host offers, by name.
///
/// A tool the host declares *pure* ([`Tools::with_pure`]: deterministic, no side effects, its
/// answer a function of its arguments alone) may run for an evaluation's candidate shadow that
/// calls it with arguments production did not use; any other tool is only ever answered from
/// production's recording, and a call production did not make is an unanswerable effect,
/// reported and never performed.
#[derive(Clone, Default)]
pub struct Tools {
    by_name: BTreeMap<String, Registered>,
}

#[derive(Clone)]
struct Registered {
    tool: Arc<dyn Tool>,
    pure: bool,
}

impl Tools {
    /// No tools.
    pub fn new() -> Tools {
        Tools::default()
    }

    /// Adds (or replaces) the tool `name`.
    pub fn with(self, name: impl Into<String>, tool: impl Tool) -> Tools {
        self.register(name.into(), Arc::new(tool), false)
    }

    /// Adds (or replaces) the tool `name`, declared pure: deterministic and without side
    /// effects, so a shadow may run it (see [`Tools`]). The declaration is the host's promise;
    /// arbor cannot check it.
    ///
    /// ```
    /// use arbor_agent::tools::{Calculator, Echo, Tools};
    /// let tools = Tools::new().with_pure("calculator", Calculator).with("echo", Echo);
    /// assert!(tools.is_pure("calculator"));
    /// assert!(!tools.is_pure("echo"));
    /// assert!(!tools.is_pure("missing"));
    /// ```
    pub fn with_pure(self, name: impl Into<String>, tool: impl Tool) -> Tools {
        self.register(name.into(), Arc::new(tool), true)
    }

    fn register(mut self, name: String, tool: Arc<dyn Tool>, pure: bool) -> Tools {
        self.by_name.insert(name, Registered { tool, pure });
        self
    }

    /// Whether `name` is a tool declared pure.
    pub fn is_pure(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|t| t.pure)
    }

    /// The tool names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Runs the tool `name`.
    pub fn call(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        let tool = self
            .by_name
            .get(name)
            .ok_or_else(|| HostError::NoSuchTool(name.into()))?;
        tool.tool.call(args).map_err(|error| HostError::ToolFailed {
            tool: name.into(),
            reason: error.chain(),
        })
    }
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// Returns its arguments unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Tool for Echo {
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
        Ok(args.to_vec())
    }
}

/// Arithmetic on two numbers: `{"op": "add"|"sub"|"mul"|"div"|"pow", "a": f64, "b": f64}` →
/// `{"value": f64}`. Division by zero and non-finite results are errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

#[derive(Deserialize)]
struct CalculatorArgs {
    op: String,
    a: f64,
    b: f64,
}

#[derive(Serialize)]
struct CalculatorResult {
    value: f64,
}

impl Tool for Calculator {
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
        let CalculatorArgs { op, a, b } =
            crate::envelope::decode_untrusted(args).map_err(ToolError::BadArguments)?;
        let value = match op.as_str() {
            "add" => a + b,
            "sub" => a - b,
            "mul" => a * b,
            "div" if b == 0.0 => return Err(ToolError::Refused("division by zero".into())),
            "div" => a / b,
            "pow" => a.powf(b),
            other => return Err(ToolError::Refused(format!("unknown op `{other}`"))),
        };
        if !value.is_finite() {
            return Err(ToolError::Refused(format!("{op}({a}, {b}) is not finite")));
        }
        rmp_serde::to_vec_named(&CalculatorResult { value }).map_err(ToolError::Encode)
    }
}

/// Reads a file under one directory: `{"path": "<relative path>"}` →
/// `{"bytes": <bin>}`. Absolute paths, `..`, and symlinks that lead out of the directory are
/// refused, as are files larger than the limit and anything that is not a regular file.
#[derive(Debug, Clone)]
pub struct FileReader {
    root: PathBuf,
    max_bytes: u64,
}

#[derive(Deserialize)]
struct FileReaderArgs {
    path: String,
}

#[derive(Serialize)]
struct FileReaderResult<'a> {
    #[serde(with = "serde_bytes")]
    bytes: &'a [u8],
}

impl FileReader {
    /// A reader confined to `root` (which must exist), returning at most `max_bytes` per file.
    pub fn new(root: impl AsRef<Path>, max_bytes: u64) -> std::io::Result<FileReader> {
        Ok(FileReader {
            root: root.as_ref().canonicalize()?,
            max_bytes,
        })
    }

    fn resolve(&self, relative: &str) -> Result<PathBuf, ToolError> {
        let path = Path::new(relative);
        if relative.is_empty()
            || !path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ToolError::Refused(format!(
                "`{relative}` is not a plain relative path"
            )));
        }
        // Canonicalising resolves symlinks, so a link pointing outside is caught here.
        let full = self
            .root
            .join(path)
            .canonicalize()
            .map_err(|source| ToolError::Io {
                what: format!("`{relative}`"),
                source,
            })?;
        if !full.starts_with(&self.root) {
            return Err(ToolError::Refused(format!(
                "`{relative}` leads outside the readable directory"
            )));
        }
        Ok(full)
    }
}

impl Tool for FileReader {
    fn call(&self, args: &[u8]) -> Result<Vec<u8>, ToolError> {
        let FileReaderArgs { path } =
            crate::envelope::decode_untrusted(args).map_err(ToolError::BadArguments)?;
        let full = self.resolve(&path)?;
        let io = |source| ToolError::Io {
            what: format!("`{path}`"),
            source,
        };
        let file = std::fs::File::open(&full).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(ToolError::Refused(format!(
                "`{path}` is not a regular file"
            )));
        }
        if meta.len() > self.max_bytes {
            return Err(ToolError::Refused(format!(
                "`{path}` has {} bytes, more than the limit of {}",
                meta.len(),
                self.max_bytes
            )));
        }
        let mut bytes = Vec::new();
        // `take` also bounds a file that grows while it is read.
        file.take(self.max_bytes)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        rmp_serde::to_vec_named(&FileReaderResult { bytes: &bytes }).map_err(ToolError::Encode)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read(reader: &FileReader, path: &str) -> Result<Vec<u8>, ToolError> {
        #[derive(Serialize)]
        struct Args<'a> {
            path: &'a str,
        }
        #[derive(Deserialize)]
        struct Out {
            #[serde(with = "serde_bytes")]
            bytes: Vec<u8>,
        }
        let out = reader.call(&rmp_serde::to_vec_named(&Args { path }).unwrap())?;
        Ok(rmp_serde::from_slice::<Out>(&out).unwrap().bytes)
    }

    #[test]
    fn file_reader_stays_inside_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"hello").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::fs::write(root.join("big"), vec![0u8; 100]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let reader = FileReader::new(&root, 64).unwrap();

        assert_eq!(read(&reader, "sub/a.txt").unwrap(), b"hello");
        assert_eq!(read(&reader, "./sub/a.txt").unwrap(), b"hello");
        for refused in [
            "../secret",
            "sub/../../secret",
            "/etc/passwd",
            "link",
            "sub",
            "big",
            "",
        ] {
            assert!(read(&reader, refused).is_err(), "{refused} was read");
        }
        assert!(reader.call(b"\xc1").is_err());
    }

    #[test]
    fn calculator_computes_and_refuses() {
        #[derive(Serialize)]
        struct Args<'a> {
            op: &'a str,
            a: f64,
            b: f64,
        }
        #[derive(Deserialize)]
        struct Out {
            value: f64,
        }
        let calc = |op, a, b| {
            Calculator
                .call(&rmp_serde::to_vec_named(&Args { op, a, b }).unwrap())
                .map(|out| rmp_serde::from_slice::<Out>(&out).unwrap().value)
        };
        assert_eq!(calc("add", 2.0, 3.0).unwrap(), 5.0);
        assert_eq!(calc("div", 1.0, 4.0).unwrap(), 0.25);
        assert!(calc("div", 1.0, 0.0).is_err());
        assert!(calc("pow", 10.0, 400.0).is_err());
        assert!(calc("mod", 1.0, 1.0).is_err());
        let tools = Tools::new().with("calculator", Calculator);
        assert!(matches!(
            tools.call("nope", b""),
            Err(HostError::NoSuchTool(_))
        ));
    }
}
