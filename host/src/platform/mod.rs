//! The Heroku side of addonhost: apps, config vars, releases, add-ons and
//! attachments. The only place the platform's rules live: which names an
//! add-on may set, who owns a var, what makes a release. It calls `store` for
//! durability and `runtime` for plugins, and neither calls back.

mod addons;
mod apps;
pub mod catalog;
mod config;
pub mod context;
pub mod error;
pub mod http;
pub mod naming;
mod schedule;
pub mod sso;
pub mod validate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use rusqlite::Connection;
use serde::Serialize;

pub use addons::{AddonChanged, AddonCreated, AddonView, CreateAddon, RotationView};
pub use apps::AppInfo;
pub use catalog::{Catalog, ReloadReport, Service};
pub use config::ConfigVarView;
pub use error::{Kind, UserError};

use crate::manifest::Manifest;
use crate::runtime::{ArtifactCache, Plugin, Runtime};
use crate::store::{self, Db};
use context::{CallContext, Completion, Effects, Scope, Update};

/// Where a host keeps its state and finds its plugins.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The data dir: `addonhost.db` and the compiled-artifact cache.
    pub data_dir: PathBuf,
    /// Folders holding plugin folders.
    pub plugin_dirs: Vec<PathBuf>,
    /// The URL the server is reached at; add-ons build their resource URLs
    /// on `<public_url>/addons/<service>`.
    pub public_url: String,
}

impl HostOptions {
    pub fn new(data_dir: impl Into<PathBuf>, plugin_dirs: Vec<PathBuf>) -> Self {
        HostOptions {
            data_dir: data_dir.into(),
            plugin_dirs,
            public_url: "http://127.0.0.1:5000".into(),
        }
    }
}

/// The platform: what an embedder, the CLI and the server call.
pub struct Host {
    db: Arc<Db>,
    runtime: Runtime,
    /// Swapped whole on reload; calls in flight keep the version they took.
    catalog: RwLock<Arc<Catalog>>,
    opts: HostOptions,
}

/// A plugin as `addonhost plugins` and `GET /api/plugins` list it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub id: String,
    pub name: String,
    pub language: &'static str,
    pub dir: PathBuf,
    /// First 16 hex digits of the component's SHA-256, once loaded.
    pub component_hash: Option<String>,
    pub loaded_at: Option<i64>,
    /// `compiled`, `cache-hit` or `quick` (see [`crate::runtime::Origin`]), once loaded.
    pub origin: Option<crate::runtime::Origin>,
    /// `loaded`, `error`, `invalid manifest`.
    pub status: String,
    /// Why it is not loaded, or why a newer version was refused.
    pub error: Option<String>,
}

/// A service as the catalog lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub plans: Vec<crate::manifest::Plan>,
    pub config_vars: Vec<String>,
    pub dir: PathBuf,
}

impl Host {
    /// Opens the data dir (creating it) and discovers the plugins.
    pub fn open(opts: HostOptions) -> anyhow::Result<Host> {
        let db = Arc::new(Db::open(&opts.data_dir)?);
        let runtime = Runtime::new(Some(ArtifactCache::new(opts.data_dir.join("cache"))))?;
        let catalog = Catalog::discover(&opts.plugin_dirs);
        Ok(Host {
            db,
            runtime,
            catalog: RwLock::new(Arc::new(catalog)),
            opts,
        })
    }

    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    /// The catalog as it is now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds the catalog from the plugin folders and swaps it in:
    /// unchanged plugins are kept as they are, changed ones compiled first;
    /// a plugin that fails to load keeps its previous version serving.
    /// Resources, config vars and the plugins' KV are not touched.
    pub fn reload(&self) -> ReloadReport {
        let (next, report) = self
            .catalog()
            .reload(&self.opts.plugin_dirs, &self.runtime, true);
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        for id in &report.loaded {
            tracing::info!(addon = %id, "plugin loaded");
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
            let plugin = match catalog::load_optimized(&self.runtime, &service) {
                Ok(p) => p,
                Err(e) => {
                    // The quick version keeps serving; it behaves the same.
                    tracing::error!(addon = %id, "optimized compile failed: {e:#}");
                    continue;
                }
            };
            let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            if let Some(next) = current.with_plugin(&service, plugin) {
                *current = Arc::new(next);
                tracing::info!(addon = %id, "plugin optimized");
            }
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
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
    pub fn service(&self, id: &str) -> anyhow::Result<Arc<Service>> {
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
        })
    }

    /// The compiled plugin of a service.
    pub fn plugin(&self, service: &str) -> anyhow::Result<(Arc<Manifest>, Arc<Plugin>)> {
        let s = self.service(service)?;
        let plugin = s
            .plugin(&self.runtime)
            .map_err(|e| error::addon(format!("{e:#}")))?;
        Ok((s.manifest.clone(), plugin))
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
                Ok(p) => (
                    Some(p.content_hash[..16].to_string()),
                    Some(s.loaded_at),
                    "loaded".to_string(),
                    s.newer_error.clone(),
                ),
                Err(e) => (None, None, "error".to_string(), Some(format!("{e:#}"))),
            };
            rows.push(PluginStatus {
                id: m.id.clone(),
                name: m.name.clone(),
                language: catalog::language(&m.dir),
                dir: m.dir.clone(),
                component_hash: hash,
                loaded_at,
                origin: s.origin(),
                status,
                error,
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
                language: catalog::language(&b.dir),
                dir: b.dir.clone(),
                component_hash: None,
                loaded_at: None,
                origin: None,
                status: "invalid manifest".into(),
                error: Some(b.error.clone()),
            });
        }
        rows
    }

    /// `<public_url>/addons/<service>`
    pub fn base_url(&self, service: &str) -> String {
        format!(
            "{}/addons/{service}",
            self.opts.public_url.trim_end_matches('/')
        )
    }

    fn context(
        &self,
        manifest: &Arc<Manifest>,
        scope: Scope,
    ) -> (Box<CallContext>, Arc<Mutex<Effects>>) {
        CallContext::new(self.db.clone(), manifest.clone(), scope)
    }

    /// Writes the refusals a call collected, whatever became of the call.
    async fn log_refusals(&self, effects: &Mutex<Effects>) {
        let refusals =
            std::mem::take(&mut effects.lock().unwrap_or_else(|p| p.into_inner()).refusals);
        if refusals.is_empty() {
            return;
        }
        let r = self.db.write(move |tx| {
            for (addon, what) in &refusals {
                store::audit(
                    tx,
                    &format!("addon:{addon}"),
                    "refused",
                    None,
                    Some(addon),
                    what,
                )?;
            }
            Ok(())
        });
        if let Err(e) = r.await {
            tracing::error!("cannot write refusals to the audit trail: {e:#}");
        }
    }

    fn app(&self, conn: &Connection, name: &str) -> anyhow::Result<store::App> {
        app_named(conn, name)
    }

    /// Writes what a call buffered (KV, partner config updates, completions),
    /// if anything: a call that changed nothing costs no commit.
    async fn commit_effects(
        &self,
        manifest: &Arc<Manifest>,
        effects: Effects,
    ) -> anyhow::Result<()> {
        if effects.is_empty() {
            return Ok(());
        }
        let manifest = manifest.clone();
        self.db
            .write(move |tx| apply_effects(tx, &manifest, &effects))
            .await
    }

    /// The audit trail, newest first.
    pub fn audit(&self, app: Option<&str>, limit: i64) -> anyhow::Result<Vec<store::AuditEntry>> {
        let conn = self.db.read()?;
        if let Some(a) = app {
            self.app(&conn, a)?;
        }
        store::audit_entries(&conn, app, limit).context("reading the audit trail")
    }
}

/// Applies a call's buffered effects inside the caller's transaction:
/// the add-on's KV writes, and any partner-initiated config updates,
/// completions and failures (each with the ownership checks and releases).
fn apply_effects(tx: &Connection, m: &Manifest, effects: &Effects) -> anyhow::Result<()> {
    for (key, value) in &effects.kv {
        store::kv_put(tx, &m.id, key, value.as_deref())?;
    }
    let actor = format!("addon:{}", m.id);
    for Update {
        partner_id: pid,
        changes,
        reason,
    } in &effects.updates
    {
        let Some(r) = store::resource_by_partner_id(tx, &m.id, pid)? else {
            continue;
        };
        for att in store::attachments_of_resource(tx, r.id)? {
            let mut changed = Vec::new();
            for (name, value) in changes {
                let app_name = naming::app_var(name, &m.api.config_vars_prefix, &att.name);
                let current = store::config_var(tx, att.app_id, &app_name)?;
                if let Some(cur) = &current {
                    if cur.attachment_id != Some(att.id) {
                        store::audit(
                            tx,
                            &actor,
                            "refused",
                            Some(&att.app),
                            Some(&r.name),
                            &format!("{app_name} is not owned by {}: write refused", r.name),
                        )?;
                        continue;
                    }
                }
                match value {
                    Some(v) if current.as_ref().map(|c| &c.value) != Some(v) => {
                        store::upsert_var(tx, att.app_id, &app_name, v, Some(att.id))?;
                        changed.push(app_name);
                    }
                    None if current.is_some() => {
                        store::delete_var(tx, att.app_id, &app_name)?;
                        changed.push(app_name);
                    }
                    _ => {}
                }
            }
            if !changed.is_empty() {
                let what = changed.join(", ");
                store::insert_release(
                    tx,
                    att.app_id,
                    &format!("Update {what} by {}", m.id),
                    &actor,
                )?;
                store::audit(
                    tx,
                    &actor,
                    "config:update",
                    Some(&att.app),
                    Some(&r.name),
                    &format!("{what}: {reason}"),
                )?;
            }
        }
    }
    for Completion {
        partner_id: pid,
        config,
        message,
    } in &effects.completions
    {
        let Some(r) = store::resource_by_partner_id(tx, &m.id, pid)? else {
            continue;
        };
        if r.state != "provisioning" {
            continue;
        }
        for att in store::attachments_of_resource(tx, r.id)? {
            addons::write_config(tx, m, &r, &att, config)?;
            store::insert_release(
                tx,
                att.app_id,
                &format!("Attach {} ({})", att.name, r.name),
                &actor,
            )?;
        }
        store::update_resource(
            tx,
            r.id,
            Some(pid),
            "provisioned",
            &r.plan,
            message.as_deref(),
        )?;
        store::audit(
            tx,
            &actor,
            "provision:complete",
            Some(&r.app),
            Some(&r.name),
            "completed",
        )?;
    }
    for (pid, message) in &effects.failures {
        let Some(r) = store::resource_by_partner_id(tx, &m.id, pid)? else {
            continue;
        };
        for att in store::attachments_of_resource(tx, r.id)? {
            store::delete_vars_of_attachment(tx, att.id)?;
            store::delete_attachment(tx, att.id)?;
        }
        store::update_resource(tx, r.id, Some(pid), "failed", &r.plan, Some(message))?;
        store::audit(
            tx,
            &actor,
            "provision:fail",
            Some(&r.app),
            Some(&r.name),
            message,
        )?;
    }
    Ok(())
}

/// The app `name`, or an error that says how to find or make it.
fn app_named(conn: &Connection, name: &str) -> anyhow::Result<store::App> {
    store::app_by_name(conn, name)?.ok_or_else(|| {
        error::not_found(format!(
            "app {name:?} not found; list apps with `addonhost apps` or create it with `addonhost apps:create {name}`"
        ))
    })
}

fn take(effects: &Mutex<Effects>) -> Effects {
    std::mem::take(&mut *effects.lock().unwrap_or_else(|p| p.into_inner()))
}
