//! Writing add-ons in every language, through the commands an author runs:
//! `plugins:new` → `plugins:build` → `plugins:check` for Rust, Python and
//! JavaScript; `plugins:check` failing on broken Python and JavaScript
//! add-ons; `plugins:dev` rebuilding on save while `serve` hot-reloads; and
//! the Python (queue) and JavaScript (flags) examples through the same paths
//! as the Rust ones: CLI, config vars, HTTP with the credentials, rotation
//! with a grace window, plan limits, SSO into their dashboards, deprovision,
//! and the compiled-artifact cache.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::http::{basic, request};
use crate::support::*;
use serde_json::Value;

/// `plugins:new NAME --lang LANG --dir <env>/src`.
fn scaffold(env: &Env, lang: &str, name: &str) -> PathBuf {
    let parent = env.data().join("src");
    let out = env.ok(&[
        "plugins:new",
        name,
        "--lang",
        lang,
        "--dir",
        parent.to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("Created {name} ({lang})")), "{out}");
    parent.join(name)
}

/// `plugins:build DIR`; Rust scaffolds share the examples' target dir so
/// their dependencies compile once.
fn build(env: &Env, dir: &Path) -> Ran {
    let out = env
        .command(&["plugins:build", dir.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", root().join("plugins/target"))
        .output()
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(env: &Env, dir: &Path) -> (i32, Value) {
    let r = env.run(&["plugins:check", dir.to_str().unwrap(), "--json"]);
    let report =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    (r.code, report)
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| format!("{}: {}", c["name"].as_str().unwrap(), c["detail"]))
        .collect()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("addon-manifest.json")).unwrap())
        .unwrap()
}

#[test]
fn new_then_build_then_check_passes_in_every_language() {
    let env = Env::new();
    let mut secrets = Vec::new();
    for (lang, name) in [
        ("rust", "hello-rust"),
        ("python", "hello-python"),
        ("js", "hello-js"),
    ] {
        let dir = scaffold(&env, lang, name);
        assert!(dir.join("README.md").is_file());
        let m = manifest(&dir);
        assert_eq!(m["id"], name);
        for key in ["password", "sso_salt"] {
            let s = m["api"][key].as_str().unwrap().to_string();
            assert!(
                s.len() >= 32 && s.chars().all(|c| c.is_ascii_alphanumeric()),
                "{key}: {s}"
            );
            secrets.push(s);
        }
        let built = build(&env, &dir);
        assert_eq!(built.code, 0, "{lang}: {}", built.stderr);
        assert!(
            built.stderr.contains(&format!("==> {name} ({lang}) →")),
            "{}",
            built.stderr
        );
        let (code, report) = check(&env, &dir);
        assert_eq!(code, 0, "{lang}: {:?}", failed_checks(&report));
        assert_eq!(report["checks"].as_array().unwrap().len(), 14, "{report}");
    }
    let mut unique = secrets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        secrets.len(),
        "every scaffold gets fresh secrets"
    );

    // A name that cannot be an add-on id is refused, naming the rule.
    let r = env.run(&["plugins:new", "Bad_Name", "--lang", "js"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not a valid add-on name"), "{}", r.stderr);
}

#[test]
fn check_fails_on_broken_python_and_js_addons_naming_the_violation() {
    let env = Env::new();

    // Python: an SSO check that forgets freshness (it judges the timestamp
    // against itself) fails both freshness checks, and only those.
    let py = scaffold(&env, "python", "stale-sso");
    edit(
        &py.join("app.py"),
        "addonhost.check_login(login)",
        "addonhost.check_login(login, at=login.timestamp)",
    );
    assert_eq!(build(&env, &py).code, 0);
    let (code, report) = check(&env, &py);
    assert_eq!(code, 1);
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].starts_with("sso verify rejects a 6-minute-old timestamp"));
    assert!(failed[1].starts_with("sso verify rejects a 2-minute-future timestamp"));

    // JavaScript: a rotation that answers the same key fails the rotation
    // check, and only that.
    let js = scaffold(&env, "js", "same-key");
    edit(&js.join("index.js"), "r.key = secret(32);", "");
    assert_eq!(build(&env, &js).code, 0);
    let (code, report) = check(&env, &js);
    assert_eq!(code, 1);
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("rotate changes the credentials"),
        "{failed:?}"
    );

    // A Python syntax error fails the build, says where, and writes nothing.
    let broken = scaffold(&env, "python", "syntax-error");
    edit(&broken.join("app.py"), "def load(id):", "def load(id)");
    let r = build(&env, &broken);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("SyntaxError"), "{}", r.stderr);
    assert!(r.stderr.contains("componentize-py failed"), "{}", r.stderr);
    assert!(!broken.join("syntax-error.wasm").exists());
}

/// Collects a child's stderr lines in the background.
fn collect_stderr(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what} after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dev_rebuilds_on_save_and_the_running_server_hot_reloads_it() {
    let mut env = Env::new();
    let dir = scaffold(&env, "js", "live");
    assert_eq!(build(&env, &dir).code, 0);
    env.plugins = dir.to_str().unwrap().to_string();
    let server = Server::start(&env);
    server.app_with("shop", &[serde_json::json!({"plan": "live"})]);
    let url = env.config("shop")["LIVE_URL"].as_str().unwrap().to_string();
    let path = url.split(&server.addr).nth(1).unwrap().to_string();
    let fetch = || server.get(&path, &[]);
    assert_eq!(fetch().status, 200, "{}", fetch().text());
    assert!(fetch().json().get("version").is_none());

    let mut dev = KillOnDrop(
        env.command(&["plugins:dev", dir.to_str().unwrap()])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = collect_stderr(&mut dev.0);
    let seen = |needle: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    wait_until("the first build", Duration::from_secs(120), || {
        seen("✓ live built") == 1
    });

    // A save: plugins:dev rebuilds, the server swaps the new version in.
    edit(
        &dir.join("index.js"),
        "json(200, { id: r.id,",
        "json(200, { version: 2, id: r.id,",
    );
    let dev_log = log.clone();
    let _print_on_failure =
        scopeguard(move || eprintln!("plugins:dev said: {:#?}", dev_log.lock().unwrap()));
    wait_until("the new version to serve", Duration::from_secs(120), || {
        let r = fetch();
        if r.status != 200 {
            panic!("{}: {}\n{:?}", r.status, r.text(), log.lock().unwrap());
        }
        r.json().get("version") == Some(&Value::from(2))
    });
    assert_eq!(seen("✓ live built"), 2);

    // A broken save: the build fails and says so; the last good version
    // keeps serving, with the resource and its credentials intact.
    let good = std::fs::read(dir.join("live.wasm")).unwrap();
    edit(
        &dir.join("index.js"),
        "function config(r) {",
        "function config(r) {{",
    );
    wait_until("the failed build", Duration::from_secs(120), || {
        seen("✗ build failed") == 1
    });
    assert!(
        seen("the last good component keeps serving") == 1,
        "{:?}",
        log.lock().unwrap()
    );
    assert_eq!(std::fs::read(dir.join("live.wasm")).unwrap(), good);
    for _ in 0..5 {
        let r = fetch();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["version"], 2);
    }
    drop(dev);
    assert_eq!(env.config("shop")["LIVE_URL"], Value::from(url));
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` when dropped (also while unwinding from a failed assertion).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                if let Some(f) = self.0.take() {
                    f()
                }
            }
        }
    }
    Guard(Some(f))
}

/// A Python or JavaScript example's URL, parsed.
fn creds(url: &str) -> (String, String, String) {
    let u = KvUrl::parse(url);
    (u.user, u.password, u.path)
}

#[test]
fn python_and_js_examples_work_end_to_end_and_start_from_the_cache() {
    polyglot_built();
    let mut env = Env::new();
    env.plugins = polyglot_roots();

    // Every example compiles once; the second start is a cache hit for all.
    let origins = |env: &Env| -> Vec<(String, String)> {
        env.json(&["plugins"])
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["origin"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = origins(&env);
    let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["exceptions", "flags", "kv", "mailer", "queue"]);
    assert!(first.iter().all(|(_, o)| o == "compiled"), "{first:?}");
    let second = origins(&env);
    assert!(second.iter().all(|(_, o)| o == "cache-hit"), "{second:?}");
    let listing = env.ok(&["plugins"]);
    assert!(
        listing.contains("python") && listing.contains("js") && listing.contains("rust"),
        "{listing}"
    );

    let server = Server::start(&env);
    env.ok(&["apps:create", "shop"]);
    let created = env.ok(&["addons:create", "queue", "-a", "shop"]);
    assert!(
        created.contains("holds up to 1,000 waiting messages"),
        "{created}"
    );
    env.ok(&[
        "addons:create",
        "flags",
        "-a",
        "shop",
        "--",
        "--environment",
        "staging",
    ]);
    let config = env.config("shop");
    assert_eq!(config["FLAGS_ENVIRONMENT"], "staging");

    // --- the queue (Python) ---
    let queue_url = config["QUEUE_URL"].as_str().unwrap().to_string();
    let (user, password, path) = creds(&queue_url);
    let call = |method: &str, p: &str, auth: &str, body: &[u8]| {
        request(&server.addr, method, p, &[("authorization", auth)], body)
    };
    let auth = basic(&user, &password);
    for (i, msg) in ["one", "two", "three"].iter().enumerate() {
        let r = call("POST", &format!("{path}/messages"), &auth, msg.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["depth"], i + 1);
    }
    let popped = call("POST", &format!("{path}/messages/pop"), &auth, b"");
    assert_eq!(popped.json()["body"], "one");
    assert_eq!(call("GET", &path, &auth, b"").json()["depth"], 2);
    let wrong = call("GET", &path, &basic(&user, "wrong"), b"");
    assert_eq!(wrong.status, 401);

    // Rotation: a new password in QUEUE_URL; the old one still works
    // through the grace window.
    env.ok(&["addons:rotate", "QUEUE", "-a", "shop"]);
    let rotated = env.config("shop")["QUEUE_URL"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rotated, queue_url);
    let (_, new_password, new_path) = creds(&rotated);
    assert_eq!(new_path, path);
    assert_eq!(
        call("GET", &path, &basic(&user, &new_password), b"").status,
        200
    );
    assert_eq!(call("GET", &path, &auth, b"").status, 200, "grace window");

    // SSO lands on the queue's dashboard.
    let page = server.sso_page("shop", "QUEUE", "queue");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains(r#"<span id="depth">2</span>"#),
        "{}",
        page.text()
    );
    assert!(page.text().contains(r#"id="user">owner@addonhost.local<"#));

    // --- the flags (JavaScript) ---
    let flags_url = env.config("shop")["FLAGS_URL"]
        .as_str()
        .unwrap()
        .to_string();
    let (fuser, fpassword, fpath) = creds(&flags_url);
    let fauth = basic(&fuser, &fpassword);
    let put = |name: &str, on: bool| {
        call(
            "PUT",
            &format!("{fpath}/flags/{name}"),
            &fauth,
            format!(r#"{{"enabled": {on}}}"#).as_bytes(),
        )
    };
    for i in 0..10 {
        assert_eq!(put(&format!("flag-{i}"), i % 2 == 0).status, 201);
    }
    let full = put("flag-10", true);
    assert_eq!(
        full.status,
        507,
        "the free plan holds 10 flags: {}",
        full.text()
    );
    assert_eq!(put("flag-3", true).status, 200, "updating is not adding");
    let all = call("GET", &format!("{fpath}/flags"), &fauth, b"").json();
    assert_eq!(all.as_object().unwrap().len(), 10);
    assert_eq!(all["flag-3"], true);
    let bad = put("Bad Name", true);
    assert_eq!(bad.status, 400);

    // Plan limits are the add-on's rule: upgrade, add an 11th flag, and a
    // downgrade is refused with the add-on's message, nothing changed.
    env.ok(&["addons:upgrade", "FLAGS", "flags:team", "-a", "shop"]);
    assert_eq!(put("flag-10", true).status, 201);
    let before = snapshot(&env, "shop");
    let (code, err) = env.fails(&["addons:downgrade", "FLAGS", "flags:free", "-a", "shop"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("has 11 flags; the free plan allows 10"),
        "{err}"
    );
    assert_eq!(
        snapshot(&env, "shop"),
        before,
        "a refused downgrade changes nothing"
    );

    let page = server.sso_page("shop", "FLAGS", "flags");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("<code>flag-10</code>"),
        "{}",
        page.text()
    );
    assert!(page.text().contains("environment <strong>staging</strong>"));

    // Deprovision removes exactly the add-on's vars and its data.
    env.ok(&["addons:destroy", "FLAGS", "-a", "shop", "--confirm", "shop"]);
    let config = env.config("shop");
    assert!(!config.contains_key("FLAGS_URL") && !config.contains_key("FLAGS_ENVIRONMENT"));
    assert!(config.contains_key("QUEUE_URL"));
    assert_eq!(
        call("GET", &format!("{fpath}/flags"), &fauth, b"").status,
        401
    );
    env.ok(&["addons:destroy", "QUEUE", "-a", "shop", "--confirm", "shop"]);
    assert_eq!(
        call("GET", &path, &basic(&user, &new_password), b"").status,
        401
    );
    drop(server);
}

/// `plugins:dev --max-builds 1 DIR`: one development build; Rust ones share
/// the examples' target dir.
fn dev_build(env: &Env, dir: &Path) -> Ran {
    let out = env
        .command(&[
            "plugins:dev",
            dir.to_str().unwrap(),
            "--max-builds",
            "1",
            "--no-logs",
        ])
        .env("CARGO_TARGET_DIR", root().join("plugins/target"))
        .output()
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The detail of the provision check: the call's error as the author reads
/// it.
fn provision_error(env: &Env, dir: &Path) -> String {
    let (code, report) = check(env, dir);
    assert_eq!(code, 1);
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("provision returns"))
        .map(|c| c["detail"].as_str().unwrap().to_string())
        .unwrap()
}

/// The 1-based line of `needle` in `path`.
fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{} lacks {needle:?}", path.display()))
        + 1
}

#[test]
fn errors_point_at_the_authors_line_in_every_language() {
    let env = Env::new();

    // Rust: a panic names its line; a trap that is not a panic (here an
    // out-of-bounds access) names the function and line through the wasm
    // backtrace of the development build's line tables.
    let rs = scaffold(&env, "rust", "trap-rust");
    let lib = rs.join("src/lib.rs");
    edit(
        &lib,
        "    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {\n",
        "    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {\n        if req.plan == \"basic\" { out_of_bounds(); }\n",
    );
    std::fs::write(
        &lib,
        std::fs::read_to_string(&lib).unwrap()
            + "\n#[inline(never)]\nfn out_of_bounds() {\n    let p = std::hint::black_box(0xffff_fff0usize) as *const u64;\n    std::hint::black_box(unsafe { p.read_volatile() });\n}\n",
    )
    .unwrap();
    let built = dev_build(&env, &rs);
    assert_eq!(built.code, 0, "{}", built.stderr);
    assert!(
        built.stderr.contains("development build"),
        "{}",
        built.stderr
    );
    let error = provision_error(&env, &rs);
    let read_at = line_of(&lib, "p.read_volatile()");
    assert!(
        error.contains("out-of-bounds memory access")
            && error.contains("out_of_bounds")
            && error.contains(&format!("src/lib.rs:{read_at}")),
        "the trap names the author's function and line {read_at}: {error}"
    );
    edit(
        &lib,
        "out_of_bounds(); }",
        "panic!(\"no basic plan today\"); }",
    );
    assert_eq!(dev_build(&env, &rs).code, 0);
    let error = provision_error(&env, &rs);
    let panic_at = line_of(&lib, "no basic plan today");
    assert!(
        error.contains("no basic plan today") && error.contains(&format!("src/lib.rs:{panic_at}")),
        "{error}"
    );

    // Python, production build: the exception and the traceback's last
    // frames, with file, line and code.
    let py = scaffold(&env, "python", "trap-python");
    let app = py.join("app.py");
    edit(
        &app,
        "def save(r):",
        "def ratio(n):\n    return 10 / n\n\n\ndef save(r):",
    );
    edit(
        &app,
        "        known = store.get(f\"uuid/{request.uuid}\")",
        "        ratio(0)\n        known = store.get(f\"uuid/{request.uuid}\")",
    );
    assert_eq!(build(&env, &py).code, 0);
    let error = provision_error(&env, &py);
    let (div, call) = (line_of(&app, "return 10 / n"), line_of(&app, "ratio(0)"));
    assert!(
        error.contains("Python exception ZeroDivisionError: division by zero")
            && error.contains(&format!("at app.py:{div} in ratio: return 10 / n"))
            && error.contains(&format!("at app.py:{call} in provision: ratio(0)")),
        "{error}"
    );
    // The same from a development build.
    assert_eq!(dev_build(&env, &py).code, 0);
    assert_eq!(provision_error(&env, &py), error);

    // JavaScript, development build: the exception with its stack.
    let js = scaffold(&env, "js", "trap-js");
    let index = js.join("index.js");
    edit(
        &index,
        "function save(r) {",
        "function ratio(n) {\n  if (n === 0) throw new RangeError('n must not be 0');\n}\n\nfunction save(r) {",
    );
    edit(
        &index,
        "    const known = store.get(`uuid/${request.uuid}`);",
        "    ratio(0);\n    const known = store.get(`uuid/${request.uuid}`);",
    );
    assert_eq!(dev_build(&env, &js).code, 0);
    let error = provision_error(&env, &js);
    let (throw_at, call_at) = (
        line_of(&index, "throw new RangeError"),
        line_of(&index, "ratio(0);"),
    );
    assert!(
        error.contains("RangeError: n must not be 0")
            && error.contains(&format!("at ratio (index.js:{throw_at}:"))
            && error.contains(&format!("at provision (index.js:{call_at}:")),
        "{error}"
    );

    // A build error names the file and line, as the compiler does.
    edit(&app, "def ratio(n):", "def ratio(n)");
    let r = dev_build(&env, &py);
    let bad = line_of(&app, "def ratio(n)");
    assert!(
        r.stderr.contains("✗ build failed") && r.stderr.contains(&format!("app.py:{bad}")),
        "{}",
        r.stderr
    );
    edit(&index, "function ratio(n) {", "function ratio(n) {{");
    let r = dev_build(&env, &js);
    assert!(
        r.stderr.contains("✗ build failed") && r.stderr.contains("index.js:"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_rebuild_of_unchanged_sources_leaves_the_component_and_the_server_alone() {
    let mut env = Env::new();
    let py = scaffold(&env, "python", "same-python");
    assert_eq!(build(&env, &py).code, 0);
    env.plugins = env.data().join("src").to_str().unwrap().to_string();
    let server = Server::start(&env);
    let status = || server.api("GET", "/api/plugins", None).json()[0].clone();
    let before = status();
    assert_eq!(before["id"], "same-python");
    let stamp = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let component = py.join("same-python.wasm");
    let was = stamp(&component);
    let again = build(&env, &py);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("is up to date"), "{}", again.stderr);
    assert_eq!(stamp(&component), was, "the component was not rewritten");
    std::thread::sleep(Duration::from_millis(500));
    let after = status();
    assert_eq!(after["loaded_at"], before["loaded_at"], "no reload");
    assert_eq!(after["component_hash"], before["component_hash"]);

    // A change does rebuild, and the server loads it.
    edit(&py.join("app.py"), "not found\\n", "nothing here\\n");
    let changed = build(&env, &py);
    assert!(
        !changed.stderr.contains("is up to date"),
        "{}",
        changed.stderr
    );
    assert_ne!(stamp(&component), was);
}
