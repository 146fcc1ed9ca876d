//! The add-on catalog: the plugins found in the plugin folders.
//!
//! Manifests are read and validated when the catalog is built (cheap);
//! components are compiled on first use and cached in memory (and on disk by
//! the runtime's artifact cache), so a CLI command that never calls a plugin
//! never compiles one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

use crate::manifest::{self, Manifest};
use crate::runtime::{Plugin, Runtime};

/// One service in the catalog.
pub struct Service {
    pub manifest: Arc<Manifest>,
    plugin: OnceLock<Result<Arc<Plugin>, String>>,
}

/// A plugin folder that could not be listed, with the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Broken {
    pub dir: PathBuf,
    pub error: String,
}

/// The services of every plugin folder.
pub struct Catalog {
    services: BTreeMap<String, Service>,
    pub broken: Vec<Broken>,
}

impl Catalog {
    /// Scans each folder in `roots` for plugin folders (immediate subfolders
    /// holding an `addon-manifest.json`, or the root itself).
    pub fn discover(roots: &[PathBuf]) -> Catalog {
        let mut services = BTreeMap::new();
        let mut broken = Vec::new();
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
        for dir in dirs {
            match Manifest::load(&dir) {
                Ok(m) => {
                    if let Some(other) = services.get(&m.id) {
                        let other: &Service = other;
                        broken.push(Broken {
                            dir: dir.clone(),
                            error: format!(
                                "add-on id {:?} is already used by {}",
                                m.id,
                                other.manifest.dir.display()
                            ),
                        });
                        continue;
                    }
                    services.insert(
                        m.id.clone(),
                        Service {
                            manifest: Arc::new(m),
                            plugin: OnceLock::new(),
                        },
                    );
                }
                Err(e) => broken.push(Broken {
                    dir,
                    error: e.to_string(),
                }),
            }
        }
        Catalog { services, broken }
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn get(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }
}

impl Service {
    /// The compiled plugin, loading it on first use.
    pub fn plugin(&self, runtime: &Runtime) -> anyhow::Result<Arc<Plugin>> {
        let loaded = self.plugin.get_or_init(|| {
            load(runtime, &self.manifest)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        });
        loaded.clone().map_err(|e| anyhow::anyhow!(e))
    }
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
        .with_context(|| format!("loading add-on {} from {}", m.id, display(&m.dir)))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
