//! Apps, their releases and the audit trail.

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension};

use crate::util::unix_now;

use crate::store::{App, AuditEntry, Release};

pub fn insert_app(tx: &Connection, name: &str, region: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO apps (name, region, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![name, region, unix_now()])?;
    Ok(tx.last_insert_rowid())
}

pub fn app_by_name(c: &Connection, name: &str) -> rusqlite::Result<Option<App>> {
    c.prepare_cached("SELECT id, name, region, created_at FROM apps WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(App {
                id: r.get(0)?,
                name: r.get(1)?,
                region: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()
}

pub fn list_apps(c: &Connection) -> rusqlite::Result<Vec<App>> {
    let mut st = c.prepare_cached("SELECT id, name, region, created_at FROM apps ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok(App {
            id: r.get(0)?,
            name: r.get(1)?,
            region: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Deletes an app and everything hanging off it.
pub fn delete_app(tx: &Connection, app_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM config_vars WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached("DELETE FROM releases WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached(
        "DELETE FROM var_takeovers WHERE attachment_id IN (SELECT id FROM attachments WHERE app_id = ?1
             OR resource_id IN (SELECT id FROM resources WHERE app_id = ?1))",
    )?
    .execute([app_id])?;
    tx.prepare_cached("DELETE FROM attachments WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached(
        "DELETE FROM attachments WHERE resource_id IN (SELECT id FROM resources WHERE app_id = ?1)",
    )?
    .execute([app_id])?;
    // The broker's names for the app's resources go with them.
    tx.prepare_cached(
        "DELETE FROM osb_bindings WHERE instance_id IN (SELECT instance_id FROM osb_instances
             WHERE resource_uuid IN (SELECT uuid FROM resources WHERE app_id = ?1))",
    )?
    .execute([app_id])?;
    tx.prepare_cached(
        "DELETE FROM osb_instances WHERE resource_uuid IN (SELECT uuid FROM resources WHERE app_id = ?1)",
    )?
    .execute([app_id])?;
    tx.prepare_cached("DELETE FROM resources WHERE app_id = ?1")?
        .execute([app_id])?;
    tx.prepare_cached("DELETE FROM apps WHERE id = ?1")?
        .execute([app_id])?;
    Ok(())
}

/// Appends the app's next release; numbers are gap-free because this runs
/// inside the writer's transaction.
pub fn insert_release(
    tx: &Connection,
    app_id: i64,
    description: &str,
    actor: &str,
) -> rusqlite::Result<i64> {
    // Two statements rather than one `INSERT … SELECT … RETURNING`, which
    // SQLite runs through two temporary b-trees (see `INSERT_RESOURCE`).
    let version: i64 = tx
        .prepare_cached(super::NEXT_RELEASE)?
        .query_row([app_id], |r| r.get(0))?;
    tx.prepare_cached(super::INSERT_RELEASE)?.execute(params![
        app_id,
        version,
        description,
        actor,
        unix_now()
    ])?;
    Ok(version)
}

pub fn releases(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<Release>> {
    let mut st = c.prepare_cached(
        "SELECT version, description, actor, created_at FROM releases WHERE app_id = ?1 ORDER BY version DESC",
    )?;
    let rows = st.query_map([app_id], |r| {
        Ok(Release {
            version: r.get(0)?,
            description: r.get(1)?,
            actor: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

pub fn audit(
    tx: &Connection,
    actor: &str,
    action: &str,
    app: Option<&str>,
    addon: Option<&str>,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, action, app, addon, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![unix_now(), actor, action, app, addon, detail])?;
    if crate::store::audit_prune_due(tx.last_insert_rowid()) {
        prune_audit(tx, actor, crate::store::audit_keep())?;
    }
    Ok(())
}

/// Deletes all but the newest `keep` entries of `actor` (0: none).
pub fn prune_audit(tx: &Connection, actor: &str, keep: u64) -> rusqlite::Result<u64> {
    if keep == 0 {
        return Ok(0);
    }
    let gone = tx
        .prepare_cached(
            "DELETE FROM audit WHERE actor = ?1 AND id <=
               (SELECT id FROM audit WHERE actor = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![actor, keep as i64])?;
    Ok(gone as u64)
}

pub fn audit_entries(
    c: &Connection,
    app: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut st = c.prepare_cached(
        "SELECT at, actor, action, app, addon, detail FROM audit
         WHERE ?1 IS NULL OR app = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![app, limit], |r| {
        Ok(AuditEntry {
            at: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            app: r.get(3)?,
            addon: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    rows.collect()
}
