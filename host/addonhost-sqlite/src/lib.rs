//! addonhost's SQLite engine: one database file, one writer thread that
//! group-commits, a sync thread that makes batches durable, a checkpoint
//! thread, and a pool of readers.
//!
//! It knows SQLite and nothing of add-ons: the caller brings the schema (as
//! numbered migrations) and the statements. Writers use `BEGIN IMMEDIATE`
//! (so two processes never deadlock upgrading a read lock), WAL lets readers
//! run alongside, and `busy_timeout` plus a retry loop keeps "database is
//! locked" from reaching a user.
//!
//! Every `unsafe` of addonhost lives in this crate, in the two SQLite
//! extensions the writer uses: `wal_gather` (a VFS that writes a commit's
//! WAL frames at once) and `page_cache` (a page-cache shim). Both sit
//! behind this safe API.

#![warn(missing_docs)]

mod migrate;
mod page_cache;
mod wal_gather;
mod writer;

use migrate::{begin_immediate, migrate, run};
use writer::{sync_batches, sync_file, write_batches, Checkpoints, Committed, Msg, Syncs};

use std::any::Any;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

pub use rusqlite;

/// The SQLite store of one data dir.
///
/// Writes go to one **writer thread** that owns the write connection and
/// **group commits**: it takes every write queued while the previous commit
/// was in flight, runs each inside its own savepoint (so one writer's failure
/// rolls back only its own changes) and commits them all at once; a sync
/// thread then makes every batch committed meanwhile durable with one
/// fsync (see `sync_batches`).
/// [`Db::write`] resolves only after the commit that made its changes
/// durable, so every writer keeps the guarantee of its own
/// `synchronous=FULL` commit while many share the cost, and no async task
/// ever blocks a runtime thread on the disk.
///
/// Reads use a pool of separate connections, each read a snapshot (WAL), so
/// they never wait for a commit.
pub struct Db {
    jobs: mpsc::Sender<Msg>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    commits: Arc<AtomicU64>,
    path: PathBuf,
    /// Set when a sync failed: why the store acknowledges nothing more.
    poisoned: Poison,
    /// When the last commit failed, and why.
    last_failure: Arc<Mutex<Option<(std::time::Instant, String)>>>,
}

/// Why the store stopped acknowledging writes, once it did.
type Poison = Arc<Mutex<Option<Arc<str>>>>;

/// The schema of a database: SQL scripts run in order, each once, in its
/// own transaction; `PRAGMA user_version` records how many have run.
pub type Migrations = &'static [&'static str];

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections kept open while idle.
const IDLE_READERS: usize = 8;
/// Commits between two checkpoints (copying the WAL back into the database
/// file), which run on a thread of their own so the writer never waits for
/// them. Every sync of the WAL also flushes the disk's cache, so it waits for
/// whatever the checkpoint thread wrote to the database file and synced
/// before it: many small rounds spread that work thin, where rounds every
/// 64 commits made some WAL syncs wait 10 ms and more (provisioning p99 at
/// 50 % of the sustained rate: 4.7 ms with 8, 6.5 ms with 16, 10 ms with 64,
/// 31 ms with 512; see docs/performance.md).
const CHECKPOINT_EVERY: u64 = 8;
/// Frames in the WAL past which the writer starts it over from its
/// beginning.
///
/// SQLite rewinds the WAL only when a write transaction starts with every
/// frame already copied back and no reader inside it. Under sustained load
/// the checkpoint thread never quite catches up with the writer, so the WAL
/// would grow for as long as the load lasts (past 1 GB in a minute of
/// provisioning), and each commit would append to fresh file blocks (block
/// allocation, zeroed pages) instead of rewriting pages already cached.
/// So once the WAL holds this many frames (128 MiB of 4 KiB pages), the
/// writer itself, right after a round of the checkpoint thread, checkpoints
/// the little that round left, between two transactions; the next commit
/// then rewinds (or, if a reader still in the WAL kept it from doing so, the
/// writer tries again after the thread's next round). Each rewind holds the
/// writer for a few milliseconds, so they are spaced by the WAL's size, not
/// by a count of commits, which a lightly loaded store makes many of.
#[cfg(not(test))]
const REWIND_FRAMES: i32 = 32_768;
/// A small WAL in tests, so that the rewinds come quickly.
#[cfg(test)]
const REWIND_FRAMES: i32 = 1024;

/// A queued write: run against the write connection inside its savepoint
/// (or told why it cannot run), it answers whether it succeeded and how to
/// report once the batch's commit is known.
type Job = Box<dyn FnOnce(Result<&Connection, String>) -> Ran + Send>;

struct Ran {
    ok: bool,
    report: Report,
    answer: Answer,
}

/// When a write's future resolves.
#[derive(Clone, Copy)]
enum Answer {
    /// Once its batch is committed and on disk ([`Db::write`]).
    OnDisk,
    /// As soon as it has run in the writer's open transaction
    /// ([`Db::write_staged`]).
    Staged,
}

/// Tells a writer how its batch ended: committed and durable, or why not.
type Report = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// Why a batch was not committed and made durable.
#[derive(Debug, Clone)]
enum Failure {
    /// The disk is full: the batch was rolled back, and a later one may
    /// succeed once there is space.
    DiskFull,
    /// The store stopped acknowledging writes (a sync failed).
    Unavailable(Arc<str>),
    Other(Arc<str>),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Other(e.into())
    }
}

/// Failures of the store a client should read as "not now" rather than
/// "your request is wrong": nothing of the write was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing of the write was kept; it may succeed once
    /// space is freed.
    #[error("the disk holding {path} is full: nothing was written; free some space and try again")]
    DiskFull {
        /// The database file.
        path: String,
    },
    /// A sync of the database failed, so what the disk holds is unknown:
    /// the store acknowledges no write until the process restarts (and
    /// SQLite recovers the file).
    #[error("{0}")]
    Unavailable(String),
}

/// What a write came to, as handed back to the task that asked for it.
enum Outcome<T> {
    Done(anyhow::Result<T>),
    /// The write panicked: resumed in the caller, after its savepoint was
    /// rolled back.
    Panicked(Box<dyn Any + Send>),
}

impl<T> Outcome<T> {
    fn into_result(self) -> anyhow::Result<T> {
        match self {
            Outcome::Done(r) => r,
            Outcome::Panicked(p) => std::panic::resume_unwind(p),
        }
    }
}

/// A read connection, inside a read transaction (one consistent snapshot for
/// all its statements); back to the pool when dropped.
pub struct ReadGuard<'a> {
    db: &'a Db,
    conn: Option<Connection>,
    /// Not held across an `.await`: a snapshot is for one step of work.
    _not_send: PhantomData<*const ()>,
}

impl std::ops::Deref for ReadGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a read connection")
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit() && run(&conn, "COMMIT").is_err() {
            return; // a connection in an unknown state is closed, not reused
        }
        let mut idle = self.db.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}
impl Db {
    /// Opens (creating if needed) the database `file` in `data_dir` and
    /// brings its schema up to `migrations`. The caller makes the folder
    /// and file as private as it needs first: SQLite creates the WAL and
    /// shared-memory files with the database file's mode.
    pub fn open(data_dir: &Path, file: &str, migrations: Migrations) -> anyhow::Result<Db> {
        let path = data_dir.join(file);
        prepare_sqlite().map_err(|e| anyhow::anyhow!("setting up SQLite: {e}"))?;
        // The writer's WAL appends go through a VFS that writes each
        // commit's frames at once (see `wal_gather`).
        let mut conn =
            connect_with(&path, Some(wal_gather::NAME)).map_err(|e| corrupt(data_dir, file, &e))?;
        migrate(&mut conn, data_dir, file, migrations)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The writer's commits only write the WAL; the sync thread makes
        // them durable (see `sync_batches`).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The writer keeps the pages it touched cached across its
        // transactions (SQLite drops them only when another process wrote
        // in between): up to 64 MiB instead of SQLite's 2 MiB, past which
        // writes kept re-reading index pages from the WAL (a third of the
        // store's reads under provisioning load). A cache this size is cheap
        // to end a transaction with only thanks to `page_cache`.
        conn.pragma_update(None, "cache_size", -65536i64)?;
        let (jobs, queue) = mpsc::channel();
        let poisoned: Poison = Arc::default();
        let syncs = {
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            let (send, committed) = mpsc::channel::<Vec<Report>>();
            let writer = jobs.clone();
            let poisoned = poisoned.clone();
            let thread = std::thread::Builder::new()
                .name("addonhost-db-sync".into())
                .spawn(move || sync_batches(&wal, committed, writer, &poisoned))
                .context("starting the store's sync thread")?;
            Syncs { send, thread }
        };
        let checkpoints = {
            let checkpointer = connect(&path)?;
            let db_path = path.clone();
            let mut db_file: Option<std::fs::File> = None;
            let (wake, woken) = mpsc::sync_channel::<()>(1);
            let writer = jobs.clone();
            let thread = std::thread::Builder::new()
                .name("addonhost-db-checkpoint".into())
                .spawn(move || {
                    while woken.recv().is_ok() {
                        if let Err(e) = checkpointer.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                        {
                            tracing::warn!("checkpointing the store: {e}");
                        }
                        // SQLite syncs the database file only when a checkpoint
                        // reaches the end of the WAL, which under load only the
                        // writer's rewind does: it would then flush every page
                        // this thread copied since the last rewind (tens of MB,
                        // 10–20 ms here) while no write runs. Flushed here, off
                        // the writer, the rewind syncs only what it copied.
                        if let Err(e) = sync_file(&db_path, &mut db_file) {
                            tracing::warn!("syncing {} after a checkpoint: {e}", db_path.display());
                        }
                        let _ = writer.send(Msg::Checkpointed);
                    }
                })
                .context("starting the store's checkpoint thread")?;
            Checkpoints { wake, thread }
        };
        let commits = Arc::new(AtomicU64::new(0));
        let last_failure: Arc<Mutex<Option<(std::time::Instant, String)>>> = Arc::default();
        let writer = {
            let (commits, failures) = (commits.clone(), last_failure.clone());
            let path = path.clone();
            std::thread::Builder::new()
                .name("addonhost-db-writer".into())
                .spawn(move || {
                    let commits = Committed {
                        count: &commits,
                        last_failure: &failures,
                        path: &path,
                    };
                    write_batches(conn, queue, &commits, checkpoints, syncs)
                })
                .context("starting the store's writer thread")?
        };
        Ok(Db {
            jobs,
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            commits,
            path,
            poisoned,
            last_failure,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions have been committed (or failed to):
    /// fewer than the writes when concurrent writers shared commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Why the last commit that failed at or after `since` failed (a full
    /// disk, say): to explain a write lost with its batch.
    pub fn failure_since(&self, since: std::time::Instant) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, why)| why.clone())
    }

    /// A connection for reads, seeing everything committed before the call.
    pub fn read(&self) -> anyhow::Result<ReadGuard<'_>> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.path)
                .with_context(|| format!("opening {} for reading", self.path.display()))?,
        };
        run(&conn, "BEGIN").with_context(|| format!("reading {}", self.path.display()))?;
        Ok(ReadGuard {
            db: self,
            conn: Some(conn),
            _not_send: PhantomData,
        })
    }

    /// Runs `f` atomically and durably on the writer thread: its changes
    /// are committed if it succeeds and rolled back if it fails (or panics:
    /// the panic resumes here), and the future resolves after the commit.
    /// Concurrent writes share one commit (see [`Db`]).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.write_answered(f, Answer::OnDisk).await
    }

    /// Like [`Db::write`], but resolves as soon as `f` has run in the
    /// writer's open transaction, before that transaction is committed:
    /// every later write through this `Db` sees its changes, other
    /// connections see them once the transaction commits (moments later),
    /// and if that commit fails they are gone. For a reservation that only
    /// later writes through this `Db` rely on, each checking it is still
    /// there — such as the name an add-on gets before its plugin is called,
    /// whose durable completion write follows (and whose loss in a crash is
    /// the same as a crash during the call). It saves the caller waiting for
    /// a commit, which under load means waiting for the sync before it.
    pub async fn write_staged<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.write_answered(f, Answer::Staged).await
    }

    /// A write whose future resolves as `answer` says.
    async fn write_answered<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
        answer: Answer,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, answer, move |o| {
            let _ = tx.send(o);
        })?;
        rx.await.map_err(|_| self.writer_gone())?.into_result()
    }

    /// [`Db::write`] for code outside async tasks (the CLI, tests). On a
    /// multi-threaded tokio runtime the wait happens in `block_in_place`.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(f, Answer::OnDisk, move |o| {
            let _ = tx.send(o);
        })?;
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        let outcome = if multi_thread {
            tokio::task::block_in_place(|| rx.recv())
        } else {
            rx.recv()
        };
        outcome.map_err(|_| self.writer_gone())?.into_result()
    }

    fn writer_gone(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "the writer of {} stopped; restart addonhost",
            self.path.display()
        )
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
        answer: Answer,
        reply: impl FnOnce(Outcome<T>) + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some(why) = self
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
        {
            return Err(StoreError::Unavailable(why.to_string()).into());
        }
        let path = self.path.clone();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(c) => c,
                Err(why) => {
                    let report = Box::new(move |_: Result<(), Failure>| {
                        reply(Outcome::Done(Err(anyhow::anyhow!(
                            "writing to {}: {why}",
                            path.display()
                        ))))
                    });
                    return Ran {
                        ok: false,
                        report,
                        answer,
                    };
                }
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)));
            let ok = matches!(outcome, Ok(Ok(_)));
            let report = Box::new(move |commit: Result<(), Failure>| {
                reply(match outcome {
                    Err(panic) => Outcome::Panicked(panic),
                    Ok(Err(e)) => Outcome::Done(Err(e)),
                    Ok(Ok(v)) => Outcome::Done(commit.map(|()| v).map_err(|f| {
                        match f {
                            Failure::DiskFull => StoreError::DiskFull {
                                path: path.display().to_string(),
                            }
                            .into(),
                            Failure::Unavailable(why) => {
                                StoreError::Unavailable(why.to_string()).into()
                            }
                            Failure::Other(e) => {
                                anyhow::anyhow!("committing to {}: {e}", path.display())
                            }
                        }
                    })),
                })
            });
            Ran { ok, report, answer }
        });
        self.jobs
            .send(Msg::Write(job))
            .map_err(|_| self.writer_gone())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // The writer finishes what is queued, then closes its connection.
        let _ = self.jobs.send(Msg::Stop);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn corrupt(data_dir: &Path, file: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "data dir {}: {file} is not a usable addonhost database ({e}); restore it from a backup or point --data at another directory",
        data_dir.display(),
    )
}

/// Sets up SQLite for the store, once per process and before it opens its
/// first connection: the page cache (see `page_cache`; left as SQLite's
/// default if SQLite was initialized before) and the WAL VFS.
fn prepare_sqlite() -> Result<(), String> {
    page_cache::install();
    wal_gather::register()
}

/// A connection with addonhost's settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    connect_with(path, None)
}

/// [`connect`] through a VFS other than SQLite's default (every connection
/// is opened by or after [`Db::open`], which prepares SQLite first).
fn connect_with(path: &Path, vfs: Option<&std::ffi::CStr>) -> rusqlite::Result<Connection> {
    let conn = match vfs {
        None => Connection::open(path)?,
        Some(vfs) => {
            Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs)?
        }
    };
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer runs every write in a savepoint, whose undo journal SQLite
    // otherwise spills into a temporary file past 64 KiB: a provisioning
    // touches more pages than that.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Database pages are read through a shared mapping instead of a `pread`
    // into each connection's own cache.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    // Every statement the platform runs stays prepared.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;
    use std::sync::Arc;

    const SCHEMA: Migrations = &[
        "CREATE TABLE apps (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, region TEXT NOT NULL);
         CREATE TABLE plugin_kv (service TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                                 PRIMARY KEY (service, key)) WITHOUT ROWID;",
    ];
    const FILE: &str = "test.db";

    fn open(dir: &Path) -> Db {
        Db::open(dir, FILE, SCHEMA).unwrap()
    }

    fn insert_app(c: &Connection, name: &str, region: &str) -> rusqlite::Result<()> {
        c.execute(
            "INSERT INTO apps (name, region) VALUES (?1, ?2)",
            params![name, region],
        )
        .map(|_| ())
    }

    struct App {
        name: String,
    }

    fn list_apps(c: &Connection) -> rusqlite::Result<Vec<App>> {
        let mut st = c.prepare("SELECT name FROM apps ORDER BY name")?;
        let rows = st.query_map([], |r| Ok(App { name: r.get(0)? }))?;
        rows.collect()
    }

    fn app_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<App>> {
        c.query_row("SELECT name FROM apps WHERE name = ?1", [name], |r| {
            Ok(App { name: r.get(0)? })
        })
        .optional()
    }

    fn kv_put(
        c: &Connection,
        service: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        c.execute(
            "INSERT INTO plugin_kv (service, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (service, key) DO UPDATE SET value = excluded.value",
            params![service, key, value],
        )
        .map(|_| ())
    }

    #[test]
    fn concurrent_writers_share_commits_and_only_failed_ones_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open(dir.path()));
        let before = db.commits();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let r = db.write_blocking(move |c| {
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
                db.write_blocking(|c| -> anyhow::Result<()> {
                    insert_app(c, "panicked", "us").unwrap();
                    panic!("on purpose");
                })
            })
        };
        for t in threads {
            t.join().unwrap();
        }
        assert!(panicker.join().is_err());
        let apps = list_apps(&db.read().unwrap()).unwrap();
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
        db.write_blocking(|c| Ok(insert_app(c, "after", "us")?))
            .unwrap();
        assert!(app_by_name(&db.read().unwrap(), "after").unwrap().is_some());
    }

    #[test]
    fn reads_do_not_wait_for_an_open_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open(dir.path()));
        db.write_blocking(|c| Ok(insert_app(c, "before", "us")?))
            .unwrap();
        let (started, wait) = mpsc::channel();
        let (read_done, release) = mpsc::channel::<()>();
        let slow = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write_blocking(move |c| {
                    insert_app(c, "slow", "us")?;
                    started.send(()).unwrap();
                    // The write stays open until the read below is done. Had
                    // the read to wait for it, it would stay open until this
                    // bound ends it, and say so.
                    Ok(release.recv_timeout(Duration::from_secs(60)).is_ok())
                })
            })
        };
        wait.recv().unwrap();
        // The write lock is held; a read answers all the same, from the
        // last committed state.
        let apps = list_apps(&db.read().unwrap()).unwrap();
        let _ = read_done.send(());
        assert_eq!(
            apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["before"]
        );
        assert!(
            slow.join().unwrap().unwrap(),
            "the read waited for the open write to end"
        );
        assert!(app_by_name(&db.read().unwrap(), "slow").unwrap().is_some());
    }

    #[test]
    fn an_answered_write_is_committed_for_every_connection_and_drop_finishes_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            db.write(|c| Ok(insert_app(c, "async", "us")?))
                .await
                .unwrap();
        });
        // Another connection (another process, say) sees it at once.
        let other = Connection::open(dir.path().join(FILE)).unwrap();
        assert!(app_by_name(&other, "async").unwrap().is_some());
        // A staged write is answered before its commit; the next write
        // sees it, and so does everyone once that one is answered.
        rt.block_on(async {
            db.write_staged(|c| Ok(insert_app(c, "staged", "us")?))
                .await
                .unwrap();
            let seen = db
                .write(|c| Ok(app_by_name(c, "staged")?.is_some()))
                .await
                .unwrap();
            assert!(seen, "a later write sees a staged one");
        });
        assert!(app_by_name(&other, "staged").unwrap().is_some());
        // Writes queued without waiting for them are all stored by drop.
        for i in 0..50 {
            db.submit(
                move |c| Ok(insert_app(c, &format!("queued-{i}"), "us")?),
                Answer::OnDisk,
                |_| {},
            )
            .unwrap();
        }
        drop(db);
        let apps = list_apps(&other).unwrap();
        assert_eq!(apps.len(), 52);
    }

    #[test]
    fn the_wal_starts_over_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open(dir.path()));
        let wal = dir.path().join(format!("{FILE}-wal"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Writers that never let the writer thread idle, and a reader that
        // keeps taking snapshots: the checkpoint thread alone never catches
        // up with such a load.
        let mut threads: Vec<_> = (0..8)
            .map(|t| {
                let (db, stop) = (db.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = format!(
                            "{:016x}",
                            (t * 1_000_003 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        );
                        db.write_blocking(move |c| Ok(kv_put(c, "kv", &key, Some(&[7u8; 1500]))?))
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.push({
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    list_apps(&db.read().unwrap()).unwrap();
                }
            })
        });
        // The WAL header's checkpoint sequence number (bytes 12..16): SQLite
        // adds one each time the WAL starts over from its beginning.
        let starts = || -> Option<u32> {
            use std::io::Read;
            let mut header = [0u8; 16];
            std::fs::File::open(&wal)
                .ok()?
                .read_exact(&mut header)
                .ok()?;
            Some(u32::from_be_bytes(header[12..16].try_into().unwrap()))
        };
        let t = std::time::Instant::now();
        let mut first = None;
        let mut largest = 0;
        let rewinds = |first: Option<u32>| {
            starts()
                .zip(first)
                .map(|(now, first)| now.wrapping_sub(first))
        };
        while rewinds(first).is_none_or(|r| r < 12) && t.elapsed() < Duration::from_secs(300) {
            first = first.or_else(starts);
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        // The WAL started over again and again instead of growing with every
        // commit (without the writer's own rewinds, the checkpoint thread
        // alone lets it start over once or never), and stayed within a few
        // times the size that makes a rewind due.
        let rewinds = rewinds(first).expect("a WAL");
        assert!(
            rewinds >= 12,
            "the WAL started over {rewinds} times in 300 s (largest: {largest} bytes)"
        );
        let bound = 4 * REWIND_FRAMES as u64 * (4096 + 24);
        assert!(
            largest < bound,
            "the WAL grew to {largest} bytes, past {bound}"
        );
    }
}
