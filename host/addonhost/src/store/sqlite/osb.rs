//! Open Service Broker instances and bindings: the broker's ids for the
//! platform's resources, and the credentials a binding rotation replaced.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::{OsbBinding, OsbInstance};

const BINDING_COLUMNS: &str =
    "binding_id, instance_id, request, ready, successor, credentials, expires_at, created_at";

fn binding_row(r: &Row) -> rusqlite::Result<OsbBinding> {
    Ok(OsbBinding {
        binding_id: r.get(0)?,
        instance_id: r.get(1)?,
        request: r.get(2)?,
        ready: r.get(3)?,
        successor: r.get(4)?,
        credentials: r.get(5)?,
        expires_at: r.get(6)?,
        created_at: r.get(7)?,
    })
}

pub fn instance(c: &Connection, id: &str) -> rusqlite::Result<Option<OsbInstance>> {
    c.prepare_cached(
        "SELECT instance_id, resource_uuid, request, created_at FROM osb_instances WHERE instance_id = ?1",
    )?
    .query_row(params![id], |r| {
        Ok(OsbInstance {
            instance_id: r.get(0)?,
            resource_uuid: r.get(1)?,
            request: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
    .optional()
}

pub fn insert_instance(tx: &Connection, i: &OsbInstance) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO osb_instances (instance_id, resource_uuid, request, created_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (instance_id) DO NOTHING",
        )?
        .execute(params![
            i.instance_id,
            i.resource_uuid,
            i.request,
            i.created_at
        ])?;
    Ok(n == 1)
}

pub fn set_instance_request(tx: &Connection, id: &str, request: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE osb_instances SET request = ?2 WHERE instance_id = ?1")?
        .execute(params![id, request])?;
    Ok(())
}

pub fn delete_instance(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM osb_bindings WHERE instance_id = ?1")?
        .execute(params![id])?;
    tx.prepare_cached("DELETE FROM osb_instances WHERE instance_id = ?1")?
        .execute(params![id])?;
    Ok(())
}

pub fn binding(c: &Connection, id: &str) -> rusqlite::Result<Option<OsbBinding>> {
    c.prepare_cached(&format!(
        "SELECT {BINDING_COLUMNS} FROM osb_bindings WHERE binding_id = ?1"
    ))?
    .query_row(params![id], binding_row)
    .optional()
}

pub fn bindings_of(c: &Connection, instance_id: &str) -> rusqlite::Result<Vec<OsbBinding>> {
    c.prepare_cached(&format!(
        "SELECT {BINDING_COLUMNS} FROM osb_bindings WHERE instance_id = ?1 ORDER BY created_at, binding_id"
    ))?
    .query_map(params![instance_id], binding_row)?
    .collect()
}

pub fn insert_binding(tx: &Connection, b: &OsbBinding) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(&format!(
            "INSERT INTO osb_bindings ({BINDING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (binding_id) DO NOTHING"
        ))?
        .execute(params![
            b.binding_id,
            b.instance_id,
            b.request,
            b.ready,
            b.successor,
            b.credentials,
            b.expires_at,
            b.created_at
        ])?;
    Ok(n == 1)
}

pub fn update_binding(tx: &Connection, b: &OsbBinding) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE osb_bindings SET ready = ?2, successor = ?3, credentials = ?4, expires_at = ?5,
                                 created_at = ?6
         WHERE binding_id = ?1",
    )?
    .execute(params![
        b.binding_id,
        b.ready,
        b.successor,
        b.credentials,
        b.expires_at,
        b.created_at
    ])?;
    Ok(())
}

pub fn delete_binding(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM osb_bindings WHERE binding_id = ?1")?
        .execute(params![id])?;
    Ok(())
}
