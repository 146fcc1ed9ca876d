//! The schema, as numbered migrations. `PRAGMA user_version` records how many
//! have run; each runs in its own transaction, so an interrupted upgrade
//! leaves the previous version intact.

pub const MIGRATIONS: &[&str] = &[
    // 1: the platform's tables.
    r#"
    CREATE TABLE apps (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        region      TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );

    -- One provisioned add-on (resource).
    CREATE TABLE resources (
        id          INTEGER PRIMARY KEY,
        uuid        TEXT NOT NULL UNIQUE,          -- the platform's id, idempotency key
        name        TEXT NOT NULL UNIQUE,          -- kv-shaped-48213
        service     TEXT NOT NULL,
        plan        TEXT NOT NULL,
        app_id      INTEGER NOT NULL REFERENCES apps(id),
        partner_id  TEXT,                          -- the add-on's id; NULL until it answered
        state       TEXT NOT NULL CHECK (state IN
                      ('provisioning','provisioned','deprovisioning','deprovisioned','failed')),
        message     TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX resources_partner ON resources(service, partner_id)
        WHERE partner_id IS NOT NULL;

    -- The link of a resource to an app under a name (KV, CACHE, KV_ORANGE).
    CREATE TABLE attachments (
        id          INTEGER PRIMARY KEY,
        resource_id INTEGER NOT NULL REFERENCES resources(id),
        app_id      INTEGER NOT NULL REFERENCES apps(id),
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        UNIQUE (app_id, name)
    );

    -- Config vars and their owner: NULL = the user, else one attachment.
    CREATE TABLE config_vars (
        app_id        INTEGER NOT NULL REFERENCES apps(id),
        name          TEXT NOT NULL,
        value         TEXT NOT NULL,
        attachment_id INTEGER REFERENCES attachments(id),
        PRIMARY KEY (app_id, name)
    );

    CREATE TABLE releases (
        app_id      INTEGER NOT NULL REFERENCES apps(id),
        version     INTEGER NOT NULL,
        description TEXT NOT NULL,
        actor       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (app_id, version)
    );

    -- Who did what: every change, and every refused add-on write.
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        app         TEXT,
        addon       TEXT,
        detail      TEXT NOT NULL
    );

    -- Each add-on's private key-value store.
    CREATE TABLE plugin_kv (
        service     TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       BLOB NOT NULL,
        PRIMARY KEY (service, key)
    ) WITHOUT ROWID;
    "#,
    // 2: credential rotation bookkeeping (scheduled rotation, grace windows).
    r#"
    ALTER TABLE resources ADD COLUMN rotated_at INTEGER;
    ALTER TABLE resources ADD COLUMN rotation_error TEXT;
    ALTER TABLE resources ADD COLUMN rotation_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE resources ADD COLUMN next_rotation_at INTEGER;
    "#,
    // 3: indexes for the lookups every provisioning, rotation and
    // deprovisioning makes, which otherwise scan the whole table.
    r#"
    CREATE INDEX config_vars_attachment ON config_vars(attachment_id);
    CREATE INDEX attachments_resource ON attachments(resource_id);
    CREATE INDEX resources_app ON resources(app_id);
    CREATE INDEX audit_app ON audit(app, id);
    "#,
    // 4: `resources.state` checked by plain comparisons. SQLite evaluates a
    // CHECK of `state IN (five values)` by building a temporary b-tree of
    // the five on every insert and update of a resource. A CHECK cannot be
    // altered in place, so the table is rebuilt (SQLite's documented
    // procedure: the runner turns foreign keys off around it and checks
    // them before committing).
    r#"
    CREATE TABLE resources_new (
        id          INTEGER PRIMARY KEY,
        uuid        TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL UNIQUE,
        service     TEXT NOT NULL,
        plan        TEXT NOT NULL,
        app_id      INTEGER NOT NULL REFERENCES apps(id),
        partner_id  TEXT,
        state       TEXT NOT NULL CHECK (state = 'provisioning' OR state = 'provisioned'
                      OR state = 'deprovisioning' OR state = 'deprovisioned' OR state = 'failed'),
        message     TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        rotated_at  INTEGER,
        rotation_error TEXT,
        rotation_failures INTEGER NOT NULL DEFAULT 0,
        next_rotation_at INTEGER
    );
    INSERT INTO resources_new (id, uuid, name, service, plan, app_id, partner_id, state,
                               message, created_at, updated_at, rotated_at, rotation_error,
                               rotation_failures, next_rotation_at)
        SELECT id, uuid, name, service, plan, app_id, partner_id, state,
               message, created_at, updated_at, rotated_at, rotation_error,
               rotation_failures, next_rotation_at
        FROM resources;
    DROP TABLE resources;
    ALTER TABLE resources_new RENAME TO resources;
    CREATE UNIQUE INDEX resources_partner ON resources(service, partner_id)
        WHERE partner_id IS NOT NULL;
    CREATE INDEX resources_app ON resources(app_id);
    "#,
    // 5: each add-on's storage use, kept in step with its KV by every write,
    // so its quota is checked without counting the whole KV; and the
    // folders each add-on id is bound to (another folder claiming a known id
    // is refused until the operator trusts it).
    r#"
    CREATE TABLE plugin_dirs (
        service     TEXT NOT NULL,
        dir         TEXT NOT NULL,
        trusted_at  INTEGER NOT NULL,
        PRIMARY KEY (service, dir)
    ) WITHOUT ROWID;
    CREATE TABLE plugin_kv_usage (
        service     TEXT PRIMARY KEY,
        keys        INTEGER NOT NULL,
        bytes       INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO plugin_kv_usage (service, keys, bytes)
        SELECT service, COUNT(*), SUM(length(key) + length(value)) FROM plugin_kv GROUP BY service;
    "#,
    // 6: who holds a provisioning's reservation and until when, so a retry
    // with the same uuid waits for a call still in flight instead of
    // provisioning again (and takes over one whose holder died); and what
    // the provisioning asked for, so a retry asking for something else is a
    // conflict rather than silently the first one's add-on; and the var
    // names users took over from an add-on, which it may not write again.
    r#"
    ALTER TABLE resources ADD COLUMN reserved_by TEXT;
    ALTER TABLE resources ADD COLUMN reserved_until INTEGER;
    ALTER TABLE resources ADD COLUMN request TEXT;

    -- Names the user took from an attachment (`config:set --force`,
    -- `config:unset --force`): that attachment may not write them again.
    CREATE TABLE var_takeovers (
        attachment_id INTEGER NOT NULL REFERENCES attachments(id),
        name          TEXT NOT NULL,
        PRIMARY KEY (attachment_id, name)
    ) WITHOUT ROWID;
    "#,
    // 7: what several servers share (the same tables as on PostgreSQL, so
    // one code path serves both): signed-in sessions, settings such as the
    // API token, a claim on each scheduled rotation, the servers running
    // and the plugin components the platform accepts for each add-on.
    r#"
    ALTER TABLE resources ADD COLUMN rotation_claimed_by TEXT;
    ALTER TABLE resources ADD COLUMN rotation_claimed_until INTEGER;

    -- Sessions are kept by the hash of their id: the store never holds a
    -- usable cookie.
    CREATE TABLE sessions (
        seq         INTEGER PRIMARY KEY,
        id_hash     TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX sessions_kind ON sessions(kind, expires_at);

    CREATE TABLE settings (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE servers (
        id          TEXT PRIMARY KEY,
        address     TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        seen_at     INTEGER NOT NULL,
        plugins     TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE plugin_components (
        service     TEXT NOT NULL,
        hash        TEXT NOT NULL,
        accepted_at INTEGER NOT NULL,
        PRIMARY KEY (service, hash)
    ) WITHOUT ROWID;
    "#,
    // 8: Open Service Broker instances (each naming one resource by its
    // uuid, with what its provisioning asked for) and bindings (with the
    // credentials a rotation replaced, and until when they work).
    r#"
    CREATE TABLE osb_instances (
        instance_id   TEXT PRIMARY KEY,
        resource_uuid TEXT NOT NULL,
        request       TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE osb_bindings (
        binding_id  TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        request     TEXT NOT NULL,
        ready       INTEGER NOT NULL,
        successor   TEXT,
        credentials TEXT,
        expires_at  INTEGER,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX osb_bindings_instance ON osb_bindings(instance_id);
    "#,
    // 9: the audit trail's retention keeps the newest entries of each actor.
    r#"
    CREATE INDEX audit_actor ON audit(actor, id);
    "#,
    // 10: whose each session is (a user of a resource of an add-on), so a
    // bound per owner drops the owner's own oldest; and the single-use
    // tokens spent (signed SSO forms, Platform API grants), each kept until
    // it would be refused anyway.
    r#"
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    CREATE INDEX sessions_owner ON sessions(kind, owner, expires_at);
    CREATE TABLE spent_tokens (
        key         TEXT PRIMARY KEY,
        expires_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX spent_tokens_expiry ON spent_tokens(expires_at);
    "#,
    // 11: provider mode's outbox: the change owed to the platform each
    // resource came from (the newest value of each var, a completed
    // provisioning), written in the transaction of the change itself and
    // kept until delivered or given up on; the server delivering it holds
    // a claim until a lease ends.
    r#"
    CREATE TABLE partner_outbox (
        uuid          TEXT PRIMARY KEY,
        service       TEXT NOT NULL,
        changes       TEXT NOT NULL,
        provisioned   INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        attempts      INTEGER NOT NULL,
        due_at        INTEGER NOT NULL,
        claimed_by    TEXT,
        claimed_until INTEGER,
        failed_at     INTEGER,
        last_error    TEXT,
        created_at    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX partner_outbox_due ON partner_outbox(due_at);
    "#,
];
