//! Rows of PostgreSQL as the store's typed rows.

use tokio_postgres::Row;

use crate::store::{App, ConfigVar, OsbBinding, Resource};

pub(super) fn app_row(r: &Row) -> anyhow::Result<App> {
    Ok(App {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        region: r.try_get(2)?,
        created_at: r.try_get(3)?,
    })
}

pub(super) const RESOURCE_COLUMNS: &str = "r.id, r.uuid, r.name, r.service, r.plan, a.name, r.app_id, r.partner_id, r.state, r.message, r.created_at, r.updated_at, r.rotated_at, r.rotation_error, r.rotation_failures, r.next_rotation_at, r.reserved_by, r.reserved_until, r.request";

pub(super) fn resource_row(r: &Row) -> anyhow::Result<Resource> {
    Ok(Resource {
        id: r.try_get(0)?,
        uuid: r.try_get(1)?,
        name: r.try_get(2)?,
        service: r.try_get(3)?,
        plan: r.try_get(4)?,
        app: r.try_get(5)?,
        app_id: r.try_get(6)?,
        partner_id: r.try_get(7)?,
        state: r.try_get::<_, String>(8)?.parse()?,
        message: r.try_get(9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        rotated_at: r.try_get(12)?,
        rotation_error: r.try_get(13)?,
        rotation_failures: r.try_get(14)?,
        next_rotation_at: r.try_get(15)?,
        reserved_by: r.try_get(16)?,
        reserved_until: r.try_get(17)?,
        request: r.try_get(18)?,
    })
}

pub(super) fn var_row(r: &Row) -> anyhow::Result<ConfigVar> {
    Ok(ConfigVar {
        name: r.try_get(0)?,
        value: r.try_get(1)?,
        attachment_id: r.try_get(2)?,
    })
}

pub(super) const OSB_BINDING_COLUMNS: &str =
    "binding_id, instance_id, request, ready, successor, credentials, expires_at, created_at";

pub(super) fn osb_binding_row(r: &Row) -> anyhow::Result<OsbBinding> {
    Ok(OsbBinding {
        binding_id: r.try_get(0)?,
        instance_id: r.try_get(1)?,
        request: r.try_get(2)?,
        ready: r.try_get(3)?,
        successor: r.try_get(4)?,
        credentials: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}
