//! `plugins` and `plugins:build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use super::output::{self, JsonFlag};
use super::Cli;
use crate::manifest::{self, Manifest};
use crate::Host;

const WASM_TARGET: &str = "wasm32-wasip2";

#[derive(Args, Debug)]
pub struct Build {
    /// Add-on folders (with addon-manifest.json); every discovered plugin
    /// folder when none are given.
    pub dirs: Vec<PathBuf>,
}

pub fn list(host: &Host, j: &JsonFlag) -> anyhow::Result<()> {
    let rows = host.plugin_statuses();
    if j.json {
        return output::json(&rows);
    }
    output::table(
        &[
            "Plugin",
            "Name",
            "Language",
            "Component",
            "Loaded",
            "Status",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.name.clone(),
                    r.language.to_string(),
                    r.component_hash.clone().unwrap_or_else(|| "-".into()),
                    r.loaded_at.map(output::when).unwrap_or_else(|| "-".into()),
                    match &r.error {
                        Some(e) => format!("{}: {e}", r.status),
                        None => r.status.clone(),
                    },
                ]
            })
            .collect(),
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct Check {
    /// The add-on folder (with addon-manifest.json and its built component).
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Provisioning options after `--`: `-- --key value`.
    #[arg(last = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

/// Runs the conformance checks; exit code 1 when any fails.
pub async fn check(c: &Check) -> anyhow::Result<i32> {
    let options = super::addons::parse_options(&c.options)?;
    let results = crate::check::check(&c.dir, options).await;
    let failed = results.iter().filter(|r| !r.passed).count();
    if c.json {
        output::json(&serde_json::json!({"passed": failed == 0, "checks": results}))?;
    } else {
        for r in &results {
            println!(
                "{} {:<48} {}",
                if r.passed { "✓" } else { "✗" },
                r.name,
                r.detail
            );
        }
        println!(
            "\n{} of {} checks passed",
            results.len() - failed,
            results.len()
        );
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

pub fn build(cli: &Cli, b: &Build) -> anyhow::Result<()> {
    let dirs = if b.dirs.is_empty() {
        let roots: Vec<PathBuf> = std::env::split_paths(&cli.plugins).collect();
        let catalog = crate::platform::Catalog::discover(&roots);
        let mut dirs: Vec<PathBuf> = catalog.services().map(|s| s.manifest.dir.clone()).collect();
        dirs.extend(catalog.broken.iter().map(|b| b.dir.clone()));
        if dirs.is_empty() {
            bail!(
                "no add-on folders found under {}; pass folders to build",
                cli.plugins
            );
        }
        dirs
    } else {
        b.dirs.clone()
    };
    for dir in &dirs {
        let m = Manifest::load(dir)?;
        match crate::platform::catalog::language(dir) {
            "rust" => build_rust(dir, &m)?,
            other => bail!(
                "{}: cannot build a {other} add-on (expected Cargo.toml next to {})",
                dir.display(),
                manifest::FILE_NAME
            ),
        }
    }
    Ok(())
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
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed");
    }
    Ok(())
}

fn build_rust(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let manifest_path = dir.join("Cargo.toml");
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

    eprintln!("==> building {} ({package}) for {WASM_TARGET}", m.id);
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(&manifest_path)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!(
            "{}: cargo build failed (see the output above)",
            dir.display()
        );
    }
    let artifact = target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    // Copy through a temporary name so a running host never reads half a file.
    let tmp = m
        .component
        .with_extension(format!("wasm.{}.tmp", std::process::id()));
    std::fs::copy(&artifact, &tmp).with_context(|| format!("copying {}", artifact.display()))?;
    std::fs::rename(&tmp, &m.component)?;
    let size = std::fs::metadata(&m.component)?.len();
    eprintln!(
        "==> {} → {} ({} KiB)",
        m.id,
        m.component.display(),
        size / 1024
    );
    Ok(())
}
