//! Provider mode's outbox on PostgreSQL: the changes owed to calling
//! platforms, one row per resource. A merge (read, change, write back)
//! holds the resource's outbox lock through its transaction, so two servers
//! merging changes of one resource lose neither; a delivery is claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease, so exactly one server delivers
//! each entry at a time, and a server that died holding one loses it when
//! the lease ends.

use super::locks::{self, Space};
use super::session::{params, PgTx};
use crate::store::OutboxEntry;

const COLUMNS: &str = "uuid, service, changes, provisioned, version, attempts, due_at, \
     claimed_by, claimed_until, failed_at, last_error, created_at";

/// Locks the outbox entry of resource `uuid` (a named row of its own).
fn lock(tx: &PgTx, uuid: &str) {
    tx.lock(
        locks::named(Space::Setting, &["partner-outbox", uuid]),
        false,
    );
}

fn row(r: &tokio_postgres::Row) -> anyhow::Result<OutboxEntry> {
    Ok(OutboxEntry {
        uuid: r.try_get(0)?,
        service: r.try_get(1)?,
        changes: r.try_get(2)?,
        provisioned: r.try_get(3)?,
        version: r.try_get(4)?,
        attempts: r.try_get(5)?,
        due_at: r.try_get(6)?,
        claimed_by: r.try_get(7)?,
        claimed_until: r.try_get(8)?,
        failed_at: r.try_get(9)?,
        last_error: r.try_get(10)?,
        created_at: r.try_get(11)?,
    })
}

pub(super) fn outbox_entry(tx: &PgTx, uuid: &str) -> anyhow::Result<Option<OutboxEntry>> {
    lock(tx, uuid);
    tx.one(
        &format!("SELECT {COLUMNS} FROM partner_outbox WHERE uuid = $1"),
        params![uuid.to_string()],
        row,
    )
}

pub(super) fn put_outbox_entry(tx: &PgTx, e: &OutboxEntry) -> anyhow::Result<()> {
    lock(tx, &e.uuid);
    tx.defer(
        "INSERT INTO partner_outbox (uuid, service, changes, provisioned, version, attempts, due_at,
                                     failed_at, last_error, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (uuid) DO UPDATE SET service = excluded.service, changes = excluded.changes,
             provisioned = excluded.provisioned, version = excluded.version,
             attempts = excluded.attempts, due_at = excluded.due_at,
             failed_at = excluded.failed_at, last_error = excluded.last_error",
        params![
            e.uuid.clone(),
            e.service.clone(),
            e.changes.clone(),
            e.provisioned,
            e.version,
            e.attempts,
            e.due_at,
            e.failed_at,
            e.last_error.clone(),
            e.created_at
        ],
    );
    Ok(())
}

pub(super) fn delete_outbox_entry(tx: &PgTx, uuid: &str) -> anyhow::Result<()> {
    lock(tx, uuid);
    tx.defer(
        "DELETE FROM partner_outbox WHERE uuid = $1",
        params![uuid.to_string()],
    );
    Ok(())
}

pub(super) fn outbox_entries(tx: &PgTx) -> anyhow::Result<Vec<OutboxEntry>> {
    tx.all(
        &format!("SELECT {COLUMNS} FROM partner_outbox ORDER BY uuid"),
        params![],
        row,
    )
}

pub(super) fn claim_outbox_entry(
    tx: &PgTx,
    owner: &str,
    now: i64,
    until: i64,
    skip: &[String],
) -> anyhow::Result<Option<OutboxEntry>> {
    // An entry another server is claiming (or a merge is rewriting) is
    // skipped, not waited for; one claimed and committed meanwhile no
    // longer matches when its row is locked.
    tx.one(
        &format!(
            "UPDATE partner_outbox SET claimed_by = $1, claimed_until = $2
             WHERE uuid = (SELECT uuid FROM partner_outbox
                           WHERE failed_at IS NULL AND due_at <= $3
                             AND (claimed_until IS NULL OR claimed_until <= $3)
                             AND NOT (service = ANY($4))
                           ORDER BY due_at, uuid LIMIT 1
                           FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ),
        params![owner.to_string(), until, now, skip.to_vec()],
        row,
    )
}

pub(super) fn release_outbox_entry(tx: &PgTx, uuid: &str, owner: &str) -> anyhow::Result<()> {
    lock(tx, uuid);
    tx.defer(
        "UPDATE partner_outbox SET claimed_by = NULL, claimed_until = NULL
         WHERE uuid = $1 AND claimed_by = $2",
        params![uuid.to_string(), owner.to_string()],
    );
    Ok(())
}
