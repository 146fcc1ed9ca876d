//! Resources (provisioned add-ons) and their attachments to apps.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension};

use crate::util::unix_now;

use crate::store::{Attachment, NewResource, Resource};

const RESOURCE_COLUMNS: &str = "r.id, r.uuid, r.name, r.service, r.plan, a.name, r.app_id, r.partner_id, r.state, r.message, r.created_at, r.updated_at, r.rotated_at, r.rotation_error, r.rotation_failures, r.next_rotation_at, r.reserved_by, r.reserved_until, r.request";

fn resource_row(r: &rusqlite::Row) -> rusqlite::Result<Resource> {
    Ok(Resource {
        id: r.get(0)?,
        uuid: r.get(1)?,
        name: r.get(2)?,
        service: r.get(3)?,
        plan: r.get(4)?,
        app: r.get(5)?,
        app_id: r.get(6)?,
        partner_id: r.get(7)?,
        state: r.get::<_, String>(8)?.parse().map_err(|e: anyhow::Error| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, e.into())
        })?,
        message: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        rotated_at: r.get(12)?,
        rotation_error: r.get(13)?,
        rotation_failures: r.get(14)?,
        next_rotation_at: r.get(15)?,
        reserved_by: r.get(16)?,
        reserved_until: r.get(17)?,
        request: r.get(18)?,
    })
}

/// Provisioned resources of one service (for scheduled rotation).
pub fn provisioned_of_service(c: &Connection, service: &str) -> rusqlite::Result<Vec<Resource>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
         WHERE r.service = ?1 AND r.state = 'provisioned' ORDER BY r.id"
    ))?;
    let rows = st.query_map([service], resource_row)?;
    rows.collect()
}

/// Records a successful rotation.
pub fn rotation_succeeded(tx: &Connection, id: i64, at: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE resources SET rotated_at = ?2, rotation_error = NULL, rotation_failures = 0, next_rotation_at = NULL, rotation_claimed_until = NULL WHERE id = ?1")?.execute(
        params![id, at],
    )?;
    Ok(())
}

/// Records a failed scheduled rotation and when to retry it.
pub fn rotation_failed(
    tx: &Connection,
    id: i64,
    error: &str,
    retry_at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE resources SET rotation_error = ?2, rotation_failures = rotation_failures + 1, next_rotation_at = ?3, rotation_claimed_until = NULL WHERE id = ?1")?.execute(
        params![id, error, retry_at],
    )?;
    Ok(())
}

fn resource_where(
    c: &Connection,
    clause: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Option<Resource>> {
    c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id WHERE {clause}"
    ))?
    .query_row(p, resource_row)
    .optional()
}

pub fn resource_by_uuid(c: &Connection, uuid: &str) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.uuid = ?1", [uuid])
}

pub fn resource_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.name = ?1", [name])
}

pub fn resource_by_id(c: &Connection, id: i64) -> rusqlite::Result<Option<Resource>> {
    resource_where(c, "r.id = ?1", [id])
}

pub fn resource_by_partner_id(
    c: &Connection,
    service: &str,
    partner_id: &str,
) -> rusqlite::Result<Option<Resource>> {
    resource_where(
        c,
        "r.service = ?1 AND r.partner_id = ?2",
        [service, partner_id],
    )
}

/// Resources that are not deprovisioned, of one app or of all.
pub fn list_resources(c: &Connection, app_id: Option<i64>) -> rusqlite::Result<Vec<Resource>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
         WHERE r.state != 'deprovisioned' AND (?1 IS NULL OR r.app_id = ?1
               OR r.id IN (SELECT resource_id FROM attachments WHERE app_id = ?1))
         ORDER BY a.name, r.created_at, r.name"
    ))?;
    let rows = st.query_map([app_id], resource_row)?;
    rows.collect()
}

pub fn insert_resource(tx: &Connection, r: &NewResource) -> rusqlite::Result<i64> {
    let now = unix_now();
    tx.prepare_cached(super::INSERT_RESOURCE)?.execute(params![
        r.uuid,
        r.name,
        r.service,
        r.plan,
        r.app_id,
        now,
        r.reserved_by,
        r.reserved_until,
        r.request
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Makes `owner` the holder of the reservation of resource `id` until
/// `until`, if it is a reservation (provisioning, not answered) whose
/// holder's lease ended at `now` or before; whether it did.
pub fn claim_reservation(
    tx: &Connection,
    id: i64,
    owner: &str,
    until: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE resources SET reserved_by = ?2, reserved_until = ?3
             WHERE id = ?1 AND state = 'provisioning' AND partner_id IS NULL
               AND (reserved_until IS NULL OR reserved_until <= ?4)",
        )?
        .execute(params![id, owner, until, now])?;
    Ok(n == 1)
}

pub fn update_resource(
    tx: &Connection,
    id: i64,
    partner_id: Option<&str>,
    state: &str,
    plan: &str,
    message: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(super::UPDATE_RESOURCE)?.execute(params![
        id,
        partner_id,
        state,
        plan,
        message,
        unix_now()
    ])?;
    Ok(())
}

pub fn delete_resource(tx: &Connection, id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM var_takeovers WHERE attachment_id IN (SELECT id FROM attachments WHERE resource_id = ?1)",
    )?
    .execute([id])?;
    tx.prepare_cached("DELETE FROM attachments WHERE resource_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM resources WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub fn insert_attachment(
    tx: &Connection,
    resource_id: i64,
    app_id: i64,
    name: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO attachments (resource_id, app_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![resource_id, app_id, name, unix_now()])?;
    Ok(tx.last_insert_rowid())
}

pub fn delete_attachment(tx: &Connection, id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM var_takeovers WHERE attachment_id = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM attachments WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

fn attachment_row(r: &rusqlite::Row) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        id: r.get(0)?,
        resource_id: r.get(1)?,
        app: r.get(2)?,
        app_id: r.get(3)?,
        name: r.get(4)?,
    })
}

pub fn attachments_of_resource(
    c: &Connection,
    resource_id: i64,
) -> rusqlite::Result<Vec<Attachment>> {
    let mut st = c.prepare_cached(
        "SELECT t.id, t.resource_id, a.name, t.app_id, t.name FROM attachments t JOIN apps a ON a.id = t.app_id
         WHERE t.resource_id = ?1 ORDER BY t.id",
    )?;
    let rows = st.query_map([resource_id], attachment_row)?;
    rows.collect()
}

pub fn attachment_by_name(
    c: &Connection,
    app_id: i64,
    name: &str,
) -> rusqlite::Result<Option<Attachment>> {
    c.prepare_cached("SELECT t.id, t.resource_id, a.name, t.app_id, t.name FROM attachments t JOIN apps a ON a.id = t.app_id
         WHERE t.app_id = ?1 AND t.name = ?2")?.query_row(
        params![app_id, name],
        attachment_row,
    )
    .optional()
}
