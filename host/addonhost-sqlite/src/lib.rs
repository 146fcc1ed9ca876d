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
//! extensions the writer uses: [`wal_gather`] (a VFS that writes a commit's
//! WAL frames at once) and [`page_cache`] (a page-cache shim). Both sit
//! behind this safe API.

mod page_cache;
mod wal_gather;

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
    DiskFull { path: String },
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

/// What the writer thread records of its commits.
struct Committed<'a> {
    count: &'a AtomicU64,
    last_failure: &'a Mutex<Option<(std::time::Instant, String)>>,
    path: &'a Path,
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
fn sync_batches(
    wal: &Path,
    committed: mpsc::Receiver<Vec<Report>>,
    writer: mpsc::Sender<Msg>,
    poisoned: &Poison,
) {
    // One descriptor for the life of the store: after a failed fsync the
    // kernel may have dropped the dirty pages, and a fresh descriptor's
    // fsync could then succeed over data that is gone. Reopened only if
    // SQLite replaced the file (another inode at the path).
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        let already = poisoned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let synced = match already {
            Some(why) => Err(Failure::Unavailable(why)),
            None => sync_wal(wal, &mut file).map_err(|e| {
                let why: Arc<str> = format!(
                    "the store could not make its writes durable (syncing {} failed: {e}); it acknowledges no write until addonhost restarts",
                    wal.display()
                )
                .into();
                tracing::error!("{why}");
                *poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                Failure::Unavailable(why)
            }),
        };
        let n = batches.len();
        for report in batches.into_iter().flatten() {
            report(synced.clone());
        }
        let _ = writer.send(Msg::Synced(n));
    }
}

/// `fdatasync` of the WAL through `file`, opened once (and again only if the
/// WAL at `path` is another file now).
fn sync_wal(path: &Path, file: &mut Option<std::fs::File>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let current = std::fs::metadata(path)?.ino();
    if file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_none_or(|m| m.ino() != current)
    {
        *file = Some(std::fs::File::open(path)?);
    }
    file.as_ref().expect("opened above").sync_data()
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
    commits: &Committed,
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
    commits: &Committed,
    checkpoints: &Checkpoints,
    syncs: &Syncs,
) -> usize {
    let outcome = match batch.poisoned {
        None => run(conn, "COMMIT").map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Failure::DiskFull,
            _ => Failure::Other(e.to_string().into()),
        }),
        Some(e) => Err(Failure::Other(poisoned(&e).into())),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let failure = match &outcome {
        Ok(()) => None,
        Err(Failure::DiskFull) => Some(
            StoreError::DiskFull {
                path: commits.path.display().to_string(),
            }
            .to_string(),
        ),
        Err(Failure::Unavailable(e) | Failure::Other(e)) => Some(e.to_string()),
    };
    if let Some(why) = failure {
        *commits
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), why));
    }
    let done = commits.count.fetch_add(1, Ordering::SeqCst) + 1;
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
                    report(Err(Failure::Other(
                        "the store's sync thread stopped".into(),
                    )));
                }
                0
            }
        },
        Err(e) => {
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
fn migrate(
    conn: &mut Connection,
    data_dir: &Path,
    file: &str,
    migrations: Migrations,
) -> anyhow::Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| corrupt(data_dir, file, &e))?;
    let known = migrations.len() as i64;
    if current > known {
        bail!(
            "data dir {}: {file} has schema version {current}, written by a newer addonhost (this one knows up to {known}); run that addonhost, or point --data at another directory",
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
        .and_then(|()| run_migrations(conn, migrations, current as usize));
    // The migration's own error, if any, is the one worth reporting.
    let restored = conn
        .pragma_update(None, "foreign_keys", "ON")
        .context("turning foreign keys back on after migrating");
    migrated.and(restored).map_err(|e| {
        let reached: Option<i64> = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ok();
        anyhow::anyhow!(
            "data dir {}: cannot upgrade {file} to schema version {known}: {e:#}; it is left at version {}",
            data_dir.display(),
            reached.map_or("(unknown)".to_string(), |v| v.to_string())
        )
    })
}

fn run_migrations(
    conn: &mut Connection,
    migrations: Migrations,
    from: usize,
) -> anyhow::Result<()> {
    for (i, sql) in migrations.iter().enumerate().skip(from) {
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
        let before = db.commits();
        let commits = || db.commits() - before;
        let t = std::time::Instant::now();
        let mut first = None;
        let mut largest = 0;
        while commits() < 12 * REWIND_EVERY && t.elapsed() < Duration::from_secs(300) {
            first = first.or_else(starts);
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            commits() >= 12 * REWIND_EVERY,
            "only {} commits in 300 s",
            commits()
        );
        // Twelve rounds: the WAL started over again and again instead of
        // growing with every commit (without the writer's own rewinds, the
        // checkpoint thread alone lets it start over once or never). A
        // reader still inside the WAL may put a rewind off by a round, so
        // not every round has one.
        let rewinds = starts().unwrap().wrapping_sub(first.expect("a WAL"));
        assert!(
            rewinds >= 4,
            "the WAL started over {rewinds} times in {} commits (largest: {largest} bytes)",
            commits()
        );
    }
}
