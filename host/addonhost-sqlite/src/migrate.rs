//! Schema migrations, and the small statement helpers the engine shares.

use super::*;

/// One statement without parameters, kept prepared (these run several
/// times per write).
pub(crate) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// `BEGIN IMMEDIATE`, retried while another process holds the write lock
/// (on top of the connection's busy timeout).
pub(crate) fn begin_immediate(conn: &Connection) -> anyhow::Result<()> {
    let mut attempt = 0u64;
    loop {
        match run(conn, "BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && attempt < 50 =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5 * attempt));
            }
            other => return other.context("starting a write transaction"),
        }
    }
}

/// Brings the schema up to date. Its errors say which of the three it is:
/// a file that is no addonhost database, a store from a newer addonhost, or
/// a migration refused (the store then stays at the last version reached).
pub(crate) fn migrate(
    conn: &mut Connection,
    data_dir: &Path,
    file: &str,
    migrations: Migrations,
) -> anyhow::Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| corrupt(data_dir, file, &e))?;
    let known = migrations.len() as i64;
    if current > known {
        bail!(
            "data dir {}: {file} has schema version {current}, written by a newer addonhost (this one knows up to {known}); run that addonhost, or point --data at another directory",
            data_dir.display()
        );
    }
    if current == known {
        return Ok(());
    }
    // A migration may rebuild a table others refer to, which foreign keys
    // forbid mid-way; they are off while it runs (the setting has no effect
    // inside a transaction) and checked as a whole before it commits.
    let migrated = conn
        .pragma_update(None, "foreign_keys", "OFF")
        .context("turning foreign keys off to migrate")
        .and_then(|()| run_migrations(conn, migrations, current as usize));
    // The migration's own error, if any, is the one worth reporting.
    let restored = conn
        .pragma_update(None, "foreign_keys", "ON")
        .context("turning foreign keys back on after migrating");
    migrated.and(restored).map_err(|e| {
        let reached: Option<i64> = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ok();
        anyhow::anyhow!(
            "data dir {}: cannot upgrade {file} to schema version {known}: {e:#}; it is left at version {}",
            data_dir.display(),
            reached.map_or("(unknown)".to_string(), |v| v.to_string())
        )
    })
}

pub(crate) fn run_migrations(
    conn: &mut Connection,
    migrations: Migrations,
    from: usize,
) -> anyhow::Result<()> {
    for (i, sql) in migrations.iter().enumerate().skip(from) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = dangling {
            bail!(
                "migration {} would leave a row of {table} referring to nothing",
                i + 1
            );
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
