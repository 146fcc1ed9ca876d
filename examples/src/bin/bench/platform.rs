//! The platform rows, against a real `addonhost serve` process on 127.0.0.1:
//! provisioning throughput over HTTP (with its bare-SQLite baseline), cold
//! start, hot-reload swap latency under load, and resident memory per idle
//! plugin.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The `addonhost` binary built next to this one.
pub fn addonhost_bin() -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .with_file_name("addonhost")
}

/// A running `addonhost serve`.
pub struct Server {
    child: Child,
    pub addr: String,
    pub token: String,
    /// Process start to the first answered request.
    pub started_in: Duration,
}

impl Server {
    pub fn start(data: &Path, plugins: &str) -> anyhow::Result<Server> {
        Server::start_on(data, plugins, None)
    }

    /// A server whose state is in the PostgreSQL database `database`
    /// (SQLite in `data` when `None`).
    pub fn start_on(data: &Path, plugins: &str, database: Option<&str>) -> anyhow::Result<Server> {
        let t0 = Instant::now();
        let mut command = Command::new(addonhost_bin());
        command
            .args(["serve", "--port", "0"])
            .env("ADDONHOST_DATA", data)
            .env("ADDONHOST_PLUGINS", plugins)
            .env("ADDONHOST_LOG", "error")
            .env_remove("ADDONHOST_URL")
            .env_remove("ADDONHOST_DATABASE_URL");
        if let Some(url) = database {
            command.env("ADDONHOST_DATABASE_URL", url);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", addonhost_bin().display()))?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("addonhost serve exited before listening");
            };
            let line = line?;
            if let Some(rest) = line.split("serving on http://").nth(1) {
                break rest.split_whitespace().next().unwrap_or("").to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        loop {
            if let Ok((200, _)) = Conn::connect(&addr).and_then(|mut c| c.get("/healthz", &[])) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let started_in = t0.elapsed();
        let mut command = Command::new(addonhost_bin());
        command
            .arg("auth:token")
            .env("ADDONHOST_DATA", data)
            .env_remove("ADDONHOST_DATABASE_URL");
        if let Some(url) = database {
            command.env("ADDONHOST_DATABASE_URL", url);
        }
        let out = command.output()?;
        let token = String::from_utf8(out.stdout)?.trim().to_string();
        let server = Server {
            child,
            addr,
            token,
            started_in,
        };
        // Measured rows time the add-ons' optimized code, not the quick
        // tier's stand-in (and not the optimizing compile beside them).
        server.optimized()?;
        Ok(server)
    }

    /// Waits until every add-on runs its optimized build: a fresh data dir
    /// serves from the quick tier (Winch) while Cranelift compiles.
    pub fn optimized(&self) -> anyhow::Result<()> {
        let auth = self.auth();
        let mut api = Conn::connect(&self.addr)?;
        let start = Instant::now();
        loop {
            let (_, body) = api.get("/api/plugins", &[("authorization", &auth)])?;
            let list: serde_json::Value = serde_json::from_slice(&body)?;
            let quick: Vec<_> = (list.as_array().into_iter().flatten())
                .filter(|p| p["origin"] == "quick")
                .filter_map(|p| p["id"].as_str())
                .collect();
            if quick.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("still on the quick tier after 300 s: {}", quick.join(", "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Resident set size of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: String,
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn {
            addr: addr.to_string(),
            r: BufReader::new(s),
        })
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, Vec<u8>)> {
        self.request("GET", path, headers, b"")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.r.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().map_err(|_| bad("length"))?,
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk"))?;
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            out.resize(length, 0);
            self.r.read_exact(&mut out)?;
        }
        Ok((status, out))
    }
}

/// Requests per second and latency percentiles of one load run.
pub struct Load {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub failed: usize,
    /// The first failed request's status and body.
    pub first_failure: Option<String>,
}

pub fn load_of(
    mut latencies: Vec<Duration>,
    took: Duration,
    failed: usize,
    first_failure: Option<String>,
) -> Load {
    latencies.sort();
    let n = latencies.len().max(1);
    Load {
        per_second: latencies.len() as f64 / took.as_secs_f64(),
        p50: latencies.get(n / 2).copied().unwrap_or_default(),
        p99: latencies
            .get((n * 99 / 100).min(n - 1))
            .copied()
            .unwrap_or_default(),
        failed,
        first_failure,
    }
}

/// `clients` connections, each provisioning `per_client` kv add-ons onto
/// its own app through `POST /api/apps/:app/addons`.
pub fn provisioning(server: &Server, clients: usize, per_client: usize) -> anyhow::Result<Load> {
    provisioning_spread(&[server], clients, per_client)
}

/// [`provisioning`] with the clients spread over `servers` sharing one
/// store (client `c` talks to server `c % n`).
pub fn provisioning_spread(
    servers: &[&Server],
    clients: usize,
    per_client: usize,
) -> anyhow::Result<Load> {
    let server = servers[0];
    let auth = server.auth();
    let run = format!("{:x}", rand_u64());
    for c in 0..clients {
        let mut conn = Conn::connect(&server.addr)?;
        let body = format!(r#"{{"name": "b{run}-{c}"}}"#);
        let (status, text) = conn.request(
            "POST",
            "/api/apps",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )?;
        if status != 201 {
            bail!(
                "creating an app: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = servers[c % servers.len()].addr.clone();
            let auth = auth.clone();
            let app = format!("b{run}-{c}");
            std::thread::spawn(
                move || -> anyhow::Result<(Vec<Duration>, usize, Option<String>)> {
                    let mut conn = Conn::connect(&addr)?;
                    let mut lat = Vec::with_capacity(per_client);
                    let mut failed = 0;
                    let mut first_failure = None;
                    for i in 0..per_client {
                        let body = format!(r#"{{"plan": "kv:mini", "as": "K{i}"}}"#);
                        let t = Instant::now();
                        let (status, text) = conn.request(
                            "POST",
                            &format!("/api/apps/{app}/addons"),
                            &[
                                ("authorization", &auth),
                                ("content-type", "application/json"),
                            ],
                            body.as_bytes(),
                        )?;
                        lat.push(t.elapsed());
                        if status != 201 {
                            failed += 1;
                            first_failure.get_or_insert_with(|| {
                                format!("{status} {}", String::from_utf8_lossy(&text))
                            });
                        }
                    }
                    Ok((lat, failed, first_failure))
                },
            )
        })
        .collect();
    let mut all = Vec::new();
    let (mut failed, mut first_failure) = (0, None);
    for t in threads {
        let (lat, f, first) = t.join().expect("client thread")?;
        all.extend(lat);
        failed += f;
        first_failure = first_failure.or(first);
    }
    Ok(load_of(all, started.elapsed(), failed, first_failure))
}

pub fn rand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32
}

/// The baseline: the same number of provisionings as bare SQLite
/// transactions of the same shape on addonhost's own schema and settings
/// (WAL, synchronous=FULL): a reservation commit, then one commit with the
/// resource update, attachment, config var, two plugin KV rows, release and
/// audit row — what the platform writes for one kv provisioning, without
/// the plugin call, the rules or HTTP.
pub fn sqlite_baseline(dir: &Path, clients: usize, per_client: usize) -> anyhow::Result<Load> {
    let open = sqlite_apps(dir, clients)?;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let conn = open();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut conn = conn?;
                let app: i64 = conn.query_row(
                    "SELECT id FROM apps WHERE name = ?1",
                    [format!("base-{c}")],
                    |r| r.get(0),
                )?;
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    baseline_provision(&mut conn, app, &format!("{c}-{i}-{:x}", rand_u64()), i)?;
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
    Ok(load_of(all, started.elapsed(), 0, None))
}

/// A database with addonhost's schema and settings in `dir`, holding apps
/// `base-0` … `base-<n-1>`; a way to open connections to it.
pub fn sqlite_apps(
    dir: &Path,
    n: usize,
) -> anyhow::Result<impl Fn() -> anyhow::Result<rusqlite::Connection>> {
    // addonhost's migrations make the schema.
    drop(addonhost::store::Store::open_sqlite(dir)?);
    let path = dir.join("addonhost.db");
    let open = move || -> anyhow::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(&path)?;
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )?;
        c.busy_timeout(Duration::from_secs(30))?;
        Ok(c)
    };
    let setup = open()?;
    for c in 0..n {
        setup.execute(
            "INSERT INTO apps (name, region, created_at) VALUES (?1, 'us', 0)",
            [format!("base-{c}")],
        )?;
    }
    Ok(open)
}

/// One provisioning's writes as bare SQLite transactions (see
/// [`sqlite_baseline`]), the `i`-th of its client onto app `app`.
pub fn baseline_provision(
    conn: &mut rusqlite::Connection,
    app: i64,
    uuid: &str,
    i: usize,
) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO resources (uuid, name, service, plan, app_id, state, created_at, updated_at) \
         VALUES (?1, ?1, 'kv', 'mini', ?2, 'provisioning', 0, 0)",
        rusqlite::params![uuid, app],
    )?;
    tx.commit()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE resources SET partner_id = ?1, state = 'provisioned' WHERE uuid = ?1",
        [&uuid],
    )?;
    let rid: i64 = tx.query_row("SELECT id FROM resources WHERE uuid = ?1", [&uuid], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO attachments (resource_id, app_id, name, created_at) VALUES (?1, ?2, ?3, 0)",
        rusqlite::params![rid, app, format!("K{i}")],
    )?;
    let aid = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO config_vars (app_id, name, value, attachment_id) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            app,
            format!("K{i}_URL"),
            "http://u:p@127.0.0.1:5000/addons/kv/ns",
            aid
        ],
    )?;
    for key in [format!("ns/{uuid}"), format!("uuid/{uuid}")] {
        tx.execute(
            "INSERT INTO plugin_kv (service, key, value) VALUES ('kv', ?1, ?2)",
            rusqlite::params![key, vec![b'x'; 200]],
        )?;
    }
    let version: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_id = ?1",
        [app],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO releases (app_id, version, description, actor, created_at) \
         VALUES (?1, ?2, 'Attach kv', 'bench', 0)",
        rusqlite::params![app, version],
    )?;
    tx.execute(
        "INSERT INTO audit (at, actor, action, app, addon, detail) \
         VALUES (0, 'bench', 'addons:create', 'base', 'kv', 'bench')",
        [],
    )?;
    tx.commit()?;
    Ok(())
}
