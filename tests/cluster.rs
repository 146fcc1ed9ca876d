//! Several `addonhost serve` processes (and CLI invocations) on one
//! PostgreSQL database: concurrent writers spread over them, a server killed
//! mid-provisioning, a scheduled rotation every server finds due, sessions
//! valid on every server, a server on other plugin bytes, and the database
//! going away under load. Every test runs on PostgreSQL whatever the pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::db::{PgCluster, PgDatabase};
use crate::support::*;
use serde_json::{json, Value};

/// `n` servers on `env`'s database, each with a data dir of its own (the
/// first `env`'s); the siblings' environments are returned too.
fn servers(env: &Env, n: usize) -> (Vec<Env>, Vec<Arc<Server>>) {
    let mut envs = Vec::new();
    let mut servers = vec![Arc::new(Server::start(env))];
    for _ in 1..n {
        let sibling = env.sibling();
        servers.push(Arc::new(Server::start(&sibling)));
        envs.push(sibling);
    }
    (envs, servers)
}

/// Releases of `app` are 1..=n, each once.
fn gap_free(env: &Env, app: &str) -> i64 {
    let versions = env.release_versions(app);
    let n = versions.len() as i64;
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "{app}: releases have gaps"
    );
    n
}

#[test]
fn two_hundred_writers_on_three_servers_and_the_cli_lose_nothing() {
    let env = Env::on_postgres();
    let apps = ["north", "south", "east"];
    for app in apps {
        env.ok(&["apps:create", app]);
    }
    let (_siblings, servers) = servers(&env, 3);
    // Each server says it is up: every one lists all three.
    let deadline = Instant::now() + Duration::from_secs(15);
    for server in &servers {
        loop {
            let listed = server.api("GET", "/api/servers", None).json();
            let listed = listed.as_array().unwrap();
            if listed.len() == 3 {
                assert_eq!(listed.iter().filter(|s| s["this"] == true).count(), 1);
                break;
            }
            assert!(Instant::now() < deadline, "{listed:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }
    let env = Arc::new(env);
    let uuid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let mut writers = Vec::new();
    for i in 0..200 {
        let (env, servers) = (env.clone(), servers.clone());
        writers.push(thread::spawn(move || {
            let app = apps[i % 3];
            let server = &servers[i % 3];
            match i % 4 {
                // The CLI, straight on the database.
                0 => {
                    let r = env.run(&["config:set", &format!("CLI_{i}={i}"), "-a", app]);
                    assert_eq!(r.code, 0, "{}", r.stderr);
                }
                // The API of one of the servers.
                1 | 2 => {
                    let r = server.api(
                        "PATCH",
                        &format!("/api/apps/{app}/config"),
                        Some(json!({ format!("API_{i}"): i.to_string() })),
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                // A provisioning sent to two servers at once with one uuid
                // (a client retrying on another server): one add-on.
                _ => {
                    let body = json!({"plan": "kv:mini", "as": format!("K{i}"), "uuid": uuid(i)});
                    let other = servers[(i + 1) % 3].clone();
                    let path = format!("/api/apps/{app}/addons");
                    let b = body.clone();
                    let p = path.clone();
                    let twin = thread::spawn(move || other.api("POST", &p, Some(b)));
                    let r = server.api("POST", &path, Some(body));
                    let r2 = twin.join().unwrap();
                    for r in [r, r2] {
                        assert!(
                            r.status == 201 || r.status == 200,
                            "{}: {}",
                            r.status,
                            r.text()
                        );
                    }
                }
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    let mut db = env.db();
    for (a, app) in apps.iter().enumerate() {
        let cfg = env.config(app);
        let mine: Vec<usize> = (0..200).filter(|i| i % 3 == a).collect();
        for i in &mine {
            let key = match i % 4 {
                0 => format!("CLI_{i}"),
                1 | 2 => format!("API_{i}"),
                _ => format!("K{i}_URL"),
            };
            assert!(cfg.contains_key(&key), "{app}: {key} missing");
        }
        // The initial release, then one per write.
        assert_eq!(gap_free(&env, app), 1 + mine.len() as i64, "{app}");
    }
    let dup = db.count(
        "SELECT COUNT(*) FROM (SELECT uuid FROM resources GROUP BY uuid HAVING COUNT(*) > 1) AS d",
        &[],
    );
    assert_eq!(dup, 0, "a uuid provisioned twice");
    let provisioned = db.count(
        "SELECT COUNT(*) FROM resources WHERE state = 'provisioned'",
        &[],
    );
    assert_eq!(provisioned, 50);
}

#[test]
fn a_server_killed_mid_provisioning_loses_no_acknowledged_add_on_and_retries_elsewhere_complete() {
    let env = Env::on_postgres();
    env.ok(&["apps:create", "shop"]);
    let (_siblings, servers) = servers(&env, 2);
    let (victim, survivor) = (servers[0].clone(), servers[1].clone());
    let uuid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (victim, acked, sent, next) =
            (victim.clone(), acked.clone(), sent.clone(), next.clone());
        clients.push(thread::spawn(move || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i >= 400 || started.elapsed() > Duration::from_secs(30) {
                return;
            }
            sent.lock().unwrap().insert(i);
            let body = json!({"plan": "kv:mini", "as": format!("K{i}"), "uuid": uuid(i)});
            match victim.try_api("POST", "/api/apps/shop/addons", Some(body)) {
                Ok(r) if r.status == 201 || r.status == 200 => {
                    acked.lock().unwrap().insert(i);
                }
                Ok(r) => panic!("{}: {}", r.status, r.text()),
                // The server is gone.
                Err(_) => return,
            }
        }));
    }
    // Kill it at full speed, once it has acknowledged some.
    while acked.lock().unwrap().len() < 20 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        thread::sleep(Duration::from_millis(10));
    }
    let pid = victim.child.id();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    println!(
        "{} sent, {} acknowledged before the kill",
        sent.len(),
        acked.len()
    );
    assert!(sent.len() > acked.len(), "the kill should interrupt some");
    // Every acknowledged add-on is there.
    let states: BTreeMap<String, String> = survivor
        .api("GET", "/api/apps/shop/addons", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["uuid"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for i in &acked {
        assert_eq!(
            states.get(&uuid(*i)).map(String::as_str),
            Some("provisioned"),
            "uuid {i}"
        );
    }
    // Retrying every uuid sent, on the other server, completes each once
    // (those the dead server held wait for its lease to end).
    let retries: Vec<_> = sent
        .iter()
        .map(|&i| {
            let survivor = survivor.clone();
            thread::spawn(move || {
                let body = json!({"plan": "kv:mini", "as": format!("K{i}"), "uuid": uuid(i)});
                let r = survivor.api("POST", "/api/apps/shop/addons", Some(body));
                assert!(
                    r.status == 201 || r.status == 200,
                    "uuid {i}: {}: {}",
                    r.status,
                    r.text()
                );
            })
        })
        .collect();
    for r in retries {
        r.join().unwrap();
    }
    let mut db = env.db();
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM resources WHERE state = 'provisioned'",
            &[]
        ),
        sent.len() as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM resources", &[]),
        sent.len() as i64
    );
    let n = gap_free(&env, "shop");
    assert_eq!(n, 1 + sent.len() as i64, "one Attach release per add-on");
}

#[test]
fn a_scheduled_rotation_due_on_three_servers_runs_exactly_once() {
    // A deadline a busy machine cannot miss: a run that missed it would be
    // retried, a second call of `rotate` this test would count.
    let mut env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["rotation"] = json!({"every_seconds": 3600});
        m["limits"]["timeout_ms"] = json!(10_000);
    });
    if env.database.is_none() {
        env.database = Some(PgDatabase::create());
    }
    // Each add-on on an app of its own, its rotation reading nothing it
    // shares with the others (`--rotate-sleep-ms`, not the credential
    // record of `--slow-rotate-ms`): a rotation that finds what it read
    // changed runs again on the same server, a second call of `rotate`
    // that is no double run.
    let apps = ["a0", "a1", "a2", "a3"];
    let mut ids = BTreeSet::new();
    for app in apps {
        env.ok(&["apps:create", app]);
        // Each rotation takes 0.7 s: every server's once-a-second look
        // finds it still due while another runs it.
        let created = env.create(
            "hostile",
            app,
            &["--as", "H", "--", "--rotate-sleep-ms", "700"],
        );
        ids.insert(created["addon"]["addon_id"].as_str().unwrap().to_string());
    }
    let releases = |env: &Env| -> Vec<Vec<String>> {
        apps.iter().map(|a| env.release_descriptions(a)).collect()
    };
    let before = releases(&env);
    // The servers log at info level: the add-on's own line for each call
    // of its `rotate` (`hostile rotate called for ID`).
    let mut siblings = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let sibling = if i == 0 { None } else { Some(env.sibling()) };
        let on = sibling.as_ref().unwrap_or(&env);
        let mut serve = on.command(&["serve", "--port", "0"]);
        serve.env("ADDONHOST_LOG", "info");
        servers.push(Server::start_with(serve, on));
        siblings.extend(sibling);
    }
    for s in &servers {
        assert_eq!(s.get("/healthz", &[]).status, 200);
    }
    // Every add-on's rotation falls due at once, on three running servers.
    let mut db = env.db();
    let past = unix_now() - 7200;
    assert_eq!(
        db.execute(&format!("UPDATE resources SET rotated_at = {past}"), &[]),
        4
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = db.count(
            &format!("SELECT COUNT(*) FROM resources WHERE rotated_at = {past}"),
            &[],
        );
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} rotations never ran: {:?}",
            db.rows(
                "SELECT name, rotated_at, rotation_error, rotation_claimed_by, rotation_claimed_until FROM resources",
                &[]
            )
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Let every server look a few more times.
    thread::sleep(Duration::from_secs(4));
    // The add-on was asked once per add-on, by one server: a second run
    // whose outcome was thrown away would not show in the store.
    let mut calls: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut lines = Vec::new();
    for (n, server) in servers.iter().enumerate() {
        for line in server.log.lock().unwrap().iter() {
            if let Some(rest) = line.split("hostile rotate called for ").nth(1) {
                let id = rest.split_whitespace().next().unwrap().to_string();
                calls.entry(id).or_default().push(n);
                lines.push(format!("server {n}: {line}"));
            }
        }
    }
    let lines = lines.join("\n");
    assert_eq!(
        calls.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "rotate calls by add-on id (and the servers that made them): {calls:?}"
    );
    for (id, by) in &calls {
        assert_eq!(
            by.len(),
            1,
            "{id}: rotate called by servers {by:?}:\n{lines}"
        );
    }
    // One rotation release on each app.
    for ((app, before), after) in apps.iter().zip(&before).zip(releases(&env)) {
        let rotations: Vec<&String> = after.iter().filter(|d| d.starts_with("Rotate")).collect();
        assert_eq!(rotations.len(), 1, "{app}: {after:?}");
        assert_eq!(after.len(), before.len() + 1, "{app}: {after:?}");
        gap_free(&env, app);
    }
    // One successful rotation audited per add-on, too (a run that missed
    // its deadline on a busy machine is audited as failed and retried).
    let done = db.count(
        "SELECT COUNT(*) FROM audit WHERE action = 'addons:rotate' AND detail NOT LIKE 'failed%'",
        &[],
    );
    assert_eq!(done, 4, "rotations audited");
}

#[test]
fn a_session_made_on_one_server_is_valid_on_every_server() {
    let env = Env::on_postgres();
    env.ok(&["apps:create", "shop"]);
    let (_siblings, servers) = servers(&env, 2);
    // One API token for all of them.
    assert_eq!(servers[0].token, servers[1].token);
    let cookie = servers[0].sign_in();
    let page = servers[1].get("/apps/shop", &[("cookie", &cookie)]);
    assert_eq!(page.status, 200, "{}", page.text());
    // Signing out on the second ends it on the first.
    let origin = format!("http://{}", servers[1].addr);
    let out = http::request(
        &servers[1].addr,
        "POST",
        "/logout",
        &[("cookie", &cookie), ("origin", &origin)],
        b"",
    );
    assert_eq!(out.status, 303, "{}", out.text());
    let page = servers[0].get("/apps/shop", &[("cookie", &cookie)]);
    assert_eq!(
        page.status, 303,
        "a session ended on one server lives on another"
    );
}

#[test]
fn a_signed_sso_form_is_accepted_once_across_servers() {
    let env = Env::on_postgres();
    let (_siblings, servers) = servers(&env, 2);
    servers[0].app_with("shop", &[json!({"plan": "kv:mini"})]);
    let cookie = servers[0].sign_in();
    // One form posted to the first server, then replayed to the second.
    let fields = servers[0].sso_form("shop", &cookie, "KV");
    assert_eq!(servers[0].sso_login("kv", &fields).status, 302);
    let replay = servers[1].sso_login("kv", &fields);
    assert_eq!(
        replay.status,
        403,
        "replayed on another server: {}",
        replay.text()
    );
    // Another form, posted to both servers at once: one of them signs in.
    let mut again = servers[0].sso_form("shop", &cookie, "KV");
    while again == fields {
        thread::sleep(Duration::from_millis(100));
        again = servers[0].sso_form("shop", &cookie, "KV");
    }
    let again = Arc::new(again);
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let (server, fields) = (servers[i % 2].clone(), again.clone());
            thread::spawn(move || server.sso_login("kv", &fields).status)
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [302, 403, 403, 403, 403, 403]);
    assert_eq!(
        env.db()
            .count("SELECT COUNT(*) FROM sessions WHERE kind = $1", &["sso:kv"]),
        2
    );
}

/// A copy of the built component with a custom section appended: the same
/// add-on, other bytes (another build).
fn rebuilt(component: &std::path::Path) {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"addonhost-test-build";
    let payload = b"another build";
    let body_len = 1 + name.len() + payload.len();
    assert!(body_len < 128);
    bytes.push(0);
    bytes.push(body_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(component, bytes).unwrap();
}

#[test]
fn a_server_on_other_plugin_bytes_refuses_the_add_on_until_they_are_deployed() {
    let env = Env::on_postgres();
    env.ok(&["apps:create", "shop"]);
    let a = Server::start(&env);
    // The first server to run an add-on makes its component the platform's.
    let r = a.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "kv:mini", "as": "FIRST"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Another machine, where kv was built again.
    let mut b_env = env.sibling();
    let folder = b_env.data().join("plugins/kv");
    std::fs::create_dir_all(&folder).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("plugins/kv/addon-manifest.json")).unwrap(),
    )
    .unwrap();
    let component = manifest["component"].as_str().unwrap();
    std::fs::write(folder.join("addon-manifest.json"), manifest.to_string()).unwrap();
    std::fs::copy(
        root().join("plugins/kv").join(component),
        folder.join(component),
    )
    .unwrap();
    rebuilt(&folder.join(component));
    b_env.plugins = b_env.data().join("plugins").to_str().unwrap().to_string();
    // Its folder is another path: the operator binds it first.
    b_env.ok(&["plugins:trust", folder.to_str().unwrap()]);
    let b = Server::start(&b_env);
    let r = b.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "kv:mini", "as": "SECOND"})),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("plugins:deploy"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
    // GET /api/plugins says which server runs what.
    let deadline = Instant::now() + Duration::from_secs(15);
    let hashes = loop {
        let plugins = a.api("GET", "/api/plugins", None).json();
        let kv = plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "kv")
            .unwrap()
            .clone();
        let hashes: BTreeSet<String> = kv["servers"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s["component_hash"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if hashes.len() == 2 {
            assert_eq!(kv["accepted_components"].as_array().unwrap().len(), 1);
            break hashes;
        }
        assert!(Instant::now() < deadline, "{kv}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(hashes.len(), 2);
    // A rolling deploy: accept the new build beside the old…
    let out = b_env.ok(&["plugins:deploy", folder.to_str().unwrap()]);
    assert!(out.contains("accepted"), "{out}");
    let r = b.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "kv:mini", "as": "SECOND"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = a.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "kv:mini", "as": "THIRD"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // …then end it: the server still on the old build stops serving kv.
    b_env.ok(&["plugins:deploy", folder.to_str().unwrap(), "--only"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = a.api(
            "POST",
            "/api/apps/shop/addons",
            Some(json!({"plan": "kv:mini", "as": "FOURTH"})),
        );
        if r.status == 503 {
            break;
        }
        assert_eq!(r.status, 201, "{}", r.text());
        let name = r.json()["addon"]["name"].as_str().unwrap().to_string();
        let r = a.api("DELETE", &format!("/api/addons/{name}?confirm=shop"), None);
        if r.status == 503 {
            break; // refused between the two calls
        }
        assert!(r.status < 300, "{}", r.text());
        assert!(Instant::now() < deadline, "the old build still serves kv");
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_database_going_away_under_load_answers_503_then_service_resumes_and_nothing_acknowledged_is_lost(
) {
    let cluster = PgCluster::start();
    let mut env = Env::on_sqlite();
    env.database = Some(PgDatabase::create_on(&cluster.url).through(|| cluster.pgbouncer()));
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let server = Arc::new(Server::start(&env));
    let kv = server.kv_url("shop");
    assert_eq!(server.kv_put(&kv, "k", b"stored").status, 201);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    // Readers too, of the app's config and of the kv add-on's key: each
    // answer is the truth or a 503, never a wrong answer (a missing key, an
    // empty config, another error). (what, status, sent, took, body).
    type Read = (&'static str, u16, Instant, Duration, String);
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let mut readers = Vec::new();
    for what in ["config", "kv"] {
        let (server, stop, reads) = (server.clone(), stop.clone(), reads.clone());
        let (path, auth) = (format!("{}/k", kv.path), kv.auth());
        readers.push(thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = Instant::now();
                let bearer = format!("Bearer {}", server.token);
                let r = match what {
                    "config" => http::try_request(
                        &server.addr,
                        "GET",
                        "/api/apps/shop/config",
                        &[("authorization", &bearer)],
                        b"",
                    ),
                    _ => http::try_request(
                        &server.addr,
                        "GET",
                        &path,
                        &[("authorization", &auth)],
                        b"",
                    ),
                };
                // A connection closed without an answer is recorded (as
                // status 0) and judged below, not a panic of this thread.
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        let closed = format!("no answer: {e}");
                        reads
                            .lock()
                            .unwrap()
                            .push((what, 0, sent, sent.elapsed(), closed));
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let mut body = r.text();
                if r.status == 503 && r.header("retry-after").is_none() {
                    body.push_str(" (no retry-after)");
                }
                reads
                    .lock()
                    .unwrap()
                    .push((what, r.status, sent, sent.elapsed(), body));
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let mut load = Vec::new();
    for t in 0..4 {
        let (server, stop, answers) = (server.clone(), stop.clone(), answers.clone());
        load.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = format!("K_{t}_{i}");
                let sent = Instant::now();
                let r = server.api(
                    "PATCH",
                    "/api/apps/shop/config",
                    Some(json!({ key.clone(): "v" })),
                );
                answers.lock().unwrap().push((
                    key,
                    r.status,
                    sent.elapsed(),
                    Instant::now(),
                    r.text(),
                ));
                i += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    thread::sleep(Duration::from_secs(1));
    let stopped_at = Instant::now();
    cluster.stop();
    thread::sleep(Duration::from_secs(2));
    cluster.restart();
    let restarted_at = Instant::now();
    // Service resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok_after = answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s, _, at, _)| *s == 200 && *at > restarted_at)
            .count();
        if ok_after >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for l in load.into_iter().chain(readers) {
        l.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let unavailable = answers.iter().filter(|a| a.1 == 503).count();
    assert!(unavailable > 0, "no 503 while the database was down");
    for (key, status, took, _, body) in &answers {
        assert!(*status == 200 || *status == 503, "{key}: {status} {body}");
        assert!(*took < Duration::from_secs(15), "{key} took {took:?}");
    }
    // Every read: the truth, or a 503 saying when to retry. A config read
    // holds every write acknowledged before it was sent.
    let reads = reads.lock().unwrap().clone();
    for what in ["config", "kv"] {
        let during = reads
            .iter()
            .filter(|r| r.0 == what && r.2 > stopped_at && r.2 < restarted_at)
            .count();
        assert!(during > 0, "no {what} read was sent during the outage");
    }
    // A read whose connection the server closed without an answer is no
    // wrong answer, but no 503 either: seen about once in a few hundred
    // reads during the outage in some runs (the cause is not found yet; see
    // docs/cluster.md). Bounded and shown, never taken for the truth.
    let closed: Vec<_> = reads.iter().filter(|r| r.1 == 0).collect();
    for (what, _, _, took, body) in &closed {
        eprintln!("{what} read after {took:?}: {body}");
    }
    assert!(closed.len() <= 2, "{} reads had no answer", closed.len());
    let mut refused = 0;
    for (what, status, sent, took, body) in reads.iter().filter(|r| r.1 != 0) {
        assert!(*took < Duration::from_secs(15), "{what} read took {took:?}");
        match (*what, *status) {
            (_, 503) => {
                assert!(!body.ends_with("(no retry-after)"), "{what}: 503 {body}");
                refused += 1;
            }
            ("kv", 200) => assert_eq!(body, "stored", "kv read"),
            ("config", 200) => {
                let config: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("config read: {e}: {body}"));
                assert!(config["KV_URL"].is_string(), "config read: {body}");
                for (key, ..) in answers.iter().filter(|a| a.1 == 200 && a.3 < *sent) {
                    assert_eq!(
                        config[key], "v",
                        "a config read sent after {key} was acknowledged: {body}"
                    );
                }
            }
            _ => panic!("{what} read answered {status}: {body}"),
        }
    }
    println!(
        "{} reads, {refused} answered 503; {} writes, {unavailable} answered 503",
        reads.len(),
        answers.len()
    );
    // Everything acknowledged is there, once, with its release.
    let cfg = env.config("shop");
    let acknowledged: Vec<&String> = answers
        .iter()
        .filter(|a| a.1 == 200)
        .map(|a| &a.0)
        .collect();
    for key in &acknowledged {
        assert!(
            cfg.contains_key(key.as_str()),
            "{key} acknowledged but lost"
        );
    }
    gap_free(&env, "shop");
}
