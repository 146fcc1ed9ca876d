//! The server against real plugins on 127.0.0.1: API auth and errors, the
//! whole SSO flow, add-ons serving their resources with the credentials from
//! the config vars, partner-initiated updates, graceful shutdown.

use crate::support;

use crate::support::http::{basic, form, request};
use crate::support::*;
use serde_json::json;

/// An app with kv and exceptions provisioned through the API.
fn setup() -> (Env, Server) {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with(
        "shop",
        &[
            json!({"plan": "kv:mini"}),
            json!({"plan": "exceptions:dev"}),
        ],
    );
    (env, server)
}

fn config(server: &Server) -> serde_json::Value {
    server.api("GET", "/api/apps/shop/config", None).json()
}

/// (user, password, path) of a URL.
fn creds(url: &str) -> (String, String, String) {
    let u = url::Url::parse(url).unwrap();
    (
        u.username().to_string(),
        u.password().unwrap_or("").to_string(),
        u.path().to_string(),
    )
}

#[test]
fn api_requires_the_bearer_token() {
    let env = Env::new();
    let server = Server::start(&env);
    assert_eq!(server.get("/api/apps", &[]).status, 401);
    assert_eq!(
        server
            .get("/api/apps", &[("authorization", "Bearer wrong")])
            .status,
        401
    );
    assert_eq!(server.api("GET", "/api/apps", None).status, 200);
}

#[test]
fn api_reports_bad_requests_with_statuses() {
    let (_env, server) = setup();
    let auth = format!("Bearer {}", server.token);
    let r = request(
        &server.addr,
        "POST",
        "/api/apps",
        &[("authorization", &auth)],
        b"{not json",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let big = vec![b'x'; 2 << 20];
    assert_eq!(
        request(
            &server.addr,
            "POST",
            "/api/apps",
            &[("authorization", &auth)],
            &big
        )
        .status,
        413
    );
    assert_eq!(server.api("GET", "/api/apps/nope", None).status, 404);
    assert_eq!(server.api("GET", "/api/addons/nope", None).status, 404);
    assert_eq!(
        server
            .api("POST", "/api/apps", Some(json!({"name": "shop"})))
            .status,
        409
    );
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config",
        Some(json!({"KV_URL": "x"})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn api_mirrors_the_cli_lifecycle() {
    let (env, server) = setup();
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config",
        Some(json!({"LOG_LEVEL": "debug"})),
    );
    assert_eq!(r.json()["LOG_LEVEL"], "debug");
    let addons = server.api("GET", "/api/apps/shop/addons", None).json();
    let kv = addons
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["service"] == "kv")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server
            .api(
                "PATCH",
                &format!("/api/addons/{kv}"),
                Some(json!({"plan": "kv:pro"}))
            )
            .json()["addon"]["plan"],
        "pro"
    );
    let rotated = server
        .api("POST", &format!("/api/addons/{kv}/rotate"), None)
        .json();
    assert_eq!(rotated["changed"], json!(["KV_URL"]));
    assert_eq!(
        server
            .api("DELETE", &format!("/api/addons/{kv}?confirm=shop"), None)
            .status,
        200
    );
    assert!(config(&server).get("KV_URL").is_none());
    // The CLI sees the same store.
    assert_eq!(
        env.release_descriptions("shop")[0],
        format!("Detach KV ({kv})")
    );
}

#[test]
fn kv_serves_data_with_the_credentials_from_kv_url() {
    let (_env, server) = setup();
    let (user, password, path) = creds(config(&server)["KV_URL"].as_str().unwrap());
    let auth = basic(&user, &password);
    let put = request(
        &server.addr,
        "PUT",
        &format!("{path}/greeting"),
        &[("authorization", &auth)],
        b"hello",
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let get = request(
        &server.addr,
        "GET",
        &format!("{path}/greeting"),
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    let wrong = basic(&user, "not-the-password");
    assert_eq!(
        request(
            &server.addr,
            "GET",
            &format!("{path}/greeting"),
            &[("authorization", &wrong)],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        request(&server.addr, "GET", &format!("{path}/greeting"), &[], b"").status,
        401
    );
    let del = request(
        &server.addr,
        "DELETE",
        &format!("{path}/greeting"),
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(del.status, 204);
    assert_eq!(
        request(
            &server.addr,
            "GET",
            &format!("{path}/greeting"),
            &[("authorization", &auth)],
            b""
        )
        .status,
        404
    );
}

#[test]
fn exceptions_stores_posts_with_the_api_key_and_rejects_others() {
    let (_env, server) = setup();
    let url = config(&server)["EXCEPTIONS_URL"]
        .as_str()
        .unwrap()
        .to_string();
    let path = url::Url::parse(&url).unwrap().path().to_string();
    let r = request(
        &server.addr,
        "POST",
        &format!("{path}/exceptions"),
        &[],
        br#"{"error":"NoMethodError"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let list = request(&server.addr, "GET", &format!("{path}/exceptions"), &[], b"").json();
    assert_eq!(list[0]["exception"]["error"], "NoMethodError");
    let bad = path.replace(path.rsplit('/').next().unwrap(), "wrongkey");
    assert_eq!(
        request(
            &server.addr,
            "POST",
            &format!("{bad}/exceptions"),
            &[],
            b"{}"
        )
        .status,
        401
    );
}

/// Follows the SSO link of `attachment` with a signed-in dashboard session;
/// returns the posted form fields.
fn sso_form(server: &Server, session: &str, attachment: &str) -> Vec<(String, String)> {
    server.sso_form("shop", session, attachment)
}

fn post_login(
    server: &Server,
    service: &str,
    fields: &[(String, String)],
) -> support::http::Response {
    server.sso_login(service, fields)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(k, _)| k == name).unwrap().1
}

#[test]
fn sso_valid_login_redirects_with_scoped_cookies_and_opens_the_dashboard() {
    let (_env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    for name in [
        "id",
        "token",
        "resource_id",
        "resource_token",
        "timestamp",
        "email",
        "app",
        "context_app",
        "nav-data",
        "issue_no",
    ] {
        assert!(fields.iter().any(|(k, _)| k == name), "missing {name}");
    }
    assert_eq!(field(&fields, "issue_no"), "42");
    let r = post_login(&server, "kv", &fields);
    assert_eq!(r.status, 302, "{}", r.text());
    let ns = field(&fields, "id");
    // On the add-on's own origin.
    assert_eq!(
        r.header("location"),
        Some(format!("/dashboard/{ns}").as_str())
    );
    let cookies = r.headers_named("set-cookie");
    let sso = cookies
        .iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .expect("session cookie");
    // Host-only (no Domain): the add-on's origin alone receives it.
    assert!(
        sso.contains("HttpOnly")
            && sso.contains("SameSite=Lax")
            && sso.contains("Path=/")
            && !sso.to_ascii_lowercase().contains("domain="),
        "{sso}"
    );
    let nav = cookies
        .iter()
        .find(|c| c.starts_with("heroku-nav-data="))
        .expect("nav-data cookie");
    assert!(
        nav.contains(
            &url::form_urlencoded::byte_serialize(field(&fields, "nav-data").as_bytes())
                .collect::<String>()
        ),
        "{nav}"
    );

    let cookie = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .unwrap();
    let dash = server.addon_request(
        "kv",
        "GET",
        &format!("/dashboard/{ns}"),
        &[("cookie", &cookie)],
        b"",
    );
    assert_eq!(dash.status, 200);
    assert!(dash.text().contains(&format!(r#"id="namespace">{ns}<"#)));
    assert!(dash.text().contains(r#"id="user">owner@addonhost.local<"#));
}

#[test]
fn sso_denies_bad_token_stale_and_future_timestamps() {
    let (_env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let mut bad = fields.clone();
    for (k, v) in bad.iter_mut() {
        if k == "token" {
            *v = "0".repeat(40);
        }
    }
    assert_eq!(post_login(&server, "kv", &bad).status, 403);
    // Re-signed with the manifest's salt at a stale and a future time.
    let salt = kv_salt();
    for ts in [unix_now() - 6 * 60, unix_now() + 2 * 60] {
        let mut f = fields.clone();
        let (id, uuid) = (
            field(&fields, "id").to_string(),
            field(&fields, "resource_id").to_string(),
        );
        for (k, v) in f.iter_mut() {
            match k.as_str() {
                "timestamp" => *v = ts.to_string(),
                "token" => *v = addonhost::sso::token(&id, &salt, ts),
                "resource_token" => *v = addonhost::sso::token(&uuid, &salt, ts),
                _ => {}
            }
        }
        assert_eq!(
            post_login(&server, "kv", &f).status,
            403,
            "timestamp {ts} accepted"
        );
    }
    // The same form, correctly signed now, is accepted: the denials were about the token.
    assert_eq!(post_login(&server, "kv", &fields).status, 302);
}

/// kv's SSO salt, from its manifest.
fn kv_salt() -> String {
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(root().join("plugins/kv/addon-manifest.json")).unwrap(),
    )
    .unwrap()["api"]["sso_salt"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn sso_denies_a_valid_token_with_a_wrong_resource_token() {
    let (_env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let ts: i64 = field(&fields, "timestamp").parse().unwrap();
    // The platform's own token stays; resource_token is signed with the right
    // salt and time for another resource, or is the id's token, or is gone.
    let other = addonhost::sso::token("5f0c2a8e-1d3b-4c6a-9e7f-0a1b2c3d4e5f", &kv_salt(), ts);
    let own_token = field(&fields, "token").to_string();
    for wrong in [other, own_token, String::new()] {
        let mut f = fields.clone();
        for (k, v) in f.iter_mut() {
            if k == "resource_token" {
                *v = wrong.clone();
            }
        }
        let r = post_login(&server, "kv", &f);
        assert_eq!(r.status, 403, "resource_token {wrong:?} accepted");
        assert!(
            r.text().contains("resource_token does not match"),
            "{}",
            r.text()
        );
        assert!(
            !r.cookies()
                .iter()
                .any(|c| c.starts_with("addonhost_sso_kv=")),
            "a denied login got a session"
        );
    }
    // The form as the platform signed it is accepted.
    assert_eq!(post_login(&server, "kv", &fields).status, 302);
}

#[test]
fn forged_identity_header_is_ignored() {
    let (_env, server) = setup();
    let ns = creds(config(&server)["KV_URL"].as_str().unwrap()).0;
    let forged = [
        ("x-addonhost-resource", ns.as_str()),
        ("x-addonhost-user", "mallory@evil"),
    ];
    // On the add-on's origin and on its resource route alike.
    let r = server.addon_request("kv", "GET", &format!("/dashboard/{ns}"), &forged, b"");
    assert_eq!(r.status, 403);
    let r = server.get(&format!("/addons/kv/dashboard/{ns}"), &forged);
    assert_eq!(r.status, 403);
}

#[test]
fn session_of_one_addon_does_not_open_another() {
    let (_env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let r = post_login(&server, "kv", &fields);
    let cookie = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .unwrap();
    let value = cookie.split_once('=').unwrap().1;
    let exc = sso_form(&server, &session, "EXCEPTIONS");
    let project = field(&exc, "id");
    // The kv session, presented to exceptions under either cookie name.
    for c in [cookie.clone(), format!("addonhost_sso_exceptions={value}")] {
        let r = server.addon_request(
            "exceptions",
            "GET",
            &format!("/dashboard/{project}"),
            &[("cookie", &c)],
            b"",
        );
        assert_eq!(r.status, 403, "{c}");
    }
    // And a kv login form posted to exceptions' route is denied.
    assert_eq!(post_login(&server, "exceptions", &fields).status, 403);
}

#[test]
fn dashboard_roll_button_updates_kv_url_with_a_release_and_old_password_keeps_working() {
    let (env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let cookie = post_login(&server, "kv", &fields)
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .unwrap();
    let ns = field(&fields, "id").to_string();
    let old = config(&server)["KV_URL"].as_str().unwrap().to_string();
    let (user, old_pw, path) = creds(&old);
    let put = request(
        &server.addr,
        "PUT",
        &format!("{path}/k"),
        &[("authorization", &basic(&user, &old_pw))],
        b"v",
    );
    assert_eq!(put.status, 201);

    let r = server.addon_request(
        "kv",
        "POST",
        &format!("/dashboard/{ns}/roll"),
        &[("cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let new = config(&server)["KV_URL"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(env.release_descriptions("shop")[0], "Update KV_URL by kv");
    let audit = env.json(&["audit", "-a", "shop"]);
    assert!(
        audit[0]["detail"]
            .as_str()
            .unwrap()
            .contains("credentials rolled from the kv dashboard"),
        "{audit}"
    );
    let (_, new_pw, _) = creds(&new);
    for pw in [&new_pw, &old_pw] {
        let get = request(
            &server.addr,
            "GET",
            &format!("{path}/k"),
            &[("authorization", &basic(&user, pw))],
            b"",
        );
        assert_eq!(get.status, 200, "password {pw} refused");
    }
}

#[test]
fn dashboard_requires_sign_in_and_shows_the_app() {
    let (_env, server) = setup();
    let r = server.get("/apps/shop", &[]);
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/login"));
    let bad = request(
        &server.addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"token=nope",
    );
    assert_eq!(bad.status, 401);
    let session = server.sign_in();
    let page = server.get("/apps/shop", &[("cookie", &session)]).text();
    assert!(page.contains(r#"href="/myapps/shop/addons/KV""#), "{page}");
    assert!(page.contains("Attach KV"), "{page}");
    assert!(
        page.contains("<details>"),
        "values are masked until clicked"
    );
    // A cross-site form post is refused.
    let r = request(
        &server.addr,
        "POST",
        "/logout",
        &[("cookie", &session), ("origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn consumption_example_talks_to_both_addons_through_run() {
    let (env, server) = setup();
    let _ = &server;
    let script = root().join("examples/consume.sh");
    let r = env.run(&["run", "-a", "shop", "--", "sh", script.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("read back: hello from the app"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("exception reported"), "{}", r.stdout);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_store_then_exits_zero() {
    // A provisioning that takes a second inside the add-on, under a deadline
    // long enough that only the add-on's own pace decides when it answers.
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["limits"]["timeout_ms"] = json!(30_000);
    });
    let server = Server::start(&env);
    assert_eq!(
        server
            .api("POST", "/api/apps", Some(json!({"name": "shop"})))
            .status,
        201
    );
    let uuid = "00000000-0000-4000-8000-00000000005e";
    let in_flight = {
        let (addr, bearer) = (server.addr.clone(), format!("Bearer {}", server.token));
        std::thread::spawn(move || {
            let body = json!({
                "plan": "hostile",
                "uuid": uuid,
                "options": {"attack": "slow", "ms": "1000"},
            });
            support::http::try_request(
                &addr,
                "POST",
                "/api/apps/shop/addons",
                &[
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
        })
    };
    // The request is inside the add-on once its reservation is stored (the
    // platform stores it before calling the plugin).
    let mut db = env.db();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let state: Option<String> = db
            .strings("SELECT state FROM resources WHERE uuid = $1", &[uuid])
            .into_iter()
            .next();
        if state.is_some() || in_flight.is_finished() {
            if state.is_none() {
                let r = in_flight.join().unwrap().unwrap();
                panic!(
                    "the provisioning never reached the add-on: {} {}",
                    r.status,
                    r.text()
                );
            }
            assert_eq!(state.as_deref(), Some("provisioning"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the provisioning never reached the add-on"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(db);
    assert!(
        !in_flight.is_finished(),
        "the request answered before SIGTERM: nothing was in flight"
    );
    let status = server.stop();
    let r = in_flight
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the request in flight got no answer: {e}"));
    assert_eq!(r.status, 201, "the request in flight failed: {}", r.text());
    let created = r.json();
    assert_eq!(created["addon"]["state"], "provisioned", "{created}");
    assert!(status.success(), "the server exited with {status:?}");
    // What it answered was stored: the add-on and its var, after the exit.
    let addons = env.json(&["addons", "-a", "shop"]);
    assert_eq!(addons[0]["uuid"], uuid, "{addons}");
    assert_eq!(addons[0]["state"], "provisioned", "{addons}");
    let url = created["config"][0][1].as_str().unwrap();
    assert_eq!(env.config("shop")["HOSTILE_URL"], url);
    assert!(env
        .release_descriptions("shop")
        .iter()
        .any(|d| d.starts_with("Attach HOSTILE")));
}

#[test]
fn hanging_sso_verify_answers_an_error_at_its_deadline_and_the_server_stays_responsive() {
    // One call at a time for the hostile add-on, under a 3 s deadline: while
    // its SSO verify hangs, any other request to it is answered 503, which
    // is how the test sees that the login is inside the plugin.
    // The server runs one worker thread: no other thread can answer while
    // the plugin spins on it, so only its yielding (every epoch tick) keeps
    // the server responsive.
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["limits"]["concurrency"] = json!(1);
        m["limits"]["timeout_ms"] = json!(3000);
    });
    let mut serve = env.command(&["serve", "--port", "0"]);
    serve.env("ADDONHOST_WORKER_THREADS", "1");
    let server = Server::start_with(serve, &env);
    server.app_with(
        "shop",
        &[json!({"plan": "hostile", "options": {"sso": "hang"}})],
    );
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "HOSTILE");
    let addr = server.addr.clone();
    let host = server.addon_host("hostile");
    let login = std::thread::spawn(move || loop {
        let r = request(
            &addr,
            "POST",
            "/sso/login",
            &[
                ("host", &host),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form(&fields).as_bytes(),
        );
        // Turned away while the test's own probe held the slot: retry, as
        // the 503 says to.
        if r.status != 503 {
            return (r.status, r.text());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    });
    let verify_running = || server.get("/addons/hostile/headers", &[]).status == 503;
    while !verify_running() {
        assert!(
            !login.is_finished(),
            "the login answered before it was seen inside the plugin"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // While the plugin spins, the server answers other requests: the health
    // check comes back, and the verify is still running after it.
    assert_eq!(server.get("/healthz", &[]).status, 200);
    assert!(
        verify_running(),
        "the health check was answered only once the hanging verify ended"
    );
    let (status, text) = login.join().unwrap();
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("timed out after 3000 ms"),
        "the deadline ended the login: {text}"
    );
    // The slot is free again.
    assert_eq!(server.get("/addons/hostile/headers", &[]).status, 200);
}

#[test]
fn sso_verify_that_accepts_anything_still_opens_only_its_own_addon() {
    let (_env, server) = setup();
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "hostile", "options": {"sso": "yes"}})),
    );
    assert_eq!(r.status, 201);
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "HOSTILE");
    let mut forged = fields.clone();
    for (k, v) in forged.iter_mut() {
        if k == "token" || k == "resource_token" {
            *v = "0".repeat(40);
        }
    }
    // The plugin would let a forged login in; the host checks the
    // signature before asking it.
    let r = post_login(&server, "hostile", &forged);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("token does not match"), "{}", r.text());
    // The plugin's own fault: it lets anyone in…
    let r = post_login(&server, "hostile", &fields);
    assert_eq!(r.status, 302);
    let cookie = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_hostile="))
        .unwrap();
    let value = cookie.split_once('=').unwrap().1.to_string();
    // …but that session opens nothing else.
    let ns = creds(config(&server)["KV_URL"].as_str().unwrap()).0;
    for c in [cookie.clone(), format!("addonhost_sso_kv={value}")] {
        assert_eq!(
            server
                .addon_request(
                    "kv",
                    "GET",
                    &format!("/dashboard/{ns}"),
                    &[("cookie", &c)],
                    b""
                )
                .status,
            403,
            "{c}"
        );
    }
    assert_eq!(
        server.get("/apps/shop", &[("cookie", &cookie)]).status,
        303,
        "not a dashboard session"
    );
}

/// `fields` (kv's SSO form) signed again at `ts`, with `email`.
fn resigned(fields: &[(String, String)], ts: i64, email: &str) -> Vec<(String, String)> {
    let salt = kv_salt();
    let (id, uuid) = (
        field(fields, "id").to_string(),
        field(fields, "resource_id").to_string(),
    );
    let mut f = fields.to_vec();
    for (k, v) in f.iter_mut() {
        match k.as_str() {
            "timestamp" => *v = ts.to_string(),
            "token" => *v = addonhost::sso::token(&id, &salt, ts),
            "resource_token" => *v = addonhost::sso::token(&uuid, &salt, ts),
            "email" => *v = email.to_string(),
            _ => {}
        }
    }
    f
}

/// The add-on session cookie a login answered (`name=value`), if any.
fn sso_cookie(r: &support::http::Response, service: &str) -> Option<String> {
    r.cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("addonhost_sso_{service}=")))
}

/// SSO sessions of `kind` held in the store.
fn sessions_of(env: &Env, kind: &str) -> i64 {
    env.db()
        .count("SELECT COUNT(*) FROM sessions WHERE kind = $1", &[kind])
}

#[test]
fn a_replayed_sso_form_is_refused_and_makes_no_second_session() {
    let (env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let first = post_login(&server, "kv", &fields);
    assert_eq!(first.status, 302, "{}", first.text());
    assert!(sso_cookie(&first, "kv").is_some());
    // The same form again, as posted and with its tokens in capitals (the
    // same signature to the add-on, which accepts hex of either case).
    let mut upper = fields.clone();
    for (k, v) in upper.iter_mut() {
        if k == "token" || k == "resource_token" {
            *v = v.to_ascii_uppercase();
        }
    }
    for replay in [&fields, &upper, &fields] {
        let r = post_login(&server, "kv", replay);
        assert_eq!(r.status, 403, "a replayed form was accepted: {}", r.text());
        assert!(r.text().contains("used already"), "{}", r.text());
        assert!(sso_cookie(&r, "kv").is_none(), "a replay got a session");
    }
    assert_eq!(sessions_of(&env, "sso:kv"), 1, "one form, one session");
    // A form the platform signed at another second is another form.
    let ts: i64 = field(&fields, "timestamp").parse().unwrap();
    let next = post_login(
        &server,
        "kv",
        &resigned(&fields, ts - 1, "owner@addonhost.local"),
    );
    assert_eq!(next.status, 302, "{}", next.text());
    assert_eq!(sessions_of(&env, "sso:kv"), 2);
}

#[test]
fn one_user_replaying_a_form_cannot_sign_everyone_else_out() {
    let (env, server) = setup();
    let session = server.sign_in();
    let fields = sso_form(&server, &session, "KV");
    let ns = field(&fields, "id").to_string();
    let victim = sso_cookie(&post_login(&server, "kv", &fields), "kv").expect("signed in");
    let dashboard = |cookie: &str| {
        server
            .addon_request(
                "kv",
                "GET",
                &format!("/dashboard/{ns}"),
                &[("cookie", cookie)],
                b"",
            )
            .status
    };
    assert_eq!(dashboard(&victim), 200);
    // Mallory holds one form of her own (signed a second earlier) and posts
    // it ten thousand times: as many sessions as the add-on keeps.
    let ts: i64 = field(&fields, "timestamp").parse().unwrap();
    let mallory = "mallory@example.com";
    let hers_once = std::sync::Arc::new(resigned(&fields, ts - 1, mallory));
    let addr = server.addr.clone();
    let host = server.addon_host("kv");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (fields, addr, host, accepted) = (
                hers_once.clone(),
                addr.clone(),
                host.clone(),
                accepted.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..1250 {
                    let r = request(
                        &addr,
                        "POST",
                        "/sso/login",
                        &[
                            ("host", &host),
                            ("content-type", "application/x-www-form-urlencoded"),
                        ],
                        form(&fields).as_bytes(),
                    );
                    if r.status == 302 {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a form is accepted once"
    );
    assert_eq!(dashboard(&victim), 200, "the victim was signed out");
    // Fresh forms, one per second of the window (each one the platform
    // would have to sign): accepted, but Mallory keeps ten sessions at
    // most, her oldest going first; the victim's stays.
    let mut hers = Vec::new();
    for back in 2..42 {
        let r = post_login(&server, "kv", &resigned(&fields, ts - back, mallory));
        assert_eq!(r.status, 302, "{}", r.text());
        hers.push(sso_cookie(&r, "kv").unwrap());
    }
    assert_eq!(dashboard(&victim), 200, "the victim was signed out");
    assert_eq!(dashboard(hers.last().unwrap()), 200);
    assert_eq!(dashboard(&hers[0]), 403, "her oldest session went first");
    assert_eq!(sessions_of(&env, "sso:kv"), 1 + 10);
}

#[test]
fn a_plugin_cannot_redirect_refresh_or_clear_the_platform_origin() {
    let (_env, server) = setup();
    let r = server.get("/addons/hostile/headers-out", &[]);
    assert_eq!(r.status, 302, "{}", r.text());
    for h in [
        "location",
        "refresh",
        "clear-site-data",
        "set-cookie",
        "link",
        "content-disposition",
        "www-authenticate",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "x-hostile",
    ] {
        assert!(
            r.header(h).is_none(),
            "{h} crossed to the platform's origin: {:?}",
            r.headers
        );
    }
    // What describes the content stays.
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    assert_eq!(r.text(), "hostile headers\n");
    // On its own origin an add-on's answer is its own (cookies aside).
    let own = server.addon_request("hostile", "GET", "/headers-out", &[], b"");
    assert_eq!(own.header("location"), Some("https://evil.example/phish"));
    assert!(own.header("set-cookie").is_none());
}

/// A server whose public URL is https (behind a TLS proxy) with its add-ons
/// under `addons.test`.
fn https_server(env: &Env) -> Server {
    Server::start_with(
        env.command(&[
            "serve",
            "--port",
            "0",
            "--url",
            "https://addons.test:8443",
            "--addons-domain",
            "addons.test",
        ]),
        env,
    )
}

#[test]
fn session_cookies_are_secure_and_host_prefixed_behind_https() {
    let env = Env::new();
    let server = https_server(&env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    let platform = "addons.test:8443";
    let kv = "kv.addons.test:8443";
    let body = format!("token={}", server.token);
    let login = request(
        &server.addr,
        "POST",
        "/login",
        &[
            ("host", platform),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(login.status, 303, "{}", login.text());
    let set = login.headers_named("set-cookie");
    let dash = set
        .iter()
        .find(|c| c.starts_with("__Host-addonhost_session="))
        .unwrap_or_else(|| panic!("a __Host- dashboard cookie: {set:?}"));
    assert!(
        dash.contains("; Secure") && dash.contains("Path=/"),
        "{dash}"
    );
    assert!(!dash.to_ascii_lowercase().contains("domain="), "{dash}");
    let session = dash.split(';').next().unwrap().to_string();
    let page = request(
        &server.addr,
        "GET",
        "/myapps/shop/addons/KV",
        &[("host", platform), ("cookie", &session)],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page
        .text()
        .contains("https://kv.addons.test:8443/sso/login"));
    let fields = form_fields(&page.text());
    let r = request(
        &server.addr,
        "POST",
        "/sso/login",
        &[
            ("host", kv),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form(&fields).as_bytes(),
    );
    assert_eq!(r.status, 302, "{}", r.text());
    let set = r.headers_named("set-cookie");
    let sso = set
        .iter()
        .find(|c| c.starts_with("__Host-addonhost_sso_kv="))
        .unwrap_or_else(|| panic!("a __Host- add-on cookie: {set:?}"));
    assert!(sso.contains("; Secure") && sso.contains("Path=/"), "{sso}");
    assert!(!sso.to_ascii_lowercase().contains("domain="), "{sso}");
    let nav = set
        .iter()
        .find(|c| c.starts_with("heroku-nav-data="))
        .unwrap();
    assert!(nav.contains("; Secure"), "{nav}");
    let value = sso.split(';').next().unwrap().split_once('=').unwrap().1;
    let ns = field(&fields, "id");
    let open = |cookie: &str| {
        request(
            &server.addr,
            "GET",
            &format!("/dashboard/{ns}"),
            &[("host", kv), ("cookie", cookie)],
            b"",
        )
        .status
    };
    assert_eq!(open(&format!("__Host-addonhost_sso_kv={value}")), 200);
    // The unprefixed name is what a sibling origin can plant with Domain=:
    // never read.
    assert_eq!(open(&format!("addonhost_sso_kv={value}")), 403);
}

/// Every answer of an add-on, on the platform's origin and on its own, is
/// `nosniff`; on the platform's origin also `Content-Security-Policy:
/// sandbox` — whatever the add-on answered (a page, an error, nothing).
#[test]
fn resource_routes_answer_sandboxed_and_nosniff() {
    let (_env, server) = setup();
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "hostile"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for (path, status) in [
        ("/attack", 200),
        ("/headers", 200),
        ("/headers-out", 302),
        ("/no-such-page", 404),
    ] {
        let on_platform = server.get(&format!("/addons/hostile{path}"), &[]);
        assert_eq!(on_platform.status, status, "{path}: {}", on_platform.text());
        assert_eq!(
            on_platform.header("content-security-policy"),
            Some("sandbox"),
            "{path}: {:?}",
            on_platform.headers
        );
        assert_eq!(
            on_platform.header("x-content-type-options"),
            Some("nosniff"),
            "{path}: {:?}",
            on_platform.headers
        );
        let own = server.addon_request("hostile", "GET", path, &[], b"");
        assert_eq!(own.status, status, "{path}: {}", own.text());
        assert_eq!(
            own.header("x-content-type-options"),
            Some("nosniff"),
            "{path}: {:?}",
            own.headers
        );
    }
    // kv's resource route too, and an add-on that does not exist.
    let kv = server.get("/addons/kv/", &[]);
    assert_eq!(kv.header("content-security-policy"), Some("sandbox"));
    assert_eq!(kv.header("x-content-type-options"), Some("nosniff"));
    let none = server.get("/addons/nope/x", &[]);
    assert_eq!(none.status, 404, "{}", none.text());
    assert_eq!(none.header("content-security-policy"), Some("sandbox"));
}

/// A request to an add-on carrying the dashboard's session cookie and the
/// API token — a browser signed in, a client sending everything it has —
/// reaches the plugin without either, on both origins; what is the add-on's
/// own (its credentials' `Authorization`, any other header) still reaches
/// it. The plugin's record of what it saw is read back from its KV.
#[test]
fn the_platforms_cookie_and_token_never_reach_a_plugin() {
    let (env, server) = setup();
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "hostile"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let session = server.sign_in();
    let cookie = format!("{session}; addonhost_sso_hostile=x; other=1");
    let bearer = format!("Bearer {}", server.token);
    let session_value = session.split_once('=').unwrap().1.to_string();
    let seen = |r: support::http::Response| -> serde_json::Value {
        assert_eq!(r.status, 200, "{}", r.text());
        let answered = r.json();
        // What the plugin recorded is what it answered.
        let kept: serde_json::Value =
            serde_json::from_str(&env.db().kv("hostile", "seen/headers").unwrap()).unwrap();
        assert_eq!(kept, answered);
        answered
    };
    let platform = seen(server.get(
        "/addons/hostile/headers",
        &[
            ("cookie", &cookie),
            ("authorization", &bearer),
            ("x-probe", "platform"),
        ],
    ));
    let own = seen(server.addon_request(
        "hostile",
        "GET",
        "/headers",
        &[
            ("cookie", &cookie),
            ("authorization", &bearer),
            ("x-probe", "own"),
        ],
        b"",
    ));
    for (origin, h, probe) in [("platform", &platform, "platform"), ("own", &own, "own")] {
        assert_eq!(h["x-probe"], probe, "{origin}: {h}");
        assert!(h.get("cookie").is_none(), "{origin}: {h}");
        assert!(h.get("authorization").is_none(), "{origin}: {h}");
        let text = h.to_string();
        assert!(!text.contains(&server.token), "{origin}: {text}");
        assert!(!text.contains(&session_value), "{origin}: {text}");
    }
    // An Authorization that is not the platform's token is the add-on's
    // business (kv's Basic credentials): it goes through.
    let basic = basic("user", "its-own-password");
    let h = seen(server.get("/addons/hostile/headers", &[("authorization", &basic)]));
    assert_eq!(h["authorization"], basic.as_str(), "{h}");
    // And a plugin's Set-Cookie never comes back, on either origin.
    let r = server.get("/addons/hostile/headers-out", &[("cookie", &cookie)]);
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
    let r = server.addon_request("hostile", "GET", "/headers-out", &[], b"");
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
}
