//! `plugins:build`: one add-on folder → one component next to its manifest,
//! whatever the language. The component is written under a temporary name
//! and renamed, so a running server's hot reload never reads half a file,
//! and a failed build leaves the last good component in place.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::kit::{self, run, Kit};
use addonhost::manifest::{self, Manifest};

/// The target every Rust add-on is built for (a WASI 0.2 component).
pub const WASM_TARGET: &str = "wasm32-wasip2";

pub use addonhost::platform::catalog::Language;

/// A finished build.
#[derive(Debug)]
pub struct Built {
    /// The add-on's id (its folder's name).
    pub id: String,
    /// The component written next to the manifest.
    pub component: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// How long the build took.
    pub took: Duration,
    /// Whether the component's bytes changed (a running server reloads it).
    pub changed: bool,
}

/// Builds the add-on in `dir`, printing progress to stderr: the production
/// component (`plugins:build`). Unchanged sources leave the component as it
/// is (a running server has nothing to reload).
pub fn build(dir: &Path) -> anyhow::Result<Built> {
    finish(dir, true, |lang, dir, m, tmp| match lang {
        Language::Rust => build_rust(dir, m, tmp).map(|()| Outcome::Built),
        Language::Python => unchanged_or(dir, m, lang, tmp, build_python),
        Language::Js => unchanged_or(dir, m, lang, tmp, build_js),
    })
}

/// Builds the add-on in `dir` for `plugins:dev`: a development build (see
/// `addonhost::runtime::dev`); `state` carries what the loop learned
/// before.
pub fn build_dev(dir: &Path, state: &mut DevState) -> anyhow::Result<Built> {
    finish(dir, false, |lang, dir, m, tmp| {
        match lang {
            Language::Rust => build_rust_dev(dir, m, tmp, state),
            Language::Python => build_python_dev(dir, m, tmp),
            Language::Js => build_js_dev(dir, m, tmp),
        }
        .map(|()| Outcome::Built)
    })
}

/// What a language's build step did.
enum Outcome {
    /// It wrote the new component to the temporary file.
    Built,
    /// Its inputs are those of the component in place: nothing written.
    UpToDate,
}

/// The steps every build shares: the manifest and the language, the
/// component written under a temporary name and renamed into place — only
/// when its bytes changed, so a running server never reloads for nothing.
fn finish(
    dir: &Path,
    production: bool,
    step: impl FnOnce(Language, &Path, &Manifest, &Path) -> anyhow::Result<Outcome>,
) -> anyhow::Result<Built> {
    let started = Instant::now();
    let m = Manifest::load(dir)?;
    let lang = Language::detect(dir).with_context(|| {
        format!(
            "{}: cannot tell the add-on's language: expected Cargo.toml (Rust), app.py (Python) or package.json/index.js (JavaScript) next to {}",
            dir.display(),
            manifest::FILE_NAME
        )
    })?;
    // Absolute: the language tools run in other working directories.
    let component = std::path::absolute(&m.component)?;
    let tmp = component.with_extension(format!("wasm.{}.tmp", std::process::id()));
    let outcome = match step(lang, dir, &m, &tmp) {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let changed = match outcome {
        Outcome::UpToDate => false,
        Outcome::Built => {
            let same = std::fs::read(&component)
                .ok()
                .is_some_and(|old| std::fs::read(&tmp).is_ok_and(|new| new == old));
            if same {
                let _ = std::fs::remove_file(&tmp);
            } else {
                std::fs::rename(&tmp, &component)
                    .with_context(|| format!("moving the component to {}", component.display()))?;
            }
            !same
        }
    };
    let bytes = std::fs::metadata(&m.component)?.len();
    let built = Built {
        id: m.id.clone(),
        component: m.component.clone(),
        bytes,
        took: started.elapsed(),
        changed,
    };
    if changed {
        eprintln!(
            "==> {} ({}) → {} ({:.1} MiB) in {:.1} s",
            built.id,
            lang.name(),
            built.component.display(),
            bytes as f64 / (1024.0 * 1024.0),
            built.took.as_secs_f64()
        );
    } else {
        eprintln!(
            "==> {} ({}) is up to date: {} unchanged ({:.1} s)",
            built.id,
            lang.name(),
            built.component.display(),
            built.took.as_secs_f64()
        );
    }
    // A development build is never what a later `plugins:build` may keep.
    let inputs = production.then(|| outcome_inputs(dir, &m, lang)).flatten();
    if let Err(e) = remember(&component, inputs) {
        tracing::debug!("cannot record the build's inputs: {e:#}");
    }
    Ok(built)
}

/// A Python or JavaScript build is a snapshot that differs at every run
/// even from the same sources: when the inputs (the sources, the manifest,
/// the kit and the tool) are those the component in place was built from,
/// the build is skipped.
fn unchanged_or(
    dir: &Path,
    m: &Manifest,
    lang: Language,
    tmp: &Path,
    step: fn(&Path, &Manifest, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    let component = std::path::absolute(&m.component)?;
    if let Some(inputs) = outcome_inputs(dir, m, lang) {
        if recorded(&component).is_some_and(|r| r == inputs) {
            return Ok(Outcome::UpToDate);
        }
    }
    step(dir, m, tmp).map(|()| Outcome::Built)
}

/// The inputs of a production build of a Python or JavaScript add-on, and
/// the hash of the component made from them: one line.
fn outcome_inputs(dir: &Path, m: &Manifest, lang: Language) -> Option<String> {
    if lang == Language::Rust {
        return None; // cargo knows, and its builds are reproducible
    }
    let kit = kit::ensure().ok()?;
    let mut h = sha2::Sha256::new();
    use sha2::Digest;
    h.update(format!(
        "{} {} {} {}\0",
        kit.hash(),
        kit::COMPONENTIZE_PY,
        kit::COMPONENTIZE_JS,
        lang.name()
    ));
    for (path, text) in source_files(dir, &m.component, lang, usize::MAX).ok()? {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    let component = std::fs::read(&m.component).ok()?;
    Some(format!(
        "{} {}",
        hex::encode(h.finalize()),
        addonhost::runtime::content_hash(&component)
    ))
}

/// Where the inputs of the component at `component` are recorded (outside
/// the add-on's folder, so nothing there changes).
fn record_path(component: &Path) -> PathBuf {
    use sha2::Digest;
    let key = hex::encode(&sha2::Sha256::digest(component.to_string_lossy().as_bytes())[..12]);
    kit::home().join("builds").join(key)
}

fn recorded(component: &Path) -> Option<String> {
    std::fs::read_to_string(record_path(component)).ok()
}

fn remember(component: &Path, inputs: Option<String>) -> anyhow::Result<()> {
    let path = record_path(component);
    match inputs {
        Some(inputs) => {
            std::fs::create_dir_all(path.parent().context("no parent")?)?;
            std::fs::write(&path, inputs)?;
        }
        None => {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The add-on's source files of `lang` (and its manifest), by path relative
/// to `dir`: not build output, not dependencies, not hidden folders.
pub fn source_files(
    dir: &Path,
    component: &Path,
    lang: Language,
    max_bytes: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let exts: &[&str] = match lang {
        Language::Rust => &["rs", "toml"],
        Language::Python => &["py"],
        Language::Js => &["js", "mjs", "json"],
    };
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !(name.starts_with('.')
                    || ["target", "node_modules", "__pycache__"].contains(&name))
                {
                    dirs.push(path);
                }
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if path == component || !(exts.contains(&ext) || name == manifest::FILE_NAME) {
                continue;
            }
            if name == "package-lock.json" {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            total += text.len();
            if total > max_bytes {
                bail!(
                    "{}: the add-on's sources are over {} MiB; a development build carries them all",
                    dir.display(),
                    max_bytes >> 20
                );
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, text));
        }
    }
    out.sort();
    Ok(out)
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (needed to install the wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("==> installing the {WASM_TARGET} target (rustup target add {WASM_TARGET})");
    run(
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
        &format!("rustup target add {WASM_TARGET}"),
    )
}

/// The package a Rust add-on builds and where cargo puts it.
#[derive(Debug, Clone)]
struct RustPackage {
    name: String,
    target_dir: PathBuf,
}

fn rust_package(dir: &Path) -> anyhow::Result<RustPackage> {
    let manifest_path = dir.join("Cargo.toml");
    relink_sdk(&manifest_path, &kit::ensure()?)?;
    let meta = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest_path)
        .output()
        .context("running cargo metadata")?;
    if !meta.status.success() {
        bail!(
            "{}: cargo metadata failed: {}",
            dir.display(),
            String::from_utf8_lossy(&meta.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout)?;
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("cargo metadata has no target_directory")?,
    );
    let canonical = manifest_path.canonicalize()?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(canonical.as_path()))
        })
        .and_then(|p| p["name"].as_str())
        .with_context(|| format!("{} is not a package", manifest_path.display()))?
        .to_string();
    Ok(RustPackage {
        name: package,
        target_dir,
    })
}

fn build_rust(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let manifest_path = dir.join("Cargo.toml");
    let RustPackage {
        name: package,
        target_dir,
    } = rust_package(dir)?;

    eprintln!(
        "==> building {} ({package}) with cargo for {WASM_TARGET}",
        m.id
    );
    run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                WASM_TARGET,
                "--manifest-path",
            ])
            .arg(&manifest_path),
        &format!("{}: cargo build", dir.display()),
    )?;
    let artifact = target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(&artifact, out).with_context(|| format!("copying {}", artifact.display()))?;
    Ok(())
}

/// A scaffolded add-on depends on the SDK inside the kit, whose folder is
/// named by its contents: when that folder is gone (a cleared cache, a newer
/// addonhost), point the dependency at this binary's kit.
fn relink_sdk(cargo_toml: &Path, kit: &Kit) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(cargo_toml) else {
        return Ok(());
    };
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let dep = line.trim_start().starts_with("addonhost-sdk")
                && line.contains("/kit/")
                && line.contains("path = \"");
            let old = dep
                .then(|| line.split("path = \"").nth(1)?.split('"').next())
                .flatten();
            match old {
                Some(old) if !Path::new(old).exists() => {
                    changed = true;
                    line.replace(old, &kit.rust_sdk().display().to_string())
                }
                _ => line.to_string(),
            }
        })
        .collect();
    if changed {
        eprintln!(
            "==> {}: the SDK now comes from {}",
            cargo_toml.display(),
            kit.rust_sdk().display()
        );
        std::fs::write(cargo_toml, lines.join("\n") + "\n")?;
    }
    Ok(())
}

/// `app.py` serves HTTP when it defines the wasi:http handler class, and
/// calls out when it uses `addonhost.fetch`: componentize-py binds only the
/// world's imports, so the world must name the outgoing handler.
fn python_world(source: &str) -> &'static str {
    match (
        source.contains("IncomingHandler"),
        source.contains("fetch("),
    ) {
        (false, false) => "addon",
        (true, false) => "addon-http",
        (false, true) => "addon-outbound",
        (true, true) => "addon-http-outbound",
    }
}

fn build_python(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let kit = kit::ensure()?;
    let tool = kit::componentize_py()?;
    let source = std::fs::read_to_string(dir.join("app.py"))
        .with_context(|| format!("reading {}", dir.join("app.py").display()))?;
    let world = python_world(&source);
    eprintln!(
        "==> building {} with componentize-py {} (world {world})",
        m.id,
        kit::COMPONENTIZE_PY
    );
    let dir = dir.canonicalize()?;
    run(
        Command::new(&tool)
            .arg("-d")
            .arg(kit.wit())
            // The entry module imports app.py and guards its exports (see
            // plugins/sdk-python/addonhost_entry.py).
            .args(["-w", world, "componentize", "addonhost_entry", "-p"])
            .arg(&dir)
            .arg("-p")
            .arg(kit.python_sdk())
            .arg("-o")
            .arg(out)
            // The snapshot reads addon-manifest.json from the add-on folder.
            .current_dir(&dir),
        &format!("{}: componentize-py", dir.display()),
    )
}

/// The entry module: package.json's `main`, else index.js.
fn js_entry(dir: &Path) -> anyhow::Result<PathBuf> {
    let pkg = dir.join("package.json");
    if pkg.is_file() {
        let text = std::fs::read_to_string(&pkg)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", pkg.display()))?;
        if let Some(main) = v["main"].as_str() {
            return Ok(dir.join(main));
        }
    }
    Ok(dir.join("index.js"))
}

/// The generated `addonhost.js`: the SDK plus the add-on's manifest.
pub const JS_SDK_FILE: &str = "addonhost.js";

fn js_sdk(kit: &Kit, m: &Manifest) -> anyhow::Result<String> {
    let manifest_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.dir.join(manifest::FILE_NAME))?)?;
    Ok(format!(
        "// Generated by `addonhost plugins:build` from the addonhost JavaScript SDK and\n\
         // addon-manifest.json: regenerated at every build, do not edit.\n\n{}\n\
         /** The add-on's manifest, as built. */\nexport const manifest = {};\n",
        kit.js_sdk_source(),
        serde_json::to_string_pretty(&manifest_json)?
    ))
}

/// Writes the generated `addonhost.js` next to the entry module — only when
/// it changes, so `plugins:dev` does not see its own output as an edit.
fn write_js_sdk(kit: &Kit, m: &Manifest, entry: &Path, dir: &Path) -> anyhow::Result<()> {
    let sdk_path = entry.parent().unwrap_or(dir).join(JS_SDK_FILE);
    let sdk = js_sdk(kit, m)?;
    if std::fs::read_to_string(&sdk_path).ok().as_deref() != Some(sdk.as_str()) {
        std::fs::write(&sdk_path, sdk)
            .with_context(|| format!("writing {}", sdk_path.display()))?;
    }
    Ok(())
}

/// index.js serves HTTP when it listens for fetch events or exports the
/// wasi:http handler itself.
fn js_world(source: &str) -> &'static str {
    if source.contains("addEventListener(") || source.contains("incomingHandler") {
        "addon-http"
    } else {
        "addon"
    }
}

fn build_js(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let kit = kit::ensure()?;
    let cli = kit::componentize_js()?;
    let entry = js_entry(dir)?;
    let source = std::fs::read_to_string(&entry)
        .with_context(|| format!("reading the entry module {}", entry.display()))?;
    let world = js_world(&source);
    write_js_sdk(&kit, m, &entry, dir)?;
    eprintln!(
        "==> building {} with componentize-js {} (world {world})",
        m.id,
        kit::COMPONENTIZE_JS
    );
    run(
        Command::new("node")
            .arg(&cli)
            .arg(&entry)
            .arg("-w")
            .arg(kit.wit_js())
            .args(["-n", world, "-o"])
            .arg(out),
        &format!("{}: componentize-js", dir.display()),
    )
}

// ---- development builds (`plugins:dev`) --------------------------------------

/// What the dev loop keeps between builds: work done once.
#[derive(Debug, Default)]
pub struct DevState {
    target_checked: bool,
    rust: Option<RustPackage>,
}

/// The cargo profile of a Rust development build, as environment overrides
/// of the `dev` profile (whatever the add-on's Cargo.toml says): quick to
/// rebuild (incremental, many codegen units, no LTO), still optimized a
/// little (the quick tier compiles less code), and with the line tables a
/// trap's backtrace names lines from.
pub const RUST_DEV_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_DEV_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_DEV_DEBUG", "line-tables-only"),
    ("CARGO_PROFILE_DEV_INCREMENTAL", "true"),
    ("CARGO_PROFILE_DEV_CODEGEN_UNITS", "256"),
    ("CARGO_PROFILE_DEV_LTO", "false"),
    ("CARGO_PROFILE_DEV_STRIP", "none"),
    ("CARGO_PROFILE_DEV_PANIC", "unwind"),
];

fn build_rust_dev(
    dir: &Path,
    m: &Manifest,
    out: &Path,
    state: &mut DevState,
) -> anyhow::Result<()> {
    if !state.target_checked {
        ensure_wasm_target()?;
        state.target_checked = true;
    }
    let package = match &state.rust {
        Some(p) => p.clone(),
        None => {
            let p = rust_package(dir)?;
            state.rust = Some(p.clone());
            p
        }
    };
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--target", WASM_TARGET, "--manifest-path"])
        .arg(dir.join("Cargo.toml"));
    for (k, v) in RUST_DEV_PROFILE {
        cargo.env(k, v);
    }
    run(&mut cargo, &format!("{}: cargo build", dir.display()))?;
    let artifact = package
        .target_dir
        .join(WASM_TARGET)
        .join("debug")
        .join(format!("{}.wasm", package.name.replace('-', "_")));
    let code =
        std::fs::read(&artifact).with_context(|| format!("reading {}", artifact.display()))?;
    let _ = m;
    let build = addonhost::runtime::dev::DevBuild {
        language: "rust".into(),
        files: Vec::new(),
    };
    std::fs::write(out, build.append_to(&code)?)?;
    Ok(())
}

/// Top-level modules the sources import that are not among them: the
/// standard (or installed) modules a Python dev loader imports while it is
/// snapshotted.
fn python_imports(files: &[(String, String)]) -> Vec<String> {
    let local: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| {
            let first = p.split('/').next()?;
            Some(first.trim_end_matches(".py").to_string())
        })
        .collect();
    const PROVIDED: &[&str] = &[
        "addonhost",
        "wit_world",
        "componentize_py_types",
        "componentize_py_runtime",
        "componentize_py_async_support",
        "__future__",
    ];
    let mut out = std::collections::BTreeSet::new();
    for (path, text) in files {
        if !path.ends_with(".py") {
            continue;
        }
        for line in text.lines() {
            let t = line.trim_start();
            let names: Vec<&str> = if let Some(rest) = t.strip_prefix("from ") {
                rest.split_whitespace().next().into_iter().collect()
            } else if let Some(rest) = t.strip_prefix("import ") {
                rest.split(',')
                    .filter_map(|p| p.split_whitespace().next())
                    .collect()
            } else {
                continue;
            };
            for name in names {
                let top = name.split('.').next().unwrap_or("");
                let valid = !top.is_empty()
                    && top.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !top.starts_with(|c: char| c.is_ascii_digit());
                if valid && !local.contains(top) && !PROVIDED.contains(&top) {
                    // The whole dotted name: `xml.dom.minidom` needs its
                    // submodule imported, not only `xml`.
                    out.insert(name.trim_end_matches(',').to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The prebuilt Python dev loader for `world` that imports `preload` while
/// it is snapshotted: built once (seconds) and kept under the kit home.
fn python_dev_base(kit: &Kit, world: &str, preload: &[String]) -> anyhow::Result<PathBuf> {
    use sha2::Digest;
    let loader = kit::file("python/addonhost_dev.py").replace(
        "_PRELOAD = []  # written by plugins:dev",
        &format!("_PRELOAD = {}", serde_json::to_string(preload)?),
    );
    let key = hex::encode(
        &sha2::Sha256::digest(format!(
            "{} {} {world}\0{loader}",
            kit.hash(),
            kit::COMPONENTIZE_PY
        ))[..10],
    );
    let root = kit::home().join("dev");
    let base = root.join(format!("python-{world}-{key}.wasm"));
    if base.is_file() {
        return Ok(base);
    }
    let src = root.join(format!("python-{world}-{key}"));
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("addonhost_dev.py"), loader)?;
    // The SDK reads a manifest while it is snapshotted; the loader fills it
    // from the add-on's at each call.
    std::fs::write(src.join(manifest::FILE_NAME), "{}")?;
    let tool = kit::componentize_py()?;
    eprintln!(
        "==> building the Python development loader (world {world}{}; once, then every save is instant)",
        if preload.is_empty() {
            String::new()
        } else {
            format!(", with {}", preload.join(", "))
        }
    );
    let tmp = base.with_extension(format!("wasm.{}.tmp", std::process::id()));
    run(
        Command::new(&tool)
            .arg("-d")
            .arg(kit.wit())
            .args(["-w", world, "componentize", "addonhost_dev", "-p"])
            .arg(&src)
            .arg("-p")
            .arg(kit.python_sdk())
            .arg("-o")
            .arg(&tmp)
            .current_dir(&src),
        "componentize-py (the development loader)",
    )?;
    std::fs::rename(&tmp, &base)?;
    Ok(base)
}

/// Checks the Python sources' syntax with the toolchain's interpreter, so a
/// broken save fails here, naming the file and line, and the last good
/// build keeps serving.
fn check_python_syntax(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    let python = kit::componentize_py()?.with_file_name("python");
    let script = "import sys\nok = True\nfor path in sys.argv[1:]:\n    try:\n        compile(open(path, encoding='utf-8').read(), path, 'exec')\n    except SyntaxError as e:\n        ok = False\n        print(f'  File \"{e.filename}\", line {e.lineno}', file=sys.stderr)\n        if e.text: print('    ' + e.text.rstrip(), file=sys.stderr)\n        print(f'SyntaxError: {e.msg}', file=sys.stderr)\nsys.exit(0 if ok else 1)\n";
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script).current_dir(dir);
    for (path, _) in files.iter().filter(|(p, _)| p.ends_with(".py")) {
        cmd.arg(path);
    }
    run(&mut cmd, &format!("{}: Python syntax", dir.display()))
}

fn build_python_dev(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let kit = kit::ensure()?;
    let files = source_files(
        dir,
        &m.component,
        Language::Python,
        addonhost::runtime::dev::MAX_SOURCE_BYTES,
    )?;
    let app = files
        .iter()
        .find(|(p, _)| p == "app.py")
        .with_context(|| format!("{}: no app.py", dir.display()))?;
    let world = format!("{}-dev", python_world(&app.1));
    check_python_syntax(dir, &files)?;
    let base = python_dev_base(&kit, &world, &python_imports(&files))?;
    let code = std::fs::read(&base)?;
    let build = addonhost::runtime::dev::DevBuild {
        language: "python".into(),
        files,
    };
    std::fs::write(out, build.append_to(&code)?)?;
    Ok(())
}

/// The prebuilt JavaScript dev loader for `world` (built once).
fn js_dev_base(kit: &Kit, world: &str) -> anyhow::Result<PathBuf> {
    use sha2::Digest;
    let mut loader = kit::file("js/dev-loader.js").to_string();
    if !world.starts_with("addon-http") {
        // No fetch listener in a world that does not serve HTTP.
        if let (Some(a), Some(b)) = (loader.find("// @http-begin"), loader.find("// @http-end")) {
            loader.replace_range(a..b + "// @http-end".len(), "");
        }
    }
    let key = hex::encode(
        &sha2::Sha256::digest(format!(
            "{} {} {world}\0{loader}",
            kit.hash(),
            kit::COMPONENTIZE_JS
        ))[..10],
    );
    let root = kit::home().join("dev");
    let base = root.join(format!("js-{world}-{key}.wasm"));
    if base.is_file() {
        return Ok(base);
    }
    let src = root.join(format!("js-{world}-{key}"));
    std::fs::create_dir_all(&src)?;
    // Named so the loader's own frames can be told from the author's.
    std::fs::write(src.join("addonhost-dev.js"), loader)?;
    let cli = kit::componentize_js()?;
    eprintln!("==> building the JavaScript development loader (world {world}; once, then every save is instant)");
    let tmp = base.with_extension(format!("wasm.{}.tmp", std::process::id()));
    run(
        Command::new("node")
            .arg(&cli)
            .arg(src.join("addonhost-dev.js"))
            .arg("-w")
            .arg(kit.wit_js())
            .args(["-n", world, "-o"])
            .arg(&tmp)
            .current_dir(&src),
        "componentize-js (the development loader)",
    )?;
    std::fs::rename(&tmp, &base)?;
    Ok(base)
}

/// Checks the JavaScript modules' syntax with Node (`node --check`, as ES
/// modules), so a broken save fails here, naming the file and line, and the
/// last good build keeps serving.
fn check_js_syntax(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    let scratch = kit::home().join("dev").join(format!(
        "check-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        for (path, text) in files {
            // The generated SDK is known good.
            if !(path.ends_with(".js") || path.ends_with(".mjs")) || path.ends_with(JS_SDK_FILE) {
                continue;
            }
            // As `.mjs`, so Node parses it as a module.
            let copy = scratch.join(format!("{path}.mjs"));
            std::fs::create_dir_all(copy.parent().context("no parent")?)?;
            std::fs::write(&copy, text)?;
            let out = Command::new("node")
                .arg("--check")
                .arg(&copy)
                .output()
                .context("running node --check (Node.js 20+ is needed)")?;
            if !out.status.success() {
                let shown = copy.display().to_string();
                let said = String::from_utf8_lossy(&out.stderr).replace(&shown, path);
                let said: String = said
                    .lines()
                    .take_while(|l| !l.trim_start().starts_with("at "))
                    .collect::<Vec<_>>()
                    .join("\n");
                eprintln!("{}", said.trim_end());
                let at = said.lines().find_map(super::location::of);
                match at {
                    Some(at) => bail!(
                        "{}: JavaScript syntax error at {at}; see the output above",
                        dir.display()
                    ),
                    None => bail!(
                        "{}: JavaScript syntax error in {path}; see the output above",
                        dir.display()
                    ),
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn build_js_dev(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let kit = kit::ensure()?;
    let entry = js_entry(dir)?;
    let source = std::fs::read_to_string(&entry)
        .with_context(|| format!("reading the entry module {}", entry.display()))?;
    let world = format!("{}-dev", js_world(&source));
    write_js_sdk(&kit, m, &entry, dir)?;
    let files = source_files(
        dir,
        &m.component,
        Language::Js,
        addonhost::runtime::dev::MAX_SOURCE_BYTES,
    )?;
    check_js_syntax(dir, &files)?;
    let mut packed = Vec::with_capacity(files.len() + 1);
    let entry_rel = entry
        .strip_prefix(dir)
        .unwrap_or(&entry)
        .to_string_lossy()
        .into_owned();
    packed.push((".addonhost/entry".to_string(), entry_rel));
    for (path, text) in files {
        if path.ends_with(".js") || path.ends_with(".mjs") {
            packed.push((path.clone(), super::esm::to_function(&path, &text)?));
        }
    }
    let base = js_dev_base(&kit, &world)?;
    let code = std::fs::read(&base)?;
    let build = addonhost::runtime::dev::DevBuild {
        language: "js".into(),
        files: packed,
    };
    std::fs::write(out, build.append_to(&code)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_follow_what_the_source_serves() {
        assert_eq!(python_world("class Lifecycle: pass"), "addon");
        assert_eq!(
            python_world("IncomingHandler = addonhost.http_handler(handle)"),
            "addon-http"
        );
        assert_eq!(python_world("r = addonhost.fetch(url)"), "addon-outbound");
        assert_eq!(
            python_world("addonhost.fetch(u)\nIncomingHandler = h"),
            "addon-http-outbound"
        );
        assert_eq!(js_world("export const sso = {}"), "addon");
        assert_eq!(
            js_world("addEventListener('fetch', (e) => e.respondWith(x))"),
            "addon-http"
        );
    }

    #[test]
    fn languages_parse_with_their_short_names() {
        assert_eq!("py".parse::<Language>().unwrap(), Language::Python);
        assert_eq!("javascript".parse::<Language>().unwrap(), Language::Js);
        let e = "go".parse::<Language>().unwrap_err();
        assert!(e.contains("rust, python or js"), "{e}");
    }

    #[test]
    fn the_command_line_takes_the_aliases_too() {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["addonhost", "plugins:new", "x", "--lang", "py"])
                .expect("py is an alias of python");
        match cli.command {
            crate::cli::Command::PluginsNew(n) => assert_eq!(n.lang.0, Language::Python),
            other => panic!("{other:?}"),
        }
        let e = crate::cli::Cli::try_parse_from(["addonhost", "plugins:new", "x", "--lang", "go"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rust") && e.contains("python") && e.contains("js"),
            "{e}"
        );
    }
}
