//! The durable state, behind one interface: [`Tx`], the rows of the
//! platform (apps, config vars, releases, resources, attachments, the audit
//! trail, the add-ons' KV) as typed reads and writes, and [`Store`], which
//! runs a closure over a `Tx` as one transaction.
//!
//! This module knows nothing of wasm or HTTP, and nothing above it speaks
//! SQL: the rules about what may change live in `platform`, which composes
//! these reads and writes inside the transactions it asks for. The embedded
//! backend is SQLite (`sqlite`, on the engine of `addonhost-sqlite`); the
//! shared one, PostgreSQL (`postgres`, behind the crate's `postgres`
//! feature, on by default: an embedder that wants SQLite only turns default
//! features off and compiles no PostgreSQL driver).

#[cfg(feature = "postgres")]
mod postgres;
mod rows;
mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "postgres")]
pub use postgres::{migrations as postgres_migrations, PgStats, PgStore};
pub use rows::{
    App, Attachment, AuditEntry, ConfigVar, NewResource, NewSession, OsbBinding, OsbInstance,
    OutboxEntry, Release, Resource, ResourceState, ServerRow,
};
pub use sqlite::SqliteStore;

/// How to reach a PostgreSQL database (kept without the `postgres` feature
/// too, so options name it either way).
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// The servers reach PostgreSQL through a transaction-pooling
    /// connection pooler (PgBouncer's `pool_mode = transaction`): no named
    /// prepared statements, and notifications only through
    /// `listen_url`.
    pub pooler: bool,
    /// A direct connection (not through the pooler) for `LISTEN`, so new
    /// releases are heard of at once; without one behind a pooler, servers
    /// poll.
    pub listen_url: Option<String>,
}

/// The store cannot be reached or written now (the database is down, the
/// disk failed): nothing of the request was done.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The smallest string greater than every string starting with `prefix`
/// (`None` for the empty prefix, which every string starts with). Keys sort
/// as bytes, and UTF-8 sorts as code points do, so the next code point
/// bounds it.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Audit entries kept of each actor (the user, each add-on, each platform)
/// unless the operator says otherwise.
pub const DEFAULT_AUDIT_KEEP: u64 = 10_000;
/// Every how many audit entries (by id) the writer's older ones are pruned:
/// pruning walks `keep` index entries, so it is not done on every write.
pub const AUDIT_PRUNE_EVERY: i64 = 16;

/// The retention of the audit trail: one per process, like the store it
/// bounds, set once by the host from the operator's policy (each backend's
/// `Tx::audit` reads it, and the transactions have no other way to it).
static AUDIT_KEEP: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_AUDIT_KEEP);

/// Keeps the newest `keep` audit entries of each actor from now on (0: all).
pub fn set_audit_keep(keep: u64) {
    AUDIT_KEEP.store(keep, std::sync::atomic::Ordering::Relaxed);
}

/// The newest audit entries kept of each actor (0: all).
pub fn audit_keep() -> u64 {
    AUDIT_KEEP.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the audit entry just written as `id` is one after which its
/// actor's older entries are pruned.
pub(crate) fn audit_prune_due(id: i64) -> bool {
    id % AUDIT_PRUNE_EVERY == 0 && audit_keep() > 0
}

/// The database file inside a data dir.
pub const DB_FILE: &str = "addonhost.db";

/// A read a transaction is about to make (or a row it is about to
/// insert), named ahead: a store that pays a round trip per statement
/// sends the reads named together and answers the transaction's own calls
/// from what came back ([`Tx::read_ahead`]). What is named and then not
/// read costs that read, nothing more; what is read without being named is
/// read when asked, as always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead<'a> {
    /// [`Tx::app_by_name`].
    App(&'a str),
    /// [`Tx::resource_by_uuid`].
    ResourceByUuid(&'a str),
    /// [`Tx::resource_by_name`].
    ResourceByName(&'a str),
    /// [`Tx::resource_by_id`].
    ResourceById(i64),
    /// [`Tx::resource_by_partner_id`].
    ResourceByPartnerId {
        /// The add-on.
        service: &'a str,
        /// The id it gave the resource.
        partner_id: &'a str,
    },
    /// [`Tx::attachments_of_resource`].
    AttachmentsOfResource(i64),
    /// [`Tx::attachment_by_name`].
    AttachmentByName {
        /// The app.
        app_id: i64,
        /// The attachment name.
        name: &'a str,
    },
    /// [`Tx::config_var`].
    ConfigVar {
        /// The app.
        app_id: i64,
        /// The var's name.
        name: &'a str,
    },
    /// [`Tx::vars_of_attachment`].
    VarsOfAttachment(i64),
    /// [`Tx::taken_over`].
    TakenOver {
        /// The attachment.
        attachment_id: i64,
        /// The var's name.
        name: &'a str,
    },
    /// [`Tx::kv_get`].
    Kv {
        /// The add-on.
        service: &'a str,
        /// The key.
        key: &'a str,
    },
    /// A [`Tx::kv_put`] of this key is coming (its usage accounting reads
    /// the size stored before).
    KvWrite {
        /// The add-on.
        service: &'a str,
        /// The key.
        key: &'a str,
    },
    /// [`Tx::kv_usage`].
    KvUsage(&'a str),
    /// A [`Tx::insert_release`] on this app is coming.
    Release(i64),
    /// A [`Tx::insert_resource`] is coming.
    NewResource,
    /// A [`Tx::insert_attachment`] is coming.
    NewAttachment,
}

/// Reads and writes of one transaction. Every method sees the writes made
/// before it in the same transaction; the transaction's writes land together
/// or not at all.
pub trait Tx {
    /// Names reads this transaction is about to make (see [`Ahead`]); a
    /// store without round trips to save ignores them.
    fn read_ahead(&self, reads: &[Ahead<'_>]) -> anyhow::Result<()> {
        let _ = reads;
        Ok(())
    }

    // ---- apps, releases, audit
    /// Creates an app in `region` (its name must be free: the store's unique
    /// index refuses a taken one); its row id.
    fn insert_app(&self, name: &str, region: &str) -> anyhow::Result<i64>;
    /// The app named `name`, `None` if there is none.
    fn app_by_name(&self, name: &str) -> anyhow::Result<Option<App>>;
    /// Every app, by name.
    fn list_apps(&self) -> anyhow::Result<Vec<App>>;
    /// Deletes an app and everything hanging off it.
    fn delete_app(&self, app_id: i64) -> anyhow::Result<()>;
    /// Appends the app's next release (numbers gap-free); its version.
    fn insert_release(&self, app_id: i64, description: &str, actor: &str) -> anyhow::Result<i64>;
    /// Releases, newest first.
    fn releases(&self, app_id: i64) -> anyhow::Result<Vec<Release>>;
    /// Appends an entry to the audit trail, stamped now: who (`user`,
    /// `platform`, an add-on…) did `action` (`apps:create`, `addons:rotate`, …)
    /// to which app and add-on resource, with a human-readable `detail`.
    fn audit(
        &self,
        actor: &str,
        action: &str,
        app: Option<&str>,
        addon: Option<&str>,
        detail: &str,
    ) -> anyhow::Result<()>;
    /// Deletes all but the newest `keep` audit entries of `actor` (none
    /// when `keep` is 0: no bound); how many went. [`Tx::audit`] calls it
    /// every [`AUDIT_PRUNE_EVERY`] entries with [`audit_keep`].
    fn prune_audit(&self, actor: &str, keep: u64) -> anyhow::Result<u64>;
    /// The audit trail, newest first, of one app or all.
    fn audit_entries(&self, app: Option<&str>, limit: i64) -> anyhow::Result<Vec<AuditEntry>>;

    // ---- config vars
    /// Every config var of the app, user-set and add-on-owned alike.
    fn config_vars(&self, app_id: i64) -> anyhow::Result<Vec<ConfigVar>>;
    /// One config var of the app, `None` if it is not set.
    fn config_var(&self, app_id: i64, name: &str) -> anyhow::Result<Option<ConfigVar>>;
    /// The vars an attachment owns (what its add-on set under that attachment's
    /// name).
    fn vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<Vec<ConfigVar>>;
    /// Sets a var, owned by an attachment or (`None`) by the user.
    fn upsert_var(
        &self,
        app_id: i64,
        name: &str,
        value: &str,
        owner: Option<i64>,
    ) -> anyhow::Result<()>;
    /// Removes a var from the app, whoever owns it (the platform checks
    /// ownership before).
    fn delete_var(&self, app_id: i64, name: &str) -> anyhow::Result<()>;
    /// Removes every var an attachment owns (on detach or deprovision); how
    /// many.
    fn delete_vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<usize>;
    /// The app's attachments: attachment id → (resource name, attachment
    /// name), to say who owns a var.
    fn var_owners(&self, app_id: i64) -> anyhow::Result<BTreeMap<i64, (String, String)>>;
    /// Records that the user took var `name` from an attachment (a forced
    /// set or unset): that attachment may not write it again.
    fn take_over_var(&self, attachment_id: i64, name: &str) -> anyhow::Result<()>;
    /// Whether the user took var `name` from the attachment.
    fn taken_over(&self, attachment_id: i64, name: &str) -> anyhow::Result<bool>;

    // ---- resources and attachments
    /// The resource with platform uuid `uuid`, in any state.
    fn resource_by_uuid(&self, uuid: &str) -> anyhow::Result<Option<Resource>>;
    /// The resource named `name` (its globally unique name, such as `kv-…`), in
    /// any state.
    fn resource_by_name(&self, name: &str) -> anyhow::Result<Option<Resource>>;
    /// The resource with row id `id`, in any state.
    fn resource_by_id(&self, id: i64) -> anyhow::Result<Option<Resource>>;
    /// The resource of add-on `service` that the add-on knows as `partner_id`
    /// (the id its provision returned).
    fn resource_by_partner_id(
        &self,
        service: &str,
        partner_id: &str,
    ) -> anyhow::Result<Option<Resource>>;
    /// Resources that are not deprovisioned, of one app (owned or attached)
    /// or of all.
    fn list_resources(&self, app_id: Option<i64>) -> anyhow::Result<Vec<Resource>>;
    /// Provisioned resources of one service (for scheduled rotation).
    fn provisioned_of_service(&self, service: &str) -> anyhow::Result<Vec<Resource>>;
    /// A new resource in state `provisioning`; its id.
    fn insert_resource(&self, r: &NewResource) -> anyhow::Result<i64>;
    /// Records an add-on's answer about a resource: its partner id, state, plan
    /// and user-facing message (each replacing the stored one); stamps
    /// `updated_at`.
    fn update_resource(
        &self,
        id: i64,
        partner_id: Option<&str>,
        state: ResourceState,
        plan: &str,
        message: Option<&str>,
    ) -> anyhow::Result<()>;
    /// Makes `owner` the holder of the reservation of resource `id` until
    /// `until` (Unix seconds), if it is an unanswered provisioning whose
    /// holder's lease has ended at `now`; whether it did.
    fn claim_reservation(&self, id: i64, owner: &str, until: i64, now: i64)
        -> anyhow::Result<bool>;
    /// Deletes a resource and its attachments.
    fn delete_resource(&self, id: i64) -> anyhow::Result<()>;
    /// Records a successful rotation at `at` (ending any claim on it).
    fn rotation_succeeded(&self, id: i64, at: i64) -> anyhow::Result<()>;
    /// Records a failed scheduled rotation and when to retry it (ending
    /// the claim on it).
    fn rotation_failed(&self, id: i64, error: &str, retry_at: i64) -> anyhow::Result<()>;
    /// Attaches resource `resource_id` to app `app_id` as `name` (unique per
    /// app); the attachment's id.
    fn insert_attachment(&self, resource_id: i64, app_id: i64, name: &str) -> anyhow::Result<i64>;
    /// Removes an attachment (its vars are removed separately, by
    /// [`Tx::delete_vars_of_attachment`]).
    fn delete_attachment(&self, id: i64) -> anyhow::Result<()>;
    /// Every attachment of a resource, to any app.
    fn attachments_of_resource(&self, resource_id: i64) -> anyhow::Result<Vec<Attachment>>;
    /// The attachment named `name` on the app, `None` if that name is free.
    fn attachment_by_name(&self, app_id: i64, name: &str) -> anyhow::Result<Option<Attachment>>;

    // ---- the add-ons' KV
    /// The value stored under `key` in add-on `service`'s private KV.
    fn kv_get(&self, service: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Stores (`Some`) or deletes (`None`) one key, keeping the service's
    /// usage (see [`Tx::kv_usage`]) in step.
    fn kv_put(&self, service: &str, key: &str, value: Option<&[u8]>) -> anyhow::Result<()>;
    /// A service's stored (keys, bytes of keys plus values).
    fn kv_usage(&self, service: &str) -> anyhow::Result<(u64, u64)>;
    /// Up to `limit` keys starting with `prefix` that sort after `after`
    /// (from the first, when `None`), in order.
    fn kv_keys(
        &self,
        service: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>>;
    /// How many keys start with `prefix`.
    fn kv_count(&self, service: &str, prefix: &str) -> anyhow::Result<u64>;
    /// Before a write transaction reads add-on `service`'s `keys` (and, with
    /// `listing`, a listing or count of its keys) to decide, then writes
    /// them: on a store with concurrent writers, no other transaction
    /// changes them until this one ends. Locks are taken in one order
    /// everywhere — a call's KV before any app — so a transaction that
    /// applies a call's effects does this first. A single writer needs
    /// nothing.
    fn lock_kv(&self, service: &str, keys: &[&str], listing: bool) -> anyhow::Result<()> {
        let _ = (service, keys, listing);
        Ok(())
    }

    // ---- which folders may serve an add-on id
    /// The folders add-on id `service` is bound to in this store, oldest
    /// binding first: a plugin of that id found in another folder is not
    /// served.
    fn plugin_dirs(&self, service: &str) -> anyhow::Result<Vec<String>>;
    /// Binds add-on id `service` to folder `dir`, beside any folder it is bound
    /// to already.
    fn trust_plugin_dir(&self, service: &str, dir: &str) -> anyhow::Result<()>;

    // ---- what every server shares
    /// Stores a session, first dropping the kind's expired sessions and,
    /// past `max`, its oldest.
    fn insert_session(&self, s: &NewSession) -> anyhow::Result<()>;
    /// Stores a session that belongs to `owner` (an opaque key: who it
    /// opens what for): first the kind's expired sessions go, then, past
    /// `max_per_owner`, that owner's oldest, then, past `s.max`, the
    /// kind's oldest. So one owner signing in again and again spends only
    /// its own sessions.
    fn insert_owned_session(
        &self,
        s: &NewSession,
        owner: &str,
        max_per_owner: u64,
    ) -> anyhow::Result<()>;
    /// A session's data, if it exists and has not expired at `now`.
    fn session(&self, id_hash: &str, kind: &str, now: i64) -> anyhow::Result<Option<String>>;
    /// Forgets a session (sign-out), of whatever kind.
    fn delete_session(&self, id_hash: &str) -> anyhow::Result<()>;
    /// Spends the single-use token `key` (a hash naming a signed SSO form
    /// or a Platform API grant), which stays spent until `expires_at`:
    /// whether it was unspent. Two transactions spending the same key
    /// concurrently cannot both succeed (the key is unique). Tokens
    /// expired at `now` are forgotten first, so the table holds only what
    /// could still be presented.
    fn spend_once(&self, key: &str, expires_at: i64, now: i64) -> anyhow::Result<bool>;
    /// Whether the single-use token `key` was spent (and not yet expired at
    /// `now`).
    fn spent(&self, key: &str, now: i64) -> anyhow::Result<bool>;
    /// A shared setting (the API token, the broker's id and credentials, the
    /// Platform API signing key…), `None` if never stored.
    fn setting(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// Stores a setting unless one of that name exists.
    fn insert_setting(&self, name: &str, value: &str) -> anyhow::Result<()>;
    /// Sets (`Some`) or removes (`None`) a setting, whatever it was.
    fn put_setting(&self, name: &str, value: Option<&str>) -> anyhow::Result<()>;
    /// Makes `owner` the one server to run the scheduled rotation of the
    /// resource `seen`, until `until`: only if nobody holds it at `now` and
    /// the resource was not rotated (nor failed to be) since it was read as
    /// `seen`; whether it did.
    fn claim_rotation(
        &self,
        seen: &Resource,
        owner: &str,
        until: i64,
        now: i64,
    ) -> anyhow::Result<bool>;
    /// Creates or refreshes a server's row.
    fn record_server(&self, s: &ServerRow) -> anyhow::Result<()>;
    /// Servers seen at or after `seen_since`.
    fn servers(&self, seen_since: i64) -> anyhow::Result<Vec<ServerRow>>;
    /// Forgets a server's row (when it stops).
    fn delete_server(&self, id: &str) -> anyhow::Result<()>;
    /// The component hashes the platform serves add-on `service` with.
    fn accepted_components(&self, service: &str) -> anyhow::Result<Vec<String>>;
    /// Adds `hash` to the component hashes add-on `service` is served with,
    /// stamped `now`.
    fn accept_component(&self, service: &str, hash: &str, now: i64) -> anyhow::Result<()>;
    /// Forgets every accepted hash of `service` but `keep`; how many.
    fn retire_components(&self, service: &str, keep: &str) -> anyhow::Result<usize>;

    // ---- Open Service Broker instances and bindings
    /// The broker's instance of that id, `None` if never provisioned (or
    /// deprovisioned since).
    fn osb_instance(&self, instance_id: &str) -> anyhow::Result<Option<OsbInstance>>;
    /// Records an instance unless one of that id exists; whether it did.
    fn insert_osb_instance(&self, i: &OsbInstance) -> anyhow::Result<bool>;
    /// Replaces what an instance's provisioning asked for (after a plan change).
    fn set_osb_instance_request(&self, instance_id: &str, request: &str) -> anyhow::Result<()>;
    /// Forgets an instance and its bindings.
    fn delete_osb_instance(&self, instance_id: &str) -> anyhow::Result<()>;
    /// The broker's binding of that id, `None` if unknown (or unbound since).
    fn osb_binding(&self, binding_id: &str) -> anyhow::Result<Option<OsbBinding>>;
    /// Every binding of an instance, predecessors of rotations included.
    fn osb_bindings_of(&self, instance_id: &str) -> anyhow::Result<Vec<OsbBinding>>;
    /// Records a binding unless one of that id exists; whether it did.
    fn insert_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<bool>;
    /// Rewrites a binding's changing fields (`ready`, `successor`,
    /// `credentials`, `expires_at`, `created_at`).
    fn update_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<()>;
    /// Forgets a binding (unbind).
    fn delete_osb_binding(&self, binding_id: &str) -> anyhow::Result<()>;

    // ---- provider mode: changes owed to calling platforms (the outbox)
    /// The change owed to the platform of resource `uuid`, if any. On a
    /// store with concurrent writers, no other write transaction changes it
    /// (but for a claim, see [`Tx::claim_outbox_entry`]) until this one
    /// ends: read, merge and write back in one transaction.
    fn outbox_entry(&self, uuid: &str) -> anyhow::Result<Option<OutboxEntry>>;
    /// Writes an entry, inserting it when new; its claim is left as it is.
    fn put_outbox_entry(&self, e: &OutboxEntry) -> anyhow::Result<()>;
    /// Forgets the entry of `uuid` (delivered, or its resource gone).
    fn delete_outbox_entry(&self, uuid: &str) -> anyhow::Result<()>;
    /// Every entry, by uuid (what is pending and failed).
    fn outbox_entries(&self) -> anyhow::Result<Vec<OutboxEntry>>;
    /// Makes `owner` the one deliverer, until `until`, of one entry that is
    /// due at `now`, not given up on, not claimed (or whose claim ended), of
    /// an add-on not in `skip`: the earliest due. Two servers claiming at
    /// once never get the same entry. The entry claimed, if any.
    fn claim_outbox_entry(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        skip: &[String],
    ) -> anyhow::Result<Option<OutboxEntry>>;
    /// Ends `owner`'s claim on the entry of `uuid`, if it still holds it.
    fn release_outbox_entry(&self, uuid: &str, owner: &str) -> anyhow::Result<()>;
}

/// Where the state lives.
pub struct Store {
    backend: Backend,
    /// Where write latencies go, once observed.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

enum Backend {
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(Arc<PgStore>),
}

impl Store {
    /// The embedded store: `addonhost.db` in `data_dir` (created, private to
    /// its owner, its schema brought up to date).
    pub fn open_sqlite(data_dir: &Path) -> anyhow::Result<Store> {
        Ok(Store {
            backend: Backend::Sqlite(SqliteStore::open(data_dir)?),
            metrics: None,
        })
    }

    /// The shared store: a PostgreSQL database (`postgres://…`, or libpq's
    /// `key=value` form, with the `PG*` environment variables filling in
    /// what it leaves out), its schema brought up to date.
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, opts: &PgOptions) -> anyhow::Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(Arc::new(PgStore::open(url, opts)?)),
            metrics: None,
        })
    }

    /// The shared store, in a build without the `postgres` feature: an
    /// error that says so.
    #[cfg(not(feature = "postgres"))]
    pub fn open_postgres(_url: &str, _opts: &PgOptions) -> anyhow::Result<Store> {
        anyhow::bail!(
            "this build of addonhost has no PostgreSQL support (the library's `postgres` feature is off)"
        )
    }

    /// On PostgreSQL, what this process's transactions cost so far.
    #[cfg(feature = "postgres")]
    pub fn postgres_stats(&self) -> Option<PgStats> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => Some(p.stats()),
        }
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Counts this store's releases and write latencies in `metrics`.
    pub fn observed_by(mut self, metrics: Arc<crate::metrics::Metrics>) -> Store {
        match &mut self.backend {
            Backend::Sqlite(s) => s.releases = metrics.releases.clone(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => match Arc::get_mut(p) {
                Some(p) => p.released = metrics.releases.clone(),
                None => tracing::warn!("the store is shared already; its releases go uncounted"),
            },
        }
        self.metrics = Some(metrics);
        self
    }

    /// The SQLite engine's (batches committed, writes committed, WAL bytes).
    pub fn engine_stats(&self) -> Option<(u64, u64, u64)> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.stats()),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// Whether several servers may share this store (PostgreSQL).
    pub fn shared(&self) -> bool {
        #[cfg(feature = "postgres")]
        return matches!(self.backend, Backend::Postgres(_));
        #[cfg(not(feature = "postgres"))]
        false
    }

    /// Names of apps that get a new release from now on, made by any
    /// server or CLI on the store, when the store can announce them (on
    /// PostgreSQL with a direct connection; an empty name means "any app,
    /// look again"). `None`: poll.
    pub fn subscribe_releases(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.subscribe_releases(),
        }
    }

    /// Runs `f` on a consistent snapshot of everything committed before.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match &self.backend {
            Backend::Sqlite(s) => s.read(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.read(f),
        }
    }

    /// [`Store::read`] for `f` that makes a single read (one row by its
    /// key): on PostgreSQL that statement runs alone, with no transaction
    /// around it (a statement sees one snapshot by itself). A second
    /// statement is refused.
    pub fn read_one<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match &self.backend {
            Backend::Sqlite(s) => s.read(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.read_one(f),
        }
    }

    /// Runs `f` as one transaction, durably: its writes are committed if it
    /// succeeds and rolled back if it fails (or panics: the panic resumes
    /// here), and the future resolves once they are on disk.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let started = std::time::Instant::now();
        let r = match &self.backend {
            Backend::Sqlite(s) => s.write(f).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.write(f).await,
        };
        self.timed(started, r.is_ok());
        r
    }

    fn timed(&self, started: std::time::Instant, ok: bool) {
        if let (Some(m), true) = (&self.metrics, ok) {
            m.store_write_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Like [`Store::write`], but may resolve before its changes are on
    /// disk: on SQLite as soon as `f` has run, before its commit (every
    /// later write through this `Store` sees its changes, and if the commit
    /// fails they are gone); on PostgreSQL once committed, without waiting
    /// for the disk (the next acknowledged write makes it durable; a crash
    /// of the database before that loses it). For a reservation only later
    /// writes rely on, each checking it is still there.
    pub async fn write_staged<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match &self.backend {
            Backend::Sqlite(s) => s.write_staged(f).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.write_staged(f).await,
        }
    }

    /// Why a write that failed to commit at or after `since` failed (a
    /// full disk, say): to explain a write lost with its batch.
    pub fn write_failure_since(&self, since: std::time::Instant) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(s) => s.failure_since(since),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// [`Store::write`] for code outside async tasks (the CLI's sync
    /// commands, a plugin's host call). On a multi-threaded tokio runtime
    /// the wait happens in `block_in_place`.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let started = std::time::Instant::now();
        let r = match &self.backend {
            Backend::Sqlite(s) => s.write_blocking(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(p) => p.write_blocking(f),
        };
        self.timed(started, r.is_ok());
        r
    }
}
