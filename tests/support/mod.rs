//! Shared helpers of the end-to-end tests: build the real plugins once, run
//! the real `addonhost` binary against a fresh data dir, open the real store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use addonhost::{Host, HostOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_addonhost");

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The plugin folders the tests use: the examples and the hostile test add-on.
pub fn plugin_roots() -> String {
    let r = root();
    std::env::join_paths([r.join("plugins"), r.join("tests/plugins")])
        .unwrap()
        .into_string()
        .unwrap()
}

/// Builds every plugin once per test binary with `addonhost plugins:build`
/// (the same command a user runs).
pub fn plugins_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let r = root();
        let out = Command::new(BIN)
            .args(["plugins:build"])
            .arg(r.join("plugins/kv"))
            .arg(r.join("plugins/exceptions"))
            .arg(r.join("tests/plugins/hostile"))
            .output()
            .expect("running addonhost plugins:build");
        assert!(
            out.status.success(),
            "plugins:build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A fresh data dir and a way to run commands against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// What a command printed and how it exited.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        plugins_built();
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("ADDONHOST_DATA", self.data())
            .env("ADDONHOST_PLUGINS", plugin_roots())
            .env_remove("ADDONHOST_URL")
            .env_remove("ADDONHOST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let out: Output = self.command(args).output().expect("running addonhost");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "addonhost {args:?} failed:\n{}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let r = self.run(args);
        assert_ne!(
            r.code, 0,
            "addonhost {args:?} should have failed:\n{}",
            r.stdout
        );
        (r.code, r.stderr)
    }

    /// `--json` output parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// The app's config as a name → value map.
    pub fn config(&self, app: &str) -> serde_json::Map<String, serde_json::Value> {
        self.json(&["config", "-a", app])
            .as_object()
            .unwrap()
            .clone()
    }

    pub fn release_descriptions(&self, app: &str) -> Vec<String> {
        self.json(&["releases", "-a", app])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["description"].as_str().unwrap().to_string())
            .collect()
    }

    /// Provisions `spec` on `app` and returns the add-on's JSON.
    pub fn create(&self, spec: &str, app: &str, extra: &[&str]) -> serde_json::Value {
        // --json goes before any `-- options`.
        let mut a = vec!["addons:create", spec, "-a", app, "--json"];
        a.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// An in-process host on the same data dir (the embedding API).
    pub fn host(&self) -> Host {
        Host::open(HostOptions::new(
            self.data(),
            std::env::split_paths(&plugin_roots()).collect(),
        ))
        .unwrap()
    }
}

/// Everything a user can see of the store, to prove a failed call changed nothing.
pub fn snapshot(env: &Env, app: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    (
        env.json(&["config", "-a", app]),
        env.json(&["releases", "-a", app]),
        env.json(&["addons", "-a", app]),
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
