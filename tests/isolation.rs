//! Isolation against a hostile add-on: what one add-on can make the host
//! spend (memory, disk, descriptors, instance slots) on its behalf, and what
//! it can take from the processes and the other add-ons of the platform. Each
//! test is an attack by `tests/plugins/hostile` (or a manifest written like a
//! hostile partner would) and what must hold instead. Every test runs on
//! either backend (the store's limits, quota and audit pruning included).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

/// Resident memory of a process in KiB: (now, peak).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn hostile(options: Value) -> Value {
    json!({"plan": "hostile", "options": options})
}

/// What the hostile add-on reported in its `*_SEEN` var (renamed for its
/// attachment: `HOSTILE_ORANGE_SEEN`).
fn seen(created: &Value) -> String {
    created["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0].as_str().unwrap().ends_with("_SEEN"))
        .map(|p| p[1].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("the add-on reports what it saw: {created}"))
}

#[test]
fn a_call_writing_two_gib_is_stopped_by_its_budget_and_the_server_keeps_its_memory() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    let pid = server.child.id();
    let (_, peak_before) = rss_kib(pid);

    // 2,048 values of 1 MiB from one provisioning call.
    let t = Instant::now();
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(hostile(
            json!({"attack": "kv-flood", "count": "2048", "size": "1048576"}),
        )),
    );
    let (_, peak_after) = rss_kib(pid);
    let grew_mib = (peak_after.saturating_sub(peak_before)) / 1024;
    eprintln!(
        "kv flood answered {} in {:?}; server peak RSS grew by {grew_mib} MiB",
        r.status,
        t.elapsed()
    );
    assert!(
        grew_mib < 100,
        "the server's peak RSS grew by {grew_mib} MiB"
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("budget") && message.contains("8 MiB"),
        "the error names the budget: {message}"
    );
    // Nothing of it was stored, and the server serves on.
    let flooded = env.db().count(
        "SELECT COUNT(*) FROM plugin_kv WHERE key LIKE 'flood/%'",
        &[],
    );
    assert_eq!(flooded, 0);
    if env.database.is_none() {
        let wal = std::fs::metadata(env.data().join("addonhost.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(wal < 64 << 20, "the WAL grew to {wal} bytes");
    }
    let kv = server.kv_url("shop");
    assert_eq!(server.kv_put(&kv, "still", b"here").status, 201);
}

#[test]
fn log_lines_refusals_and_kv_operations_of_one_call_are_bounded() {
    // A deadline long enough that only the budgets can stop these calls.
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["limits"]["timeout_ms"] = json!(30_000);
    });
    env.ok(&["apps:create", "shop"]);

    // 50,000 log lines of 4 KB: the host keeps 64 KiB of them and says so.
    let r = env
        .command(&[
            "addons:create",
            "hostile",
            "-a",
            "shop",
            "--",
            "--attack",
            "log-flood",
            "--count",
            "50000",
        ])
        .env("ADDONHOST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    assert!(r.status.success(), "{}", tail(&stderr));
    assert!(
        stderr.len() < 512 << 10,
        "{} bytes of plugin log reached the host's log",
        stderr.len()
    );
    assert!(
        stderr.contains("log truncated"),
        "the truncation is marked: {}",
        tail(&stderr)
    );

    // 2,000 refused config updates (within the call's write budget): the
    // audit trail keeps a bounded number of them.
    env.ok(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "refusal-flood",
        "--count",
        "2000",
    ]);
    let refused = env
        .db()
        .count("SELECT COUNT(*) FROM audit WHERE action = 'refused'", &[]);
    let longest = env.db().count(
        "SELECT COALESCE(MAX(length(detail)), 0) FROM audit WHERE action = 'refused'",
        &[],
    );
    assert!(refused <= 101, "{refused} refusals recorded for one call");
    assert!(longest <= 600, "a refusal of {longest} bytes was recorded");
    let marker = env.db().count(
        "SELECT COUNT(*) FROM audit WHERE action = 'refused' AND detail LIKE '%more refusals%'",
        &[],
    );
    assert_eq!(marker, 1, "the cap is recorded once");

    // Millions of KV operations: stopped by the operation budget, long
    // before the deadline.
    let (code, err) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "kv-ops",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("budget") && err.contains("operations"),
        "{err}"
    );
}

/// A server whose audit trail keeps `keep` entries of each actor, and a
/// call of the hostile add-on refused `count` times.
fn audit_env(keep: i64) -> (Env, Server) {
    let env = Env::with_plugin_copies(&["hostile"], |_, m| {
        m["limits"]["timeout_ms"] = json!(30_000);
    });
    let mut serve = env.command(&["serve", "--port", "0"]);
    serve.env("ADDONHOST_AUDIT_KEEP", keep.to_string());
    let server = Server::start_with(serve, &env);
    server.app_with("shop", &[]);
    (env, server)
}

fn refusal_flood(server: &Server, count: u32) {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let mut body = hostile(json!({"attack": "refusal-flood", "count": count.to_string()}));
    // Each its own attachment name: the colors run out.
    body["as"] = json!(format!("FLOOD{}", CALLS.fetch_add(1, Ordering::Relaxed)));
    let r = server.api("POST", "/api/apps/shop/addons", Some(body));
    assert_eq!(r.status, 201, "{}", r.text());
}

fn refusals_of_hostile(env: &Env) -> Vec<String> {
    env.db().strings(
        "SELECT detail FROM audit WHERE actor = 'addon:hostile' AND action = 'refused' ORDER BY id",
        &[],
    )
}

/// One call refused 2,000 times for the same reason leaves two audit
/// entries: the first refusal in full, and one count of the rest.
#[test]
fn a_call_refused_thousands_of_times_leaves_its_first_refusal_and_a_count() {
    let (env, server) = audit_env(10_000);
    refusal_flood(&server, 2000);
    let one_call = refusals_of_hostile(&env);
    assert_eq!(one_call.len(), 2, "{one_call:#?}");
    assert!(
        one_call[0].contains("still being provisioned"),
        "{}",
        one_call[0]
    );
    assert!(
        one_call[1].contains("1999 more refusals of this kind"),
        "{}",
        one_call[1]
    );
}

/// A hostile add-on refused on every call, call after call: the audit trail
/// keeps the newest `--audit-keep` entries of the add-on, and the user's own
/// entries are not pushed out by it.
#[test]
fn an_addon_refused_on_every_call_wears_out_only_its_own_audit_entries() {
    const KEEP: i64 = 100;
    let (env, server) = audit_env(KEEP);
    refusal_flood(&server, 2000);
    for _ in 0..60 {
        refusal_flood(&server, 3);
    }
    let kept = env.db().count(
        "SELECT COUNT(*) AS n FROM audit WHERE actor = 'addon:hostile'",
        &[],
    );
    assert!(kept <= KEEP, "{kept} audit entries of the add-on kept");
    let newest = refusals_of_hostile(&env);
    assert!(
        newest.last().is_some_and(|d| d.contains("more refusals")),
        "the newest entries are the ones kept: {newest:#?}"
    );
    assert!(
        !newest.iter().any(|d| d.contains("1999 more")),
        "the oldest went first"
    );
    let users = env.db().count(
        "SELECT COUNT(*) AS n FROM audit WHERE actor <> 'addon:hostile'",
        &[],
    );
    assert!(users >= 61, "the user's own entries stay: {users}");
}

#[test]
fn list_keys_answers_at_most_its_documented_cap() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    // 3 calls of 1,000 small keys each: within every per-call budget.
    for _ in 0..3 {
        env.ok(&[
            "addons:create",
            "hostile",
            "-a",
            "shop",
            "--",
            "--attack",
            "kv-flood",
            "--count",
            "1000",
            "--size",
            "10",
        ]);
    }
    let created = env.create("hostile", "shop", &["--", "--attack", "list-keys"]);
    let seen = seen(&created);
    assert_eq!(seen, "listed 1000 keys");
}

#[test]
fn an_add_on_cannot_store_past_its_quota_and_plugins_reports_its_usage() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let quota = ["--max-kv-mb", "4"];
    let flood = |count: &str| {
        let mut args = quota.to_vec();
        args.extend([
            "addons:create",
            "hostile",
            "-a",
            "shop",
            "--",
            "--attack",
            "kv-flood",
            "--count",
            count,
            "--size",
            "1000000",
        ]);
        env.run(&args)
    };
    // 3 MB fits in 4 MiB; the next 3 MB does not, and is refused whole.
    assert_eq!(flood("3").code, 0);
    let refused = flood("3");
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("quota"),
        "the error names the quota: {}",
        refused.stderr
    );
    let stored = env.db().count(
        "SELECT COALESCE(SUM(length(value)), 0) FROM plugin_kv WHERE service = 'hostile'",
        &[],
    );
    assert!(stored < 4 << 20, "{stored} bytes stored past the quota");
    let mut args = quota.to_vec();
    args.extend(["plugins", "--json"]);
    let plugins: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    let row = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "hostile")
        .unwrap()
        .clone();
    let storage = &row["storage"];
    assert_eq!(storage["quota_bytes"], 4 << 20, "{row}");
    assert!(storage["bytes"].as_u64().unwrap() >= 3_000_000, "{row}");
    assert!(storage["keys"].as_u64().unwrap() >= 4, "{row}");
}

#[test]
fn sockets_cannot_be_created_and_a_resource_flood_fails_only_its_call() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let created = env.create(
        "hostile",
        "shop",
        &["--", "--attack", "sockets", "--count", "100000"],
    );
    let seen = seen(&created);
    assert!(
        seen.starts_with("created 0 sockets; then ") && seen.contains("access-denied"),
        "{seen}"
    );
    // Two million host-side resources from one call: that call fails with
    // the budget named; the host goes on committing provisionings.
    let (code, err) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "resources",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("resources"), "{err}");
    env.create("kv", "shop", &[]);
}

/// The p99 latency kv's route must keep while another add-on is flooded.
const KV_P99_UNDER_FLOOD: Duration = Duration::from_millis(1000);

#[test]
fn a_flooded_add_on_does_not_starve_another() {
    let env = Env::new();
    let server = Arc::new(Server::start(&env));
    server.app_with(
        "shop",
        &[json!({"plan": "kv:mini"}), json!({"plan": "hostile"})],
    );
    let kv = server.kv_url("shop");
    assert_eq!(server.kv_put(&kv, "k", b"v").status, 201);

    // 1,200 clients holding requests to the hostile add-on's route that
    // sleeps until its deadline, for 4 s.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicUsize::new(0));
    let retry_after = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..1200)
        .map(|_| {
            let (server, stop, busy, retry_after) = (
                server.clone(),
                stop.clone(),
                busy.clone(),
                retry_after.clone(),
            );
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = server.get("/addons/hostile/sleep", &[]);
                        if r.status == 503 {
                            busy.fetch_add(1, Ordering::Relaxed);
                            if r.header("retry-after").is_some() {
                                retry_after.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(250));
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    // Once the flood has filled the hostile add-on's slots (it is being
    // turned away), kv's own route answers every request.
    let deadline = Instant::now() + Duration::from_secs(120);
    while busy.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the flood never hit the concurrency limit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let latencies = Mutex::new(Vec::new());
    let mut failures = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let t = Instant::now();
        let r = http::request(
            &server.addr,
            "GET",
            &format!("{}/k", kv.path),
            &[("authorization", &kv.auth())],
            b"",
        );
        latencies.lock().unwrap().push(t.elapsed());
        if r.status != 200 {
            failures.push(format!("{} {}", r.status, r.text()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let mut l = latencies.into_inner().unwrap();
    l.sort();
    let p99 = l[l.len() * 99 / 100];
    eprintln!(
        "kv during the flood: {} requests, p50 {:?}, p99 {p99:?}, slowest {:?}; hostile answered 503 {} times",
        l.len(),
        l[l.len() / 2],
        &l[l.len().saturating_sub(5)..],
        busy.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "kv failed during the flood: {failures:?}"
    );
    // Answered, and promptly: kv waits for nothing of the hostile add-on's,
    // its connections included (a full listen queue delays a connection by
    // a second: the SYN is sent again). The bound is generous for a loaded
    // 2-core machine, where kv answers in 1-250 ms under this flood.
    assert!(
        l.len() >= 5,
        "kv answered only {} requests in 3 s of flood",
        l.len()
    );
    assert!(
        p99 < KV_P99_UNDER_FLOOD,
        "kv's p99 during the flood was {p99:?} (bound {KV_P99_UNDER_FLOOD:?})"
    );
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the flood never hit the concurrency limit"
    );
    assert_eq!(
        busy.load(Ordering::Relaxed),
        retry_after.load(Ordering::Relaxed),
        "every 503 says when to retry"
    );
}

/// A copy of the hostile add-on whose manifest a partner edited.
fn hostile_with_manifest(edit: impl Fn(&mut Value)) -> Env {
    Env::with_plugin_copies(&["hostile", "kv"], |name, m| {
        if name == "hostile" {
            edit(m)
        }
    })
}

fn plugin_row(env: &Env, id: &str) -> Value {
    let plugins = env.json(&["plugins"]);
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no plugin row {id}: {plugins}"))
        .clone()
}

#[test]
fn a_manifest_cannot_claim_names_that_take_over_processes() {
    for (prefix, var) in [
        ("LD", "LD_PRELOAD"),
        ("NODE", "NODE_OPTIONS"),
        ("HTTPS", "HTTPS_PROXY"),
        ("PYTHONSTARTUP", "PYTHONSTARTUP_URL"),
        ("BASH", "BASH_ENV"),
        ("GIT", "GIT_SSH_COMMAND"),
    ] {
        let env = hostile_with_manifest(|m| {
            m["api"]["config_vars_prefix"] = json!(prefix);
            m["api"]["config_vars"] = json!([var]);
        });
        let row = plugin_row(&env, "hostile");
        let error = row["error"].as_str().unwrap_or_default();
        assert_ne!(row["status"], "loaded", "{var} was accepted: {row}");
        assert!(
            error.contains(var) && error.contains("reserved"),
            "the error names {var} and the rule: {error}"
        );
    }
}

#[test]
fn an_attachment_name_cannot_make_an_add_on_var_reserved_but_the_user_still_can_set_it() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    for name in ["LD", "DYLD", "GIT", "NODE"] {
        let (code, err) = env.fails(&["addons:create", "kv", "-a", "shop", "--as", name]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("reserved"), "{err}");
    }
    assert!(env.config("shop").is_empty());
    // The user owns the process environment.
    env.ok(&["config:set", "LD_LIBRARY_PATH=/opt/lib", "-a", "shop"]);
    assert_eq!(env.config("shop")["LD_LIBRARY_PATH"], "/opt/lib");
}

#[test]
fn a_folder_claiming_another_add_ons_id_is_refused() {
    let env = Env::with_plugin_copies(&["kv", "hostile"], |_, _| {});
    env.ok(&["apps:create", "shop"]);
    let kv = env.create("kv", "shop", &[]);
    assert_eq!(kv["addon"]["state"], "provisioned");
    // A folder sorted before kv/ whose manifest says it is kv, built from
    // the hostile component.
    let root = std::path::PathBuf::from(&env.plugins);
    let evil = root.join("a-evil");
    std::fs::create_dir_all(&evil).unwrap();
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("kv/addon-manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["component"] = json!("hostile.wasm");
    std::fs::write(evil.join("addon-manifest.json"), manifest.to_string()).unwrap();
    std::fs::copy(root.join("hostile/hostile.wasm"), evil.join("hostile.wasm")).unwrap();

    let row = plugin_row(&env, "kv");
    assert_eq!(
        row["dir"].as_str().unwrap(),
        root.join("kv").to_str().unwrap(),
        "kv is served from another folder: {row}"
    );
    let plugins = env.json(&["plugins"]);
    let evil_row = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["dir"] == evil.to_str().unwrap())
        .unwrap_or_else(|| panic!("a-evil is not listed: {plugins}"))
        .clone();
    assert!(
        evil_row["error"]
            .as_str()
            .unwrap_or_default()
            .contains("folder"),
        "{evil_row}"
    );

    // A folder of the same name elsewhere claiming kv is refused until the
    // operator confirms it.
    let elsewhere = env.data().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("kv")).unwrap();
    for f in ["addon-manifest.json", "kv.wasm"] {
        std::fs::copy(root.join("kv").join(f), elsewhere.join("kv").join(f)).unwrap();
    }
    let mut moved = env.command(&["addons:info", "KV", "-a", "shop"]);
    moved.env("ADDONHOST_PLUGINS", &elsewhere);
    let out = moved.output().unwrap();
    let rotate = env
        .command(&["addons:rotate", "KV", "-a", "shop"])
        .env("ADDONHOST_PLUGINS", &elsewhere)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&rotate.stderr);
    assert!(!rotate.status.success(), "a moved kv served kv's add-ons");
    assert!(err.contains("plugins:trust"), "{err}");
    let trust = env
        .command(&["plugins:trust", elsewhere.join("kv").to_str().unwrap()])
        .env("ADDONHOST_PLUGINS", &elsewhere)
        .output()
        .unwrap();
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );
    let rotate = env
        .command(&["addons:rotate", "KV", "-a", "shop"])
        .env("ADDONHOST_PLUGINS", &elsewhere)
        .output()
        .unwrap();
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_every_secret_in_it_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let env = Env::new();
    // A data dir made earlier with the usual umask.
    std::fs::set_permissions(env.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    // A running server: it writes the API token and the broker's
    // credentials, and holds the store open (SQLite's WAL and shared-memory
    // files exist while it does).
    let server = Server::start(&env);
    server.app_with("shop2", &[json!({"plan": "kv:mini"})]);
    let data = env.data();
    let mut secrets = vec!["api-token", "osb-credentials"];
    if env.database.is_none() {
        secrets.extend(["addonhost.db", "addonhost.db-wal", "addonhost.db-shm"]);
    }
    let check = |when: &str| {
        assert_eq!(mode(data), 0o700, "data dir, {when}");
        for f in &secrets {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}, {when}");
        }
        let cache = data.join("cache");
        assert_eq!(mode(&cache), 0o700, "cache dir, {when}");
        let mut entries = 0;
        for entry in std::fs::read_dir(&cache).unwrap() {
            let p = entry.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}, {when}", p.display());
            entries += 1;
        }
        assert!(entries > 0, "the cache holds the compiled add-ons");
    };
    check("as made");
    // Killed: SQLite's WAL and shared-memory files stay behind. Every file
    // loosened by hand is tightened on the next start.
    drop(server);
    for f in &secrets {
        assert!(data.join(f).exists(), "{f} stays");
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&env);
    assert_eq!(server.get("/healthz", &[]).status, 200);
    check("loosened, then a new start");
}

#[test]
fn a_chatty_plugin_keeps_its_last_words_and_never_fails_on_a_full_pipe() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let (code, err) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "stderr-flood",
    ]);
    assert_eq!(code, 5, "{err}");
    // 20,000 lines of chatter, then the panic: the tail kept explains it.
    assert!(
        err.contains("the last words after a lot of chatter"),
        "the panic message is what stderr keeps: {err}"
    );
}

#[test]
fn a_call_about_one_resource_cannot_complete_or_fail_another() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    // A pending provisioning of the same add-on, on the same app.
    let pending = env.create("hostile", "shop", &["--", "--attack", "pending"]);
    assert_eq!(pending["addon"]["state"], "provisioning");
    let pending_id = pending["addon"]["addon_id"].as_str().unwrap().to_string();
    let pending_name = pending["addon"]["name"].as_str().unwrap().to_string();
    // Another resource whose rotation tries to complete and fail it.
    let other = env.create("hostile", "shop", &["--", "--foreign", &pending_id]);
    let other_name = other["addon"]["name"].as_str().unwrap().to_string();
    let rotated: Value =
        serde_json::from_str(&env.ok(&["addons:rotate", &other_name, "-a", "shop", "--json"]))
            .unwrap();
    let _ = rotated;
    let config = env.config("shop");
    let seen: Value = config
        .iter()
        .find(|(k, v)| k.ends_with("_SEEN") && v.as_str().unwrap().contains("complete foreign"))
        .map(|(_, v)| serde_json::from_str(v.as_str().unwrap()).unwrap())
        .expect("the rotation reported its probes");
    for probe in ["complete foreign", "fail foreign"] {
        let answer = seen[probe].as_str().unwrap();
        assert!(
            answer.starts_with("Err(") && answer.contains("out of reach"),
            "{probe}: {answer}"
        );
    }
    let info = env.json(&["addons:info", &pending_name, "-a", "shop"]);
    assert_eq!(info["state"], "provisioning", "{info}");
}

#[test]
fn a_slow_add_ons_scheduled_rotation_delays_no_other() {
    // Both add-ons rotate every day and were provisioned (long) before the
    // server starts: both are due at once. hostile's rotation takes 3 s.
    let env = Env::with_plugin_copies(&["hostile", "kv"], |name, m| {
        m["rotation"] = json!({"every_seconds": 86_400});
        if name == "hostile" {
            m["limits"]["timeout_ms"] = json!(10_000);
        }
    });
    env.ok(&["apps:create", "shop"]);
    env.create("hostile", "shop", &["--", "--slow-rotate-ms", "3000"]);
    env.create("kv", "shop", &[]);
    // Make both overdue: provisioned two days ago.
    env.db()
        .execute("UPDATE resources SET created_at = created_at - 172800", &[]);
    let server = Server::start(&env);
    let rotations = || -> Vec<String> {
        let mut r: Vec<String> = env
            .release_descriptions("shop")
            .into_iter()
            .filter(|d| d.contains("(schedule)"))
            .collect();
        r.reverse();
        r
    };
    let t = Instant::now();
    while rotations().len() < 2 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = rotations();
    drop(server);
    assert_eq!(done.len(), 2, "{done:?}");
    // kv's finished first, though hostile's started no later.
    assert!(done[0].contains("KV"), "{done:?}");
}
