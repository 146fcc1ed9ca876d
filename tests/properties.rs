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

#[test]
fn api_request_bodies_never_make_the_server_answer_500() {
    let env = support::Env::new();
    let server = support::Server::start(&env);
    server.api("POST", "/api/apps", Some(json!({"name": "shop"})));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    const ROUTES: &[(&str, &str)] = &[
        ("POST", "/api/apps"),
        ("POST", "/api/apps/shop/addons"),
        ("PATCH", "/api/apps/shop/config"),
    ];
    runner
        .run(
            &(
                prop::sample::select(ROUTES),
                json_value(),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            |((method, path), value, junk)| {
                let auth = format!("Bearer {}", server.token);
                for body in [value.to_string().into_bytes(), junk.clone()] {
                    let r = support::http::request(
                        &server.addr,
                        method,
                        path,
                        &[("authorization", &auth)],
                        &body,
                    );
                    prop_assert!(
                        r.status < 500,
                        "{} {} {:?} -> {} {}",
                        method,
                        path,
                        String::from_utf8_lossy(&body),
                        r.status,
                        r.text()
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(server.get("/healthz", &[]).status, 200);
}
