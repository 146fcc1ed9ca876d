//! CONTRACT §Config var ownership: an add-on reads only the vars it set, on
//! the app of the resource in the current call; it writes only manifest vars
//! it owns; users cannot overwrite an add-on's var without --force, after
//! which the add-on's writes to it are refused and logged.

use crate::support::*;
use serde_json::Value;

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
    // Every refusal is in the audit trail: the call's first of each kind in
    // full, the others of that kind counted in one entry.
    let audit = env.json(&["audit", "--limit", "100"]);
    let refused: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refused")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    let counted: usize = refused
        .iter()
        .map(|d| match d.strip_prefix("…and ") {
            Some(rest) => rest.split(' ').next().unwrap().parse::<usize>().unwrap(),
            None => 1,
        })
        .sum();
    assert!(counted >= 7, "refusals logged: {refused:#?}");
    assert!(
        refused.iter().any(|d| d.contains("SECRET")),
        "the first unlisted var is named: {refused:#?}"
    );
    assert!(
        refused.iter().any(|d| d.contains("HOSTILE_URL")),
        "the invalid value is named: {refused:#?}"
    );
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

/// The resource name of the add-on attached to `app` as `attachment`.
fn resource_named(env: &Env, app: &str, attachment: &str) -> String {
    env.json(&["addons:info", attachment, "-a", app])["name"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn user_cannot_set_or_unset_a_var_of_either_of_two_addons() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    env.create("hostile", "shop", &[]);
    let before = snapshot(&env, "shop");
    for (var, attachment) in [("KV_URL", "KV"), ("HOSTILE_URL", "HOSTILE")] {
        let owner = resource_named(&env, "shop", attachment);
        let (code, err) = env.fails(&["config:set", &format!("{var}=http://mine/"), "-a", "shop"]);
        assert_eq!(code, 4, "{err}");
        assert!(
            err.contains(&format!(
                "{var} is set by add-on {owner} (attached as {attachment})"
            )),
            "the refusal names the owner: {err}"
        );
        // Setting it with another, free var refuses the whole change.
        let (code, _) = env.fails(&[
            "config:set",
            "FREE=1",
            &format!("{var}=http://mine/"),
            "-a",
            "shop",
        ]);
        assert_eq!(code, 4);
        let (code, err) = env.fails(&["config:unset", var, "-a", "shop"]);
        assert_eq!(code, 4, "{err}");
        assert!(err.contains(&owner), "{err}");
    }
    assert_eq!(snapshot(&env, "shop"), before, "a refusal changed the app");
}

#[test]
fn addon_attached_under_a_name_whose_var_another_addon_owns_is_refused() {
    // A hostile add-on that may also set HOSTILE_CACHE_URL: attached as X
    // that is X_CACHE_URL, the var kv owns when attached as X_CACHE.
    let env = Env::with_plugin_copies(&["hostile", "kv"], |name, m| {
        if name == "hostile" {
            m["api"]["config_vars"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!("HOSTILE_CACHE_URL"));
        }
    });
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &["--as", "x_cache"]);
    let before = snapshot(&env, "shop");
    let (code, err) = env.fails(&["addons:create", "hostile", "-a", "shop", "--as", "x"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("cannot attach as X: X_CACHE_URL is already set on the app by another add-on"),
        "{err}"
    );
    // The attachment name itself taken by another add-on: refused alike.
    let (code, err) = env.fails(&["addons:create", "hostile", "-a", "shop", "--as", "x_cache"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("attachment name X_CACHE is already used on this app"),
        "{err}"
    );
    assert_eq!(snapshot(&env, "shop"), before, "a refusal changed the app");
    // Under a free name it attaches, and kv's var is still kv's.
    env.create("hostile", "shop", &["--as", "y"]);
    let (code, _) = env.fails(&["config:set", "X_CACHE_URL=http://mine/", "-a", "shop"]);
    assert_eq!(code, 4);
}

#[test]
fn api_refuses_an_addons_var_with_409_and_force_true_takes_it_over() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[serde_json::json!({"plan": "kv:mini"})]);
    let owner = resource_named(&env, "shop", "KV");
    let url = server.kv_url("shop").url;
    let mine = serde_json::json!({"KV_URL": "redis://mine:6379"});

    let r = server.api("PATCH", "/api/apps/shop/config", Some(mine.clone()));
    assert_eq!(r.status, 409, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("KV_URL is set by add-on {owner}"))
            && message.contains("--force"),
        "{message}"
    );
    assert_eq!(server.kv_url("shop").url, url, "a refusal changed KV_URL");

    let r = server.api("PATCH", "/api/apps/shop/config?force=true", Some(mine));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["KV_URL"], "redis://mine:6379");
    let releases = server.api("GET", "/api/apps/shop/releases", None).json();
    assert_eq!(releases[0]["description"], "Set KV_URL");
    // The var is the user's now: the add-on's own writes to it are refused
    // (and logged), and it no longer counts among the add-on's vars.
    let r = server.api("POST", &format!("/api/addons/{owner}/rotate"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let config = server.api("GET", "/api/apps/shop/config", None).json();
    assert_eq!(config["KV_URL"], "redis://mine:6379");
    let info = server
        .api("GET", &format!("/api/addons/{owner}"), None)
        .json();
    assert_eq!(info["config_vars"], serde_json::json!([]), "{info}");
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
}

#[test]
fn api_answers_422_when_an_addon_answers_invalid_config_and_stores_nothing() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[]);
    for (attack, expect) in [
        ("bad-url", "config var HOSTILE_URL is not a valid URL"),
        (
            "unlisted-var",
            "config var DATABASE_URL is not in the manifest's api.config_vars",
        ),
    ] {
        let r = server.api(
            "POST",
            "/api/apps/shop/addons",
            Some(serde_json::json!({"plan": "hostile", "options": {"attack": attack}})),
        );
        assert_eq!(r.status, 422, "{attack}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("add-on hostile answered invalid config")
                && message.contains(expect)
                && message.contains("nothing was stored"),
            "{attack}: {message}"
        );
    }
    let app = "/api/apps/shop";
    assert_eq!(
        server.api("GET", &format!("{app}/config"), None).json(),
        serde_json::json!({})
    );
    assert_eq!(
        server.api("GET", &format!("{app}/addons"), None).json(),
        serde_json::json!([])
    );
    assert_eq!(
        server
            .api("GET", &format!("{app}/releases"), None)
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the app's first release"
    );
}

#[test]
fn each_refusal_exits_with_its_own_code() {
    let env = Env::new();
    env.ok(&["apps:create", "shop"]);
    env.create("kv", "shop", &[]);
    let before = snapshot(&env, "shop");
    let cases: [(&[&str], i32, &str); 8] = [
        // 2: invalid input.
        (
            &["config:set", "1BAD=x", "-a", "shop"],
            2,
            "config var name \"1BAD\" is invalid",
        ),
        (
            &["addons:create", "kv", "-a", "shop", "--as", "no way"],
            2,
            "attachment name \"no way\" is invalid",
        ),
        // 3: not found.
        (
            &["config:set", "A=1", "-a", "nowhere"],
            3,
            "app \"nowhere\" not found",
        ),
        (
            &["addons:create", "kv:platinum", "-a", "shop"],
            3,
            "add-on kv has no plan \"platinum\"",
        ),
        (
            &["addons:rotate", "NOPE", "-a", "shop"],
            3,
            "add-on \"NOPE\" not found on app shop",
        ),
        // 4: conflict.
        (
            &["config:set", "KV_URL=http://mine/", "-a", "shop"],
            4,
            "KV_URL is set by add-on",
        ),
        (
            &["addons:create", "kv", "-a", "shop", "--as", "kv"],
            4,
            "attachment name KV is already used on this app",
        ),
        // 5: the add-on failed.
        (
            &[
                "addons:create",
                "hostile",
                "-a",
                "shop",
                "--",
                "--attack",
                "bad-url",
            ],
            5,
            "add-on hostile answered invalid config: config var HOSTILE_URL is not a valid URL",
        ),
    ];
    for (args, code, message) in cases {
        let r = env.run(args);
        assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{args:?}: {}", r.stderr);
    }
    assert_eq!(snapshot(&env, "shop"), before, "a refusal changed the app");
}
