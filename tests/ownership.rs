//! CONTRACT §Config var ownership: an add-on reads only the vars it set, on
//! the app of the resource in the current call; it writes only manifest vars
//! it owns; users cannot overwrite an add-on's var without --force, after
//! which the add-on's writes to it are refused and logged.

mod support;

use serde_json::Value;
use support::*;

/// Rotates the hostile add-on and returns what its probe saw.
fn probe(env: &Env, addon: &str) -> serde_json::Map<String, Value> {
    env.ok(&["addons:rotate", addon]);
    let info = env.json(&["addons:info", addon]);
    let app = info["app"].as_str().unwrap();
    let attachment = info["attachments"][0]
        .as_str()
        .unwrap()
        .rsplit("::")
        .next()
        .unwrap()
        .to_string();
    let seen = env.config(app)[&format!("{attachment}_SEEN")]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_str(&seen).unwrap()
}

fn addon_id(created: &Value) -> String {
    created["addon"]["addon_id"].as_str().unwrap().to_string()
}

#[test]
fn addon_cannot_read_user_vars_or_other_addons_vars() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "SECRET=s3cret", "-a", "shop"]);
    let kv = env.create("kv", "shop", &[]);
    let spy = env.create(
        "hostile",
        "shop",
        &[
            "--",
            "--read",
            "SECRET,KV_URL,HOSTILE_URL",
            "--foreign",
            &addon_id(&kv),
        ],
    );
    let seen = probe(&env, spy["addon"]["name"].as_str().unwrap());
    assert_eq!(seen["get SECRET"], "None");
    assert_eq!(seen["get KV_URL"], "None");
    assert!(
        seen["get HOSTILE_URL"]
            .as_str()
            .unwrap()
            .starts_with("Some(\"http://"),
        "{seen:?}"
    );
    let own = seen["list own"].as_str().unwrap();
    assert!(
        own.contains("HOSTILE_URL") && !own.contains("s3cret") && !own.contains("KV_URL"),
        "{own}"
    );
    assert_eq!(seen["list foreign"], "[]", "another add-on's vars leaked");
    assert_eq!(seen["get foreign KV_URL"], "None");
    assert_eq!(seen["get foreign SECRET"], "None");
}

#[test]
fn addon_cannot_read_another_attachments_vars() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    let first = env.create("hostile", "shop", &[]);
    let second = env.create(
        "hostile",
        "shop",
        &[
            "--",
            "--read",
            "HOSTILE_URL",
            "--foreign",
            &addon_id(&first),
        ],
    );
    assert_eq!(second["addon"]["attachments"][0], "shop::HOSTILE_ORANGE");
    let seen = probe(&env, second["addon"]["name"].as_str().unwrap());
    assert_eq!(seen["list foreign"], "[]");
    assert_eq!(seen["get foreign HOSTILE_URL"], "None");
    // Its own var, read under the manifest name, is the renamed one.
    let own_url = env.config("shop")["HOSTILE_ORANGE_URL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(seen["get HOSTILE_URL"].as_str().unwrap().contains(&own_url));
}

#[test]
fn addon_writes_to_unlisted_foreign_or_invalid_vars_are_refused() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.ok(&["config:set", "SECRET=s3cret", "-a", "shop"]);
    let kv = env.create("kv", "shop", &[]);
    let kv_url = env.config("shop")["KV_URL"].as_str().unwrap().to_string();
    let spy = env.create(
        "hostile",
        "shop",
        &[
            "--",
            "--write",
            "SECRET=pwned,KV_URL=http://evil@x/,bad-name=1,HOSTILE_URL=notaurl",
            "--foreign",
            &addon_id(&kv),
        ],
    );
    let seen = probe(&env, spy["addon"]["name"].as_str().unwrap());
    for key in [
        "write SECRET",
        "write KV_URL",
        "write bad-name",
        "write HOSTILE_URL",
    ] {
        assert!(
            seen[key].as_str().unwrap().starts_with("Err("),
            "{key} was accepted: {seen:?}"
        );
    }
    for key in [
        "write foreign SECRET",
        "write foreign KV_URL",
        "write foreign HOSTILE_URL",
    ] {
        assert!(
            seen[key].as_str().unwrap().starts_with("Err("),
            "{key} was accepted: {seen:?}"
        );
    }
    let cfg = env.config("shop");
    assert_eq!(cfg["SECRET"], "s3cret");
    assert_eq!(cfg["KV_URL"], kv_url.as_str());
    // Every refusal is in the audit trail.
    let audit = env.json(&["audit", "--limit", "100"]);
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refused")
        .count();
    assert!(refused >= 7, "refusals logged: {refused}");
}

#[test]
fn user_cannot_overwrite_addon_var_without_force() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let before = snapshot(&env, "shop");
    let (code, err) = env.fails(&["config:set", "KV_URL=redis://mine", "-a", "shop"]);
    assert_eq!(code, 4);
    assert!(
        err.contains("KV_URL is set by add-on") && err.contains("--force"),
        "{err}"
    );
    let (_, err) = env.fails(&["config:unset", "KV_URL", "-a", "shop"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(snapshot(&env, "shop"), before);
}

#[test]
fn forced_var_belongs_to_user_and_addon_writes_to_it_are_refused_and_logged() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.ok(&[
        "config:set",
        "KV_URL=redis://mine:6379",
        "-a",
        "shop",
        "--force",
    ]);
    let cfg = env.json(&["config", "-a", "shop"]);
    assert_eq!(cfg["KV_URL"], "redis://mine:6379");
    // The add-on rotates: its new URL must not replace the user's value.
    env.ok(&["addons:rotate", "KV", "-a", "shop"]);
    assert_eq!(env.config("shop")["KV_URL"], "redis://mine:6379");
    let audit = env.json(&["audit", "-a", "shop"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "refused"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("KV_URL is owned by the user")),
        "{audit:#}"
    );
    // Deprovisioning leaves the user's var alone.
    env.ok(&["addons:destroy", "KV", "-a", "shop", "--confirm", "shop"]);
    assert_eq!(env.config("shop")["KV_URL"], "redis://mine:6379");
}
