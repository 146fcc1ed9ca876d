//! The Heroku side of addonhost: apps, config vars, releases, add-ons and
//! attachments. The only place the platform's rules live: which names an
//! add-on may set, who owns a var, what makes a release. It calls `store` for
//! durability and `runtime` for plugins, and neither calls back.

pub mod actor;
mod addons;
mod apps;
pub mod catalog;
mod change;
pub mod cluster;
mod config;
pub mod context;
mod dispatch;
pub mod error;
mod forward;
pub mod http;
pub mod naming;
pub mod oauth;
mod options;
pub mod osb;
pub mod outbound;
pub mod partner;
pub mod platform_api;
mod plugins;
mod provider;
mod provision;
mod rate;
mod reads;
mod remote;
pub mod remote_http;
mod schedule;
pub mod sso;
pub mod validate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;

pub use addons::{AddonChanged, AddonCreated, AddonView, CreateAddon, RotationView};
pub use apps::AppInfo;
pub use catalog::{Catalog, ReloadReport, Service};
pub use config::ConfigVarView;
pub use error::{Kind, UserError};
pub use forward::OwedView;
pub use options::{HostOptions, Policy};
pub use outbound::{Deny, OutboundPolicy, OutboundView};
pub use plugins::{PluginStatus, ServiceView, StorageView};

use crate::manifest::Manifest;
use crate::runtime::{ArtifactCache, Runtime};
use crate::store::{self, ResourceState, Store, Tx};
use context::{CallContext, Completion, Effects, Scope, Update};

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
    /// Each partner's Platform API requests, metered (in this process).
    platform_api_rate: rate::RateLimit,
    /// Each partner credential's Partner API requests, metered (in this
    /// process).
    partner_api_rate: rate::RateLimit,
    /// Provider mode: the deliveries of what calling platforms are owed
    /// running in this process.
    deliveries: forward::Deliveries,
}

impl Host {
    /// Opens the data dir (creating it) and discovers the plugins.
    pub fn open(opts: HostOptions) -> crate::Result<Host> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store = Arc::new(
            match &opts.database {
                Some(url) => Store::open_postgres(url, &opts.database_options)?,
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
        let remote_http =
            remote_http::Client::new(remote_http::TIMEOUT, &opts.trust, opts.allow_plain_http);
        Ok(Host {
            store,
            runtime,
            catalog: RwLock::new(Arc::new(catalog)),
            platform_api_rate: rate::RateLimit::new(opts.platform_api_rate),
            partner_api_rate: rate::RateLimit::new(opts.partner_api_rate),
            opts,
            trusted: Mutex::new(Default::default()),
            rotating: Mutex::new(Default::default()),
            server_id: cluster::random_token()[..16].to_string(),
            started_at: crate::util::unix_now(),
            verdicts: Mutex::new(Default::default()),
            remote_http,
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

    /// The options this host was opened with.
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

    /// The wasmtime runtime running this host's plugins (engine, artifact
    /// cache, call slots).
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
        match self.owed_counts() {
            Ok(counts) => {
                for s in self.catalog().services() {
                    let (pending, failed) = counts.get(&s.manifest.id).copied().unwrap_or_default();
                    let label = AddonLabel {
                        addon: s.manifest.id.clone(),
                    };
                    m.partner_owed.get_or_create(&label).set(pending);
                    m.partner_owed_failed.get_or_create(&label).set(failed);
                }
            }
            Err(e) => tracing::warn!("cannot count what is owed to platforms: {e:#}"),
        }
        #[cfg(feature = "postgres")]
        if let Some(pg) = self.store.postgres_stats() {
            m.store_statements.set(pg.statements as i64);
            m.store_round_trips.set(pg.round_trips as i64);
            m.store_reruns.set(pg.reruns as i64);
        }
        m.encode()
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
        let mut grant = self.opts.outbound.grant(manifest);
        // The operator's trust roots: the same for the add-ons' HTTPS as
        // for the host's own.
        grant.trust = self.opts.trust.clone();
        grant.resolver = self.opts.outbound_resolver.clone();
        CallContext::new(self.store.clone(), manifest.clone(), scope, grant)
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
        let (refusals, by) = {
            let mut e = effects.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut e.refusals), e.actor.clone())
        };
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
        let actor_of = move |addon: &str| by.clone().unwrap_or_else(|| actor::addon(addon));
        let r = self.store.write(move |tx| {
            for (addon, what) in &refusals {
                tx.audit(&actor_of(addon), "refused", None, Some(addon), what)?;
            }
            // The add-on decides how often it is refused: its entries are
            // pruned on each such write, not only every few entries.
            let actors: std::collections::BTreeSet<String> =
                refusals.iter().map(|(a, _)| actor_of(a)).collect();
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
        let m = manifest.clone();
        let policy = self.opts.policy;
        self.store
            .write(move |tx| apply_effects(tx, &m, &policy, &effects))
            .await?;
        // Provider mode: what the platforms these resources came from are
        // owed was written with it; deliver it now.
        self.wake_deliveries();
        Ok(())
    }

    /// The audit trail, newest first.
    pub fn audit(&self, app: Option<&str>, limit: i64) -> crate::Result<Vec<store::AuditEntry>> {
        self.store
            .read(|tx| {
                if let Some(a) = app {
                    app_named(tx, a)?;
                }
                tx.audit_entries(app, limit)
                    .context("reading the audit trail")
            })
            .map_err(Into::into)
    }
}

/// Locks what a call's effects read and write of its add-on's KV, before
/// anything else the transaction reads (a store with concurrent writers
/// takes KV locks before app locks, in one order everywhere: see
/// `Tx::lock_kv`). Each write transaction that applies a call's effects
/// starts with this.
fn lock_effects(tx: &dyn Tx, m: &Manifest, effects: &Effects) -> anyhow::Result<()> {
    let mut keys: Vec<&str> = effects.reads.read_keys().collect();
    keys.extend(effects.kv.keys().map(String::as_str));
    keys.sort_unstable();
    keys.dedup();
    let listing = effects.reads.has_scans();
    if keys.is_empty() && !listing {
        return Ok(());
    }
    tx.lock_kv(&m.id, &keys, listing)
}

/// Applies a call's buffered effects inside the caller's transaction:
/// the add-on's KV writes (within its storage quota), and any
/// partner-initiated config updates, completions and failures (each with the
/// ownership checks and releases). In provider mode, what of them the
/// platform a resource came from must hear is owed to it in the same
/// transaction ([`forward::owe`]).
fn apply_effects(
    tx: &dyn Tx,
    m: &Manifest,
    policy: &Policy,
    effects: &Effects,
) -> anyhow::Result<()> {
    lock_effects(tx, m, effects)?;
    // What the checks below read, and the sizes the writes replace, in one
    // go.
    let mut ahead: Vec<store::Ahead> = effects
        .reads
        .read_keys()
        .map(|key| store::Ahead::Kv {
            service: &m.id,
            key,
        })
        .collect();
    if !effects.kv.is_empty() {
        ahead.push(store::Ahead::KvUsage(&m.id));
        ahead.extend(effects.kv.keys().map(|key| store::Ahead::KvWrite {
            service: &m.id,
            key,
        }));
    }
    tx.read_ahead(&ahead)?;
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
    let actor = effects.actor.clone().unwrap_or_else(|| actor::addon(&m.id));
    for Update {
        partner_id: pid,
        changes,
        reason,
    } in &effects.updates
    {
        let Some(r) = tx.resource_by_partner_id(&m.id, pid)? else {
            continue;
        };
        // What was written, by manifest name: what a platform is owed.
        let mut applied: Vec<(String, Option<String>)> = Vec::new();
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
                    _ => continue,
                }
                if !applied.iter().any(|(n, _)| n == name) {
                    applied.push((name.clone(), value.clone()));
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
        forward::owe(tx, m, &r, &applied, false)?;
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
            change::write_config(tx, m, &r, &att, config)?;
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
        let owed: Vec<(String, Option<String>)> = config
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect();
        forward::owe(tx, m, &r, &owed, true)?;
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
