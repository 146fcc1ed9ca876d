//! The authoring kit: everything an add-on build needs besides the author's
//! own sources, carried inside the `addonhost` binary so that a scaffolded
//! add-on builds anywhere the binary runs.
//!
//! - the WIT package (`wit/`), and a copy for JavaScript whose WASI version
//!   matches the one StarlingMonkey (inside componentize-js) was built with;
//! - the SDKs: the Rust crate (with the SSO crate it depends on), the Python
//!   module, the JavaScript module;
//! - the language toolchains, installed on first use into a cache:
//!   componentize-py from PyPI (in a venv), componentize-js from npm.
//!
//! Everything lives under [`home`] (`$ADDONHOST_HOME`, else
//! `$XDG_CACHE_HOME/addonhost`, else `~/.cache/addonhost`). The kit folder is
//! named by a hash of its contents, so a new binary never builds against an
//! old SDK, and it is written to a temporary folder and renamed, so a reader
//! never sees half of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// componentize-py, pinned: the Python build is reproducible and tested.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js, pinned likewise.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The WASI 0.2 minor version StarlingMonkey inside componentize-js
/// 0.23.0 was built with. Its engine exports
/// `wasi:http/incoming-handler@0.2.10`, so a JavaScript add-on is built
/// against a copy of our WIT that names that version; wasmtime links
/// semver-compatible 0.2.x versions to the same host implementation.
const JS_WASI_VERSION: &str = "0.2.10";
/// The WASI version `wit/deps` carries (from wasmtime-wasi-http 48).
const WASI_VERSION: &str = "0.2.12";

/// (path inside the kit, contents).
const FILES: &[(&str, &str)] = &[
    ("wit/addon.wit", include_str!("../../../../wit/addon.wit")),
    (
        "wit/deps/cli/package.wit",
        include_str!("../../../../wit/deps/cli/package.wit"),
    ),
    (
        "wit/deps/clocks/package.wit",
        include_str!("../../../../wit/deps/clocks/package.wit"),
    ),
    (
        "wit/deps/filesystem/package.wit",
        include_str!("../../../../wit/deps/filesystem/package.wit"),
    ),
    (
        "wit/deps/http/package.wit",
        include_str!("../../../../wit/deps/http/package.wit"),
    ),
    (
        "wit/deps/io/package.wit",
        include_str!("../../../../wit/deps/io/package.wit"),
    ),
    (
        "wit/deps/random/package.wit",
        include_str!("../../../../wit/deps/random/package.wit"),
    ),
    (
        "wit/deps/sockets/package.wit",
        include_str!("../../../../wit/deps/sockets/package.wit"),
    ),
    // The SSO rules the SDK depends on by `path = "../sso"`: beside it here
    // as in plugins/.
    (
        "rust/sso/Cargo.toml",
        include_str!("../../../../plugins/sso/Cargo.toml"),
    ),
    (
        "rust/sso/src/lib.rs",
        include_str!("../../../../plugins/sso/src/lib.rs"),
    ),
    (
        "rust/addonhost-sdk/Cargo.toml",
        include_str!("../../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "rust/addonhost-sdk/src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "rust/addonhost-sdk/src/credentials.rs",
        include_str!("../../../../plugins/sdk/src/credentials.rs"),
    ),
    (
        "rust/addonhost-sdk/src/http.rs",
        include_str!("../../../../plugins/sdk/src/http.rs"),
    ),
    (
        "rust/addonhost-sdk/src/manifest.rs",
        include_str!("../../../../plugins/sdk/src/manifest.rs"),
    ),
    (
        "rust/addonhost-sdk/src/sso.rs",
        include_str!("../../../../plugins/sdk/src/sso.rs"),
    ),
    (
        "rust/addonhost-sdk/src/fetch.rs",
        include_str!("../../../../plugins/sdk/src/fetch.rs"),
    ),
    // The versions the example add-ons are tested with; a scaffold starts
    // from them instead of whatever is newest on crates.io today.
    (
        "rust/Cargo.lock",
        include_str!("../../../../plugins/Cargo.lock"),
    ),
    (
        "python/addonhost.py",
        include_str!("../../../../plugins/sdk-python/addonhost.py"),
    ),
    (
        "python/addonhost_entry.py",
        include_str!("../../../../plugins/sdk-python/addonhost_entry.py"),
    ),
    (
        "python/addonhost_dev.py",
        include_str!("../../../../plugins/sdk-python/addonhost_dev.py"),
    ),
    (
        "js/addonhost.js",
        include_str!("../../../../plugins/sdk-js/addonhost.js"),
    ),
    (
        "js/dev-loader.js",
        include_str!("../../../../plugins/sdk-js/dev-loader.js"),
    ),
];

/// The root of the kit and toolchain caches.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("ADDONHOST_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("addonhost")
}

/// The materialised kit.
#[derive(Debug, Clone)]
pub struct Kit {
    /// Where the kit was written (under the user's cache).
    pub dir: PathBuf,
}

impl Kit {
    /// The WIT folder for Rust and Python builds.
    pub fn wit(&self) -> PathBuf {
        self.dir.join("wit")
    }
    /// The WIT folder for JavaScript builds (see `JS_WASI_VERSION`).
    pub fn wit_js(&self) -> PathBuf {
        self.dir.join("wit-js")
    }
    /// The Rust SDK crate a Rust add-on depends on.
    pub fn rust_sdk(&self) -> PathBuf {
        self.dir.join("rust/addonhost-sdk")
    }
    /// The lock file Rust add-ons are built with (the same versions offline).
    pub fn rust_lock(&self) -> PathBuf {
        self.dir.join("rust/Cargo.lock")
    }
    /// The Python SDK a Python add-on imports.
    pub fn python_sdk(&self) -> PathBuf {
        self.dir.join("python")
    }
    /// The JavaScript SDK's source (the build adds the add-on's manifest).
    pub fn js_sdk_source(&self) -> &'static str {
        file("js/addonhost.js")
    }
    /// The name of this kit (a hash of its contents).
    pub fn hash(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A kit file's contents.
pub fn file(path: &str) -> &'static str {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, c)| *c)
        .unwrap_or_default()
}

fn kit_hash() -> String {
    let mut h = Sha256::new();
    // The layout and derived files change with the code, not only with FILES.
    h.update(format!("layout 1 {WASI_VERSION} {JS_WASI_VERSION}\0"));
    for (path, contents) in FILES {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(contents.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Writes the kit under [`home`] if this binary's kit is not there yet.
pub fn ensure() -> anyhow::Result<Kit> {
    let root = home().join("kit");
    let dir = root.join(kit_hash());
    if dir.join(".complete").is_file() {
        return Ok(Kit { dir });
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = |rel: &str, contents: &str| -> anyhow::Result<()> {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    for (rel, contents) in FILES {
        write(rel, contents)?;
        if let Some(wit) = rel.strip_prefix("wit/") {
            write(
                &format!("wit-js/{wit}"),
                // Package versions and the `@since` gates that name them.
                &contents.replace(WASI_VERSION, JS_WASI_VERSION),
            )?;
        }
    }
    write(".complete", "")?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another process won the race; its kit is the same.
        Err(_) if dir.join(".complete").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e).with_context(|| format!("installing the kit at {}", dir.display()));
        }
    }
    Ok(Kit { dir })
}

/// An exclusive lock on a file, held until dropped: two builds installing
/// the same toolchain at once would corrupt it.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> anyhow::Result<FileLock> {
        use std::os::fd::AsRawFd;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Runs a tool with its output going to the user; `what` names it in errors.
/// A failure's error also names the first place the tool's output points
/// at (`src/lib.rs:12:5`, `app.py, line 3`), as the compiler said it.
pub(super) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    // The output still reaches the user as it comes; the first error's
    // location is kept for the summary.
    let mut first_error: Option<String> = None;
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = writeln!(out, "{line}");
            if first_error.is_none() {
                first_error = super::location::of(&line);
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        match first_error {
            Some(at) => bail!("{what} failed ({status}) at {at}; see the output above"),
            None => bail!("{what} failed ({status}); see the output above"),
        }
    }
    Ok(())
}

/// Installs (once) a toolchain into `toolchains/<name>`, under a lock;
/// `.installed` marks a finished install, so an interrupted one is redone.
fn toolchain(
    name: &str,
    install: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let root = home().join("toolchains");
    let dir = root.join(name);
    if dir.join(".installed").is_file() {
        return Ok(dir);
    }
    let _lock = FileLock::acquire(&root.join(format!("{name}.lock")))?;
    if dir.join(".installed").is_file() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the unfinished {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    eprintln!("==> installing {name} into {} (once)", dir.display());
    install(&dir)?;
    std::fs::write(dir.join(".installed"), "")?;
    eprintln!(
        "==> {name} installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The componentize-py executable, installed from PyPI into a venv.
pub fn componentize_py() -> anyhow::Result<PathBuf> {
    let dir = toolchain(&format!("componentize-py-{COMPONENTIZE_PY}"), |dir| {
        let python = std::env::var("ADDONHOST_PYTHON").unwrap_or_else(|_| "python3".into());
        run(
            Command::new(&python).args(["-m", "venv"]).arg(dir),
            &format!("creating a Python venv with {python} (Python 3.10+ is needed)"),
        )?;
        run(
            Command::new(dir.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("componentize-py=={COMPONENTIZE_PY}"),
            ]),
            &format!("pip install componentize-py=={COMPONENTIZE_PY}"),
        )
    })?;
    Ok(dir.join("bin/componentize-py"))
}

/// componentize-js's command-line entry point (run with `node`), installed
/// from npm.
pub fn componentize_js() -> anyhow::Result<PathBuf> {
    let dir = toolchain(&format!("componentize-js-{COMPONENTIZE_JS}"), |dir| {
        std::fs::write(
            dir.join("package.json"),
            "{\"private\": true, \"description\": \"addonhost's componentize-js toolchain\"}\n",
        )?;
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    &format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"),
                ])
                .current_dir(dir),
            &format!(
                "npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS} (needs Node.js 20+ and npm)"
            ),
        )
    })?;
    Ok(dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `plugins/<crate>` (Cargo.toml and src/), relative to it.
    fn crate_files(name: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let mut out = vec!["Cargo.toml".to_string()];
        let mut dirs = vec![root.join(name).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(root.join(name)).unwrap();
                    out.push(rel.to_str().unwrap().to_string());
                }
            }
        }
        out
    }

    #[test]
    fn kit_carries_every_file_of_the_rust_sdk_and_the_sso_crate_beside_it() {
        // The SDK reaches the SSO crate by `path = "../sso"`, so in the kit
        // they sit side by side under rust/, as under plugins/.
        for (name, in_kit) in [("sdk", "rust/addonhost-sdk"), ("sso", "rust/sso")] {
            for file in crate_files(name) {
                let path = format!("{in_kit}/{file}");
                assert!(
                    FILES.iter().any(|(p, _)| *p == path),
                    "the kit lacks {path} (plugins/{name}/{file})"
                );
            }
        }
        let sdk = FILES
            .iter()
            .find(|(p, _)| *p == "rust/addonhost-sdk/Cargo.toml")
            .unwrap()
            .1;
        assert!(sdk.contains(r#"addonhost-sso = { path = "../sso" }"#));
    }
}
