//! The add-on catalog: the plugins found in the plugin folders.
//!
//! Manifests are read and validated when the catalog is built (cheap);
//! components are compiled on first use (and cached on disk by the runtime's
//! artifact cache), so a CLI command that never calls a plugin never compiles
//! one. A running server instead rebuilds the catalog when plugin files
//! change ([`Catalog::reload`]): a changed plugin is compiled before the swap,
//! and one that fails keeps its previous version serving, with the error
//! kept for listings and the dashboard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Policy;
use crate::manifest::{self, Manifest};
use crate::runtime::{Origin, Plugin, Runtime};

/// One service in the catalog.
pub struct Service {
    /// Its validated manifest; the folder it came from is `manifest.dir`.
    pub manifest: Arc<Manifest>,
    plugin: OnceLock<Result<Arc<Plugin>, String>>,
    /// Hash of the manifest file and component as loaded (reload compares it).
    fingerprint: String,
    /// Unix seconds when this version was loaded.
    pub loaded_at: i64,
    /// A newer version that failed to load; this one keeps serving.
    pub newer_error: Option<String>,
}

/// A plugin folder that could not be listed, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    /// The plugin folder.
    pub dir: PathBuf,
    /// What is wrong with it (an invalid manifest, a folder named unlike its
    /// id, an id claimed twice…).
    pub error: String,
}

/// The services of every plugin folder.
pub struct Catalog {
    services: BTreeMap<String, Arc<Service>>,
    /// The folders that could not become services, with why; listed by
    /// `addonhost plugins`.
    pub broken: Vec<Broken>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    /// Ids of the services loaded anew: new ones and changed ones.
    pub loaded: Vec<String>,
    /// Ids of the services whose folder went away; they are no longer served.
    pub removed: Vec<String>,
    /// (service or folder, error): the previous version, if any, keeps serving.
    pub failed: Vec<(String, String)>,
    /// Loaded from the quick tier: to be replaced by their optimized
    /// version ([`crate::Host::optimize`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quick: Vec<String>,
}

impl ReloadReport {
    /// Whether the reload loaded, removed and failed nothing.
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

/// Plugin folders under `roots`: immediate subfolders holding an
/// `addon-manifest.json`, or a root that is itself one.
pub fn plugin_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in roots {
        if root.join(manifest::FILE_NAME).is_file() {
            dirs.push(root.clone());
            continue;
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(manifest::FILE_NAME).is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// The languages an add-on can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A Rust crate on `plugins/sdk`, built for `wasm32-wasip2`.
    Rust,
    /// Python on `plugins/sdk-python`, made a component by componentize-py.
    Python,
    /// JavaScript on `plugins/sdk-js`, made a component by componentize-js.
    Js,
}

impl Language {
    /// Every language, in the order help texts list them.
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::Js];

    /// From the folder's files: `Cargo.toml`, `app.py` or `pyproject.toml`,
    /// `package.json` or `index.js`.
    pub fn detect(dir: &Path) -> Option<Language> {
        if dir.join("Cargo.toml").is_file() {
            Some(Language::Rust)
        } else if dir.join("app.py").is_file() || dir.join("pyproject.toml").is_file() {
            Some(Language::Python)
        } else if dir.join("package.json").is_file() || dir.join("index.js").is_file() {
            Some(Language::Js)
        } else {
            None
        }
    }

    /// Its name: `rust`, `python`, `js`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        }
    }

    /// Other names it is known by.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &["rs"],
            Language::Python => &["py"],
            Language::Js => &["javascript"],
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Language, String> {
        Language::ALL
            .into_iter()
            .find(|l| l.name() == s || l.aliases().contains(&s))
            .ok_or_else(|| format!("unknown language {s:?}: expected rust, python or js"))
    }
}

/// What a plugin version is made of: its manifest's bytes and its
/// component file's identity (size, modification time, inode), so that
/// telling whether anything changed costs a `stat`, not reading and hashing
/// tens of megabytes.
///
/// A stored fingerprint must never be newer than the code that serves: a
/// build can replace the component while the previous one compiles. So both
/// parts are read *before* the component is loaded: if the file changes in
/// between, the stored fingerprint is older than the code, and the next
/// reload simply loads it again.
fn fingerprint(manifest_bytes: &[u8], m: &Manifest) -> String {
    let stamp = match std::fs::metadata(&m.component) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            format!(
                "{} {} {} {}",
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino()
            )
        }
        Err(e) => format!("unreadable: {e}"),
    };
    let mut h = Sha256::new();
    h.update(manifest_bytes);
    h.update(stamp.as_bytes());
    hex::encode(h.finalize())
}

fn manifest_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(manifest::FILE_NAME)).unwrap_or_default()
}

/// An add-on's id is its folder's name: so no folder can take another
/// add-on's id (and with it that add-on's resources, vars and KV) by
/// sorting before it.
pub fn check_folder(m: &Manifest) -> Result<(), String> {
    let folder = m.dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if folder != m.id {
        return Err(format!(
            "its id {:?} does not match its folder's name {folder:?}: an add-on's folder is named after its id; rename one of them",
            m.id
        ));
    }
    Ok(())
}

/// The plugin folders under `roots` with their manifests, each read,
/// validated and checked against the folder rule and the operator's
/// ceilings. An id claimed by two folders is refused for both.
fn scan(roots: &[PathBuf], policy: &Policy) -> Vec<(PathBuf, Vec<u8>, Result<Manifest, String>)> {
    let mut found: Vec<_> = plugin_dirs(roots)
        .into_iter()
        .map(|dir| {
            let raw = manifest_bytes(&dir);
            let m = Manifest::load(&dir)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    check_folder(&m)
                        .and_then(|()| policy.check(&m))
                        .map_err(|e| format!("{}: {e}", dir.join(manifest::FILE_NAME).display()))?;
                    Ok(m)
                });
            (dir, raw, m)
        })
        .collect();
    let mut claims: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (dir, _, m) in &found {
        if let Ok(m) = m {
            claims.entry(m.id.clone()).or_default().push(dir.clone());
        }
    }
    for (_, _, m) in &mut found {
        let Ok(manifest) = m else { continue };
        let dirs = &claims[&manifest.id];
        if dirs.len() > 1 {
            *m = Err(format!(
                "add-on id {:?} is claimed by several folders ({}); none of them is served until all but one are removed",
                manifest.id,
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    found
}

impl Catalog {
    /// Scans `roots` for plugin folders; compiles nothing.
    pub fn discover(roots: &[PathBuf], policy: &Policy) -> Catalog {
        let mut services = BTreeMap::new();
        let mut broken = Vec::new();
        for (dir, raw, m) in scan(roots, policy) {
            match m {
                Ok(m) => {
                    let print = fingerprint(&raw, &m);
                    services.insert(
                        m.id.clone(),
                        Arc::new(Service::new(m, OnceLock::new(), print)),
                    );
                }
                Err(error) => broken.push(Broken { dir, error }),
            }
        }
        Catalog { services, broken }
    }

    /// A new catalog for the folders as they are now, reusing `self`'s
    /// services that did not change. Changed and new plugins are compiled
    /// here; one that fails keeps its previous version (if any). With
    /// `quick`, a component not yet in the artifact cache is compiled by the
    /// quick tier (listed in the report's `quick`).
    pub fn reload(
        &self,
        roots: &[PathBuf],
        runtime: &Runtime,
        quick: bool,
        policy: &Policy,
    ) -> (Catalog, ReloadReport) {
        let mut report = ReloadReport::default();
        let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
        let mut broken = Vec::new();
        for (dir, raw, m) in scan(roots, policy) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // Keep serving the version of this folder we had, unless
                    // another folder claims its id (then neither serves).
                    let kept = self.services.values().find(|s| s.manifest.dir == dir);
                    if let Some(old) = kept.filter(|_| !e.contains("claimed by several folders")) {
                        services
                            .insert(old.manifest.id.clone(), Arc::new(old.with_error(e.clone())));
                    }
                    report.failed.push((dir.display().to_string(), e.clone()));
                    broken.push(Broken { dir, error: e });
                    continue;
                }
            };
            let old = self.services.get(&m.id);
            let print = fingerprint(&raw, &m);
            if let Some(old) = old.filter(|o| o.fingerprint == print && o.newer_error.is_none()) {
                if old.origin() == Some(Origin::Quick) {
                    // Its optimized version may have been swapped into the
                    // catalog this reload started from: ask again (a cache
                    // hit by then).
                    report.quick.push(m.id.clone());
                }
                services.insert(m.id.clone(), old.clone());
                continue;
            }
            if m.remote.is_some() {
                // Nothing to compile: the add-on runs at its provider.
                report.loaded.push(m.id.clone());
                services.insert(
                    m.id.clone(),
                    Arc::new(Service::new(m, OnceLock::new(), print)),
                );
                continue;
            }
            let quickly = if quick {
                // A component the quick tier cannot compile is compiled
                // the usual way.
                let quick = std::fs::read(&m.component)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| runtime.load_quick(&m.id, &bytes, m.limits));
                quick.unwrap_or_else(|e| {
                    tracing::info!(addon = %m.id, "quick tier skipped: {e:#}");
                    None
                })
            } else {
                None
            };
            let loaded = match quickly {
                Some(plugin) => {
                    report.quick.push(m.id.clone());
                    Ok(plugin)
                }
                None => load(runtime, &m),
            };
            match loaded {
                Ok(plugin) => {
                    report.loaded.push(m.id.clone());
                    let id = m.id.clone();
                    services.insert(
                        id,
                        Arc::new(Service::new(m, OnceLock::from(Ok(Arc::new(plugin))), print)),
                    );
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    report.failed.push((m.id.clone(), error.clone()));
                    let replacement = match old {
                        Some(old) => old.with_error(error),
                        None => Service::new(m, OnceLock::from(Err(error)), print),
                    };
                    services.insert(replacement.manifest.id.clone(), Arc::new(replacement));
                }
            }
        }
        report.removed = self
            .services
            .keys()
            .filter(|id| !services.contains_key(*id))
            .cloned()
            .collect();
        (Catalog { services, broken }, report)
    }

    /// This catalog with service `id`'s plugin replaced by `plugin`, if `id`
    /// is still the version `like` (same manifest and component).
    pub fn with_plugin(&self, like: &Service, plugin: Plugin) -> Option<Catalog> {
        let current = self.services.get(&like.manifest.id)?;
        if current.fingerprint != like.fingerprint {
            return None;
        }
        let mut services = self.services.clone();
        let replaced = Service {
            manifest: current.manifest.clone(),
            plugin: OnceLock::from(Ok(Arc::new(plugin))),
            fingerprint: current.fingerprint.clone(),
            loaded_at: current.loaded_at,
            newer_error: current.newer_error.clone(),
        };
        services.insert(like.manifest.id.clone(), Arc::new(replaced));
        Some(Catalog {
            services,
            broken: self.broken.clone(),
        })
    }

    /// The services, by id.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The service of add-on id `id`, if its folder loaded.
    pub fn get(&self, id: &str) -> Option<&Arc<Service>> {
        self.services.get(id)
    }
}

impl Service {
    fn new(
        m: Manifest,
        plugin: OnceLock<Result<Arc<Plugin>, String>>,
        fingerprint: String,
    ) -> Service {
        Service {
            fingerprint,
            manifest: Arc::new(m),
            plugin,
            loaded_at: crate::util::unix_now(),
            newer_error: None,
        }
    }

    /// This version, still serving, with the error of a newer one.
    fn with_error(&self, error: String) -> Service {
        Service {
            manifest: self.manifest.clone(),
            plugin: match self.plugin.get() {
                Some(p) => OnceLock::from(p.clone()),
                None => OnceLock::new(),
            },
            fingerprint: self.fingerprint.clone(),
            loaded_at: self.loaded_at,
            newer_error: Some(error),
        }
    }

    /// Whether the add-on runs at a remote provider (no component).
    pub fn is_remote(&self) -> bool {
        self.manifest.remote.is_some()
    }

    /// The compiled plugin, loading it on first use.
    pub fn plugin(&self, runtime: &Runtime) -> anyhow::Result<Arc<Plugin>> {
        if self.is_remote() {
            anyhow::bail!(
                "add-on {} is remote: it runs at its provider, not in this host",
                self.manifest.id
            );
        }
        let loaded = self.plugin.get_or_init(|| {
            load(runtime, &self.manifest)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        });
        loaded.clone().map_err(|e| anyhow::anyhow!(e))
    }

    /// The plugin, if it is loaded (without loading it).
    pub fn loaded(&self) -> Option<&Arc<Plugin>> {
        self.plugin.get().and_then(|p| p.as_ref().ok())
    }

    /// Whether the component came from the artifact cache, once loaded.
    pub fn origin(&self) -> Option<Origin> {
        match self.plugin.get() {
            Some(Ok(p)) => Some(p.origin),
            _ => None,
        }
    }
}

/// Compiles (or loads from the cache) the optimized version of `service`.
pub fn load_optimized(runtime: &Runtime, service: &Service) -> anyhow::Result<Plugin> {
    load(runtime, &service.manifest)
}

fn load(runtime: &Runtime, m: &Manifest) -> anyhow::Result<Plugin> {
    if !m.component.is_file() {
        anyhow::bail!(
            "add-on {}: component {} is missing; build it with `addonhost plugins:build {}`",
            m.id,
            m.component.display(),
            m.dir.display()
        );
    }
    runtime
        .load(&m.id, &m.component, m.limits)
        .with_context(|| format!("loading add-on {} from {}", m.id, m.dir.display()))
}
