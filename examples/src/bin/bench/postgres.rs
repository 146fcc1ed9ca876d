//! The PostgreSQL rows: provisioning over HTTP with one and two servers on
//! one database, against bare PostgreSQL transactions of the same shape in
//! the same run and on the same server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::platform::{self, Conn, Load, Server};
use crate::{ms, ratio, row, Row};

/// The PostgreSQL rows at each client count: one server, then two on one
/// database, against the baseline, each with its latency, the round trips
/// to the database and the transactions run again per provisioning.
pub fn rows(
    concurrency: &[usize],
    provisions: Option<usize>,
    quick: bool,
    tmp: &Path,
    plugins: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let pg = server_url()?;
    for &clients in concurrency {
        let total = provisions.unwrap_or(if quick {
            64
        } else if clients == 1 {
            800
        } else {
            3200
        });
        let per_client = (total / clients).max(1);
        eprintln!("bench: bare PostgreSQL transactions, {clients} clients");
        let base = baseline(&fresh_database(&pg, "bench_baseline")?, clients, per_client)?;
        for n in [1, 2] {
            eprintln!(
                "bench: provisioning over HTTP on PostgreSQL, {n} server(s), {clients} clients"
            );
            let url = fresh_database(&pg, &format!("bench_{n}_servers"))?;
            let servers = servers(&tmp.join(format!("pg-{n}-{clients}")), plugins, &url, n)?;
            let refs: Vec<&Server> = servers.iter().collect();
            let before = counters(&refs)?;
            let ours = platform::provisioning_spread(&refs, clients, per_client)?;
            let after = counters(&refs)?;
            anyhow::ensure!(
                ours.failed == 0,
                "{} provisionings failed on PostgreSQL, the first with {}",
                ours.failed,
                ours.first_failure.as_deref().unwrap_or("?")
            );
            let done = (clients * per_client) as f64;
            let target = match (n, clients) {
                (1, 32) => "≥ 0.67×",
                (1, 1) => "≥ 0.8×",
                _ => "",
            };
            rows.push(row(
                format!("provisions/s over HTTP, PostgreSQL, {n} server(s), {clients} clients"),
                format!("{:.0}/s", ours.per_second),
                format!("{:.0}/s PG txns", base.per_second),
                ratio(ours.per_second, base.per_second),
                target,
            ));
            rows.push(row(
                format!("  latency p50 / p99, PostgreSQL, {n} server(s), {clients} clients"),
                format!("{} / {}", ms(ours.p50), ms(ours.p99)),
                format!("{} / {}", ms(base.p50), ms(base.p99)),
                ratio(ours.p99.as_secs_f64(), base.p99.as_secs_f64()),
                "",
            ));
            rows.push(row(
                "  per provisioning: round trips / statements / rollbacks",
                format!(
                    "{:.1} / {:.1} / {:.3}",
                    (after.1 - before.1) / done,
                    (after.0 - before.0) / done,
                    (after.2 - before.2) / done
                ),
                format!("{BASELINE_TRIPS} / {BASELINE_STATEMENTS} / 0"),
                "",
                "rollbacks < 0.05",
            ));
        }
    }
    Ok(())
}

/// What the servers' transactions cost so far: statements sent, round
/// trips, transactions run again (from `/metrics`), summed.
fn counters(servers: &[&Server]) -> anyhow::Result<(f64, f64, f64)> {
    let mut sum = (0.0, 0.0, 0.0);
    for s in servers {
        let mut conn = Conn::connect(&s.addr)?;
        let (status, text) = conn.get("/metrics", &[("authorization", &s.auth())])?;
        anyhow::ensure!(status == 200, "GET /metrics answered {status}");
        let text = String::from_utf8_lossy(&text);
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        sum.0 += value("addonhost_store_statements_sent");
        sum.1 += value("addonhost_store_round_trips");
        sum.2 += value("addonhost_store_write_reruns");
    }
    Ok(sum)
}

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

/// Round trips and statements of one provisioning of the baseline.
const BASELINE_TRIPS: usize = 12;
const BASELINE_STATEMENTS: usize = 12;

/// The baseline: per provisioning, bare PostgreSQL transactions of the
/// shape addonhost writes (a reservation commit, then one commit with the
/// resource update, attachment, config var, two plugin KV rows, the next
/// release number and its release, an audit row) on addonhost's own schema,
/// each client on a connection of its own with prepared statements, at READ
/// COMMITTED (each client has its app to itself, so nothing conflicts: the
/// fastest correct way to write these rows). Its reservation commits without
/// waiting for the disk, as addonhost's does (the completion's commit,
/// acknowledged, makes it durable).
pub fn baseline(url: &str, clients: usize, per_client: usize) -> anyhow::Result<Load> {
    // addonhost's migrations make the schema.
    drop(addonhost::store::Store::open_postgres(
        url,
        &Default::default(),
    )?);
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
                    db.batch_execute(
                        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off",
                    )?;
                    let rid: i64 = db.query_one(&reserve, &[&uuid, &app])?.get(0);
                    db.batch_execute("COMMIT")?;
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
