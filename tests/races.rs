//! Nothing acknowledged is lost or doubled when requests race: retries of one
//! provisioning arriving while the first is still inside the plugin, and
//! concurrent calls of one add-on that each read, decide and write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;

use crate::support::*;
use serde_json::{json, Value};

/// Every add-on has exactly one `Attach` release, and every uuid names one
/// resource.
fn one_attach_per_addon(env: &Env) {
    let mut db = env.db();
    let rows = db.rows(
        "SELECT r.name, r.state, (SELECT COUNT(*) FROM releases l WHERE l.description LIKE 'Attach % (' || r.name || ')') AS attaches FROM resources r",
        &[],
    );
    for r in &rows {
        let name = &r["name"];
        assert_eq!(r["state"], "provisioned", "{name}");
        assert_eq!(
            r["attaches"], 1,
            "{name} has {} Attach releases",
            r["attaches"]
        );
    }
    let dup = db.count(
        "SELECT COUNT(*) FROM (SELECT uuid FROM resources GROUP BY uuid HAVING COUNT(*) > 1) AS d",
        &[],
    );
    assert_eq!(dup, 0);
}

#[test]
fn retries_of_one_provisioning_racing_each_other_make_one_add_on() {
    let env = Env::new();
    let server = Arc::new(Server::start(&env));
    server.app_with("shop", &[]);
    let rounds = 50;
    for round in 0..rounds {
        // (The hostile add-on names a resource after its uuid's first eight
        // digits.)
        let uuid = format!("{round:08x}-0000-4000-8000-000000000000");
        // (One app holds only so many generated attachment names.)
        let as_name = format!("H{round}");
        // Four API clients and two CLI processes retry the same slow
        // provisioning at once.
        let api: Vec<_> = (0..4)
            .map(|_| {
                let (server, uuid, as_name) = (server.clone(), uuid.clone(), as_name.clone());
                thread::spawn(move || {
                    let r = server.api(
                        "POST",
                        "/api/apps/shop/addons",
                        Some(json!({"plan": "hostile", "uuid": uuid, "as": as_name,
                                    "options": {"attack": "slow", "ms": "200"}})),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                    r.json()["addon"]["name"].as_str().unwrap().to_string()
                })
            })
            .collect();
        let cli: Vec<_> = (0..2)
            .map(|_| {
                env.command(&[
                    "addons:create",
                    "hostile",
                    "-a",
                    "shop",
                    "--uuid",
                    &uuid,
                    "--as",
                    &as_name,
                    "--json",
                    "--",
                    "--attack",
                    "slow",
                    "--ms",
                    "200",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let mut names = BTreeSet::new();
        for t in api {
            names.insert(t.join().unwrap());
        }
        for c in cli {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            names.insert(v["addon"]["name"].as_str().unwrap().to_string());
        }
        assert_eq!(names.len(), 1, "round {round}: {names:?}");
    }
    drop(server);
    let count = env.db().count("SELECT COUNT(*) FROM resources", &[]);
    assert_eq!(count, rounds);
    one_attach_per_addon(&env);
}

#[test]
fn a_retry_asking_for_something_else_with_the_same_uuid_is_a_conflict() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let uuid = "6f1c2a90-0000-4000-8000-000000000001";
    env.ok(&["addons:create", "kv:pro", "-a", "shop", "--uuid", uuid]);
    let before = snapshot(&env, "shop");
    for (args, what) in [
        (vec!["kv:mini"], "plan mini"),
        (vec!["kv:pro", "--as", "CACHE"], "attachment name CACHE"),
    ] {
        let mut a = vec!["addons:create"];
        a.extend(args);
        a.extend(["-a", "shop", "--uuid", uuid]);
        let (code, err) = env.fails(&a);
        assert_eq!(code, 4, "{err}");
        assert!(err.contains(what), "the conflict names {what:?}: {err}");
    }
    assert_eq!(
        snapshot(&env, "shop"),
        before,
        "a refused retry changes nothing"
    );
    // The same request again is the same add-on.
    let again = env.create("kv:pro", "shop", &["--uuid", uuid]);
    assert_eq!(again["existing"], true);
}

/// `n` concurrent GETs of a hostile add-on route; the statuses.
fn hammer(server: &Arc<Server>, path: &str, n: usize) -> Vec<(u16, String)> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let (server, path) = (server.clone(), path.to_string());
            thread::spawn(move || {
                let r = server.get(&path, &[]);
                (r.status, r.text())
            })
        })
        .collect();
    clients.into_iter().map(|t| t.join().unwrap()).collect()
}

fn hostile_server() -> (Env, Arc<Server>) {
    // A deadline long enough for a call to retry a few times.
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["limits"]["timeout_ms"] = json!(20_000);
    });
    let server = Arc::new(Server::start(&env));
    server.app_with(
        "shop",
        &[json!({"plan": "hostile", "options": {"slow-rotate-ms": "150"}})],
    );
    (env, server)
}

fn hostile_kv(env: &Env, key: &str) -> Option<String> {
    env.db().kv("hostile", key)
}

#[test]
fn concurrent_read_sleep_write_calls_lose_no_update() {
    let (env, server) = hostile_server();
    let answers = hammer(&server, "/addons/hostile/counter?ms=150", 50);
    let ok: Vec<u64> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b.parse().unwrap())
        .collect();
    let refused = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(ok.len() + refused, 50, "{answers:?}");
    // Each acknowledged increment is in the counter, once.
    let distinct: BTreeSet<u64> = ok.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ok.len(),
        "two calls answered the same count: {ok:?}"
    );
    let stored: u64 = hostile_kv(&env, "counter").unwrap().parse().unwrap();
    assert_eq!(stored as usize, ok.len(), "{answers:?}");
}

#[test]
fn concurrent_calls_cannot_pass_a_counted_quota() {
    let (env, server) = hostile_server();
    let answers = hammer(&server, "/addons/hostile/quota?limit=10&ms=150", 50);
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let keys = env.db().count(
        "SELECT COUNT(*) FROM plugin_kv WHERE service = 'hostile' AND key LIKE 'q/%'",
        &[],
    );
    assert!(keys <= 10, "{keys} keys stored past a limit of 10");
    assert_eq!(keys as usize, created, "{answers:?}");
}

#[test]
fn a_rotation_racing_a_partner_roll_loses_neither() {
    let (env, server) = hostile_server();
    let name = server.api("GET", "/api/apps/shop/addons", None).json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let rotations: Vec<_> = (0..5)
        .map(|_| {
            let (server, name) = (server.clone(), name.clone());
            thread::spawn(move || {
                let r = server.api("POST", &format!("/api/addons/{name}/rotate"), None);
                r.status
            })
        })
        .collect();
    let rolls = hammer(&server, "/addons/hostile/roll?ms=150", 20);
    let mut statuses = BTreeMap::new();
    for t in rotations {
        *statuses.entry(t.join().unwrap()).or_insert(0) += 1;
    }
    let rolled = rolls.iter().filter(|(s, _)| *s == 200).count();
    let rotated = *statuses.get(&200).unwrap_or(&0);
    let version: usize = hostile_kv(&env, "cred/version").unwrap().parse().unwrap();
    assert_eq!(
        version,
        rolled + rotated,
        "credential version {version} after {rolled} rolls and {rotated} rotations (rotate statuses {statuses:?})"
    );
}
