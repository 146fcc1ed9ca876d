//! Hot reload for a running server: watch the plugin folders, and when a
//! plugin's manifest or component changes, rebuild the catalog in the
//! background and swap it in (see [`Host::reload`]). A component compiled
//! for the first time is served at once from the quick tier (Winch), then
//! swapped for its optimized build (Cranelift) when that is ready
//! ([`Host::optimize`]). Calls already running
//! finish on the version they started with; a broken change keeps the
//! previous version serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use addonhost::{manifest, Host};

/// Quiet time after the last change before reloading, for files written in
/// place: coalesces the events of one save (a slow copy may still take a
/// second reload). A file renamed into place (as `plugins:build` and most
/// editors and build tools do) is complete and reloads at once.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Whether a changed path can affect the catalog: a manifest or a component,
/// outside build output.
fn relevant(path: &Path) -> bool {
    if path
        .components()
        .any(|c| c.as_os_str() == "target" || c.as_os_str() == "node_modules")
    {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == manifest::FILE_NAME || name.ends_with(".wasm") || path.extension().is_none()
}

/// Watches the host's plugin folders until the returned watcher is dropped.
pub fn watch(host: Arc<Host>) -> anyhow::Result<notify::RecommendedWatcher> {
    // Each relevant change, and whether it was a file renamed into place.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Opening and reading a file are events too, and a reload reads
            // the manifests: only changes count, or reloads would feed
            // themselves.
            let changed = !matches!(event.kind, notify::EventKind::Access(_));
            if changed && event.paths.iter().any(|p| relevant(p)) {
                use notify::event::{ModifyKind, RenameMode};
                let renamed = matches!(
                    event.kind,
                    notify::EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
                let _ = tx.send(renamed);
            }
        }
    })?;
    for root in &host.options().plugin_dirs {
        if root.exists() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        }
    }
    tokio::spawn(async move {
        while let Some(renamed) = rx.recv().await {
            // Take every change already queued; unless all were renames
            // into place, wait until the folder has been quiet for a moment.
            let mut complete = renamed;
            loop {
                let wait = if complete { Duration::ZERO } else { DEBOUNCE };
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(renamed)) => complete &= renamed,
                    _ => break,
                }
            }
            let reloading = host.clone();
            let report = tokio::task::spawn_blocking(move || reloading.reload()).await;
            match report {
                Ok(r) => {
                    if !r.is_empty() {
                        eprintln!(
                            "reload: loaded {:?}, removed {:?}, failed {:?}",
                            r.loaded,
                            r.removed,
                            r.failed.iter().map(|(id, _)| id).collect::<Vec<_>>()
                        );
                    }
                    if !r.quick.is_empty() {
                        // Serving already; the optimized code follows.
                        let host = host.clone();
                        tokio::task::spawn_blocking(move || host.optimize(&r.quick));
                    }
                }
                Err(e) => tracing::error!("reload panicked: {e}"),
            }
        }
    });
    Ok(watcher)
}
