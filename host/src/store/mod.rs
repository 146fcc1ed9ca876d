//! The durable state: one SQLite file in the data dir.
//!
//! This module knows SQL and nothing of wasm or HTTP; the rules about what may
//! change live in `platform`, which calls these functions inside the
//! transactions it opens. Writers use `BEGIN IMMEDIATE` (so two processes
//! never deadlock upgrading a read lock), WAL lets readers run alongside, and
//! `busy_timeout` plus a retry loop keeps "database is locked" from reaching
//! a user.

mod page_cache;
mod schema;
mod wal_gather;

use std::any::Any;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::util::unix_now;

/// The database file inside the data dir.
pub const DB_FILE: &str = "addonhost.db";

/// The SQLite store of one data dir.
///
/// Writes go to one **writer thread** that owns the write connection and
/// **group commits**: it takes every write queued while the previous commit
/// was in flight, runs each inside its own savepoint (so one writer's failure
/// rolls back only its own changes) and commits them all at once; a sync
/// thread then makes every batch committed meanwhile durable with one
/// fsync (see [`sync_batches`]).
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
}

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections kept open while idle.
const IDLE_READERS: usize = 8;
/// Commits between two checkpoints (copying the WAL back into the database
/// file), which run on a thread of their own so the writer never waits for
/// them.
const CHECKPOINT_EVERY: u64 = 64;
/// Commits between two attempts to start the WAL over from its beginning.
///
/// SQLite rewinds the WAL only when a write transaction starts with every
/// frame already copied back and no reader inside it. Under sustained load
/// the checkpoint thread never quite catches up with the writer, so the WAL
/// would grow for as long as the load lasts (past 1 GB in a minute of
/// provisioning), and each commit would append to fresh file blocks (block
/// allocation, zeroed pages) instead of rewriting pages already cached.
/// So every this many commits the writer itself, between two transactions,
/// checkpoints the little the thread has left; the next commit then rewinds
/// (or, if a reader still in the WAL kept it from doing so, the writer tries
/// again after the thread's next round).
const REWIND_EVERY: u64 = 256;

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
type Report = Box<dyn FnOnce(Result<(), Arc<str>>) + Send>;

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
        prepare_sqlite().map_err(|e| anyhow::anyhow!("setting up SQLite: {e}"))?;
        // The writer's WAL appends go through a VFS that writes each
        // commit's frames at once (see `wal_gather`).
        let mut conn =
            connect_with(&path, Some(wal_gather::NAME)).map_err(|e| corrupt(data_dir, &e))?;
        migrate(&mut conn, data_dir)?;
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
        let syncs = {
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            let (send, committed) = mpsc::channel::<Vec<Report>>();
            let writer = jobs.clone();
            let thread = std::thread::Builder::new()
                .name("addonhost-db-sync".into())
                .spawn(move || sync_batches(&wal, committed, writer))
                .context("starting the store's sync thread")?;
            Syncs { send, thread }
        };
        let checkpoints = {
            let checkpointer = connect(&path)?;
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
                        let _ = writer.send(Msg::Checkpointed);
                    }
                })
                .context("starting the store's checkpoint thread")?;
            Checkpoints { wake, thread }
        };
        let commits = Arc::new(AtomicU64::new(0));
        let writer = {
            let commits = commits.clone();
            std::thread::Builder::new()
                .name("addonhost-db-writer".into())
                .spawn(move || write_batches(conn, queue, &commits, checkpoints, syncs))
                .context("starting the store's writer thread")?
        };
        Ok(Db {
            jobs,
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            commits,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions have been committed (or failed to):
    /// fewer than the writes when concurrent writers shared commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
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
        let path = self.path.clone();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(c) => c,
                Err(why) => {
                    let report = Box::new(move |_| {
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
            let report = Box::new(move |commit: Result<(), Arc<str>>| {
                reply(match outcome {
                    Err(panic) => Outcome::Panicked(panic),
                    Ok(Err(e)) => Outcome::Done(Err(e)),
                    Ok(Ok(v)) => Outcome::Done(
                        commit
                            .map(|()| v)
                            .map_err(|e| anyhow::anyhow!("committing to {}: {e}", path.display())),
                    ),
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

fn corrupt(data_dir: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "data dir {}: {} is not a usable addonhost database ({e}); restore it from a backup or point --data at another directory",
        data_dir.display(),
        DB_FILE
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

/// What the writer thread is told.
enum Msg {
    Write(Job),
    /// The sync thread made this many committed batches durable.
    Synced(usize),
    /// The checkpoint thread copied the WAL back as far as it could.
    Checkpointed,
    /// The `Db` is dropped: finish what is queued and stop.
    Stop,
}

/// The sync thread, handed every committed batch by the writer.
struct Syncs {
    send: mpsc::Sender<Vec<Report>>,
    thread: JoinHandle<()>,
}

/// The sync thread: makes committed batches durable, then tells their
/// writers (and the writer thread, which commits its next batch then).
///
/// The writer commits with `synchronous=NORMAL`, which writes the WAL but
/// does not wait for the disk; this thread `fdatasync`s the WAL for every
/// batch committed meanwhile and only then reports them. So a write still
/// resolves only once it is on disk, but the write lock is never held
/// across a sync. A commit is visible to readers a moment before it is
/// durable; if the machine fails in that window, SQLite's recovery keeps a
/// prefix of the WAL, so that commit and all later ones are lost together,
/// and none of their writers was told they succeeded.
fn sync_batches(wal: &Path, committed: mpsc::Receiver<Vec<Report>>, writer: mpsc::Sender<Msg>) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        // Opened each time: SQLite may recreate the file between syncs.
        let synced = std::fs::File::open(wal)
            .and_then(|f| f.sync_data())
            .map_err(|e| Arc::<str>::from(format!("syncing {}: {e}", wal.display())));
        let n = batches.len();
        for report in batches.into_iter().flatten() {
            report(synced.clone());
        }
        let _ = writer.send(Msg::Synced(n));
    }
}

/// The checkpoint thread, woken by the writer.
struct Checkpoints {
    wake: mpsc::SyncSender<()>,
    thread: JoinHandle<()>,
}

/// The open transaction of the writer thread.
#[derive(Default)]
struct Batch {
    /// Writers told once the batch is on disk.
    reports: Vec<Report>,
    /// Writes run in it, including those already answered.
    writes: usize,
    /// Set when a savepoint could not be released or undone: the writers'
    /// changes cannot be told apart any more, so the batch is rolled back
    /// as a whole.
    poisoned: Option<String>,
}

/// The writer thread, until the `Db` is dropped.
///
/// Writes run as they arrive, each in its own savepoint of the open
/// transaction. The transaction is committed as soon as no write is waiting
/// and the disk is free (no sync in progress): while a sync runs, arriving
/// writes join the open transaction, so the busier the store the larger
/// the batches, and an idle store commits every write at once.
fn write_batches(
    conn: Connection,
    queue: mpsc::Receiver<Msg>,
    commits: &AtomicU64,
    checkpoints: Checkpoints,
    syncs: Syncs,
) {
    let mut open: Option<Batch> = None;
    // Committed batches handed to the sync thread and not yet durable.
    let mut syncing = 0usize;
    let mut rewind = Rewind::default();
    // Set here, after `Db::open` set `wal_autocheckpoint` (which replaces
    // the hook), and read on this thread, where the connection commits.
    conn.wal_hook(Some(|_, frames| {
        WAL_FRAMES.set(frames);
        Ok(())
    }));
    loop {
        let msg = match queue.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::TryRecvError::Disconnected) => Msg::Stop,
            Err(mpsc::TryRecvError::Empty) => {
                if syncing == 0 {
                    if let Some(batch) = open.take() {
                        syncing += commit(&conn, batch, commits, &checkpoints, &syncs);
                        rewind.after_commit(&conn);
                        continue;
                    }
                }
                queue.recv().unwrap_or(Msg::Stop)
            }
        };
        match msg {
            Msg::Write(job) => {
                if open.is_none() {
                    if let Err(e) = begin_immediate(&conn) {
                        let why = format!("{e:#}");
                        (job(Err(why.clone())).report)(Err(why.into()));
                        continue;
                    }
                    open = Some(Batch::default());
                }
                let batch = open.as_mut().expect("a transaction is open");
                run_in_savepoint(&conn, job, batch);
                if batch.writes >= MAX_BATCH {
                    let full = open.take().expect("a transaction is open");
                    syncing += commit(&conn, full, commits, &checkpoints, &syncs);
                    rewind.after_commit(&conn);
                }
            }
            Msg::Synced(n) => syncing = syncing.saturating_sub(n),
            Msg::Checkpointed => rewind.checkpointed = true,
            Msg::Stop => {
                if let Some(batch) = open.take() {
                    commit(&conn, batch, commits, &checkpoints, &syncs);
                }
                break;
            }
        }
    }
    drop(syncs.send);
    let _ = syncs.thread.join();
    drop(checkpoints.wake);
    let _ = checkpoints.thread.join();
}

thread_local! {
    /// Frames in the WAL after the writer thread's last commit, as SQLite's
    /// WAL hook reports them (the writer's connection commits on its thread).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// When the writer next checkpoints so that the WAL starts over (see
/// [`REWIND_EVERY`]).
#[derive(Default)]
struct Rewind {
    commits: u64,
    /// The checkpoint thread finished a round since the writer last tried:
    /// only the commits made during that round are left to copy, so the
    /// writer's own checkpoint is short.
    checkpointed: bool,
    /// The WAL's frames when the writer's checkpoint copied them all: the
    /// next commit should start the WAL over, which a reader that began
    /// before the checkpoint and is still reading prevents.
    copied_all_of: Option<i32>,
}

impl Rewind {
    /// Called between transactions: once due, and right after a round of
    /// the checkpoint thread, copies back what that round left (a reader
    /// still inside the WAL only puts it off to the next round).
    fn after_commit(&mut self, conn: &Connection) {
        self.commits += 1;
        if let Some(frames) = self.copied_all_of.take() {
            if WAL_FRAMES.get() < frames {
                self.commits = 0; // started over
                return;
            }
            // A reader kept the WAL from starting over: try again after
            // the checkpoint thread's next round.
        }
        if self.commits < REWIND_EVERY || !std::mem::take(&mut self.checkpointed) {
            return;
        }
        let done = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map(|(busy, frames, copied)| (busy == 0 && frames == copied).then_some(frames));
        match done {
            Ok(Some(frames)) => self.copied_all_of = Some(frames as i32),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("checkpointing the store: {e}");
                self.commits = 0;
            }
        }
    }
}

fn run_in_savepoint(conn: &Connection, job: Job, batch: &mut Batch) {
    batch.writes += 1;
    if let Err(e) = run(conn, "SAVEPOINT writer") {
        // The job reports this error whatever the commit's outcome.
        (job(Err(e.to_string())).report)(Ok(()));
        batch.poisoned = Some(e.to_string());
        return;
    }
    let ran = job(Ok(conn));
    let end = if ran.ok {
        run(conn, "RELEASE writer")
    } else {
        run(conn, "ROLLBACK TO writer").and_then(|()| run(conn, "RELEASE writer"))
    };
    if let Err(e) = end {
        batch.poisoned = Some(e.to_string());
    }
    match ran.answer {
        Answer::OnDisk => batch.reports.push(ran.report),
        Answer::Staged => (ran.report)(match &batch.poisoned {
            None => Ok(()),
            Some(e) => Err(poisoned(e).into()),
        }),
    }
}

/// Why a poisoned batch was not committed.
fn poisoned(e: &str) -> String {
    format!("a write in the same batch could not be undone ({e})")
}

/// Commits the open transaction and hands its writers to the sync thread
/// (or tells them why it failed); the number of batches handed over.
fn commit(
    conn: &Connection,
    batch: Batch,
    commits: &AtomicU64,
    checkpoints: &Checkpoints,
    syncs: &Syncs,
) -> usize {
    let outcome = match batch.poisoned {
        None => run(conn, "COMMIT").map_err(|e| e.to_string()),
        Some(e) => Err(poisoned(&e)),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let done = commits.fetch_add(1, Ordering::SeqCst) + 1;
    if done.is_multiple_of(CHECKPOINT_EVERY) {
        // Already awake: this round is covered by the one in progress.
        let _ = checkpoints.wake.try_send(());
    }
    match outcome {
        Ok(()) if batch.reports.is_empty() => 0,
        Ok(()) => match syncs.send.send(batch.reports) {
            Ok(()) => 1,
            Err(mpsc::SendError(reports)) => {
                for report in reports {
                    report(Err("the store's sync thread stopped".into()));
                }
                0
            }
        },
        Err(e) => {
            let e = Arc::<str>::from(e);
            for report in batch.reports {
                report(Err(e.clone()));
            }
            0
        }
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

/// Brings the schema up to date. Its errors say which of the three it is:
/// a file that is no addonhost database, a store from a newer addonhost, or
/// a migration refused (the store then stays at the last version reached).
fn migrate(conn: &mut Connection, data_dir: &Path) -> anyhow::Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| corrupt(data_dir, &e))?;
    let known = schema::MIGRATIONS.len() as i64;
    if current > known {
        bail!(
            "data dir {}: {DB_FILE} has schema version {current}, written by a newer addonhost (this one knows up to {known}); run that addonhost, or point --data at another directory",
            data_dir.display()
        );
    }
    if current == known {
        return Ok(());
    }
    // A migration may rebuild a table others refer to, which foreign keys
    // forbid mid-way; they are off while it runs (the setting has no effect
    // inside a transaction) and checked as a whole before it commits.
    let migrated = conn
        .pragma_update(None, "foreign_keys", "OFF")
        .context("turning foreign keys off to migrate")
        .and_then(|()| run_migrations(conn, current as usize));
    // The migration's own error, if any, is the one worth reporting.
    let restored = conn
        .pragma_update(None, "foreign_keys", "ON")
        .context("turning foreign keys back on after migrating");
    migrated.and(restored).map_err(|e| {
        let reached: Option<i64> = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ok();
        anyhow::anyhow!(
            "data dir {}: cannot upgrade {DB_FILE} to schema version {known}: {e:#}; it is left at version {}",
            data_dir.display(),
            reached.map_or("(unknown)".to_string(), |v| v.to_string())
        )
    })
}

fn run_migrations(conn: &mut Connection, from: usize) -> anyhow::Result<()> {
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(from) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = dangling {
            bail!(
                "migration {} would leave a row of {table} referring to nothing",
                i + 1
            );
        }
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
/// The statements every provisioning runs, named so a test can check
/// none builds a temporary b-tree (an `IN` list, an `INSERT … SELECT` from
/// the table it inserts into, `RETURNING`): SQLite builds and frees one on
/// every run.
const INSERT_RESOURCE: &str =
    "INSERT INTO resources (uuid, name, service, plan, app_id, state, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 'provisioning', ?6, ?6)";
const UPDATE_RESOURCE: &str = "UPDATE resources SET partner_id = ?2, state = ?3, plan = ?4, \
     message = ?5, updated_at = ?6 WHERE id = ?1";
const NEXT_RELEASE: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?1";
const INSERT_RELEASE: &str = "INSERT INTO releases (app_id, version, description, actor, \
     created_at) VALUES (?1, ?2, ?3, ?4, ?5)";

pub fn insert_release(
    tx: &Connection,
    app_id: i64,
    description: &str,
    actor: &str,
) -> rusqlite::Result<i64> {
    // Two statements rather than one `INSERT … SELECT … RETURNING`, which
    // SQLite runs through two temporary b-trees (see `INSERT_RESOURCE`).
    let version: i64 = tx
        .prepare_cached(NEXT_RELEASE)?
        .query_row([app_id], |r| r.get(0))?;
    tx.prepare_cached(INSERT_RELEASE)?.execute(params![
        app_id,
        version,
        description,
        actor,
        unix_now()
    ])?;
    Ok(version)
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
    c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id WHERE {clause}"
    ))?
    .query_row(p, resource_row)
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
    tx.prepare_cached(INSERT_RESOURCE)?
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
    tx.prepare_cached(UPDATE_RESOURCE)?.execute(params![
        id,
        partner_id,
        state,
        plan,
        message,
        unix_now()
    ])?;
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

// ---- plugin KV -------------------------------------------------------------

pub fn kv_get(c: &Connection, service: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT value FROM plugin_kv WHERE service = ?1 AND key = ?2")?
        .query_row(params![service, key], |r| r.get(0))
        .optional()
}

/// Stores (`Some`) or deletes (`None`) one key, keeping the service's usage
/// counts (see [`kv_usage`]) in step.
pub fn kv_put(
    tx: &Connection,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> rusqlite::Result<()> {
    let old: Option<i64> = tx
        .prepare_cached("SELECT length(value) FROM plugin_kv WHERE service = ?1 AND key = ?2")?
        .query_row(params![service, key], |r| r.get(0))
        .optional()?;
    let (keys, bytes) = match value {
        Some(v) => {
            tx.prepare_cached(
                "INSERT INTO plugin_kv (service, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (service, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![service, key, v])?;
            match old {
                Some(len) => (0, v.len() as i64 - len),
                None => (1, (key.len() + v.len()) as i64),
            }
        }
        None => {
            tx.prepare_cached("DELETE FROM plugin_kv WHERE service = ?1 AND key = ?2")?
                .execute(params![service, key])?;
            match old {
                Some(len) => (-1, -(key.len() as i64 + len)),
                None => (0, 0),
            }
        }
    };
    if keys != 0 || bytes != 0 {
        tx.prepare_cached(
            "INSERT INTO plugin_kv_usage (service, keys, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (service) DO UPDATE SET keys = keys + excluded.keys, bytes = bytes + excluded.bytes",
        )?
        .execute(params![service, keys, bytes])?;
    }
    Ok(())
}

/// The folders add-on `service` is bound to in this store.
pub fn plugin_dirs(c: &Connection, service: &str) -> rusqlite::Result<Vec<String>> {
    let mut st =
        c.prepare_cached("SELECT dir FROM plugin_dirs WHERE service = ?1 ORDER BY trusted_at")?;
    let rows = st.query_map([service], |r| r.get(0))?;
    rows.collect()
}

/// Binds add-on `service` to folder `dir` (beside any other).
pub fn trust_plugin_dir(tx: &Connection, service: &str, dir: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO plugin_dirs (service, dir, trusted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (service, dir) DO NOTHING",
    )?
    .execute(params![service, dir, unix_now()])?;
    Ok(())
}

/// A service's stored keys and bytes (keys plus values).
pub fn kv_usage(c: &Connection, service: &str) -> rusqlite::Result<(u64, u64)> {
    let row: Option<(i64, i64)> = c
        .prepare_cached("SELECT keys, bytes FROM plugin_kv_usage WHERE service = ?1")?
        .query_row([service], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (keys, bytes) = row.unwrap_or((0, 0));
    Ok((keys.max(0) as u64, bytes.max(0) as u64))
}

/// The smallest string greater than every string starting with `prefix`
/// (`None` for the empty prefix, which every string starts with).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // UTF-8 sorts as code points do, so the next code point bounds it.
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Up to `limit` keys of `service` starting with `prefix` that sort after
/// `after` (from the first, when `None`), in order.
pub fn kv_keys(
    c: &Connection,
    service: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    // A range scan instead of LIKE: keys may contain % and _.
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    let mut st = c.prepare_cached(
        "SELECT key FROM plugin_kv WHERE service = ?1 AND key >= ?2 AND key > ?3
         ORDER BY key LIMIT ?4",
    )?;
    // `after` is excluded; without one, nothing sorts before the empty string.
    let rows = st.query_map(
        params![service, start, after.unwrap_or(""), limit as i64],
        |r| r.get::<_, String>(0),
    )?;
    let mut keys = Vec::new();
    for k in rows {
        let k = k?;
        if !k.starts_with(prefix) {
            break;
        }
        keys.push(k);
    }
    // The empty key is never stored (keys are 1 to 1,024 bytes).
    Ok(keys)
}

/// How many keys of `service` start with `prefix`.
pub fn kv_count(c: &Connection, service: &str, prefix: &str) -> rusqlite::Result<u64> {
    let n: i64 = match prefix_end(prefix) {
        Some(end) => c
            .prepare_cached(
                "SELECT COUNT(*) FROM plugin_kv WHERE service = ?1 AND key >= ?2 AND key < ?3",
            )?
            .query_row(params![service, prefix, end], |r| r.get(0))?,
        None => c
            .prepare_cached("SELECT COUNT(*) FROM plugin_kv WHERE service = ?1")?
            .query_row([service], |r| r.get(0))?,
    };
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let db = Db::open(dir.path()).unwrap();
        let c = db.read().unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::MIGRATIONS.len() as i64);
        let r = resource_by_uuid(&c, "u-7").unwrap().expect("the resource");
        assert_eq!(
            (
                r.id,
                r.name.as_str(),
                r.state.as_str(),
                r.partner_id.as_deref()
            ),
            (7, "kv-old-7", "provisioned", Some("kv-1"))
        );
        assert_eq!(attachments_of_resource(&c, 7).unwrap()[0].name, "KV");
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
        let err = format!("{:#}", Db::open(dir.path()).err().expect("refused"));
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
        drop(Db::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = format!("{:#}", Db::open(dir.path()).err().expect("refused"));
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
        let db = Db::open(dir.path()).unwrap();
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
        let db = Arc::new(Db::open(dir.path()).unwrap());
        db.write_blocking(|c| Ok(insert_app(c, "before", "us")?))
            .unwrap();
        let (started, wait) = mpsc::channel();
        let slow = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write_blocking(move |c| {
                    insert_app(c, "slow", "us")?;
                    started.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(500));
                    Ok(())
                })
            })
        };
        wait.recv().unwrap();
        // The write lock is held for another ~500 ms; a read answers now,
        // from the last committed state.
        let t = std::time::Instant::now();
        let apps = list_apps(&db.read().unwrap()).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["before"]
        );
        slow.join().unwrap().unwrap();
        assert!(app_by_name(&db.read().unwrap(), "slow").unwrap().is_some());
    }

    #[test]
    fn an_answered_write_is_committed_for_every_connection_and_drop_finishes_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            db.write(|c| Ok(insert_app(c, "async", "us")?))
                .await
                .unwrap();
        });
        // Another connection (another process, say) sees it at once.
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
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
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
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
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let before = db.commits();
        let commits = || db.commits() - before;
        let t = std::time::Instant::now();
        let mut at_two_rounds = 0;
        let mut largest = 0;
        while commits() < 12 * REWIND_EVERY && t.elapsed() < Duration::from_secs(120) {
            if commits() >= 2 * REWIND_EVERY && at_two_rounds == 0 {
                at_two_rounds = wal_size();
            }
            largest = largest.max(wal_size());
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            commits() >= 12 * REWIND_EVERY,
            "only {} commits in 120 s",
            commits()
        );
        // Six times the commits, about the same room: the WAL started over
        // instead of growing with every commit (which would take six times
        // the room). An interval between rewinds may run a round or two
        // longer than the first (a reader that kept one from happening), so
        // the bound leaves room for that.
        assert!(
            largest < at_two_rounds * 3,
            "the WAL grew from {at_two_rounds} bytes after {} commits to {largest} after {}",
            2 * REWIND_EVERY,
            commits()
        );
    }
}
