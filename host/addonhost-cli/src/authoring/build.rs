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

pub const WASM_TARGET: &str = "wasm32-wasip2";

pub use addonhost::platform::catalog::Language;

/// A finished build.
#[derive(Debug)]
pub struct Built {
    pub id: String,
    pub component: PathBuf,
    pub bytes: u64,
    pub took: Duration,
}

/// Builds the add-on in `dir`, printing progress to stderr.
pub fn build(dir: &Path) -> anyhow::Result<Built> {
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
    let result = match lang {
        Language::Rust => build_rust(dir, &m, &tmp),
        Language::Python => build_python(dir, &m, &tmp),
        Language::Js => build_js(dir, &m, &tmp),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &component)
        .with_context(|| format!("moving the component to {}", component.display()))?;
    let bytes = std::fs::metadata(&m.component)?.len();
    let built = Built {
        id: m.id.clone(),
        component: m.component.clone(),
        bytes,
        took: started.elapsed(),
    };
    eprintln!(
        "==> {} ({}) → {} ({:.1} MiB) in {:.1} s",
        built.id,
        lang.name(),
        built.component.display(),
        bytes as f64 / (1024.0 * 1024.0),
        built.took.as_secs_f64()
    );
    Ok(built)
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

fn build_rust(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    ensure_wasm_target()?;
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

/// `app.py` serves HTTP when it defines the wasi:http handler class.
fn python_world(source: &str) -> &'static str {
    if source.contains("IncomingHandler") {
        "addon-http"
    } else {
        "addon"
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
            .args(["-w", world, "componentize", "app", "-p"])
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
    // Written only when it changes, so `plugins:dev` does not see its own
    // output as an edit.
    let sdk_path = entry.parent().unwrap_or(dir).join(JS_SDK_FILE);
    let sdk = js_sdk(&kit, m)?;
    if std::fs::read_to_string(&sdk_path).ok().as_deref() != Some(sdk.as_str()) {
        std::fs::write(&sdk_path, sdk)
            .with_context(|| format!("writing {}", sdk_path.display()))?;
    }
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
