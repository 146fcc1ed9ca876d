//! Crash consistency: provisions, rotations and config changes in child
//! `addonhost` processes killed with SIGKILL at random moments, then the
//! store's invariants, then retries with the same uuids completing cleanly.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::db::Db;
use support::*;

const ROUNDS: u64 = 300;
const UUIDS: u64 = 12;

fn uuid(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so a failing run can be replayed with CRASH_SEED.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_invariants(db: &mut Db) {
    assert!(db.integrity_ok(), "the store's own integrity check failed");
    // Every var belongs to the user or to an attachment of a provisioned resource.
    let orphans = db.count(
        "SELECT COUNT(*) FROM config_vars v WHERE v.attachment_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM attachments t JOIN resources r ON r.id = t.resource_id
           WHERE t.id = v.attachment_id AND r.state = 'provisioned')",
        &[],
    );
    assert_eq!(
        orphans, 0,
        "vars owned by a missing or unprovisioned attachment"
    );
    // No resource is half-made without being visible as provisioning.
    let rows = db.rows(
        "SELECT r.name, r.state, r.partner_id, (SELECT COUNT(*) FROM attachments t WHERE t.resource_id = r.id) AS atts FROM resources r",
        &[],
    );
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        let partner = r["partner_id"].as_str();
        match r["state"].as_str().unwrap() {
            "provisioned" => {
                assert!(partner.is_some(), "{name} provisioned without an add-on id");
                assert_eq!(r["atts"], 1, "{name} provisioned without its attachment");
                let attach = db.count(
                    "SELECT COUNT(*) FROM releases WHERE description LIKE $1",
                    &[&format!("Attach % ({name})")],
                );
                assert_eq!(attach, 1, "{name} has no Attach release");
                let ns = db.count(
                    "SELECT COUNT(*) FROM plugin_kv WHERE service = 'kv' AND key = $1",
                    &[&format!("ns/{}", partner.unwrap())],
                );
                assert_eq!(
                    ns, 1,
                    "{name}: the plugin's own record was not committed with it"
                );
            }
            "provisioning" => assert!(partner.is_none(), "{name} answered but not completed"),
            other => panic!("{name} is {other}"),
        }
    }
    // Every user change has its release, and release numbers are gap-free.
    let user_vars = db.strings(
        "SELECT name FROM config_vars WHERE attachment_id IS NULL",
        &[],
    );
    for v in user_vars {
        let n = db.count(
            "SELECT COUNT(*) FROM releases WHERE description = $1",
            &[&format!("Set {v}")],
        );
        assert_eq!(n, 1, "{v} is set without its release");
    }
    let versions: Vec<i64> = db
        .strings("SELECT version FROM releases ORDER BY version", &[])
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as i64).collect::<Vec<_>>(),
        "release numbers have gaps"
    );
}

#[test]
fn sigkill_at_random_moments_leaves_a_consistent_store_and_retries_complete() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &["--as", "main"]);
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_now() as u64 | 1);
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut attempted = BTreeSet::new();
    let mut killed = 0;
    for round in 0..ROUNDS {
        let i = rng.next() % UUIDS;
        let (u, name, var) = (uuid(i), format!("K{i}"), format!("V{round}=x"));
        let args: Vec<&str> = match rng.next() % 3 {
            0 => {
                attempted.insert(i);
                vec![
                    "addons:create",
                    "kv",
                    "-a",
                    "shop",
                    "--uuid",
                    &u,
                    "--as",
                    &name,
                ]
            }
            1 => vec!["addons:rotate", "MAIN", "-a", "shop"],
            _ => vec!["config:set", &var, "-a", "shop"],
        };
        let mut child = env
            .command(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next() % 15));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    println!("{killed} of {ROUNDS} processes killed mid-flight");
    assert!(
        killed > ROUNDS / 10,
        "the test should kill many processes mid-flight ({killed})"
    );

    let mut db = env.db();
    check_invariants(&mut db);

    // Retrying every uuid with the same arguments completes it, once.
    for i in &attempted {
        let name = format!("K{i}");
        env.ok(&[
            "addons:create",
            "kv",
            "-a",
            "shop",
            "--uuid",
            &uuid(*i),
            "--as",
            &name,
        ]);
    }
    check_invariants(&mut db);
    let states: BTreeMap<String, String> = env
        .json(&["addons", "-a", "shop"])
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
    for i in &attempted {
        assert_eq!(
            states.get(&uuid(*i)).map(String::as_str),
            Some("provisioned"),
            "uuid {i}"
        );
    }
    assert_eq!(
        states.len(),
        attempted.len() + 1,
        "one resource per uuid, plus MAIN"
    );
}
