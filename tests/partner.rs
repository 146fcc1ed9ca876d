//! Heroku's add-on protocol both ways, over real HTTP between real
//! processes on 127.0.0.1:
//! - provider mode: `serve` answers the Add-on Partner API for its plugins,
//!   checked the way Heroku's kensa checks a partner, for every example;
//! - platform mode: remote add-ons provisioned, changed, rotated, signed in
//!   to and destroyed over HTTP — through another addonhost serving kv, and
//!   through a provider of our own in Python (tests/partners/provider.py),
//!   sync and async — and every way a provider can misbehave, each a clear
//!   error with nothing written;
//! - the Platform API side: a provider's token reaches its own add-on only.

use crate::support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{http, snapshot, unix_now, Env, Server};
use serde_json::{json, Value};

const PY_PASSWORD: &str = "pyprov-password-0123456789abcdef0123";
const PY_SALT: &str = "pyprov-salt-0123456789abcdef0123456789";

/// Waits for `what` to hold, up to 20 s (an event, not a clock).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An environment whose plugin folder holds the given manifests, one folder
/// per id (remote add-ons: no component).
fn env_with_manifests(manifests: &[Value]) -> Env {
    let mut env = Env::new();
    let dir = env.data().join("remote");
    for m in manifests {
        let id = m["id"].as_str().unwrap();
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(
            dir.join(id).join("addon-manifest.json"),
            serde_json::to_string_pretty(m).unwrap(),
        )
        .unwrap();
    }
    env.plugins = dir.to_str().unwrap().to_string();
    env
}

/// `addonhost partner:manifest` of `service` on `a`, made a remote manifest
/// for another platform (with the plans addonhost's catalog lists).
fn remote_manifest_of(a: &Env, server: &Server, service: &str) -> Value {
    let mut m: Value = serde_json::from_str(&a.ok(&[
        "partner:manifest",
        service,
        "--url",
        &format!("http://{}", server.addr),
    ]))
    .unwrap();
    let own: Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::root()
                .join("plugins")
                .join(service)
                .join("addon-manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    m["plans"] = own["plans"].clone();
    m
}

// ---------------------------------------------------------------- provider mode

/// The form of a platform's SSO into `id` (with the uuid it provisioned
/// under), signed with `salt` at `timestamp`.
fn sso_fields(
    id: &str,
    uuid: &str,
    salt: &str,
    timestamp: i64,
    nav: &str,
) -> Vec<(String, String)> {
    vec![
        ("id".into(), id.into()),
        ("token".into(), addonhost::sso::token(id, salt, timestamp)),
        ("timestamp".into(), timestamp.to_string()),
        ("resource_id".into(), uuid.into()),
        (
            "resource_token".into(),
            addonhost::sso::token(uuid, salt, timestamp),
        ),
        ("nav-data".into(), nav.into()),
        ("email".into(), "username@example.com".into()),
        ("app".into(), "myapp".into()),
        ("user_id".into(), "user-1".into()),
    ]
}

/// Heroku's kensa checks, against one add-on served in provider mode: the
/// manifest, provisioning with and without credentials, repeated
/// provisions, plan change, SSO (wrong token, stale timestamp, the nav-data
/// cookie, an HTML page with the nav header), deprovision.
fn kensa_checks(a: &Env, server: &Server, service: &str) {
    let m = remote_manifest_of(a, server, service);
    let api = &m["api"];
    // Manifest.
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    assert!(api.is_object());
    let regions = api["regions"].as_array().unwrap();
    assert!(regions.iter().any(|r| r == "us" || r == "*"));
    assert!(!api["password"].as_str().unwrap().is_empty());
    assert!(api["test"].is_object() && api["production"].is_object());
    assert!(api.get("username").is_none());
    let prefix = api["config_vars_prefix"].as_str().unwrap();
    for v in api["config_vars"].as_array().unwrap() {
        let v = v.as_str().unwrap();
        assert!(v.starts_with(&format!("{prefix}_")), "{v}");
    }
    let base_url = api["production"]["base_url"].as_str().unwrap();
    let base_path = url::Url::parse(base_url).unwrap().path().to_string();
    let auth = http::basic(service, api["password"].as_str().unwrap());
    let wrong = http::basic("wrong", "secret");
    let json_headers = |auth: &str| -> Vec<(String, String)> {
        vec![
            ("authorization".into(), auth.into()),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ]
    };
    let call = |method: &str, path: &str, auth: &str, body: &Value| {
        let headers = json_headers(auth);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http::request(
            &server.addr,
            method,
            path,
            &headers,
            body.to_string().as_bytes(),
        )
    };
    let plans: Vec<&str> = m["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let payload = |uuid: &str| {
        json!({
            "heroku_id": "app7351962@kensa.heroku.com",
            "plan": plans[0],
            // Heroku's own: this host answers to Heroku unless configured.
            "callback_url": format!("https://api.heroku.com/vendor/apps/{uuid}"),
            "logplex_token": null,
            "region": "amazon-web-services::us-east-1",
            "options": {},
            "uuid": uuid,
            "an_unknown_field": {"is": "accepted"},
        })
    };

    // Provision, with credentials and without.
    let uuid = uuid::Uuid::new_v4().to_string();
    let r = call("POST", &base_path, &wrong, &payload(&uuid));
    assert_eq!(r.status, 401, "{service}: {}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let r = call("POST", &base_path, "", &payload(&uuid));
    assert_eq!(r.status, 401, "{service}: no credentials");
    let r = call("POST", &base_path, &auth, &payload(&uuid));
    assert_eq!(r.status, 200, "{service}: {}", r.text());
    let answer = r.json();
    let id = answer["id"].as_str().expect("an id").to_string();
    assert!(
        !id.contains("7351962"),
        "the id does not carry the heroku_id"
    );
    let config = answer["config"].as_object().expect("config is a hash");
    for (k, v) in config {
        assert!(
            api["config_vars"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == k),
            "{service}: {k} is in the manifest"
        );
        let v = v.as_str().expect("values are strings");
        if k.ends_with("_URL") {
            let u = url::Url::parse(v).unwrap();
            assert!(u.has_host(), "{v}");
        }
    }
    // The same uuid again: the same resource; another: another one.
    let again = call("POST", &base_path, &auth, &payload(&uuid));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], answer["id"]);
    let other = call(
        "POST",
        &base_path,
        &auth,
        &payload(&uuid::Uuid::new_v4().to_string()),
    );
    assert_eq!(other.status, 200);
    assert_ne!(other.json()["id"], answer["id"], "many_per_app: new ids");

    // Wrong credentials on an unknown id are 401, not 404.
    let r = call(
        "PUT",
        &format!("{base_path}/nope"),
        &wrong,
        &json!({"plan": plans[0]}),
    );
    assert_eq!(r.status, 401);
    let r = call(
        "PUT",
        &format!("{base_path}/nope"),
        &auth,
        &json!({"plan": plans[0]}),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Plan change.
    let path = format!("{base_path}/{id}");
    let to = plans.last().unwrap();
    let r = call(
        "PUT",
        &path,
        &wrong,
        &json!({"plan": to, "heroku_id": "app1@kensa.heroku.com"}),
    );
    assert_eq!(r.status, 401);
    let r = call(
        "PUT",
        &path,
        &auth,
        &json!({"plan": to, "heroku_id": "app1@kensa.heroku.com", "uuid": uuid}),
    );
    assert_eq!(r.status, 200, "{service}: {}", r.text());
    let info = a.json(&["addons:info", &uuid]);
    assert_eq!(info["plan"], *to);

    // SSO on the add-on's origin (the manifest's sso_url).
    let sso_url = url::Url::parse(api["production"]["sso_url"].as_str().unwrap()).unwrap();
    assert_eq!(
        sso_url.host_str(),
        Some(format!("{service}.localhost").as_str())
    );
    let salt = api["sso_salt"].as_str().unwrap();
    let nav = "eyJhZGRvbiI6IllvdXIgQWRkb24ifQ";
    let post = |fields: &[(String, String)]| {
        server.addon_request(
            service,
            "POST",
            sso_url.path(),
            &[("content-type", "application/x-www-form-urlencoded")],
            http::form(fields).as_bytes(),
        )
    };
    let now = unix_now();
    let mut bad = sso_fields(&id, &uuid, salt, now, nav);
    bad[1].1 = "invalid".into();
    assert_eq!(post(&bad).status, 403, "{service}: a wrong token");
    let stale = sso_fields(&id, &uuid, salt, now - 6 * 60, nav);
    assert_eq!(post(&stale).status, 403, "{service}: six minutes old");
    let login = post(&sso_fields(&id, &uuid, salt, now, nav));
    assert_eq!(login.status, 302, "{service}: {}", login.text());
    let cookies = login.cookies();
    assert!(
        cookies.contains(&format!("heroku-nav-data={nav}")),
        "{cookies:?}"
    );
    let session = cookies
        .iter()
        .find(|c| c.starts_with(&format!("addonhost_sso_{}", service.replace('-', "_"))))
        .expect("a session")
        .clone();
    let landing = login.header("location").unwrap().to_string();
    let page = server.addon_request(
        service,
        "GET",
        &landing,
        &[("cookie", &format!("{session}; heroku-nav-data={nav}"))],
        b"",
    );
    assert_eq!(page.status, 200, "{service}: {}", page.text());
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.text().contains(r#"<div id="heroku-header""#),
        "{service}: the Heroku layout: {}",
        page.text()
    );
    // The id in the path (`GET <base>/heroku/resources/:id`), on the
    // platform's address, sends the browser to the add-on's origin. (A
    // form signed at another second: each form signs in once.)
    let query = http::form(&sso_fields(&id, &uuid, salt, now - 1, nav));
    let on_origin = format!("/heroku/resources/{id}?{query}");
    let r = server.addon_request(service, "GET", &on_origin, &[], b"");
    assert_eq!(r.status, 302, "{service}: {}", r.text());
    let r = server.addon_request(service, "GET", &on_origin, &[], b"");
    assert_eq!(r.status, 403, "{service}: a form used twice");
    let query = http::form(&sso_fields(&id, &uuid, salt, now - 2, nav));
    let r = server.get(&format!("{path}?{query}"), &[]);
    assert_eq!(r.status, 307);
    let to_origin = r.header("location").unwrap().to_string();
    assert!(to_origin.starts_with(&format!("http://{}", server.addon_host(service))));
    let origin_path = &to_origin[to_origin.find("/heroku").unwrap()..];
    let r = server.addon_request(service, "GET", origin_path, &[], b"");
    assert_eq!(r.status, 302, "{service}: {}", r.text());

    // Deprovision; again is 410.
    assert_eq!(call("DELETE", &path, &wrong, &json!({})).status, 401);
    let r = call("DELETE", &path, &auth, &json!({}));
    assert_eq!(r.status, 200, "{service}: {}", r.text());
    assert_eq!(call("DELETE", &path, &auth, &json!({})).status, 410);
    let (code, err) = a.fails(&["addons:info", &uuid]);
    assert_eq!(code, 3, "deprovisioned: {err}");
}

#[test]
fn the_rust_examples_pass_heroku_partner_checks_in_provider_mode() {
    let a = Env::new();
    let server = Server::start(&a);
    for service in ["kv", "exceptions"] {
        kensa_checks(&a, &server, service);
    }
}

#[test]
fn the_python_and_javascript_examples_pass_heroku_partner_checks_in_provider_mode() {
    support::polyglot_built();
    let mut a = Env::new();
    a.plugins = support::polyglot_roots();
    let server = Server::start(&a);
    for service in ["queue", "flags"] {
        kensa_checks(&a, &server, service);
    }
}

/// Provisions one resource of `service` through `a`'s Partner API; its
/// (id, uuid).
fn provision_in_provider_mode(server: &Server, service: &str) -> (String, String) {
    let password = manifest_password(service);
    let uuid = uuid::Uuid::new_v4().to_string();
    let r = http::request(
        &server.addr,
        "POST",
        &format!("/partner/{service}/heroku/resources"),
        &[
            ("authorization", &http::basic(service, &password)),
            ("content-type", "application/json"),
        ],
        json!({
            "uuid": uuid,
            "callback_url": format!("https://api.heroku.com/vendor/apps/{uuid}"),
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json()["id"].as_str().unwrap().to_string(), uuid)
}

/// An example's `api.password` and `api.sso_salt`.
fn manifest_api(service: &str, field: &str) -> String {
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::root()
                .join("plugins")
                .join(service)
                .join("addon-manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    m["api"][field].as_str().unwrap().to_string()
}

fn manifest_password(service: &str) -> String {
    manifest_api(service, "password")
}

/// Kensa posts its own form to the `sso_url` (`id`, `token`, `timestamp`,
/// `nav-data`, `email`, `app`, and no resource fields) with `token=invalid`
/// and expects a 403; so is every wrong, malformed or stale token or
/// timestamp, on every SSO route of the add-on's origin. Only a missing
/// field is a 400.
#[test]
fn kensas_invalid_token_and_malformed_timestamps_are_403_on_every_sso_route() {
    let a = Env::new();
    let server = Server::start(&a);
    let (id, uuid) = provision_in_provider_mode(&server, "kv");
    let salt = manifest_api("kv", "sso_salt");
    let now = unix_now();
    let kensa = |token: &str, timestamp: &str| -> Vec<(String, String)> {
        vec![
            ("id".into(), id.clone()),
            ("token".into(), token.into()),
            ("timestamp".into(), timestamp.into()),
            ("nav-data".into(), "eyJhZGRvbiI6IllvdXIgQWRkb24ifQ".into()),
            ("email".into(), "username@example.com".into()),
            ("app".into(), "myapp".into()),
        ]
    };
    let good = addonhost::sso::token(&id, &salt, now);
    let stale = addonhost::sso::token(&id, &salt, now - 6 * 60);
    let mut full_but_short = sso_fields(&id, &uuid, &salt, now, "x");
    full_but_short[1].1 = "abc".into();
    let mut full_bad_ts = sso_fields(&id, &uuid, &salt, now, "x");
    full_bad_ts[2].1 = "yesterday".into();
    let forms: Vec<(&str, Vec<(String, String)>)> = vec![
        ("kensa's token=invalid", kensa("invalid", &now.to_string())),
        ("an empty token", kensa("", &now.to_string())),
        ("a timestamp that is no number", kensa(&good, "soon")),
        (
            "a timestamp of 20 digits",
            kensa(&good, "99999999999999999999"),
        ),
        ("a stale form", kensa(&stale, &(now - 6 * 60).to_string())),
        ("a short token in a full form", full_but_short),
        ("a word for a timestamp in a full form", full_bad_ts),
    ];
    let post = |path: &str, fields: &[(String, String)]| {
        server.addon_request(
            "kv",
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            http::form(fields).as_bytes(),
        )
    };
    for (what, fields) in &forms {
        let r = post("/sso/login", fields);
        assert_eq!(r.status, 403, "{what} on /sso/login: {}", r.text());
        let path = format!("/heroku/resources/{id}");
        let r = post(&path, fields);
        assert_eq!(r.status, 403, "{what} on POST {path}: {}", r.text());
        let query = http::form(fields);
        let r = server.addon_request("kv", "GET", &format!("{path}?{query}"), &[], b"");
        assert_eq!(r.status, 403, "{what} on GET {path}: {}", r.text());
    }
    // A form without a token says which field is missing.
    let mut missing = kensa("x", &now.to_string());
    missing.retain(|(k, _)| k != "token");
    let r = post("/sso/login", &missing);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("token"), "{}", r.text());
    // The platform's own form signs in.
    let r = post("/sso/login", &sso_fields(&id, &uuid, &salt, now, "x"));
    assert_eq!(r.status, 302, "{}", r.text());
}

#[test]
fn partner_api_checks_credentials_before_anything_else() {
    let a = Env::new();
    let server = Server::start(&a);
    // Malformed JSON with wrong credentials: 401, the body never read.
    let r = http::request(
        &server.addr,
        "POST",
        "/partner/kv/heroku/resources",
        &[("authorization", &http::basic("kv", "not-the-password"))],
        b"{not json",
    );
    assert_eq!(r.status, 401);
    // Another add-on's password is not this one's.
    let exceptions: Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("plugins/exceptions/addon-manifest.json"))
            .unwrap(),
    )
    .unwrap();
    let r = http::request(
        &server.addr,
        "DELETE",
        "/partner/kv/heroku/resources/kv-anything",
        &[(
            "authorization",
            &http::basic(
                "exceptions",
                exceptions["api"]["password"].as_str().unwrap(),
            ),
        )],
        b"",
    );
    assert_eq!(r.status, 401);
    // An unknown add-on is 401 as well: nothing tells what exists.
    let r = http::request(
        &server.addr,
        "POST",
        "/partner/nosuch/heroku/resources",
        &[("authorization", &http::basic("nosuch", "x"))],
        b"{}",
    );
    assert_eq!(r.status, 401);
    // With the right credentials, what cannot be served is a 422.
    let kv: Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("plugins/kv/addon-manifest.json")).unwrap(),
    )
    .unwrap();
    let auth = http::basic("kv", kv["api"]["password"].as_str().unwrap());
    let r = http::request(
        &server.addr,
        "POST",
        "/partner/kv/heroku/resources",
        &[("authorization", &auth)],
        json!({"uuid": uuid::Uuid::new_v4().to_string(), "plan": "gold"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("no plan \"gold\""));
}

// ---------------------------------------------------------------- both ways

/// The Add-on Partner API between two addonhosts: A serves kv in provider
/// mode; B lists it as a remote add-on and runs an app on it.
#[test]
fn kv_served_by_one_addonhost_is_an_addon_of_another() {
    // B first, so A can be told B is its platform; B learns of A's kv once
    // A is up (its plugin folder is watched).
    let b = env_with_manifests(&[]);
    std::fs::create_dir_all(&b.plugins).unwrap();
    let server_b = Server::start(&b);
    let b_url = format!("http://{}", server_b.addr);
    let a = Env::new();
    let server_a = Server::start_with(
        a.command(&[
            "serve",
            "--port",
            "0",
            "--platform-api",
            &format!("{b_url}/platform"),
        ]),
        &a,
    );
    let manifest = remote_manifest_of(&a, &server_a, "kv");
    let staged = b.data().join("kv-staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(
        staged.join("addon-manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::rename(&staged, std::path::Path::new(&b.plugins).join("kv")).unwrap();
    wait_for("B serving A's kv", || {
        let list = server_b.api("GET", "/api/plugins", None).json();
        list.as_array()
            .is_some_and(|l| l.iter().any(|p| p["id"] == "kv" && p["status"] == "remote"))
    });

    let plugins = b.json(&["plugins"]);
    assert_eq!(plugins[0]["id"], "kv");
    assert_eq!(plugins[0]["status"], "remote");
    assert!(plugins[0]["remote"]
        .as_str()
        .unwrap()
        .ends_with("/partner/kv/heroku/resources"));

    // Provision on B, through A.
    b.ok(&["apps:create", "shop"]);
    let created: Value = serde_json::from_str(&b.ok(&[
        "addons:create",
        "kv:mini",
        "-a",
        "shop",
        "--url",
        &b_url,
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["addon"]["state"], "provisioned");
    let uuid = created["addon"]["uuid"].as_str().unwrap().to_string();
    let on_a = a.json(&["addons:info", &uuid]);
    assert_eq!(on_a["state"], "provisioned");
    assert_eq!(on_a["plan"], "mini");
    assert_eq!(on_a["addon_id"], created["addon"]["addon_id"]);

    // The app on B consumes KV_URL: a resource A serves.
    let url = b.ok(&["run", "-a", "shop", "--", "printenv", "KV_URL"]);
    let kv = support::KvUrl::parse(url.trim());
    assert!(kv.url.contains(&server_a.addr), "{}", kv.url);
    assert_eq!(server_a.kv_put(&kv, "greeting", b"hi").status, 201);
    let got = http::request(
        &server_a.addr,
        "GET",
        &format!("{}/greeting", kv.path),
        &[("authorization", &kv.auth())],
        b"",
    );
    assert_eq!(got.body, b"hi");

    // Plan change on B reaches A.
    b.ok(&["addons:upgrade", "KV", "kv:pro", "-a", "shop"]);
    assert_eq!(a.json(&["addons:info", &uuid])["plan"], "pro");
    assert_eq!(b.json(&["addons:info", "KV", "-a", "shop"])["plan"], "pro");

    // User rotation on B: A's plugin rotates, B gets the new URL.
    b.ok(&["addons:rotate", "KV", "-a", "shop"]);
    let rotated = support::KvUrl::parse(b.config("shop")["KV_URL"].as_str().unwrap());
    assert_ne!(rotated.password, kv.password);
    assert_eq!(server_a.kv_put(&rotated, "after", b"1").status, 201);

    // SSO from B's dashboard lands on the kv dashboard A serves.
    let session = server_b.sign_in();
    let page = server_b.get("/myapps/shop/addons/KV", &[("cookie", &session)]);
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let action = support::form_action(&html);
    assert_eq!(
        action,
        format!("http://{}/sso/login", server_a.addon_host("kv")),
        "B posts to A's kv origin"
    );
    let fields: Vec<(String, String)> = html
        .split("<input")
        .skip(1)
        .filter_map(|chunk| {
            let name = chunk.split("name=\"").nth(1)?.split('"').next()?;
            let value = chunk.split("value=\"").nth(1)?.split('"').next()?;
            let value = value
                .replace("&quot;", "\"")
                .replace("&#34;", "\"")
                .replace("&amp;", "&");
            Some((name.to_string(), value))
        })
        .collect();
    let login = server_a.sso_login("kv", &fields);
    assert_eq!(login.status, 302, "{}", login.text());
    let cookies = login.cookies();
    let sso = cookies
        .iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .unwrap()
        .clone();
    let nav = cookies
        .iter()
        .find(|c| c.starts_with("heroku-nav-data="))
        .expect("the nav-data cookie")
        .clone();
    let landing = login.header("location").unwrap().to_string();
    let dashboard = server_a.addon_request(
        "kv",
        "GET",
        &landing,
        &[("cookie", &format!("{sso}; {nav}"))],
        b"",
    );
    assert_eq!(dashboard.status, 200);
    let text = dashboard.text();
    assert!(text.contains(created["addon"]["addon_id"].as_str().unwrap()));
    assert!(text.contains(r#"<div id="heroku-header"></div>"#), "{text}");

    // A partner-initiated update from A (the kv dashboard's roll) reaches B
    // as a release.
    let before = b.config("shop")["KV_URL"].clone();
    let releases_before = b.release_versions("shop").len();
    let roll = server_a.addon_request(
        "kv",
        "POST",
        &format!("{landing}/roll"),
        &[("cookie", &sso)],
        b"",
    );
    assert!(roll.status == 302 || roll.status == 303, "{}", roll.text());
    wait_for("the rolled KV_URL on B", || {
        b.config("shop")["KV_URL"] != before
    });
    assert_eq!(b.release_versions("shop").len(), releases_before + 1);
    assert!(b.release_descriptions("shop")[0].contains("Update KV_URL by kv"));
    let rolled = support::KvUrl::parse(b.config("shop")["KV_URL"].as_str().unwrap());
    assert_eq!(server_a.kv_put(&rolled, "rolled", b"1").status, 201);

    // Deprovision on B deprovisions on A.
    b.ok(&["addons:destroy", "KV", "-a", "shop", "--confirm", "shop"]);
    assert!(!b.config("shop").contains_key("KV_URL"));
    let (code, err) = a.fails(&["addons:info", &uuid]);
    assert_eq!(code, 3, "deprovisioned on A too: {err}");
}

// ---------------------------------------------------------------- a Python provider

/// tests/partners/provider.py, running.
struct PyProvider {
    child: Child,
    port: u16,
}

impl PyProvider {
    fn start() -> PyProvider {
        let mut child = Command::new("python3")
            .arg(support::root().join("tests/partners/provider.py"))
            .args([
                "--id",
                "pyprov",
                "--password",
                PY_PASSWORD,
                "--salt",
                PY_SALT,
                "--slow",
                "3",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test provider");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("provider.py said {line:?}"))
            .parse()
            .unwrap();
        PyProvider { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        http::request(
            &format!("127.0.0.1:{}", self.port),
            "GET",
            "/debug/requests",
            &[],
            b"",
        )
        .json()
        .as_array()
        .unwrap()
        .clone()
    }

    /// A manifest for it under `id` (with `password`), on `base`.
    fn manifest(&self, id: &str, password: &str, base: &str) -> Value {
        let plans: Vec<Value> = [
            "basic",
            "async",
            "norotate",
            "wrong-status",
            "redirect",
            "slow",
            "bad-json",
            "no-id",
            "unlisted",
            "not-string",
            "refuse",
            "hold",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": p, "name": p, "default": i == 0}))
        .collect();
        let prefix = id.to_ascii_uppercase();
        json!({
            "id": id,
            "name": "A provider in Python",
            "api": {
                "config_vars_prefix": prefix,
                // _URL, and a few more for concurrent writers to race on.
                "config_vars": [
                    format!("{prefix}_URL"),
                    format!("{prefix}_A"), format!("{prefix}_B"), format!("{prefix}_C"),
                    format!("{prefix}_D"), format!("{prefix}_E"), format!("{prefix}_F"),
                ],
                "password": password,
                "sso_salt": PY_SALT,
                "regions": ["*"],
                "requires": ["many_per_app"],
                "production": {"base_url": format!("{base}/heroku/resources"), "sso_url": format!("{base}/sso")},
                "version": "3",
            },
            "plans": plans,
            "limits": {"timeout_ms": 2000},
        })
    }
}

impl Drop for PyProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_python_provider_is_an_addon_sync_and_async() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start(&b);
    let b_url = format!("http://{}", server.addr);
    b.ok(&["apps:create", "shop"]);

    // Sync.
    let out = b.ok(&[
        "addons:create",
        "pyprov:basic",
        "-a",
        "shop",
        "--url",
        &b_url,
    ]);
    assert!(out.contains("is ready"), "the provider's message: {out}");
    let url = b.config("shop")["PYPROV_URL"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://py-1:"), "{url}");
    assert!(b.release_descriptions("shop")[0].starts_with("Attach PYPROV"));
    let sent = py.requests();
    let provision = &sent[0]["body"];
    assert_eq!(provision["plan"], "basic");
    assert_eq!(provision["region"], "amazon-web-services::us-east-1");
    assert_eq!(provision["oauth_grant"]["type"], "authorization_code");
    assert!(provision["callback_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{b_url}/platform/vendor/apps/")));

    // Plan change and rotation answer new config: a release each.
    b.ok(&["addons:upgrade", "PYPROV", "pyprov:norotate", "-a", "shop"]);
    let upgraded = b.config("shop")["PYPROV_URL"].clone();
    assert_ne!(upgraded.as_str().unwrap(), url);
    assert!(b.release_descriptions("shop")[0].contains("to pyprov:norotate"));
    // This resource's provider has no rotation endpoint for it.
    let (code, err) = b.fails(&["addons:rotate", "PYPROV", "-a", "shop"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not offer credential rotation"), "{err}");
    b.ok(&["addons:upgrade", "PYPROV", "pyprov:basic", "-a", "shop"]);
    let before = b.config("shop")["PYPROV_URL"].clone();
    b.ok(&["addons:rotate", "PYPROV", "-a", "shop"]);
    assert_ne!(b.config("shop")["PYPROV_URL"], before);

    // SSO posts the signed form to the provider's sso_url.
    let session = server.sign_in();
    let page = server.get("/myapps/shop/addons/PYPROV", &[("cookie", &session)]);
    let html = page.text();
    assert!(
        html.contains(&format!("action=\"{}/sso\"", py.url())),
        "{html}"
    );
    assert!(html.contains("name=\"user_id\""), "{html}");
    let fields: Vec<(String, String)> = html
        .split("<input")
        .skip(1)
        .filter_map(|c| {
            let n = c.split("name=\"").nth(1)?.split('"').next()?;
            let v = c.split("value=\"").nth(1)?.split('"').next()?;
            Some((
                n.to_string(),
                v.replace("&#34;", "\"")
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&"),
            ))
        })
        .collect();
    let landed = http::request(
        &format!("127.0.0.1:{}", py.port),
        "POST",
        "/sso",
        &[("content-type", "application/x-www-form-urlencoded")],
        http::form(&fields).as_bytes(),
    );
    assert_eq!(landed.status, 200, "{}", landed.text());
    assert!(landed.text().contains("pyprov py-1"));

    // Async: 202, then the provider completes through B's Platform API.
    let created: Value = serde_json::from_str(&b.ok(&[
        "addons:create",
        "pyprov:async",
        "-a",
        "shop",
        "--as",
        "LATER",
        "--url",
        &b_url,
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["addon"]["state"], "provisioning");
    wait_for("the async provisioning to complete", || {
        b.json(&["addons:info", "LATER", "-a", "shop"])["state"] == "provisioned"
    });
    let config = b.config("shop");
    assert!(config["LATER_URL"]
        .as_str()
        .unwrap()
        .starts_with("http://py-2:"));
    assert!(b.release_descriptions("shop")[0].starts_with("Attach LATER"));

    // Deprovision.
    b.ok(&[
        "addons:destroy",
        "PYPROV",
        "-a",
        "shop",
        "--confirm",
        "shop",
    ]);
    assert!(!b.config("shop").contains_key("PYPROV_URL"));
    assert!(py
        .requests()
        .iter()
        .any(|r| r["method"] == "DELETE" && r["path"] == "/heroku/resources/py-1"));
}

#[test]
fn a_provider_that_times_out_is_asked_again_with_the_same_uuid() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    b.ok(&["apps:create", "shop"]);
    let uuid = uuid::Uuid::new_v4().to_string();
    let before = snapshot(&b, "shop");
    // The provider sleeps 3 s on its first request for a uuid; we wait 2.
    let (code, err) = b.fails(&[
        "addons:create",
        "pyprov:slow",
        "-a",
        "shop",
        "--uuid",
        &uuid,
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("did not answer the provision within 2 s"),
        "{err}"
    );
    assert_eq!(snapshot(&b, "shop"), before, "nothing was written");
    let created = b.create("pyprov:slow", "shop", &["--uuid", &uuid]);
    assert_eq!(created["addon"]["state"], "provisioned");
    let uuids: Vec<Value> = py
        .requests()
        .iter()
        .filter(|r| r["path"] == "/heroku/resources")
        .map(|r| r["body"]["uuid"].clone())
        .collect();
    assert_eq!(
        uuids,
        vec![json!(uuid), json!(uuid)],
        "the retry carried the same uuid"
    );
    // And a retry after success is answered here, without asking again.
    b.create("pyprov:slow", "shop", &["--uuid", &uuid]);
    assert_eq!(py.requests().len(), 2);
}

#[test]
fn a_misbehaving_provider_fails_each_call_clearly_and_writes_nothing() {
    let py = PyProvider::start();
    // A closed port: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let b = env_with_manifests(&[
        py.manifest("pyprov", PY_PASSWORD, &py.url()),
        py.manifest(
            "pywrong",
            "not-the-password-0123456789abcdef0123",
            &py.url(),
        ),
        py.manifest("pygone", PY_PASSWORD, &closed_url),
    ]);
    b.ok(&["apps:create", "shop"]);
    let before = snapshot(&b, "shop");
    let cases: &[(&str, &str)] = &[
        ("pyprov:wrong-status", "answered 500 to the provision"),
        ("pyprov:redirect", "answered 302 to the provision"),
        ("pyprov:bad-json", "malformed JSON"),
        ("pyprov:no-id", "without an \"id\""),
        (
            "pyprov:unlisted",
            "DATABASE_URL is not in the manifest's api.config_vars",
        ),
        ("pyprov:not-string", "PYPROV_URL is 42, not a string"),
        (
            "pyprov:refuse",
            "the provider refused the provision: no capacity left in this region",
        ),
        ("pywrong:basic", "refused our credentials (401"),
        ("pygone:basic", "its provider is unreachable"),
    ];
    for (spec, expected) in cases {
        let (code, err) = b.fails(&["addons:create", spec, "-a", "shop"]);
        assert_eq!(code, 5, "{spec}: {err}");
        assert!(err.contains(expected), "{spec}: {err}");
        assert_eq!(snapshot(&b, "shop"), before, "{spec}: nothing was written");
    }
}

/// `addons:create pyprov:basic -a shop` (as `as_name`, if given), with the
/// server's own address as the platform the provider calls back.
fn create_pyprov(b: &Env, server: &Server, as_name: Option<&str>) {
    let url = format!("http://{}", server.addr);
    let mut args = vec!["addons:create", "pyprov:basic", "-a", "shop", "--url", &url];
    if let Some(name) = as_name {
        args.extend(["--as", name]);
    }
    b.ok(&args);
}

/// `POST /platform/oauth/token` with a form body.
fn platform_token(server: &Server, form: &str) -> http::Response {
    http::request(
        &server.addr,
        "POST",
        "/platform/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
}

/// `PATCH /platform/addons/:uuid/config` with `bearer` (`Bearer …`, or empty).
fn platform_patch(server: &Server, uuid: &str, bearer: &str, body: Value) -> http::Response {
    http::request(
        &server.addr,
        "PATCH",
        &format!("/platform/addons/{uuid}/config"),
        &[
            ("authorization", bearer),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

#[test]
fn platform_api_tokens_reach_only_their_own_addon() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start(&b);
    b.ok(&["apps:create", "shop"]);
    create_pyprov(&b, &server, None);
    create_pyprov(&b, &server, Some("OTHER"));
    let sent = py.requests();
    let (first, second) = (&sent[0]["body"], &sent[1]["body"]);
    let token_with = |form: &str| platform_token(&server, form);
    let code = first["oauth_grant"]["code"].as_str().unwrap();
    let r = token_with(&format!(
        "grant_type=authorization_code&code={code}&client_secret=wrong"
    ));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = token_with(&format!(
        "grant_type=authorization_code&code={code}x&client_secret={PY_PASSWORD}"
    ));
    assert_eq!(r.status, 401, "an altered grant");
    // The first grant's signature on the second's payload (the other uuid):
    // a forged grant for another add-on.
    let part = |code: &str, i: usize| code.split('.').nth(i).unwrap().to_string();
    let other_code = second["oauth_grant"]["code"].as_str().unwrap();
    let forged = format!(
        "{}.{}.{}",
        part(code, 0),
        part(other_code, 1),
        part(code, 2)
    );
    let r = token_with(&format!(
        "grant_type=authorization_code&code={forged}&client_secret={PY_PASSWORD}"
    ));
    assert_eq!(r.status, 401, "a forged grant: {}", r.text());
    let r = token_with(&format!(
        "grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let patch = |uuid: &str, bearer: &str, body: Value| platform_patch(&server, uuid, bearer, body);
    let first_uuid = first["uuid"].as_str().unwrap();
    let second_uuid = second["uuid"].as_str().unwrap();
    let before = snapshot(&b, "shop");
    // Another add-on's uuid: refused, whatever the body.
    let r = patch(
        second_uuid,
        &bearer,
        json!({"config": [{"name": "PYPROV_URL", "value": "http://x@y/z"}]}),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    // No token.
    assert_eq!(patch(first_uuid, "", json!({"config": []})).status, 401);
    // A var the manifest does not list: 422, audited, nothing changed.
    let r = patch(
        first_uuid,
        &bearer,
        json!({"config": [{"name": "DATABASE_URL", "value": "postgres://evil@x/y"}]}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("DATABASE_URL"));
    assert_eq!(snapshot(&b, "shop"), before);
    let audit = b.ok(&["audit", "-a", "shop"]);
    assert!(audit.contains("DATABASE_URL"), "{audit}");
    // Its own var: one release, under its attachment's name.
    let r = patch(
        first_uuid,
        &bearer,
        json!({"config": [{"name": "PYPROV_URL", "value": "http://new:pw@pyprov.example/py-1"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"name": "PYPROV_URL", "value": "http://new:pw@pyprov.example/py-1"}])
    );
    let config = b.config("shop");
    assert_eq!(config["PYPROV_URL"], "http://new:pw@pyprov.example/py-1");
    assert_ne!(config["OTHER_URL"], "http://new:pw@pyprov.example/py-1");
    assert!(b.release_descriptions("shop")[0].contains("Update PYPROV_URL by pyprov"));
    // A var the user took over stays the user's.
    b.ok(&[
        "config:set",
        "PYPROV_URL=http://mine@x/y",
        "-a",
        "shop",
        "--force",
    ]);
    let r = patch(
        first_uuid,
        &bearer,
        json!({"config": [{"name": "PYPROV_URL", "value": "http://again@x/y"}]}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(b.config("shop")["PYPROV_URL"], "http://mine@x/y");
    // GET /addons/:uuid describes it.
    let info = http::request(
        &server.addr,
        "GET",
        &format!("/platform/addons/{first_uuid}"),
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["addon_service"]["name"], "pyprov");
    assert_eq!(info.json()["state"], "provisioned");
}

#[test]
fn a_partner_flooding_the_platform_api_is_held_to_its_rate() {
    // A partner with a good token could make the host write a release and
    // an audit entry per request, as fast as it sends them. Its bucket here:
    // 5 requests an hour (the token exchange is one of them).
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start_with(
        b.command(&["serve", "--port", "0", "--platform-api-rate", "5"]),
        &b,
    );
    b.ok(&["apps:create", "shop"]);
    create_pyprov(&b, &server, None);
    let sent = py.requests();
    let code = sent[0]["body"]["oauth_grant"]["code"].as_str().unwrap();
    let uuid = sent[0]["body"]["uuid"].as_str().unwrap();
    let r = platform_token(
        &server,
        &format!("grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
    let releases_before = b.release_versions("shop").len();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let value = format!("http://u:p@pyprov.example/{i}");
        let r = platform_patch(
            &server,
            uuid,
            &bearer,
            json!({"config": [{"name": "PYPROV_URL", "value": value}]}),
        );
        if r.status == 429 {
            assert_eq!(r.json()["id"], "rate_limit", "{}", r.text());
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("5 requests an hour"),
                "{}",
                r.text()
            );
            assert_eq!(r.header("retry-after"), Some("720"));
        }
        statuses.push(r.status);
    }
    // The test provider spent some of the five itself while provisioning.
    let ok = statuses.iter().take_while(|s| **s == 200).count();
    assert!((1..=4).contains(&ok), "{statuses:?}");
    assert!(statuses[ok..].iter().all(|s| *s == 429), "{statuses:?}");
    // Only the requests within the rate wrote anything.
    assert_eq!(b.release_versions("shop").len(), releases_before + ok);
    assert_eq!(
        b.config("shop")["PYPROV_URL"],
        format!("http://u:p@pyprov.example/{}", ok - 1)
    );
    // Once over, the partner's reads wait too; the user's own commands are
    // not metered.
    let r = http::request(
        &server.addr,
        "GET",
        &format!("/platform/addons/{uuid}"),
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 429);
    b.ok(&["config:set", "OWN=1", "-a", "shop"]);
}

// ---------------------------------------------------------------- talking back to the platform

/// A platform's Platform API for provider-mode tests, on an ephemeral port
/// of 127.0.0.1: it answers `/oauth/token`, `PATCH …/config` and
/// `…/actions/provision`, records every request, and counts the requests
/// it holds unanswered (all of them while `hold` is on: a platform that
/// never answers). One thread per connection; holds end when it is dropped.
struct FakePlatform {
    port: u16,
    state: std::sync::Arc<(std::sync::Mutex<PlatformState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct PlatformState {
    /// (method, path, body) of every request, in arrival order.
    requests: Vec<(String, String, String)>,
    /// Connections accepted in all.
    accepted: usize,
    /// Requests accepted and not answered yet, and the most ever at once.
    open: usize,
    most_open: usize,
    hold: bool,
    stopped: bool,
}

impl FakePlatform {
    fn start(hold: bool) -> FakePlatform {
        use std::sync::{Arc, Condvar, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((
            Mutex::new(PlatformState {
                hold,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                {
                    let mut st = shared.0.lock().unwrap();
                    if st.stopped {
                        break;
                    }
                    st.accepted += 1;
                    st.open += 1;
                    st.most_open = st.most_open.max(st.open);
                }
                let shared = shared.clone();
                std::thread::spawn(move || FakePlatform::serve(conn, &shared));
            }
        });
        FakePlatform { port, state }
    }

    fn serve(
        conn: std::net::TcpStream,
        shared: &(std::sync::Mutex<PlatformState>, std::sync::Condvar),
    ) {
        use std::io::{Read, Write};
        let answered = |st: &mut PlatformState| st.open -= 1;
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        let mut length = 0usize;
        let request_line = match reader.read_line(&mut line) {
            Ok(n) if n > 0 => line.trim().to_string(),
            _ => return answered(&mut shared.0.lock().unwrap()),
        };
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        let _ = reader.read_exact(&mut body);
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let (lock, cvar) = shared;
        let mut st = lock.lock().unwrap();
        st.requests.push((
            method.clone(),
            path.clone(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        while st.hold && !st.stopped && Instant::now() < deadline {
            st = cvar.wait_timeout(st, Duration::from_secs(1)).unwrap().0;
        }
        // Answered as far as the host can tell from here on.
        answered(&mut st);
        drop(st);
        let (status, answer) = if path.ends_with("/oauth/token") {
            (
                200,
                json!({"access_token": "token", "refresh_token": "refresh", "expires_in": 28800, "token_type": "Bearer"}),
            )
        } else if method == "PATCH" && path.ends_with("/config") {
            (200, json!([]))
        } else if path.ends_with("/actions/provision") {
            (200, json!({}))
        } else {
            (404, json!({"id": "not_found", "message": "no such route"}))
        };
        let answer = answer.to_string();
        let mut conn = conn;
        let _ = write!(
            conn,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
    }

    /// The Platform API base it serves: `http://127.0.0.1:<port>/platform`.
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/platform", self.port)
    }

    fn with<T>(&self, f: impl FnOnce(&mut PlatformState) -> T) -> T {
        f(&mut self.state.0.lock().unwrap())
    }

    /// Answers everything held, and everything from now on.
    fn release(&self) {
        self.with(|st| st.hold = false);
        self.state.1.notify_all();
    }
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.with(|st| st.stopped = true);
        self.state.1.notify_all();
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `serve` on a new data dir, answering to the platform at `platform`.
fn provider_with_platform(platform: Option<&str>) -> (Env, Server) {
    let a = Env::new();
    let mut command = a.command(&["serve", "--port", "0"]);
    if let Some(p) = platform {
        command.args(["--platform-api", p]);
    }
    let server = Server::start_with(command, &a);
    (a, server)
}

/// A Partner API provision of kv on `server`, as a platform sends it.
fn partner_provision(a: &Env, server: &Server, uuid: &str, callback_url: &str) -> http::Response {
    let m = remote_manifest_of(a, server, "kv");
    let auth = http::basic("kv", m["api"]["password"].as_str().unwrap());
    let body = json!({
        "uuid": uuid,
        "plan": "mini",
        "region": "amazon-web-services::us-east-1",
        "callback_url": callback_url,
        "oauth_grant": {"code": format!("grant-{uuid}"), "type": "authorization_code"},
        "options": {},
    });
    http::request(
        &server.addr,
        "POST",
        "/partner/kv/heroku/resources",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A hostile partner names an internal address as its `callback_url`: the
/// provisioning is refused, naming why, and the address is never called —
/// without `--platform-api` (Heroku's is the only platform) and with it.
#[test]
fn a_callback_url_off_the_configured_platform_is_refused_and_never_called() {
    let target = FakePlatform::start(false);
    let elsewhere = FakePlatform::start(false);
    for configured in [None, Some(elsewhere.base())] {
        let (a, server) = provider_with_platform(configured.as_deref());
        let uuid = uuid::Uuid::new_v4().to_string();
        let callback = format!("{}/vendor/apps/{uuid}", target.base());
        let r = partner_provision(&a, &server, &uuid, &callback);
        if r.status == 200 {
            // Provisioned: a rotation on this host goes back to the
            // platform, which is wherever the request said.
            let rotated = server.api("POST", &format!("/api/addons/{uuid}/rotate"), None);
            assert_eq!(rotated.status, 200, "{}", rotated.text());
            let start = Instant::now();
            while target.with(|st| st.accepted) == 0 && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let called = target.with(|st| st.requests.clone());
        assert!(
            called.is_empty(),
            "the host called the callback_url's address (platform {configured:?}): {called:?}"
        );
        assert_eq!(r.status, 422, "{}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("callback_url"), "{message}");
        assert!(message.contains(&callback), "{message}");
        let platform = configured
            .clone()
            .unwrap_or("https://api.heroku.com".into());
        assert!(message.contains(&platform), "names the platform: {message}");
        let (code, _) = a.fails(&["addons:info", &uuid]);
        assert_eq!(code, 3, "nothing was provisioned");
    }
    // The configured platform's own callback_url is served.
    let (a, server) = provider_with_platform(Some(&target.base()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let callback = format!("{}/vendor/apps/{uuid}", target.base());
    let r = partner_provision(&a, &server, &uuid, &callback);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(target.with(|st| st.requests.is_empty()));
}

/// 200 changes of 20 resources while the platform never answers: the host
/// holds a few deliveries at once, not one per change; once the platform
/// answers, each resource's newest value is what it gets last, in a
/// bounded number of requests.
#[test]
fn a_platform_that_never_answers_holds_few_deliveries_and_gets_the_newest_values() {
    const RESOURCES: usize = 20;
    const ROUNDS: usize = 10;
    // The host's bound on deliveries of one add-on in flight.
    const IN_FLIGHT: usize = 4;
    let platform = FakePlatform::start(true);
    let (a, server) = provider_with_platform(Some(&platform.base()));
    let uuids: Vec<String> = (0..RESOURCES)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    for uuid in &uuids {
        let callback = format!("{}/vendor/apps/{uuid}", platform.base());
        let r = partner_provision(&a, &server, uuid, &callback);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..ROUNDS {
        for uuid in &uuids {
            let r = server.api("POST", &format!("/api/addons/{uuid}/rotate"), None);
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    wait_for("deliveries reaching the platform", || {
        platform.with(|st| st.open) >= IN_FLIGHT
    });
    let held = platform.with(|st| st.most_open);
    assert!(
        held <= IN_FLIGHT,
        "{held} requests held at once by a platform that never answers, for {} changes",
        RESOURCES * ROUNDS
    );
    let newest: Vec<String> = uuids
        .iter()
        .map(|u| {
            let app = format!(
                "partner-{}",
                u.replace('-', "").chars().take(22).collect::<String>()
            );
            a.config(&app)["KV_URL"].as_str().unwrap().to_string()
        })
        .collect();
    platform.release();
    wait_for("every resource's newest KV_URL at the platform", || {
        let requests = platform.with(|st| st.requests.clone());
        uuids.iter().zip(&newest).all(|(uuid, url)| {
            requests
                .iter()
                .rev()
                .find(|(m, p, _)| m == "PATCH" && p.contains(uuid.as_str()))
                .is_some_and(|(_, _, body)| body.contains(url.as_str()))
        })
    });
    let (most_open, patches) = platform.with(|st| {
        (
            st.most_open,
            st.requests.iter().filter(|(m, _, _)| m == "PATCH").count(),
        )
    });
    eprintln!(
        "{} changes: {held} requests held at most, {most_open} at once in all, {patches} config deliveries",
        RESOURCES * ROUNDS
    );
    assert!(
        most_open <= IN_FLIGHT,
        "{most_open} requests at once once the platform answered"
    );
    assert!(
        patches <= 2 * RESOURCES,
        "{patches} config deliveries for {} changes of {RESOURCES} resources",
        RESOURCES * ROUNDS
    );
}

// ---------------------------------------------------------------- what a partner may do to others

/// A Partner API request of `service` on `server`, with its credentials.
fn partner_call(
    server: &Server,
    service: &str,
    method: &str,
    path: &str,
    body: Value,
) -> http::Response {
    http::request(
        &server.addr,
        method,
        &format!("/partner/{service}/heroku/resources{path}"),
        &[
            (
                "authorization",
                &http::basic(service, &manifest_password(service)),
            ),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A v3 provision body for `uuid`, calling back Heroku (the default platform).
fn v3(uuid: &str) -> Value {
    json!({"uuid": uuid, "callback_url": format!("https://api.heroku.com/vendor/apps/{uuid}")})
}

/// The audit trail, all of it that is kept.
fn audit_of(env: &Env) -> Vec<Value> {
    env.json(&["audit", "--limit", "100000"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_partner_looping_provision_and_deprovision_cannot_push_out_the_operators_audit_entries() {
    let a = Env::new();
    let server = Server::start_with(
        a.command(&["serve", "--port", "0", "--audit-keep", "20"]),
        &a,
    );
    // The operator's own entries.
    a.ok(&["apps:create", "shop"]);
    a.ok(&["config:set", "A=1", "-a", "shop"]);
    a.ok(&["config:set", "B=2", "-a", "shop"]);
    let operators = |audit: &[Value]| {
        audit
            .iter()
            .filter(|e| e["actor"] == "user" && e["app"] == "shop")
            .count()
    };
    assert_eq!(operators(&audit_of(&a)), 3);
    // A holder of kv's api.password provisions and deprovisions in a loop.
    for _ in 0..25 {
        let uuid = uuid::Uuid::new_v4().to_string();
        let r = partner_call(&server, "kv", "POST", "", v3(&uuid));
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let r = partner_call(&server, "kv", "DELETE", &format!("/{id}"), json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let audit = audit_of(&a);
    assert_eq!(
        operators(&audit),
        3,
        "the partner pushed the operator's entries out"
    );
    let partners: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "addons:create" || e["action"] == "addons:destroy")
        .collect();
    assert!(!partners.is_empty());
    assert!(
        partners.iter().all(|e| e["actor"] == "partner:kv"),
        "{partners:?}"
    );
    // Its own bound holds it: at most --audit-keep (and the few written
    // before the next prune).
    let own = audit.iter().filter(|e| e["actor"] == "partner:kv").count();
    assert!((20..=20 + 16).contains(&own), "{own}");
}

#[test]
fn a_partner_flooding_the_partner_api_is_held_to_its_rate() {
    let a = Env::new();
    let server = Server::start_with(
        a.command(&["serve", "--port", "0", "--partner-api-rate", "5"]),
        &a,
    );
    // Wrong credentials are refused before the rate, and spend none of it.
    for _ in 0..10 {
        let r = http::request(
            &server.addr,
            "POST",
            "/partner/kv/heroku/resources",
            &[("authorization", &http::basic("kv", "wrong"))],
            v3(&uuid::Uuid::new_v4().to_string()).to_string().as_bytes(),
        );
        assert_eq!(r.status, 401);
    }
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = partner_call(
            &server,
            "kv",
            "POST",
            "",
            v3(&uuid::Uuid::new_v4().to_string()),
        );
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("720"), "{:?}", r.headers);
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("5 requests an hour"),
                "{}",
                r.text()
            );
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Nothing of the refused requests was written: five resources, five
    // apps standing for the platform's.
    let addons = a.json(&["addons"]);
    assert_eq!(addons.as_array().unwrap().len(), 5, "{addons}");
    let apps = a.json(&["apps"]);
    assert_eq!(apps.as_array().unwrap().len(), 5, "{apps}");
    // Another add-on's partner has a bucket of its own.
    let r = partner_call(
        &server,
        "exceptions",
        "POST",
        "",
        v3(&uuid::Uuid::new_v4().to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_partner_cannot_plant_a_link_on_another_addons_uuid() {
    let platform = FakePlatform::start(false);
    let (a, server) = provider_with_platform(Some(&platform.base()));
    // The operator's own kv add-on; its uuid is no secret.
    a.ok(&["apps:create", "shop"]);
    let kv = a.create("kv", "shop", &[]);
    let uuid = kv["addon"]["uuid"].as_str().unwrap().to_string();
    // Exceptions' partner claims that uuid, with a grant of its own.
    let r = partner_call(
        &server,
        "exceptions",
        "POST",
        "",
        json!({
            "uuid": uuid,
            "callback_url": format!("{}/vendor/apps/{uuid}", platform.base()),
            "oauth_grant": {"code": "exceptions-grant", "type": "authorization_code"},
        }),
    );
    assert!(
        r.status == 409 || r.status == 422,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(r.text().contains(&uuid), "{}", r.text());
    let key = format!("partner-link:{uuid}");
    assert_eq!(
        a.db().count(
            "SELECT COUNT(*) FROM settings WHERE name = $1",
            &[key.as_str()]
        ),
        0,
        "a link was written for another add-on's uuid"
    );
    // kv's credentials change: nothing goes to any platform.
    let name = kv["addon"]["name"].as_str().unwrap();
    let rotated = server.api("POST", &format!("/api/addons/{name}/rotate"), None);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    // A link of another add-on's (kept by an earlier version) is not used
    // for kv's changes either.
    let planted = json!({
        "service": "exceptions",
        "platform": platform.base(),
        "grant": {"code": "exceptions-grant", "type": "authorization_code"},
    })
    .to_string();
    a.db().execute(
        "INSERT INTO settings (name, value) VALUES ($1, $2)",
        &[key.as_str(), planted.as_str()],
    );
    let rotated = server.api("POST", &format!("/api/addons/{name}/rotate"), None);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    std::thread::sleep(Duration::from_secs(2));
    let seen = platform.with(|st| st.requests.clone());
    assert!(
        seen.is_empty(),
        "kv's changes went to another add-on's platform link: {seen:?}"
    );
}

#[test]
fn a_rejected_url_value_never_shows_its_password() {
    // A plugin answering a *_URL that does not parse, password inside.
    let a = Env::new();
    a.ok(&["apps:create", "shop"]);
    let (_, err) = a.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "bad-url-secret",
    ]);
    assert!(err.contains("HOSTILE_URL"), "{err}");
    assert!(
        err.contains("postgres://admin:"),
        "the value is still named: {err}"
    );
    assert!(
        !err.contains("s3cr3t-pw-42"),
        "the password in the error: {err}"
    );
    let audit = a.ok(&["audit", "--json"]);
    assert!(audit.contains("HOSTILE_URL"), "{audit}");
    assert!(
        !audit.contains("s3cr3t-pw-42"),
        "the password in the audit trail: {audit}"
    );

    // A provider sending one through the Platform API.
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start(&b);
    b.ok(&["apps:create", "shop"]);
    create_pyprov(&b, &server, None);
    let sent = py.requests();
    let code = sent[0]["body"]["oauth_grant"]["code"].as_str().unwrap();
    let uuid = sent[0]["body"]["uuid"].as_str().unwrap();
    let r = platform_token(
        &server,
        &format!("grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = format!("Bearer {}", r.json()["access_token"].as_str().unwrap());
    let r = platform_patch(
        &server,
        uuid,
        &bearer,
        json!({"config": [{"name": "PYPROV_URL", "value": "https://ops:s3cr3t-pw-42@exa mple.com/"}]}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("PYPROV_URL"), "{}", r.text());
    assert!(!r.text().contains("s3cr3t-pw-42"), "{}", r.text());
    let audit = b.ok(&["audit", "--json"]);
    assert!(audit.contains("PYPROV_URL"), "{audit}");
    assert!(
        !audit.contains("s3cr3t-pw-42"),
        "the password in the audit trail: {audit}"
    );
}

/// Trades `form` at the server's `/oauth/token`; the answer's tokens.
fn traded(server: &Server, form: &str) -> (u16, Option<(String, String)>) {
    let r = platform_token(server, form);
    let tokens = (r.status == 200).then(|| {
        let j = r.json();
        (
            j["access_token"].as_str().unwrap().to_string(),
            j["refresh_token"].as_str().unwrap().to_string(),
        )
    });
    (r.status, tokens)
}

fn platform_get(server: &Server, uuid: &str, access: &str) -> http::Response {
    http::request(
        &server.addr,
        "GET",
        &format!("/platform/addons/{uuid}"),
        &[("authorization", &format!("Bearer {access}"))],
        b"",
    )
}

#[test]
fn platform_api_grants_are_single_use_refresh_rotates_and_tokens_die_with_their_resource() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start(&b);
    b.ok(&["apps:create", "shop"]);
    create_pyprov(&b, &server, None);
    let sent = py.requests();
    let code = sent[0]["body"]["oauth_grant"]["code"].as_str().unwrap();
    let uuid = sent[0]["body"]["uuid"].as_str().unwrap();
    let grant = format!("grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}");
    let (status, tokens) = traded(&server, &grant);
    assert_eq!(status, 200);
    let (access, refresh) = tokens.unwrap();
    // The grant again: it was spent.
    let (status, _) = traded(&server, &grant);
    assert_eq!(status, 401, "a grant traded twice");
    // A refresh hands back a new refresh token; the old one stops working.
    let refresh_form =
        |t: &str| format!("grant_type=refresh_token&refresh_token={t}&client_secret={PY_PASSWORD}");
    let (status, tokens) = traded(&server, &refresh_form(&refresh));
    assert_eq!(status, 200);
    let (access2, refresh2) = tokens.unwrap();
    assert_ne!(refresh2, refresh, "the refresh token was not rotated");
    let (status, _) = traded(&server, &refresh_form(&refresh));
    assert_eq!(status, 401, "a refresh token used twice");
    let (status, tokens) = traded(&server, &refresh_form(&refresh2));
    assert_eq!(status, 200);
    let (access3, refresh3) = tokens.unwrap();
    for a in [&access, &access2, &access3] {
        assert_eq!(platform_get(&server, uuid, a).status, 200);
    }
    // What the provider writes is recorded as the Platform API's, not as
    // the add-on's own calls.
    let r = platform_patch(
        &server,
        uuid,
        &format!("Bearer {access3}"),
        json!({"config": [{"name": "PYPROV_A", "value": "a"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = audit_of(&b);
    let update = audit
        .iter()
        .find(|e| e["action"] == "config:update")
        .expect("the update is audited");
    assert_eq!(update["actor"], "platform-api:pyprov", "{update}");
    // The resource goes: so do its tokens.
    let name = b.json(&["addons", "-a", "shop"])[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    b.ok(&["addons:destroy", &name, "-a", "shop", "--confirm", "shop"]);
    let r = platform_get(&server, uuid, &access3);
    assert_eq!(r.status, 401, "{}", r.text());
    let (status, _) = traded(&server, &refresh_form(&refresh3));
    assert_eq!(status, 401);
}

#[test]
fn requests_failing_authentication_spend_none_of_the_partners_rate() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = Server::start_with(
        b.command(&["serve", "--port", "0", "--platform-api-rate", "2"]),
        &b,
    );
    b.ok(&["apps:create", "shop"]);
    create_pyprov(&b, &server, None);
    let sent = py.requests();
    let code = sent[0]["body"]["oauth_grant"]["code"].as_str().unwrap();
    let uuid = sent[0]["body"]["uuid"].as_str().unwrap();
    // Someone holding the grant but not the client secret.
    for _ in 0..10 {
        let (status, _) = traded(
            &server,
            &format!("grant_type=authorization_code&code={code}&client_secret=guess"),
        );
        assert_eq!(status, 401);
    }
    // The partner's own two requests are still there.
    let (status, tokens) = traded(
        &server,
        &format!("grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}"),
    );
    assert_eq!(
        status, 200,
        "the partner's rate was spent by failed requests"
    );
    let (access, _) = tokens.unwrap();
    assert_eq!(platform_get(&server, uuid, &access).status, 200);
    assert_eq!(platform_get(&server, uuid, &access).status, 429);
}

#[test]
fn concurrent_platform_api_patches_of_a_pending_addon_lose_nothing() {
    let py = PyProvider::start();
    let b = env_with_manifests(&[py.manifest("pyprov", PY_PASSWORD, &py.url())]);
    let server = std::sync::Arc::new(Server::start(&b));
    b.ok(&["apps:create", "shop"]);
    let names = ["A", "B", "C", "D", "E", "F"];
    for (round, attachment) in ["ONE", "TWO", "THREE"].iter().enumerate() {
        let url = format!("http://{}", server.addr);
        b.ok(&[
            "addons:create",
            "pyprov:hold",
            "-a",
            "shop",
            "--as",
            attachment,
            "--url",
            &url,
        ]);
        let sent = py.requests();
        let body = &sent.last().unwrap()["body"];
        let (code, uuid) = (
            body["oauth_grant"]["code"].as_str().unwrap().to_string(),
            body["uuid"].as_str().unwrap().to_string(),
        );
        let (status, tokens) = traded(
            &server,
            &format!("grant_type=authorization_code&code={code}&client_secret={PY_PASSWORD}"),
        );
        assert_eq!(status, 200);
        let bearer = format!("Bearer {}", tokens.unwrap().0);
        // Six writers at once, each its own var, while the provisioning is
        // pending; in the last round the completion runs among them.
        let writers: Vec<_> = names
            .iter()
            .map(|n| {
                let (server, uuid, bearer) = (server.clone(), uuid.clone(), bearer.clone());
                let name = format!("PYPROV_{n}");
                std::thread::spawn(move || {
                    let r = platform_patch(
                        &server,
                        &uuid,
                        &bearer,
                        json!({"config": [{"name": name, "value": format!("{name}-set")}]}),
                    );
                    (name, r.status)
                })
            })
            .collect();
        let completion = (round == 2).then(|| {
            let (server, uuid, bearer) = (server.clone(), uuid.clone(), bearer.clone());
            std::thread::spawn(move || {
                http::request(
                    &server.addr,
                    "POST",
                    &format!("/platform/addons/{uuid}/actions/provision"),
                    &[("authorization", &bearer)],
                    b"",
                )
                .status
            })
        });
        let acknowledged: Vec<String> = writers
            .into_iter()
            .map(|w| w.join().unwrap())
            .filter(|(_, status)| *status == 200)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(acknowledged.len(), names.len(), "round {round}");
        match completion {
            Some(c) => assert_eq!(c.join().unwrap(), 200),
            None => {
                let r = http::request(
                    &server.addr,
                    "POST",
                    &format!("/platform/addons/{uuid}/actions/provision"),
                    &[("authorization", &bearer)],
                    b"",
                );
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }
        // Every acknowledged write is on the app.
        let config = b.config("shop");
        for name in &acknowledged {
            let on_app = name.replace("PYPROV", attachment);
            assert_eq!(
                config.get(&on_app).and_then(|v| v.as_str()),
                Some(format!("{name}-set").as_str()),
                "round {round}: {on_app} was acknowledged and lost: {config:?}"
            );
        }
    }
}
