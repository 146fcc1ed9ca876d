//! Watching folders for changes, once for both loops that need it: hot
//! reload in `serve` and the build loop of `plugins:dev`. A save is many
//! file-system events; [`Changes::next_burst`] waits for a burst to end
//! before the caller acts on it.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// A change a watch cares about.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// The file was renamed into place (as builds and most editors write
    /// files): it is whole, so there is nothing to wait for.
    pub complete: bool,
}

/// The changes under some folders, until dropped.
pub struct Changes {
    _watcher: notify::RecommendedWatcher,
    rx: Receiver<Change>,
    quiet: Duration,
}

/// Watches `roots` (those that exist) recursively; `relevant` picks the
/// events that count. Accesses never count: reading a file is an event too,
/// and the caller's own reads would feed the loop.
pub fn watch<'a>(
    roots: impl IntoIterator<Item = &'a Path>,
    quiet: Duration,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
) -> anyhow::Result<Changes> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_))
            || !event.paths.iter().any(|p| relevant(p))
        {
            return;
        }
        use notify::event::{ModifyKind, RenameMode};
        let complete = matches!(
            event.kind,
            notify::EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        let _ = tx.send(Change { complete });
    })?;
    for root in roots {
        if root.exists() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        }
    }
    Ok(Changes {
        _watcher: watcher,
        rx,
        quiet,
    })
}

impl Changes {
    /// Blocks until a burst of changes has ended: every change already
    /// queued is taken, then the folders must stay quiet for the quiet
    /// time — unless every change of the burst was a file renamed into
    /// place, which ends it at once. `false` once the watch has stopped.
    pub fn next_burst(&self) -> bool {
        let Ok(first) = self.rx.recv() else {
            return false;
        };
        let mut complete = first.complete;
        loop {
            let wait = if complete { Duration::ZERO } else { self.quiet };
            match self.rx.recv_timeout(wait) {
                Ok(c) => complete &= c.complete,
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }
}
