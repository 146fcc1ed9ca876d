//! The on-disk cache of compiled components.
//!
//! Compiling a component is the slow part of loading a plugin (seconds for a
//! Python or JavaScript one); deserializing a compiled artifact takes
//! milliseconds. Entries are keyed by the component's SHA-256 and by
//! wasmtime's compatibility hash (engine version and settings), so a changed
//! component or engine never reuses a stale artifact. Each file starts with
//! the SHA-256 of its payload: a corrupt or truncated entry is detected before
//! wasmtime ever sees it, deleted, and rebuilt.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

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
}

/// A directory of compiled artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ArtifactCache { dir: dir.into() }
    }

    fn entry(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{content_hash}-{:016x}.cwasm", h.finish()))
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
        let component = Component::new(engine, bytes).map_err(anyhow::Error::from)?;
        // A cache that cannot be written only costs speed, never the load.
        if let Err(e) = write_entry(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot store compiled component: {e:#}");
        }
        Ok((component, Origin::Compiled))
    }
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let valid = data.len() > 32 && Sha256::digest(&data[32..]).as_slice() == &data[..32];
    let component = if valid {
        // SAFETY: the payload was written by `write_entry` from
        // `Component::serialize` (its checksum proves it is intact), and
        // wasmtime itself rejects artifacts of another version or config.
        unsafe { Component::deserialize(engine, &data[32..]) }.ok()
    } else {
        None
    };
    if component.is_none() {
        tracing::warn!(path = %path.display(), "discarding corrupt or foreign compiled component");
        let _ = std::fs::remove_file(path);
    }
    component
}

fn write_entry(path: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().context("cache entry has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let payload = component.serialize().map_err(anyhow::Error::from)?;
    let mut data = Vec::with_capacity(32 + payload.len());
    data.extend_from_slice(&Sha256::digest(&payload));
    data.extend_from_slice(&payload);
    // Write then rename, so a reader never sees half an entry.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Hex SHA-256 of a component's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
