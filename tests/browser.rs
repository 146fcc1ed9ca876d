//! The dashboard and SSO in a real browser (headless Chromium via
//! playwright-core): sign in, open an app, reveal a masked value, follow the
//! kv add-on's SSO link, land on its dashboard. Screenshots go to target/.
//! tests/run.sh installs Debian's chromium and the npm package first.

mod support;

use std::process::Command;

use serde_json::json;
use support::*;

#[test]
fn browser_signs_in_and_follows_sso_to_the_addon_dashboard() {
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser toolchain is missing: run tests/run.sh (it installs chromium and playwright-core)"
    );
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    // One key, so the add-on's dashboard has something to show.
    let put = server.kv_put(&server.kv_url("shop"), "greeting", b"hi");
    assert_eq!(put.status, 201);

    let shots = root().join("target");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&server.token)
        .arg("shop")
        .arg(&shots)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SSO into kv-"), "{stdout}");
    assert!(shots.join("addon-dashboard.png").is_file());
}

/// A page served by an add-on, opened by a user signed in to the dashboard,
/// runs a script that goes after the platform: it may not read any dashboard
/// page or API answer, nor make a state-changing request succeed, and the
/// add-on never sees the platform's cookies or token. Tried on every route
/// an add-on page can be reached by: its resource route on the platform's
/// address, its own origin, and its SSO landing.
#[test]
fn a_hostile_add_on_page_cannot_read_or_change_the_dashboard() {
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser toolchain is missing: run tests/run.sh (it installs chromium and playwright-core)"
    );
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with(
        "shop",
        &[
            json!({"plan": "kv:mini"}),
            json!({"plan": "hostile", "options": {"sso": "yes"}}),
        ],
    );
    let secret = server.kv_url("shop").password;
    let releases = || {
        server
            .api("GET", "/api/apps/shop/releases", None)
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let before = releases();
    let base = format!("http://{}", server.addr);
    let port = server.addr.rsplit(':').next().unwrap();
    let query = format!("?app=shop&platform={base}");
    let out = Command::new("node")
        .arg(dir.join("attack.mjs"))
        .args([&base, &server.token, "shop", "HOSTILE"])
        .arg(format!("{base}/addons/hostile/attack{query}"))
        .arg(format!("http://hostile.localhost:{port}/attack{query}"))
        .arg("sso")
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report.len(), 3, "{report:?}");
    for (page, result) in &report {
        let result = result.as_str().unwrap();
        eprintln!("{page}: {}", &result[..result.len().min(600)]);
        for leak in [
            secret.as_str(),
            "app-name",
            "KV_URL",
            "addonhost_session",
            server.token.as_str(),
        ] {
            assert!(
                !result.contains(leak),
                "the page at {page} got {leak:?}: {result}"
            );
        }
    }
    assert!(
        report
            .keys()
            .any(|k| k.starts_with("sso -> http://hostile.localhost:")),
        "SSO lands on the add-on's own origin: {report:?}"
    );
    assert_eq!(releases(), before, "a page of the add-on made a release");
}
