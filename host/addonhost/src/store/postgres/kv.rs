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
    // The size stored before (read ahead, or now), for the usage.
    let before = tx.read_one(Ahead::KvWrite { service, key }, |v| match v {
        Val::Size(n) => Some(*n),
        _ => None,
    })?;
    counted(tx, service, key, before, value);
    match value {
        Some(v) => tx.defer(
            "INSERT INTO plugin_kv (service, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value",
            params![service.to_string(), key.to_string(), v.to_vec()],
        ),
        None if before.is_some() => tx.defer(
            "DELETE FROM plugin_kv WHERE service = $1 AND key = $2",
            params![service.to_string(), key.to_string()],
        ),
        None => {}
    }
    Ok(())
}

pub(super) fn kv_usage(tx: &PgTx, service: &str) -> anyhow::Result<(u64, u64)> {
    tx.read_one(Ahead::KvUsage(service), |v| match v {
        Val::Usage(keys, bytes) => Some(((*keys).max(0) as u64, (*bytes).max(0) as u64)),
        _ => None,
    })
}

/// Counts a write of `key` (stored `before` bytes, now `value`) in the
/// usage the transaction writes with its commit, and keeps its cache true
/// to it: the value, the size, the add-on's usage.
fn counted(tx: &PgTx, service: &str, key: &str, before: Option<i64>, value: Option<&[u8]>) {
    let key_len = key.len() as i64;
    let (dk, db) = match (before, value) {
        (None, Some(v)) => (1, key_len + v.len() as i64),
        (Some(old), Some(v)) => (0, v.len() as i64 - old),
        (Some(old), None) => (-1, -(key_len + old)),
        (None, None) => (0, 0),
    };
    let (k, s) = (service.to_string(), key.to_string());
    {
        let mut usage = tx.usage.borrow_mut();
        let entry = usage.entry(k.clone()).or_default();
        entry.0 += dk;
        entry.1 += db;
    }
    let mut cache = tx.cache.borrow_mut();
    if let Some(Val::Usage(keys, bytes)) = cache.get(&Key::KvUsage(k.clone())) {
        let now = Val::Usage(keys + dk, bytes + db);
        cache.set(Key::KvUsage(k.clone()), now);
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
