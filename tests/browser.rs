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
    let on_platform = format!("{base}/addons/hostile/attack{query}");
    let own_origin = format!("http://hostile.localhost:{port}/attack{query}");
    let headers_on_platform = format!("raw:{base}/addons/hostile/headers");
    let out = Command::new("node")
        .arg(dir.join("attack.mjs"))
        .args([&base, &server.token, "shop", "HOSTILE"])
        .args([&on_platform, &own_origin, "sso", &headers_on_platform])
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
    assert_eq!(report.len(), 5, "{report:?}");
    for (page, result) in &report {
        if page == "cookies" {
            continue;
        }
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
    // The browser held the dashboard's session cookie for the platform's
    // origin all along, so every request there could have carried it.
    assert!(
        report["cookies"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|c| c == "addonhost_session"),
        "{report:?}"
    );

    // On the platform's origin the page is sandboxed: its script never ran.
    assert_eq!(report[&on_platform], "not run", "{report:?}");
    // Opened there with the session cookie, the add-on saw no cookie.
    // (The browser shows JSON as text, perhaps beside a control of its own.)
    let raw = report[&headers_on_platform].as_str().unwrap();
    let json = &raw[raw.find('{').unwrap_or(0)..raw.rfind('}').map_or(raw.len(), |i| i + 1)];
    let seen: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {report:?}"));
    assert!(
        seen["user-agent"]
            .as_str()
            .unwrap_or("")
            .contains("HeadlessChrome"),
        "the record is the browser's request: {seen}"
    );
    assert!(seen.get("cookie").is_none(), "{seen}");

    // On its own origin, opened directly and as the SSO landing, the script
    // ran — it reported every attempt — and every attempt failed.
    let sso = report
        .keys()
        .find(|k| {
            k.starts_with(&format!(
                "sso -> http://hostile.localhost:{port}/dashboard/"
            ))
        })
        .unwrap_or_else(|| panic!("SSO lands on the add-on's own origin: {report:?}"));
    for page in [&own_origin, sso] {
        let result = report[page.as_str()].as_str().unwrap();
        let tried: serde_json::Value = serde_json::from_str(result)
            .unwrap_or_else(|_| panic!("the attack script did not run at {page}: {result}"));
        let said = |k: &str| {
            tried[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k:?} at {page}: {tried}"))
                .to_string()
        };
        // Its own origin's `/apps/shop` is the add-on's, not the dashboard.
        assert!(
            said("same-origin app page").starts_with("404 "),
            "{page}: {tried}"
        );
        // The platform's pages and API are another origin: not readable.
        for k in ["platform app page", "platform api"] {
            assert!(said(k).starts_with("blocked: "), "{page}: {k}: {tried}");
        }
        // The state-changing request went out, blind (and changed nothing:
        // the releases below).
        assert_eq!(said("rotate"), "sent (opaque)", "{page}: {tried}");
        // Its script reads no session cookie: they are HttpOnly (what it
        // may read is the platform's nav data, `heroku-nav-data`).
        assert!(!said("cookie").contains("addonhost"), "{page}: {tried}");
        // What reached the add-on: the browser's request, with no cookie
        // (not even the add-on's own session cookie) and no token.
        let forwarded: serde_json::Value =
            serde_json::from_str(&said("headers seen by the add-on"))
                .unwrap_or_else(|e| panic!("{page}: {e}: {tried}"));
        assert_eq!(
            forwarded["referer"]
                .as_str()
                .map(|r| r.starts_with(&format!("http://hostile.localhost:{port}/"))),
            Some(true),
            "the record is this page's request: {forwarded}"
        );
        assert!(forwarded.get("cookie").is_none(), "{page}: {forwarded}");
        assert!(
            forwarded.get("authorization").is_none(),
            "{page}: {forwarded}"
        );
    }
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
