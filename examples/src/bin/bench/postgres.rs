//! The PostgreSQL rows: provisioning over HTTP with one and two servers on
//! one database, against bare PostgreSQL transactions of the same shape in
//! the same run and on the same server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::platform::{self, Load, Server};

/// A PostgreSQL server for the bench: `ADDONHOST_TEST_PG` (a URL without a
/// database, as `tests/postgres.sh start` prints it), or a throwaway
/// cluster started with that script for this run (removed when it ends).
pub fn server_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("ADDONHOST_TEST_PG") {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let out = Command::new("tests/postgres.sh")
        .args(["start", "--owner-pid", &std::process::id().to_string()])
        .output()
        .context("running tests/postgres.sh (from the repository root)")?;
    if !out.status.success() {
        bail!(
            "cannot start a PostgreSQL cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("ADDONHOST_TEST_PG=").map(str::to_string))
        .context("tests/postgres.sh printed no URL")
}

/// A fresh database on `server`; its URL.
pub fn fresh_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .with_context(|| format!("connecting to {server}"))?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    Ok(format!("{server}/{name}"))
}

/// `servers` `addonhost serve` processes on the database at `url`, each
/// with a data dir of its own under `tmp`.
pub fn servers(tmp: &Path, plugins: &str, url: &str, n: usize) -> anyhow::Result<Vec<Server>> {
    (0..n)
        .map(|i| Server::start_on(&tmp.join(format!("pg-data-{i}")), plugins, Some(url)))
        .collect()
}

/// The baseline: per provisioning, bare PostgreSQL transactions of the
/// shape addonhost writes (a reservation commit, then one commit with the
/// resource update, attachment, config var, two plugin KV rows, the next
/// release number and its release, an audit row) on addonhost's own schema,
/// each client on a connection of its own with prepared statements, at READ
/// COMMITTED (each client has its app to itself, so nothing conflicts: the
/// fastest correct way to write these rows).
pub fn baseline(url: &str, clients: usize, per_client: usize) -> anyhow::Result<Load> {
    // addonhost's migrations make the schema.
    drop(addonhost::store::Store::open_postgres(url)?);
    let run = format!("{:x}", rand::random::<u32>());
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, run) = (url.to_string(), run.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut db = postgres::Client::connect(&url, postgres::NoTls)?;
                let app: i64 = db
                    .query_one(
                        "INSERT INTO apps (name, region, created_at) VALUES ($1, 'us', 0) RETURNING id",
                        &[&format!("base-{run}-{c}")],
                    )?
                    .get(0);
                let reserve = db.prepare(
                    "INSERT INTO resources (uuid, name, service, plan, app_id, state, created_at, updated_at) \
                     VALUES ($1, $1, 'kv', 'mini', $2, 'provisioning', 0, 0) RETURNING id",
                )?;
                let complete = db.prepare(
                    "UPDATE resources SET partner_id = $1, state = 'provisioned' WHERE id = $2",
                )?;
                let attach = db.prepare(
                    "INSERT INTO attachments (resource_id, app_id, name, created_at) VALUES ($1, $2, $3, 0) RETURNING id",
                )?;
                let var = db.prepare(
                    "INSERT INTO config_vars (app_id, name, value, attachment_id) VALUES ($1, $2, $3, $4)",
                )?;
                let kv = db.prepare(
                    "INSERT INTO plugin_kv (service, key, value) VALUES ('kv', $1, $2)",
                )?;
                let release = db.prepare(
                    "INSERT INTO releases (app_id, version, description, actor, created_at) \
                     SELECT $1, COALESCE(MAX(version), 0) + 1, 'Attach kv', 'bench', 0 FROM releases WHERE app_id = $1",
                )?;
                let audit = db.prepare(
                    "INSERT INTO audit (at, actor, action, app, addon, detail) \
                     VALUES (0, 'bench', 'addons:create', 'base', 'kv', 'bench')",
                )?;
                let value = vec![b'x'; 200];
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    let uuid = format!("{run}-{c}-{i}");
                    let mut tx = db.transaction()?;
                    let rid: i64 = tx.query_one(&reserve, &[&uuid, &app])?.get(0);
                    tx.commit()?;
                    let mut tx = db.transaction()?;
                    tx.execute(&complete, &[&uuid, &rid])?;
                    let aid: i64 = tx.query_one(&attach, &[&rid, &app, &format!("K{i}")])?.get(0);
                    tx.execute(
                        &var,
                        &[&app, &format!("K{i}_URL"), &"http://u:p@127.0.0.1:5000/addons/kv/ns", &aid],
                    )?;
                    for key in [format!("ns/{uuid}"), format!("uuid/{uuid}")] {
                        tx.execute(&kv, &[&key, &value])?;
                    }
                    tx.execute(&release, &[&app])?;
                    tx.execute(&audit, &[])?;
                    tx.commit()?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("baseline thread")?);
    }
    Ok(platform::load_of(all, started.elapsed(), 0, None))
}
