//! The Heroku side of addonhost: apps, config vars, releases, add-ons and
//! attachments. The only place the platform's rules live: which names an
//! add-on may set, who owns a var, what makes a release. It calls `store` for
//! durability and `runtime` for plugins, and neither calls back.

mod addons;
mod apps;
pub mod catalog;
pub mod cluster;
mod config;
pub mod context;
pub mod error;
mod forward;
pub mod http;
pub mod naming;
pub mod oauth;
pub mod osb;
pub mod outbound;
pub mod partner;
pub mod platform_api;
mod provider;
mod provision;
mod reads;
mod remote;
pub mod remote_http;
mod schedule;
pub mod sso;
pub mod validate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use serde::Serialize;

pub use addons::{AddonChanged, AddonCreated, AddonView, CreateAddon, RotationView};
pub use apps::AppInfo;
pub use catalog::{Catalog, ReloadReport, Service};
pub use config::ConfigVarView;
pub use error::{Kind, UserError};
pub use outbound::{Deny, OutboundPolicy, OutboundView};

use crate::manifest::Manifest;
use crate::runtime::{ArtifactCache, Plugin, Runtime};
use crate::store::{self, ResourceState, Store, Tx};
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
    /// The domain whose subdomains are the add-ons' own origins
    /// (`kv.<domain>`): their pages, dashboards and SSO live there, apart from
    /// the platform's origin. `None` means `localhost` (browsers resolve
    /// `*.localhost` to the loopback), with resource URLs kept on the
    /// platform's address for processes whose resolver does not; set, it is
    /// a domain whose names resolve everywhere, and resource URLs use it too.
    pub addons_domain: Option<String>,
    /// What the operator allows add-ons.
    pub policy: Policy,
    /// Where the operator lets add-ons send HTTP requests (within what each
    /// declares).
    pub outbound: OutboundPolicy,
    /// A PostgreSQL database (`postgres://…`) holding all state, shared by
    /// any number of servers; `None` keeps it in `addonhost.db` in the data
    /// dir (the compiled-plugin cache stays in the data dir either way).
    pub database: Option<String>,
    /// On a shared store, serve add-ons with this server's components even
    /// when the platform accepted other ones (see [`Host::deploy_component`]).
    pub allow_plugin_mismatch: bool,
    /// Provider mode: the Platform API base of the platform calling this
    /// host's add-ons, where partner-initiated config updates and async
    /// completions go; `None` is Heroku's (`https://api.heroku.com`). The
    /// only platform called back: a provisioning whose `callback_url` lies
    /// elsewhere is refused.
    pub platform_api: Option<String>,
}

impl HostOptions {
    pub fn new(data_dir: impl Into<PathBuf>, plugin_dirs: Vec<PathBuf>) -> Self {
        HostOptions {
            data_dir: data_dir.into(),
            plugin_dirs,
            public_url: "http://127.0.0.1:5000".into(),
            addons_domain: None,
            policy: Policy::default(),
            outbound: OutboundPolicy::default(),
            database: None,
            allow_plugin_mismatch: false,
            platform_api: None,
        }
    }
}

/// What the operator allows every add-on, whatever its manifest asks: the
/// ceilings on a manifest's `limits`, and each add-on's storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Most `limits.memory_mb` a manifest may ask.
    pub max_memory_mb: u64,
    /// Most `limits.timeout_ms` a manifest may ask.
    pub max_timeout_ms: u64,
    /// Most `limits.concurrency` a manifest may ask.
    pub max_concurrency: u64,
    /// Bytes (keys plus values) each add-on may keep in its KV.
    pub kv_quota_bytes: u64,
    /// Keys each add-on may keep in its KV.
    pub kv_quota_keys: u64,
    /// Audit entries kept of each actor (the user, each add-on, each
    /// platform), the newest; 0 keeps them all.
    pub audit_keep: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_memory_mb: 256,
            max_timeout_ms: 30_000,
            max_concurrency: 256,
            kv_quota_bytes: 1 << 30,
            kv_quota_keys: 1_000_000,
            audit_keep: crate::store::DEFAULT_AUDIT_KEEP,
        }
    }
}

impl Policy {
    /// Whether `m`'s limits are within the ceilings; the error names the
    /// limit, the ceiling and the option that raises it.
    pub fn check(&self, m: &Manifest) -> Result<(), String> {
        let over = |field: &str, asked: u64, max: u64, option: &str| {
            (asked > max).then(|| {
                format!("limits.{field} {asked} is over the operator's ceiling of {max} (raise it with {option})")
            })
        };
        let l = m.limits;
        match over(
            "memory_mb",
            l.memory_mb,
            self.max_memory_mb,
            "--max-memory-mb",
        )
        .or_else(|| {
            over(
                "timeout_ms",
                l.timeout_ms,
                self.max_timeout_ms,
                "--max-timeout-ms",
            )
        })
        .or_else(|| {
            over(
                "concurrency",
                l.concurrency,
                self.max_concurrency,
                "--max-concurrency",
            )
        }) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The platform: what an embedder, the CLI and the server call.
pub struct Host {
    store: Arc<Store>,
    runtime: Runtime,
    /// Swapped whole on reload; calls in flight keep the version they took.
    catalog: RwLock<Arc<Catalog>>,
    opts: HostOptions,
    /// (add-on id, folder) pairs found trusted in the store by this process.
    trusted: Mutex<std::collections::HashSet<(String, PathBuf)>>,
    /// Resources whose scheduled rotation is running in this process.
    rotating: Mutex<std::collections::HashSet<i64>>,
    /// This process among the servers sharing the store.
    server_id: String,
    started_at: i64,
    /// (add-on id, component hash) found accepted, and when.
    verdicts: Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    /// The host's own HTTP calls: remote providers, calling platforms.
    remote_http: remote_http::Client,
    /// The key of the Platform API's grants and tokens, once read.
    grants: std::sync::OnceLock<oauth::Grants>,
    /// Provider mode: changes on their way back to the calling platform.
    deliveries: forward::Deliveries,
}

/// A plugin as `addonhost plugins` and `GET /api/plugins` list it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub id: String,
    pub name: String,
    /// `None` when its folder has none of the files that tell.
    pub language: Option<catalog::Language>,
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
    pub keys: u64,
    pub bytes: u64,
    pub quota_keys: u64,
    pub quota_bytes: u64,
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
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store = Arc::new(
            match &opts.database {
                Some(url) => Store::open_postgres(url)?,
                None => Store::open_sqlite(&opts.data_dir)?,
            }
            .observed_by(metrics.clone()),
        );
        crate::util::private_dir(&opts.data_dir)
            .with_context(|| format!("cannot create data dir {}", opts.data_dir.display()))?;
        let runtime = Runtime::with_metrics(
            Some(ArtifactCache::new(opts.data_dir.join("cache"))),
            metrics,
        )?;
        crate::store::set_audit_keep(opts.policy.audit_keep);
        let catalog = Catalog::discover(&opts.plugin_dirs, &opts.policy);
        Ok(Host {
            store,
            runtime,
            catalog: RwLock::new(Arc::new(catalog)),
            opts,
            trusted: Mutex::new(Default::default()),
            rotating: Mutex::new(Default::default()),
            server_id: cluster::random_token()[..16].to_string(),
            started_at: crate::util::unix_now(),
            verdicts: Mutex::new(Default::default()),
            remote_http: remote_http::Client::default(),
            grants: std::sync::OnceLock::new(),
            deliveries: Default::default(),
        })
    }

    /// Where this host serves the Platform API remote providers call back:
    /// `<public URL>/platform`.
    pub fn platform_api_url(&self) -> String {
        format!("{}/platform", self.opts.public_url.trim_end_matches('/'))
    }

    /// The signer of the Platform API's grants and tokens (its key made on
    /// first use and shared by every server on the store).
    pub(super) fn grants(&self) -> anyhow::Result<oauth::Grants> {
        if let Some(g) = self.grants.get() {
            return Ok(g.clone());
        }
        let key = self.shared_setting("platform-api-key", cluster::random_token)?;
        Ok(self
            .grants
            .get_or_init(|| oauth::Grants::new(key.as_bytes()))
            .clone())
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

    /// The metrics of this host: its plugins' calls, its store, its
    /// server's requests.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.runtime.metrics()
    }

    /// Every metric in the Prometheus text format, the gauges read now.
    pub fn metrics_text(&self) -> String {
        use crate::metrics::AddonLabel;
        let m = self.metrics();
        for s in self.catalog().services() {
            let label = AddonLabel {
                addon: s.manifest.id.clone(),
            };
            m.plugin_calls_in_flight
                .get_or_create(&label)
                .set(self.runtime.in_flight(&s.manifest.id) as i64);
            m.plugin_concurrency_limit
                .get_or_create(&label)
                .set(s.manifest.limits.concurrency as i64);
            if let Ok((keys, bytes)) = self.store.read(|tx| tx.kv_usage(&s.manifest.id)) {
                m.kv_keys.get_or_create(&label).set(keys as i64);
                m.kv_bytes.get_or_create(&label).set(bytes as i64);
            }
        }
        if let Some((batches, writes, wal)) = self.store.engine_stats() {
            m.store_batches.set(batches as i64);
            m.store_writes.set(writes as i64);
            m.store_wal_bytes.set(wal as i64);
        }
        m.encode()
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

    /// The compiled plugin of a service, once its folder is the one the
    /// store knows for it (see [`Host::trust`]).
    pub fn plugin(&self, service: &str) -> anyhow::Result<(Arc<Manifest>, Arc<Plugin>)> {
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
    pub fn trust(&self, dir: &std::path::Path) -> anyhow::Result<String> {
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
    pub fn storage(&self, id: &str) -> anyhow::Result<StorageView> {
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
                    "loaded".to_string(),
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

    /// `<public_url>/addons/<service>`
    pub fn base_url(&self, service: &str) -> String {
        if self.opts.addons_domain.is_some() {
            return self.addon_origin(service);
        }
        format!(
            "{}/addons/{service}",
            self.opts.public_url.trim_end_matches('/')
        )
    }

    /// The add-on's own origin, `<scheme>://<service>.<addons domain>[:port]`
    /// (scheme and port those of the public URL): where its pages and SSO
    /// live, so that no script of theirs runs on the platform's origin.
    pub fn addon_origin(&self, service: &str) -> String {
        addon_origin(&self.opts, service)
    }

    /// The add-on a request's `Host` names when it is one of the add-ons'
    /// own origins (`kv.localhost:5000` → `kv`), whatever its port.
    pub fn addon_of_host(&self, host: &str) -> Option<String> {
        let domain = self.opts.addons_domain.as_deref().unwrap_or("localhost");
        let name = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let service = name.to_ascii_lowercase();
        let service = service.strip_suffix(domain)?.strip_suffix('.')?;
        crate::manifest::is_slug(service).then(|| service.to_string())
    }

    fn context(
        &self,
        manifest: &Arc<Manifest>,
        scope: Scope,
    ) -> (Box<CallContext>, Arc<Mutex<Effects>>) {
        CallContext::new(
            self.store.clone(),
            manifest.clone(),
            scope,
            self.opts.outbound.grant(manifest),
        )
    }

    /// Runs `attempt` — a plugin call and the write of its outcome — again,
    /// up to [`reads::ATTEMPTS`] times, while the write is refused because
    /// what the call read changed meanwhile (see [`reads`]).
    async fn retrying<T, Fut>(
        &self,
        addon: &str,
        call: &str,
        mut attempt: impl FnMut() -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Err(e) if reads::is_stale(&e) && n < reads::ATTEMPTS => {
                    reads::back_off(n).await;
                    continue;
                }
                r => return r.map_err(|e| provision::stale_to_conflict(e, addon, call)),
            }
        }
    }

    /// Writes the refusals a call collected, whatever became of the call.
    async fn log_refusals(&self, effects: &Mutex<Effects>) {
        let refusals =
            std::mem::take(&mut effects.lock().unwrap_or_else(|p| p.into_inner()).refusals);
        if refusals.is_empty() {
            return;
        }
        for (addon, _) in &refusals {
            // Only ids of the catalog become label values.
            if self.catalog().get(addon).is_some() {
                self.metrics()
                    .config_updates_refused
                    .get_or_create(&crate::metrics::AddonLabel {
                        addon: addon.clone(),
                    })
                    .inc();
            }
        }
        let r = self.store.write(move |tx| {
            for (addon, what) in &refusals {
                tx.audit(
                    &format!("addon:{addon}"),
                    "refused",
                    None,
                    Some(addon),
                    what,
                )?;
            }
            // The add-on decides how often it is refused: its entries are
            // pruned on each such write, not only every few entries.
            let actors: std::collections::BTreeSet<String> =
                refusals.iter().map(|(a, _)| format!("addon:{a}")).collect();
            for actor in &actors {
                tx.prune_audit(actor, crate::store::audit_keep())?;
            }
            Ok(())
        });
        if let Err(e) = r.await {
            tracing::error!("cannot write refusals to the audit trail: {e:#}");
        }
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
        let to_platform = forward::to_platform_of(&effects);
        let m = manifest.clone();
        let policy = self.opts.policy;
        self.store
            .write(move |tx| apply_effects(tx, &m, &policy, &effects))
            .await?;
        // Provider mode: the platforms these resources came from hear of it.
        self.forward_to_platforms(manifest, to_platform);
        Ok(())
    }

    /// The audit trail, newest first.
    pub fn audit(&self, app: Option<&str>, limit: i64) -> anyhow::Result<Vec<store::AuditEntry>> {
        self.store.read(|tx| {
            if let Some(a) = app {
                app_named(tx, a)?;
            }
            tx.audit_entries(app, limit)
                .context("reading the audit trail")
        })
    }
}

/// Applies a call's buffered effects inside the caller's transaction:
/// the add-on's KV writes (within its storage quota), and any
/// partner-initiated config updates, completions and failures (each with the
/// ownership checks and releases).
fn apply_effects(
    tx: &dyn Tx,
    m: &Manifest,
    policy: &Policy,
    effects: &Effects,
) -> anyhow::Result<()> {
    // What the call decided on must still hold, or none of its writes
    // apply (the caller may run the call again).
    if !effects.reads.still_holds(tx, &m.id)? {
        return Err(reads::StaleReads.into());
    }
    if !effects.kv.is_empty() {
        let before = tx.kv_usage(&m.id)?;
        for (key, value) in &effects.kv {
            tx.kv_put(&m.id, key, value.as_deref())?;
        }
        let after = tx.kv_usage(&m.id)?;
        // A call that frees space is always applied, even over a quota
        // lowered since.
        let grew = after.0 > before.0 || after.1 > before.1;
        if grew && (after.0 > policy.kv_quota_keys || after.1 > policy.kv_quota_bytes) {
            return Err(error::addon(format!(
                "add-on {}: its storage quota is full ({} of {} keys, {} of {} bytes with this call's writes); \
                 nothing of the call was kept. It must delete data, or the operator raise the quota (--max-kv-mb, --max-kv-keys)",
                m.id, after.0, policy.kv_quota_keys, after.1, policy.kv_quota_bytes
            )));
        }
    }
    let actor = format!("addon:{}", m.id);
    for Update {
        partner_id: pid,
        changes,
        reason,
    } in &effects.updates
    {
        let Some(r) = tx.resource_by_partner_id(&m.id, pid)? else {
            continue;
        };
        for att in tx.attachments_of_resource(r.id)? {
            let mut changed = Vec::new();
            for (name, value) in changes {
                let app_name = naming::app_var(name, &m.api.config_vars_prefix, &att.name);
                if let Some(why) = crate::reserved::reason(&app_name) {
                    tx.audit(&actor, "refused", Some(&att.app), Some(&r.name), &why)?;
                    continue;
                }
                let current = tx.config_var(att.app_id, &app_name)?;
                if let Some(cur) = &current {
                    if cur.attachment_id != Some(att.id) {
                        tx.audit(
                            &actor,
                            "refused",
                            Some(&att.app),
                            Some(&r.name),
                            &format!("{app_name} is not owned by {}: write refused", r.name),
                        )?;
                        continue;
                    }
                }
                if current.is_none() && tx.taken_over(att.id, &app_name)? {
                    tx.audit(
                        &actor,
                        "refused",
                        Some(&att.app),
                        Some(&r.name),
                        &format!("{app_name} was taken over by the user: write refused"),
                    )?;
                    continue;
                }
                match value {
                    Some(v) if current.as_ref().map(|c| &c.value) != Some(v) => {
                        tx.upsert_var(att.app_id, &app_name, v, Some(att.id))?;
                        changed.push(app_name);
                    }
                    None if current.is_some() => {
                        tx.delete_var(att.app_id, &app_name)?;
                        changed.push(app_name);
                    }
                    _ => {}
                }
            }
            if !changed.is_empty() {
                let what = changed.join(", ");
                tx.insert_release(att.app_id, &format!("Update {what} by {}", m.id), &actor)?;
                tx.audit(
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
        let Some(r) = tx.resource_by_partner_id(&m.id, pid)? else {
            continue;
        };
        if r.state != ResourceState::Provisioning {
            continue;
        }
        for att in tx.attachments_of_resource(r.id)? {
            addons::write_config(tx, m, &r, &att, config)?;
            tx.insert_release(
                att.app_id,
                &format!("Attach {} ({})", att.name, r.name),
                &actor,
            )?;
        }
        tx.update_resource(
            r.id,
            Some(pid),
            ResourceState::Provisioned,
            &r.plan,
            message.as_deref(),
        )?;
        tx.audit(
            &actor,
            "provision:complete",
            Some(&r.app),
            Some(&r.name),
            "completed",
        )?;
    }
    for (pid, message) in &effects.failures {
        let Some(r) = tx.resource_by_partner_id(&m.id, pid)? else {
            continue;
        };
        // Completed (or failed) by another call meanwhile: an answered
        // provisioning is never undone.
        if r.state != ResourceState::Provisioning {
            continue;
        }
        for att in tx.attachments_of_resource(r.id)? {
            tx.delete_vars_of_attachment(att.id)?;
            tx.delete_attachment(att.id)?;
        }
        tx.update_resource(
            r.id,
            Some(pid),
            ResourceState::Failed,
            &r.plan,
            Some(message),
        )?;
        tx.audit(
            &actor,
            "provision:fail",
            Some(&r.app),
            Some(&r.name),
            message,
        )?;
    }
    Ok(())
}

/// The add-on's own origin for a host with `opts` (see
/// [`Host::addon_origin`]).
pub fn addon_origin(opts: &HostOptions, service: &str) -> String {
    let domain = opts.addons_domain.as_deref().unwrap_or("localhost");
    let (scheme, port) = match url::Url::parse(&opts.public_url) {
        Ok(u) => (u.scheme().to_string(), u.port()),
        Err(_) => ("http".to_string(), None),
    };
    match port {
        Some(p) => format!("{scheme}://{service}.{domain}:{p}"),
        None => format!("{scheme}://{service}.{domain}"),
    }
}

/// The app `name`, or an error that says how to find or make it.
pub(super) fn app_named(conn: &dyn Tx, name: &str) -> anyhow::Result<store::App> {
    conn.app_by_name(name)?.ok_or_else(|| {
        error::not_found(format!(
            "app {name:?} not found; list apps with `addonhost apps` or create it with `addonhost apps:create {name}`"
        ))
    })
}

fn take(effects: &Mutex<Effects>) -> Effects {
    std::mem::take(&mut *effects.lock().unwrap_or_else(|p| p.into_inner()))
}
