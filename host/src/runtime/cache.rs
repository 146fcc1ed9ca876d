//! The on-disk cache of compiled components.
//!
//! Compiling a component is the slow part of loading a plugin (seconds for a
//! Python or JavaScript one); deserializing a compiled artifact takes
//! milliseconds. Entries are keyed by the component's SHA-256 and by
//! wasmtime's compatibility hash (engine version and settings), so a changed
//! component or engine never reuses a stale artifact. Each file starts with
//! a magic number and the CRC-32 of its payload: a corrupt or truncated entry
//! is detected before wasmtime ever sees it, deleted, and rebuilt. (CRC-32,
//! not a cryptographic hash: it guards against damage, at memory speed, on
//! artifacts of tens of megabytes read at every start; whoever can write the
//! cache folder could run code through it anyway.)

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

/// The first bytes of an entry: format name and version.
const MAGIC: &[u8; 8] = b"ahcwasm1";
const HEADER: usize = MAGIC.len() + 4;

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let valid = data.len() > HEADER
        && &data[..MAGIC.len()] == MAGIC
        && data[MAGIC.len()..HEADER] == crc32fast::hash(&data[HEADER..]).to_le_bytes();
    let component = if valid {
        // SAFETY: the payload was written by `write_entry` from
        // `Component::serialize` (its checksum proves it is intact), and
        // wasmtime itself rejects artifacts of another version or config.
        unsafe { Component::deserialize(engine, &data[HEADER..]) }.ok()
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
    let mut data = Vec::with_capacity(HEADER + payload.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
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
