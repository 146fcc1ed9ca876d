//! Nothing acknowledged is lost or doubled when requests race: retries of one
//! provisioning arriving while the first is still inside the plugin, and
//! concurrent calls of one add-on that each read, decide and write.

use std::collections::BTreeSet;
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

/// The 409 a call gets when what it read kept changing under it through
/// every attempt the platform gives it.
const EXHAUSTED: &str = "each time other calls changed what it read before it could apply";

/// Up to this many calls racing on the same records all get through: each
/// of a call's attempts is undone only by another call committing, so a
/// call runs out of attempts only past this many contenders
/// (`addonhost::platform::reads::ATTEMPTS`).
const ATTEMPTS: usize = 8;

#[test]
fn concurrent_read_sleep_write_calls_lose_no_update() {
    let (env, server) = hostile_server();
    // As many contenders as a call has attempts: every one is answered, in
    // turn, each with the count after its own increment.
    let answers = hammer(&server, "/addons/hostile/counter?ms=150", ATTEMPTS);
    let mut ok: Vec<u64> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 200, "{answers:?}");
            b.parse().unwrap()
        })
        .collect();
    ok.sort_unstable();
    assert_eq!(
        ok,
        (1..=ATTEMPTS as u64).collect::<Vec<_>>(),
        "every increment saw the one before it"
    );
    let stored: u64 = hostile_kv(&env, "counter").unwrap().parse().unwrap();
    assert_eq!(stored, ATTEMPTS as u64);

    // Fifty at once: past the attempts some are turned away, saying why;
    // every one answered holds, once. A call that ran out of attempts lost
    // each to a commit of another, so at least that many got through.
    let answers = hammer(&server, "/addons/hostile/counter?ms=150", 50);
    let mut ok: Vec<u64> = Vec::new();
    for (status, body) in &answers {
        match status {
            200 => ok.push(body.parse().unwrap()),
            409 => assert!(body.contains(EXHAUSTED), "{body}"),
            _ => panic!("{status} {body}"),
        }
    }
    assert!(
        ok.len() >= ATTEMPTS,
        "only {} answered: {answers:?}",
        ok.len()
    );
    ok.sort_unstable();
    let first = ATTEMPTS as u64 + 1;
    assert_eq!(
        ok,
        (first..first + ok.len() as u64).collect::<Vec<_>>(),
        "the answered counts are the increments, each once: {answers:?}"
    );
    let stored: u64 = hostile_kv(&env, "counter").unwrap().parse().unwrap();
    assert_eq!(stored, ATTEMPTS as u64 + ok.len() as u64, "{answers:?}");
}

#[test]
fn concurrent_calls_cannot_pass_a_counted_quota() {
    let (env, server) = hostile_server();
    // Eight calls at once against a quota of three: each counts, takes a
    // while, then stores. Three are stored; the other five see it full.
    let answers = hammer(&server, "/addons/hostile/quota?limit=3&ms=150", ATTEMPTS);
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let full = answers
        .iter()
        .filter(|(s, b)| *s == 507 && b == "full\n")
        .count();
    assert_eq!((created, full), (3, ATTEMPTS - 3), "{answers:?}");
    let keys = env.db().count(
        "SELECT COUNT(*) FROM plugin_kv WHERE service = 'hostile' AND key LIKE 'q/%'",
        &[],
    );
    assert_eq!(keys, 3, "{answers:?}");
    // The keys answered are the keys stored.
    for (_, key) in answers.iter().filter(|(s, _)| *s == 201) {
        assert_eq!(hostile_kv(&env, key).as_deref(), Some("1"), "{key}");
    }
}

#[test]
fn a_rotation_racing_a_partner_roll_loses_neither() {
    let (env, server) = hostile_server();
    let name = server.api("GET", "/api/apps/shop/addons", None).json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // Three rotations and five partner rolls at once, each reading the
    // credential record, taking a while, writing it one version further:
    // every one gets through, in turn.
    let rotations: Vec<_> = (0..3)
        .map(|_| {
            let (server, name) = (server.clone(), name.clone());
            thread::spawn(move || {
                let r = server.api("POST", &format!("/api/addons/{name}/rotate"), None);
                (r.status, r.text())
            })
        })
        .collect();
    let rolls = hammer(&server, "/addons/hostile/roll?ms=150", ATTEMPTS - 3);
    let rotated: Vec<(u16, String)> = rotations.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, body) in rotated.iter().chain(&rolls) {
        assert_eq!(
            *status, 200,
            "{body}\nrotations {rotated:?}\nrolls {rolls:?}"
        );
    }
    // Each roll answered the version it wrote: distinct, among the eight.
    let mut rolled: Vec<usize> = rolls.iter().map(|(_, b)| b.parse().unwrap()).collect();
    rolled.sort_unstable();
    rolled.dedup();
    assert_eq!(rolled.len(), ATTEMPTS - 3, "{rolls:?}");
    assert!(
        rolled.iter().all(|v| (1..=ATTEMPTS).contains(v)),
        "{rolls:?}"
    );
    let version: usize = hostile_kv(&env, "cred/version").unwrap().parse().unwrap();
    assert_eq!(version, ATTEMPTS, "every rotation and roll is counted once");
}
