//! What the servers sharing one store (PostgreSQL) agree on through it:
//! signed-in sessions valid on every server, settings such as the API
//! token, which server runs each scheduled rotation, which servers are up
//! and the plugin components the platform serves each add-on with.
//!
//! With SQLite there is one server per data dir; the same rows are kept so
//! both backends run one code path (sessions then survive a restart too).

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{error, Host};
use crate::manifest::Manifest;
use crate::runtime::Plugin;
use crate::store::{NewSession, Resource, ServerRow};
use crate::util::unix_now;

/// A server that has not been heard of for this long is not listed.
pub const SERVER_SILENT_SECONDS: i64 = 15;
/// How long a verdict on a component stays with a server before it asks
/// the store again (an operator may have retired it meanwhile).
const COMPONENT_VERDICT_TTL: Duration = Duration::from_secs(2);

/// A server sharing the store, as `GET /api/servers` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// The server's random id, new at every start.
    pub id: String,
    /// Where it serves (`http://host:port`).
    pub address: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// Its last heartbeat (Unix seconds); a server silent for
    /// [`SERVER_SILENT_SECONDS`] is not listed.
    pub seen_at: i64,
    /// Add-on id → hex SHA-256 of the component it runs.
    pub plugins: BTreeMap<String, String>,
    /// Whether it is the server answering.
    pub this: bool,
}

/// The component a server runs for an add-on.
#[derive(Debug, Clone, Serialize)]
pub struct PluginOnServer {
    /// The server's id.
    pub server: String,
    /// Where it serves.
    pub address: String,
    /// Hex SHA-256 of the component, `None` if that server has not loaded it.
    pub component_hash: Option<String>,
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let b: [u8; 32] = rand::random();
    hex::encode(b)
}

fn hash_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Host {
    /// Whether several servers may share this host's store (PostgreSQL).
    pub fn shared_store(&self) -> bool {
        self.store.shared()
    }

    /// Apps with a new release from now on, whoever made it, when the
    /// store announces them (PostgreSQL); `None`: look from time to time.
    pub fn subscribe_releases(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.store.subscribe_releases()
    }

    /// This process's id among the servers sharing the store.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Starts a session of `kind` carrying `data`, valid for `ttl` on every
    /// server of the store; at most `max` of a kind are kept (the oldest
    /// go). Returns the session id, the cookie value: the store keeps only
    /// its hash.
    pub async fn create_session(
        &self,
        kind: &str,
        data: String,
        ttl: Duration,
        max: u64,
    ) -> crate::Result<String> {
        let id = random_token();
        let (id_hash, kind) = (hash_of(&id), kind.to_string());
        let ttl = ttl.as_secs() as i64;
        self.store
            .write(move |tx| {
                let now = unix_now();
                tx.insert_session(&NewSession {
                    id_hash: &id_hash,
                    kind: &kind,
                    data: &data,
                    expires_at: now + ttl,
                    now,
                    max,
                })
            })
            .await?;
        Ok(id)
    }

    /// Starts a session of `kind` carrying `data` that belongs to `owner`
    /// (who, signed in to what): at most `max_per_owner` of the owner's are
    /// kept (its oldest go first) and `max` of the kind. With `once` (a
    /// single-use token's key and until when it could be presented), the
    /// token is spent in the same transaction: `None` when it was spent
    /// already, by a replay on this or any server sharing the store.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_owned_session(
        &self,
        kind: &str,
        data: String,
        ttl: Duration,
        max: u64,
        owner: &str,
        max_per_owner: u64,
        once: Option<(String, i64)>,
    ) -> crate::Result<Option<String>> {
        let id = random_token();
        let (id_hash, kind, owner) = (hash_of(&id), kind.to_string(), hash_of(owner));
        let ttl = ttl.as_secs() as i64;
        let made = self
            .store
            .write(move |tx| {
                let now = unix_now();
                if let Some((key, until)) = &once {
                    if !tx.spend_once(key, *until, now)? {
                        return Ok(false);
                    }
                }
                tx.insert_owned_session(
                    &NewSession {
                        id_hash: &id_hash,
                        kind: &kind,
                        data: &data,
                        expires_at: now + ttl,
                        now,
                        max,
                    },
                    &owner,
                    max_per_owner,
                )?;
                Ok(true)
            })
            .await?;
        Ok(made.then_some(id))
    }

    /// The data of session `id` of `kind`, if it is valid now.
    pub fn session(&self, kind: &str, id: &str) -> crate::Result<Option<String>> {
        if id.len() != 64 {
            return Ok(None);
        }
        let id_hash = hash_of(id);
        self.store
            .read(|tx| tx.session(&id_hash, kind, unix_now()))
            .map_err(Into::into)
    }

    /// Ends session `id`.
    pub async fn end_session(&self, id: &str) -> crate::Result<()> {
        let id_hash = hash_of(id);
        self.store
            .write(move |tx| tx.delete_session(&id_hash))
            .await
            .map_err(Into::into)
    }

    /// The shared setting `name`, made by `make` and stored if there is
    /// none yet (the first server to ask wins; the others read its value).
    pub fn shared_setting(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> crate::Result<String> {
        if let Some(v) = self.store.read(|tx| tx.setting(name))? {
            return Ok(v);
        }
        let (name, value) = (name.to_string(), make());
        self.store
            .write_blocking(move |tx| {
                tx.insert_setting(&name, &value)?;
                tx.setting(&name)?
                    .ok_or_else(|| anyhow::anyhow!("setting {name} vanished as it was stored"))
            })
            .map_err(Into::into)
    }

    /// Records that this server is up at `address`, with the components it
    /// runs; servers call it every few seconds.
    pub async fn heartbeat(&self, address: &str) -> crate::Result<()> {
        let plugins: BTreeMap<String, String> = self
            .catalog()
            .services()
            .filter_map(|s| {
                s.loaded()
                    .map(|p| (s.manifest.id.clone(), p.content_hash.clone()))
            })
            .collect();
        let row = ServerRow {
            id: self.server_id.clone(),
            address: address.to_string(),
            started_at: self.started_at,
            seen_at: unix_now(),
            plugins: serde_json::to_string(&plugins).context("encoding the plugin list")?,
        };
        self.store
            .write(move |tx| tx.record_server(&row))
            .await
            .map_err(Into::into)
    }

    /// Takes this server off the list (on shutdown).
    pub async fn leave(&self) -> crate::Result<()> {
        let id = self.server_id.clone();
        self.store
            .write(move |tx| tx.delete_server(&id))
            .await
            .map_err(Into::into)
    }

    /// The servers heard of lately, this one included once it beat.
    pub fn servers(&self) -> crate::Result<Vec<ServerView>> {
        let since = unix_now() - SERVER_SILENT_SECONDS;
        let rows = self.store.read(|tx| tx.servers(since))?;
        Ok(rows
            .into_iter()
            .map(|r| ServerView {
                plugins: serde_json::from_str(&r.plugins).unwrap_or_default(),
                this: r.id == self.server_id,
                id: r.id,
                address: r.address,
                started_at: r.started_at,
                seen_at: r.seen_at,
            })
            .collect())
    }

    /// Adds to each plugin's row the components accepted for it and the
    /// one each server runs.
    pub(super) fn add_cluster_view(&self, rows: &mut [super::PluginStatus]) {
        let servers = self.servers().unwrap_or_default();
        for row in rows.iter_mut() {
            row.accepted_components = self.accepted_components(&row.id).ok();
            row.servers = servers
                .iter()
                .map(|s| PluginOnServer {
                    server: s.id.clone(),
                    address: s.address.clone(),
                    component_hash: s.plugins.get(&row.id).cloned(),
                })
                .collect();
        }
    }

    /// The component hashes the platform serves add-on `id` with.
    pub fn accepted_components(&self, id: &str) -> crate::Result<Vec<String>> {
        self.store
            .read(|tx| tx.accepted_components(id))
            .map_err(Into::into)
    }

    /// `plugins:deploy`: accepts the component of the add-on in `dir` for
    /// every server, beside those accepted before (a rolling deploy: old
    /// and new bytes serve while servers move), or alone with `only` (the
    /// deploy is over: a server still on older bytes stops serving it).
    /// Returns (add-on id, hash, hashes retired).
    pub fn deploy_component(
        &self,
        dir: &std::path::Path,
        only: bool,
    ) -> crate::Result<(String, String, usize)> {
        let m = Manifest::load(dir).map_err(|e| error::invalid(e.to_string()))?;
        let bytes = std::fs::read(&m.component).map_err(|e| {
            error::invalid(format!(
                "cannot read the component {}: {e}; build it with `addonhost plugins:build {}`",
                m.component.display(),
                dir.display()
            ))
        })?;
        let hash = crate::runtime::content_hash(&bytes);
        let (id, h) = (m.id.clone(), hash.clone());
        let retired = self.store.write_blocking(move |tx| {
            tx.accept_component(&id, &h, unix_now())?;
            let retired = if only {
                tx.retire_components(&id, &h)?
            } else {
                0
            };
            tx.audit(
                "user",
                "plugins:deploy",
                None,
                Some(&id),
                &format!("{h}{}", if only { " (only)" } else { "" }),
            )?;
            Ok(retired)
        })?;
        self.verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok((m.id, hash, retired))
    }

    /// On a shared store, a server serves an add-on only with a component
    /// the platform accepted for it: one server left on other bytes would
    /// answer differently from the rest. The first component served is
    /// accepted as it is; later ones with `plugins:deploy`. Refused calls
    /// are 503s, so a load balancer tries another server.
    pub(super) fn check_component(&self, m: &Manifest, plugin: &Plugin) -> anyhow::Result<()> {
        if !self.store.shared() || self.opts.allow_plugin_mismatch {
            return Ok(());
        }
        let key = (m.id.clone(), plugin.content_hash.clone());
        if let Some(at) = self
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < COMPONENT_VERDICT_TTL {
                return Ok(());
            }
        }
        let mut accepted = self.store.read(|tx| tx.accepted_components(&m.id))?;
        if accepted.is_empty() {
            let (id, h) = key.clone();
            accepted = self.store.write_blocking(move |tx| {
                // Another server may have accepted its own first.
                if tx.accepted_components(&id)?.is_empty() {
                    tx.accept_component(&id, &h, unix_now())?;
                }
                tx.accepted_components(&id)
            })?;
        }
        if !accepted.contains(&plugin.content_hash) {
            return Err(error::unavailable(format!(
                "add-on {} runs component {} on this server, but the platform serves it with {}: \
                 deploy the same build to every server, or accept this one with `addonhost plugins:deploy {}` \
                 (see docs/cluster.md, Rolling deploys)",
                m.id,
                &plugin.content_hash[..16],
                accepted.iter().map(|h| &h[..16]).collect::<Vec<_>>().join(", "),
                m.dir.display()
            )));
        }
        self.verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Instant::now());
        Ok(())
    }

    /// Makes this server the one to run the scheduled rotation of `r` (as
    /// read when it fell due), if no other server took it since; whether it
    /// did. The claim outlives any run of the rotation, retries included;
    /// a server that dies holding it leaves it to the others after that.
    pub(super) async fn claim_rotation(&self, r: &Resource) -> anyhow::Result<bool> {
        let lease = 3 * (self.opts.policy.max_timeout_ms / 1000) as i64 + 60;
        let (seen, owner) = (r.clone(), self.server_id.clone());
        self.store
            .write(move |tx| {
                let now = unix_now();
                tx.claim_rotation(&seen, &owner, now + lease, now)
            })
            .await
    }
}
