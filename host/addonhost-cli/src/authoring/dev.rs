//! `plugins:dev`: the edit–build loop. Builds once, then rebuilds whenever a
//! source file of the add-on changes; a running `addonhost serve` sees the
//! new component and hot-reloads it. A failed build prints its errors and
//! leaves the last good component in place (builds write to a temporary file
//! and rename), so the server keeps serving it.
//!
//! The builds are development builds (`build::build_dev`): Rust with a
//! quick, incremental profile that keeps line tables; Python and JavaScript
//! as a prebuilt loader plus the add-on's sources, so a save costs no
//! componentizing. Beside its build messages the loop shows the add-on's
//! log lines and each call's outcome from the running server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::build::{self, JS_SDK_FILE};
use crate::cli::logs::{self, Target};
use addonhost::manifest::Manifest;

/// Quiet time after the last change before building, for files written in
/// place (one save can be a truncate and a write); a file renamed into
/// place (most editors) builds at once.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

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
fn build_once(dir: &Path, state: &mut build::DevState) -> bool {
    match build::build_dev(dir, state) {
        Ok(b) if b.changed => {
            eprintln!(
                "✓ {} built (development build); a running `addonhost serve` reloads it now",
                b.id
            );
            true
        }
        Ok(b) => {
            eprintln!("✓ {} unchanged; nothing to reload", b.id);
            true
        }
        Err(e) => {
            eprintln!("✗ build failed: {e:#}\n  the last good component keeps serving");
            false
        }
    }
}

/// Shows add-on `id`'s log lines and calls from the server at `target`, on a
/// thread of its own, for as long as the process runs: connecting again
/// whenever the server goes and comes back.
fn show_logs(target: Target, id: String) {
    let spawned = std::thread::Builder::new()
        .name("addonhost-dev-logs".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let mut said_waiting = false;
            loop {
                let mut connected = false;
                let r = rt.block_on(logs::stream(&target, None, Some(&id), |line| {
                    if !connected {
                        connected = true;
                    }
                    eprintln!("  │ {}", dev_line(&line));
                }));
                match r {
                    Err(e) if !said_waiting => {
                        eprintln!("==> not showing {id}'s log lines yet: {e:#}");
                        said_waiting = true;
                    }
                    Ok(()) => said_waiting = false,
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
    if let Err(e) = spawned {
        eprintln!("==> cannot show the add-on's log lines: {e}");
    }
}

/// A log line as the dev loop shows it: the time, the call, the line.
fn dev_line(line: &addonhost_server::logs::LogLine) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(line.at as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[hour]:[minute]:[second].[subsecond digits:3]"
            ))
            .ok()
        })
        .unwrap_or_default();
    let call = match (&line.call, line.kind.as_str()) {
        (_, "call") => String::new(),
        (Some(call), _) => format!("[{call}] "),
        (None, _) => String::new(),
    };
    let level = match line.level.as_str() {
        "info" => String::new(),
        other => format!("{other}: "),
    };
    format!("{at} {call}{level}{}", logs::describe(line))
}

/// Runs the loop until the process is stopped; `max_builds` ends it after
/// that many builds (for scripted use); with `logs`, the add-on's lines from
/// that server are shown too.
pub fn run(dir: &Path, max_builds: Option<usize>, logs: Option<Target>) -> anyhow::Result<()> {
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
    if let Some(target) = logs {
        show_logs(target, m.id.clone());
    }
    let mut state = build::DevState::default();
    let mut builds = 0;
    build_once(&dir, &mut state);
    builds += 1;
    while max_builds.is_none_or(|max| builds < max) {
        // Build once the folder has been quiet for a moment.
        if !changes.next_burst() {
            break;
        }
        eprintln!("==> change detected, rebuilding {}", m.id);
        build_once(&dir, &mut state);
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
