//! The embedded store: the platform's rows in one SQLite file, on the engine
//! of `addonhost-sqlite` (group commit on a writer thread, readers on
//! snapshots). One module per table group; [`SqliteTx`] is a transaction of
//! the engine seen as a [`Tx`].

mod apps;
mod kv;
mod osb;
mod outbox;
mod resources;
mod schema;
mod shared;
mod vars;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use addonhost_sqlite::rusqlite::Connection;
use addonhost_sqlite::Db;
use anyhow::Context;

use super::{
    App, Attachment, AuditEntry, ConfigVar, NewResource, NewSession, OsbBinding, OsbInstance,
    OutboxEntry, Release, Resource, ResourceState, ServerRow, Tx, DB_FILE,
};

/// The statements every provisioning runs, named so a test can check none
/// builds a temporary b-tree (an `IN` list, an `INSERT … SELECT` from the
/// table it inserts into, `RETURNING`): SQLite builds and frees one on every
/// run.
const INSERT_RESOURCE: &str = "INSERT INTO resources (uuid, name, service, plan, app_id, state, \
     created_at, updated_at, reserved_by, reserved_until, request) \
     VALUES (?1, ?2, ?3, ?4, ?5, 'provisioning', ?6, ?6, ?7, ?8, ?9)";
const UPDATE_RESOURCE: &str = "UPDATE resources SET partner_id = ?2, state = ?3, plan = ?4, \
     message = ?5, updated_at = ?6 WHERE id = ?1";
const NEXT_RELEASE: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?1";
const INSERT_RELEASE: &str = "INSERT INTO releases (app_id, version, description, actor, \
     created_at) VALUES (?1, ?2, ?3, ?4, ?5)";

/// The SQLite store of one data dir.
pub struct SqliteStore {
    db: Db,
    /// Counts the releases committed writes made.
    pub(crate) releases: prometheus_client::metrics::counter::Counter,
    /// Writes committed.
    writes: AtomicU64,
}

/// A transaction of the engine (the writer's savepoint, or a reader's
/// snapshot) as the platform sees it.
pub struct SqliteTx<'a>(&'a Connection, Cell<u64>);

impl SqliteStore {
    /// Opens (creating if needed) `addonhost.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<SqliteStore> {
        // Every credential of every add-on is in here: the data dir and the
        // database files are their owner's alone, also when made earlier
        // with a looser umask. SQLite creates the WAL and shm files with the
        // database file's mode, so making that one private first covers them.
        crate::util::private_dir(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            crate::util::write_private(&path, b"")
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        for file in [
            DB_FILE.to_string(),
            format!("{DB_FILE}-wal"),
            format!("{DB_FILE}-shm"),
        ] {
            let file = data_dir.join(file);
            crate::util::private_file(&file)
                .with_context(|| format!("cannot make {} private", file.display()))?;
        }
        Ok(SqliteStore {
            db: Db::open(data_dir, DB_FILE, schema::MIGRATIONS)?,
            releases: Default::default(),
            writes: AtomicU64::new(0),
        })
    }

    /// (batches committed, writes committed, WAL bytes).
    pub fn stats(&self) -> (u64, u64, u64) {
        let wal = std::fs::metadata(format!("{}-wal", self.db.path().display()))
            .map(|m| m.len())
            .unwrap_or(0);
        (self.db.commits(), self.writes.load(Ordering::Relaxed), wal)
    }

    /// Why a commit failed at or after `since`, if one did (see
    /// [`crate::store::Store::write_failure_since`]).
    pub fn failure_since(&self, since: std::time::Instant) -> Option<String> {
        self.db.failure_since(since)
    }

    /// Runs `f` on a reader connection's snapshot; never waits for a commit.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let conn = self.db.read()?;
        f(&SqliteTx(&conn, Cell::new(0)))
    }

    /// Runs `f` in the writer's transaction (its own savepoint); resolves once
    /// the commit is on disk.
    pub async fn write<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (made, m) = made();
        let v = self.db.write(move |c| counted(c, &m, &mut f)).await?;
        self.releases.inc_by(made.load(Ordering::Relaxed));
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    /// Runs `f` in the writer's transaction; resolves before its commit (see
    /// [`crate::store::Store::write_staged`]).
    pub async fn write_staged<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (made, m) = made();
        let v = self
            .db
            .write_staged(move |c| counted(c, &m, &mut f))
            .await?;
        self.releases.inc_by(made.load(Ordering::Relaxed));
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    /// [`SqliteStore::write`] for synchronous callers.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (made, m) = made();
        let v = self.db.write_blocking(move |c| counted(c, &m, &mut f))?;
        self.releases.inc_by(made.load(Ordering::Relaxed));
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }
}

/// A count of the releases a write makes, shared with its closure.
fn made() -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let made = Arc::new(AtomicU64::new(0));
    (made.clone(), made)
}

/// Runs `f` as the write's closure, keeping how many releases this run of
/// it made (a closure may run again; the last run is the one committed).
fn counted<T>(
    c: &Connection,
    made: &AtomicU64,
    f: &mut impl FnMut(&dyn Tx) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let tx = SqliteTx(c, Cell::new(0));
    let r = f(&tx);
    made.store(tx.1.get(), Ordering::Relaxed);
    r
}

impl Tx for SqliteTx<'_> {
    fn insert_app(&self, name: &str, region: &str) -> anyhow::Result<i64> {
        Ok(apps::insert_app(self.0, name, region)?)
    }
    fn app_by_name(&self, name: &str) -> anyhow::Result<Option<App>> {
        Ok(apps::app_by_name(self.0, name)?)
    }
    fn list_apps(&self) -> anyhow::Result<Vec<App>> {
        Ok(apps::list_apps(self.0)?)
    }
    fn delete_app(&self, app_id: i64) -> anyhow::Result<()> {
        Ok(apps::delete_app(self.0, app_id)?)
    }
    fn insert_release(&self, app_id: i64, description: &str, actor: &str) -> anyhow::Result<i64> {
        let version = apps::insert_release(self.0, app_id, description, actor)?;
        self.1.set(self.1.get() + 1);
        Ok(version)
    }
    fn releases(&self, app_id: i64) -> anyhow::Result<Vec<Release>> {
        Ok(apps::releases(self.0, app_id)?)
    }
    fn audit(
        &self,
        actor: &str,
        action: &str,
        app: Option<&str>,
        addon: Option<&str>,
        detail: &str,
    ) -> anyhow::Result<()> {
        Ok(apps::audit(self.0, actor, action, app, addon, detail)?)
    }
    fn prune_audit(&self, actor: &str, keep: u64) -> anyhow::Result<u64> {
        Ok(apps::prune_audit(self.0, actor, keep)?)
    }
    fn audit_entries(&self, app: Option<&str>, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        Ok(apps::audit_entries(self.0, app, limit)?)
    }

    fn config_vars(&self, app_id: i64) -> anyhow::Result<Vec<ConfigVar>> {
        Ok(vars::config_vars(self.0, app_id)?)
    }
    fn config_var(&self, app_id: i64, name: &str) -> anyhow::Result<Option<ConfigVar>> {
        Ok(vars::config_var(self.0, app_id, name)?)
    }
    fn vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<Vec<ConfigVar>> {
        Ok(vars::vars_of_attachment(self.0, attachment_id)?)
    }
    fn upsert_var(
        &self,
        app_id: i64,
        name: &str,
        value: &str,
        owner: Option<i64>,
    ) -> anyhow::Result<()> {
        Ok(vars::upsert_var(self.0, app_id, name, value, owner)?)
    }
    fn delete_var(&self, app_id: i64, name: &str) -> anyhow::Result<()> {
        Ok(vars::delete_var(self.0, app_id, name)?)
    }
    fn delete_vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<usize> {
        Ok(vars::delete_vars_of_attachment(self.0, attachment_id)?)
    }
    fn var_owners(&self, app_id: i64) -> anyhow::Result<BTreeMap<i64, (String, String)>> {
        Ok(vars::var_owners(self.0, app_id)?)
    }
    fn take_over_var(&self, attachment_id: i64, name: &str) -> anyhow::Result<()> {
        Ok(vars::take_over_var(self.0, attachment_id, name)?)
    }
    fn taken_over(&self, attachment_id: i64, name: &str) -> anyhow::Result<bool> {
        Ok(vars::taken_over(self.0, attachment_id, name)?)
    }

    fn resource_by_uuid(&self, uuid: &str) -> anyhow::Result<Option<Resource>> {
        Ok(resources::resource_by_uuid(self.0, uuid)?)
    }
    fn resource_by_name(&self, name: &str) -> anyhow::Result<Option<Resource>> {
        Ok(resources::resource_by_name(self.0, name)?)
    }
    fn resource_by_id(&self, id: i64) -> anyhow::Result<Option<Resource>> {
        Ok(resources::resource_by_id(self.0, id)?)
    }
    fn resource_by_partner_id(
        &self,
        service: &str,
        partner_id: &str,
    ) -> anyhow::Result<Option<Resource>> {
        Ok(resources::resource_by_partner_id(
            self.0, service, partner_id,
        )?)
    }
    fn list_resources(&self, app_id: Option<i64>) -> anyhow::Result<Vec<Resource>> {
        Ok(resources::list_resources(self.0, app_id)?)
    }
    fn provisioned_of_service(&self, service: &str) -> anyhow::Result<Vec<Resource>> {
        Ok(resources::provisioned_of_service(self.0, service)?)
    }
    fn insert_resource(&self, r: &NewResource) -> anyhow::Result<i64> {
        Ok(resources::insert_resource(self.0, r)?)
    }
    fn update_resource(
        &self,
        id: i64,
        partner_id: Option<&str>,
        state: ResourceState,
        plan: &str,
        message: Option<&str>,
    ) -> anyhow::Result<()> {
        Ok(resources::update_resource(
            self.0,
            id,
            partner_id,
            state.as_str(),
            plan,
            message,
        )?)
    }
    fn claim_reservation(
        &self,
        id: i64,
        owner: &str,
        until: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        Ok(resources::claim_reservation(self.0, id, owner, until, now)?)
    }
    fn delete_resource(&self, id: i64) -> anyhow::Result<()> {
        Ok(resources::delete_resource(self.0, id)?)
    }
    fn rotation_succeeded(&self, id: i64, at: i64) -> anyhow::Result<()> {
        Ok(resources::rotation_succeeded(self.0, id, at)?)
    }
    fn rotation_failed(&self, id: i64, error: &str, retry_at: i64) -> anyhow::Result<()> {
        Ok(resources::rotation_failed(self.0, id, error, retry_at)?)
    }
    fn insert_attachment(&self, resource_id: i64, app_id: i64, name: &str) -> anyhow::Result<i64> {
        Ok(resources::insert_attachment(
            self.0,
            resource_id,
            app_id,
            name,
        )?)
    }
    fn delete_attachment(&self, id: i64) -> anyhow::Result<()> {
        Ok(resources::delete_attachment(self.0, id)?)
    }
    fn attachments_of_resource(&self, resource_id: i64) -> anyhow::Result<Vec<Attachment>> {
        Ok(resources::attachments_of_resource(self.0, resource_id)?)
    }
    fn attachment_by_name(&self, app_id: i64, name: &str) -> anyhow::Result<Option<Attachment>> {
        Ok(resources::attachment_by_name(self.0, app_id, name)?)
    }

    fn kv_get(&self, service: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(kv::kv_get(self.0, service, key)?)
    }
    fn kv_put(&self, service: &str, key: &str, value: Option<&[u8]>) -> anyhow::Result<()> {
        Ok(kv::kv_put(self.0, service, key, value)?)
    }
    fn kv_usage(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        Ok(kv::kv_usage(self.0, service)?)
    }
    fn kv_keys(
        &self,
        service: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        Ok(kv::kv_keys(self.0, service, prefix, after, limit)?)
    }
    fn kv_count(&self, service: &str, prefix: &str) -> anyhow::Result<u64> {
        Ok(kv::kv_count(self.0, service, prefix)?)
    }
    fn plugin_dirs(&self, service: &str) -> anyhow::Result<Vec<String>> {
        Ok(kv::plugin_dirs(self.0, service)?)
    }
    fn trust_plugin_dir(&self, service: &str, dir: &str) -> anyhow::Result<()> {
        Ok(kv::trust_plugin_dir(self.0, service, dir)?)
    }

    fn insert_session(&self, s: &NewSession) -> anyhow::Result<()> {
        Ok(shared::insert_session(self.0, s)?)
    }
    fn session(&self, id_hash: &str, kind: &str, now: i64) -> anyhow::Result<Option<String>> {
        Ok(shared::session(self.0, id_hash, kind, now)?)
    }
    fn delete_session(&self, id_hash: &str) -> anyhow::Result<()> {
        Ok(shared::delete_session(self.0, id_hash)?)
    }
    fn insert_owned_session(
        &self,
        s: &NewSession,
        owner: &str,
        max_per_owner: u64,
    ) -> anyhow::Result<()> {
        Ok(shared::insert_owned_session(
            self.0,
            s,
            owner,
            max_per_owner,
        )?)
    }
    fn spend_once(&self, key: &str, expires_at: i64, now: i64) -> anyhow::Result<bool> {
        Ok(shared::spend_once(self.0, key, expires_at, now)?)
    }
    fn spent(&self, key: &str, now: i64) -> anyhow::Result<bool> {
        Ok(shared::spent(self.0, key, now)?)
    }
    fn setting(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(shared::setting(self.0, name)?)
    }
    fn insert_setting(&self, name: &str, value: &str) -> anyhow::Result<()> {
        Ok(shared::insert_setting(self.0, name, value)?)
    }
    fn put_setting(&self, name: &str, value: Option<&str>) -> anyhow::Result<()> {
        Ok(shared::put_setting(self.0, name, value)?)
    }
    fn claim_rotation(
        &self,
        seen: &Resource,
        owner: &str,
        until: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        Ok(shared::claim_rotation(self.0, seen, owner, until, now)?)
    }
    fn record_server(&self, s: &ServerRow) -> anyhow::Result<()> {
        Ok(shared::record_server(self.0, s)?)
    }
    fn servers(&self, seen_since: i64) -> anyhow::Result<Vec<ServerRow>> {
        Ok(shared::servers(self.0, seen_since)?)
    }
    fn delete_server(&self, id: &str) -> anyhow::Result<()> {
        Ok(shared::delete_server(self.0, id)?)
    }
    fn accepted_components(&self, service: &str) -> anyhow::Result<Vec<String>> {
        Ok(shared::accepted_components(self.0, service)?)
    }
    fn accept_component(&self, service: &str, hash: &str, now: i64) -> anyhow::Result<()> {
        Ok(shared::accept_component(self.0, service, hash, now)?)
    }
    fn retire_components(&self, service: &str, keep: &str) -> anyhow::Result<usize> {
        Ok(shared::retire_components(self.0, service, keep)?)
    }

    fn osb_instance(&self, instance_id: &str) -> anyhow::Result<Option<OsbInstance>> {
        Ok(osb::instance(self.0, instance_id)?)
    }
    fn insert_osb_instance(&self, i: &OsbInstance) -> anyhow::Result<bool> {
        Ok(osb::insert_instance(self.0, i)?)
    }
    fn set_osb_instance_request(&self, instance_id: &str, request: &str) -> anyhow::Result<()> {
        Ok(osb::set_instance_request(self.0, instance_id, request)?)
    }
    fn delete_osb_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        Ok(osb::delete_instance(self.0, instance_id)?)
    }
    fn osb_binding(&self, binding_id: &str) -> anyhow::Result<Option<OsbBinding>> {
        Ok(osb::binding(self.0, binding_id)?)
    }
    fn osb_bindings_of(&self, instance_id: &str) -> anyhow::Result<Vec<OsbBinding>> {
        Ok(osb::bindings_of(self.0, instance_id)?)
    }
    fn insert_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<bool> {
        Ok(osb::insert_binding(self.0, b)?)
    }
    fn update_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<()> {
        Ok(osb::update_binding(self.0, b)?)
    }
    fn delete_osb_binding(&self, binding_id: &str) -> anyhow::Result<()> {
        Ok(osb::delete_binding(self.0, binding_id)?)
    }

    fn outbox_entry(&self, uuid: &str) -> anyhow::Result<Option<OutboxEntry>> {
        Ok(outbox::entry(self.0, uuid)?)
    }
    fn put_outbox_entry(&self, e: &OutboxEntry) -> anyhow::Result<()> {
        Ok(outbox::put(self.0, e)?)
    }
    fn delete_outbox_entry(&self, uuid: &str) -> anyhow::Result<()> {
        Ok(outbox::delete(self.0, uuid)?)
    }
    fn outbox_entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        Ok(outbox::entries(self.0)?)
    }
    fn claim_outbox_entry(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        skip: &[String],
    ) -> anyhow::Result<Option<OutboxEntry>> {
        Ok(outbox::claim(self.0, owner, now, until, skip)?)
    }
    fn release_outbox_entry(&self, uuid: &str, owner: &str) -> anyhow::Result<()> {
        Ok(outbox::release(self.0, uuid, owner)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use addonhost_sqlite::rusqlite;

    /// A store written by an earlier version, at schema version 3.
    fn store_at_version_3(dir: &Path) {
        let c = Connection::open(dir.join(DB_FILE)).unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            c.execute_batch(sql).unwrap();
        }
        c.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO apps (id, name, region, created_at) VALUES (1, 'old-app', 'us', 1);
             INSERT INTO resources (id, uuid, name, service, plan, app_id, partner_id, state,
                                    created_at, updated_at, rotated_at, rotation_failures)
                 VALUES (7, 'u-7', 'kv-old-7', 'kv', 'mini', 1, 'kv-1', 'provisioned', 1, 2, 3, 1);
             INSERT INTO attachments (id, resource_id, app_id, name, created_at)
                 VALUES (9, 7, 1, 'KV', 1);
             INSERT INTO config_vars (app_id, name, value, attachment_id)
                 VALUES (1, 'KV_URL', 'http://x', 9);",
        )
        .unwrap();
    }

    #[test]
    fn migrating_an_old_store_keeps_its_add_ons_and_their_checks() {
        let dir = tempfile::tempdir().unwrap();
        store_at_version_3(dir.path());
        let db = SqliteStore::open(dir.path()).unwrap().db;
        let c = db.read().unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::MIGRATIONS.len() as i64);
        let r = resources::resource_by_uuid(&c, "u-7")
            .unwrap()
            .expect("the resource");
        assert_eq!(
            (
                r.id,
                r.name.as_str(),
                r.state.as_str(),
                r.partner_id.as_deref()
            ),
            (7, "kv-old-7", "provisioned", Some("kv-1"))
        );
        assert_eq!(
            resources::attachments_of_resource(&c, 7).unwrap()[0].name,
            "KV"
        );
        drop(c);
        // The checks and foreign keys hold after the rebuild.
        let bad_state = db.write_blocking(|c| {
            c.execute(
                "INSERT INTO resources (uuid, name, service, plan, app_id, state, created_at, updated_at)
                 VALUES ('u-8', 'kv-8', 'kv', 'mini', 1, 'lost', 0, 0)",
                [],
            )?;
            Ok(())
        });
        assert!(format!("{:#}", bad_state.unwrap_err()).contains("CHECK"));
        let dangling = db.write_blocking(|c| {
            c.execute(
                "INSERT INTO attachments (resource_id, app_id, name, created_at) VALUES (99, 1, 'X', 0)",
                [],
            )?;
            Ok(())
        });
        assert!(format!("{:#}", dangling.unwrap_err()).contains("FOREIGN KEY"));
        // Deleting a resource an attachment still refers to is refused too.
        let orphaning = db.write_blocking(|c| {
            c.execute("DELETE FROM resources WHERE id = 7", [])?;
            Ok(())
        });
        assert!(format!("{:#}", orphaning.unwrap_err()).contains("FOREIGN KEY"));
    }

    #[test]
    fn a_store_with_a_dangling_reference_is_not_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        store_at_version_3(dir.path());
        // A store damaged by hand: an attachment of a resource that is gone.
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "foreign_keys", "OFF").unwrap();
        c.execute(
            "INSERT INTO attachments (id, resource_id, app_id, name, created_at) VALUES (10, 404, 1, 'GONE', 1)",
            [],
        )
        .unwrap();
        drop(c);
        let err = format!(
            "{:#}",
            SqliteStore::open(dir.path()).err().expect("refused")
        );
        assert!(
            err.contains(&format!(
                "cannot upgrade addonhost.db to schema version {}: migration 4 would leave a row of attachments referring to nothing; it is left at version 3",
                schema::MIGRATIONS.len()
            )),
            "{err}"
        );
        // Nothing was changed: still version 3, every row where it was.
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        let counts: (i64, i64, i64) = c
            .query_row(
                "SELECT (SELECT count(*) FROM resources), (SELECT count(*) FROM attachments),
                        (SELECT count(*) FROM config_vars)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(counts, (1, 2, 1));
        let check: String = c
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'resources'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(check.contains("state IN"), "the table was rebuilt: {check}");
    }

    #[test]
    fn a_store_from_a_newer_addonhost_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = format!(
            "{:#}",
            SqliteStore::open(dir.path()).err().expect("refused")
        );
        assert!(
            err.contains("schema version 99, written by a newer addonhost"),
            "{err}"
        );
        assert!(!err.contains("restore it from a backup"), "{err}");
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }

    #[test]
    fn writing_a_resource_builds_no_temporary_btree() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir.path()).unwrap().db;
        let c = db.read().unwrap();
        for sql in [
            INSERT_RESOURCE,
            UPDATE_RESOURCE,
            NEXT_RELEASE,
            INSERT_RELEASE,
        ] {
            let mut st = c.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; st.parameter_count()];
            let ops: Vec<String> = st
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!ops.is_empty(), "no program for {sql}");
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql} builds a temporary b-tree"
            );
        }
    }
}
