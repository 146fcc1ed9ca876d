//! Shared helpers of the end-to-end tests: build the real plugins once, run
//! the real `addonhost` binary against a fresh data dir, open the real store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use addonhost::{Host, HostOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_addonhost");

/// The repository root.
pub fn root() -> PathBuf {
    // The tests belong to host/addonhost-cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The plugin folders most tests use: the Rust examples and the hostile test
/// add-on. The Python and JavaScript examples take seconds to compile in a
/// fresh data dir, so only the tests about them load them
/// ([`polyglot_roots`]).
pub fn plugin_roots() -> String {
    let r = root();
    std::env::join_paths([
        r.join("plugins/kv"),
        r.join("plugins/exceptions"),
        r.join("tests/plugins"),
    ])
    .unwrap()
    .into_string()
    .unwrap()
}

/// Every example add-on: Rust, Python and JavaScript.
pub fn polyglot_roots() -> String {
    root().join("plugins").to_str().unwrap().to_string()
}

/// Builds the Python and JavaScript examples once per test binary, through
/// `addonhost plugins:build` (installing componentize-py/-js on first use).
pub fn polyglot_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build(&["plugins/queue", "plugins/flags"]));
}

/// Builds the Rust examples and the hostile test add-on once per test binary
/// with `addonhost plugins:build` (the same command a user runs).
pub fn plugins_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build(&["plugins/kv", "plugins/exceptions", "tests/plugins/hostile"]));
}

/// Builds the mailer example (an add-on over a partner backend) once per
/// test binary.
pub fn mailer_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build(&["plugins/mailer"]));
}

fn build(dirs: &[&str]) {
    let r = root();
    let out = Command::new(BIN)
        .arg("plugins:build")
        .args(dirs.iter().map(|d| r.join(d)))
        .output()
        .expect("running addonhost plugins:build");
    assert!(
        out.status.success(),
        "plugins:build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh data dir (and, in the PostgreSQL pass, a fresh database) and a
/// way to run commands against it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The plugin folders (`ADDONHOST_PLUGINS`).
    pub plugins: String,
    /// The database holding the state, when it is not the data dir's
    /// SQLite file (`ADDONHOST_DATABASE_URL`).
    pub database: Option<db::PgDatabase>,
    /// What the operator grants add-ons to reach beyond their manifests
    /// (`ADDONHOST_OUTBOUND_GRANT`: `ADDON=URL,…;…`), such as the partner
    /// backend a test runs on the loopback.
    pub outbound_grant: Option<String>,
}

/// What a command printed and how it exited.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        plugins_built();
        Env {
            dir: tempfile::tempdir().unwrap(),
            plugins: plugin_roots(),
            database: db::on_postgres().then(db::PgDatabase::create),
            outbound_grant: None,
        }
    }

    /// A fresh environment on a fresh PostgreSQL database, whatever the
    /// pass (for the tests of several servers sharing one).
    pub fn on_postgres() -> Env {
        let mut env = Env::new();
        if env.database.is_none() {
            env.database = Some(db::PgDatabase::create());
        }
        env
    }

    /// A fresh environment on the data dir's SQLite file, whatever the
    /// pass (for the tests of that file itself).
    pub fn on_sqlite() -> Env {
        let mut env = Env::new();
        env.database = None;
        env
    }

    /// Another data dir on the same state (a second server's machine).
    pub fn sibling(&self) -> Env {
        let database = self
            .database
            .as_ref()
            .expect("siblings share a PostgreSQL database");
        Env {
            dir: tempfile::tempdir().unwrap(),
            plugins: self.plugins.clone(),
            database: Some(database.borrow()),
            outbound_grant: self.outbound_grant.clone(),
        }
    }

    /// The PostgreSQL URL of the state, if it is there.
    pub fn database_url(&self) -> Option<String> {
        self.database.as_ref().map(|d| d.url.clone())
    }

    /// A connection to the store, whichever backend holds it.
    pub fn db(&self) -> db::Db {
        match &self.database {
            Some(d) => db::Db::Postgres(
                db::off_runtime(|| postgres::Client::connect(&d.url, postgres::NoTls))
                    .unwrap_or_else(|e| panic!("connecting to {}: {e}", d.url)),
            ),
            None => db::Db::Sqlite(
                rusqlite::Connection::open(self.data().join("addonhost.db")).unwrap(),
            ),
        }
    }

    /// An environment whose plugin folder holds copies of the named example
    /// add-ons, each manifest edited by `edit` (e.g. a rotation schedule).
    pub fn with_plugin_copies(names: &[&str], edit: impl Fn(&str, &mut serde_json::Value)) -> Env {
        let mut env = Env::new();
        let dir = env.data().join("plugins");
        for name in names {
            let src = [
                root().join("plugins").join(name),
                root().join("tests/plugins").join(name),
            ]
            .into_iter()
            .find(|p| p.is_dir())
            .unwrap();
            let dst = dir.join(name);
            std::fs::create_dir_all(&dst).unwrap();
            let mut manifest: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(src.join("addon-manifest.json")).unwrap(),
            )
            .unwrap();
            edit(name, &mut manifest);
            std::fs::write(dst.join("addon-manifest.json"), manifest.to_string()).unwrap();
            let component = manifest["component"].as_str().unwrap();
            std::fs::copy(src.join(component), dst.join(component)).unwrap();
        }
        env.plugins = dir.to_str().unwrap().to_string();
        env
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("ADDONHOST_DATA", self.data())
            .env("ADDONHOST_PLUGINS", &self.plugins)
            .env_remove("ADDONHOST_DATABASE_URL")
            .env_remove("ADDONHOST_URL")
            .env_remove("ADDONHOST_LOG")
            .env_remove("ADDONHOST_OUTBOUND_GRANT")
            .env_remove("ADDONHOST_EXTRA_CA")
            .env_remove("ADDONHOST_ALLOW_PLAIN_HTTP")
            .env_remove("ADDONHOST_PLATFORM_API");
        c.env_remove("ADDONHOST_DATABASE_POOLER")
            .env_remove("ADDONHOST_DATABASE_LISTEN_URL");
        if let Some(url) = self.database_url() {
            match self.database.as_ref().and_then(|d| d.client_url()) {
                // The pooler pass: through PgBouncer, LISTEN directly.
                Some(pooled) => {
                    c.env("ADDONHOST_DATABASE_URL", pooled)
                        .env("ADDONHOST_DATABASE_POOLER", "true")
                        .env("ADDONHOST_DATABASE_LISTEN_URL", url);
                }
                None => {
                    c.env("ADDONHOST_DATABASE_URL", url);
                }
            }
        }
        if let Some(grant) = &self.outbound_grant {
            c.env("ADDONHOST_OUTBOUND_GRANT", grant);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let out: Output = self.command(args).output().expect("running addonhost");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "addonhost {args:?} failed:\n{}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let r = self.run(args);
        assert_ne!(
            r.code, 0,
            "addonhost {args:?} should have failed:\n{}",
            r.stdout
        );
        (r.code, r.stderr)
    }

    /// `--json` output parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// The app's config as a name → value map.
    pub fn config(&self, app: &str) -> serde_json::Map<String, serde_json::Value> {
        self.json(&["config", "-a", app])
            .as_object()
            .unwrap()
            .clone()
    }

    pub fn release_descriptions(&self, app: &str) -> Vec<String> {
        self.json(&["releases", "-a", app])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["description"].as_str().unwrap().to_string())
            .collect()
    }

    /// The app's release versions, ascending.
    pub fn release_versions(&self, app: &str) -> Vec<i64> {
        let mut versions: Vec<i64> = self
            .json(&["releases", "-a", app])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_i64().unwrap())
            .collect();
        versions.sort();
        versions
    }

    /// Provisions `spec` on `app` and returns the add-on's JSON.
    pub fn create(&self, spec: &str, app: &str, extra: &[&str]) -> serde_json::Value {
        // --json goes before any `-- options`.
        let mut a = vec!["addons:create", spec, "-a", app, "--json"];
        a.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    /// An in-process host on the same data dir (the embedding API), with
    /// the environment's outbound grants.
    pub fn host(&self) -> Host {
        let mut opts =
            HostOptions::new(self.data(), std::env::split_paths(&self.plugins).collect());
        opts.database = self.database_url();
        if let Some(pooled) = self.database.as_ref().and_then(|d| d.client_url()) {
            opts.database_options = addonhost::store::PgOptions {
                pooler: true,
                listen_url: opts.database.replace(pooled),
            };
        }
        self.grant_outbound(&mut opts.outbound);
        Host::open(opts).unwrap()
    }

    /// Adds the environment's outbound grants to `policy`.
    pub fn grant_outbound(&self, policy: &mut addonhost::platform::OutboundPolicy) {
        for grant in self.outbound_grant.iter().flat_map(|g| g.split(';')) {
            let (id, list) = addonhost::platform::outbound::parse_grant(grant).unwrap();
            policy.grant_to(&id, list);
        }
    }
}

/// Everything a user can see of the store, to prove a failed call changed nothing.
pub fn snapshot(env: &Env, app: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    (
        env.json(&["config", "-a", app]),
        env.json(&["releases", "-a", app]),
        env.json(&["addons", "-a", app]),
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub mod db;
pub mod dns;
pub mod http;
pub mod partner;
pub mod tls;

/// Where an HTML page's (first) form posts: its `action`.
pub fn form_action(html: &str) -> String {
    let action = html
        .split("action=\"")
        .nth(1)
        .expect("a form with an action");
    action.split('"').next().unwrap().to_string()
}

/// The `<input name value>` pairs of an HTML page (the SSO form), unescaped.
pub fn form_fields(html: &str) -> Vec<(String, String)> {
    let field = |chunk: &str| -> Option<(String, String)> {
        let name = chunk.split("name=\"").nth(1)?.split('"').next()?;
        let value = chunk.split("value=\"").nth(1)?.split('"').next()?;
        let value = value
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        Some((name.to_string(), value))
    };
    html.split("<input").skip(1).filter_map(field).collect()
}

/// A running `addonhost serve` on an ephemeral port of 127.0.0.1.
pub struct Server {
    pub child: std::process::Child,
    /// host:port
    pub addr: String,
    pub token: String,
    /// Every line the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(env: &Env) -> Server {
        Server::start_with(env.command(&["serve", "--port", "0"]), env)
    }

    /// Starts `serve` as `command` says (an `env.command(["serve", …])`
    /// with more options or environment); the token is read from the data
    /// dir the command uses.
    pub fn start_with(mut command: Command, env: &Env) -> Server {
        use std::io::BufRead;
        let data = command
            .get_envs()
            .find(|(k, _)| *k == "ADDONHOST_DATA")
            .and_then(|(_, v)| v.map(PathBuf::from))
            .unwrap_or_else(|| env.data().to_path_buf());
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting addonhost serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!(
                        "serve exited before listening:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                })
                .unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("serving on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let token = std::fs::read_to_string(data.join("api-token"))
            .expect("serve made its API token")
            .trim()
            .to_string();
        Server {
            child,
            addr,
            token,
            log,
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> http::Response {
        http::request(&self.addr, "GET", path, headers, b"")
    }

    /// A JSON API call with the bearer token.
    pub fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> http::Response {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        http::request(
            &self.addr,
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// [`Server::api`], with a server that is gone as an error.
    pub fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<http::Response> {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        http::try_request(
            &self.addr,
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Signs in to the dashboard; returns the session cookie.
    pub fn sign_in(&self) -> String {
        let body = format!("token={}", self.token);
        let r = http::request(
            &self.addr,
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        r.cookies()
            .into_iter()
            .find(|c| c.starts_with("addonhost_session="))
            .expect("session cookie")
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credentials inside an app's `KV_URL`.
pub struct KvUrl {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The namespace's path on the server.
    pub path: String,
}

impl KvUrl {
    pub fn parse(url: &str) -> KvUrl {
        let u = url::Url::parse(url).unwrap();
        KvUrl {
            url: url.to_string(),
            user: u.username().to_string(),
            password: u.password().unwrap_or("").to_string(),
            path: u.path().to_string(),
        }
    }

    /// The Basic authorization header value for these credentials.
    pub fn auth(&self) -> String {
        http::basic(&self.user, &self.password)
    }
}

impl Server {
    /// The server's port.
    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// The `Host` of add-on `service`'s own origin (`kv.localhost:PORT`).
    pub fn addon_host(&self, service: &str) -> String {
        format!("{service}.localhost:{}", self.port())
    }

    /// A request to add-on `service`'s own origin.
    pub fn addon_request(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        let host = self.addon_host(service);
        let mut all = vec![("host", host.as_str())];
        all.extend_from_slice(headers);
        http::request(&self.addr, method, path, &all, body)
    }

    /// The fields of the SSO form the dashboard page of `app`'s add-on
    /// `attachment` auto-submits (with `?issue_no=42` passed through).
    pub fn sso_form(&self, app: &str, session: &str, attachment: &str) -> Vec<(String, String)> {
        let page = self.get(
            &format!("/myapps/{app}/addons/{attachment}?issue_no=42"),
            &[("cookie", session)],
        );
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        assert!(
            html.contains(&format!(".localhost:{}/sso/login\"", self.port())),
            "the form posts to the add-on's own origin: {html}"
        );
        form_fields(&html)
    }

    /// Posts an SSO form to `service`'s login route, on its own origin.
    pub fn sso_login(&self, service: &str, fields: &[(String, String)]) -> http::Response {
        self.addon_request(
            service,
            "POST",
            "/sso/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            http::form(fields).as_bytes(),
        )
    }

    /// Signs in through the dashboard and SSO into `attachment` of `app`;
    /// answers the add-on page the login lands on.
    pub fn sso_page(&self, app: &str, attachment: &str, service: &str) -> http::Response {
        let session = self.sign_in();
        let fields = self.sso_form(app, &session, attachment);
        let login = self.sso_login(service, &fields);
        assert_eq!(login.status, 302, "{}", login.text());
        let cookie = login
            .cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("addonhost_sso_{service}=")))
            .expect("the add-on's session cookie");
        let landing = login.header("location").unwrap().to_string();
        self.addon_request(service, "GET", &landing, &[("cookie", &cookie)], b"")
    }

    /// Creates `app` and provisions each add-on body (`{"plan": …}`) on it
    /// through the API.
    pub fn app_with(&self, app: &str, addons: &[serde_json::Value]) {
        let r = self.api(
            "POST",
            "/api/apps",
            Some(serde_json::json!({ "name": app })),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        for body in addons {
            let r = self.api(
                "POST",
                &format!("/api/apps/{app}/addons"),
                Some(body.clone()),
            );
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }

    /// The app's current `KV_URL`, taken apart.
    pub fn kv_url(&self, app: &str) -> KvUrl {
        let config = self
            .api("GET", &format!("/api/apps/{app}/config"), None)
            .json();
        KvUrl::parse(config["KV_URL"].as_str().expect("KV_URL is set"))
    }

    /// Stores `value` under `key` in the namespace of `kv`.
    pub fn kv_put(&self, kv: &KvUrl, key: &str, value: &[u8]) -> http::Response {
        http::request(
            &self.addr,
            "PUT",
            &format!("{}/{key}", kv.path),
            &[("authorization", &kv.auth())],
            value,
        )
    }
}
