//! The store under test, whichever backend holds it: the SQLite file of a
//! data dir, or a PostgreSQL database of the test cluster. Queries are
//! written once for both (`$1`-style parameters; SQLite numbers them the
//! same way) and rows come back as JSON objects.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The test PostgreSQL server: `ADDONHOST_TEST_PG` (a URL without a
/// database, as `tests/postgres.sh start` prints it), or a cluster this test
/// process starts with that script (removed when the process exits).
pub fn pg_server() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("ADDONHOST_TEST_PG") {
                return url.trim_end_matches('/').to_string();
            }
            let out = Command::new(script())
                .args(["start", "--owner-pid", &std::process::id().to_string()])
                .output()
                .expect("running tests/postgres.sh");
            assert!(
                out.status.success(),
                "cannot start a PostgreSQL cluster for the tests:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let url = text
                .lines()
                .find_map(|l| l.strip_prefix("ADDONHOST_TEST_PG="))
                .expect("tests/postgres.sh printed the server's URL");
            url.to_string()
        })
        .clone()
}

/// Whether this run puts every test's state in PostgreSQL
/// (`ADDONHOST_TEST_BACKEND=postgres`, the second pass of tests/run.sh).
pub fn on_postgres() -> bool {
    std::env::var("ADDONHOST_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// In the pooler pass of tests/run.sh, the URL (without a database) of a
/// transaction-pooling PgBouncer in front of the test server: the servers
/// and CLIs of the tests reach their databases there
/// (`ADDONHOST_TEST_PGBOUNCER`).
pub fn pooler() -> Option<String> {
    std::env::var("ADDONHOST_TEST_PGBOUNCER")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// A PostgreSQL cluster of a test's own, to stop and start (removed when
/// dropped, or when the test process exits).
pub struct PgCluster {
    /// A URL without a database.
    pub url: String,
    dir: String,
    /// With TLS: the password of user postgres (not in `url`).
    pub password: Option<String>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with(&[])
    }

    /// A cluster that admits TCP clients only over TLS, with a password
    /// (see `tests/postgres.sh start --tls`).
    pub fn start_tls() -> PgCluster {
        PgCluster::start_with(&["--tls"])
    }

    fn start_with(options: &[&str]) -> PgCluster {
        let out = Command::new(script())
            .args(["start", "--owner-pid", &std::process::id().to_string()])
            .args(options)
            .output()
            .expect("running tests/postgres.sh");
        assert!(
            out.status.success(),
            "cannot start a PostgreSQL cluster:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("tests/postgres.sh printed no {name}"))
                .to_string()
        };
        PgCluster {
            url: field("ADDONHOST_TEST_PG="),
            dir: field("ADDONHOST_TEST_PG_DIR="),
            password: text
                .lines()
                .find_map(|l| l.strip_prefix("ADDONHOST_TEST_PG_PASSWORD="))
                .map(str::to_string),
        }
    }

    /// The cluster's folder.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        std::fs::read_to_string(format!("{}/port", self.dir))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A file of the test CA's (`ca.pem`, `other-ca.pem`) of a TLS cluster.
    pub fn tls_file(&self, name: &str) -> std::path::PathBuf {
        std::path::Path::new(&self.dir).join("tls").join(name)
    }

    /// A superuser connection through the cluster's Unix socket (which
    /// needs neither TLS nor a password).
    pub fn admin(&self) -> postgres::Client {
        let conninfo = format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir,
            self.port()
        );
        off_runtime(|| postgres::Client::connect(&conninfo, postgres::NoTls))
            .unwrap_or_else(|e| panic!("connecting to the test cluster's socket: {e}"))
    }

    /// Creates a database; its name.
    pub fn create_database(&self) -> String {
        let name = format!("t_{}_{:016x}", std::process::id(), rand_u64());
        let mut admin = self.admin();
        off_runtime(|| admin.batch_execute(&format!("CREATE DATABASE {name}"))).unwrap();
        name
    }

    /// Starts a PgBouncer in transaction pooling mode in front of the
    /// cluster; its URL (without a database).
    pub fn pgbouncer(&self) -> String {
        pgbouncer_for(&self.dir)
    }

    fn run(&self, what: &str) {
        let out = Command::new(script())
            .args([what, &self.dir])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/postgres.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (its clients' connections are cut).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again, on the same port.
    pub fn restart(&self) {
        self.run("restart");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["remove", &self.dir]).output();
    }
}

/// Starts a transaction-pooling PgBouncer in front of the cluster in `dir`
/// (stopped when this process exits); its URL, without a database.
pub fn pgbouncer_for(dir: &str) -> String {
    let out = Command::new(script())
        .args([
            "pgbouncer",
            dir,
            "--owner-pid",
            &std::process::id().to_string(),
        ])
        .output()
        .expect("running tests/postgres.sh pgbouncer");
    assert!(
        out.status.success(),
        "cannot start pgbouncer:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ADDONHOST_TEST_PGBOUNCER="))
        .expect("tests/postgres.sh printed the pgbouncer URL")
        .to_string()
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

fn script() -> std::path::PathBuf {
    super::root().join("tests/postgres.sh")
}

/// A fresh database on the test server, dropped with it (unless
/// borrowed).
pub struct PgDatabase {
    pub url: String,
    /// In the pooler pass, the URL the servers and CLIs under test reach
    /// this database by, through PgBouncer.
    pooled: Option<String>,
    /// The server (a URL without a database).
    server: String,
    /// `None` when borrowed from another environment.
    name: Option<String>,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        PgDatabase::create_on(&pg_server())
    }

    /// Where the servers and CLIs under test reach this database when
    /// not directly: the pooler in front of its server, in the pooler pass.
    pub fn client_url(&self) -> Option<String> {
        self.pooled.clone()
    }

    /// The same database, reached through the PgBouncer at `pooler` (in
    /// front of its server) in the pooler pass.
    pub fn through(mut self, pooler: impl FnOnce() -> String) -> PgDatabase {
        if self::pooler().is_some() {
            self.pooled = Some(format!("{}/{}", pooler(), db_name(&self.url)));
        }
        self
    }

    /// The same database, reached the same way, owned by `self`.
    pub fn borrow(&self) -> PgDatabase {
        PgDatabase {
            server: String::new(),
            url: self.url.clone(),
            pooled: self.pooled.clone(),
            name: None,
        }
    }

    /// A fresh database on `server` (a URL without a database).
    pub fn create_on(server: &str) -> PgDatabase {
        let server = server.trim_end_matches('/').to_string();
        let name = format!("t_{}_{:016x}", std::process::id(), rand_u64());
        let sql = format!("CREATE DATABASE {name}");
        off_runtime(|| admin(&server).batch_execute(&sql))
            .unwrap_or_else(|e| panic!("creating database {name} on {server}: {e}"));
        PgDatabase {
            url: format!("{server}/{name}"),
            pooled: pooler()
                .filter(|_| server == pg_server())
                .map(|p| format!("{p}/{name}")),
            server,
            name: Some(name),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let Some(name) = &self.name else { return };
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        off_runtime(|| {
            if let Ok(mut c) =
                postgres::Client::connect(&format!("{}/postgres", self.server), postgres::NoTls)
            {
                let _ = c.batch_execute(&sql);
            }
        });
    }
}

/// Runs `f` on a thread of its own: the `postgres` client runs a runtime
/// of its own, which cannot start inside a test's tokio runtime.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn admin(server: &str) -> postgres::Client {
    postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL {server}: {e}"))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A connection to the store of an [`super::Env`].
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Db {
    /// The rows of `sql` with string parameters `$1`, `$2`…, each as a
    /// column name → value object.
    pub fn rows(&mut self, sql: &str, params: &[&str]) -> Vec<Map<String, Value>> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let names: Vec<String> = st.column_names().iter().map(|n| n.to_string()).collect();
                let mut rows = st.query(rusqlite::params_from_iter(params.iter())).unwrap();
                let mut out = Vec::new();
                while let Some(r) = rows.next().unwrap() {
                    let mut m = Map::new();
                    for (i, n) in names.iter().enumerate() {
                        let v = match r.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(i) => Value::from(i),
                            rusqlite::types::ValueRef::Real(f) => Value::from(f),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::from(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => {
                                Value::from(String::from_utf8_lossy(b).into_owned())
                            }
                        };
                        m.insert(n.clone(), v);
                    }
                    out.push(m);
                }
                out
            }
            Db::Postgres(c) => {
                let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) q");
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|s| s as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                off_runtime(|| c.query(&wrapped, &p))
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|r| {
                        let text: String = r.get(0);
                        serde_json::from_str::<Value>(&text)
                            .unwrap()
                            .as_object()
                            .unwrap()
                            .clone()
                    })
                    .collect()
            }
        }
    }

    /// Runs a statement that returns no rows; how many it changed.
    pub fn execute(&mut self, sql: &str, params: &[&str]) -> u64 {
        match self {
            Db::Sqlite(c) => c
                .execute(sql, rusqlite::params_from_iter(params.iter()))
                .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64,
            Db::Postgres(c) => {
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|s| s as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                off_runtime(|| c.execute(sql, &p)).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// The single integer `sql` selects.
    pub fn count(&mut self, sql: &str, params: &[&str]) -> i64 {
        let rows = self.rows(sql, params);
        let v = rows[0].values().next().unwrap();
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{sql} gave {v}"))
    }

    /// The first column of every row, as text.
    pub fn strings(&mut self, sql: &str, params: &[&str]) -> Vec<String> {
        self.rows(sql, params)
            .into_iter()
            .map(|r| match r.values().next().unwrap() {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// An add-on's KV value, as text.
    pub fn kv(&mut self, service: &str, key: &str) -> Option<String> {
        let sql = match self {
            Db::Sqlite(_) => "SELECT CAST(value AS TEXT) AS v FROM plugin_kv WHERE service = $1 AND key = $2",
            Db::Postgres(_) => "SELECT convert_from(value, 'UTF8') AS v FROM plugin_kv WHERE service = $1 AND key = $2",
        };
        self.strings(sql, &[service, key]).into_iter().next()
    }

    /// The engine's own consistency check (SQLite's `integrity_check`;
    /// PostgreSQL checks its pages itself).
    pub fn integrity_ok(&mut self) -> bool {
        match self {
            Db::Sqlite(c) => {
                let r: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap();
                r == "ok"
            }
            Db::Postgres(_) => true,
        }
    }
}
