//! Credential rotation end to end: user-initiated with a grace window,
//! scheduled by the manifest (including missed schedules and failures),
//! processes restarted on a new release, and concurrent writers losing
//! nothing.

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::support::http::{basic, request};
use crate::support::*;
use serde_json::json;

/// (user, password, path) of the kv add-on attached to shop as `attachment`.
fn kv_creds(server: &Server, attachment: &str) -> (String, String, String) {
    let config = server.api("GET", "/api/apps/shop/config", None).json();
    let kv = KvUrl::parse(config[format!("{attachment}_URL")].as_str().unwrap());
    (kv.user, kv.password, kv.path)
}

fn get_status(server: &Server, user: &str, pw: &str, path: &str) -> u16 {
    request(
        &server.addr,
        "GET",
        &format!("{path}/k"),
        &[("authorization", &basic(user, pw))],
        b"",
    )
    .status
}

#[test]
fn rotate_via_cli_new_credential_works_and_old_one_until_its_grace_window_ends() {
    let env = Env::new();
    let server = Server::start(&env);
    server.api("POST", "/api/apps", Some(json!({"name": "shop"})));
    // Two namespaces: one whose old password keeps an hour of grace (so
    // that it still works is checked with no race against the clock), one
    // whose grace is a second (so that its end comes quickly).
    for (name, grace) in [("KV", "3600"), ("SHORT", "1")] {
        let r = server.api(
            "POST",
            "/api/apps/shop/addons",
            Some(json!({"plan": "kv:mini", "as": name, "options": {"grace_seconds": grace}})),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let (user, pw, path) = kv_creds(&server, name);
        let put = request(
            &server.addr,
            "PUT",
            &format!("{path}/k"),
            &[("authorization", &basic(&user, &pw))],
            b"v",
        );
        assert_eq!(put.status, 201);
    }
    let (user, old_pw, path) = kv_creds(&server, "KV");
    let (short_user, short_old_pw, short_path) = kv_creds(&server, "SHORT");

    for name in ["KV", "SHORT"] {
        let out = env.ok(&["addons:rotate", name, "-a", "shop"]);
        assert!(out.contains(&format!("changed: {name}_URL")), "{out}");
    }
    assert_eq!(
        env.release_descriptions("shop")[..2],
        ["Rotate SHORT credentials", "Rotate KV credentials"]
    );
    let (_, new_pw, _) = kv_creds(&server, "KV");
    let (_, short_new_pw, _) = kv_creds(&server, "SHORT");
    assert_ne!(new_pw, old_pw);
    assert_ne!(short_new_pw, short_old_pw);
    assert_eq!(get_status(&server, &user, &new_pw, &path), 200);
    assert_eq!(
        get_status(&server, &user, &old_pw, &path),
        200,
        "the old password works during the grace window"
    );
    let info = env.json(&["addons:info", "SHORT", "-a", "shop"]);
    let rotated_at = info["rotation"]["last_rotated_at"].as_i64().unwrap();
    assert!(rotated_at >= unix_now() - 120, "{info}");

    // Once the short window is over (by the clock the add-on reads too),
    // its old password is refused; the new one, and the other add-on's old
    // one, still work.
    while unix_now() <= rotated_at + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        get_status(&server, &short_user, &short_old_pw, &short_path),
        401,
        "the old password expires with its window"
    );
    assert_eq!(
        get_status(&server, &short_user, &short_new_pw, &short_path),
        200
    );
    assert_eq!(get_status(&server, &user, &old_pw, &path), 200);
}

#[test]
fn a_schedule_missed_while_the_server_was_down_rotates_once_at_start() {
    // An hourly schedule: within this test only a schedule missed before
    // the server started can fire, never one falling due while it runs.
    let env = Env::with_plugin_copies(&["kv"], |_, m| m["rotation"]["every_seconds"] = json!(3600));
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let first = env.config("shop")["KV_URL"].as_str().unwrap().to_string();
    // The server was down for two hours after provisioning: the store says
    // so (the schedule is derived from it).
    let moved = env.db().execute(
        "UPDATE resources SET created_at = created_at - 7200, updated_at = updated_at - 7200",
        &[],
    );
    assert_eq!(moved, 1);
    let info = env.json(&["addons:info", "KV", "-a", "shop"]);
    assert!(
        info["rotation"]["next_at"].as_i64().unwrap() < unix_now(),
        "the rotation is overdue before the server starts: {info}"
    );

    let server = Server::start(&env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.config("shop")["KV_URL"] == first.as_str() {
        assert!(
            Instant::now() < deadline,
            "the missed rotation never ran at start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = server.stop();
    assert!(status.success(), "{status:?}");

    // Counted once the server can no longer rotate: one catch-up, not one
    // per missed period, and the next one an hour away.
    let rotations = env
        .release_descriptions("shop")
        .iter()
        .filter(|d| *d == "Rotate KV credentials (schedule)")
        .count();
    assert_eq!(rotations, 1, "{:?}", env.release_descriptions("shop"));
    let info = env.json(&["addons:info", "KV", "-a", "shop"]);
    assert_eq!(info["rotation"]["every_seconds"], 3600);
    let rotated_at = info["rotation"]["last_rotated_at"].as_i64().unwrap();
    assert!(rotated_at >= unix_now() - 120, "{info}");
    assert_eq!(
        info["rotation"]["next_at"].as_i64().unwrap(),
        rotated_at + 3600,
        "{info}"
    );
}

#[test]
fn failing_scheduled_rotation_is_retried_visible_and_changes_nothing() {
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["rotation"] = json!({"every_seconds": 1})
    });
    env.ok(&["apps:create", "shop"]);
    env.create("hostile", "shop", &["--", "--rotate-fail", "true"]);
    let before = snapshot(&env, "shop");
    let server = Server::start(&env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = env.json(&["addons:info", "HOSTILE", "-a", "shop"]);
        if info["rotation"]["failures"].as_i64().unwrap() >= 2 || Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    drop(server);
    assert!(
        info["rotation"]["failures"].as_i64().unwrap() >= 2,
        "{info}"
    );
    assert!(info["rotation"]["error"]
        .as_str()
        .unwrap()
        .contains("credential service is unreachable"));
    // Backoff: the next try is later than the schedule alone would say.
    assert!(info["rotation"]["next_at"].as_i64().unwrap() > unix_now());
    let text = env.ok(&["addons:info", "HOSTILE", "-a", "shop"]);
    assert!(text.contains("Rotation failing"), "{text}");
    // Nothing half-applied: config and releases are as they were.
    let after = snapshot(&env, "shop");
    assert_eq!((&after.0, &after.1), (&before.0, &before.1));
}

#[test]
fn local_restarts_processes_on_a_new_release_with_the_new_values() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "GREETING=hello", "-a", "shop"]);
    let procfile = env.data().join("Procfile");
    std::fs::write(
        &procfile,
        "web: echo \"started GREETING=$GREETING\"; exec sleep 60\n",
    )
    .unwrap();
    // On PostgreSQL, only the database's announcement of the release may
    // restart the processes: `--poll-ms 0` turns off the look every 5 s
    // that would otherwise restart them too, announcements or not.
    let mut args = vec!["local", "-a", "shop", "-f", procfile.to_str().unwrap()];
    if env.database.is_some() {
        args.extend(["--poll-ms", "0"]);
    }
    // Killed when the test ends, passed or not: a `local` left running
    // would hold the test's output open.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        env.command(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Waits for the line; the bound only keeps a broken restart from
    // hanging the test.
    let wait_for = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            assert!(
                line.starts_with("web"),
                "output is prefixed with the process name: {line}"
            );
            return;
        }
    };
    wait_for("started GREETING=hello");
    env.ok(&["config:set", "GREETING=bonjour", "-a", "shop"]);
    wait_for("started GREETING=bonjour");
    drop(child);
    if env.database.is_none() {
        // Without announcements, never looking would never restart.
        let (code, err) = env.fails(&[
            "local",
            "-a",
            "shop",
            "-f",
            procfile.to_str().unwrap(),
            "--poll-ms",
            "0",
        ]);
        assert_ne!(code, 0);
        assert!(err.contains("--poll-ms 0"), "{err}");
    }
}

#[test]
fn fifty_concurrent_mixed_writers_lose_nothing_and_releases_stay_gap_free() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let env = std::sync::Arc::new(env);
    let mut handles = Vec::new();
    for i in 0..50 {
        let env = env.clone();
        handles.push(std::thread::spawn(move || match i % 10 {
            0 => env.run(&["addons:rotate", "KV", "-a", "shop"]),
            1 => env.run(&[
                "addons:create",
                "exceptions",
                "-a",
                "shop",
                "--as",
                &format!("exc{i}"),
            ]),
            _ => env.run(&["config:set", &format!("VAR_{i}={i}"), "-a", "shop"]),
        }));
    }
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.code, 0, "a writer failed: {}", r.stderr);
        assert!(!r.stderr.contains("locked"), "{}", r.stderr);
    }
    let cfg = env.config("shop");
    for i in (0..50).filter(|i| i % 10 >= 2) {
        assert_eq!(cfg[&format!("VAR_{i}")], i.to_string().as_str());
    }
    for i in (0..50).filter(|i| i % 10 == 1) {
        assert!(cfg.contains_key(&format!("EXC{i}_URL")), "exc{i} missing");
    }
    let versions = env.release_versions("shop");
    assert_eq!(
        versions,
        (1..=52).collect::<Vec<_>>(),
        "1 initial + 1 attach + 50 writes, gap-free"
    );
}

#[test]
fn cli_processes_and_api_clients_on_several_apps_lose_nothing() {
    let env = std::sync::Arc::new(Env::new());
    let server = std::sync::Arc::new(Server::start(&env));
    for app in ["north", "south"] {
        assert_eq!(
            server
                .api("POST", "/api/apps", Some(json!({"name": app})))
                .status,
            201
        );
        assert_eq!(
            server
                .api(
                    "POST",
                    &format!("/api/apps/{app}/addons"),
                    Some(json!({"plan": "kv:mini"}))
                )
                .status,
            201
        );
    }
    let mut handles = Vec::new();
    for i in 0..40 {
        let (env, server) = (env.clone(), server.clone());
        handles.push(std::thread::spawn(move || {
            let app = if i % 2 == 0 { "north" } else { "south" };
            match i % 4 {
                0 | 1 => {
                    let r = env.run(&["config:set", &format!("CLI_{i}={i}"), "-a", app]);
                    assert_eq!(r.code, 0, "{}", r.stderr);
                    assert!(!r.stderr.contains("locked"), "{}", r.stderr);
                }
                2 => {
                    let r = server.api(
                        "PATCH",
                        &format!("/api/apps/{app}/config"),
                        Some(json!({ format!("API_{i}"): i.to_string() })),
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                _ => {
                    let r = server.api(
                        "POST",
                        &format!("/api/apps/{app}/addons"),
                        Some(json!({"plan": "kv:mini", "as": format!("K{i}")})),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    for (app, parity) in [("north", 0), ("south", 1)] {
        let cfg = env.config(app);
        let mine: Vec<i32> = (0..40).filter(|i| i % 2 == parity).collect();
        for i in &mine {
            let key = match i % 4 {
                0 | 1 => format!("CLI_{i}"),
                2 => format!("API_{i}"),
                _ => format!("K{i}_URL"),
            };
            assert!(cfg.contains_key(&key), "{app}: {key} missing");
        }
        let versions = env.release_versions(app);
        assert_eq!(
            versions,
            (1..=2 + mine.len() as i64).collect::<Vec<_>>(),
            "{app}: gap-free releases"
        );
    }
}

/// Eight rotations of one add-on at once: each reads the add-on's record and
/// writes new credentials, so all but one find what they read changed when
/// they commit. Each runs again after a random pause until it gets through:
/// all eight succeed, one release each.
#[test]
fn eight_rotations_of_one_add_on_at_once_all_get_through() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let before = env.release_versions("shop").len();
    let env = std::sync::Arc::new(env);
    let rotations: Vec<_> = (0..8)
        .map(|_| {
            let env = env.clone();
            std::thread::spawn(move || env.run(&["addons:rotate", "KV", "-a", "shop"]))
        })
        .collect();
    for r in rotations {
        let r = r.join().unwrap();
        assert_eq!(r.code, 0, "a rotation failed: {}", r.stderr);
    }
    assert_eq!(env.release_versions("shop").len(), before + 8);
}
