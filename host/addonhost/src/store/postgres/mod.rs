//! The store on PostgreSQL, for several addonhost servers sharing one
//! database (`--database postgres://…`).
//!
//! The platform composes its rules as synchronous reads and writes over a
//! [`Tx`]; PostgreSQL speaks async. So each transaction is a session task
//! on a runtime of the store's own: it holds a pooled connection and the
//! open transaction, and runs the statements the `Tx` sends it, one at a
//! time, answering over a channel. Any thread can then use a transaction
//! without blocking an executor it does not own.
//!
//! Writes run at SERIALIZABLE: whatever servers interleave, the outcome is
//! one some serial order would give, and the invariants the SQLite store
//! gets from its single writer (gap-free release numbers per app, one
//! resource per uuid, one owner per var) hold across servers. A transaction
//! PostgreSQL refuses for a conflict (serialization failure, deadlock, a
//! unique key two inserts raced for) is run again, a few times.

mod kv;
mod osb;
mod rows;
mod schema;
mod session;
mod tokens;
mod tx;

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

pub use session::PgTx;

use super::{Tx, Unavailable};

/// A statement parameter, owned so it can travel to the session task.
pub(crate) type Param = Box<dyn ToSql + Send + Sync>;

/// The channel `NOTIFY`ed with an app's name when it gets a release.
pub(crate) const RELEASES_CHANNEL: &str = "addonhost_releases";

/// Side connections each process keeps (see [`Cmd::Outside`]).
const SIDE_POOL_SIZE: usize = 4;
/// Connections each process keeps to the database.
const POOL_SIZE: usize = 16;
/// How long a transaction PostgreSQL keeps refusing for conflicts is run
/// again before its caller is told.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(20);
/// Key of the session lock that runs retried transactions one at a time.
const RETRY_GATE: i64 = 0x6164_646f_6e72_6574; // "addonret"

/// What a session task is asked to do.
enum Cmd {
    Query(
        String,
        Vec<Param>,
        SyncSender<Result<Vec<Row>, tokio_postgres::Error>>,
    ),
    Execute(
        String,
        Vec<Param>,
        SyncSender<Result<u64, tokio_postgres::Error>>,
    ),
    Commit(SyncSender<Result<(), tokio_postgres::Error>>),
    /// A query of what is committed, outside the transaction (on a side
    /// connection): it takes no part in the transaction's conflicts.
    Outside(
        String,
        Vec<Param>,
        SyncSender<Result<Vec<Row>, tokio_postgres::Error>>,
    ),
}

/// The store on one PostgreSQL database.
pub struct PgStore {
    /// Counts the releases committed writes made.
    pub(crate) released: prometheus_client::metrics::counter::Counter,
    pool: Pool,
    /// Connections for reads, apart from the writes': a plugin call's KV
    /// reads never wait behind writes queued for the retry gate.
    reads: Pool,
    /// Retried writes of this process take turns here before one of them
    /// takes a connection to wait for the cluster-wide retry gate.
    retry_turn: std::sync::Mutex<()>,
    /// Connections for [`Cmd::Outside`] reads (apart from `pool`, so a
    /// transaction holding the last pooled connection can still make one).
    side: Pool,
    config: tokio_postgres::Config,
    /// Apps with a new release, as the database announces them (started on
    /// first subscription).
    releases: std::sync::OnceLock<tokio::sync::broadcast::Sender<String>>,
    /// Runs the sessions and the pool's connections; `None` once dropped.
    rt: Option<tokio::runtime::Runtime>,
    /// The database, without the password, for messages.
    name: String,
}

#[derive(Clone, Copy)]
enum Mode {
    Read,
    Write,
    /// A write that lost to another before: it waits for the retry gate
    /// (see [`PgStore::run_writes`]).
    Retry,
    /// Schema changes, serialized by an advisory lock and reading what
    /// the previous holder committed.
    Migrate,
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date.
    pub fn open(url: &str) -> anyhow::Result<PgStore> {
        let config: tokio_postgres::Config = url
            .parse()
            .with_context(|| "the database URL is not a PostgreSQL connection string (postgres://user:password@host:port/database)".to_string())?;
        let name = format!(
            "{}/{}",
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_dbname().unwrap_or("")
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("addonhost-pg")
            .enable_all()
            .build()
            .context("starting the PostgreSQL store's runtime")?;
        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let _enter = rt.enter();
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(10)))
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .build()
                .context("configuring the PostgreSQL connection pool")
        };
        let pool = pool_of(POOL_SIZE)?;
        let side = pool_of(SIDE_POOL_SIZE)?;
        let reads = pool_of(POOL_SIZE)?;
        let store = PgStore {
            reads,
            retry_turn: std::sync::Mutex::new(()),
            released: Default::default(),
            pool,
            side,
            config,
            releases: std::sync::OnceLock::new(),
            rt: Some(rt),
            name,
        };
        store.migrate()?;
        Ok(store)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    fn migrate(&self) -> anyhow::Result<()> {
        self.run_writes(Mode::Migrate, |tx| {
            // One server migrates at a time; the others wait, then find it
            // done.
            tx.query(
                "SELECT pg_advisory_xact_lock($1)",
                vec![Box::new(schema::MIGRATION_LOCK)],
            )?;
            tx.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)")?;
            let rows = tx.query("SELECT version FROM schema_migrations", vec![])?;
            let current: i32 = match rows.first() {
                Some(r) => r.get(0),
                None => {
                    tx.batch("INSERT INTO schema_migrations (version) VALUES (0)")?;
                    0
                }
            };
            let known = schema::MIGRATIONS.len() as i32;
            if current > known {
                anyhow::bail!(
                    "the database has schema version {current}, written by a newer addonhost (this one knows up to {known}); run that addonhost"
                );
            }
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch(sql)
                    .with_context(|| format!("applying PostgreSQL migration {}", i + 1))?;
            }
            tx.execute(
                "UPDATE schema_migrations SET version = $1",
                vec![Box::new(known)],
            )?;
            Ok(())
        })
        .with_context(|| format!("preparing the database {}", self.name))
    }

    /// Starts a session task with an open transaction.
    fn begin(&self, mode: Mode) -> anyhow::Result<PgTx> {
        let (cmds, mut queue) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let (ready, started) = sync_channel::<anyhow::Result<()>>(1);
        let pool = match mode {
            Mode::Read => self.reads.clone(),
            _ => self.pool.clone(),
        };
        let side = self.side.clone();
        self.rt().spawn(async move {
            let client = match pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            let gated = matches!(mode, Mode::Retry);
            if gated {
                // Taken before the transaction begins, so that its
                // snapshot is one taken after the previous holder committed.
                if let Err(e) = client
                    .execute("SELECT pg_advisory_lock($1)", &[&RETRY_GATE])
                    .await
                {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            }
            // The transaction's first statement goes out together with its
            // BEGIN (one round trip, not two): it is started as the first
            // command arrives.
            let begin = match mode {
                Mode::Read => "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                Mode::Write | Mode::Retry => "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                Mode::Migrate => "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
            };
            let _ = ready.send(Ok(()));
            serve(
                &client,
                begin,
                matches!(mode, Mode::Read),
                &side,
                &mut queue,
            )
            .await;
            if gated {
                // A broken connection releases it by itself.
                let _ = client
                    .execute("SELECT pg_advisory_unlock($1)", &[&RETRY_GATE])
                    .await;
            }
        });
        started
            .recv()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL store's runtime stopped"))?
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(PgTx::new(cmds, self.name.clone()))
    }
}

/// Runs the statements of one transaction as they come, until its commit
/// or until its `PgTx` is dropped (then it rolls back). `begin` is sent
/// with the first of them; a read-only transaction's commit is answered
/// before it is done (nothing of it can fail to be kept).
async fn serve(
    client: &deadpool_postgres::Client,
    begin: &str,
    read_only: bool,
    side: &Pool,
    queue: &mut tokio::sync::mpsc::UnboundedReceiver<Cmd>,
) {
    let mut begun = false;
    while let Some(cmd) = queue.recv().await {
        // BEGIN and the command, pipelined; a failed BEGIN is the
        // command's failure.
        let started = async {
            if begun {
                Ok(())
            } else {
                client.batch_execute(begin).await
            }
        };
        match cmd {
            Cmd::Query(sql, params, reply) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let run = async {
                    let st = client.prepare_cached(&sql).await?;
                    client.query(&st, &refs).await
                };
                let (b, rows) = tokio::join!(started, run);
                begun = true;
                let _ = reply.send(b.and(rows));
            }
            Cmd::Execute(sql, params, reply) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let run = async {
                    if params.is_empty() {
                        client.batch_execute(&sql).await.map(|()| 0)
                    } else {
                        let st = client.prepare_cached(&sql).await?;
                        client.execute(&st, &refs).await
                    }
                };
                let (b, n) = tokio::join!(started, run);
                begun = true;
                let _ = reply.send(b.and(n));
            }
            Cmd::Commit(reply) => {
                if !begun {
                    let _ = reply.send(Ok(()));
                    return;
                }
                if read_only {
                    let _ = reply.send(Ok(()));
                    let _ = client.batch_execute("COMMIT").await;
                } else {
                    let _ = reply.send(client.batch_execute("COMMIT").await);
                }
                return;
            }
            Cmd::Outside(sql, params, reply) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let rows = match side.get().await {
                    Ok(c) => match c.prepare_cached(&sql).await {
                        Ok(st) => c.query(&st, &refs).await,
                        Err(e) => Err(e),
                    },
                    Err(deadpool_postgres::PoolError::Backend(e)) => Err(e),
                    Err(e) => {
                        // No side connection: read it in the transaction
                        // after all (correct, only more prone to conflicts).
                        tracing::warn!("no side connection to the database: {e}");
                        let run = async {
                            let st = client.prepare_cached(&sql).await?;
                            client.query(&st, &refs).await
                        };
                        let (b, rows) = tokio::join!(started, run);
                        begun = true;
                        b.and(rows)
                    }
                };
                let _ = reply.send(rows);
            }
        }
    }
    // Dropped without a commit: roll back before the connection goes back
    // to the pool.
    if begun {
        let _ = client.batch_execute("ROLLBACK").await;
    }
}

impl PgStore {
    /// Runs `f` in a read-only `REPEATABLE READ` snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> anyhow::Result<T>) -> anyhow::Result<T> {
        off_executor(|| {
            let tx = self.begin(Mode::Read)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// Apps with a new release, from now on, on whichever server or CLI
    /// made it (`LISTEN`; a lost connection is made again, and a release
    /// made meanwhile is announced by a lagged receiver's error).
    pub fn subscribe_releases(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.releases
            .get_or_init(|| {
                let (tx, _) = tokio::sync::broadcast::channel(1024);
                self.rt()
                    .spawn(listen(self.config.clone(), tx.clone(), self.name.clone()));
                tx
            })
            .subscribe()
    }

    /// [`PgStore::write_blocking`] on a blocking thread, for async callers.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnMut(&dyn Tx) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_blocking(f))
            .await
            .map_err(|e| anyhow::anyhow!("a write to the database panicked: {e}"))?
    }

    /// Runs `f` as one `SERIALIZABLE` transaction, committed when it succeeds;
    /// run again (from scratch) while PostgreSQL refuses it for a conflict, so
    /// `f` must not have effects outside the transaction.
    pub fn write_blocking<T>(
        &self,
        mut f: impl FnMut(&dyn Tx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        off_executor(|| self.run_writes(Mode::Write, |tx| f(tx)))
    }

    /// Runs `f` in a write transaction (of `mode`), again while PostgreSQL
    /// refuses it for a conflict with a concurrent one. After a first
    /// loss the runs wait for the retry gate, a lock held across the
    /// transaction: retried transactions do not keep losing to one
    /// another, so each gets through after a bounded number of runs
    /// however many writers contend.
    fn run_writes<T>(
        &self,
        mode: Mode,
        mut f: impl FnMut(&PgTx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let started = std::time::Instant::now();
        let mut mode = mode;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // A retried write waits for its turn in this process before it
            // takes a connection to wait for the cluster-wide gate: queued
            // retries hold no connection.
            let _turn = matches!(mode, Mode::Retry)
                .then(|| self.retry_turn.lock().unwrap_or_else(|p| p.into_inner()));
            let tx = self.begin(mode)?;
            let outcome = f(&tx).and_then(|v| {
                let made = tx.releases.get();
                tx.commit()?;
                self.released.inc_by(made);
                Ok(v)
            });
            match outcome {
                Err(e) if conflict(&e) => {
                    if started.elapsed() >= RETRY_FOR {
                        return Err(Unavailable(format!(
                            "the database {} kept refusing this write for conflicts with concurrent ones ({attempt} runs in {:?}): {e:#}",
                            self.name,
                            started.elapsed()
                        ))
                        .into());
                    }
                    if matches!(mode, Mode::Write) {
                        mode = Mode::Retry;
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(
                            u64::from(attempt.min(20)) * 2 + rand::random::<u64>() % 5,
                        ));
                    }
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

/// A database that cannot be reached, as the error a client reads ("not
/// now") rather than a failure of its request.
fn unavailable(db: &str, e: anyhow::Error) -> anyhow::Error {
    Unavailable(format!("the database {db} is unavailable: {e:#}")).into()
}

/// Runs `f`, which waits on the database, without stalling the tokio
/// runtime it is called from (if any): on a multi-threaded one the worker
/// hands its other tasks over first.
fn off_executor<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Forwards the database's release notifications to `tx`, connecting
/// again (after a pause) whenever the connection is lost.
async fn listen(
    config: tokio_postgres::Config,
    tx: tokio::sync::broadcast::Sender<String>,
    db: String,
) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (found, mut notes) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        let msg = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                        match msg {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                let _ = found.send(n.payload().to_string());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                if let Err(e) = client
                    .batch_execute(&format!("LISTEN {RELEASES_CHANNEL}"))
                    .await
                {
                    tracing::warn!("cannot listen for releases on {db}: {e}");
                } else {
                    // Whatever happened while not listening: tell every
                    // subscriber to look (an empty app name means "any").
                    let _ = tx.send(String::new());
                    while let Some(app) = notes.recv().await {
                        let _ = tx.send(app);
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!("cannot listen for releases on {db}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
