//! Add-ons' key-value storage on PostgreSQL, with the usage each write
//! changes kept in the transaction for its commit.

use super::session::{params, PgTx};

pub(super) fn kv_get(tx: &PgTx, service: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    tx.one(
        "SELECT value FROM plugin_kv WHERE service = $1 AND key = $2",
        params![service.to_string(), key.to_string()],
        |r| Ok(r.try_get(0)?),
    )
}

pub(super) fn kv_put(
    tx: &PgTx,
    service: &str,
    key: &str,
    value: Option<&[u8]>,
) -> anyhow::Result<()> {
    let (keys, bytes) = match value {
        Some(v) => {
            // The old length and the write in one statement.
            let rows = tx.query(
                "WITH old AS (SELECT octet_length(value)::BIGINT AS len FROM plugin_kv
                              WHERE service = $1 AND key = $2),
                      put AS (INSERT INTO plugin_kv (service, key, value) VALUES ($1, $2, $3)
                              ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value)
                 SELECT (SELECT len FROM old)",
                params![service.to_string(), key.to_string(), v.to_vec()],
            )?;
            let old: Option<i64> = rows[0].try_get(0)?;
            match old {
                Some(len) => (0i64, v.len() as i64 - len),
                None => (1, (key.len() + v.len()) as i64),
            }
        }
        None => {
            let rows = tx.query(
                "DELETE FROM plugin_kv WHERE service = $1 AND key = $2
                 RETURNING octet_length(value)::BIGINT",
                params![service.to_string(), key.to_string()],
            )?;
            match rows.first() {
                Some(r) => (-1, -(key.len() as i64 + r.try_get::<_, i64>(0)?)),
                None => (0, 0),
            }
        }
    };
    let mut usage = tx.usage.borrow_mut();
    let entry = usage.entry(service.to_string()).or_default();
    entry.0 += keys;
    entry.1 += bytes;
    Ok(())
}

pub(super) fn kv_usage(tx: &PgTx, service: &str) -> anyhow::Result<(u64, u64)> {
    // What is committed, read outside the transaction, plus its own
    // writes: reading the usage rows inside would make every two
    // writers of an add-on conflict. Concurrent calls on other
    // connections may so together pass a quota by what they write at
    // once (each call's writes are bounded).
    let rows = tx.outside(
        "SELECT COALESCE(SUM(keys), 0)::BIGINT, COALESCE(SUM(bytes), 0)::BIGINT
         FROM plugin_kv_usage WHERE service = $1",
        params![service.to_string()],
    )?;
    let (mut keys, mut bytes): (i64, i64) = (rows[0].try_get(0)?, rows[0].try_get(1)?);
    if let Some((k, b)) = tx.usage.borrow().get(service) {
        keys += k;
        bytes += b;
    }
    Ok((keys.max(0) as u64, bytes.max(0) as u64))
}

pub(super) fn kv_keys(
    tx: &PgTx,
    service: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
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
