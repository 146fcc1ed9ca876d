//! Property tests: no input makes the host panic or answer a 500 — manifests,
//! config var names and values, attachment names, SSO form fields, API
//! request bodies. (Longer fuzzing runs: see host/fuzz.)

use crate::support;

use std::path::Path;

use addonhost::manifest::Manifest;
use addonhost::platform::{naming, sso::login_from_fields, validate};
use addonhost::sso::{self, MAX_AGE_SECONDS, MAX_SKEW_SECONDS};
use proptest::prelude::*;
use serde_json::{json, Value};

const GOOD: &str = r#"{
  "id": "kv", "name": "Key-Value Store",
  "api": {"config_vars_prefix": "KV", "config_vars": ["KV_URL"],
          "password": "0123456789abcdef0123456789abcdef",
          "sso_salt": "fedcba9876543210fedcba9876543210",
          "regions": ["*"], "requires": ["many_per_app"]},
  "plans": [{"id": "mini", "name": "Mini"}],
  "component": "kv.wasm",
  "limits": {"memory_mb": 32, "timeout_ms": 1000}
}"#;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[A-Z][A-Z0-9_]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Paths into the manifest a mutation may replace.
const PATHS: &[&[&str]] = &[
    &["id"],
    &["name"],
    &["api"],
    &["api", "config_vars_prefix"],
    &["api", "config_vars"],
    &["api", "password"],
    &["api", "sso_salt"],
    &["api", "regions"],
    &["api", "requires"],
    &["api", "username"],
    &["plans"],
    &["component"],
    &["limits"],
    &["limits", "memory_mb"],
    &["rotation"],
    &["rotation", "every_seconds"],
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manifest_parse_never_panics_on_arbitrary_text(text in ".{0,200}") {
        let _ = Manifest::parse(&text, Path::new("/p"));
    }

    #[test]
    fn manifest_mutations_are_rejected_with_a_named_field_or_accepted(
        path in prop::sample::select(PATHS), value in json_value()
    ) {
        let mut m: Value = serde_json::from_str(GOOD).unwrap();
        let mut target = &mut m;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        if target.is_object() {
            target[path[path.len() - 1]] = value;
        }
        match Manifest::parse(&m.to_string(), Path::new("/p")) {
            Ok(parsed) => {
                let prefix = format!("{}_", parsed.api.config_vars_prefix);
                let all_prefixed = parsed.api.config_vars.iter().all(|v| v.starts_with(&prefix));
                prop_assert!(all_prefixed);
                prop_assert_eq!(parsed.plans.iter().filter(|p| p.default).count(), 1);
            }
            Err((field, rule)) => {
                prop_assert!(!field.is_empty() && !rule.is_empty());
            }
        }
    }

    #[test]
    fn config_values_validate_without_panicking(name in ".{0,40}", value in ".{0,200}") {
        let _ = validate::value_ok(&name, &value);
        let _ = validate::partner_id(&value);
    }

    #[test]
    fn attachment_names_are_normalised_to_the_var_alphabet(raw in ".{0,70}") {
        if let Ok(name) = naming::attachment_name(&raw) {
            prop_assert!(name.len() <= 60);
            prop_assert!(name.as_bytes()[0].is_ascii_uppercase());
            prop_assert!(name.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'));
        }
    }

    #[test]
    fn renaming_round_trips(prefix in "[A-Z][A-Z0-9]{0,6}", att in "[A-Z][A-Z0-9_]{0,10}", suffix in "_[A-Z0-9_]{1,8}") {
        let var = format!("{prefix}{suffix}");
        let on_app = naming::app_var(&var, &prefix, &att);
        prop_assert_eq!(naming::manifest_var(&on_app, &prefix, &att), Some(var));
    }

    #[test]
    fn sso_form_fields_never_panic(fields in prop::collection::vec((".{0,14}", ".{0,40}"), 0..14)) {
        let _ = login_from_fields(&fields);
    }

    #[test]
    fn random_sso_tokens_are_refused(token in "[0-9a-fA-F]{40}", age in -MAX_SKEW_SECONDS..=MAX_AGE_SECONDS) {
        // Timestamps inside the window, so the refusal can only come from
        // the token comparison.
        let now = addonhost::util::unix_now();
        let ts = now - age;
        let good = sso::token("kv-1", "salt", ts);
        prop_assume!(token.to_ascii_lowercase() != good);
        let resource_token = sso::token("uuid-1", "salt", ts);
        prop_assert_eq!(
            sso::check("kv-1", "uuid-1", &token, &resource_token, ts, "salt", now),
            Err(sso::Denied::BadToken)
        );
    }

    #[test]
    fn random_sso_resource_tokens_are_refused_beside_a_valid_token(
        resource_token in "[0-9a-fA-F]{40}", age in -MAX_SKEW_SECONDS..=MAX_AGE_SECONDS
    ) {
        let now = addonhost::util::unix_now();
        let ts = now - age;
        prop_assume!(resource_token.to_ascii_lowercase() != sso::token("uuid-1", "salt", ts));
        let token = sso::token("kv-1", "salt", ts);
        prop_assert_eq!(
            sso::check("kv-1", "uuid-1", &token, &resource_token, ts, "salt", now),
            Err(sso::Denied::BadResourceToken)
        );
    }

    #[test]
    fn forged_sso_forms_parse_and_are_refused_without_panicking(
        values in prop::collection::vec(".{0,40}", 4),
        hex_tokens in prop::collection::vec("[0-9a-f]{40}", 2),
        use_hex in any::<bool>(),
        offset in -(MAX_AGE_SECONDS + 100)..=(MAX_SKEW_SECONDS + 60),
        extra in prop::collection::vec((".{0,14}", ".{0,40}"), 0..4),
    ) {
        // Every field the platform posts, with forged values and a timestamp
        // near now: most forms are fresh, so the check reaches the tokens.
        let now = addonhost::util::unix_now();
        let ts = now + offset;
        let (token, resource_token) = if use_hex {
            (hex_tokens[0].clone(), hex_tokens[1].clone())
        } else {
            (values[2].clone(), values[3].clone())
        };
        let mut fields: Vec<(String, String)> = vec![
            ("id".into(), values[0].clone()),
            ("token".into(), token.clone()),
            ("resource_id".into(), values[1].clone()),
            ("resource_token".into(), resource_token),
            ("timestamp".into(), ts.to_string()),
        ];
        // Extra fields are passed through; a repeated name never overrides
        // the first value.
        fields.extend(extra);
        let login = login_from_fields(&fields).expect("a form with every field parses");
        prop_assert_eq!(login.timestamp, ts);
        prop_assume!(token.to_ascii_lowercase() != sso::token(&login.id, "salt", ts));
        let verdict = sso::check(
            &login.id,
            &login.resource_id,
            &login.token,
            &login.resource_token,
            login.timestamp,
            "salt",
            now,
        );
        let expected = if offset < -MAX_AGE_SECONDS {
            sso::Denied::Stale { age_seconds: -offset }
        } else if offset > MAX_SKEW_SECONDS {
            sso::Denied::Future { ahead_seconds: offset }
        } else {
            sso::Denied::BadToken
        };
        prop_assert_eq!(verdict, Err(expected));
    }
}

/// A string a hostile or careless client would send where a name, a plan
/// or a value goes: plausible names, near misses, unicode, control
/// characters, path tricks, and now and then a huge one.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,29}",
        2 => "[A-Z][A-Z0-9_]{0,40}",
        3 => ".{0,40}",
        1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]{1,8}",
        1 => "[a-z]{1,6}[\\x00\\n\\r\\t ][a-z]{0,6}",
        2 => prop::sample::select(vec![
            "", " ", "shop", "kv", "kv:mini", "KV", "KV_URL", "../..", "..%2f..", "%00",
            "a/b", "a?b#c", "\u{202e}gnp.exe", "\u{feff}shop", "ｓｈｏｐ", "ſhop", "SHOP",
            "DROP TABLE apps", "' OR 1=1 --", "<script>alert(1)</script>", "${jndi:x}",
            "🦀", "null", "true", "0", "-1", "9999999999999999999999", "LD_PRELOAD", "PATH",
            "ADDONHOST_DATA", "HOSTILE_SEEN", "kv:mini:extra", ":mini", "kv:", ":",
        ])
        .prop_map(str::to_string),
        1 => (1usize..4096, "[a-zA-Z0-9é🦀_]").prop_map(|(n, c)| c.repeat(n)),
        1 => (4096usize..300_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// A plan spec: the real ones, near misses, and hostile strings.
fn plan_spec() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "kv:mini", "kv:pro", "kv", "exceptions:dev", "exceptions", "exceptions:pro",
            "hostile", "hostile:test", "kv:nope", "nope:mini", "KV:MINI", "kv:mini ",
        ])
        .prop_map(str::to_string),
        2 => hostile_string(),
    ]
}

/// A uuid field: fresh and well formed, one every case shares (so retries
/// asking for something else meet it), the nil uuid, other spellings, junk.
fn uuid_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => any::<u128>().prop_map(|n| Value::from(uuid::Uuid::from_u128(n).to_string())),
        2 => Just(Value::from("6f1c1d4e-3a3b-4c5d-8e9f-0a1b2c3d4e5f")),
        1 => Just(Value::from("00000000-0000-0000-0000-000000000000")),
        1 => Just(Value::from("6F1C1D4E-3A3B-4C5D-8E9F-0A1B2C3D4E5F")),
        1 => Just(Value::from("{6f1c1d4e-3a3b-4c5d-8e9f-0a1b2c3d4e5f}")),
        2 => hostile_string().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

/// A config var name: the app's and its add-ons' real vars, reserved
/// names, near misses, hostile strings.
fn var_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "KV_URL", "CACHE_URL", "EXCEPTIONS_URL", "EXCEPTIONS_RETENTION_DAYS", "HOSTILE_URL",
            "DATABASE_URL", "PATH", "LD_PRELOAD", "ADDONHOST_X", "PYTHONPATH", "kv_url", "A",
        ])
        .prop_map(str::to_string),
        3 => "[A-Z][A-Z0-9_]{0,20}",
        2 => hostile_string(),
    ]
}

/// An attachment name (`as`): the app's own attachments (a clash), names
/// that make reserved vars, near misses, hostile strings.
fn attachment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "KV", "CACHE", "EXCEPTIONS", "HOSTILE", "kv", "cache", "my-cache", "Cache_2", "LD",
            "PATH", "PYTHON", "HTTP", "_X", "1X", "A B",
        ])
        .prop_map(str::to_string),
        3 => hostile_string(),
    ]
}

/// An optional field: absent, null, a hostile string, or the wrong type.
fn maybe(field: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => field.prop_map(|s| Some(Value::from(s))),
        1 => json_value().prop_map(Some),
    ]
}

/// A path segment as a client would put it in the URL, hostile or not
/// (within 1,000 characters: a longer URL is refused as such by the HTTP
/// layer, `414`, before any route sees it).
fn segment(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known),
        1 => hostile_string().prop_map(|s| {
            let s: String = s.chars().take(300).collect();
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        }),
    ]
}

/// One request of the JSON API that carries a body: (method, path, body).
fn api_request(addons: Vec<String>) -> impl Strategy<Value = (&'static str, String, Vec<u8>)> {
    let apps = vec!["shop".to_string(), "other".to_string()];
    let with = |mut m: serde_json::Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
        m
    };
    let create_app = (hostile_string(), maybe(hostile_string())).prop_map(move |(name, region)| {
        let m = with(serde_json::Map::new(), "region", region);
        let m = with(m, "name", Some(Value::from(name)));
        (
            "POST",
            "/api/apps".to_string(),
            Value::Object(m).to_string().into_bytes(),
        )
    });
    let create_addon = (
        segment(apps.clone()),
        plan_spec(),
        maybe(attachment()),
        prop_oneof![
            3 => prop::collection::btree_map(hostile_string(), hostile_string(), 0..4),
            // The hostile add-on's answers the platform must refuse.
            1 => prop::sample::select(vec![
                "trap", "bad-url", "bad-url-secret", "unlisted-var", "huge", "none",
            ])
            .prop_map(|attack| [("attack".to_string(), attack.to_string())].into()),
        ],
        prop_oneof![3 => Just(None), 2 => uuid_field().prop_map(Some)],
    )
        .prop_map(move |(app, plan, as_name, options, uuid)| {
            let m = with(serde_json::Map::new(), "plan", Some(Value::from(plan)));
            let m = with(m, "as", as_name);
            let m = with(m, "options", Some(json!(options)));
            let m = with(m, "uuid", uuid);
            (
                "POST",
                format!("/api/apps/{app}/addons"),
                Value::Object(m).to_string().into_bytes(),
            )
        });
    let set_config = (
        segment(apps),
        any::<bool>(),
        prop::collection::btree_map(
            var_name(),
            prop_oneof![3 => hostile_string().prop_map(Value::from), 1 => Just(Value::Null)],
            0..5,
        ),
    )
        .prop_map(|(app, force, vars)| {
            let query = if force { "?force=true" } else { "" };
            (
                "PATCH",
                format!("/api/apps/{app}/config{query}"),
                json!(vars).to_string().into_bytes(),
            )
        });
    let change_plan = (segment(addons), plan_spec()).prop_map(|(addon, plan)| {
        (
            "PATCH",
            format!("/api/addons/{addon}"),
            json!({ "plan": plan }).to_string().into_bytes(),
        )
    });
    // Bodies that are not the route's shape at all: any JSON, any bytes.
    let routes = vec![
        ("POST", "/api/apps"),
        ("POST", "/api/apps/shop/addons"),
        ("PATCH", "/api/apps/shop/config"),
        ("PATCH", "/api/addons/nope"),
    ];
    let junk = (
        prop::sample::select(routes),
        prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    )
        .prop_map(|((method, path), body)| (method, path.to_string(), body));
    prop_oneof![
        2 => create_app,
        4 => create_addon,
        4 => set_config,
        2 => change_plan,
        1 => junk,
    ]
}

/// Structurally valid bodies with hostile values, for every route of the
/// JSON API that takes a body, against a server with real add-ons: the
/// platform's code is reached (provisioning, renaming, config ownership,
/// plan changes), and nothing answers a 5xx or panics. Thousands of cases;
/// the run stays within about a minute in a debug build.
#[test]
fn api_request_bodies_never_make_the_server_answer_500() {
    let env = support::Env::new();
    let server = support::Server::start(&env);
    server.app_with(
        "shop",
        &[
            json!({"plan": "kv:mini"}),
            json!({"plan": "kv:mini", "as": "CACHE"}),
            json!({"plan": "exceptions:dev"}),
        ],
    );
    server.app_with("other", &[json!({"plan": "hostile"})]);
    let mut addons: Vec<String> = ["shop", "other"]
        .iter()
        .flat_map(|app| {
            server
                .api("GET", &format!("/api/apps/{app}/addons"), None)
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    addons.push("CACHE".into());
    let cases: u32 = std::env::var("ADDONHOST_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        // A failing case is shrunk against the live server; keep that short.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    });
    let auth = format!("Bearer {}", server.token);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<(String, u16), u32>::new());
    let started = std::time::Instant::now();
    runner
        .run(&api_request(addons), |(method, path, body)| {
            let r = support::http::request(
                &server.addr,
                method,
                &path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                &body,
            );
            let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            let path_shown: String = path.chars().take(200).collect();
            prop_assert!(
                r.status < 500,
                "{} {} {:?} -> {} {}",
                method,
                path_shown,
                shown,
                r.status,
                r.text()
            );
            // Every refusal names what was wrong.
            if r.status >= 400 {
                let message = serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_default();
                prop_assert!(
                    !message.trim().is_empty(),
                    "{} {} ({} bytes) -> {} without a message: {}",
                    method,
                    path_shown,
                    path.len(),
                    r.status,
                    r.text()
                );
            }
            let route = match (method, path.as_str()) {
                ("POST", "/api/apps") => "create app",
                ("POST", _) => "create add-on",
                ("PATCH", p) if p.starts_with("/api/addons/") => "change plan",
                _ => "set config",
            }
            .to_string();
            *statuses
                .lock()
                .unwrap()
                .entry((route, r.status))
                .or_default() += 1;
            Ok(())
        })
        .unwrap();
    let statuses = statuses.into_inner().unwrap();
    eprintln!("{cases} cases in {:?}: {statuses:?}", started.elapsed());
    // The platform's code was reached, not only the parser: add-ons were
    // provisioned, config was set, plans changed, and refusals came back.
    let count = |route: &str, status: u16| {
        statuses
            .get(&(route.to_string(), status))
            .copied()
            .unwrap_or(0)
    };
    if cases >= 1000 {
        for (route, status, least) in [
            ("create app", 201, 20),
            ("create add-on", 201, 20),
            ("set config", 200, 20),
            ("change plan", 200, 10),
        ] {
            assert!(
                count(route, status) >= least,
                "{route}: fewer than {least} answered {status}: {statuses:?}"
            );
        }
        for refused in [400, 404, 409, 422] {
            assert!(
                statuses.iter().any(|((_, s), _)| *s == refused),
                "no {refused} among {statuses:?}"
            );
        }
    }
    assert_eq!(server.get("/healthz", &[]).status, 200);
    let log = server.log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "the server panicked:\n{}",
        log.join("\n")
    );
}
