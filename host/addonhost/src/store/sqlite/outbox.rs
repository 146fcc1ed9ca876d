//! Provider mode's outbox: the changes owed to calling platforms, one row
//! per resource, claimed by the server delivering it. SQLite has one
//! writer, so a read-merge-write in one transaction needs no lock.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::OutboxEntry;

const COLUMNS: &str = "uuid, service, changes, provisioned, version, attempts, due_at, \
     claimed_by, claimed_until, failed_at, last_error, created_at";

fn row(r: &Row) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        uuid: r.get(0)?,
        service: r.get(1)?,
        changes: r.get(2)?,
        provisioned: r.get(3)?,
        version: r.get(4)?,
        attempts: r.get(5)?,
        due_at: r.get(6)?,
        claimed_by: r.get(7)?,
        claimed_until: r.get(8)?,
        failed_at: r.get(9)?,
        last_error: r.get(10)?,
        created_at: r.get(11)?,
    })
}

pub fn entry(c: &Connection, uuid: &str) -> rusqlite::Result<Option<OutboxEntry>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM partner_outbox WHERE uuid = ?1"
    ))?
    .query_row(params![uuid], row)
    .optional()
}

pub fn put(c: &Connection, e: &OutboxEntry) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO partner_outbox (uuid, service, changes, provisioned, version, attempts, due_at,
                                     failed_at, last_error, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (uuid) DO UPDATE SET service = excluded.service, changes = excluded.changes,
             provisioned = excluded.provisioned, version = excluded.version,
             attempts = excluded.attempts, due_at = excluded.due_at,
             failed_at = excluded.failed_at, last_error = excluded.last_error",
    )?
    .execute(params![
        e.uuid,
        e.service,
        e.changes,
        e.provisioned,
        e.version,
        e.attempts,
        e.due_at,
        e.failed_at,
        e.last_error,
        e.created_at
    ])?;
    Ok(())
}

pub fn delete(c: &Connection, uuid: &str) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM partner_outbox WHERE uuid = ?1")?
        .execute(params![uuid])?;
    Ok(())
}

pub fn entries(c: &Connection) -> rusqlite::Result<Vec<OutboxEntry>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM partner_outbox ORDER BY uuid"
    ))?
    .query_map([], row)?
    .collect()
}

pub fn claim(
    c: &Connection,
    owner: &str,
    now: i64,
    until: i64,
    skip: &[String],
) -> rusqlite::Result<Option<OutboxEntry>> {
    let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
    c.prepare_cached(&format!(
        "UPDATE partner_outbox SET claimed_by = ?1, claimed_until = ?2
         WHERE uuid = (SELECT uuid FROM partner_outbox
                       WHERE failed_at IS NULL AND due_at <= ?3
                         AND (claimed_until IS NULL OR claimed_until <= ?3)
                         AND service NOT IN (SELECT value FROM json_each(?4))
                       ORDER BY due_at, uuid LIMIT 1)
         RETURNING {COLUMNS}"
    ))?
    .query_row(params![owner, until, now, skip], row)
    .optional()
}

pub fn release(c: &Connection, uuid: &str, owner: &str) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE partner_outbox SET claimed_by = NULL, claimed_until = NULL
         WHERE uuid = ?1 AND claimed_by = ?2",
    )?
    .execute(params![uuid, owner])?;
    Ok(())
}
