//! The store on PostgreSQL, for several addonhost servers sharing one
//! database (`--database postgres://…`).
//!
//! Writes run at `READ COMMITTED` under explicit locks ([`locks`]): per
//! app, per add-on KV key, per named row, taken by the store as a
//! transaction first reads what it decides on. So the invariants the SQLite
//! store gets from its single writer (gap-free release numbers per app, one
//! resource per uuid, one owner per var, a call's KV writes only over what
//! it read) hold across servers, writes on different apps never wait for
//! one another, and nothing is rolled back for a conflict that is not real.
//! What PostgreSQL still refuses (a deadlock between two apps locked in
//! opposite orders, two inserts racing for one key) runs again.
//!
//! Statements go out from the thread running the transaction, pipelined
//! ([`driver`]); reads run in a `REPEATABLE READ` snapshot.

mod ahead;
mod cache;
mod conninfo;
mod driver;
mod kv;
mod listen;
mod locks;
mod osb;
mod outbox;
mod rows;
mod schema;
mod session;
mod tokens;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::error::SqlState;

pub use session::PgTx;

use driver::{ConnectError, ConnectInfo, Pool};
use session::Mode;

use super::{Tx, Unavailable};

/// The PostgreSQL schema's migrations, in order: migration `n` is
/// `migrations()[n - 1]` (for tools and tests that build a database as an
/// older version left it).
pub fn migrations() -> &'static [&'static str] {
    schema::MIGRATIONS
}

/// The channel `NOTIFY`ed with an app's name when it gets a release.
pub(crate) const RELEASES_CHANNEL: &str = "addonhost_releases";

/// Connections each process keeps to the database for writes, and as many
/// again for reads (a plugin call's KV reads never wait for a connection
/// behind writes).
const POOL_SIZE: usize = 16;
/// How long a caller waits for a pooled connection before it is told the
/// database is too busy.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long a transaction PostgreSQL keeps refusing for conflicts is run
/// again before its caller is told.
const RETRY_FOR: Duration = Duration::from_secs(20);

pub use super::PgOptions;

/// The store on one PostgreSQL database.
pub struct PgStore {
    /// Counts the releases committed writes made.
    pub(crate) released: prometheus_client::metrics::counter::Counter,
    writes: Arc<Pool>,
    reads: Arc<Pool>,
    /// Where `LISTEN` connects, if it can.
    listen: Option<conninfo::Settings>,
    /// Apps with a new release, as the database announces them (started on
    /// first subscription).
    releases: std::sync::OnceLock<tokio::sync::broadcast::Sender<String>>,
    /// Runs the `LISTEN` connection (one thread); `None` once dropped.
    rt: Option<tokio::runtime::Runtime>,
    /// The database, without the password, for messages.
    name: String,
    /// Statements sent and round trips made by this process's
    /// transactions, and write transactions run again for a conflict.
    stats: Stats,
    /// Which app each resource and attachment belongs to (see
    /// [`locks::Owners`]).
    owners: Arc<locks::Owners>,
}

#[derive(Default)]
struct Stats {
    statements: std::sync::atomic::AtomicU64,
    trips: std::sync::atomic::AtomicU64,
    reruns: std::sync::atomic::AtomicU64,
}

/// What a store's transactions cost so far: statements sent, round trips
/// to the database, and write transactions run again after a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgStats {
    /// Statements sent (BEGIN and COMMIT included).
    pub statements: u64,
    /// Round trips: batches of statements sent together.
    pub round_trips: u64,
    /// Write transactions rolled back for a conflict and run again.
    pub reruns: u64,
}

impl PgStore {
    /// Connects to the database at `url` (a libpq URI or key=value string,
    /// `PG*` variables filling in what it leaves out) and brings its schema
    /// up to date.
    pub fn open(url: &str, opts: &PgOptions) -> anyhow::Result<PgStore> {
        let env = |k: &str| std::env::var(k).ok();
        let settings = conninfo::parse(url, &env)?;
        let name = settings.display.clone();
        let tls = tls::client_config(&settings.tls)
            .with_context(|| format!("preparing TLS for the database {name}"))?;
        let info = Arc::new(ConnectInfo {
            settings,
            tls,
            unnamed: opts.pooler,
        });
        let listen = match (&opts.listen_url, opts.pooler) {
            (Some(u), _) => {
                Some(conninfo::parse(u, &env).context("reading the database's listen URL")?)
            }
            (None, false) => Some(info.settings.clone()),
            (None, true) => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("addonhost-pg-listen")
            .enable_all()
            .build()
            .context("starting the PostgreSQL store's runtime")?;
        let store = PgStore {
            released: Default::default(),
            writes: Pool::new(info.clone(), POOL_SIZE, POOL_WAIT),
            reads: Pool::new(info, POOL_SIZE, POOL_WAIT),
            listen,
            releases: std::sync::OnceLock::new(),
            rt: Some(rt),
            name,
            stats: Stats::default(),
            owners: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database, as messages name it (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this process's transactions cost so far.
    pub fn stats(&self) -> PgStats {
        use std::sync::atomic::Ordering::Relaxed;
        PgStats {
            statements: self.stats.statements.load(Relaxed),
            round_trips: self.stats.trips.load(Relaxed),
            reruns: self.stats.reruns.load(Relaxed),
        }
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let applied = off_executor(|| self.run(Mode::Migrate, schema::migrate))
            .with_context(|| format!("preparing the database {}", self.name))?;
        match (applied.first(), applied.last()) {
            (Some(first), Some(last)) => tracing::info!(
                "database {}: applied schema migrations {first} to {last}",
                self.name
            ),
            _ => tracing::debug!(
                "database {}: schema at version {}",
                self.name,
                schema::version()
            ),
        }
        Ok(())
    }

    /// Starts a transaction of `mode` on a pooled connection.
    fn begin(&self, mode: Mode) -> anyhow::Result<PgTx> {
        let pool = match mode {
            Mode::Read | Mode::ReadOne => &self.reads,
            _ => &self.writes,
        };
        let conn = pool.get().map_err(|e| match e {
            ConnectError::Failed(why) | ConnectError::Busy(why) => anyhow::Error::new(Unavailable(
                format!("the database {} is unavailable: {why}", self.name),
            )),
        })?;
        Ok(PgTx::new(
            conn,
            mode,
            self.name.clone(),
            self.owners.clone(),
        ))
    }

    /// Runs `f` in a read-only `REPEATABLE READ` snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        off_executor(|| {
            let mut f = Some(f);
            // Only writes are run again (for conflicts), never a read.
            self.run(Mode::Read, |tx| (f.take().expect("a read runs once"))(tx))
        })
    }

    /// Runs `f`, which makes one read statement (one row by its key, say),
    /// as that statement alone: no transaction around it.
    pub fn read_one<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        off_executor(|| {
            let mut f = Some(f);
            self.run(Mode::ReadOne, |tx| {
                (f.take().expect("a read runs once"))(tx)
            })
        })
    }

    /// Apps with a new release, from now on, on whichever server or CLI
    /// made it (`LISTEN`; a lost connection is made again, and a release
    /// made meanwhile is announced by a lagged receiver's error). `None`
    /// behind a pooler without a direct listen URL: poll.
    pub fn subscribe_releases(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        let settings = self.listen.clone()?;
        Some(
            self.releases
                .get_or_init(|| {
                    let (tx, _) = tokio::sync::broadcast::channel(1024);
                    let rt = self
                        .rt
                        .as_ref()
                        .expect("the runtime lives as long as the store");
                    rt.spawn(listen::listen(settings, tx.clone(), self.name.clone()));
                    tx
                })
                .subscribe(),
        )
    }

    /// [`PgStore::write_blocking`] on a blocking thread, for async callers.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.write_as(Mode::Write, f).await
    }

    /// A write whose commit is not waited for on disk (PostgreSQL's
    /// asynchronous commit): visible to every server at once, made durable
    /// by the next acknowledged commit (write-ahead log records are flushed
    /// in order), lost with a crash of the database before that. For a
    /// provisioning's reservation: nobody is answered on it, and what
    /// answers the provisioning — its completion, or its release — is an
    /// acknowledged write after it.
    pub async fn write_staged<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.write_as(Mode::WriteUnacknowledged, f).await
    }

    async fn write_as<T: Send + 'static>(
        self: &Arc<Self>,
        mode: Mode,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.run(mode, |tx| f(tx)))
            .await
            .map_err(|e| anyhow::anyhow!("a write to the database panicked: {e}"))?
    }

    /// Runs `f` as one transaction, committed when it succeeds and
    /// acknowledged once on disk; run again (from scratch) while PostgreSQL
    /// refuses it for a conflict, so `f` must not have effects outside the
    /// transaction.
    pub fn write_blocking<T>(
        &self,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        off_executor(|| self.run(Mode::Write, |tx| f(tx)))
    }

    /// Runs `f` in a transaction of `mode`, again while PostgreSQL refuses
    /// a write for a conflict with a concurrent one (after a short random
    /// pause, growing with the attempts).
    fn run<T>(
        &self,
        mode: Mode,
        mut f: impl FnMut(&PgTx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let tx = self.begin(mode)?;
            let outcome = f(&tx).and_then(|v| {
                tx.commit()?;
                self.released.inc_by(tx.releases.get());
                Ok(v)
            });
            let (statements, trips) = tx.counted.get();
            self.stats.statements.fetch_add(statements, Relaxed);
            self.stats.trips.fetch_add(trips, Relaxed);
            drop(tx);
            match outcome {
                Err(e) if !matches!(mode, Mode::Read | Mode::ReadOne) && conflict(&e) => {
                    self.stats.reruns.fetch_add(1, Relaxed);
                    if started.elapsed() >= RETRY_FOR {
                        return Err(Unavailable(format!(
                            "the database {} kept refusing this write for conflicts with concurrent ones ({attempt} runs in {:?}): {e:#}",
                            self.name,
                            started.elapsed()
                        ))
                        .into());
                    }
                    let most = 1 + u64::from(attempt.min(10)) * 2;
                    std::thread::sleep(Duration::from_millis(rand::random_range(0..=most)));
                }
                other => return other,
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may go away inside an async context (the CLI's main
        // task): a runtime must not wait for its threads there.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether PostgreSQL refused a transaction for a conflict with another,
/// so that running it again may succeed.
fn conflict(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|e| e.code())
        .any(|code| {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION
        })
}

/// Whether `e` says the database cannot serve now (the connection broke,
/// the server is shutting down or starting, it has no connection to spare)
/// rather than that the statement is wrong.
pub(crate) fn lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            // 08: connection exceptions; 53: insufficient resources;
            // 57P0x: shutdown and startup.
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57P0")
        }
    }
}

/// Runs `f`, which waits on the database, without stalling the tokio
/// runtime it is called from (if any): on a multi-threaded one the worker
/// hands its other tasks over first. (On a current-thread one, each wait
/// happens on a thread of its own: see `driver::drive`.)
fn off_executor<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

mod tls;
