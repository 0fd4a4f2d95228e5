//! Builds the guest workspace (`modules/guest`) for wasm32-unknown-unknown and copies every
//! agent's `.wasm` into `OUT_DIR`, where `src/lib.rs` includes them. It also finds kv-hostile's
//! variant marker in its module and writes where it is to `OUT_DIR/kv_hostile_marker.rs`, so
//! `arbor_modules::kv_hostile` can patch the byte without searching; a module in which the
//! marker does not occur exactly once fails the build.
//!
//! The nested cargo gets its own target directory, `<target dir>/wasm-guest` beside the outer
//! build's profile directories, so it never waits on the outer cargo's lock and stays warm across
//! `cargo test`, `cargo clippy` and `cargo bench`. It inherits the outer jobserver through
//! `CARGO_MAKEFLAGS` (so `-j` holds for both), but none of the variables that describe the outer
//! build: those would point it at the host target, the outer target dir, or clippy.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// kv-hostile's variant marker as built (`arbor_protocols::hostile::MARKER`, which
/// `src/hostile.rs`'s tests check this against): its last byte is the variant, 0 in the built
/// module.
const HOSTILE_MARKER: &[u8; 32] = b"arbor-kv-hostile-variant-marker\0";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let modules_dir = manifest_dir
        .parent()
        .ok_or("modules/catalog has no parent directory")?;
    let guest_dir = modules_dir.join("guest");

    for watched in ["Cargo.toml", "Cargo.lock", "sdk", "agents"] {
        println!(
            "cargo:rerun-if-changed={}",
            guest_dir.join(watched).display()
        );
    }
    // The agents' message types, a path dependency of the guest workspace.
    println!(
        "cargo:rerun-if-changed={}",
        modules_dir.join("protocols").display()
    );
    // The SDK's `abi` module docs include it.
    println!(
        "cargo:rerun-if-changed={}",
        modules_dir.join("ABI.md").display()
    );

    check_wasm_target()?;

    let target_dir = guest_target_dir(&out_dir);
    let manifest = guest_dir.join("Cargo.toml");
    let mut output = nested_build(&manifest, &target_dir, true)?;
    // Offline first: every guest dependency is also a root-workspace dependency, so it is already
    // downloaded. Only a machine that lacks one pays for going online.
    if !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("offline") {
        output = nested_build(&manifest, &target_dir, false)?;
    }
    if !output.status.success() {
        return Err(format!(
            "building the guest modules failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    let built = target_dir.join(WASM_TARGET).join("release");
    let entries =
        fs::read_dir(&built).map_err(|err| format!("reading {}: {err}", built.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|err| format!("reading {}: {err}", built.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            let file_name = path.file_name().ok_or("a .wasm path without a file name")?;
            let copy = out_dir.join(file_name);
            fs::copy(&path, &copy).map_err(|err| {
                format!("copying {} to {}: {err}", path.display(), copy.display())
            })?;
        }
    }
    locate_hostile_marker(&out_dir)
}

/// Writes `kv_hostile_marker.rs`: the marker and the offset of its variant byte in
/// `kv_hostile.wasm`, where it must occur exactly once.
fn locate_hostile_marker(out_dir: &Path) -> Result<(), String> {
    let module = out_dir.join("kv_hostile.wasm");
    let bytes = fs::read(&module).map_err(|err| format!("reading {}: {err}", module.display()))?;
    let found: Vec<usize> = bytes
        .windows(HOSTILE_MARKER.len())
        .enumerate()
        .filter(|(_, window)| window == HOSTILE_MARKER)
        .map(|(start, _)| start)
        .collect();
    let [start] = found[..] else {
        return Err(format!(
            "{}: kv-hostile's variant marker {:?} occurs {} times, not exactly once; \
             see modules/guest/agents/kv-hostile/src/variant.rs",
            module.display(),
            String::from_utf8_lossy(HOSTILE_MARKER),
            found.len()
        ));
    };
    let offset = start + HOSTILE_MARKER.len() - 1;
    let source = format!(
        "/// kv-hostile's variant marker as built: its last byte is the variant, 0 here.\n\
         const KV_HOSTILE_MARKER: [u8; {}] = {:?};\n\
         /// Where the marker's variant byte is in `KV_HOSTILE` (found by build.rs).\n\
         const KV_HOSTILE_VARIANT_OFFSET: usize = {offset};\n",
        HOSTILE_MARKER.len(),
        HOSTILE_MARKER
    );
    let generated = out_dir.join("kv_hostile_marker.rs");
    fs::write(&generated, source).map_err(|err| format!("writing {}: {err}", generated.display()))
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|err| format!("{name}: {err}"))
}

/// The rustc cargo uses, which is also what the nested cargo will use.
fn rustc() -> OsString {
    env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// Makes sure the standard library for wasm32-unknown-unknown is installed: if it is not and
/// the build runs under rustup, installs it (`rustup target add`, so that `cargo run` works on
/// a fresh machine); otherwise fails with the fix.
fn check_wasm_target() -> Result<(), String> {
    let libdir = match wasm_libdir()? {
        Ok(()) => return Ok(()),
        Err(libdir) => libdir,
    };
    // rustup's proxies set RUSTUP_TOOLCHAIN to the toolchain this build runs with.
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        println!(
            "cargo:warning=installing the {WASM_TARGET} target (the guest modules are built for it): rustup target add {WASM_TARGET}"
        );
        let added = Command::new("rustup")
            .args(["target", "add", WASM_TARGET, "--toolchain"])
            .arg(&toolchain)
            .status();
        if added.is_ok_and(|status| status.success()) && wasm_libdir()?.is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "the {WASM_TARGET} target is not installed (no libcore in {}); run `rustup target add {WASM_TARGET}`",
        libdir.display()
    ))
}

/// `Ok` if the wasm32 standard library is installed, else `Err` with where it was looked for.
fn wasm_libdir() -> Result<Result<(), PathBuf>, String> {
    let output = Command::new(rustc())
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|err| format!("running rustc --print target-libdir: {err}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_core = fs::read_dir(&libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("libcore-"))
    });
    Ok(if output.status.success() && has_core {
        Ok(())
    } else {
        Err(libdir)
    })
}

/// `<target dir>/wasm-guest`: OUT_DIR is `<target dir>[/<triple>]/<profile>/build/<pkg>-<hash>/out`.
/// Falls back to a directory inside OUT_DIR (cold, but correct) if the layout is unfamiliar.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
        .and_then(Path::parent) // <profile>
        .and_then(Path::parent) // <target dir>[/<triple>]
        .map(|dir| dir.join("wasm-guest"))
        .unwrap_or_else(|| out_dir.join("wasm-guest"))
}

/// Variables the nested cargo keeps although they start with `CARGO_`: where cargo lives, the
/// shared jobserver, and network and registry settings.
fn keep_cargo_var(name: &str) -> bool {
    name == "CARGO_HOME"
        || name == "CARGO_MAKEFLAGS"
        || [
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTRIES_",
            "CARGO_REGISTRY_",
            "CARGO_TERM_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Variables that describe the outer build (its target, flags, wrappers, profile) and must not
/// reach the nested one.
fn is_outer_build_var(name: &str) -> bool {
    (name.starts_with("CARGO_") && !keep_cargo_var(name))
        || name.starts_with("__CARGO")
        || [
            "RUSTFLAGS",
            "RUSTDOCFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTC_LINKER",
            "RUSTDOC",
            "CLIPPY_ARGS",
            "CLIPPY_CONF_DIR",
            "TARGET",
            "HOST",
            "OUT_DIR",
            "PROFILE",
            "OPT_LEVEL",
            "DEBUG",
            "NUM_JOBS",
        ]
        .contains(&name)
}

fn nested_build(
    manifest: &Path,
    target_dir: &Path,
    offline: bool,
) -> Result<std::process::Output, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // From the guest workspace, so cargo finds its config (if any) before the root's.
    command
        .current_dir(manifest.parent().unwrap_or(Path::new(".")))
        .arg("build")
        .args(["--release", "--locked", "--target", WASM_TARGET])
        .args(["--workspace", "--exclude", "conformance"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if offline {
        command.arg("--offline");
    }
    for (name, _) in env::vars_os() {
        if is_outer_build_var(&name.to_string_lossy()) {
            command.env_remove(&name);
        }
    }
    command
        .output()
        .map_err(|err| format!("running the nested cargo for {}: {err}", manifest.display()))
}
