//! Row 1c: the Extism baseline, built and run from `examples/extism-bench`
//! (a crate of its own: Extism 1.30 brings wasmtime 43). Installs the
//! wasm32-unknown-unknown target, builds the plugin and the runner, and reads
//! the runner's JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// (median, p99) of `calls` Extism calls.
pub fn measure(calls: usize) -> anyhow::Result<(Duration, Duration)> {
    let dir = Path::new("examples/extism-bench");
    run(
        Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
        "rustup target add wasm32-unknown-unknown",
    )?;
    run(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(dir.join("plugin/Cargo.toml")),
        "building the Extism plugin",
    )?;
    run(
        Command::new("cargo")
            .args(["build", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml")),
        "building the Extism runner",
    )?;
    let out = Command::new(dir.join("target/debug/extism-bench"))
        .arg(dir.join("plugin/target/wasm32-unknown-unknown/release/kv_extism.wasm"))
        .arg(calls.to_string())
        .output()
        .context("running extism-bench")?;
    if !out.status.success() {
        bail!(
            "extism-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ns = |k: &str| Duration::from_nanos(v[k].as_u64().unwrap_or(0));
    Ok((ns("median_ns"), ns("p99_ns")))
}
