//! Sessions bounded per owner and the single-use tokens spent, on
//! PostgreSQL (the same statements as SQLite's `shared.rs`).

use super::session::{params, PgTx};
use crate::store::NewSession;

/// Makes room for one more session of `s.kind` under its bound `s.max`:
/// the kind's oldest go (every session, owned or not, counts).
pub(super) fn bound_kind(tx: &PgTx, s: &NewSession) -> anyhow::Result<()> {
    let held: i64 = tx.query(
        "SELECT COUNT(*) FROM sessions WHERE kind = $1",
        params![s.kind.to_string()],
    )?[0]
        .try_get(0)?;
    let over = held + 1 - s.max as i64;
    if over > 0 {
        tx.execute(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE kind = $1 ORDER BY expires_at, seq LIMIT $2)",
            params![s.kind.to_string(), over],
        )?;
    }
    Ok(())
}

pub(super) fn insert_owned_session(
    tx: &PgTx,
    s: &NewSession,
    owner: &str,
    max_per_owner: u64,
) -> anyhow::Result<()> {
    tx.execute(
        "DELETE FROM sessions WHERE kind = $1 AND expires_at <= $2",
        params![s.kind.to_string(), s.now],
    )?;
    let theirs: i64 = tx.query(
        "SELECT COUNT(*) FROM sessions WHERE kind = $1 AND owner = $2",
        params![s.kind.to_string(), owner.to_string()],
    )?[0]
        .try_get(0)?;
    let over = theirs + 1 - max_per_owner as i64;
    if over > 0 {
        // The owner's own oldest go: signing in again and again spends
        // nobody else's sessions.
        tx.execute(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE kind = $1 AND owner = $2
                ORDER BY expires_at, seq LIMIT $3)",
            params![s.kind.to_string(), owner.to_string(), over],
        )?;
    }
    bound_kind(tx, s)?;
    tx.execute(
        "INSERT INTO sessions (id_hash, kind, data, expires_at, owner) VALUES ($1, $2, $3, $4, $5)",
        params![
            s.id_hash.to_string(),
            s.kind.to_string(),
            s.data.to_string(),
            s.expires_at,
            owner.to_string()
        ],
    )?;
    Ok(())
}

pub(super) fn spend_once(tx: &PgTx, key: &str, expires_at: i64, now: i64) -> anyhow::Result<bool> {
    tx.execute(
        "DELETE FROM spent_tokens WHERE expires_at <= $1",
        params![now],
    )?;
    // Unique on the key: of two servers spending it at once, one inserts.
    Ok(tx.execute(
        "INSERT INTO spent_tokens (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        params![key.to_string(), expires_at],
    )? == 1)
}

pub(super) fn spent(tx: &PgTx, key: &str, now: i64) -> anyhow::Result<bool> {
    Ok(tx
        .one(
            "SELECT 1 FROM spent_tokens WHERE key = $1 AND expires_at > $2",
            params![key.to_string(), now],
            |_| Ok(()),
        )?
        .is_some())
}
