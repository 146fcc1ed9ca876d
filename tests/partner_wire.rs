//! Heroku's Add-on Partner API as it runs against real platforms, between
//! real processes on 127.0.0.1:
//! - over HTTPS both ways, with a certificate authority the test makes:
//!   provisioning, plan change, rotation, SSO, a partner-initiated change
//!   and deprovision through TLS; a certificate for another name, one from
//!   a CA nobody trusts and plain http off the loopback refused, each named;
//! - changes owed to a platform kept in the store (the outbox): a platform
//!   that is down, a provider killed with SIGKILL and restarted, and the
//!   platform ends with the newest credentials; on PostgreSQL with two
//!   provider servers, delivered once;
//! - an asynchronous provisioning completed by the add-on reaching the
//!   platform (config, then `actions/provision`).

use crate::support;

use std::time::{Duration, Instant};

use crate::support::tls::{TestCa, TlsProxy};
use crate::support::{Env, Server};
use serde_json::{json, Value};

/// Waits for `what` to hold, up to `secs` (an event, not a clock).
fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An environment whose plugin folder is empty (remote manifests go there).
fn platform_env() -> Env {
    let mut env = Env::new();
    let dir = env.data().join("remote");
    std::fs::create_dir_all(&dir).unwrap();
    env.plugins = dir.to_str().unwrap().to_string();
    env
}

/// `addonhost partner:manifest` of `service` on `a` for `url`, made a remote
/// manifest (with the plans of the add-on's own manifest at `own`).
fn remote_manifest(a: &Env, service: &str, url: &str, own: &str) -> Value {
    let mut m: Value =
        serde_json::from_str(&a.ok(&["partner:manifest", service, "--url", url])).unwrap();
    let own: Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join(own).join("addon-manifest.json")).unwrap(),
    )
    .unwrap();
    m["plans"] = own["plans"].clone();
    m
}

/// Puts `manifest` in `b`'s plugin folder (replacing what is there).
fn install_manifest(b: &Env, manifest: &Value) {
    let id = manifest["id"].as_str().unwrap();
    let staged = b.data().join(format!("{id}-staged"));
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(
        staged.join("addon-manifest.json"),
        serde_json::to_string_pretty(manifest).unwrap(),
    )
    .unwrap();
    let dest = std::path::Path::new(&b.plugins).join(id);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staged, dest).unwrap();
}

/// Runs `args` on `env` with `vars` in the environment; (exit code,
/// stdout, stderr).
fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = env.command(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output().expect("running addonhost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn port_of(server: &Server) -> u16 {
    server.addr.rsplit(':').next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------- HTTPS both ways

/// A serves kv in provider mode behind TLS; B, behind TLS too, offers it as
/// a remote add-on. Both trust the test's CA with `--extra-ca`, and every
/// call between them — B to A's Partner API, A to B's Platform API — goes
/// over HTTPS, certificates checked against the name.
#[test]
fn provider_and_platform_speak_the_partner_api_over_https_with_a_private_ca() {
    let ca = TestCa::new();
    let ca_file = ca.ca().to_str().unwrap().to_string();
    let (cert, key) = ca.leaf("localhost", &["localhost", "kv.localhost"], "ca");
    let proxy_a = TlsProxy::start(&cert, &key);
    let proxy_b = TlsProxy::start(&cert, &key);
    let a_url = format!("https://localhost:{}", proxy_a.port);
    let b_url = format!("https://localhost:{}", proxy_b.port);

    // The operator's CA, in the environment (ADDONHOST_EXTRA_CA) here and
    // as --extra-ca below.
    let trusting = |mut c: std::process::Command| {
        c.env("ADDONHOST_EXTRA_CA", &ca_file);
        c
    };
    let b = platform_env();
    let server_b = Server::start_with(
        trusting(b.command(&["serve", "--port", "0", "--url", &b_url])),
        &b,
    );
    proxy_b.forward_to(port_of(&server_b));
    let a = Env::new();
    let server_a = Server::start_with(
        trusting(a.command(&[
            "serve",
            "--port",
            "0",
            "--url",
            &a_url,
            "--platform-api",
            &format!("{b_url}/platform"),
        ])),
        &a,
    );
    proxy_a.forward_to(port_of(&server_a));
    let manifest = remote_manifest(&a, "kv", &a_url, "plugins/kv");
    assert!(manifest["api"]["production"]["base_url"]
        .as_str()
        .unwrap()
        .starts_with("https://localhost:"));
    install_manifest(&b, &manifest);
    // B's commands call A over HTTPS, trusting the test CA.
    let on_b = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &b_url]);
        let (code, out, err) = run_with(&b, &all, &[("ADDONHOST_EXTRA_CA", &ca_file)]);
        assert_eq!(code, 0, "addonhost {all:?}: {err}");
        out
    };

    // Provisioning, through TLS both ways (B's grant travels to A).
    on_b(&["apps:create", "shop"]);
    let created: Value =
        serde_json::from_str(&on_b(&["addons:create", "kv:mini", "-a", "shop", "--json"])).unwrap();
    assert_eq!(created["addon"]["state"], "provisioned", "{created}");
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(a.json(&["addons:info", &uuid])["state"], "provisioned");
    let kv_url = b.config("shop")["KV_URL"].as_str().unwrap().to_string();
    assert!(
        kv_url.starts_with("https://") && kv_url.contains(&format!("@localhost:{}/", proxy_a.port)),
        "a resource A serves: {kv_url}"
    );

    // Plan change.
    on_b(&["addons:upgrade", "KV", "kv:pro", "-a", "shop"]);
    assert_eq!(a.json(&["addons:info", &uuid])["plan"], "pro");
    assert_eq!(b.json(&["addons:info", "KV", "-a", "shop"])["plan"], "pro");

    // Rotation asked by B.
    on_b(&["addons:rotate", "KV", "-a", "shop"]);
    let rotated = b.config("shop")["KV_URL"].as_str().unwrap().to_string();
    assert_ne!(rotated, kv_url);
    assert_eq!(
        a.config(&format!(
            "partner-{}",
            uuid.replace('-', "").chars().take(22).collect::<String>()
        ))["KV_URL"],
        rotated.as_str()
    );

    // SSO: B's dashboard signs the form; the browser posts it over HTTPS to
    // A's kv origin and lands on the kv dashboard.
    let signed_in = ca.request(
        "localhost",
        proxy_b.port,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={}", server_b.token).as_bytes(),
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let session = signed_in
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-addonhost_session="))
        .expect("the dashboard's session cookie");
    let page = ca.request(
        "localhost",
        proxy_b.port,
        "GET",
        "/myapps/shop/addons/KV",
        &[("cookie", &session)],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let action = support::form_action(&html);
    assert_eq!(
        action,
        format!("https://kv.localhost:{}/sso/login", proxy_a.port)
    );
    let fields = support::form_fields(&html);
    let login = ca.request(
        "kv.localhost",
        proxy_a.port,
        "POST",
        "/sso/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        support::http::form(&fields).as_bytes(),
    );
    assert_eq!(login.status, 302, "{}", login.text());
    let cookies = login.cookies();
    let sso = cookies
        .iter()
        .find(|c| c.starts_with("__Host-addonhost_sso_kv="))
        .unwrap_or_else(|| panic!("a Secure session cookie behind https: {cookies:?}"))
        .clone();
    let landing = login.header("location").unwrap().to_string();
    let dashboard = ca.request(
        "kv.localhost",
        proxy_a.port,
        "GET",
        &landing,
        &[("cookie", &sso)],
        b"",
    );
    assert_eq!(dashboard.status, 200, "{}", dashboard.text());
    assert!(dashboard
        .text()
        .contains(created["addon"]["addon_id"].as_str().unwrap()));

    // A partner-initiated roll on A reaches B over HTTPS (A trades B's
    // grant at B's /oauth/token, then PATCHes the config).
    let releases = b.release_versions("shop").len();
    let roll = ca.request(
        "kv.localhost",
        proxy_a.port,
        "POST",
        &format!("{landing}/roll"),
        &[("cookie", &sso)],
        b"",
    );
    assert!(roll.status == 302 || roll.status == 303, "{}", roll.text());
    wait_for("the rolled KV_URL on B", 30, || {
        b.config("shop")["KV_URL"] != rotated.as_str()
    });
    assert_eq!(b.release_versions("shop").len(), releases + 1);
    assert!(b.release_descriptions("shop")[0].contains("Update KV_URL by kv"));

    // Deprovision.
    on_b(&["addons:destroy", "KV", "-a", "shop", "--confirm", "shop"]);
    assert!(!b.config("shop").contains_key("KV_URL"));
    let (code, _) = a.fails(&["addons:info", &uuid]);
    assert_eq!(code, 3, "deprovisioned on A too");

    // What is refused, each named, with nothing made on either side.
    let on_a_before = a.json(&["addons"]).as_array().unwrap().len();
    on_b(&["apps:create", "shop2"]);
    let refused = |args: &[&str], why: &[&str]| {
        let mut all = vec!["addons:create", "kv:mini", "-a", "shop2", "--url", &b_url];
        all.extend_from_slice(args);
        let (code, err) = b.fails(&all);
        assert_eq!(code, 5, "{err}");
        eprintln!("refused: {}", err.trim());
        for w in why {
            assert!(err.contains(w), "{w:?} in: {err}");
        }
        assert!(err.contains("nothing changed"), "{err}");
        assert_eq!(b.json(&["addons", "-a", "shop2"]), json!([]));
        assert_eq!(a.json(&["addons"]).as_array().unwrap().len(), on_a_before);
    };
    // Without --extra-ca: the test CA is nobody's root.
    refused(
        &[],
        &[
            "not issued by a trusted certificate authority",
            "--extra-ca",
        ],
    );
    // A certificate from another CA, the operator's CA trusted.
    let (other_cert, other_key) = ca.leaf("other", &["localhost"], "other-ca");
    let proxy_other = TlsProxy::start(&other_cert, &other_key);
    proxy_other.forward_to(port_of(&server_a));
    let mut m = manifest.clone();
    m["api"]["production"]["base_url"] = json!(format!(
        "https://localhost:{}/partner/kv/heroku/resources",
        proxy_other.port
    ));
    install_manifest(&b, &m);
    refused(
        &["--extra-ca", &ca_file],
        &["not issued by a trusted certificate authority"],
    );
    // A's certificate, called by another name (its address).
    let mut m = manifest.clone();
    m["api"]["production"]["base_url"] = json!(format!(
        "https://127.0.0.1:{}/partner/kv/heroku/resources",
        proxy_a.port
    ));
    install_manifest(&b, &m);
    refused(
        &["--extra-ca", &ca_file],
        &["certificate is for another name", "127.0.0.1"],
    );
    // Plain http off the loopback: never called.
    let mut m = manifest.clone();
    m["api"]["production"]["base_url"] =
        json!("http://provider.invalid/partner/kv/heroku/resources");
    install_manifest(&b, &m);
    refused(
        &["--extra-ca", &ca_file],
        &["plain http://", "--allow-plain-http"],
    );
}

/// The host refuses to send a calling platform grants and tokens in clear
/// off the loopback, and says so at start; `partner:manifest` warns of an
/// http production URL, which Heroku refuses.
#[test]
fn plain_http_platforms_are_refused_and_http_manifests_warned_of() {
    let a = Env::new();
    let mut serve = a
        .command(&[
            "serve",
            "--port",
            "0",
            "--platform-api",
            "http://api.example.com/platform",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("serve started with a plain http:// platform off the loopback");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("--platform-api http://api.example.com/platform")
            && err.contains("--allow-plain-http"),
        "{err}"
    );
    let warned = a.run(&[
        "partner:manifest",
        "kv",
        "--url",
        "http://addons.example.com",
    ]);
    assert_eq!(warned.code, 0, "{}", warned.stderr);
    assert!(
        warned.stderr.contains("warning") && warned.stderr.contains("https"),
        "{}",
        warned.stderr
    );
    let fine = a.run(&[
        "partner:manifest",
        "kv",
        "--url",
        "https://addons.example.com",
    ]);
    assert_eq!(fine.code, 0, "{}", fine.stderr);
    assert!(!fine.stderr.contains("warning"), "{}", fine.stderr);
}

// ---------------------------------------------------------------- changes owed to a platform

/// The app on a provider standing for the platform's app of `uuid`.
fn partner_app(uuid: &str) -> String {
    format!(
        "partner-{}",
        uuid.replace('-', "").chars().take(22).collect::<String>()
    )
}

/// A running platform (an addonhost offering a provider's add-ons as remote
/// ones) that can go down and come back on the same address.
struct Platform {
    env: Env,
    server: Option<Server>,
    port: u16,
}

impl Platform {
    fn start() -> Platform {
        let env = platform_env();
        let server = Server::start(&env);
        let port = port_of(&server);
        Platform {
            env,
            server: Some(server),
            port,
        }
    }

    /// Its Platform API base, where providers call back.
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}/platform", self.port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Killed (SIGKILL): down, every request refused.
    fn down(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// Up again on the same port and data.
    fn up(&mut self) {
        let port = self.port.to_string();
        self.server = Some(Server::start_with(
            self.env.command(&["serve", "--port", &port]),
            &self.env,
        ));
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("the platform is up")
    }

    /// `addonhost addons:create` on the platform (its CLI calls the provider).
    fn create(&self, spec: &str, app: &str, options: &[&str]) -> Value {
        let url = self.url();
        let mut args = vec!["addons:create", spec, "-a", app, "--url", &url, "--json"];
        if !options.is_empty() {
            args.push("--");
            args.extend_from_slice(options);
        }
        serde_json::from_str(&self.env.ok(&args)).unwrap()
    }
}

/// A provider serving its plugins to `platform`.
fn provider_for(env: &Env, platform: &Platform) -> Server {
    Server::start_with(
        env.command(&["serve", "--port", "0", "--platform-api", &platform.api()]),
        env,
    )
}

/// SIGKILL: no shutdown of any kind.
fn kill9(server: Server) {
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Waits until `server` logged a failed delivery to its platform.
fn a_delivery_failed(server: &Server) {
    wait_for("a failed delivery to the platform", 30, || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("delivery to") && l.contains("failed"))
    });
}

/// The value of a Prometheus sample of `server` (0 when absent).
fn sample(server: &Server, name: &str, labels: &str) -> f64 {
    let text = server
        .get(
            "/metrics",
            &[("authorization", &format!("Bearer {}", server.token))],
        )
        .text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A rotation on the provider while the platform is down: the change the
/// platform is owed is in the provider's store with the rotation itself.
/// The provider is killed with SIGKILL after a failed attempt and
/// restarted; once the platform is back it ends with the new credentials.
#[test]
fn a_rotation_owed_to_a_platform_that_is_down_survives_sigkill_and_restart() {
    let mut platform = Platform::start();
    let a = Env::new();
    let provider = provider_for(&a, &platform);
    install_manifest(
        &platform.env,
        &remote_manifest(&a, "kv", &format!("http://{}", provider.addr), "plugins/kv"),
    );
    platform.env.ok(&["apps:create", "shop"]);
    let created = platform.create("kv:mini", "shop", &[]);
    assert_eq!(created["addon"]["state"], "provisioned");
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();
    let before = platform.env.config("shop")["KV_URL"].clone();

    platform.down();
    let r = provider.api("POST", &format!("/api/addons/{uuid}/rotate"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = a.config(&partner_app(&uuid))["KV_URL"].clone();
    assert_ne!(rotated, before);
    a_delivery_failed(&provider);
    kill9(provider);

    let _restarted = provider_for(&a, &platform);
    platform.up();
    wait_for("the rotated KV_URL on the platform", 90, || {
        platform.env.config("shop")["KV_URL"] == rotated
    });
    assert!(platform.env.release_descriptions("shop")[0].contains("Update KV_URL by kv"));
}

/// The same on PostgreSQL with two provider servers on one database: the
/// one that made the change is killed, the other delivers it — once.
#[test]
fn on_postgres_a_change_owed_by_a_killed_server_is_delivered_once_by_another() {
    let mut platform = Platform::start();
    let a1 = Env::on_postgres();
    let a2 = a1.sibling();
    let provider1 = provider_for(&a1, &platform);
    let provider2 = provider_for(&a2, &platform);
    install_manifest(
        &platform.env,
        &remote_manifest(
            &a1,
            "kv",
            &format!("http://{}", provider1.addr),
            "plugins/kv",
        ),
    );
    platform.env.ok(&["apps:create", "shop"]);
    let created = platform.create("kv:mini", "shop", &[]);
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();

    platform.down();
    let r = provider1.api("POST", &format!("/api/addons/{uuid}/rotate"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = a1.config(&partner_app(&uuid))["KV_URL"].clone();
    a_delivery_failed(&provider1);
    kill9(provider1);
    platform.up();
    wait_for("the rotated KV_URL on the platform", 90, || {
        platform.env.config("shop")["KV_URL"] == rotated
    });
    assert!(platform.env.release_descriptions("shop")[0].contains("Update KV_URL by kv"));
    wait_for("nothing owed any more", 30, || {
        a2.json(&["partner:pending"]) == json!([])
    });
    // Time for a second delivery to arrive, were there one.
    std::thread::sleep(Duration::from_secs(3));
    let platform_requests = sample(
        platform.server(),
        "addonhost_http_requests_total",
        "platform_api",
    );
    assert_eq!(
        platform_requests, 2.0,
        "the grant traded once and the config sent once, by one server"
    );
    assert_eq!(
        sample(
            &provider2,
            "addonhost_partner_deliveries_total",
            "outcome=\"delivered\""
        ),
        1.0
    );
}

/// A platform that refuses the provider's credentials: the change is given
/// up on at once (no retry changes that), audited, shown by
/// `partner:pending` and the metrics with why; once the operator fixed it,
/// `partner:retry` delivers it.
#[test]
fn an_operator_sees_what_a_platform_refused_and_retries_it() {
    let platform = Platform::start();
    let a = Env::new();
    let provider = provider_for(&a, &platform);
    let mut manifest =
        remote_manifest(&a, "kv", &format!("http://{}", provider.addr), "plugins/kv");
    let good = manifest.clone();
    manifest["api"]["client_secret"] = json!("not-the-secret-the-provider-has-0123456789");
    install_manifest(&platform.env, &manifest);
    platform.env.ok(&["apps:create", "shop"]);
    let created = platform.create("kv:mini", "shop", &[]);
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();

    let r = provider.api("POST", &format!("/api/addons/{uuid}/rotate"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = a.config(&partner_app(&uuid))["KV_URL"].clone();
    wait_for("the delivery given up on", 30, || {
        a.json(&["partner:pending"])[0]["state"] == "failed"
    });
    let owed = a.json(&["partner:pending"]);
    assert_eq!(owed.as_array().unwrap().len(), 1, "{owed}");
    assert_eq!(owed[0]["uuid"], uuid.as_str());
    assert_eq!(owed[0]["vars"], json!(["KV_URL"]));
    assert_eq!(owed[0]["attempts"], 1);
    let error = owed[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("oauth/token"),
        "{error}"
    );
    assert!(
        !owed.to_string().contains(rotated.as_str().unwrap()),
        "the view shows no value"
    );
    let table = a.ok(&["partner:pending"]);
    assert!(table.contains(&uuid) && table.contains("failed"), "{table}");
    assert_eq!(
        sample(
            &provider,
            "addonhost_partner_owed_changes_failed",
            "addon=\"kv\""
        ),
        1.0
    );
    assert_eq!(
        sample(
            &provider,
            "addonhost_partner_deliveries_total",
            "outcome=\"failed\""
        ),
        1.0
    );
    let audit = a.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "partner:forward"
                && e["detail"].as_str().unwrap().contains("partner:retry")),
        "{audit}"
    );
    assert_ne!(platform.env.config("shop")["KV_URL"], rotated);

    // The operator fixes the platform's side, then retries.
    install_manifest(&platform.env, &good);
    let (code, err) = a.fails(&["partner:retry", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(code, 3, "an unknown uuid is named: {err}");
    wait_for("the retried KV_URL on the platform", 60, || {
        if platform.env.config("shop")["KV_URL"] == rotated {
            return true;
        }
        if a.json(&["partner:pending"])[0]["state"] == "failed" {
            // The platform may not have reloaded its manifest yet.
            a.ok(&["partner:retry", &uuid]);
        }
        false
    });
    wait_for("nothing owed any more", 30, || {
        a.json(&["partner:pending"]) == json!([])
    });
    assert_eq!(
        sample(&provider, "addonhost_partner_owed_changes", "addon=\"kv\""),
        0.0
    );
}

/// Provider mode, asynchronous: the add-on answers pending (the platform
/// gets a 202), then completes while the platform is down; the provider is
/// killed and restarted; once the platform is back the completion reaches
/// it — the config, then `actions/provision` — and its add-on is
/// provisioned with the add-on's vars.
#[test]
fn an_async_provisioning_completed_by_the_add_on_reaches_the_platform_across_a_restart() {
    let mut platform = Platform::start();
    let a = Env::new();
    let provider = provider_for(&a, &platform);
    install_manifest(
        &platform.env,
        &remote_manifest(
            &a,
            "hostile",
            &format!("http://{}", provider.addr),
            "tests/plugins/hostile",
        ),
    );
    platform.env.ok(&["apps:create", "shop"]);
    let created = platform.create("hostile", "shop", &["--attack", "pending"]);
    assert_eq!(created["addon"]["state"], "provisioning", "{created}");
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();
    let id = created["addon"]["addon_id"].as_str().unwrap().to_string();
    assert_eq!(a.json(&["addons:info", &uuid])["state"], "provisioning");
    assert!(!platform.env.config("shop").contains_key("HOSTILE_URL"));

    platform.down();
    let r = support::http::request(
        &provider.addr,
        "POST",
        &format!("/addons/hostile/complete/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.json(&["addons:info", &uuid])["state"], "provisioned");
    let url = a.config(&partner_app(&uuid))["HOSTILE_URL"].clone();
    assert!(url.is_string());
    a_delivery_failed(&provider);
    kill9(provider);
    let _restarted = provider_for(&a, &platform);
    platform.up();
    wait_for("the platform's add-on provisioned", 90, || {
        platform.env.json(&["addons:info", "HOSTILE", "-a", "shop"])["state"] == "provisioned"
    });
    assert_eq!(platform.env.config("shop")["HOSTILE_URL"], url);
    assert!(
        platform
            .env
            .release_descriptions("shop")
            .iter()
            .any(|d| d.starts_with("Attach HOSTILE")),
        "{:?}",
        platform.env.release_descriptions("shop")
    );
}
