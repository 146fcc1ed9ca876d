//! One PostgreSQL transaction on one pooled connection: [`PgTx`] sends its
//! statements from the thread running it, holding back those whose answers
//! nobody needs (most writes, and the locks) until the next statement that
//! must be answered, or the commit, and sending them all at once.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use tokio_postgres::Row;

use super::driver::{Answer, Failure, Param, Pooled, Step};
use super::locks;
use crate::store::Unavailable;

/// `Param`s of a statement.
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$($crate::store::postgres::driver::Param::new($p)),*] };
}
pub(super) use params;

/// What a transaction may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// A read-only snapshot (`REPEATABLE READ`): no locks.
    Read,
    /// One read statement, on its own (a single statement sees one
    /// snapshot without a transaction around it).
    ReadOne,
    /// Reads and writes under the [`locks`] rules, acknowledged once on
    /// disk.
    Write,
    /// A write whose commit does not wait for its WAL to reach the disk:
    /// for a step nobody is answered on, whose effect is made durable by
    /// the acknowledged write that always follows it (a provisioning's
    /// reservation: see `PgStore::write_staged`).
    WriteUnacknowledged,
    /// Schema changes, one server at a time.
    Migrate,
}

impl Mode {
    fn begin(self) -> &'static str {
        match self {
            Mode::Read => "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            Mode::ReadOne => "",
            Mode::Write | Mode::Migrate => "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
            Mode::WriteUnacknowledged => {
                "START TRANSACTION ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off"
            }
        }
    }

    fn writes(self) -> bool {
        !matches!(self, Mode::Read | Mode::ReadOne)
    }
}

/// An open transaction.
pub struct PgTx {
    conn: RefCell<Pooled>,
    mode: Mode,
    db: String,
    /// Whether BEGIN went out (it goes with the first statement).
    begun: Cell<bool>,
    /// Whether the transaction ended (committed, or its commit failed).
    ended: Cell<bool>,
    /// Statements not sent yet, in order: writes and locks, and the reads
    /// a read-ahead queued (whose rows are wanted).
    pending: RefCell<Vec<Queued>>,
    /// What this transaction read (and wrote) of the rows its locks
    /// protect, to answer reads again without asking (see `cache.rs`).
    pub(super) cache: RefCell<super::cache::Cache>,
    /// Advisory locks this transaction holds or has queued, exclusive and
    /// shared.
    held: RefCell<HashSet<i64>>,
    shared: RefCell<HashSet<i64>>,
    /// Locks asked for and not queued yet (with whether shared).
    locks: RefCell<Vec<(i64, bool)>>,
    /// What this transaction's KV writes change of each add-on's usage
    /// (keys, bytes), written with the commit (see `kv.rs`).
    pub(super) usage: RefCell<std::collections::BTreeMap<String, (i64, i64)>>,
    /// Which app each resource and attachment belongs to, as the store
    /// has seen them.
    pub(super) owners: std::sync::Arc<locks::Owners>,
    /// Releases this transaction made.
    pub(super) releases: Cell<u64>,
    /// Statements sent, round trips made (for the driver's counters).
    pub(super) counted: Cell<(u64, u64)>,
}

/// A statement waiting to be sent.
struct Queued {
    sql: String,
    params: Vec<Param>,
    /// Whether its rows are wanted (a queued read) or only its success.
    rows: bool,
}

/// Rows each add-on's KV usage is spread over, by the server connection
/// that writes (so concurrent writers of one add-on seldom wait on one).
pub(super) const USAGE_SHARDS: i16 = 64;

impl PgTx {
    pub(super) fn new(
        conn: Pooled,
        mode: Mode,
        db: String,
        owners: std::sync::Arc<locks::Owners>,
    ) -> PgTx {
        PgTx {
            conn: RefCell::new(conn),
            mode,
            db,
            begun: Cell::new(false),
            ended: Cell::new(false),
            pending: RefCell::new(Vec::new()),
            cache: RefCell::new(Default::default()),
            held: RefCell::new(HashSet::new()),
            shared: RefCell::new(HashSet::new()),
            locks: RefCell::new(Vec::new()),
            usage: RefCell::new(Default::default()),
            owners,
            releases: Cell::new(0),
            counted: Cell::new((0, 0)),
        }
    }

    /// Whether this transaction writes (and so takes locks).
    pub(super) fn writes(&self) -> bool {
        self.mode.writes()
    }

    /// Sends BEGIN (if not yet), the held-back statements and `last`, in
    /// one round trip; `last`'s answer.
    fn send(&self, last: Option<Step<'_>>, committing: bool) -> anyhow::Result<Option<Answer>> {
        Ok(self.send_all(last, committing)?.1)
    }

    /// [`PgTx::send`], with the rows of the queued reads too, in order.
    fn send_all(
        &self,
        last: Option<Step<'_>>,
        committing: bool,
    ) -> anyhow::Result<(Vec<Vec<Row>>, Option<Answer>)> {
        self.queue_locks();
        let pending = self.pending.take();
        let mut steps = Vec::with_capacity(pending.len() + 2);
        if self.mode == Mode::ReadOne && self.begun.get() {
            anyhow::bail!("a one-statement read sent a second statement (use Store::read)");
        }
        let begin = !self.begun.get() && self.mode != Mode::ReadOne;
        if begin {
            steps.push(Step::Batch(self.mode.begin()));
        }
        for q in &pending {
            steps.push(if q.rows {
                Step::Query(&q.sql, &q.params)
            } else {
                Step::Execute(&q.sql, &q.params)
            });
        }
        let wants = last.is_some();
        steps.extend(last);
        if steps.is_empty() {
            return Ok((Vec::new(), None));
        }
        self.begun.set(true);
        let (statements, trips) = self.counted.get();
        self.counted
            .set((statements + steps.len() as u64, trips + 1));
        let mut ran = self.conn.borrow_mut().conn().run(&steps);
        if let Err(Failure::Pg(e)) = &ran {
            // A pooled connection found closed on its first use here: the
            // database never saw these statements, so they go again on a
            // new connection (the database restarted since, say).
            let closed = e.is_closed() || (e.as_db_error().is_none() && e.code().is_none());
            let first = self.counted.get().1 == 1;
            if closed && first && begin && self.conn.borrow().reused() {
                let renewed = self.conn.borrow_mut().renew();
                if renewed.is_ok() {
                    ran = self.conn.borrow_mut().conn().run(&steps);
                }
            }
        }
        let mut answers = match ran {
            Ok(answers) => answers.into_iter(),
            Err(e) => return Err(self.failed(e, committing)),
        };
        if begin {
            answers.next();
        }
        let mut rows = Vec::new();
        for q in &pending {
            match answers.next() {
                Some(Answer::Rows(r)) if q.rows => rows.push(r),
                _ => {}
            }
        }
        Ok((rows, if wants { answers.next() } else { None }))
    }

    /// Queues a read whose rows [`PgTx::send_queued`] answers.
    pub(super) fn queue_read(&self, sql: impl Into<String>, params: Vec<Param>) {
        self.queue_locks();
        self.push(sql, params, true);
    }

    /// Sends everything queued; the rows of the queued reads, in order.
    pub(super) fn send_queued(&self) -> anyhow::Result<Vec<Vec<Row>>> {
        Ok(self.send_all(None, false)?.0)
    }

    fn failed(&self, e: Failure, committing: bool) -> anyhow::Error {
        match e {
            Failure::Unanswered => Unavailable(format!(
                "the database {} did not answer within 30 s{}",
                self.db,
                if committing {
                    "; whether this change was kept is unknown: retrying the same request is safe"
                } else {
                    ""
                }
            ))
            .into(),
            Failure::Pg(e) if super::lost(&e) => {
                Unavailable(format!(
                    "the database {} is unavailable{}: {e}",
                    self.db,
                    if committing {
                        " (the connection broke during the commit: whether this change was kept is unknown; retrying the same request is safe)"
                    } else {
                        ""
                    }
                ))
                .into()
            }
            Failure::Pg(e) => {
                // 42P05 duplicate / 26000 unknown prepared statement: named
                // statements met another client's server connection.
                let pooled = matches!(e.code().map(|c| c.code()), Some("42P05" | "26000"));
                if pooled && !self.conn.borrow_mut().conn().unnamed() {
                    return anyhow::Error::new(e).context(format!(
                        "the database {} answered for another client's prepared statements: a \
                         transaction-pooling connection pooler (PgBouncer) is in between; run addonhost \
                         with --database-pooler (ADDONHOST_DATABASE_POOLER=true)",
                        self.db
                    ));
                }
                anyhow::Error::new(e)
            }
        }
    }

    /// The rows of a query (sent with whatever was held back).
    pub(super) fn query(&self, sql: &str, params: Vec<Param>) -> anyhow::Result<Vec<Row>> {
        match self.send(Some(Step::Query(sql, &params)), false)? {
            Some(Answer::Rows(rows)) => Ok(rows),
            _ => unreachable!("a query answers rows"),
        }
    }

    /// The rows a statement changed (sent with whatever was held back).
    pub(super) fn execute(&self, sql: &str, params: Vec<Param>) -> anyhow::Result<u64> {
        match self.send(Some(Step::Execute(sql, &params)), false)? {
            Some(Answer::Count(n)) => Ok(n),
            _ => unreachable!("an execute answers a count"),
        }
    }

    /// A statement whose answer nobody needs: held back and sent with the
    /// next statement that is answered, or the commit. If it fails, that
    /// one fails (and with it the transaction, as any failure would).
    pub(super) fn defer(&self, sql: impl Into<String>, params: Vec<Param>) {
        self.queue_locks();
        self.push(sql, params, false);
    }

    /// Statements without parameters, run as they are.
    pub(super) fn batch(&self, sql: &str) -> anyhow::Result<()> {
        self.send(Some(Step::Batch(sql)), false).map(|_| ())
    }

    /// Takes the advisory lock `key` for the rest of the transaction
    /// (exclusive, or `shared`), sent with the next statement. Nothing in
    /// a read-only snapshot.
    pub(super) fn lock(&self, key: i64, shared: bool) {
        if !self.writes() || self.held.borrow().contains(&key) {
            return;
        }
        if shared {
            if !self.shared.borrow_mut().insert(key) {
                return;
            }
        } else {
            self.held.borrow_mut().insert(key);
        }
        // Locks in a row go out as one statement.
        self.locks.borrow_mut().push((key, shared));
    }

    /// Queues the locks asked for since the last statement, as one.
    fn queue_locks(&self) {
        let locks = self.locks.take();
        match locks.as_slice() {
            [] => {}
            [(key, false)] => self.push("SELECT pg_advisory_xact_lock($1)", params![*key], false),
            [(key, true)] => self.push(
                "SELECT pg_advisory_xact_lock_shared($1)",
                params![*key],
                false,
            ),
            _ => {
                // In the array's order (unnest keeps it).
                let (keys, shared): (Vec<i64>, Vec<bool>) = locks.into_iter().unzip();
                self.push(
                    "SELECT count(CASE WHEN s THEN pg_advisory_xact_lock_shared(k)::TEXT \
                     ELSE pg_advisory_xact_lock(k)::TEXT END) FROM unnest($1::BIGINT[], $2::BOOL[]) AS t(k, s)",
                    params![keys, shared],
                    false,
                );
            }
        }
    }

    fn push(&self, sql: impl Into<String>, params: Vec<Param>, rows: bool) {
        self.pending.borrow_mut().push(Queued {
            sql: sql.into(),
            params,
            rows,
        });
    }

    /// Locks app `app_id` (see [`locks`]).
    pub(super) fn lock_app(&self, app_id: i64) {
        self.lock(locks::app(app_id), false);
    }

    /// Records that the app `app_id` is locked (by a statement that found
    /// and locked it at once).
    pub(super) fn app_locked(&self, app_id: i64) {
        self.held.borrow_mut().insert(locks::app(app_id));
    }

    /// Locks the app found by `sql` (one of the `locks::APP_*`
    /// statements) with `params`, sent with the next statement.
    pub(super) fn lock_app_by(&self, sql: &'static str, params: Vec<Param>) {
        if self.writes() {
            self.defer(sql, params);
        }
    }

    /// Locks the app owning resource `id`: known already, or found by the
    /// lock statement.
    pub(super) fn lock_app_of_resource(&self, id: i64) {
        match self.owners.resource(id) {
            Some(app) => self.lock_app(app),
            None => self.lock_app_by(locks::APP_OF_RESOURCE, params![id]),
        }
    }

    /// Locks the app attachment `id` is on: known already, or found by the
    /// lock statement.
    pub(super) fn lock_app_of_attachment(&self, id: i64) {
        match self.owners.attachment(id) {
            Some((app, _)) => self.lock_app(app),
            None => self.lock_app_by(locks::APP_OF_ATTACHMENT, params![id]),
        }
    }

    /// Records that resource `id` belongs to app `app_id`, whose lock this
    /// transaction took before reading it.
    pub(super) fn resource_seen(&self, id: i64, app_id: i64) {
        self.owners.saw_resource(id, app_id);
        if self.writes() {
            self.app_locked(app_id);
        }
    }

    /// Ends the transaction: a write commits (with whatever was held back,
    /// in the same round trip) and is answered once PostgreSQL has; a read
    /// sends its COMMIT without waiting.
    pub(super) fn commit(&self) -> anyhow::Result<()> {
        self.ended.set(true);
        if !self.writes() {
            if self.begun.get() && self.mode == Mode::Read {
                self.conn.borrow_mut().conn().send("COMMIT");
            }
            return Ok(());
        }
        // The usage rows last, so their row locks are held only through
        // the commit.
        for (service, (keys, bytes)) in self.usage.take() {
            if keys != 0 || bytes != 0 {
                self.defer(
                    "INSERT INTO plugin_kv_usage (service, shard, keys, bytes)
                     VALUES ($1, (pg_backend_pid() % $4)::SMALLINT, $2, $3)
                     ON CONFLICT (service, shard) DO UPDATE SET keys = plugin_kv_usage.keys + EXCLUDED.keys,
                                                                bytes = plugin_kv_usage.bytes + EXCLUDED.bytes",
                    params![service, keys, bytes, i32::from(USAGE_SHARDS)],
                );
            }
        }
        if !self.begun.get() && self.pending.borrow().is_empty() && self.locks.borrow().is_empty() {
            return Ok(());
        }
        self.send(Some(Step::Batch("COMMIT")), true).map(|_| ())
    }

    pub(super) fn one<T>(
        &self,
        sql: &str,
        params: Vec<Param>,
        f: impl Fn(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    pub(super) fn all<T>(
        &self,
        sql: &str,
        params: Vec<Param>,
        f: impl Fn(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        // Ended without a commit: roll back before the connection goes
        // back to the pool (sent now, its answer read on next use).
        if self.begun.get() && !self.ended.get() && self.mode != Mode::ReadOne {
            self.conn.get_mut().conn().send("ROLLBACK");
        }
    }
}
