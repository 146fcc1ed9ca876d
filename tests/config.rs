//! Config var changes by the user: a forced change makes a name the user's
//! for good, and one request is one transaction and one release.

use crate::support::*;
use serde_json::json;

fn refusals(env: &Env) -> Vec<String> {
    env.json(&["audit", "--limit", "500"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refused")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_forced_unset_holds_against_the_add_ons_rotation_and_plan_change() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.create("exceptions:dev", "shop", &[]);
    env.ok(&[
        "config:unset",
        "KV_URL",
        "EXCEPTIONS_RETENTION_DAYS",
        "-a",
        "shop",
        "--force",
    ]);

    // A rotation answers KV_URL again; the user's takeover holds.
    env.ok(&["addons:rotate", "KV", "-a", "shop"]);
    // A plan change answers the retention again; likewise.
    let plans = env.json(&["addons:plans", "exceptions"]);
    let other = plans
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .find(|p| *p != "dev")
        .unwrap()
        .to_string();
    env.ok(&[
        "addons:upgrade",
        "EXCEPTIONS",
        &format!("exceptions:{other}"),
        "-a",
        "shop",
    ]);
    let config = env.config("shop");
    assert!(!config.contains_key("KV_URL"), "{config:?}");
    assert!(
        !config.contains_key("EXCEPTIONS_RETENTION_DAYS"),
        "{config:?}"
    );
    assert!(config.contains_key("EXCEPTIONS_URL"), "{config:?}");
    let refused = refusals(&env);
    for name in ["KV_URL", "EXCEPTIONS_RETENTION_DAYS"] {
        assert!(
            refused
                .iter()
                .any(|r| r.contains(name) && r.contains("taken over by the user")),
            "the refused write of {name} is audited: {refused:?}"
        );
    }
    // The user may set the name as their own.
    env.ok(&["config:set", "KV_URL=redis://mine", "-a", "shop"]);
    env.ok(&["addons:rotate", "KV", "-a", "shop"]);
    assert_eq!(env.config("shop")["KV_URL"], "redis://mine");
}

#[test]
fn a_forced_unset_holds_against_a_partner_initiated_update() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    let session = server.sign_in();
    let fields = server.sso_form("shop", &session, "KV");
    let login = server.sso_login("kv", &fields);
    assert_eq!(login.status, 302, "{}", login.text());
    let cookie = login
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_kv="))
        .unwrap();
    let ns = fields.iter().find(|(k, _)| k == "id").unwrap().1.clone();
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config?force=true",
        Some(json!({"KV_URL": null})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The kv dashboard's roll button updates KV_URL on the add-on's behalf.
    server.addon_request(
        "kv",
        "POST",
        &format!("/dashboard/{ns}/roll"),
        &[("cookie", &cookie)],
        b"",
    );
    let config = server.api("GET", "/api/apps/shop/config", None).json();
    assert!(config.get("KV_URL").is_none(), "{config}");
    assert!(
        refusals(&env)
            .iter()
            .any(|r| r.contains("KV_URL") && r.contains("taken over by the user")),
        "{:?}",
        refusals(&env)
    );
}

#[test]
fn a_config_patch_that_sets_and_unsets_is_one_transaction_and_one_release() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config",
        Some(json!({"A": "1", "B": "2"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let releases = || env.release_versions("shop").len();
    let before = (releases(), env.config("shop"));
    // The unset fails (an add-on's var, not forced): the sets do not apply.
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config",
        Some(json!({"C": "3", "A": null, "KV_URL": null})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!((releases(), env.config("shop")), before);
    // A good one: one release for both halves.
    let r = server.api(
        "PATCH",
        "/api/apps/shop/config",
        Some(json!({"C": "3", "A": null})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(releases(), before.0 + 1);
    assert_eq!(env.release_descriptions("shop")[0], "Set C; remove A");
    let config = env.config("shop");
    assert_eq!(config["C"], "3");
    assert!(!config.contains_key("A"));
}
