//! The PostgreSQL schema, as numbered migrations (the same tables, keys and
//! checks as the SQLite one). `schema_migrations` records how many have run;
//! a transaction-scoped advisory lock serializes servers migrating at once.
//!
//! The upgrade rule (docs/cluster.md): a migration only adds (tables,
//! nullable columns, indexes) so that servers one version older keep
//! running beside it, and removes only what no server still running
//! reads, a version later. A version that cannot run beside older servers
//! raises [`RUNS_BESIDE`]: it refuses to migrate while such servers are
//! alive, and says to stop them first.

use anyhow::bail;

use super::session::{params, PgTx};
use crate::util::unix_now;

/// Key of the advisory lock held while migrating.
pub const MIGRATION_LOCK: i64 = 0x6164_646f_6e68_7374; // "addonhst"

/// The oldest schema whose servers may run beside this version's. Version
/// 4 moved writes from `SERIALIZABLE` to `READ COMMITTED` with explicit
/// locks: a server of an older version takes none of them, so the two
/// cannot share a database.
pub const RUNS_BESIDE: i32 = 4;

/// How recently a server must have recorded itself to count as running
/// (it does every 5 s).
const ALIVE_SECONDS: i64 = 15;

/// The schema version this build writes.
pub fn version() -> i32 {
    MIGRATIONS.len() as i32
}

/// Brings the schema up to date, one server at a time; the migrations it
/// applied (none when another server did).
pub fn migrate(tx: &PgTx) -> anyhow::Result<Vec<i32>> {
    tx.query("SELECT pg_advisory_xact_lock($1)", params![MIGRATION_LOCK])?;
    tx.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)")?;
    let rows = tx.query("SELECT version FROM schema_migrations", vec![])?;
    let current: i32 = match rows.first() {
        Some(r) => r.get(0),
        None => {
            tx.batch("INSERT INTO schema_migrations (version) VALUES (0)")?;
            0
        }
    };
    let known = version();
    if current > known {
        bail!(
            "the database's schema is version {current}, written by a newer addonhost; this one knows \
             versions up to {known}. Run the newer addonhost here (servers of an older version refuse \
             to start once the database has moved on; see docs/cluster.md, Upgrading)"
        );
    }
    if current == known {
        return Ok(Vec::new());
    }
    if current > 0 && current < RUNS_BESIDE {
        let alive = tx.query(
            "SELECT id, address FROM servers WHERE seen_at >= $1 ORDER BY id",
            params![unix_now() - ALIVE_SECONDS],
        )?;
        if !alive.is_empty() {
            let names: Vec<String> = alive
                .iter()
                .map(|r| format!("{} at {}", r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect();
            bail!(
                "the database's schema is version {current} and this addonhost brings it to {known}, \
                 which cannot run beside servers of version {current}: stop every server of the older \
                 version first (running now: {}), then start this one (see docs/cluster.md, Upgrading)",
                names.join(", ")
            );
        }
    }
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch(sql)
            .map_err(|e| e.context(format!("applying PostgreSQL migration {}", i + 1)))?;
        applied.push(i as i32 + 1);
    }
    tx.execute("UPDATE schema_migrations SET version = $1", params![known])?;
    Ok(applied)
}

pub const MIGRATIONS: &[&str] = &[
    // 1: the platform's tables.
    r#"
    CREATE TABLE apps (
        id          BIGSERIAL PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        region      TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );

    CREATE TABLE resources (
        id          BIGSERIAL PRIMARY KEY,
        uuid        TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL UNIQUE,
        service     TEXT NOT NULL,
        plan        TEXT NOT NULL,
        app_id      BIGINT NOT NULL REFERENCES apps(id),
        partner_id  TEXT,
        state       TEXT NOT NULL CHECK (state IN
                      ('provisioning','provisioned','deprovisioning','deprovisioned','failed')),
        message     TEXT,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        rotated_at  BIGINT,
        rotation_error TEXT,
        rotation_failures BIGINT NOT NULL DEFAULT 0,
        next_rotation_at BIGINT,
        reserved_by TEXT,
        reserved_until BIGINT,
        request     TEXT,
        rotation_claimed_by TEXT,
        rotation_claimed_until BIGINT
    );
    CREATE UNIQUE INDEX resources_partner ON resources(service, partner_id)
        WHERE partner_id IS NOT NULL;
    CREATE INDEX resources_app ON resources(app_id);

    CREATE TABLE attachments (
        id          BIGSERIAL PRIMARY KEY,
        resource_id BIGINT NOT NULL REFERENCES resources(id),
        app_id      BIGINT NOT NULL REFERENCES apps(id),
        name        TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        UNIQUE (app_id, name)
    );
    CREATE INDEX attachments_resource ON attachments(resource_id);

    CREATE TABLE config_vars (
        app_id        BIGINT NOT NULL REFERENCES apps(id),
        name          TEXT NOT NULL,
        value         TEXT NOT NULL,
        attachment_id BIGINT REFERENCES attachments(id),
        PRIMARY KEY (app_id, name)
    );
    CREATE INDEX config_vars_attachment ON config_vars(attachment_id);

    CREATE TABLE releases (
        app_id      BIGINT NOT NULL REFERENCES apps(id),
        version     BIGINT NOT NULL,
        description TEXT NOT NULL,
        actor       TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        PRIMARY KEY (app_id, version)
    );

    CREATE TABLE audit (
        id          BIGSERIAL PRIMARY KEY,
        at          BIGINT NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        app         TEXT,
        addon       TEXT,
        detail      TEXT NOT NULL
    );
    CREATE INDEX audit_app ON audit(app, id);

    -- Keys sort as bytes (as in SQLite), whatever the database's collation:
    -- listings and prefix ranges depend on it.
    CREATE TABLE plugin_kv (
        service     TEXT NOT NULL,
        key         TEXT COLLATE "C" NOT NULL,
        value       BYTEA NOT NULL,
        PRIMARY KEY (service, key)
    );

    -- Each add-on's usage, spread over a few rows that concurrent writers
    -- pick at random: one row would make every two writes of an add-on
    -- conflict. Its usage is the sum.
    CREATE TABLE plugin_kv_usage (
        service     TEXT NOT NULL,
        shard       SMALLINT NOT NULL,
        keys        BIGINT NOT NULL,
        bytes       BIGINT NOT NULL,
        PRIMARY KEY (service, shard)
    );

    CREATE TABLE plugin_dirs (
        service     TEXT NOT NULL,
        dir         TEXT NOT NULL,
        trusted_at  BIGINT NOT NULL,
        PRIMARY KEY (service, dir)
    );

    CREATE TABLE var_takeovers (
        attachment_id BIGINT NOT NULL REFERENCES attachments(id),
        name          TEXT NOT NULL,
        PRIMARY KEY (attachment_id, name)
    );

    -- What the servers share: sessions (by the hash of their id),
    -- settings such as the API token, the servers running and the plugin
    -- components accepted for each add-on.
    CREATE TABLE sessions (
        seq         BIGSERIAL PRIMARY KEY,
        id_hash     TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX sessions_kind ON sessions(kind, expires_at);

    CREATE TABLE settings (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    );

    CREATE TABLE servers (
        id          TEXT PRIMARY KEY,
        address     TEXT NOT NULL,
        started_at  BIGINT NOT NULL,
        seen_at     BIGINT NOT NULL,
        plugins     TEXT NOT NULL
    );

    CREATE TABLE plugin_components (
        service     TEXT NOT NULL,
        hash        TEXT NOT NULL,
        accepted_at BIGINT NOT NULL,
        PRIMARY KEY (service, hash)
    );
    "#,
    // 2: Open Service Broker instances and bindings.
    r#"
    CREATE TABLE osb_instances (
        instance_id   TEXT PRIMARY KEY,
        resource_uuid TEXT NOT NULL,
        request       TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );
    CREATE TABLE osb_bindings (
        binding_id  TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        request     TEXT NOT NULL,
        ready       BOOLEAN NOT NULL,
        successor   TEXT,
        credentials TEXT,
        expires_at  BIGINT,
        created_at  BIGINT NOT NULL
    );
    CREATE INDEX osb_bindings_instance ON osb_bindings(instance_id);
    "#,
    // 3: the audit trail's retention keeps the newest entries of each actor.
    r#"
    CREATE INDEX audit_actor ON audit(actor, id);
    "#,
    // 4: writes at READ COMMITTED under explicit locks (see RUNS_BESIDE);
    // each server records the schema version it runs.
    r#"
    ALTER TABLE servers ADD COLUMN schema_version INTEGER;
    "#,
    // 5: whose each session is, for a bound per owner; the single-use
    // tokens spent (signed SSO forms, Platform API grants), until they
    // would be refused anyway.
    r#"
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    CREATE INDEX sessions_owner ON sessions(kind, owner, expires_at);
    CREATE TABLE spent_tokens (
        key         TEXT PRIMARY KEY,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX spent_tokens_expiry ON spent_tokens(expires_at);
    "#,
    // 6: provider mode's outbox: the change owed to the platform each
    // resource came from, written with the change, kept until delivered or
    // given up on, claimed by one server at a time under a lease.
    r#"
    CREATE TABLE partner_outbox (
        uuid          TEXT PRIMARY KEY,
        service       TEXT NOT NULL,
        changes       TEXT NOT NULL,
        provisioned   BOOLEAN NOT NULL,
        version       BIGINT NOT NULL,
        attempts      BIGINT NOT NULL,
        due_at        BIGINT NOT NULL,
        claimed_by    TEXT,
        claimed_until BIGINT,
        failed_at     BIGINT,
        last_error    TEXT,
        created_at    BIGINT NOT NULL
    );
    CREATE INDEX partner_outbox_due ON partner_outbox(due_at);
    "#,
];
