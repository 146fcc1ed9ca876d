//! Add-ons' key-value storage on PostgreSQL. Each write counts itself on
//! one of its add-on's usage rows in the same statement, so writes need no
//! answer and travel with the transaction's next statement.

use super::cache::{Key, Val};
use super::locks::{self, Space};
use super::session::{params, PgTx};
use crate::store::Ahead;

/// Keys past which a transaction locks its add-on's whole KV instead of
/// each key (PostgreSQL's lock table is shared and bounded).
const MOST_KEY_LOCKS: usize = 64;

/// Locks, in one global order, what a transaction reads of an add-on's KV
/// to decide and then writes (see [`super::locks`]): the listing first
/// (exclusive when the transaction re-reads a listing or a count, shared
/// otherwise), then each key by its lock key.
pub(super) fn lock_kv(tx: &PgTx, service: &str, keys: &[&str], listing: bool) {
    let listing = listing || keys.len() > MOST_KEY_LOCKS;
    tx.lock(locks::named(Space::KvListing, &[service]), !listing);
    if listing {
        return;
    }
    let mut ids: Vec<i64> = keys
        .iter()
        .map(|k| locks::named(Space::KvKey, &[service, k]))
        .collect();
    ids.sort_unstable();
    for id in ids {
        tx.lock(id, false);
    }
}

/// Locks one key for a read or write in a write transaction (after
/// [`lock_kv`], already held).
pub(super) fn lock_key(tx: &PgTx, service: &str, key: &str) {
    tx.lock(locks::named(Space::KvListing, &[service]), true);
    tx.lock(locks::named(Space::KvKey, &[service, key]), false);
}

pub(super) fn kv_get(tx: &PgTx, service: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    tx.read_one(Ahead::Kv { service, key }, |v| match v {
        Val::Bytes(b) => Some(b.clone()),
        _ => None,
    })
}

pub(super) fn kv_put(
    tx: &PgTx,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> anyhow::Result<()> {
    lock_key(tx, service, key);
    counted(tx, service, key, value);
    match value {
        Some(v) => tx.defer(
            "WITH old AS (SELECT octet_length(value)::BIGINT AS len FROM plugin_kv
                          WHERE service = $1 AND key = $2),
                  put AS (INSERT INTO plugin_kv (service, key, value) VALUES ($1, $2, $3)
                          ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value)
             INSERT INTO plugin_kv_usage (service, shard, keys, bytes)
             SELECT $1, $4, CASE WHEN o.len IS NULL THEN 1 ELSE 0 END,
                    CASE WHEN o.len IS NULL THEN $5 + octet_length($3)::BIGINT
                         ELSE octet_length($3)::BIGINT - o.len END
             FROM (SELECT (SELECT len FROM old) AS len) o
             ON CONFLICT (service, shard) DO UPDATE SET keys = plugin_kv_usage.keys + EXCLUDED.keys,
                                                        bytes = plugin_kv_usage.bytes + EXCLUDED.bytes",
            params![
                service.to_string(),
                key.to_string(),
                v.to_vec(),
                tx.shard,
                key.len() as i64
            ],
        ),
        None => tx.defer(
            "WITH gone AS (DELETE FROM plugin_kv WHERE service = $1 AND key = $2
                           RETURNING octet_length(value)::BIGINT AS len)
             INSERT INTO plugin_kv_usage (service, shard, keys, bytes)
             SELECT $1, $3, -1, -($4 + len) FROM gone
             ON CONFLICT (service, shard) DO UPDATE SET keys = plugin_kv_usage.keys + EXCLUDED.keys,
                                                        bytes = plugin_kv_usage.bytes + EXCLUDED.bytes",
            params![
                service.to_string(),
                key.to_string(),
                tx.shard,
                key.len() as i64
            ],
        ),
    }
    Ok(())
}

pub(super) fn kv_usage(tx: &PgTx, service: &str) -> anyhow::Result<(u64, u64)> {
    tx.read_one(Ahead::KvUsage(service), |v| match v {
        Val::Usage(keys, bytes) => Some(((*keys).max(0) as u64, (*bytes).max(0) as u64)),
        _ => None,
    })
}

/// Keeps the transaction's cache true to a write of `key`: its value, its
/// size and, when the size before is known, the add-on's usage (which the
/// statement itself changes in the database the same way).
fn counted(tx: &PgTx, service: &str, key: &str, value: Option<&[u8]>) {
    let mut cache = tx.cache.borrow_mut();
    let (k, s) = (service.to_string(), key.to_string());
    let before: Option<Option<i64>> = match cache.get(&Key::Kv(k.clone(), s.clone())) {
        Some(Val::Bytes(b)) => Some(b.as_ref().map(|b| b.len() as i64)),
        _ => match cache.get(&Key::KvSize(k.clone(), s.clone())) {
            Some(Val::Size(n)) => Some(*n),
            _ => None,
        },
    };
    let usage = match cache.get(&Key::KvUsage(k.clone())) {
        Some(Val::Usage(keys, bytes)) => Some((*keys, *bytes)),
        _ => None,
    };
    match (before, usage) {
        (Some(before), Some((keys, bytes))) => {
            let key_len = key.len() as i64;
            let (dk, db) = match (before, value) {
                (None, Some(v)) => (1, key_len + v.len() as i64),
                (Some(old), Some(v)) => (0, v.len() as i64 - old),
                (Some(old), None) => (-1, -(key_len + old)),
                (None, None) => (0, 0),
            };
            cache.set(Key::KvUsage(k.clone()), Val::Usage(keys + dk, bytes + db));
        }
        _ => cache.forget(|x| *x == Key::KvUsage(k.clone())),
    }
    cache.set(
        Key::KvSize(k.clone(), s.clone()),
        Val::Size(value.map(|v| v.len() as i64)),
    );
    cache.set(Key::Kv(k, s), Val::Bytes(value.map(<[u8]>::to_vec)));
}

pub(super) fn kv_keys(
    tx: &PgTx,
    service: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    tx.lock(locks::named(Space::KvListing, &[service]), false);
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    let keys: Vec<String> = tx.all(
        "SELECT key FROM plugin_kv WHERE service = $1 AND key >= $2 AND key > $3 ORDER BY key LIMIT $4",
        params![
            service.to_string(),
            start.to_string(),
            after.unwrap_or("").to_string(),
            limit as i64
        ],
        |r| Ok(r.try_get(0)?),
    )?;
    Ok(keys
        .into_iter()
        .take_while(|k| k.starts_with(prefix))
        .collect())
}

pub(super) fn kv_count(tx: &PgTx, service: &str, prefix: &str) -> anyhow::Result<u64> {
    tx.lock(locks::named(Space::KvListing, &[service]), false);
    let rows = match crate::store::prefix_end(prefix) {
        Some(end) => tx.query(
            "SELECT COUNT(*) FROM plugin_kv WHERE service = $1 AND key >= $2 AND key < $3",
            params![service.to_string(), prefix.to_string(), end],
        )?,
        None => tx.query(
            "SELECT COUNT(*) FROM plugin_kv WHERE service = $1",
            params![service.to_string()],
        )?,
    };
    Ok(rows[0].try_get::<_, i64>(0)? as u64)
}
