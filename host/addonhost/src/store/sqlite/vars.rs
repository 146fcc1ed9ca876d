//! Config vars and who owns them.

use std::collections::BTreeMap;

use addonhost_sqlite::rusqlite;
use addonhost_sqlite::rusqlite::{params, Connection, OptionalExtension};

use crate::store::ConfigVar;

pub fn config_vars(c: &Connection, app_id: i64) -> rusqlite::Result<Vec<ConfigVar>> {
    let mut st = c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE app_id = ?1 ORDER BY name",
    )?;
    let rows = st.query_map([app_id], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub fn config_var(c: &Connection, app_id: i64, name: &str) -> rusqlite::Result<Option<ConfigVar>> {
    c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE app_id = ?1 AND name = ?2",
    )?
    .query_row(params![app_id, name], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })
    .optional()
}

pub fn vars_of_attachment(c: &Connection, attachment_id: i64) -> rusqlite::Result<Vec<ConfigVar>> {
    let mut st = c.prepare_cached(
        "SELECT name, value, attachment_id FROM config_vars WHERE attachment_id = ?1 ORDER BY name",
    )?;
    let rows = st.query_map([attachment_id], |r| {
        Ok(ConfigVar {
            name: r.get(0)?,
            value: r.get(1)?,
            attachment_id: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub fn upsert_var(
    tx: &Connection,
    app_id: i64,
    name: &str,
    value: &str,
    owner: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO config_vars (app_id, name, value, attachment_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value, attachment_id = excluded.attachment_id")?.execute(
        params![app_id, name, value, owner],
    )?;
    Ok(())
}

pub fn delete_var(tx: &Connection, app_id: i64, name: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM config_vars WHERE app_id = ?1 AND name = ?2")?
        .execute(params![app_id, name])?;
    Ok(())
}

pub fn delete_vars_of_attachment(tx: &Connection, attachment_id: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM config_vars WHERE attachment_id = ?1")?
        .execute([attachment_id])
}

/// attachment id → (resource name, attachment name), for the app.
pub fn var_owners(
    c: &Connection,
    app_id: i64,
) -> rusqlite::Result<BTreeMap<i64, (String, String)>> {
    let mut st = c.prepare_cached(
        "SELECT t.id, r.name, t.name FROM attachments t JOIN resources r ON r.id = t.resource_id WHERE t.app_id = ?1",
    )?;
    let rows = st.query_map([app_id], |r| {
        Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?)))
    })?;
    rows.collect()
}

/// Records that the user took `name` from attachment `attachment_id`.
pub fn take_over_var(tx: &Connection, attachment_id: i64, name: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO var_takeovers (attachment_id, name) VALUES (?1, ?2)
         ON CONFLICT (attachment_id, name) DO NOTHING",
    )?
    .execute(params![attachment_id, name])?;
    Ok(())
}

/// Whether the user took `name` from attachment `attachment_id`.
pub fn taken_over(c: &Connection, attachment_id: i64, name: &str) -> rusqlite::Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM var_takeovers WHERE attachment_id = ?1 AND name = ?2")?
            .query_row(params![attachment_id, name], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}
