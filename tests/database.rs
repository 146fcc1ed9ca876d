//! Reaching PostgreSQL as operators run it: over TLS with libpq's
//! `sslmode`, `sslrootcert` and `PG*` variables, behind a transaction-pooling
//! PgBouncer, and through upgrades of the servers sharing one database.
//! Each test runs real `addonhost` processes against a real cluster.

use crate::support;

use std::process::Command;

use crate::support::db::{off_runtime, PgCluster, PgDatabase};
use crate::support::{Env, Server};

/// A command of `env` with its state in the database at `url` (TLS,
/// pooler and variables as the test sets them).
fn on(env: &Env, url: &str, args: &[&str]) -> Command {
    let mut c = env.command(args);
    c.env("ADDONHOST_DATABASE_URL", url)
        .env_remove("ADDONHOST_DATABASE_POOLER")
        .env_remove("ADDONHOST_DATABASE_LISTEN_URL");
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs a command; (exit code, stdout + stderr).
fn run(mut c: Command) -> (i32, String) {
    let out = c.output().expect("running addonhost");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(c: Command) -> String {
    let (code, text) = run(c);
    assert_eq!(code, 0, "{text}");
    text
}

/// Provisions kv, changes its plan, rotates it and deprovisions it through
/// the CLI (commands made by `cmd`); the app's config vars after
/// provisioning.
fn lifecycle(cmd: &dyn Fn(&[&str]) -> Command, app: &str) -> String {
    ok(cmd(&["apps:create", app]));
    ok(cmd(&["addons:create", "kv:mini", "-a", app]));
    let config = ok(cmd(&["config", "-a", app, "--json"]));
    assert!(config.contains("KV_URL"), "{config}");
    ok(cmd(&["addons:upgrade", "KV", "kv:pro", "-a", app]));
    ok(cmd(&["addons:rotate", "KV", "-a", app]));
    ok(cmd(&["addons:destroy", "KV", "-a", app, "--confirm", app]));
    let releases = ok(cmd(&["releases", "-a", app, "--json"]));
    let n: serde_json::Value = serde_json::from_str(&releases).unwrap();
    assert_eq!(
        n.as_array().unwrap().len(),
        5,
        "create, attach, upgrade, rotate, detach: {releases}"
    );
    config
}

#[test]
fn with_the_right_ca_verify_full_runs_the_whole_lifecycle_over_tls_and_no_password_shows() {
    let cluster = PgCluster::start_tls();
    let password = cluster.password.clone().unwrap();
    let db = cluster.create_database();
    let env = Env::new();
    let ca = cluster.tls_file("ca.pem");
    // The password in the URL, where an operator may well put it.
    let url = format!(
        "postgres://postgres:{password}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        ca.display()
    );
    let mut text = lifecycle(&|args| on(&env, &url, args), "tls-shop");
    let mut command = on(&env, &url, &["serve", "--port", "0"]);
    command.env("ADDONHOST_LOG", "debug");
    let server = Server::start_with(command, &env);
    let apps = server.api("GET", "/api/apps", None);
    assert_eq!(apps.status, 200, "{}", apps.text());
    assert!(apps.text().contains("tls-shop"), "{}", apps.text());
    let metrics = server.api("GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    text.push_str(&metrics.text());
    // Every connection of the server's is encrypted: pg_hba.conf admits
    // no other, and the server's own view says so.
    let mut admin = cluster.admin();
    let encrypted: i64 = off_runtime(|| {
        admin.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND s.ssl",
            &[&db],
        )
    })
    .unwrap()
    .get(0);
    assert!(encrypted >= 1, "no TLS connection of the server's seen");
    let plain: i64 = off_runtime(|| {
        admin.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND NOT s.ssl",
            &[&db],
        )
    })
    .unwrap()
    .get(0);
    assert_eq!(plain, 0);
    text.push_str(&server.log.lock().unwrap().join("\n"));
    server.stop();
    // A wrong password's error, too, names no password.
    let wrong = url.replace(&password, "not-the-password-4711");
    let (code, refused) = run(on(&env, &wrong, &["apps"]));
    assert_ne!(code, 0);
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    text.push_str(&refused);
    for secret in [password.as_str(), "not-the-password-4711"] {
        assert!(!text.contains(secret), "a password was shown:\n{text}");
    }
}

#[test]
fn without_tls_a_database_that_requires_it_refuses_and_addonhost_says_why() {
    let cluster = PgCluster::start_tls();
    let db = cluster.create_database();
    let env = Env::new();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
        cluster.port()
    );
    let mut c = on(&env, &url, &["apps"]);
    c.env("PGPASSWORD", cluster.password.as_deref().unwrap());
    let (code, text) = run(c);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("refused a connection without TLS") && text.contains("sslmode=require"),
        "{text}"
    );
}

#[test]
fn verify_full_refuses_a_certificate_of_another_ca_or_for_another_name_naming_the_cause() {
    let cluster = PgCluster::start_tls();
    let db = cluster.create_database();
    let env = Env::new();
    let port = cluster.port();
    let with = |host: &str, mode: &str, ca: &str| {
        let url = format!(
            "postgres://postgres@{host}:{port}/{db}?sslmode={mode}&sslrootcert={}",
            cluster.tls_file(ca).display()
        );
        let mut c = on(&env, &url, &["apps"]);
        c.env("PGPASSWORD", cluster.password.as_deref().unwrap());
        run(c)
    };
    // A CA that signed nothing of the server's.
    let (code, text) = with("localhost", "verify-full", "other-ca.pem");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("not signed by a CA in sslrootcert") && text.contains("other-ca.pem"),
        "{text}"
    );
    // The right CA, but the certificate is for localhost, not 127.0.0.1.
    let (code, text) = with("127.0.0.1", "verify-full", "ca.pem");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("not valid for the host name") && text.contains("127.0.0.1"),
        "{text}"
    );
    // verify-ca checks the chain only, as libpq's does.
    let (code, text) = with("127.0.0.1", "verify-ca", "ca.pem");
    assert_eq!(code, 0, "{text}");
    let (code, text) = with("127.0.0.1", "verify-ca", "other-ca.pem");
    assert_ne!(code, 0, "{text}");
    // And the right name with the right CA works.
    let (code, text) = with("localhost", "verify-full", "ca.pem");
    assert_eq!(code, 0, "{text}");
}

#[test]
fn the_libpq_variables_fill_in_what_the_url_leaves_out() {
    let cluster = PgCluster::start_tls();
    let db = cluster.create_database();
    let env = Env::new();
    let mut c = on(
        &env,
        &format!("postgres:///{db}"),
        &["apps:create", "env-shop"],
    );
    c.env("PGHOST", "localhost")
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", cluster.password.as_deref().unwrap())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", cluster.tls_file("ca.pem"));
    let text = ok(c);
    assert!(text.contains("env-shop"), "{text}");
    // What the URL says wins over the variables.
    let mut c = on(
        &env,
        &format!("postgres:///{db}?sslmode=verify-full"),
        &["apps"],
    );
    c.env("PGHOST", "localhost")
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", cluster.password.as_deref().unwrap())
        .env("PGSSLMODE", "disable")
        .env("PGSSLROOTCERT", cluster.tls_file("ca.pem"));
    assert!(ok(c).contains("env-shop"));
}

#[test]
fn serve_and_two_servers_provision_through_pgbouncer_in_transaction_pooling() {
    let cluster = PgCluster::start();
    let bouncer = cluster.pgbouncer();
    let db = cluster.create_database();
    let direct = format!("{}/{db}", cluster.url);
    let pooled = format!("{bouncer}/{db}");
    let env = Env::new();
    let pooler = |args: &[&str]| {
        let mut c = on(&env, &pooled, args);
        c.env("ADDONHOST_DATABASE_POOLER", "true");
        c
    };
    ok(pooler(&["apps:create", "pooled"]));
    let servers: Vec<Server> = (0..2)
        .map(|_| {
            let other = tempfile::tempdir().unwrap();
            let mut c = pooler(&["serve", "--port", "0"]);
            c.env("ADDONHOST_DATABASE_LISTEN_URL", &direct)
                .env("ADDONHOST_DATA", other.path());
            let s = Server::start_with(c, &env);
            std::mem::forget(other);
            s
        })
        .collect();
    // Both servers provision on one app at once: every provisioning lands,
    // and the release numbers stay gap-free.
    std::thread::scope(|s| {
        for (i, server) in servers.iter().enumerate() {
            s.spawn(move || {
                for j in 0..10 {
                    let r = server.api(
                        "POST",
                        "/api/apps/pooled/addons",
                        Some(serde_json::json!({"plan": "kv:mini", "as": format!("K{i}X{j}")})),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                }
            });
        }
    });
    let releases = ok(pooler(&["releases", "-a", "pooled", "--json"]));
    let mut versions: Vec<i64> = serde_json::from_str::<serde_json::Value>(&releases)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=21).collect::<Vec<_>>());
    lifecycle(&pooler, "pooled-cli");
    // The whole lifecycle went through PgBouncer: its clients were ours.
    let log = std::fs::read_to_string(format!("{}/pgbouncer/pgbouncer.log", cluster.dir()))
        .unwrap_or_default();
    assert!(log.contains(&db), "pgbouncer saw no client of {db}");
    for s in servers {
        s.stop();
    }
}

#[test]
fn through_pgbouncer_without_the_pooler_option_the_error_says_what_to_set() {
    let cluster = PgCluster::start();
    let bouncer = cluster.pgbouncer();
    let db = cluster.create_database();
    let pooled = format!("{bouncer}/{db}");
    let env = Env::new();
    // One client after another reuse PgBouncer's one server connection,
    // where the first left its named statements.
    ok(on(&env, &pooled, &["apps:create", "first"]));
    let mut failures = Vec::new();
    for i in 0..5 {
        let (code, text) = run(on(&env, &pooled, &["apps:create", &format!("next-{i}")]));
        if code != 0 {
            failures.push(text);
        }
    }
    assert!(
        !failures.is_empty(),
        "named statements went through a transaction pooler unharmed: the test saw no collision"
    );
    for text in &failures {
        assert!(
            text.contains("--database-pooler"),
            "the error does not say what to set:\n{text}"
        );
    }
}

#[test]
fn three_servers_started_at_once_on_an_empty_database_migrate_it_exactly_once() {
    let database = PgDatabase::create();
    let env = Env::new();
    let url = database.url.clone();
    let servers: Vec<Server> = std::thread::scope(|s| {
        let started: Vec<_> = (0..3)
            .map(|_| {
                let (env, url) = (&env, &url);
                s.spawn(move || {
                    let other = tempfile::tempdir().unwrap();
                    let mut c = on(env, url, &["serve", "--port", "0"]);
                    c.env("ADDONHOST_DATA", other.path())
                        .env("ADDONHOST_LOG", "info");
                    let server = Server::start_with(c, env);
                    std::mem::forget(other);
                    server
                })
            })
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let migrated: Vec<usize> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("applied schema migrations 1 to"))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(migrated.len(), 1, "servers that migrated: {migrated:?}");
    for s in &servers {
        assert_eq!(s.api("GET", "/api/apps", None).status, 200);
    }
    let mut db = env_db(&url);
    let versions = db.strings("SELECT version FROM schema_migrations", &[]);
    assert_eq!(versions.len(), 1, "{versions:?}");
    for s in servers {
        s.stop();
    }
}

fn env_db(url: &str) -> support::db::Db {
    support::db::Db::Postgres(
        off_runtime(|| postgres::Client::connect(url, postgres::NoTls)).unwrap(),
    )
}

#[test]
fn a_server_older_than_the_database_refuses_to_start_naming_both_versions() {
    let database = PgDatabase::create();
    let env = Env::new();
    ok(on(&env, &database.url, &["apps"]));
    let mut db = env_db(&database.url);
    let known: i64 = db.count("SELECT version FROM schema_migrations", &[]);
    db.execute("UPDATE schema_migrations SET version = 99", &[]);
    let (code, text) = run(on(&env, &database.url, &["serve", "--port", "0"]));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("version 99") && text.contains(&format!("up to {known}")),
        "{text}"
    );
    assert!(text.contains("newer addonhost"), "{text}");
}

#[test]
fn a_database_of_servers_this_version_cannot_run_beside_is_not_migrated_while_they_run() {
    let database = PgDatabase::create();
    let env = Env::new();
    // The database as version 3 left it (its migrations, run as it ran
    // them), with an app and a server of that version alive (it records
    // itself every 5 s, with no schema version).
    let mut db = env_db(&database.url);
    db.execute(
        "CREATE TABLE schema_migrations (version INTEGER NOT NULL)",
        &[],
    );
    for sql in &addonhost::store::postgres_migrations()[..3] {
        if let support::db::Db::Postgres(c) = &mut db {
            off_runtime(|| c.batch_execute(sql)).unwrap();
        }
    }
    db.execute("INSERT INTO schema_migrations (version) VALUES (3)", &[]);
    db.execute(
        "INSERT INTO apps (name, region, created_at) VALUES ('old-shop', 'us', 0)",
        &[],
    );
    let now = support::unix_now().to_string();
    db.execute(
        "INSERT INTO servers (id, address, started_at, seen_at, plugins)
         VALUES ('old-server-1', '10.0.0.9:5000', $1::TEXT::BIGINT, $1::TEXT::BIGINT, '{}')",
        &[&now],
    );
    let (code, text) = run(on(&env, &database.url, &["serve", "--port", "0"]));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("old-server-1 at 10.0.0.9:5000")
            && text.contains("stop every server of the older version first"),
        "{text}"
    );
    assert_eq!(db.count("SELECT version FROM schema_migrations", &[]), 3);
    // Once it is gone, this version migrates and keeps what was there.
    db.execute("DELETE FROM servers", &[]);
    let apps = ok(on(&env, &database.url, &["apps"]));
    assert!(apps.contains("old-shop"), "{apps}");
    assert_eq!(
        db.count("SELECT version FROM schema_migrations", &[]) as usize,
        addonhost::store::postgres_migrations().len()
    );
}
