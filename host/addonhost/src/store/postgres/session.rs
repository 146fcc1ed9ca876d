//! A PostgreSQL transaction's plumbing: [`PgTx`] sends its statements to
//! the session task holding the connection and waits for the answers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;

use tokio_postgres::Row;

use super::{Cmd, Param};
use crate::store::Unavailable;

/// An open transaction on one pooled connection.
pub struct PgTx {
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
    db: String,
    /// What this transaction's KV writes change of each add-on's usage
    /// (keys, bytes), written at commit to one usage row picked at random.
    pub(super) usage: RefCell<BTreeMap<String, (i64, i64)>>,
    /// Releases this transaction made.
    pub(super) releases: std::cell::Cell<u64>,
}

/// Rows each add-on's usage is spread over.
const USAGE_SHARDS: i16 = 16;

/// `Box`es parameters for the session task.
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$(Box::new($p) as $crate::store::postgres::Param),*] };
}
pub(super) use params;

impl PgTx {
    pub(super) fn new(cmds: tokio::sync::mpsc::UnboundedSender<Cmd>, db: String) -> PgTx {
        PgTx {
            cmds,
            db,
            usage: RefCell::new(BTreeMap::new()),
            releases: std::cell::Cell::new(0),
        }
    }

    /// The rows of a query of what is committed, outside this transaction.
    pub(super) fn outside(&self, sql: &str, params: Vec<Param>) -> anyhow::Result<Vec<Row>> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Outside(sql.to_string(), params, reply))
            .map_err(|_| self.gone())?;
        answer
            .recv()
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }

    pub(super) fn gone(&self) -> anyhow::Error {
        Unavailable(format!(
            "the connection to the database {} was lost mid-transaction",
            self.db
        ))
        .into()
    }

    /// A statement's error; a connection that broke is "unavailable".
    pub(super) fn failed(&self, e: tokio_postgres::Error) -> anyhow::Error {
        if super::lost(&e) {
            return Unavailable(format!("the database {} is unavailable: {e}", self.db)).into();
        }
        anyhow::Error::new(e)
    }

    /// The rows of a query.
    pub(super) fn query(&self, sql: &str, params: Vec<Param>) -> anyhow::Result<Vec<Row>> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Query(sql.to_string(), params, reply))
            .map_err(|_| self.gone())?;
        answer
            .recv()
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }

    /// The rows a statement changed.
    pub(super) fn execute(&self, sql: &str, params: Vec<Param>) -> anyhow::Result<u64> {
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Execute(sql.to_string(), params, reply))
            .map_err(|_| self.gone())?;
        answer
            .recv()
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }

    /// Statements without parameters, run as they are.
    pub(super) fn batch(&self, sql: &str) -> anyhow::Result<()> {
        self.execute(sql, Vec::new()).map(|_| ())
    }

    pub(super) fn commit(self) -> anyhow::Result<()> {
        let shard = rand::random_range(0..USAGE_SHARDS);
        for (service, (keys, bytes)) in self.usage.take() {
            if keys == 0 && bytes == 0 {
                continue;
            }
            self.execute(
                "INSERT INTO plugin_kv_usage (service, shard, keys, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service, shard) DO UPDATE SET keys = plugin_kv_usage.keys + EXCLUDED.keys,
                                                            bytes = plugin_kv_usage.bytes + EXCLUDED.bytes",
                params![service, shard, keys, bytes],
            )?;
        }
        let (reply, answer) = sync_channel(1);
        self.cmds
            .send(Cmd::Commit(reply))
            .map_err(|_| self.gone())?;
        answer
            .recv()
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
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
