//! `plugins:check`: the examples conform; deliberately broken add-ons fail
//! with a message naming the violated check.

use crate::support::*;

fn check(env: &Env, dir: &std::path::Path, options: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["plugins:check", dir.to_str().unwrap(), "--json"];
    if !options.is_empty() {
        args.push("--");
        args.extend_from_slice(options);
    }
    let r = env.run(&args);
    (
        r.code,
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr)),
    )
}

/// The names of the failed checks, with their details.
fn failures(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every check `plugins:check` runs, in order.
const CHECKS: &[&str] = &[
    "manifest is valid",
    "component implements the addon world",
    "provision returns an id and valid manifest vars",
    "provision with the same uuid is idempotent",
    "change-plan moves to another plan",
    "rotate changes the credentials",
    "sso verify accepts a valid token",
    "sso verify rejects a wrong token",
    "sso verify rejects kensa's token=invalid",
    "sso verify rejects a wrong resource_token",
    "sso verify rejects a 6-minute-old timestamp",
    "sso verify rejects a 2-minute-future timestamp",
    "deprovision succeeds",
    "outbound requests go only to declared hosts",
];

fn assert_passes_every_check(env: &Env, name: &str) {
    let (code, report) = check(env, &root().join("plugins").join(name), &[]);
    assert_eq!(code, 0, "{name}: {report}");
    assert_eq!(report["passed"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS, "{name}");
}

#[test]
fn example_addons_pass_every_check() {
    let env = Env::new();
    for name in ["kv", "exceptions"] {
        assert_passes_every_check(&env, name);
    }
    let text = env.ok(&["plugins:check", root().join("plugins/kv").to_str().unwrap()]);
    assert!(
        text.contains("✓ sso verify rejects a 6-minute-old timestamp"),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("✓ sso verify rejects a wrong resource_token ")
                && l.ends_with(" denied: resource_token does not match")
        ),
        "{text}"
    );
    assert!(text.contains("14 of 14 checks passed"), "{text}");
}

#[test]
fn python_and_javascript_examples_pass_every_check() {
    polyglot_built();
    let env = Env::new();
    for name in ["queue", "flags"] {
        assert_passes_every_check(&env, name);
    }
}

#[test]
fn addon_that_ignores_resource_token_fails_that_check_only() {
    let env = Env::new();
    let hostile = root().join("tests/plugins/hostile");
    let (code, report) = check(&env, &hostile, &["--sso", "token-only"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        failures(&report),
        vec![(
            "sso verify rejects a wrong resource_token".to_string(),
            "the login was accepted".to_string()
        )]
    );
}

#[test]
fn broken_addons_fail_the_check_they_violate() {
    let env = Env::new();
    let hostile = root().join("tests/plugins/hostile");
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[],
            "sso verify accepts a valid token",
            "denied a valid login",
        ),
        (
            &["--attack", "bad-url"],
            "provision returns an id and valid manifest vars",
            "HOSTILE_URL",
        ),
        (
            &["--attack", "unlisted-var"],
            "provision returns an id and valid manifest vars",
            "DATABASE_URL",
        ),
        (
            &["--attack", "trap"],
            "provision returns an id and valid manifest vars",
            "panicked on purpose",
        ),
        (
            &["--rotate-fail", "true"],
            "rotate changes the credentials",
            "unreachable",
        ),
        (
            &["--sso", "yes"],
            "sso verify rejects a wrong token",
            "accepted",
        ),
    ];
    for (options, check_name, needle) in cases {
        let (code, report) = check(&env, &hostile, options);
        assert_eq!(code, 1, "{options:?}: {report}");
        let failed = failures(&report);
        assert!(
            failed
                .iter()
                .any(|(n, d)| n == check_name && d.contains(needle)),
            "{options:?}: expected {check_name:?} to fail with {needle:?}, got {failed:?}"
        );
    }
    // A manifest that breaks the rules, and a component that is not one.
    let broken = Env::with_plugin_copies(&["kv"], |_, m| {
        m["api"]["regions"] = serde_json::json!(["eu"])
    });
    let (code, report) = check(
        &broken,
        &std::path::Path::new(&broken.plugins).join("kv"),
        &[],
    );
    assert_eq!(code, 1);
    assert!(failures(&report)[0].1.contains("api.regions"), "{report}");
    let garbage = Env::with_plugin_copies(&["kv"], |_, _| {});
    let dir = std::path::Path::new(&garbage.plugins).join("kv");
    std::fs::write(dir.join("kv.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let (code, report) = check(&garbage, &dir, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failures(&report)[0].0,
        "component implements the addon world",
        "{report}"
    );
}
