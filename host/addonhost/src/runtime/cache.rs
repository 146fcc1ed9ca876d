//! The on-disk cache of compiled components.
//!
//! Compiling a component is the slow part of loading a plugin (seconds for a
//! Python or JavaScript one); deserializing a compiled artifact takes
//! milliseconds. Entries are keyed by the component's SHA-256 and by
//! wasmtime's compatibility hash (engine version and settings), so a changed
//! component or engine never reuses a stale artifact. Each artifact has a
//! sidecar with a format tag, its length and CRC-32: a corrupt or truncated
//! entry is detected before wasmtime ever sees it, deleted, and rebuilt. (CRC-32,
//! not a cryptographic hash: it guards against damage, at memory speed, on
//! artifacts of tens of megabytes read at every start; whoever can write the
//! cache folder could run code through it anyway.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where a component came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Compiled now (and stored, when a cache is configured).
    Compiled,
    /// Loaded from the cache without compiling.
    CacheHit,
    /// Compiled by the quick tier (Winch) for a hot reload; the optimized
    /// version replaces it when Cranelift is done.
    Quick,
}

/// A directory of compiled artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// The entries being compiled now, each with a lock its compiler holds:
    /// a second load of the same component (two reload events, a reload and
    /// an optimize) waits for the first and reads its entry, so a component
    /// is compiled once. Shared by clones.
    compiling: Arc<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>>,
}

impl ArtifactCache {
    /// The cache in `dir` (the host uses `<data dir>/cache`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ArtifactCache {
            dir: dir.into(),
            compiling: Arc::default(),
        }
    }

    /// The lock of entry `path`, made on first ask (and dropped with its
    /// last holder).
    fn entry_lock(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, weak| weak.strong_count() > 0);
        if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(Mutex::new(()));
        locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
        lock
    }

    fn entry(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{content_hash}-{:016x}.cwasm", h.finish()))
    }

    /// Whether an entry for `content_hash` compiled by `engine` is stored.
    pub fn contains(&self, engine: &Engine, content_hash: &str) -> bool {
        let path = self.entry(engine, content_hash);
        path.is_file() && sum_path(&path).is_file()
    }

    /// The compiled component for `bytes` (whose SHA-256 is `content_hash`),
    /// from the cache or compiled now and stored.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_hash: &str,
    ) -> anyhow::Result<(Component, Origin)> {
        let path = self.entry(engine, content_hash);
        if let Some(component) = read_entry(engine, &path) {
            return Ok((component, Origin::CacheHit));
        }
        // One compile per entry in this process: whoever waited here finds
        // the entry the first one wrote.
        let lock = self.entry_lock(&path);
        let _compiling = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(component) = read_entry(engine, &path) {
            return Ok((component, Origin::CacheHit));
        }
        let component = Component::new(engine, bytes).map_err(anyhow::Error::from)?;
        // A cache that cannot be written only costs speed, never the load.
        if let Err(e) = write_entry(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot store compiled component: {e:#}");
        }
        Ok((component, Origin::Compiled))
    }
}

/// An entry is two files: `<key>.cwasm`, the artifact exactly as
/// `Component::serialize` wrote it (so it can be mapped straight from disk:
/// its code pages are shared with the page cache and only touched pages
/// count against the process), and `<key>.sum`: a format tag, the artifact's
/// length and its CRC-32.
const MAGIC: &[u8; 8] = b"ahcwasm2";
const SUM_LEN: usize = MAGIC.len() + 8 + 4;

fn sum_path(path: &Path) -> PathBuf {
    path.with_extension("sum")
}

fn sum_of(len: u64, crc: u32) -> Vec<u8> {
    let mut sum = Vec::with_capacity(SUM_LEN);
    sum.extend_from_slice(MAGIC);
    sum.extend_from_slice(&len.to_le_bytes());
    sum.extend_from_slice(&crc.to_le_bytes());
    sum
}

/// The CRC-32 and length of a file, read in chunks (no copy of the whole
/// artifact in memory).
fn crc_of_file(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    // No sum: not cached yet, or being written (the artifact is renamed
    // into place before its sum); a write replaces whatever artifact is there.
    let sum = std::fs::read(sum_path(path)).ok()?;
    let artifact = crc_of_file(path).ok();
    let valid = matches!(artifact, Some((len, crc)) if sum == sum_of(len, crc));
    let component = if valid {
        // SAFETY: the artifact was written by `write_entry` from
        // `Component::serialize` (its checksum proves it is intact), and
        // wasmtime itself rejects artifacts of another version or config.
        unsafe { Component::deserialize_file(engine, path) }.ok()
    } else {
        None
    };
    if component.is_none() {
        tracing::warn!(path = %path.display(), "discarding corrupt or foreign compiled component");
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(sum_path(path));
    }
    component
}

fn write_entry(path: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().context("cache entry has no folder")?;
    crate::util::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let payload = component.serialize().map_err(anyhow::Error::from)?;
    let sum = sum_of(payload.len() as u64, crc32fast::hash(&payload));
    // Write then rename, artifact first: a reader never sees half an entry,
    // and an artifact without its sum is not read (the next write replaces it).
    for (target, data) in [(path.to_path_buf(), &payload), (sum_path(path), &sum)] {
        // Unique per writer: two processes (or a cache shared by two
        // runtimes) writing one entry never rename each other's file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = target.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        crate::util::write_private(&tmp, data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming to {}", target.display()))?;
    }
    Ok(())
}

/// Hex SHA-256 of a component's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
