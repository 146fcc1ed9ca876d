//! Reads named ahead ([`Ahead`]), sent together as ONE statement: each read
//! a scalar subquery of it, its answer a column (JSON, or text), kept in the
//! transaction's [`Cache`](super::cache::Cache). The locks each read takes
//! first (as the same read made alone would) go just before it, in the same
//! round trip. The `Tx` methods for these reads go through here too, so a
//! read named ahead and one made alone are the same SQL.
//!
//! PostgreSQL spends on each statement it is sent (the messages, a portal,
//! the result) about what a small indexed read costs: a dozen reads as one
//! statement cost it a fraction of a dozen statements.

use serde_json::Value;

use super::cache::{Key, Val};
use super::driver::Param;
use super::locks;
use super::session::{params, PgTx};
use crate::store::{Ahead, App, Attachment, ConfigVar, Resource};

/// How one read is made: a scalar subquery (numbering its parameters from
/// `$1`) whose value, cast to text, `decode` reads.
struct Plan {
    sub: String,
    params: Vec<Param>,
    decode: fn(&PgTx, Option<String>) -> anyhow::Result<Val>,
}

/// A resource as a JSON array, in [`resource`]'s order.
const RESOURCE_JSON: &str = "json_build_array(r.id, r.uuid, r.name, r.service, r.plan, a.name, \
     r.app_id, r.partner_id, r.state, r.message, r.created_at, r.updated_at, r.rotated_at, \
     r.rotation_error, r.rotation_failures, r.next_rotation_at, r.reserved_by, r.reserved_until, r.request)";

fn resource_sub(filter: &str) -> String {
    format!("SELECT {RESOURCE_JSON} FROM resources r JOIN apps a ON a.id = r.app_id WHERE {filter}")
}

const ATTACHMENT_JSON: &str = "json_build_array(t.id, t.resource_id, a.name, t.app_id, t.name)";

const VAR_JSON: &str = "json_build_array(name, value, attachment_id)";

/// The JSON array of a row, read field by field.
struct Fields(Vec<Value>);

impl Fields {
    fn of(text: &str) -> anyhow::Result<Fields> {
        match serde_json::from_str(text)? {
            Value::Array(a) => Ok(Fields(a)),
            other => anyhow::bail!("a row read ahead is not an array: {other}"),
        }
    }
    fn i64(&self, i: usize) -> anyhow::Result<i64> {
        self.0
            .get(i)
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow::anyhow!("field {i} of a row read ahead is not a number"))
    }
    fn opt_i64(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.0.get(i) {
            Some(Value::Null) | None => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }
    fn string(&self, i: usize) -> anyhow::Result<String> {
        self.0
            .get(i)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("field {i} of a row read ahead is not text"))
    }
    fn opt_string(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.0.get(i) {
            Some(Value::Null) | None => Ok(None),
            _ => self.string(i).map(Some),
        }
    }
}

fn resource(f: &Fields) -> anyhow::Result<Resource> {
    Ok(Resource {
        id: f.i64(0)?,
        uuid: f.string(1)?,
        name: f.string(2)?,
        service: f.string(3)?,
        plan: f.string(4)?,
        app: f.string(5)?,
        app_id: f.i64(6)?,
        partner_id: f.opt_string(7)?,
        state: f.string(8)?.parse()?,
        message: f.opt_string(9)?,
        created_at: f.i64(10)?,
        updated_at: f.i64(11)?,
        rotated_at: f.opt_i64(12)?,
        rotation_error: f.opt_string(13)?,
        rotation_failures: f.i64(14)?,
        next_rotation_at: f.opt_i64(15)?,
        reserved_by: f.opt_string(16)?,
        reserved_until: f.opt_i64(17)?,
        request: f.opt_string(18)?,
    })
}

fn attachment(f: &Fields) -> anyhow::Result<Attachment> {
    Ok(Attachment {
        id: f.i64(0)?,
        resource_id: f.i64(1)?,
        app: f.string(2)?,
        app_id: f.i64(3)?,
        name: f.string(4)?,
    })
}

fn var(f: &Fields) -> anyhow::Result<ConfigVar> {
    Ok(ConfigVar {
        name: f.string(0)?,
        value: f.string(1)?,
        attachment_id: f.opt_i64(2)?,
    })
}

/// The rows of a JSON array of arrays.
fn rows(text: Option<String>) -> anyhow::Result<Vec<Fields>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    match serde_json::from_str(&text)? {
        Value::Array(rows) => rows
            .into_iter()
            .map(|r| match r {
                Value::Array(a) => Ok(Fields(a)),
                other => anyhow::bail!("a row read ahead is not an array: {other}"),
            })
            .collect(),
        other => anyhow::bail!("rows read ahead are not an array: {other}"),
    }
}

fn one_resource(tx: &PgTx, text: Option<String>) -> anyhow::Result<Val> {
    let r = text.as_deref().map(Fields::of).transpose()?;
    let r = r.as_ref().map(resource).transpose()?;
    if let Some(r) = &r {
        tx.resource_seen(r.id, r.app_id);
    }
    Ok(Val::Resource(r.map(Box::new)))
}

/// A resource read before its app was locked (see
/// [`PgTx::read_ahead_all`]): kept only if there is none.
fn one_resource_unlocked(tx: &PgTx, text: Option<String>) -> anyhow::Result<Val> {
    let r = text.as_deref().map(Fields::of).transpose()?;
    let r = r.as_ref().map(resource).transpose()?;
    if let Some(r) = &r {
        tx.owners.saw_resource(r.id, r.app_id);
    }
    Ok(Val::Resource(r.map(Box::new)))
}

fn number(text: Option<String>) -> anyhow::Result<i64> {
    text.ok_or_else(|| anyhow::anyhow!("a number read ahead is missing"))?
        .parse()
        .map_err(|e| anyhow::anyhow!("a number read ahead: {e}"))
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
                    sub: "SELECT json_build_array(id, name, region, created_at) FROM apps WHERE name = $1"
                        .into(),
                    params: params![name.to_string()],
                    decode: |tx, text| {
                        let app = match text {
                            Some(t) => {
                                let f = Fields::of(&t)?;
                                Some(App {
                                    id: f.i64(0)?,
                                    name: f.string(1)?,
                                    region: f.string(2)?,
                                    created_at: f.i64(3)?,
                                })
                            }
                            None => None,
                        };
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
                sub: resource_sub("r.uuid = $1"),
                params: params![uuid.to_string()],
                decode: one_resource_unlocked,
            },
            Ahead::ResourceByName(name) => Plan {
                sub: resource_sub("r.name = $1"),
                params: params![name.to_string()],
                decode: one_resource_unlocked,
            },
            Ahead::ResourceById(id) => {
                self.lock_app_of_resource(id);
                Plan {
                    sub: resource_sub("r.id = $1"),
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
                    sub: resource_sub("r.service = $1 AND r.partner_id = $2"),
                    params: params![service.to_string(), partner_id.to_string()],
                    decode: one_resource,
                }
            }
            Ahead::AttachmentsOfResource(id) => {
                self.lock_app_of_resource(id);
                Plan {
                    sub: format!(
                        "SELECT json_agg({ATTACHMENT_JSON} ORDER BY t.id) FROM attachments t \
                         JOIN apps a ON a.id = t.app_id WHERE t.resource_id = $1"
                    ),
                    params: params![id],
                    decode: |tx, text| {
                        let all = rows(text)?
                            .iter()
                            .map(attachment)
                            .collect::<anyhow::Result<Vec<_>>>()?;
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
                    sub: format!(
                        "SELECT {ATTACHMENT_JSON} FROM attachments t JOIN apps a ON a.id = t.app_id \
                         WHERE t.app_id = $1 AND t.name = $2"
                    ),
                    params: params![app_id, name.to_string()],
                    decode: |tx, text| {
                        let a = text.as_deref().map(Fields::of).transpose()?;
                        let a = a.as_ref().map(attachment).transpose()?;
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
                    sub: format!(
                        "SELECT {VAR_JSON} FROM config_vars WHERE app_id = $1 AND name = $2"
                    ),
                    params: params![app_id, name.to_string()],
                    decode: |_, text| {
                        let f = text.as_deref().map(Fields::of).transpose()?;
                        Ok(Val::Var(f.as_ref().map(var).transpose()?))
                    },
                }
            }
            Ahead::VarsOfAttachment(id) => {
                self.lock_app_of_attachment(id);
                Plan {
                    sub: format!(
                        "SELECT json_agg({VAR_JSON} ORDER BY name COLLATE \"C\") FROM config_vars \
                         WHERE attachment_id = $1"
                    ),
                    params: params![id],
                    decode: |_, text| {
                        Ok(Val::Vars(
                            rows(text)?.iter().map(var).collect::<anyhow::Result<_>>()?,
                        ))
                    },
                }
            }
            Ahead::TakenOver {
                attachment_id,
                name,
            } => {
                self.lock_app_of_attachment(attachment_id);
                Plan {
                    sub: "SELECT EXISTS (SELECT 1 FROM var_takeovers WHERE attachment_id = $1 AND name = $2)"
                        .into(),
                    params: params![attachment_id, name.to_string()],
                    decode: |_, text| Ok(Val::Flag(text.as_deref() == Some("true"))),
                }
            }
            Ahead::Kv { service, key } => {
                super::kv::lock_key(self, service, key);
                Plan {
                    sub:
                        "SELECT encode(value, 'hex') FROM plugin_kv WHERE service = $1 AND key = $2"
                            .into(),
                    params: params![service.to_string(), key.to_string()],
                    decode: |_, text| {
                        Ok(Val::Bytes(text.map(hex::decode).transpose().map_err(
                            |e| anyhow::anyhow!("a KV value read ahead: {e}"),
                        )?))
                    },
                }
            }
            Ahead::KvWrite { service, key } => {
                super::kv::lock_key(self, service, key);
                Plan {
                    sub:
                        "SELECT octet_length(value) FROM plugin_kv WHERE service = $1 AND key = $2"
                            .into(),
                    params: params![service.to_string(), key.to_string()],
                    decode: |_, text| Ok(Val::Size(text.map(|t| number(Some(t))).transpose()?)),
                }
            }
            // What is committed plus this transaction's own writes (kept up
            // to date by them). Concurrent calls on other connections may so
            // together pass a quota by what they write at once (each call's
            // writes are bounded).
            Ahead::KvUsage(service) => Plan {
                sub: "SELECT json_build_array(COALESCE(SUM(keys), 0), COALESCE(SUM(bytes), 0)) \
                      FROM plugin_kv_usage WHERE service = $1"
                    .into(),
                params: params![service.to_string()],
                decode: |_, text| {
                    let f = Fields::of(text.as_deref().unwrap_or("[0,0]"))?;
                    Ok(Val::Usage(f.i64(0)?, f.i64(1)?))
                },
            },
            Ahead::Release(app_id) => {
                self.lock_app(app_id);
                Plan {
                    sub: "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = $1"
                        .into(),
                    params: params![app_id],
                    decode: |_, text| Ok(Val::Number(number(text)?)),
                }
            }
            Ahead::NewResource => Plan {
                sub: "SELECT nextval('resources_id_seq')".into(),
                params: params![],
                decode: |_, text| Ok(Val::Ids(vec![number(text)?])),
            },
            Ahead::NewAttachment => Plan {
                sub: "SELECT nextval('attachments_id_seq')".into(),
                params: params![],
                decode: |_, text| Ok(Val::Ids(vec![number(text)?])),
            },
        }
    }

    /// Makes the reads not answered yet, as one statement sent with
    /// whatever waits to be sent, and keeps their answers.
    pub(super) fn read_ahead_all(&self, reads: &[Ahead<'_>]) -> anyhow::Result<()> {
        let mut planned: Vec<(Key, Plan)> = Vec::new();
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
            planned.push((key, plan));
        }
        if planned.is_empty() {
            return Ok(());
        }
        let mut again = Vec::new();
        for (key, decode, text) in self.combined(planned)? {
            let val = decode(self, text)?;
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
            let plans = again
                .into_iter()
                .map(|(key, id)| {
                    let plan = Plan {
                        sub: resource_sub("r.id = $1"),
                        params: params![id],
                        decode: one_resource,
                    };
                    (key, plan)
                })
                .collect();
            for (key, decode, text) in self.combined(plans)? {
                let val = decode(self, text)?;
                self.cache.borrow_mut().set(key, val);
            }
        }
        Ok(())
    }

    /// Sends the plans' subqueries as one statement (after whatever waits
    /// to be sent); each one's key, decoder and value (as text).
    #[allow(clippy::type_complexity)]
    fn combined(
        &self,
        plans: Vec<(Key, Plan)>,
    ) -> anyhow::Result<
        Vec<(
            Key,
            fn(&PgTx, Option<String>) -> anyhow::Result<Val>,
            Option<String>,
        )>,
    > {
        let mut sql = String::from("SELECT ");
        let mut params = Vec::new();
        let mut decoders = Vec::with_capacity(plans.len());
        for (i, (key, plan)) in plans.into_iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            renumbered(&plan.sub, params.len(), &mut sql);
            sql.push_str(")::TEXT");
            params.extend(plan.params);
            decoders.push((key, plan.decode));
        }
        self.queue_read(sql, params);
        let rows = self.send_queued()?;
        let row = rows
            .last()
            .and_then(|r| r.first())
            .ok_or_else(|| anyhow::anyhow!("a read ahead answered no row"))?;
        decoders
            .into_iter()
            .enumerate()
            .map(|(i, (key, decode))| Ok((key, decode, row.try_get::<_, Option<String>>(i)?)))
            .collect()
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

/// Appends `sub` to `out` with its parameters `$n` numbered from
/// `offset + 1`.
fn renumbered(sub: &str, offset: usize, out: &mut String) {
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            out.push('$');
            out.push_str(&(n + offset).to_string());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_after_the_previous_reads() {
        let mut out = String::new();
        super::renumbered("a = $1 AND b = $2 AND c = '$x' AND d = $12", 3, &mut out);
        assert_eq!(out, "a = $4 AND b = $5 AND c = '$x' AND d = $15");
    }
}
