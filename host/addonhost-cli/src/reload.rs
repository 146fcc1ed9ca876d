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

/// Watches the host's plugin folders for as long as the process runs: each
/// burst of changes reloads the catalog (on a thread of its own).
pub fn watch(host: Arc<Host>) -> anyhow::Result<()> {
    let changes = crate::watch::watch(
        host.options().plugin_dirs.iter().map(|p| p.as_path()),
        DEBOUNCE,
        relevant,
    )?;
    std::thread::Builder::new()
        .name("addonhost-reload".into())
        .spawn(move || {
            while changes.next_burst() {
                let r = host.reload();
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
                    std::thread::spawn(move || host.optimize(&r.quick));
                }
            }
        })?;
    Ok(())
}
