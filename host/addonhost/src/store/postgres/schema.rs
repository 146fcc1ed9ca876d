//! The PostgreSQL schema, as numbered migrations (the same tables, keys and
//! checks as the SQLite one). `schema_migrations` records how many have run;
//! a transaction-scoped advisory lock serializes servers migrating at once.

/// Key of the advisory lock held while migrating.
pub const MIGRATION_LOCK: i64 = 0x6164_646f_6e68_7374; // "addonhst"

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
    // 4: whose each session is, for a bound per owner; the single-use
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
];
