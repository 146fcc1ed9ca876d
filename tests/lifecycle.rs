//! The seed's Provisioning flow end to end through the real binary: each
//! example add-on provisions, changes plan, rotates, verifies SSO and
//! deprovisions; renaming, conflicts, idempotency, releases, durability and
//! bad input behave as CONTRACT.md says.

use crate::support::*;
use addonhost::runtime::Verdict;

fn var<'a>(cfg: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    cfg.get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{name} not set: {cfg:?}"))
}

#[test]
fn kv_provisions_changes_plan_rotates_and_deprovisions() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let created = env.create("kv", "shop", &[]);
    let name = created["addon"]["name"].as_str().unwrap().to_string();
    assert_eq!(created["addon"]["plan"], "mini");
    assert_eq!(created["addon"]["state"], "provisioned");
    // The answer describes the add-on exactly as the store now holds it.
    assert_eq!(created["addon"], env.json(&["addons:info", &name]));
    let url = var(&env.config("shop"), "KV_URL").to_string();
    let parsed = url::Url::parse(&url).unwrap();
    assert_eq!(parsed.scheme(), "http");
    assert_eq!(parsed.host_str(), Some("127.0.0.1"));
    assert!(
        parsed.password().unwrap().len() >= 32,
        "generated password: {url}"
    );
    assert!(parsed.path().starts_with("/addons/kv/"), "{url}");

    env.ok(&["addons:upgrade", &name, "kv:pro"]);
    assert_eq!(env.json(&["addons:info", &name])["plan"], "pro");
    assert_eq!(
        var(&env.config("shop"), "KV_URL"),
        url,
        "kv's plan change keeps its URL"
    );

    let rotated = env.json(&["addons:rotate", "KV", "-a", "shop"]);
    assert_eq!(rotated["changed"], serde_json::json!(["KV_URL"]));
    let new_url = var(&env.config("shop"), "KV_URL").to_string();
    assert_ne!(new_url, url);
    assert_eq!(
        url::Url::parse(&new_url).unwrap().username(),
        parsed.username()
    );

    env.ok(&["addons:destroy", &name, "--confirm", "shop"]);
    assert!(env.config("shop").is_empty());
    assert_eq!(env.json(&["addons", "-a", "shop"]), serde_json::json!([]));
    assert_eq!(
        env.release_descriptions("shop"),
        vec![
            format!("Detach KV ({name})"),
            "Rotate KV credentials".to_string(),
            format!("Change KV ({name}) to kv:pro"),
            format!("Attach KV ({name})"),
            "Initial release".to_string(),
        ]
    );
}

#[test]
fn exceptions_plan_change_replaces_its_config() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let created = env.create("exceptions", "shop", &[]);
    assert_eq!(
        created["addon"],
        env.json(&["addons:info", "EXCEPTIONS", "-a", "shop"]),
        "the answer lists every var it set, as the store does"
    );
    assert_eq!(created["addon"]["config_vars"].as_array().unwrap().len(), 2);
    let cfg = env.config("shop");
    assert_eq!(var(&cfg, "EXCEPTIONS_RETENTION_DAYS"), "7");
    let url = var(&cfg, "EXCEPTIONS_URL").to_string();
    env.ok(&["addons:upgrade", "EXCEPTIONS", "pro", "-a", "shop"]);
    let cfg = env.config("shop");
    assert_eq!(var(&cfg, "EXCEPTIONS_RETENTION_DAYS"), "90");
    assert_eq!(var(&cfg, "EXCEPTIONS_URL"), url);
    env.ok(&["addons:rotate", "EXCEPTIONS", "-a", "shop"]);
    assert_ne!(
        var(&env.config("shop"), "EXCEPTIONS_URL"),
        url,
        "rotation issues a new API key"
    );
    env.ok(&[
        "addons:destroy",
        "EXCEPTIONS",
        "-a",
        "shop",
        "--confirm",
        "shop",
    ]);
    assert!(env.config("shop").is_empty());
}

#[tokio::test]
async fn sso_verify_accepts_valid_token_and_denies_wrong_stale_and_future() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.create("exceptions", "shop", &[]);
    let host = env.host();
    for (attachment, service) in [("KV", "kv"), ("EXCEPTIONS", "exceptions")] {
        let now = unix_now();
        let verify = |ts: i64, tamper: bool| {
            let form = host
                .sso_form(
                    "shop",
                    attachment,
                    "dev@example.com",
                    &[("issue_no".into(), "42".into())],
                    ts,
                )
                .unwrap();
            let mut login = form.to_login().unwrap();
            assert_eq!(
                login.params,
                vec![("issue_no".to_string(), "42".to_string())]
            );
            if tamper {
                let last = if login.token.ends_with('0') { '1' } else { '0' };
                login.token = format!("{}{last}", &login.token[..39]);
            }
            let host = &host;
            async move { host.sso_verify(service, login).await.unwrap() }
        };
        match verify(now, false).await {
            Verdict::Ok(s) => {
                assert_eq!(s.user, "dev@example.com");
                assert!(s.landing.starts_with("/dashboard/"), "{}", s.landing);
            }
            Verdict::Denied(why) => panic!("{service}: valid login denied: {why}"),
        }
        for (label, ts, tamper) in [
            ("wrong token", now, true),
            ("6-minute-old timestamp", now - 6 * 60, false),
            ("2-minute-future timestamp", now + 2 * 60, false),
        ] {
            assert!(
                matches!(verify(ts, tamper).await, Verdict::Denied(_)),
                "{service}: {label} was accepted"
            );
        }
    }
}

#[test]
fn attachment_renaming_with_as_and_generated_names() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.create("kv", "shop", &["--as", "cache"]);
    env.create("kv", "shop", &[]);
    let cfg = env.config("shop");
    let names: Vec<&String> = cfg.keys().collect();
    assert_eq!(names, ["CACHE_URL", "KV_ORANGE_URL", "KV_URL"]);
    let urls: std::collections::BTreeSet<&str> =
        cfg.values().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(urls.len(), 3, "each resource has its own credentials");
}

#[test]
fn attachment_name_conflicts_are_refused_and_change_nothing() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "CACHE_URL=redis://mine", "-a", "shop"]);
    env.create("kv", "shop", &[]);
    let before = snapshot(&env, "shop");
    let (code, err) = env.fails(&["addons:create", "kv", "-a", "shop", "--as", "cache"]);
    assert_eq!(code, 4);
    assert!(
        err.contains("CACHE_URL is already set on the app by the user"),
        "{err}"
    );
    let (_, err) = env.fails(&["addons:create", "exceptions", "-a", "shop", "--as", "KV"]);
    assert!(err.contains("attachment name KV is already used"), "{err}");
    let (_, err) = env.fails(&["addons:create", "kv", "-a", "shop", "--as", "9lives"]);
    assert!(err.contains("invalid"), "{err}");
    assert_eq!(snapshot(&env, "shop"), before);
}

#[test]
fn invalid_plugin_output_is_rejected_naming_the_var_and_nothing_is_stored() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let before = snapshot(&env, "shop");
    let (code, err) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "bad-url",
    ]);
    assert_eq!(code, 5);
    assert!(err.contains("HOSTILE_URL is not a valid URL"), "{err}");
    let (_, err) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "shop",
        "--",
        "--attack",
        "unlisted-var",
    ]);
    assert!(err.contains("DATABASE_URL is not in the manifest"), "{err}");
    assert_eq!(snapshot(&env, "shop"), before);
    // The failed provisions left no KV behind either: the hostile add-on's
    // probe record is written only by successful calls.
    let n = env.db().count(
        "SELECT COUNT(*) FROM plugin_kv WHERE service = 'hostile'",
        &[],
    );
    assert_eq!(n, 0);
}

#[test]
fn deprovision_removes_only_its_own_vars() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "LOG_LEVEL=debug", "-a", "shop"]);
    let first = env.create("kv", "shop", &[]);
    env.create("kv", "shop", &["--as", "cache"]);
    env.create("exceptions", "shop", &[]);
    let name = first["addon"]["name"].as_str().unwrap();
    env.ok(&["addons:destroy", name, "-a", "shop", "--confirm", "shop"]);
    let cfg = env.config("shop");
    let names: Vec<&String> = cfg.keys().collect();
    assert_eq!(
        names,
        [
            "CACHE_URL",
            "EXCEPTIONS_RETENTION_DAYS",
            "EXCEPTIONS_URL",
            "LOG_LEVEL"
        ]
    );
}

#[test]
fn reprovision_with_same_uuid_is_idempotent() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let uuid = "6f1c1d0e-3b9a-4c1e-9a53-1f0d6f5a2b10";
    let a = env.create("kv", "shop", &["--uuid", uuid]);
    let b = env.create("kv", "shop", &["--uuid", uuid]);
    assert_eq!(a["addon"]["name"], b["addon"]["name"]);
    assert_eq!(b["existing"], true);
    assert_eq!(
        env.json(&["addons", "-a", "shop"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        env.release_descriptions("shop").len(),
        2,
        "no second release"
    );
    env.ok(&["apps:create", "other"]);
    let (code, err) = env.fails(&["addons:create", "kv", "-a", "other", "--uuid", uuid]);
    assert_eq!(code, 4);
    assert!(err.contains("already names add-on"), "{err}");
}

#[test]
fn every_config_change_makes_a_described_release() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "A=1", "B=2", "-a", "shop"]);
    env.ok(&["config:unset", "A", "-a", "shop"]);
    let releases = env.json(&["releases", "-a", "shop"]);
    let versions: Vec<i64> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    assert_eq!(
        env.release_descriptions("shop"),
        ["Remove A", "Set A, B", "Initial release"]
    );
}

#[test]
fn state_survives_a_restart_of_the_process() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let before = snapshot(&env, "shop");
    // Every command is a new process; reopening through the library too.
    let host = env.host();
    assert_eq!(host.config("shop").unwrap().len(), 1);
    drop(host);
    assert_eq!(snapshot(&env, "shop"), before);
    // The plugin's own KV survived too: rotating needs the namespace it stored.
    env.ok(&["addons:rotate", "KV", "-a", "shop"]);
}

#[test]
fn run_puts_config_in_the_environment_and_returns_the_exit_code() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.ok(&["config:set", "GREETING=hello world", "-a", "shop"]);
    let r = env.run(&[
        "run",
        "-a",
        "shop",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING|$KV_URL\"; exit 7",
    ]);
    assert_eq!(r.code, 7);
    let kv = var(&env.config("shop"), "KV_URL").to_string();
    assert_eq!(r.stdout.trim(), format!("hello world|{kv}"));
}

#[test]
fn config_shell_and_get_print_values() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "QUOTE=it's", "-a", "shop"]);
    assert_eq!(
        env.ok(&["config", "-a", "shop", "--shell"]),
        "QUOTE='it'\\''s'\n"
    );
    assert_eq!(env.ok(&["config:get", "QUOTE", "-a", "shop"]), "it's\n");
    let (code, _) = env.fails(&["config:get", "NOPE", "-a", "shop"]);
    assert_eq!(code, 3);
}

#[test]
fn an_add_on_is_provisioned_only_in_the_regions_it_offers() {
    let env = Env::with_plugin_copies(&["kv"], |_, m| {
        m["api"]["regions"] = serde_json::json!(["us"])
    });
    env.ok(&["apps:create", "shop", "--region", "eu"]);
    env.ok(&["apps:create", "cafe", "--region", "us"]);
    let (code, err) = env.fails(&["addons:create", "kv", "-a", "shop"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("add-on kv is not offered in region eu (regions: us)"),
        "{err}"
    );
    assert!(env
        .json(&["addons", "-a", "shop"])
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        env.create("kv", "cafe", &[])["addon"]["state"],
        "provisioned"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let before = snapshot(&env, "shop");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["config", "-a", "nope"], 3, "app \"nope\" not found"),
        (
            &["addons:create", "kv", "-a", "nope"],
            3,
            "app \"nope\" not found",
        ),
        (
            &["addons:create", "redis", "-a", "shop"],
            3,
            "unknown add-on service \"redis\"",
        ),
        (
            &["addons:create", "kv:gold", "-a", "shop"],
            3,
            "has no plan \"gold\"; plans: mini, pro",
        ),
        (
            &["config:set", "NOEQUALS", "-a", "shop"],
            2,
            "is not NAME=value",
        ),
        (
            &["config:set", "1BAD=x", "-a", "shop"],
            2,
            "config var name \"1BAD\" is invalid",
        ),
        (
            &["apps:destroy", "-a", "shop"],
            2,
            "confirm with --confirm shop",
        ),
        (
            &["apps:destroy", "-a", "shop", "--confirm", "shopp"],
            2,
            "confirm with --confirm shop",
        ),
        (
            &["addons:destroy", "KV", "-a", "shop"],
            2,
            "confirm with --confirm shop",
        ),
        (&["addons:info", "kv-none-00000"], 3, "not found"),
        (&["apps:create", "shop"], 4, "already exists"),
        (&["apps:create", "Bad_Name"], 2, "invalid"),
        (
            &["addons:create", "kv", "-a", "shop", "--uuid", "xyz"],
            2,
            "is not a UUID",
        ),
        (
            &["addons:upgrade", "KV", "kv:mini", "-a", "shop"],
            2,
            "already on plan mini",
        ),
        (
            &["config:unset", "GHOST", "-a", "shop"],
            3,
            "GHOST is not set",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, err) = env.fails(args);
        assert_eq!(got, *code, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    assert_eq!(snapshot(&env, "shop"), before);
}

#[test]
fn corrupt_data_dir_gets_a_clear_error_and_is_left_alone() {
    let env = Env::on_sqlite();
    let db = env.data().join("addonhost.db");
    std::fs::write(&db, b"this is not a database, it is a grocery list").unwrap();
    let (code, err) = env.fails(&["apps"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a usable addonhost database"), "{err}");
    assert!(err.contains("restore it from a backup"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"this is not a database, it is a grocery list"
    );
}

#[test]
fn apps_destroy_deprovisions_its_addons() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.create("exceptions", "shop", &[]);
    env.ok(&["apps:destroy", "-a", "shop", "--confirm", "shop"]);
    assert_eq!(env.json(&["apps"]), serde_json::json!([]));
    // The add-ons' own data is gone too: kv deleted its namespace.
    let n = env.db().count(
        "SELECT COUNT(*) FROM plugin_kv WHERE key LIKE 'ns/%' OR key LIKE 'project/%'",
        &[],
    );
    assert_eq!(n, 0);
}

#[test]
fn catalog_lists_services_and_plans() {
    let env = Env::new();
    let services = env.json(&["addons:services"]);
    let ids: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["exceptions", "hostile", "kv"]);
    let plans = env.json(&["addons:plans", "kv"]);
    assert_eq!(plans[0]["id"], "mini");
    assert_eq!(plans[0]["default"], true);
    let out = env.ok(&["plugins"]);
    assert!(out.contains("kv") && out.contains("loaded"), "{out}");
}
