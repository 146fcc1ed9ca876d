//! What several servers share through the store: signed-in sessions,
//! settings (the API token), claims on scheduled rotations, the servers
//! themselves and the plugin components the platform accepts. With SQLite
//! there is one server per data dir; the rows are the same so that both
//! backends run one code path.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension};

use crate::store::{NewSession, Resource, ServerRow};

pub fn insert_session(tx: &Connection, s: &NewSession) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE kind = ?1 AND expires_at <= ?2")?
        .execute(params![s.kind, s.now])?;
    let held: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM sessions WHERE kind = ?1")?
        .query_row(params![s.kind], |r| r.get(0))?;
    let over = held + 1 - s.max as i64;
    if over > 0 {
        // The bound holds however fast clients sign in: the oldest go.
        tx.prepare_cached(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE kind = ?1 ORDER BY expires_at, seq LIMIT ?2)",
        )?
        .execute(params![s.kind, over])?;
    }
    tx.prepare_cached(
        "INSERT INTO sessions (id_hash, kind, data, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![s.id_hash, s.kind, s.data, s.expires_at])?;
    Ok(())
}

pub fn insert_owned_session(
    tx: &Connection,
    s: &NewSession,
    owner: &str,
    max_per_owner: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE kind = ?1 AND expires_at <= ?2")?
        .execute(params![s.kind, s.now])?;
    let theirs: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM sessions WHERE kind = ?1 AND owner = ?2")?
        .query_row(params![s.kind, owner], |r| r.get(0))?;
    let over = theirs + 1 - max_per_owner as i64;
    if over > 0 {
        // The owner's own oldest go: signing in again and again spends
        // nobody else's sessions.
        tx.prepare_cached(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE kind = ?1 AND owner = ?2
                ORDER BY expires_at, seq LIMIT ?3)",
        )?
        .execute(params![s.kind, owner, over])?;
    }
    let held: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM sessions WHERE kind = ?1")?
        .query_row(params![s.kind], |r| r.get(0))?;
    let over = held + 1 - s.max as i64;
    if over > 0 {
        tx.prepare_cached(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE kind = ?1 ORDER BY expires_at, seq LIMIT ?2)",
        )?
        .execute(params![s.kind, over])?;
    }
    tx.prepare_cached(
        "INSERT INTO sessions (id_hash, kind, data, expires_at, owner) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![s.id_hash, s.kind, s.data, s.expires_at, owner])?;
    Ok(())
}

pub fn spend_once(tx: &Connection, key: &str, expires_at: i64, now: i64) -> rusqlite::Result<bool> {
    tx.prepare_cached("DELETE FROM spent_tokens WHERE expires_at <= ?1")?
        .execute(params![now])?;
    let n = tx
        .prepare_cached(
            "INSERT INTO spent_tokens (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![key, expires_at])?;
    Ok(n == 1)
}

pub fn spent(c: &Connection, key: &str, now: i64) -> rusqlite::Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM spent_tokens WHERE key = ?1 AND expires_at > ?2")?
            .query_row(params![key, now], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

pub fn session(
    c: &Connection,
    id_hash: &str,
    kind: &str,
    now: i64,
) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(
        "SELECT data FROM sessions WHERE id_hash = ?1 AND kind = ?2 AND expires_at > ?3",
    )?
    .query_row(params![id_hash, kind, now], |r| r.get(0))
    .optional()
}

pub fn delete_session(tx: &Connection, id_hash: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute(params![id_hash])?;
    Ok(())
}

pub fn setting(c: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT value FROM settings WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()
}

pub fn insert_setting(tx: &Connection, name: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, value])?;
    Ok(())
}

pub fn put_setting(tx: &Connection, name: &str, value: Option<&str>) -> rusqlite::Result<()> {
    match value {
        Some(v) => tx
            .prepare_cached(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![name, v])?,
        None => tx
            .prepare_cached("DELETE FROM settings WHERE name = ?1")?
            .execute(params![name])?,
    };
    Ok(())
}

pub fn claim_rotation(
    tx: &Connection,
    seen: &Resource,
    owner: &str,
    until: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE resources SET rotation_claimed_by = ?2, rotation_claimed_until = ?3
             WHERE id = ?1 AND state = 'provisioned'
               AND rotated_at IS ?4 AND rotation_failures = ?5
               AND (rotation_claimed_until IS NULL OR rotation_claimed_until <= ?6)",
        )?
        .execute(params![
            seen.id,
            owner,
            until,
            seen.rotated_at,
            seen.rotation_failures,
            now
        ])?;
    Ok(n == 1)
}

pub fn record_server(tx: &Connection, s: &ServerRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO servers (id, address, started_at, seen_at, plugins) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, seen_at = excluded.seen_at,
                                        plugins = excluded.plugins",
    )?
    .execute(params![s.id, s.address, s.started_at, s.seen_at, s.plugins])?;
    Ok(())
}

pub fn servers(c: &Connection, seen_since: i64) -> rusqlite::Result<Vec<ServerRow>> {
    c.prepare_cached(
        "SELECT id, address, started_at, seen_at, plugins FROM servers
         WHERE seen_at >= ?1 ORDER BY started_at, id",
    )?
    .query_map(params![seen_since], |r| {
        Ok(ServerRow {
            id: r.get(0)?,
            address: r.get(1)?,
            started_at: r.get(2)?,
            seen_at: r.get(3)?,
            plugins: r.get(4)?,
        })
    })?
    .collect()
}

pub fn delete_server(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM servers WHERE id = ?1")?
        .execute(params![id])?;
    Ok(())
}

pub fn accepted_components(c: &Connection, service: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT hash FROM plugin_components WHERE service = ?1 ORDER BY accepted_at, hash",
    )?
    .query_map(params![service], |r| r.get(0))?
    .collect()
}

pub fn accept_component(
    tx: &Connection,
    service: &str,
    hash: &str,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO plugin_components (service, hash, accepted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (service, hash) DO NOTHING",
    )?
    .execute(params![service, hash, now])?;
    Ok(())
}

pub fn retire_components(tx: &Connection, service: &str, keep: &str) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM plugin_components WHERE service = ?1 AND hash <> ?2")?
        .execute(params![service, keep])
}
