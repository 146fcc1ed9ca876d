//! Crash consistency: provisions, rotations and config changes in child
//! `addonhost` processes killed with SIGKILL at random moments, and in a
//! server killed with SIGKILL under load once its store has checkpointed and
//! rewound its WAL; then the store's invariants, every acknowledged change
//! still there, and retries with the same uuids completing cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::db::Db;
use crate::support::http::try_request;
use crate::support::*;
use serde_json::{json, Value};

/// Child processes of the first phase.
const ROUNDS: u64 = 300;
/// The uuids the first phase provisions (each several times over).
const UUIDS: u64 = 24;
/// Server lives of the second phase, each ended by SIGKILL.
const LIVES: u64 = 6;
/// Client threads loading the server.
const CLIENTS: u64 = 3;
/// The uuids each client provisions.
const CLIENT_UUIDS: u64 = 8;
/// The store checkpoints every 8 commits and rewinds the WAL once it holds
/// 32,768 frames (host/addonhost-sqlite); a server life lasts this many
/// rewinds of its WAL at least before it is killed.
const MIN_REWINDS: u64 = 4;
const SIGKILL: i32 = 9;

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

/// What the store's schema promises, checked by queries on either backend
/// (PostgreSQL's constraints are not taken on trust: a migration that lost
/// one would leave the promise to the code alone). Each query counts the
/// rows breaking one rule.
const REFERENTIAL: &[(&str, &str)] = &[
    (
        "two resources share a uuid",
        "SELECT COUNT(*) FROM (SELECT uuid FROM resources GROUP BY uuid HAVING COUNT(*) > 1) d",
    ),
    (
        "two resources share a name",
        "SELECT COUNT(*) FROM (SELECT name FROM resources GROUP BY name HAVING COUNT(*) > 1) d",
    ),
    (
        "a resource of no app",
        "SELECT COUNT(*) FROM resources r WHERE NOT EXISTS (SELECT 1 FROM apps a WHERE a.id = r.app_id)",
    ),
    (
        "an attachment of no resource",
        "SELECT COUNT(*) FROM attachments t WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.id = t.resource_id)",
    ),
    (
        "an attachment to no app",
        "SELECT COUNT(*) FROM attachments t WHERE NOT EXISTS (SELECT 1 FROM apps a WHERE a.id = t.app_id)",
    ),
    (
        "two attachments of one name on an app",
        "SELECT COUNT(*) FROM (SELECT app_id, name FROM attachments GROUP BY app_id, name HAVING COUNT(*) > 1) d",
    ),
    (
        "a var of no app",
        "SELECT COUNT(*) FROM config_vars v WHERE NOT EXISTS (SELECT 1 FROM apps a WHERE a.id = v.app_id)",
    ),
    (
        "a var owned by an attachment that is not there, or is another app's",
        "SELECT COUNT(*) FROM config_vars v WHERE v.attachment_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM attachments t WHERE t.id = v.attachment_id AND t.app_id = v.app_id)",
    ),
    (
        "a var set twice on an app",
        "SELECT COUNT(*) FROM (SELECT app_id, name FROM config_vars GROUP BY app_id, name HAVING COUNT(*) > 1) d",
    ),
    (
        "a release of no app",
        "SELECT COUNT(*) FROM releases l WHERE NOT EXISTS (SELECT 1 FROM apps a WHERE a.id = l.app_id)",
    ),
    (
        "a release number given twice",
        "SELECT COUNT(*) FROM (SELECT app_id, version FROM releases GROUP BY app_id, version HAVING COUNT(*) > 1) d",
    ),
    (
        "an app whose release numbers have gaps (the highest is not the count)",
        "SELECT COUNT(*) FROM (SELECT app_id FROM releases GROUP BY app_id
           HAVING MIN(version) <> 1 OR MAX(version) <> COUNT(*)) d",
    ),
    (
        "a var taken over by no attachment",
        "SELECT COUNT(*) FROM var_takeovers k WHERE NOT EXISTS (SELECT 1 FROM attachments t WHERE t.id = k.attachment_id)",
    ),
];

/// The engine's own check: SQLite's `integrity_check`; on PostgreSQL
/// `amcheck` over every B-tree index of the schema, each index against its
/// table (every row indexed, every entry in order), and every constraint
/// validated.
fn engine_check(db: &mut Db) {
    match db {
        Db::Sqlite(_) => assert!(db.integrity_ok(), "SQLite's integrity_check failed"),
        Db::Postgres(_) => {
            db.execute("CREATE EXTENSION IF NOT EXISTS amcheck", &[]);
            let indexes = db.count(
                "SELECT COUNT(*) FROM pg_class c JOIN pg_am am ON am.oid = c.relam
                 WHERE c.relkind = 'i' AND am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace",
                &[],
            );
            assert!(indexes >= 10, "only {indexes} indexes found to check");
            // Panics with amcheck's message on the first broken index.
            db.execute(
                "DO $$ DECLARE i regclass; BEGIN
                   FOR i IN SELECT c.oid::regclass FROM pg_class c JOIN pg_am am ON am.oid = c.relam
                            WHERE c.relkind = 'i' AND am.amname = 'btree'
                              AND c.relnamespace = 'public'::regnamespace LOOP
                     PERFORM bt_index_check(i, true);
                   END LOOP;
                 END $$",
                &[],
            );
            let unvalidated = db.count(
                "SELECT COUNT(*) FROM pg_constraint WHERE NOT convalidated
                 AND connamespace = 'public'::regnamespace",
                &[],
            );
            assert_eq!(unvalidated, 0, "constraints not validated");
        }
    }
}

fn check_invariants(db: &mut Db) {
    engine_check(db);
    for (rule, sql) in REFERENTIAL {
        let broken = db.count(sql, &[]);
        assert_eq!(broken, 0, "{broken} rows break the rule: {rule}");
    }
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

/// A change a command or request reported as done: it must be in the store
/// after every crash that followed.
#[derive(Debug)]
enum Acked {
    /// `VAR=x`, in release `version` (when the answer names it).
    Set { var: String, version: Option<i64> },
    /// A rotation of MAIN, in release `version`.
    Rotate { version: i64 },
    /// Add-on `uuid`, attached as `attachment` with `url` as its KV_URL.
    Create {
        uuid: String,
        attachment: String,
        url: String,
    },
}

/// What an add-on's `*_URL` answers: a kv namespace's credentials.
fn password_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .password()
        .unwrap_or_default()
        .to_string()
}

/// The current password in the kv add-on's own record of namespace `id`.
fn kv_record_password(db: &mut Db, id: &str) -> String {
    let record = db
        .kv("kv", &format!("ns/{id}"))
        .unwrap_or_else(|| panic!("kv has no record of namespace {id}"));
    let record: Value = serde_json::from_str(&record).unwrap();
    record["password"]["current"].as_str().unwrap().to_string()
}

/// The `Created`-answer of a provisioning: (attachment var, URL), checked
/// against what was asked.
fn created_url(created: &Value, uuid: &str, attachment: &str) -> String {
    assert_eq!(created["addon"]["uuid"], uuid, "{created}");
    assert_eq!(created["addon"]["state"], "provisioned", "{created}");
    let var = format!("{attachment}_URL");
    created["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == var.as_str())
        .and_then(|p| p[1].as_str())
        .unwrap_or_else(|| panic!("{var} missing from {created}"))
        .to_string()
}

/// Every acknowledged change is in the store, as it was answered.
fn check_acknowledged(env: &Env, db: &mut Db, acked: &[Acked]) {
    let config = env.config("shop");
    let releases: BTreeMap<i64, String> = env
        .json(&["releases", "-a", "shop"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_i64().unwrap(),
                r["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let addons: BTreeMap<String, Value> = env
        .json(&["addons", "-a", "shop"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["uuid"].as_str().unwrap().to_string(), a.clone()))
        .collect();
    for a in acked {
        match a {
            Acked::Set { var, version } => {
                assert_eq!(
                    config.get(var),
                    Some(&json!("x")),
                    "acknowledged {var} lost"
                );
                let description = format!("Set {var}");
                match version {
                    Some(v) => {
                        assert_eq!(releases.get(v), Some(&description), "the release of {var}")
                    }
                    None => assert!(
                        releases.values().any(|d| *d == description),
                        "{var} has no release"
                    ),
                }
            }
            Acked::Rotate { version } => assert_eq!(
                releases.get(version).map(String::as_str),
                Some("Rotate MAIN credentials"),
                "acknowledged rotation v{version} lost"
            ),
            Acked::Create {
                uuid,
                attachment,
                url,
            } => {
                let addon = addons
                    .get(uuid)
                    .unwrap_or_else(|| panic!("acknowledged add-on {uuid} lost"));
                assert_eq!(addon["state"], "provisioned", "{addon}");
                assert_eq!(
                    addon["attachments"],
                    json!([format!("shop::{attachment}")]),
                    "{addon}"
                );
                let var = format!("{attachment}_URL");
                assert_eq!(
                    config.get(&var),
                    Some(&json!(url)),
                    "{var} is not the URL acknowledged"
                );
                assert_eq!(
                    password_of(url),
                    kv_record_password(db, addon["addon_id"].as_str().unwrap()),
                    "{var}: the add-on's own record has another password"
                );
            }
        }
    }
    // MAIN's URL, rotated many times, matches the add-on's record too.
    let main = addons
        .values()
        .find(|a| a["attachments"] == json!(["shop::MAIN"]));
    let main = main.expect("MAIN is there");
    assert_eq!(
        password_of(config["MAIN_URL"].as_str().unwrap()),
        kv_record_password(db, main["addon_id"].as_str().unwrap()),
        "MAIN_URL and the add-on's record disagree"
    );
}

/// The WAL's checkpoint sequence number (header bytes 12..16): SQLite adds
/// one each time the WAL starts over from its beginning, which it does only
/// once a checkpoint has copied every frame back.
fn wal_rewinds(wal: &Path) -> Option<u32> {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(wal)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    Some(u32::from_be_bytes(header[12..16].try_into().unwrap()))
}

fn state_of(env: &Env, uuid: &str) -> Option<String> {
    env.db()
        .strings("SELECT state FROM resources WHERE uuid = $1", &[uuid])
        .into_iter()
        .next()
}

/// How a child process of the first phase is ended.
enum Kill {
    /// Not at all: it must finish.
    Never,
    /// After this many milliseconds, if still running.
    After(u64),
    /// As soon as its add-on is reserved (`provisioning` in the store): in
    /// the middle of the work, between the reservation and its completion.
    WhenReserved,
}

/// Phase one: `ROUNDS` CLI processes, many SIGKILLed at random moments.
/// Returns the acknowledged changes, the uuids tried, and how many kills
/// left an add-on `provisioning` (a kill inside a provisioning).
fn kill_cli_processes(env: &Env, rng: &mut Rng) -> (Vec<Acked>, BTreeSet<u64>, u64) {
    // How long a command takes here, to spread the kills over all of it.
    let timed = |args: &[&str]| {
        let t = Instant::now();
        env.ok(args);
        t.elapsed().as_millis() as u64
    };
    // The kill window: the quickest of three runs of each command, so that
    // one slow warm-up on a busy machine does not stretch it past most
    // processes' lifetime (and leave too few killed mid-flight).
    // (Each warm-up sets a var of its own: one release per var is checked.)
    let set = (1..=3)
        .map(|i| timed(&["config:set", &format!("WARMUP_{i}=x"), "-a", "shop"]))
        .min()
        .unwrap();
    let rotate = (0..3)
        .map(|_| timed(&["addons:rotate", "MAIN", "-a", "shop"]))
        .min()
        .unwrap();
    let span = set.max(rotate).max(5);
    let out = tempfile::tempdir().unwrap();
    let (mut acked, mut attempted) = (Vec::new(), BTreeSet::new());
    let (mut killed, mut finished, mut kills_inside_provisioning) = (0, 0, 0);
    let mut unexplained = Vec::new();
    for round in 0..ROUNDS {
        let i = rng.next() % UUIDS;
        let (u, name, var) = (uuid(i), format!("K{i}"), format!("V{round}"));
        let set = format!("{var}=x");
        let op = rng.next() % 3;
        let args: Vec<&str> = match op {
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
                    "--json",
                ]
            }
            1 => vec!["addons:rotate", "MAIN", "-a", "shop", "--json"],
            _ => vec!["config:set", &set, "-a", "shop"],
        };
        let kill = match rng.next() % 4 {
            0 => Kill::Never,
            // A first provisioning of its uuid: killed inside its work.
            _ if op == 0 && state_of(env, &u).is_none() => Kill::WhenReserved,
            _ => Kill::After(rng.next() % span),
        };
        let (stdout, stderr) = (
            out.path().join(format!("{round}.out")),
            out.path().join(format!("{round}.err")),
        );
        let mut child = env
            .command(&args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut sent_kill = false;
        match kill {
            Kill::Never => {}
            Kill::After(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap(); // SIGKILL
                    sent_kill = true;
                }
            }
            Kill::WhenReserved => {
                let mut db = env.db();
                while child.try_wait().unwrap().is_none() {
                    let state = db
                        .strings("SELECT state FROM resources WHERE uuid = $1", &[&u])
                        .into_iter()
                        .next();
                    if state.is_some() {
                        child.kill().unwrap();
                        sent_kill = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        let status = child.wait().unwrap();
        let stdout = std::fs::read_to_string(&stdout).unwrap();
        let stderr = std::fs::read_to_string(&stderr).unwrap();
        if status.signal() == Some(SIGKILL) {
            assert!(
                sent_kill,
                "round {round}: {args:?} was killed by someone else"
            );
            killed += 1;
            if op == 0 && state_of(env, &u).as_deref() == Some("provisioning") {
                kills_inside_provisioning += 1;
            }
            continue;
        }
        if status.code() != Some(0) {
            // Every command here is valid, and none runs concurrently with
            // another: no error is expected, whatever came before.
            unexplained.push(format!("round {round}: {args:?} exited {status}: {stderr}"));
            continue;
        }
        finished += 1;
        acked.push(match op {
            0 => {
                let created: Value = serde_json::from_str(&stdout).unwrap();
                Acked::Create {
                    url: created_url(&created, &u, &name),
                    uuid: u,
                    attachment: name,
                }
            }
            1 => {
                let changed: Value = serde_json::from_str(&stdout).unwrap();
                Acked::Rotate {
                    version: changed["release"].as_i64().expect("a rotation's release"),
                }
            }
            _ => {
                // "Set V7 on shop and restarted (v12)"
                let version = stdout
                    .rsplit("(v")
                    .next()
                    .and_then(|v| v.trim().trim_end_matches(')').parse().ok())
                    .unwrap_or_else(|| panic!("no release in {stdout:?}"));
                Acked::Set {
                    var,
                    version: Some(version),
                }
            }
        });
    }
    println!(
        "{killed} of {ROUNDS} processes killed mid-flight ({kills_inside_provisioning} inside a provisioning), {finished} finished"
    );
    assert!(unexplained.is_empty(), "{unexplained:#?}");
    assert!(
        killed >= ROUNDS / 4,
        "the test should kill many processes mid-flight ({killed})"
    );
    assert!(
        finished >= ROUNDS / 6,
        "the test should let many processes finish ({finished})"
    );
    (acked, attempted, kills_inside_provisioning)
}

/// What one client of a server life saw.
struct ClientRun {
    acked: Vec<Acked>,
    attempted: BTreeSet<(u64, u64)>,
    unexplained: Vec<String>,
}

/// One client of a server life.
struct Client {
    addr: String,
    token: String,
    /// MAIN's resource name.
    main: String,
    life: u64,
    /// Which client: its uuids and var names are its own.
    t: u64,
    seed: u64,
    /// Requests answered, by all clients.
    acks: Arc<AtomicU64>,
    /// Told of each answer as soon as it arrives.
    answered: std::sync::mpsc::Sender<()>,
    /// Set before the server is killed: from then on, a request that gets
    /// no answer is expected.
    killing: Arc<AtomicBool>,
}

/// One client loading the server with provisionings, config changes and
/// rotations until the server dies.
fn client(c: Client) -> ClientRun {
    let Client {
        addr,
        token,
        main,
        life,
        t,
        seed,
        acks,
        answered,
        killing,
    } = c;
    let mut rng = Rng(seed | 1);
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let mut run = ClientRun {
        acked: Vec::new(),
        attempted: BTreeSet::new(),
        unexplained: Vec::new(),
    };
    for n in 0.. {
        let r = rng.next() % 10;
        let (method, path, body) = match r {
            0..=3 => {
                let j = rng.next() % CLIENT_UUIDS;
                run.attempted.insert((t, j));
                (
                    "POST",
                    "/api/apps/shop/addons".to_string(),
                    json!({"plan": "kv", "uuid": client_uuid(t, j), "as": client_attachment(t, j)}),
                )
            }
            4..=7 => (
                "PATCH",
                "/api/apps/shop/config".to_string(),
                json!({ format!("L{life}T{t}N{n}"): "x" }),
            ),
            _ => ("POST", format!("/api/addons/{main}/rotate"), json!({})),
        };
        let answer = try_request(&addr, method, &path, &headers, body.to_string().as_bytes());
        let answer = match answer {
            Ok(a) => a,
            Err(_) if killing.load(Ordering::SeqCst) => break,
            Err(e) => {
                run.unexplained
                    .push(format!("{method} {path} failed while the server ran: {e}"));
                break;
            }
        };
        let ok = answer.status == if r <= 3 { 201 } else { 200 };
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let (true, Some(v)) = (ok, parsed) else {
            run.unexplained.push(format!(
                "{method} {path} {body}: {} {}",
                answer.status,
                answer.text()
            ));
            continue;
        };
        acks.fetch_add(1, Ordering::SeqCst);
        let _ = answered.send(());
        run.acked.push(match r {
            0..=3 => {
                let (uuid, attachment) = (
                    body["uuid"].as_str().unwrap().to_string(),
                    body["as"].as_str().unwrap().to_string(),
                );
                Acked::Create {
                    url: created_url(&v, &uuid, &attachment),
                    uuid,
                    attachment,
                }
            }
            4..=7 => Acked::Set {
                var: body.as_object().unwrap().keys().next().unwrap().clone(),
                version: None,
            },
            _ => Acked::Rotate {
                version: v["release"].as_i64().expect("a rotation's release"),
            },
        });
    }
    run
}

fn client_uuid(t: u64, j: u64) -> String {
    uuid(1000 + t * 100 + j)
}

fn client_attachment(t: u64, j: u64) -> String {
    format!("S{t}U{j}")
}

/// When a server life ends.
#[derive(Clone, Copy)]
enum Moment {
    InCheckpoint,
    Between,
    OnAnswer,
}

/// Phase two: `LIVES` times, a server under load from `CLIENTS` clients is
/// SIGKILLed once its WAL was rewound `MIN_REWINDS` times or more (so after
/// several checkpoints and rewinds): at a random moment, while a checkpoint
/// writes the database file, or right as a client gets an answer. Returns the acknowledged changes and
/// the (client, uuid) pairs tried.
fn kill_servers_under_load(env: &Env, rng: &mut Rng) -> (Vec<Acked>, BTreeSet<(u64, u64)>) {
    let main = env.json(&["addons:info", "MAIN", "-a", "shop"])["name"]
        .as_str()
        .unwrap()
        .to_string();
    let wal = env.data().join("addonhost.db-wal");
    let (mut acked, mut attempted) = (Vec::new(), BTreeSet::new());
    for life in 0..LIVES {
        let releases_before = env.release_versions("shop").len();
        let mut server = Server::start(env);
        let acks = Arc::new(AtomicU64::new(0));
        let (answered, answers) = std::sync::mpsc::channel();
        let killing = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let c = Client {
                    addr: server.addr.clone(),
                    token: server.token.clone(),
                    main: main.clone(),
                    life,
                    t,
                    seed: rng.next(),
                    acks: acks.clone(),
                    answered: answered.clone(),
                    killing: killing.clone(),
                };
                std::thread::spawn(move || client(c))
            })
            .collect();
        // Past the rewinds, the kill lands anywhere in a round of
        // checkpoints (after a random number of further answers), inside a
        // checkpoint (as soon as one writes to the database file, which in
        // WAL mode only checkpoints do), or the moment a client has an
        // answer (whose change must then be on disk already).
        let rewinds_wanted = MIN_REWINDS + rng.next() % 2;
        let moment = [Moment::InCheckpoint, Moment::Between, Moment::OnAnswer][life as usize % 3];
        let further = rng.next() % 200;
        let written = || {
            std::fs::metadata(env.data().join("addonhost.db"))
                .and_then(|m| m.modified())
                .ok()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        // Counted from the first header seen in this life.
        let mut first: Option<u32> = None;
        let mut reached: Option<(u64, Option<std::time::SystemTime>)> = None;
        let rewinds = loop {
            let seq = wal_rewinds(&wal);
            if first.is_none() {
                first = seq;
            }
            let rewinds = seq
                .zip(first)
                .map_or(0, |(s, base)| s.wrapping_sub(base) as u64);
            let answered = acks.load(Ordering::SeqCst);
            if rewinds >= rewinds_wanted {
                let (at, db_written) = *reached.get_or_insert_with(|| (answered, written()));
                let due = match moment {
                    Moment::InCheckpoint => written() != db_written,
                    Moment::Between => answered >= at + further,
                    Moment::OnAnswer => {
                        while answers.try_recv().is_ok() {}
                        answers
                            .recv_timeout(Duration::from_secs(60))
                            .expect("an answer");
                        true
                    }
                };
                if due {
                    break rewinds;
                }
            }
            assert!(
                Instant::now() < deadline,
                "life {life}: the WAL was rewound {rewinds} times in {answered} answers"
            );
            assert!(
                clients.iter().all(|c| !c.is_finished()),
                "life {life}: a client stopped while the server ran"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        killing.store(true, Ordering::SeqCst);
        server.child.kill().unwrap(); // SIGKILL
        let status = server.child.wait().unwrap();
        assert_eq!(status.signal(), Some(SIGKILL), "life {life}: {status}");
        let mut unexplained = Vec::new();
        for c in clients {
            let run = c.join().unwrap();
            acked.extend(run.acked);
            attempted.extend(run.attempted);
            unexplained.extend(run.unexplained);
        }
        assert!(unexplained.is_empty(), "life {life}: {unexplained:#?}");
        let releases = env.release_versions("shop").len() - releases_before;
        println!(
            "life {life}: killed {} after {rewinds} WAL rewinds, {} answers, {releases} releases",
            match moment {
                Moment::InCheckpoint => "as a checkpoint wrote the database file",
                Moment::Between => "between checkpoints",
                Moment::OnAnswer => "as a client got its answer",
            },
            acks.load(Ordering::SeqCst)
        );
        drop(server);
    }
    (acked, attempted)
}

#[test]
fn sigkill_at_random_moments_leaves_a_consistent_store_and_acknowledged_changes_survive() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &["--as", "main"]);
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_now() as u64 | 1);
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let (mut acked, attempted, kills_inside_provisioning) = kill_cli_processes(&env, &mut rng);
    let mut db = env.db();
    check_invariants(&mut db);
    assert!(
        kills_inside_provisioning > 0,
        "no kill landed between a provisioning's reservation and its completion"
    );
    check_acknowledged(&env, &mut db, &acked);

    // Phase two kills a server as the SQLite engine checkpoints and rewinds
    // its WAL; on PostgreSQL the database survives its clients' deaths on
    // its own, and servers killed under load are the cluster tests' matter.
    let attempted_by_clients = if env.database.is_none() {
        let (acked_by_server, attempted_by_clients) = kill_servers_under_load(&env, &mut rng);
        acked.extend(acked_by_server);
        check_invariants(&mut db);
        check_acknowledged(&env, &mut db, &acked);
        attempted_by_clients
    } else {
        println!("phase two (server kills at WAL checkpoints) is SQLite's; see tests/cluster.rs");
        BTreeSet::new()
    };

    // Retrying every uuid with the same arguments completes it, once.
    let mut retries: Vec<(String, String)> = attempted
        .iter()
        .map(|i| (uuid(*i), format!("K{i}")))
        .collect();
    retries.extend(
        attempted_by_clients
            .iter()
            .map(|(t, j)| (client_uuid(*t, *j), client_attachment(*t, *j))),
    );
    for (u, name) in &retries {
        env.ok(&[
            "addons:create",
            "kv",
            "-a",
            "shop",
            "--uuid",
            u,
            "--as",
            name,
        ]);
    }
    check_invariants(&mut db);
    check_acknowledged(&env, &mut db, &acked);
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
    for (u, _) in &retries {
        assert_eq!(
            states.get(u).map(String::as_str),
            Some("provisioned"),
            "uuid {u}"
        );
    }
    assert_eq!(
        states.len(),
        retries.len() + 1,
        "one resource per uuid, plus MAIN"
    );
}
