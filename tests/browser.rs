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
