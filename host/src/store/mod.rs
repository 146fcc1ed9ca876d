//! The durable state: one SQLite file in the data dir.
//!
//! This module knows SQL and nothing of wasm or HTTP; the rules about what may
//! change live in `platform`, which calls these functions inside the
//! transactions it opens. Writers use `BEGIN IMMEDIATE` (so two processes
//! never deadlock upgrading a read lock), WAL lets readers run alongside, and
//! `busy_timeout` plus a retry loop keeps "database is locked" from reaching
//! a user.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::util::unix_now;

/// The database file inside the data dir.
pub const DB_FILE: &str = "addonhost.db";

/// The SQLite store of one data dir.
///
/// One connection, shared by readers and writers. Writes are **group
/// committed**: the first writer to arrive opens a transaction (the batch's
/// leader), writers arriving while it is open join it, each inside its own
/// savepoint (so one writer's failure rolls back only its own changes), and
/// the leader commits them all with one fsync. [`Db::write`] returns only
/// after the commit that made its changes durable, so every writer keeps the
/// guarantee of its own `synchronous=FULL` commit while many share the cost.
pub struct Db {
    state: Mutex<State>,
    /// Signalled when a batch is committed (or fails to).
    committed: Condvar,
    /// Signalled when a writer has joined the open batch.
    joined: Condvar,
    /// Writers waiting for the lock, who may join the open batch (counted
    /// before they block on it, so a leader knows to wait for them).
    arriving: AtomicUsize,
    path: PathBuf,
}

struct State {
    conn: Connection,
    /// The open batch, if a transaction is open.
    open: Option<u64>,
    /// Writers in the open batch.
    members: usize,
    next_batch: u64,
    /// The highest batch that has finished, and the failures of recent ones.
    finished: u64,
    failures: Vec<(u64, String)>,
    /// Set when a writer's savepoint could not be released or rolled back:
    /// the open batch must be rolled back as a whole.
    poisoned: Option<String>,
}

/// Most writers in one batch, and the longest a leader waits for more.
const MAX_BATCH: usize = 256;
const MAX_GATHER: Duration = Duration::from_millis(2);

/// The shared connection, for reads.
pub struct ReadGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for ReadGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct App {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub region: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    #[serde(skip)]
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub service: String,
    pub plan: String,
    pub app: String,
    #[serde(skip)]
    pub app_id: i64,
    pub partner_id: Option<String>,
    pub state: String,
    pub message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix seconds of the last successful rotation.
    pub rotated_at: Option<i64>,
    /// Why the last scheduled rotation failed, until one succeeds.
    pub rotation_error: Option<String>,
    pub rotation_failures: i64,
    /// When a failed scheduled rotation is retried.
    pub next_rotation_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub resource_id: i64,
    pub app: String,
    #[serde(skip)]
    pub app_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigVar {
    pub name: String,
    pub value: String,
    /// The owning attachment, `None` for the user.
    #[serde(skip)]
    pub attachment_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub version: i64,
    pub description: String,
    pub actor: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub app: Option<String>,
    pub addon: Option<String>,
    pub detail: String,
}

impl Db {
    /// Opens (creating if needed) the store in `data_dir` and brings its
    /// schema up to date.
    pub fn open(data_dir: &Path) -> anyhow::Result<Db> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let corrupt = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "data dir {}: {} is not a usable addonhost database ({e}); restore it from a backup or point --data at another directory",
                data_dir.display(),
                DB_FILE
            )
        };
        let mut conn = Connection::open(&path).map_err(|e| corrupt(&e))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| corrupt(&e))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn).map_err(|e| corrupt(&format!("{e:#}")))?;
        // Every statement the platform runs stays prepared.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Db {
            state: Mutex::new(State {
                conn,
                open: None,
                members: 0,
                next_batch: 1,
                finished: 0,
                failures: Vec::new(),
                poisoned: None,
            }),
            committed: Condvar::new(),
            joined: Condvar::new(),
            arriving: AtomicUsize::new(0),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions have been committed (or failed to):
    /// fewer than the writes when concurrent writers shared commits.
    pub fn commits(&self) -> u64 {
        self.lock().finished
    }

    /// The connection, for reads. Reads may see the changes of a batch that
    /// is about to commit.
    pub fn read(&self) -> ReadGuard<'_> {
        ReadGuard(self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` atomically and durably: its changes are committed if it
    /// succeeds and rolled back if it fails, and the call returns after the
    /// commit. Concurrent calls share one commit (see [`Db`]).
    ///
    /// On a multi-threaded tokio runtime the wait happens in
    /// `block_in_place`, so a writer waiting for its batch's fsync does not
    /// hold up the other tasks of the runtime.
    pub fn write<T>(&self, f: impl FnMut(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        if multi_thread {
            tokio::task::block_in_place(|| self.write_grouped(f))
        } else {
            self.write_grouped(f)
        }
    }

    fn write_grouped<T>(
        &self,
        mut f: impl FnMut(&Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        let mut st = self.lock();
        // A full batch is committed first; wait for the next one.
        while st.open.is_some() && st.members >= MAX_BATCH {
            st = self.committed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        self.arriving.fetch_sub(1, Ordering::SeqCst);
        let leader = st.open.is_none();
        if leader {
            begin_immediate(&st.conn)?;
            st.open = Some(st.next_batch);
            st.next_batch += 1;
            st.members = 0;
        }
        let batch = st.open.expect("a batch is open");
        st.members += 1;
        // Nothing below returns early: the leader must always finish its
        // batch, or every writer that joined it would wait forever.
        let (value, panic) = match run(&st.conn, "SAVEPOINT writer") {
            Err(e) => {
                st.poisoned = Some(e.to_string());
                (Err(anyhow::Error::from(e)), None)
            }
            Ok(()) => {
                // A panic in `f` rolls back `f`'s changes like an error, and
                // resumes once the batch is finished.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&st.conn)));
                let (value, panic) = match outcome {
                    Ok(v) => (v, None),
                    Err(p) => (Err(anyhow::anyhow!("a write panicked")), Some(p)),
                };
                let end = if value.is_ok() {
                    run(&st.conn, "RELEASE writer")
                } else {
                    run(&st.conn, "ROLLBACK TO writer")
                        .and_then(|()| run(&st.conn, "RELEASE writer"))
                };
                match end {
                    // This writer's changes cannot be told apart from the
                    // others' any more: the whole batch is rolled back.
                    Err(e) => {
                        st.poisoned = Some(e.to_string());
                        (Err(anyhow::Error::from(e)), panic)
                    }
                    Ok(()) => (value, panic),
                }
            }
        };
        if !leader {
            self.joined.notify_all();
            if let Some(p) = panic {
                drop(st);
                std::panic::resume_unwind(p);
            }
            // On error nothing of ours is in the batch: no need to wait for it.
            let value = value?;
            while st.finished < batch {
                st = self.committed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if let Some((_, e)) = st.failures.iter().find(|(b, _)| *b == batch) {
                return Err(anyhow::anyhow!(
                    "committing to {}: {e}",
                    self.path.display()
                ));
            }
            return Ok(value);
        }
        // The leader lets the writers already waiting for the lock join, then
        // commits for everyone.
        let started = std::time::Instant::now();
        while self.arriving.load(Ordering::SeqCst) > 0
            && st.members < MAX_BATCH
            && started.elapsed() < MAX_GATHER
        {
            st = self
                .joined
                .wait_timeout(st, MAX_GATHER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let commit = match st.poisoned.take() {
            None => run(&st.conn, "COMMIT").map_err(|e| e.to_string()),
            Some(e) => Err(format!(
                "a write in the same batch could not be undone ({e})"
            )),
        };
        if commit.is_err() && !st.conn.is_autocommit() {
            let _ = st.conn.execute_batch("ROLLBACK");
        }
        st.open = None;
        st.members = 0;
        st.finished = batch;
        st.failures.retain(|(b, _)| batch - b < 1024);
        if let Err(e) = &commit {
            st.failures.push((batch, e.clone()));
        }
        drop(st);
        self.committed.notify_all();
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        if let Err(e) = commit {
            anyhow::bail!("committing to {}: {e}", self.path.display());
        }
        value
    }
}

/// One statement without parameters, kept prepared (these run several
/// times per write).
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// `BEGIN IMMEDIATE`, retried while another process holds the write lock
/// (on top of the connection's busy timeout).
fn begin_immediate(conn: &Connection) -> anyhow::Result<()> {
    let mut attempt = 0u64;
    loop {
        match run(conn, "BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && attempt < 50 =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5 * attempt));
            }
            other => return other.context("starting a write transaction"),
        }
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = schema::MIGRATIONS.len() as i64;
    if current > known {
        bail!("schema version {current} was written by a newer addonhost (this one knows {known})");
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

// ---- apps ----------------------------------------------------------------

pub fn insert_app(tx: &Connection, name: &str, region: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO apps (name, region, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![name, region, unix_now()])?;
    Ok(tx.last_insert_rowid())
}

pub fn app_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<App>> {
    c.prepare_cached("SELECT id, name, region, created_at FROM apps WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(App {
                id: r.get(0)?,
                name: r.get(1)?,
                region: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()
}

pub fn list_apps(c: &Connection) -> rusqlite::Result<Vec<App>> {
    let mut st = c.prepare_cached("SELECT id, name, region, created_at FROM apps ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok(App {
            id: r.get(0)?,
            name: r.get(1)?,
            region: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Deletes an app and everything hanging off it.
pub fn delete_app(tx: &Connection, app_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM config_vars WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached("DELETE FROM releases WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached("DELETE FROM attachments WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached(
        "DELETE FROM attachments WHERE resource_id IN (SELECT id FROM resources WHERE app_id = ?1)",
    )?
    .execute([app_id])?;
    tx.prepare_cached("DELETE FROM resources WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached("DELETE FROM apps WHERE id = ?1")?
        .execute([app_id])?;
    Ok(())
}

// ---- config vars -----------------------------------------------------------

pub fn config_vars(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<ConfigVar>> {
    let mut st = c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE app_id = ?1 ORDER BY name",
    )?;
    let rows = st.query_map([app_id], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub fn config_var(c: &Connection, app_id: i64, name: &str) -> rusqlite::Result<Option<ConfigVar>> {
    c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE app_id = ?1 AND name = ?2",
    )?
    .query_row(params![app_id, name], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })
    .optional()
}

pub fn vars_of_attachment(c: &Connection, attachment_id: i64) -> rusqlite::Result<Vec<ConfigVar>> {
    let mut st = c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE attachment_id = ?1 ORDER BY name",
    )?;
    let rows = st.query_map([attachment_id], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub fn upsert_var(
    tx: &Connection,
    app_id: i64,
    name: &str,
    value: &str,
    owner: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO config_vars (app_id, name, value, attachment_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value, attachment_id = excluded.attachment_id")?.execute(
        params![app_id, name, value, owner],
    )?;
    Ok(())
}

pub fn delete_var(tx: &Connection, app_id: i64, name: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM config_vars WHERE app_id = ?1 AND name = ?2")?
        .execute(params![app_id, name])?;
    Ok(())
}

pub fn delete_vars_of_attachment(tx: &Connection, attachment_id: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM config_vars WHERE attachment_id = ?1")?
        .execute([attachment_id])
}

// ---- releases and audit ------------------------------------------------------

/// Appends the app's next release; numbers are gap-free because this runs
/// inside the writer's transaction.
pub fn insert_release(
    tx: &Connection,
    app_id: i64,
    description: &str,
    actor: &str,
) -> rusqlite::Result<i64> {
    let next: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?1")?
        .query_row([app_id], |r| r.get(0))?;
    tx.prepare_cached("INSERT INTO releases (app_id, version, description, actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
        params![app_id, next, description, actor, unix_now()],
    )?;
    Ok(next)
}

pub fn releases(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<Release>> {
    let mut st = c.prepare_cached(
        "SELECT version, description, actor, created_at FROM releases WHERE app_id = ?1 ORDER BY version DESC",
    )?;
    let rows = st.query_map([app_id], |r| {
        Ok(Release {
            version: r.get(0)?,
            description: r.get(1)?,
            actor: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

pub fn audit(
    tx: &Connection,
    actor: &str,
    action: &str,
    app: Option<&str>,
    addon: Option<&str>,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, action, app, addon, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![unix_now(), actor, action, app, addon, detail])?;
    Ok(())
}

pub fn audit_entries(
    c: &Connection,
    app: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut st = c.prepare_cached(
        "SELECT at, actor, action, app, addon, detail FROM audit
         WHERE ?1 IS NULL OR app = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![app, limit], |r| {
        Ok(AuditEntry {
            at: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            app: r.get(3)?,
            addon: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    rows.collect()
}

// ---- resources and attachments ------------------------------------------------

const RESOURCE_COLUMNS: &str = "r.id, r.uuid, r.name, r.service, r.plan, a.name, r.app_id, r.partner_id, r.state, r.message, r.created_at, r.updated_at, r.rotated_at, r.rotation_error, r.rotation_failures, r.next_rotation_at";

fn resource_row(r: &rusqlite::Row) -> rusqlite::Result<Resource> {
    Ok(Resource {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        service: r.get(3)?,
        plan: r.get(4)?,
        app: r.get(5)?,
        app_id: r.get(6)?,
        partner_id: r.get(7)?,
        state: r.get(8)?,
        message: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        rotated_at: r.get(12)?,
        rotation_error: r.get(13)?,
        rotation_failures: r.get(14)?,
        next_rotation_at: r.get(15)?,
    })
}

/// Provisioned resources of one service (for scheduled rotation).
pub fn provisioned_of_service(c: &Connection, service: &str) -> rusqlite::Result<Vec<Resource>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
         WHERE r.service = ?1 AND r.state = 'provisioned' ORDER BY r.id"
    ))?;
    let rows = st.query_map([service], resource_row)?;
    rows.collect()
}

/// Records a successful rotation.
pub fn rotation_succeeded(tx: &Connection, id: i64, at: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE resources SET rotated_at = ?2, rotation_error = NULL, rotation_failures = 0, next_rotation_at = NULL WHERE id = ?1")?.execute(
        params![id, at],
    )?;
    Ok(())
}

/// Records a failed scheduled rotation and when to retry it.
pub fn rotation_failed(
    tx: &Connection,
    id: i64,
    error: &str,
    retry_at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE resources SET rotation_error = ?2, rotation_failures = rotation_failures + 1, next_rotation_at = ?3 WHERE id = ?1")?.execute(
        params![id, error, retry_at],
    )?;
    Ok(())
}

fn resource_where(
    c: &Connection,
    clause: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Option<Resource>> {
    c.query_row(
        &format!("SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id WHERE {clause}"),
        p,
        resource_row,
    )
    .optional()
}

pub fn resource_by_uuid(c: &Connection, uuid: &str) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.uuid = ?1", [uuid])
}

pub fn resource_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.name = ?1", [name])
}

pub fn resource_by_id(c: &Connection, id: i64) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.id = ?1", [id])
}

pub fn resource_by_partner_id(
    c: &Connection,
    service: &str,
    partner_id: &str,
) -> rusqlite::Result<Option<Resource>> {
    resource_where(
        c,
        "r.service = ?1 AND r.partner_id = ?2",
        [service, partner_id],
    )
}

/// Resources that are not deprovisioned, of one app or of all.
pub fn list_resources(c: &Connection, app_id: Option<i64>) -> rusqlite::Result<Vec<Resource>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
         WHERE r.state != 'deprovisioned' AND (?1 IS NULL OR r.app_id = ?1
               OR r.id IN (SELECT resource_id FROM attachments WHERE app_id = ?1))
         ORDER BY a.name, r.created_at, r.name"
    ))?;
    let rows = st.query_map([app_id], resource_row)?;
    rows.collect()
}

pub struct NewResource<'a> {
    pub uuid: &'a str,
    pub name: &'a str,
    pub service: &'a str,
    pub plan: &'a str,
    pub app_id: i64,
}

pub fn insert_resource(tx: &Connection, r: &NewResource) -> rusqlite::Result<i64> {
    let now = unix_now();
    tx.prepare_cached(
        "INSERT INTO resources (uuid, name, service, plan, app_id, state, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'provisioning', ?6, ?6)",
    )?
    .execute(params![r.uuid, r.name, r.service, r.plan, r.app_id, now])?;
    Ok(tx.last_insert_rowid())
}

pub fn update_resource(
    tx: &Connection,
    id: i64,
    partner_id: Option<&str>,
    state: &str,
    plan: &str,
    message: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE resources SET partner_id = ?2, state = ?3, plan = ?4, message = ?5, updated_at = ?6 WHERE id = ?1")?.execute(
        params![id, partner_id, state, plan, message, unix_now()],
    )?;
    Ok(())
}

pub fn delete_resource(tx: &Connection, id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM attachments WHERE resource_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM resources WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub fn insert_attachment(
    tx: &Connection,
    resource_id: i64,
    app_id: i64,
    name: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO attachments (resource_id, app_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![resource_id, app_id, name, unix_now()])?;
    Ok(tx.last_insert_rowid())
}

pub fn delete_attachment(tx: &Connection, id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM attachments WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

fn attachment_row(r: &rusqlite::Row) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        id: r.get(0)?,
        resource_id: r.get(1)?,
        app: r.get(2)?,
        app_id: r.get(3)?,
        name: r.get(4)?,
    })
}

pub fn attachments_of_resource(
    c: &Connection,
    resource_id: i64,
) -> rusqlite::Result<Vec<Attachment>> {
    let mut st = c.prepare_cached(
        "SELECT t.id, t.resource_id, a.name, t.app_id, t.name FROM attachments t JOIN apps a ON a.id = t.app_id
         WHERE t.resource_id = ?1 ORDER BY t.id",
    )?;
    let rows = st.query_map([resource_id], attachment_row)?;
    rows.collect()
}

pub fn attachment_by_name(
    c: &Connection,
    app_id: i64,
    name: &str,
) -> rusqlite::Result<Option<Attachment>> {
    c.prepare_cached("SELECT t.id, t.resource_id, a.name, t.app_id, t.name FROM attachments t JOIN apps a ON a.id = t.app_id
         WHERE t.app_id = ?1 AND t.name = ?2")?.query_row(
        params![app_id, name],
        attachment_row,
    )
    .optional()
}

pub fn attachment_names(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT name FROM attachments WHERE app_id = ?1")?;
    let rows = st.query_map([app_id], |r| r.get(0))?;
    rows.collect()
}

// ---- plugin KV -------------------------------------------------------------

pub fn kv_get(c: &Connection, service: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT value FROM plugin_kv WHERE service = ?1 AND key = ?2")?
        .query_row(params![service, key], |r| r.get(0))
        .optional()
}

pub fn kv_put(
    tx: &Connection,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> rusqlite::Result<()> {
    match value {
        Some(v) => tx
            .prepare_cached(
                "INSERT INTO plugin_kv (service, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (service, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![service, key, v])?,
        None => tx
            .prepare_cached("DELETE FROM plugin_kv WHERE service = ?1 AND key = ?2")?
            .execute(params![service, key])?,
    };
    Ok(())
}

pub fn kv_keys(c: &Connection, service: &str, prefix: &str) -> rusqlite::Result<Vec<String>> {
    // A range scan instead of LIKE: keys may contain % and _.
    let mut st = c.prepare_cached(
        "SELECT key FROM plugin_kv WHERE service = ?1 AND key >= ?2 ORDER BY key",
    )?;
    let rows = st.query_map(params![service, prefix], |r| r.get::<_, String>(0))?;
    let mut keys = Vec::new();
    for k in rows {
        let k = k?;
        if !k.starts_with(prefix) {
            break;
        }
        keys.push(k);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_commits_and_only_failed_ones_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let before = db.commits();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let r = db.write(|c| {
                            insert_app(c, &format!("app-{t}-{i}"), "us")?;
                            if t == 3 {
                                anyhow::bail!("writer 3 fails after writing");
                            }
                            Ok(())
                        });
                        assert_eq!(r.is_err(), t == 3);
                    }
                })
            })
            .collect();
        // A writer that panics mid-transaction rolls back only itself.
        let panicker = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write(|c| -> anyhow::Result<()> {
                    insert_app(c, "panicked", "us").unwrap();
                    panic!("on purpose");
                })
            })
        };
        for t in threads {
            t.join().unwrap();
        }
        assert!(panicker.join().is_err());
        let apps = list_apps(&db.read()).unwrap();
        assert_eq!(apps.len(), 15 * 20);
        assert!(apps
            .iter()
            .all(|a| !a.name.starts_with("app-3-") && a.name != "panicked"));
        let commits = db.commits() - before;
        assert!(
            commits < 16 * 20,
            "{commits} commits for {} writes: none were shared",
            16 * 20
        );
        // A later write still works, alone.
        db.write(|c| Ok(insert_app(c, "after", "us")?)).unwrap();
        assert!(app_by_name(&db.read(), "after").unwrap().is_some());
    }
}
