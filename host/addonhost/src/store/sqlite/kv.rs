//! Each add-on's private key-value store, its usage, and the folders each
//! add-on id is bound to.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension};

use crate::util::unix_now;

pub fn kv_get(c: &Connection, service: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT value FROM plugin_kv WHERE service = ?1 AND key = ?2")?
        .query_row(params![service, key], |r| r.get(0))
        .optional()
}

/// Stores (`Some`) or deletes (`None`) one key, keeping the service's usage
/// counts (see [`kv_usage`]) in step.
pub fn kv_put(
    tx: &Connection,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> rusqlite::Result<()> {
    let old: Option<i64> = tx
        .prepare_cached("SELECT length(value) FROM plugin_kv WHERE service = ?1 AND key = ?2")?
        .query_row(params![service, key], |r| r.get(0))
        .optional()?;
    let (keys, bytes) = match value {
        Some(v) => {
            tx.prepare_cached(
                "INSERT INTO plugin_kv (service, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (service, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![service, key, v])?;
            match old {
                Some(len) => (0, v.len() as i64 - len),
                None => (1, (key.len() + v.len()) as i64),
            }
        }
        None => {
            tx.prepare_cached("DELETE FROM plugin_kv WHERE service = ?1 AND key = ?2")?
                .execute(params![service, key])?;
            match old {
                Some(len) => (-1, -(key.len() as i64 + len)),
                None => (0, 0),
            }
        }
    };
    if keys != 0 || bytes != 0 {
        tx.prepare_cached(
            "INSERT INTO plugin_kv_usage (service, keys, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (service) DO UPDATE SET keys = keys + excluded.keys, bytes = bytes + excluded.bytes",
        )?
        .execute(params![service, keys, bytes])?;
    }
    Ok(())
}

/// The folders add-on `service` is bound to in this store.
pub fn plugin_dirs(c: &Connection, service: &str) -> rusqlite::Result<Vec<String>> {
    let mut st =
        c.prepare_cached("SELECT dir FROM plugin_dirs WHERE service = ?1 ORDER BY trusted_at")?;
    let rows = st.query_map([service], |r| r.get(0))?;
    rows.collect()
}

/// Binds add-on `service` to folder `dir` (beside any other).
pub fn trust_plugin_dir(tx: &Connection, service: &str, dir: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO plugin_dirs (service, dir, trusted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (service, dir) DO NOTHING",
    )?
    .execute(params![service, dir, unix_now()])?;
    Ok(())
}

/// A service's stored keys and bytes (keys plus values).
pub fn kv_usage(c: &Connection, service: &str) -> rusqlite::Result<(u64, u64)> {
    let row: Option<(i64, i64)> = c
        .prepare_cached("SELECT keys, bytes FROM plugin_kv_usage WHERE service = ?1")?
        .query_row([service], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (keys, bytes) = row.unwrap_or((0, 0));
    Ok((keys.max(0) as u64, bytes.max(0) as u64))
}

/// Up to `limit` keys of `service` starting with `prefix` that sort after
/// `after` (from the first, when `None`), in order.
pub fn kv_keys(
    c: &Connection,
    service: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    // A range scan instead of LIKE: keys may contain % and _.
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    let mut st = c.prepare_cached(
        "SELECT key FROM plugin_kv WHERE service = ?1 AND key >= ?2 AND key > ?3
         ORDER BY key LIMIT ?4",
    )?;
    // `after` is excluded; without one, nothing sorts before the empty string.
    let rows = st.query_map(
        params![service, start, after.unwrap_or(""), limit as i64],
        |r| r.get::<_, String>(0),
    )?;
    let mut keys = Vec::new();
    for k in rows {
        let k = k?;
        if !k.starts_with(prefix) {
            break;
        }
        keys.push(k);
    }
    // The empty key is never stored (keys are 1 to 1,024 bytes).
    Ok(keys)
}

/// How many keys of `service` start with `prefix`.
pub fn kv_count(c: &Connection, service: &str, prefix: &str) -> rusqlite::Result<u64> {
    let n: i64 = match crate::store::prefix_end(prefix) {
        Some(end) => c
            .prepare_cached(
                "SELECT COUNT(*) FROM plugin_kv WHERE service = ?1 AND key >= ?2 AND key < ?3",
            )?
            .query_row(params![service, prefix, end], |r| r.get(0))?,
        None => c
            .prepare_cached("SELECT COUNT(*) FROM plugin_kv WHERE service = ?1")?
            .query_row([service], |r| r.get(0))?,
    };
    Ok(n as u64)
}
