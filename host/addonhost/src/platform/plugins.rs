//! The plugins a host runs: discovering and reloading them, trusting their
//! folders, and what `addonhost plugins` and the dashboard show of each.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use super::{catalog, cluster, error, Host, OutboundView, ReloadReport, Service};
use crate::manifest::Manifest;
use crate::runtime::Plugin;

/// A plugin as `addonhost plugins` and `GET /api/plugins` list it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The add-on id (for a folder whose manifest is invalid, the folder's
    /// name).
    pub id: String,
    /// The manifest's service name (empty when the manifest is invalid).
    pub name: String,
    /// `None` when its folder has none of the files that tell.
    pub language: Option<catalog::Language>,
    /// The plugin folder.
    pub dir: PathBuf,
    /// First 16 hex digits of the component's SHA-256, once loaded.
    pub component_hash: Option<String>,
    /// When the version serving now was loaded (Unix seconds).
    pub loaded_at: Option<i64>,
    /// `compiled`, `cache-hit` or `quick` (see [`crate::runtime::Origin`]), once loaded.
    pub origin: Option<crate::runtime::Origin>,
    /// Whether the version serving is a development build (`plugins:dev`):
    /// quick to build, not what `plugins:build` makes for production.
    pub dev: bool,
    /// `loaded`, `loaded (dev build)`, `remote` (served by its provider), `error`, or
    /// `invalid manifest`.
    pub status: String,
    /// Why it is not loaded, or why a newer version was refused.
    pub error: Option<String>,
    /// What it keeps in its KV, against its quota.
    pub storage: Option<StorageView>,
    /// Its limits as the manifest sets them (`None` when it has no valid
    /// manifest).
    pub limits: Option<crate::manifest::Limits>,
    /// The hosts its calls may reach over HTTP, against what it declares
    /// (`None` when it has no valid manifest).
    pub outbound: Option<OutboundView>,
    /// On a shared store: the component hashes the platform accepts for it
    /// (see [`Host::deploy_component`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_components: Option<Vec<String>>,
    /// On a shared store: the component each server heard of lately runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<cluster::PluginOnServer>,
    /// A remote add-on's resources URL (its provider's Partner API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Its calls in this process over the last five minutes.
    pub recent: crate::metrics::Recent,
    /// Its calls running now, in this process.
    pub in_flight: usize,
}

/// An add-on's KV storage against its quota.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StorageView {
    /// Keys stored.
    pub keys: u64,
    /// Bytes stored, keys plus values.
    pub bytes: u64,
    /// Most keys it may store (the operator's [`crate::Policy::kv_quota_keys`],
    /// the same for every add-on).
    pub quota_keys: u64,
    /// Most bytes it may store (the operator's
    /// [`crate::Policy::kv_quota_bytes`]).
    pub quota_bytes: u64,
}

/// A service as the catalog lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    /// The add-on id.
    pub id: String,
    /// Its human-readable name.
    pub name: String,
    /// The plans it offers, the default among them.
    pub plans: Vec<crate::manifest::Plan>,
    /// Every config var it may set, unrenamed (`KV_URL`).
    pub config_vars: Vec<String>,
    /// Its plugin folder.
    pub dir: PathBuf,
}

impl Host {
    /// Rebuilds the catalog from the plugin folders and swaps it in:
    /// unchanged plugins are kept as they are, changed ones compiled first;
    /// a plugin that fails to load keeps its previous version serving.
    /// Resources, config vars and the plugins' KV are not touched.
    pub fn reload(&self) -> ReloadReport {
        let (next, report) = self.catalog().reload(
            &self.opts.plugin_dirs,
            &self.runtime,
            true,
            &self.opts.policy,
        );
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        let m = self.metrics();
        for (outcome, n) in [
            ("loaded", report.loaded.len()),
            ("failed", report.failed.len()),
            ("removed", report.removed.len()),
        ] {
            m.reloads
                .get_or_create(&crate::metrics::OutcomeLabel { outcome })
                .inc_by(n as u64);
        }
        for id in &report.loaded {
            let dev = (self.catalog().get(id))
                .and_then(|s| s.loaded().and_then(|p| p.dev_build().map(str::to_string)));
            match dev {
                Some(language) => tracing::warn!(
                    addon = %id,
                    "plugin loaded: a {language} development build (plugins:dev); `addonhost plugins:build` makes the production one"
                ),
                None => tracing::info!(addon = %id, "plugin loaded"),
            }
        }
        for id in &report.removed {
            tracing::warn!(addon = %id, "plugin removed; its add-ons are unavailable until it returns");
        }
        for (id, e) in &report.failed {
            tracing::error!(addon = %id, "plugin not reloaded, the previous version (if any) keeps serving: {e}");
        }
        report
    }

    /// Replaces the quick-tier plugins a reload listed with their optimized
    /// version (compiled now, and cached), each swapped in as soon as it is
    /// ready — unless a newer version arrived meanwhile. Calls already
    /// running finish on the quick version.
    pub fn optimize(&self, ids: &[String]) {
        for id in ids {
            let Some(service) = self.catalog().get(id).cloned() else {
                continue;
            };
            if service.origin() != Some(crate::runtime::Origin::Quick) {
                continue;
            }
            // A Rust development build is replaced at the next save: the
            // quick tier serves it, and the optimizing compiler leaves the
            // cores to the author's builds. (A Python or JavaScript one is
            // a loader whose code never changes: compiled and cached once,
            // every later save is a cache hit.)
            if service.loaded().and_then(|p| p.dev_build()) == Some("rust") {
                continue;
            }
            let plugin = match catalog::load_optimized(&self.runtime, &service) {
                Ok(p) => p,
                Err(e) => {
                    // The quick version keeps serving; it behaves the same.
                    tracing::error!(addon = %id, "optimized compile failed: {e:#}");
                    continue;
                }
            };
            let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            // Two reloads of one version ask twice; the compile happens once
            // (the second waits for it and loads it from the cache), and only
            // the first swaps it in.
            if current.get(id).and_then(|s| s.origin()) != Some(crate::runtime::Origin::Quick) {
                continue;
            }
            if let Some(next) = current.with_plugin(&service, plugin) {
                *current = Arc::new(next);
                tracing::info!(addon = %id, "plugin optimized");
            }
        }
    }

    /// Services in the catalog, by id.
    pub fn services(&self) -> Vec<ServiceView> {
        self.catalog()
            .services()
            .map(|s| {
                let m = &s.manifest;
                ServiceView {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    plans: m.plans.clone(),
                    config_vars: m.api.config_vars.clone(),
                    dir: m.dir.clone(),
                }
            })
            .collect()
    }

    /// One service, or a not-found error listing the known ones.
    pub fn service(&self, id: &str) -> crate::Result<Arc<Service>> {
        let catalog = self.catalog();
        catalog.get(id).cloned().ok_or_else(|| {
            let known: Vec<_> = catalog.services().map(|s| s.manifest.id.clone()).collect();
            let broken = catalog
                .broken
                .iter()
                .find(|b| b.dir.file_name().is_some_and(|n| n == id));
            match broken {
                Some(b) => error::not_found(format!("add-on service {id} failed to load: {}", b.error)),
                None => error::not_found(format!(
                    "unknown add-on service {id:?}; available: {} (see `addonhost addons:services`)",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )),
            }
        }).map_err(Into::into)
    }

    /// The compiled plugin of a service, once its folder is the one the
    /// store knows for it (see [`Host::trust`]).
    pub fn plugin(&self, service: &str) -> crate::Result<(Arc<Manifest>, Arc<Plugin>)> {
        let s = self.service(service)?;
        self.check_trusted(&s.manifest)?;
        let plugin = s
            .plugin(&self.runtime)
            .map_err(|e| error::addon(format!("{e:#}")))?;
        self.check_component(&s.manifest, &plugin)?;
        Ok((s.manifest.clone(), plugin))
    }

    /// An add-on id is bound to the folder that first served it in this
    /// store: its KV, resources and vars are that add-on's. Another folder
    /// claiming the id (a copy elsewhere, a plugin path changed) is refused
    /// until the operator confirms it with [`Host::trust`].
    pub(super) fn check_trusted(&self, m: &Manifest) -> anyhow::Result<()> {
        let key = (m.id.clone(), m.dir.clone());
        if self
            .trusted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let dir = m
            .dir
            .canonicalize()
            .unwrap_or_else(|_| m.dir.clone())
            .display()
            .to_string();
        let known = self.store.read(|tx| tx.plugin_dirs(&m.id))?;
        if known.is_empty() {
            let (id, d) = (m.id.clone(), dir.clone());
            self.store.write_blocking(move |tx| {
                // Another process may have bound it meanwhile.
                if tx.plugin_dirs(&id)?.is_empty() {
                    tx.trust_plugin_dir(&id, &d)?;
                }
                Ok(())
            })?;
            return self.check_trusted(m);
        }
        if !known.contains(&dir) {
            return Err(error::conflict(format!(
                "add-on {} has been served from {} in this data dir; {dir} now claims its id, with its resources, config vars and private KV. \
                 If that is the same add-on, moved, confirm it with `addonhost plugins:trust {dir}`",
                m.id,
                known.join(", ")
            )));
        }
        self.trusted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Ok(())
    }

    /// Binds the add-on in `dir` to its id in this store (`plugins:trust`),
    /// beside any folder already bound to it.
    pub fn trust(&self, dir: &std::path::Path) -> crate::Result<String> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot open plugin folder {}", dir.display()))?;
        let m = Manifest::load(&dir).map_err(|e| error::invalid(e.to_string()))?;
        catalog::check_folder(&m).map_err(error::invalid)?;
        let (id, d) = (m.id.clone(), dir.display().to_string());
        self.store.write_blocking(move |tx| {
            tx.trust_plugin_dir(&id, &d)?;
            tx.audit("user", "plugins:trust", None, Some(&id), &d)?;
            Ok(())
        })?;
        Ok(m.id)
    }

    /// What add-on `id` keeps in its KV, against its quota.
    pub fn storage(&self, id: &str) -> crate::Result<StorageView> {
        let (keys, bytes) = self.store.read(|tx| tx.kv_usage(id))?;
        Ok(StorageView {
            keys,
            bytes,
            quota_keys: self.opts.policy.kv_quota_keys,
            quota_bytes: self.opts.policy.kv_quota_bytes,
        })
    }

    /// Compiles every plugin now (for `serve` and `plugins`), returning the
    /// failures.
    pub fn load_all(&self) -> Vec<(String, String)> {
        let catalog = self.catalog();
        // One thread per plugin: loading is compiling or reading and
        // checking a cached artifact, independent across plugins.
        std::thread::scope(|scope| {
            let loads: Vec<_> = catalog
                .services()
                .filter(|s| !s.is_remote())
                .map(|s| {
                    let load = scope
                        .spawn(move || s.plugin(&self.runtime).err().map(|e| format!("{e:#}")));
                    (s.manifest.id.clone(), load)
                })
                .collect();
            loads
                .into_iter()
                .filter_map(|(id, load)| match load.join() {
                    Ok(error) => error.map(|e| (id, e)),
                    Err(_) => Some((id, "loading panicked".to_string())),
                })
                .collect()
        })
    }

    /// Every plugin folder's state; loads each plugin (`load` = compile now).
    pub fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.load_all();
        let catalog = self.catalog();
        let mut rows = Vec::new();
        for s in catalog.services() {
            let m = &s.manifest;
            let (hash, loaded_at, status, error) = match s.plugin(&self.runtime) {
                _ if s.is_remote() => (None, Some(s.loaded_at), "remote".to_string(), None),
                Ok(p) => (
                    Some(p.content_hash[..16].to_string()),
                    Some(s.loaded_at),
                    match p.dev_build() {
                        Some(_) => "loaded (dev build)".to_string(),
                        None => "loaded".to_string(),
                    },
                    s.newer_error.clone(),
                ),
                Err(e) => (None, None, "error".to_string(), Some(format!("{e:#}"))),
            };
            rows.push(PluginStatus {
                id: m.id.clone(),
                name: m.name.clone(),
                language: if s.is_remote() {
                    None
                } else {
                    catalog::Language::detect(&m.dir)
                },
                dir: m.dir.clone(),
                component_hash: hash,
                loaded_at,
                origin: s.origin(),
                dev: s.loaded().is_some_and(|p| p.dev_build().is_some()),
                status,
                error,
                storage: self.storage(&m.id).ok(),
                limits: Some(m.limits),
                outbound: Some(self.opts.outbound.view(m)),
                accepted_components: None,
                servers: Vec::new(),
                remote: m.remote.as_ref().map(|r| r.resources_url.clone()),
                recent: self.metrics().recent(&m.id),
                in_flight: self.runtime.in_flight(&m.id),
            });
        }
        for b in &catalog.broken {
            if rows.iter().any(|r| r.dir == b.dir) {
                continue; // an older version of it still serves; its row has the error
            }
            rows.push(PluginStatus {
                id: b
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                name: String::new(),
                language: catalog::Language::detect(&b.dir),
                dir: b.dir.clone(),
                component_hash: None,
                loaded_at: None,
                origin: None,
                dev: false,
                status: "invalid manifest".into(),
                error: Some(b.error.clone()),
                storage: None,
                limits: None,
                outbound: None,
                accepted_components: None,
                servers: Vec::new(),
                remote: None,
                recent: Default::default(),
                in_flight: 0,
            });
        }
        if self.store.shared() {
            self.add_cluster_view(&mut rows);
        }
        rows
    }
}
