//! The service broker's instances and bindings on PostgreSQL.

use super::locks::{self, Space};
use super::rows::{osb_binding_row, OSB_BINDING_COLUMNS};
use super::session::{params, PgTx};
use crate::store::{OsbBinding, OsbInstance};

/// Locks a broker instance's or binding's id (their ids are the broker
/// client's GUIDs: one space serves both).
fn lock(tx: &PgTx, id: &str) {
    tx.lock(locks::named(Space::OsbInstance, &[id]), false);
}

pub(super) fn osb_instance(tx: &PgTx, instance_id: &str) -> anyhow::Result<Option<OsbInstance>> {
    lock(tx, instance_id);
    tx.one(
        "SELECT instance_id, resource_uuid, request, created_at FROM osb_instances WHERE instance_id = $1",
        params![instance_id.to_string()],
        |r| {
            Ok(OsbInstance {
                instance_id: r.try_get(0)?,
                resource_uuid: r.try_get(1)?,
                request: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        },
    )
}

pub(super) fn insert_osb_instance(tx: &PgTx, i: &OsbInstance) -> anyhow::Result<bool> {
    lock(tx, &i.instance_id);
    Ok(tx.execute(
        "INSERT INTO osb_instances (instance_id, resource_uuid, request, created_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (instance_id) DO NOTHING",
        params![
            i.instance_id.clone(),
            i.resource_uuid.clone(),
            i.request.clone(),
            i.created_at
        ],
    )? == 1)
}

pub(super) fn set_osb_instance_request(
    tx: &PgTx,
    instance_id: &str,
    request: &str,
) -> anyhow::Result<()> {
    lock(tx, instance_id);
    tx.defer(
        "UPDATE osb_instances SET request = $2 WHERE instance_id = $1",
        params![instance_id.to_string(), request.to_string()],
    );
    Ok(())
}

pub(super) fn delete_osb_instance(tx: &PgTx, instance_id: &str) -> anyhow::Result<()> {
    lock(tx, instance_id);
    for sql in [
        "DELETE FROM osb_bindings WHERE instance_id = $1",
        "DELETE FROM osb_instances WHERE instance_id = $1",
    ] {
        tx.defer(sql, params![instance_id.to_string()]);
    }
    Ok(())
}

pub(super) fn osb_binding(tx: &PgTx, binding_id: &str) -> anyhow::Result<Option<OsbBinding>> {
    lock(tx, binding_id);
    tx.one(
        &format!("SELECT {OSB_BINDING_COLUMNS} FROM osb_bindings WHERE binding_id = $1"),
        params![binding_id.to_string()],
        osb_binding_row,
    )
}

pub(super) fn osb_bindings_of(tx: &PgTx, instance_id: &str) -> anyhow::Result<Vec<OsbBinding>> {
    lock(tx, instance_id);
    tx.all(
        &format!(
            "SELECT {OSB_BINDING_COLUMNS} FROM osb_bindings WHERE instance_id = $1 ORDER BY created_at, binding_id"
        ),
        params![instance_id.to_string()],
        osb_binding_row,
    )
}

pub(super) fn insert_osb_binding(tx: &PgTx, b: &OsbBinding) -> anyhow::Result<bool> {
    lock(tx, &b.binding_id);
    Ok(tx.execute(
        &format!(
            "INSERT INTO osb_bindings ({OSB_BINDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (binding_id) DO NOTHING"
        ),
        params![
            b.binding_id.clone(),
            b.instance_id.clone(),
            b.request.clone(),
            b.ready,
            b.successor.clone(),
            b.credentials.clone(),
            b.expires_at,
            b.created_at
        ],
    )? == 1)
}

pub(super) fn update_osb_binding(tx: &PgTx, b: &OsbBinding) -> anyhow::Result<()> {
    lock(tx, &b.binding_id);
    tx.defer(
        "UPDATE osb_bindings SET ready = $2, successor = $3, credentials = $4, expires_at = $5,
                                 created_at = $6
         WHERE binding_id = $1",
        params![
            b.binding_id.clone(),
            b.ready,
            b.successor.clone(),
            b.credentials.clone(),
            b.expires_at,
            b.created_at
        ],
    );
    Ok(())
}

pub(super) fn delete_osb_binding(tx: &PgTx, binding_id: &str) -> anyhow::Result<()> {
    lock(tx, binding_id);
    tx.defer(
        "DELETE FROM osb_bindings WHERE binding_id = $1",
        params![binding_id.to_string()],
    );
    Ok(())
}
