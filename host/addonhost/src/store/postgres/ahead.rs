//! Reads named ahead ([`Ahead`]), sent together: each with the locks it
//! takes first (as the same read made alone would), its rows kept in the
//! transaction's [`Cache`](super::cache::Cache). The `Tx` methods for these
//! reads go through here too, so a read named ahead and one made alone are
//! the same statements.

use tokio_postgres::Row;

use super::cache::{Key, Val};
use super::driver::Param;
use super::locks;
use super::rows::{app_row, attachment_row, resource_row, var_row, RESOURCE_COLUMNS};
use super::session::{params, PgTx};
use crate::store::Ahead;

/// How one read is made.
struct Plan {
    sql: String,
    params: Vec<Param>,
    decode: fn(&PgTx, Vec<Row>) -> anyhow::Result<Val>,
}

fn resource_sql(filter: &str) -> String {
    format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id WHERE {filter}"
    )
}

const ATTACHMENT_COLUMNS: &str =
    "SELECT t.id, t.resource_id, a.name, t.app_id, t.name FROM attachments t JOIN apps a ON a.id = t.app_id";

fn one_resource(tx: &PgTx, rows: Vec<Row>) -> anyhow::Result<Val> {
    let r = rows.first().map(resource_row).transpose()?;
    if let Some(r) = &r {
        tx.resource_seen(r.id, r.app_id);
    }
    Ok(Val::Resource(r))
}

/// A resource read before its app was locked (see
/// [`PgTx::read_ahead_all`]): kept only if there is none.
fn one_resource_unlocked(tx: &PgTx, rows: Vec<Row>) -> anyhow::Result<Val> {
    let r = rows.first().map(resource_row).transpose()?;
    if let Some(r) = &r {
        tx.owners.saw_resource(r.id, r.app_id);
    }
    Ok(Val::Resource(r))
}

/// The cache's key for a read.
pub(super) fn key(a: &Ahead<'_>) -> Key {
    match *a {
        Ahead::App(n) => Key::App(n.into()),
        Ahead::ResourceByUuid(u) => Key::ResourceByUuid(u.into()),
        Ahead::ResourceByName(n) => Key::ResourceByName(n.into()),
        Ahead::ResourceById(id) => Key::ResourceById(id),
        Ahead::ResourceByPartnerId {
            service,
            partner_id,
        } => Key::ResourceByPartnerId(service.into(), partner_id.into()),
        Ahead::AttachmentsOfResource(id) => Key::AttachmentsOf(id),
        Ahead::AttachmentByName { app_id, name } => Key::AttachmentByName(app_id, name.into()),
        Ahead::ConfigVar { app_id, name } => Key::Var(app_id, name.into()),
        Ahead::VarsOfAttachment(id) => Key::VarsOf(id),
        Ahead::TakenOver {
            attachment_id,
            name,
        } => Key::TakenOver(attachment_id, name.into()),
        Ahead::Kv { service, key } => Key::Kv(service.into(), key.into()),
        Ahead::KvWrite { service, key } => Key::KvSize(service.into(), key.into()),
        Ahead::KvUsage(s) => Key::KvUsage(s.into()),
        Ahead::Release(app) => Key::NextRelease(app),
        Ahead::NewResource => Key::NewIds("resources"),
        Ahead::NewAttachment => Key::NewIds("attachments"),
    }
}

impl PgTx {
    /// Queues the locks of read `a` and returns how to make it.
    fn plan(&self, a: &Ahead<'_>) -> Plan {
        match *a {
            Ahead::App(name) => {
                self.lock_app_by(locks::APP_BY_NAME, params![name.to_string()]);
                Plan {
                    sql: "SELECT id, name, region, created_at FROM apps WHERE name = $1".into(),
                    params: params![name.to_string()],
                    decode: |tx, rows| {
                        let app = rows.first().map(app_row).transpose()?;
                        if let (Some(a), true) = (&app, tx.writes()) {
                            tx.app_locked(a.id);
                        }
                        Ok(Val::App(app))
                    },
                }
            }
            // Looked up before their app is locked, as these lookups mostly
            // find nothing (a new uuid, a free name): one found is read
            // again once its app is locked (in `read_ahead_all`).
            Ahead::ResourceByUuid(uuid) => Plan {
                sql: resource_sql("r.uuid = $1"),
                params: params![uuid.to_string()],
                decode: one_resource_unlocked,
            },
            Ahead::ResourceByName(name) => Plan {
                sql: resource_sql("r.name = $1"),
                params: params![name.to_string()],
                decode: one_resource_unlocked,
            },
            Ahead::ResourceById(id) => {
                self.lock_app_of_resource(id);
                Plan {
                    sql: resource_sql("r.id = $1"),
                    params: params![id],
                    decode: one_resource,
                }
            }
            Ahead::ResourceByPartnerId {
                service,
                partner_id,
            } => {
                self.lock_app_by(
                    locks::APP_OF_PARTNER_ID,
                    params![service.to_string(), partner_id.to_string()],
                );
                Plan {
                    sql: resource_sql("r.service = $1 AND r.partner_id = $2"),
                    params: params![service.to_string(), partner_id.to_string()],
                    decode: one_resource,
                }
            }
            Ahead::AttachmentsOfResource(id) => {
                self.lock_app_of_resource(id);
                Plan {
                    sql: format!("{ATTACHMENT_COLUMNS} WHERE t.resource_id = $1 ORDER BY t.id"),
                    params: params![id],
                    decode: |tx, rows| {
                        let all: Vec<_> =
                            rows.iter().map(attachment_row).collect::<Result<_, _>>()?;
                        for a in &all {
                            tx.owners.saw_attachment(a.id, a.app_id, a.resource_id);
                        }
                        Ok(Val::Attachments(all))
                    },
                }
            }
            Ahead::AttachmentByName { app_id, name } => {
                self.lock_app(app_id);
                Plan {
                    sql: format!("{ATTACHMENT_COLUMNS} WHERE t.app_id = $1 AND t.name = $2"),
                    params: params![app_id, name.to_string()],
                    decode: |tx, rows| {
                        let a = rows.first().map(attachment_row).transpose()?;
                        if let Some(a) = &a {
                            tx.owners.saw_attachment(a.id, a.app_id, a.resource_id);
                        }
                        Ok(Val::Attachment(a))
                    },
                }
            }
            Ahead::ConfigVar { app_id, name } => {
                self.lock_app(app_id);
                Plan {
                    sql: "SELECT name, value, attachment_id FROM config_vars WHERE app_id = $1 AND name = $2"
                        .into(),
                    params: params![app_id, name.to_string()],
                    decode: |_, rows| Ok(Val::Var(rows.first().map(var_row).transpose()?)),
                }
            }
            Ahead::VarsOfAttachment(id) => {
                self.lock_app_of_attachment(id);
                Plan {
                    sql: "SELECT name, value, attachment_id FROM config_vars WHERE attachment_id = $1 \
                          ORDER BY name COLLATE \"C\""
                        .into(),
                    params: params![id],
                    decode: |_, rows| {
                        Ok(Val::Vars(rows.iter().map(var_row).collect::<Result<_, _>>()?))
                    },
                }
            }
            Ahead::TakenOver {
                attachment_id,
                name,
            } => {
                self.lock_app_of_attachment(attachment_id);
                Plan {
                    sql: "SELECT 1 FROM var_takeovers WHERE attachment_id = $1 AND name = $2"
                        .into(),
                    params: params![attachment_id, name.to_string()],
                    decode: |_, rows| Ok(Val::Flag(!rows.is_empty())),
                }
            }
            Ahead::Kv { service, key } => {
                super::kv::lock_key(self, service, key);
                Plan {
                    sql: "SELECT value FROM plugin_kv WHERE service = $1 AND key = $2".into(),
                    params: params![service.to_string(), key.to_string()],
                    decode: |_, rows| {
                        Ok(Val::Bytes(rows.first().map(|r| r.try_get(0)).transpose()?))
                    },
                }
            }
            Ahead::KvWrite { service, key } => {
                super::kv::lock_key(self, service, key);
                Plan {
                    sql: "SELECT octet_length(value)::BIGINT FROM plugin_kv WHERE service = $1 AND key = $2"
                        .into(),
                    params: params![service.to_string(), key.to_string()],
                    decode: |_, rows| {
                        Ok(Val::Size(rows.first().map(|r| r.try_get(0)).transpose()?))
                    },
                }
            }
            Ahead::KvUsage(service) => Plan {
                // What is committed plus this transaction's own writes
                // (kept up to date by them). Concurrent calls on other
                // connections may so together pass a quota by what they
                // write at once (each call's writes are bounded).
                sql: "SELECT COALESCE(SUM(keys), 0)::BIGINT, COALESCE(SUM(bytes), 0)::BIGINT \
                      FROM plugin_kv_usage WHERE service = $1"
                    .into(),
                params: params![service.to_string()],
                decode: |_, rows| Ok(Val::Usage(rows[0].try_get(0)?, rows[0].try_get(1)?)),
            },
            Ahead::Release(app_id) => {
                self.lock_app(app_id);
                Plan {
                    sql: "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = $1"
                        .into(),
                    params: params![app_id],
                    decode: |_, rows| Ok(Val::Number(rows[0].try_get(0)?)),
                }
            }
            Ahead::NewResource => Plan {
                sql: "SELECT nextval('resources_id_seq')".into(),
                params: params![],
                decode: |_, rows| Ok(Val::Ids(vec![rows[0].try_get(0)?])),
            },
            Ahead::NewAttachment => Plan {
                sql: "SELECT nextval('attachments_id_seq')".into(),
                params: params![],
                decode: |_, rows| Ok(Val::Ids(vec![rows[0].try_get(0)?])),
            },
        }
    }

    /// Makes the reads not answered yet, together (with whatever writes
    /// wait to be sent), and keeps their answers.
    pub(super) fn read_ahead_all(&self, reads: &[Ahead<'_>]) -> anyhow::Result<()> {
        let mut planned = Vec::new();
        for a in reads {
            let key = key(a);
            let fresh_ids = matches!(key, Key::NewIds(_))
                && matches!(self.cache.borrow().get(&key), Some(Val::Ids(ids)) if ids.is_empty());
            if (self.cache.borrow().contains(&key) && !fresh_ids)
                || planned.iter().any(|(k, _)| *k == key)
            {
                continue;
            }
            let plan = self.plan(a);
            self.queue_read(plan.sql, plan.params);
            planned.push((key, plan.decode));
        }
        if planned.is_empty() {
            return Ok(());
        }
        let rows = self.send_queued()?;
        let mut again = Vec::new();
        for ((key, decode), rows) in planned.into_iter().zip(rows) {
            let val = decode(self, rows)?;
            // A row found before its app was locked: read again under the
            // lock, by its id (the app of a row never changes).
            if let (Key::ResourceByUuid(_) | Key::ResourceByName(_), Val::Resource(Some(r))) =
                (&key, &val)
            {
                if self.writes() {
                    self.lock_app(r.app_id);
                    again.push((key, r.id));
                    continue;
                }
            }
            self.cache.borrow_mut().set(key, val);
        }
        if !again.is_empty() {
            for (_, id) in &again {
                self.queue_read(resource_sql("r.id = $1"), params![*id]);
            }
            let rows = self.send_queued()?;
            for ((key, _), rows) in again.into_iter().zip(rows) {
                let val = one_resource(self, rows)?;
                self.cache.borrow_mut().set(key, val);
            }
        }
        Ok(())
    }

    /// One read's answer: from the cache, or made now.
    pub(super) fn read_one<T>(
        &self,
        a: Ahead<'_>,
        f: impl FnOnce(&Val) -> Option<T>,
    ) -> anyhow::Result<T> {
        let key = key(&a);
        if !self.cache.borrow().contains(&key) {
            self.read_ahead_all(&[a])?;
        }
        let cache = self.cache.borrow();
        let val = cache
            .get(&key)
            .ok_or_else(|| anyhow::anyhow!("the read {a:?} went unanswered"))?;
        f(val).ok_or_else(|| anyhow::anyhow!("the read {a:?} answered {val:?}"))
    }
}
