//! The connections to PostgreSQL, used synchronously by the thread running
//! a transaction, and the pool that keeps them.
//!
//! The platform composes its rules as synchronous reads and writes, and a
//! statement's cost on loopback is mostly the hand-offs around it. So each
//! connection carries a current-thread runtime of its own that the calling
//! thread drives while it waits (as the `postgres` crate does): a statement
//! is a write to the socket and a read of the answer, with no thread in
//! between. Several statements sent together go out in one write and come
//! back in one read (pipelining): a transaction's writes whose answers
//! nobody needs wait and travel with its next read or its commit.
//!
//! Statements are prepared once per connection and kept (named), or, behind
//! a transaction-pooling PgBouncer where a name would reach another client's
//! server connection, sent unnamed with their parameter types each time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::conninfo::Settings;

/// A statement parameter with its PostgreSQL type, owned so a statement
/// can wait to be sent with the next ones.
pub struct Param {
    value: Box<dyn ToSql + Send + Sync>,
    ty: Type,
}

/// A Rust value and the PostgreSQL type it is sent as.
pub trait Typed: ToSql + Send + Sync + 'static {
    /// The type of the parameter.
    const TYPE: Type;
}

macro_rules! typed {
    ($($t:ty => $pg:ident),* $(,)?) => {
        $(impl Typed for $t { const TYPE: Type = Type::$pg; })*
    };
}
typed!(String => TEXT, i64 => INT8, i32 => INT4, i16 => INT2, bool => BOOL, Vec<u8> => BYTEA,
       Vec<i64> => INT8_ARRAY, Vec<bool> => BOOL_ARRAY, Vec<String> => TEXT_ARRAY);

impl<T: Typed> Typed for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl Param {
    /// `value`, sent as its Rust type's PostgreSQL type.
    pub fn new<T: Typed>(value: T) -> Param {
        Param {
            value: Box::new(value),
            ty: T::TYPE,
        }
    }
}

/// One statement of a pipeline.
pub enum Step<'a> {
    /// Statements without parameters, by the simple protocol (BEGIN,
    /// COMMIT, schema changes).
    Batch(&'a str),
    /// A statement whose rows are wanted.
    Query(&'a str, &'a [Param]),
    /// A statement whose count of changed rows is wanted.
    Execute(&'a str, &'a [Param]),
}

/// What a step answered.
pub enum Answer {
    /// A batch ran.
    Done,
    /// A query's rows.
    Rows(Vec<Row>),
    /// How many rows a statement changed.
    Count(u64),
}

/// How connections are made and how statements are sent on them.
pub struct ConnectInfo {
    pub settings: Settings,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Unnamed statements only (behind a transaction-pooling PgBouncer).
    pub unnamed: bool,
}

/// Longest a pipeline may go unanswered before its connection is given up
/// as lost. Transactions never hold locks across a plugin call, so waits
/// for locks are short; this bounds a database that stopped answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection and the runtime that drives it.
pub struct Conn {
    /// `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    prepared: HashMap<String, Statement>,
    unnamed: bool,
    /// Set when the connection can no longer be trusted (it broke, or a
    /// pipeline timed out with answers owed): it is not pooled again.
    broken: bool,
}

/// Why a connection could not be had.
#[derive(Debug)]
pub enum ConnectError {
    /// The database refused or could not be reached; the message says why.
    Failed(String),
    /// Every pooled connection stayed busy.
    Busy(String),
}

impl Conn {
    fn connect(info: &ConnectInfo) -> Result<Conn, ConnectError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectError::Failed(format!("cannot start a runtime: {e}")))?;
        let config = &info.settings.config;
        let client = drive(&rt, async {
            match &info.tls {
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok(client)
                }
                Some(tls) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok(client)
                }
            }
        });
        let client = client.map_err(|e: tokio_postgres::Error| {
            ConnectError::Failed(super::tls::explain(&e, &info.settings))
        })?;
        Ok(Conn {
            rt: Some(rt),
            client,
            prepared: HashMap::new(),
            unnamed: info.unnamed,
            broken: false,
        })
    }

    /// Runs `steps` in order, sent together; the answers in order, or the
    /// first error (PostgreSQL refuses what follows an error in a
    /// transaction anyway).
    pub fn run(&mut self, steps: &[Step<'_>]) -> Result<Vec<Answer>, Failure> {
        if !self.unnamed {
            self.prepare(steps)?;
        }
        let client = &self.client;
        let prepared = &self.prepared;
        let unnamed = self.unnamed;
        let futures = steps.iter().map(|step| async move {
            match *step {
                Step::Batch(sql) => client.batch_execute(sql).await.map(|()| Answer::Done),
                Step::Query(sql, params) if unnamed => client
                    .query_typed(sql, &typed(params))
                    .await
                    .map(Answer::Rows),
                Step::Execute(sql, params) if unnamed => client
                    .execute_typed(sql, &typed(params))
                    .await
                    .map(Answer::Count),
                Step::Query(sql, params) => client
                    .query(&prepared[sql], &refs(params))
                    .await
                    .map(Answer::Rows),
                Step::Execute(sql, params) => client
                    .execute(&prepared[sql], &refs(params))
                    .await
                    .map(Answer::Count),
            }
        });
        let answers = drive(self.rt(), async {
            tokio::time::timeout(ANSWER_TIMEOUT, join_all(futures)).await
        });
        let answers = match answers {
            Ok(a) => a,
            Err(_) => {
                self.broken = true;
                return Err(Failure::Unanswered);
            }
        };
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(a) => out.push(a),
                Err(e) => {
                    if super::lost(&e) {
                        self.broken = true;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }

    /// Prepares, together, the statements of `steps` this connection has
    /// not prepared yet.
    fn prepare(&mut self, steps: &[Step<'_>]) -> Result<(), Failure> {
        let mut missing: Vec<(&str, Vec<Type>)> = Vec::new();
        for step in steps {
            if let Step::Query(sql, params) | Step::Execute(sql, params) = *step {
                if !self.prepared.contains_key(sql) && !missing.iter().any(|(s, _)| *s == sql) {
                    missing.push((sql, params.iter().map(|p| p.ty.clone()).collect()));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let client = &self.client;
        let made = drive(self.rt(), async {
            tokio::time::timeout(
                ANSWER_TIMEOUT,
                join_all(
                    missing
                        .iter()
                        .map(|(sql, types)| client.prepare_typed(sql, types)),
                ),
            )
            .await
        });
        let Ok(made) = made else {
            self.broken = true;
            return Err(Failure::Unanswered);
        };
        for ((sql, _), st) in missing.into_iter().zip(made) {
            match st {
                Ok(st) => {
                    self.prepared.insert(sql.to_string(), st);
                }
                Err(e) => {
                    if super::lost(&e) {
                        self.broken = true;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Sends `sql` (simple protocol) without waiting for its answer: it is
    /// on its way when this returns, and its answer is read and dropped
    /// when the connection is next used. For a read-only transaction's
    /// COMMIT, whose outcome changes nothing.
    pub fn send(&mut self, sql: &str) {
        use futures_util::FutureExt;
        // The request is queued on the first poll.
        let _ = self.client.batch_execute(sql).now_or_never();
        // Let the connection task write it out.
        drive(self.rt(), tokio::task::yield_now());
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("a connection's runtime lives as long as it")
    }

    /// Whether statements go unnamed (behind a transaction pooler).
    pub fn unnamed(&self) -> bool {
        self.unnamed
    }

    /// Whether the connection is gone or untrusted.
    pub fn is_broken(&self) -> bool {
        self.broken || self.client.is_closed()
    }
}

/// Drives `fut` to completion on a connection's runtime, from this thread
/// — or, inside a current-thread tokio runtime (which a thread cannot leave
/// to drive another), from a short-lived thread while this one waits.
fn drive<T: Send>(rt: &tokio::runtime::Runtime, fut: impl Future<Output = T> + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        }
        _ => rt.block_on(fut),
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Connections may go away inside an async context (the CLI's main
        // task drops the store): a runtime must not wait there.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn typed(params: &[Param]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p.value.as_ref() as &(dyn ToSql + Sync), p.ty.clone()))
        .collect()
}

/// Why a pipeline failed.
#[derive(Debug)]
pub enum Failure {
    /// PostgreSQL or the connection said so.
    Pg(tokio_postgres::Error),
    /// No answer came within [`ANSWER_TIMEOUT`]: the connection is given up.
    Unanswered,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Pg(e)
    }
}

/// Connections kept for reuse, at most `max` open at once.
pub struct Pool {
    info: Arc<ConnectInfo>,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    wait: Duration,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

/// A connection taken from a pool; back to it when dropped (unless broken).
pub struct Pooled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    /// Whether it was idle in the pool (rather than made for this use).
    reused: bool,
}

impl Pool {
    /// A pool of at most `max` connections made with `info`, whose callers
    /// wait at most `wait` for one to be free.
    pub fn new(info: Arc<ConnectInfo>, max: usize, wait: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            info,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max,
            wait,
        })
    }

    /// A connection: an idle one (the most recently used, its caches
    /// warm), else a new one made on this thread, else the first freed
    /// within the wait.
    pub fn get(self: &Arc<Self>) -> Result<Pooled, ConnectError> {
        let deadline = Instant::now() + self.wait;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = st.idle.pop() {
                return Ok(Pooled {
                    conn: Some(conn),
                    pool: self.clone(),
                    reused: true,
                });
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match Conn::connect(&self.info) {
                    Ok(conn) => Ok(Pooled {
                        conn: Some(conn),
                        pool: self.clone(),
                        reused: false,
                    }),
                    Err(e) => {
                        self.closed();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConnectError::Busy(format!(
                    "all {} connections to the database stayed busy for {:?}",
                    self.max, self.wait
                )));
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Forgets every idle connection (after the database restarted, say):
    /// the next ones are made afresh.
    pub fn clear_idle(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.idle.len();
        st.idle.clear();
        st.open -= n;
        drop(st);
        self.freed.notify_all();
    }

    fn closed(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open -= 1;
        drop(st);
        self.freed.notify_one();
    }
}

impl Pooled {
    /// Whether the connection sat in the pool before this use.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Gives up this connection, found closed, and the idle ones (as stale
    /// as it, likely: the database restarted), for a new one.
    pub fn renew(&mut self) -> Result<(), ConnectError> {
        if let Some(mut old) = self.conn.take() {
            old.broken = true;
            drop(old);
            self.pool.closed();
        }
        self.pool.clear_idle();
        let fresh = self.pool.get()?;
        *self = fresh;
        Ok(())
    }

    /// The connection.
    pub fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a pooled connection until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if conn.is_broken() {
            drop(conn);
            self.pool.closed();
            return;
        }
        let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        st.idle.push(conn);
        drop(st);
        self.pool.freed.notify_one();
    }
}
