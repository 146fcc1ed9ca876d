//! The dashboard and SSO in a real browser (headless Chromium via
//! playwright-core): sign in, open an app, reveal a masked value, follow the
//! kv add-on's SSO link, land on its dashboard. Screenshots go to target/.
//! tests/run.sh installs Debian's chromium and the npm package first.

use std::process::Command;

use crate::support::*;
use serde_json::json;

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

/// A TLS-terminating proxy (tests/browser/tls-proxy.mjs) with a throwaway
/// certificate for `domain` and its subdomains; stopped when dropped.
struct TlsProxy {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    fn start(domain: &str) -> TlsProxy {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", &format!("/CN={domain}")])
            .args([
                "-addext",
                &format!("subjectAltName=DNS:{domain},DNS:*.{domain}"),
            ])
            .output()
            .expect("running openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut child = Command::new("node")
            .arg(root().join("tests/browser/tls-proxy.mjs"))
            .arg(&cert)
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running node");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the proxy's port");
        TlsProxy {
            child,
            stdin,
            port,
            _dir: dir,
        }
    }

    /// Sends what it receives to the server on 127.0.0.1:`port`.
    fn forward_to(&mut self, port: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{port}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two add-ons' origins under one `--addons-domain`, behind https: a page
/// of one sets the other's session cookie name with `Domain=<domain>` to
/// the attacker's own session, so that the victim would use the sibling
/// add-on as the attacker. The cookie is `__Host-` prefixed behind https:
/// no other origin can set it, and the planted unprefixed one is never
/// read.
#[test]
fn a_sibling_add_on_origin_cannot_plant_its_session_cookie_on_another() {
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser toolchain is missing: run tests/run.sh (it installs chromium and playwright-core)"
    );
    let domain = "addons.test";
    let mut proxy = TlsProxy::start(domain);
    let base = format!("https://{domain}:{}", proxy.port);
    let env = Env::new();
    let server = Server::start_with(
        env.command(&[
            "serve",
            "--port",
            "0",
            "--url",
            &base,
            "--addons-domain",
            domain,
        ]),
        &env,
    );
    proxy.forward_to(server.port());
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    server.app_with("evil", &[json!({"plan": "kv:mini"})]);

    // The attacker signs in to the kv add-on of their own app.
    let platform = format!("{domain}:{}", proxy.port);
    let kv = format!("kv.{domain}:{}", proxy.port);
    let body = format!("token={}", server.token);
    let login = http::request(
        &server.addr,
        "POST",
        "/login",
        &[
            ("host", &platform),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(login.status, 303, "{}", login.text());
    let dashboard = login
        .cookies()
        .into_iter()
        .find(|c| c.contains("addonhost_session="))
        .unwrap();
    let page = http::request(
        &server.addr,
        "GET",
        "/myapps/evil/addons/KV",
        &[("host", &platform), ("cookie", &dashboard)],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let fields = form_fields(&page.text());
    let evil_ns = fields.iter().find(|(k, _)| k == "id").unwrap().1.clone();
    let signed = http::request(
        &server.addr,
        "POST",
        "/sso/login",
        &[
            ("host", &kv),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        http::form(&fields).as_bytes(),
    );
    assert_eq!(signed.status, 302, "{}", signed.text());
    let attacker_session = signed
        .cookies()
        .into_iter()
        .find_map(|c| {
            c.split_once('=')
                .filter(|(k, _)| k.ends_with("addonhost_sso_kv"))
                .map(|(_, v)| v.to_string())
        })
        .expect("the attacker's session");

    let out = Command::new("node")
        .arg(dir.join("cookies.mjs"))
        .args([&base, &server.token, "shop", "KV", "kv"])
        .arg(format!("https://hostile.{domain}:{}/attack", proxy.port))
        .arg(format!("https://{kv}/dashboard/{evil_ns}"))
        .arg(&attacker_session)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("{report:#}");
    // The planted session opened nothing: the victim is nobody there.
    assert_eq!(report["target"]["status"], 403, "{report:#}");
    assert!(
        !report["target"]["text"]
            .as_str()
            .unwrap()
            .contains(&evil_ns),
        "the victim sees the attacker's add-on: {report:#}"
    );
    // The victim's own sign-in works, with the prefixed, Secure cookie.
    let shop_ns = server.kv_url("shop").user;
    let landed = report["sso"]["url"].as_str().unwrap();
    assert!(
        landed.starts_with(&format!("https://{kv}/dashboard/{shop_ns}")),
        "{report:#}"
    );
    assert!(report["sso"]["text"].as_str().unwrap().contains(&shop_ns));
    let cookies = report["cookies"].as_array().unwrap();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == "__Host-addonhost_sso_kv"
                && c["secure"] == true
                && c["httpOnly"] == true),
        "{report:#}"
    );
}
