//! `plugins:dev`: the edit–build loop. Builds once, then rebuilds whenever a
//! source file of the add-on changes; a running `addonhost serve` sees the
//! new component and hot-reloads it. A failed build prints its errors and
//! leaves the last good component in place (builds write to a temporary file
//! and rename), so the server keeps serving it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::build::{self, JS_SDK_FILE};
use addonhost::manifest::Manifest;

/// Quiet time after the last change before building: editors save in steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a change under the add-on folder is an edit of its sources, not
/// output of a build (ours or the language tool's).
fn is_source(dir: &Path, component: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let skipped_dir = rel.components().any(|c| {
        let s = c.as_os_str().to_string_lossy();
        s == "target" || s == "node_modules" || s == "__pycache__" || s.starts_with('.')
    });
    if skipped_dir || path == component {
        return false;
    }
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !(name == JS_SDK_FILE
        || name == "Cargo.lock"
        || name.ends_with(".tmp")
        || name.ends_with(".wasm")
        || name.ends_with('~')
        || name.ends_with(".swp"))
}

/// One build, reported for the loop. Returns whether it succeeded.
fn build_once(dir: &Path) -> bool {
    match build::build(dir) {
        Ok(b) => {
            eprintln!(
                "✓ {} built; a running `addonhost serve` reloads it now",
                b.id
            );
            true
        }
        Err(e) => {
            eprintln!("✗ build failed: {e:#}\n  the last good component keeps serving");
            false
        }
    }
}

/// Runs the loop until the process is stopped; `max_builds` ends it after
/// that many builds (for scripted use).
pub fn run(dir: &Path, max_builds: Option<usize>) -> anyhow::Result<()> {
    let dir: PathBuf = dir
        .canonicalize()
        .with_context(|| format!("add-on folder {}", dir.display()))?;
    let m = Manifest::load(&dir)?;
    let component = m.component.clone();
    let watch_dir = dir.clone();
    let changes = crate::watch::watch([dir.as_path()], DEBOUNCE, move |p| {
        is_source(&watch_dir, &component, p)
    })?;
    eprintln!(
        "==> watching {} for changes to {} (Ctrl-C to stop)",
        dir.display(),
        m.id
    );
    let mut builds = 0;
    build_once(&dir);
    builds += 1;
    while max_builds.is_none_or(|max| builds < max) {
        // Build once the folder has been quiet for a moment.
        if !changes.next_burst() {
            break;
        }
        eprintln!("==> change detected, rebuilding {}", m.id);
        build_once(&dir);
        builds += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_trigger_builds() {
        let dir = Path::new("/a/queue");
        let component = Path::new("/a/queue/queue.wasm");
        assert!(is_source(dir, component, Path::new("/a/queue/app.py")));
        assert!(is_source(dir, component, Path::new("/a/queue/src/lib.rs")));
        assert!(is_source(
            dir,
            component,
            Path::new("/a/queue/addon-manifest.json")
        ));
        for output in [
            "/a/queue/queue.wasm",
            "/a/queue/queue.wasm.42.tmp",
            "/a/queue/target/release/x.rs",
            "/a/queue/__pycache__/app.pyc",
            "/a/queue/node_modules/x/index.js",
            "/a/queue/addonhost.js",
            "/a/queue/.git/index",
            "/a/queue/Cargo.lock",
        ] {
            assert!(!is_source(dir, component, Path::new(output)), "{output}");
        }
    }
}
