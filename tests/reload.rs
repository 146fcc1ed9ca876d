//! Hot reload in a running server and the compiled-artifact cache: swaps
//! under load lose no request, a broken plugin keeps the old version
//! serving, removed plugins go and come back, data survives, and a second
//! start compiles nothing.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::request;
use support::*;

fn kv_env() -> Env {
    Env::with_plugin_copies(&["kv"], |_, _| {})
}

fn plugin_dir(env: &Env) -> std::path::PathBuf {
    std::path::Path::new(&env.plugins).join("kv")
}

fn set_name(env: &Env, name: &str) {
    let path = plugin_dir(env).join("addon-manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["name"] = json!(name);
    // Write then rename, as an editor or build tool would.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, m.to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// Polls the server's plugin list until `ok` holds for kv's row (or None if
/// kv is gone).
fn wait_for(server: &Server, what: &str, ok: impl Fn(Option<&Value>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = server.api("GET", "/api/plugins", None).json();
        let kv = list.as_array().unwrap().iter().find(|p| p["id"] == "kv");
        if ok(kv) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The key `setup` wrote still reads back through the kv add-on's route.
fn assert_kept(server: &Server, auth: &str, path: &str) {
    let get = request(
        &server.addr,
        "GET",
        &format!("{path}/k"),
        &[("authorization", auth)],
        b"",
    );
    assert_eq!((get.status, get.text().as_str()), (200, "kept"));
}

fn setup(env: &Env) -> (Server, String, String, String) {
    let server = Server::start(env);
    server.app_with("shop", &[json!({"plan": "kv:mini"})]);
    let kv = server.kv_url("shop");
    let put = server.kv_put(&kv, "k", b"kept");
    assert_eq!(put.status, 201);
    let (auth, path) = (kv.auth(), kv.path.clone());
    (server, auth, path, kv.url)
}

#[test]
fn twenty_reloads_under_continuous_load_fail_no_request_and_keep_data() {
    let env = kv_env();
    let (server, auth, path, url) = setup(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hammer = {
        let (addr, token, stop, done, failed) = (
            server.addr.clone(),
            server.token.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
        );
        std::thread::spawn(move || {
            let bearer = format!("Bearer {token}");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = if i % 5 == 4 {
                    let body = format!(r#"{{"plan":"kv:mini","as":"K{i}"}}"#);
                    request(
                        &addr,
                        "POST",
                        "/api/apps/shop/addons",
                        &[("authorization", &bearer)],
                        body.as_bytes(),
                    )
                } else {
                    request(
                        &addr,
                        "GET",
                        &format!("{path}/k"),
                        &[("authorization", &auth)],
                        b"",
                    )
                };
                if !(200..300).contains(&r.status) {
                    eprintln!("failed request: {} {}", r.status, r.text());
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    for round in 0..20 {
        let name = format!("Key-Value Store r{round}");
        set_name(&env, &name);
        wait_for(&server, &name, |kv| {
            kv.is_some_and(|p| p["name"] == name.as_str() && p["status"] == "loaded")
        });
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{done} requests across 20 reloads, {failed} failed");
    assert!(
        done > 20,
        "the load should keep running through the reloads ({done})"
    );
    assert_eq!(failed, 0);
    // The plugin's KV and the app's config are untouched by reloads.
    let kv = KvUrl::parse(&url);
    let get = request(
        &server.addr,
        "GET",
        &format!("{}/k", kv.path),
        &[("authorization", &kv.auth())],
        b"",
    );
    assert_eq!(get.text(), "kept");
    assert_eq!(
        server.api("GET", "/api/apps/shop/config", None).json()["KV_URL"],
        url.as_str()
    );
}

#[test]
fn broken_component_keeps_the_old_version_serving_and_is_reported() {
    let env = kv_env();
    let (server, auth, path, _) = setup(&env);
    let wasm = plugin_dir(&env).join("kv.wasm");
    let good = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, b"\0asm garbage").unwrap();
    wait_for(&server, "the load error", |kv| {
        kv.is_some_and(|p| p["error"].is_string())
    });
    let kv = server.api("GET", "/api/plugins", None).json();
    assert_eq!(
        kv[0]["status"], "loaded",
        "the old version still counts as loaded: {kv}"
    );
    assert_eq!(
        server
            .get(&format!("{path}/k"), &[("authorization", &auth)])
            .status,
        200
    );
    let session = server.sign_in();
    let page = server.get("/", &[("cookie", &session)]).text();
    assert!(
        page.contains("the previous version keeps serving"),
        "{page}"
    );
    std::fs::write(&wasm, good).unwrap();
    wait_for(&server, "recovery", |kv| {
        kv.is_some_and(|p| p["error"].is_null())
    });
}

#[test]
fn removed_plugin_goes_and_comes_back_with_its_addons_and_data() {
    let env = kv_env();
    let (server, auth, path, _) = setup(&env);
    let dir = plugin_dir(&env);
    let away = env.data().join("kv-away");
    std::fs::rename(&dir, &away).unwrap();
    wait_for(&server, "removal", |kv| kv.is_none());
    assert_eq!(
        server
            .get(&format!("{path}/k"), &[("authorization", &auth)])
            .status,
        404
    );
    let addons = server.api("GET", "/api/apps/shop/addons", None).json();
    assert_eq!(
        addons.as_array().unwrap().len(),
        1,
        "the add-on stays in the store"
    );
    std::fs::rename(&away, &dir).unwrap();
    wait_for(&server, "return", |kv| {
        kv.is_some_and(|p| p["status"] == "loaded")
    });
    assert_kept(&server, &auth, &path);
}

#[test]
fn second_start_is_a_cache_hit_and_corrupt_entries_are_rebuilt() {
    let env = kv_env();
    let origin = || {
        env.json(&["plugins"])[0]["origin"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(origin(), "compiled");
    assert_eq!(origin(), "cache-hit");
    for entry in std::fs::read_dir(env.data().join("cache")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    assert_eq!(
        origin(),
        "compiled",
        "a corrupt entry is detected and rebuilt"
    );
    assert_eq!(origin(), "cache-hit");
    assert_eq!(env.json(&["plugins"])[0]["status"], "loaded");
}

/// `component` with a custom section appended: the same code, another
/// content hash (so a new version to compile).
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    use wasm_encoder::{Encode, Section};
    let section = wasm_encoder::CustomSection {
        name: "addonhost-test".into(),
        data: tag.as_bytes().into(),
    };
    let mut out = component.to_vec();
    out.push(section.id());
    section.encode(&mut out);
    out
}

#[test]
fn a_new_version_serves_from_the_quick_tier_then_from_its_optimized_build() {
    let env = kv_env();
    let (server, auth, path, _) = setup(&env);
    let component = plugin_dir(&env).join("kv.wasm");
    let before = server.api("GET", "/api/plugins", None).json()[0]["component_hash"].clone();
    let bytes = variant(&std::fs::read(&component).unwrap(), "v2");
    let tmp = component.with_extension("wasm.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &component).unwrap();

    // Every origin the new version is listed with, in order, while the old
    // one's data keeps being served.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut provisioned_on_quick = false;
    while seen.last().map(String::as_str) != Some("compiled") {
        assert!(Instant::now() < deadline, "never optimized: {seen:?}");
        let row = server.api("GET", "/api/plugins", None).json()[0].clone();
        if row["component_hash"] != before {
            let origin = row["origin"].as_str().unwrap_or("none").to_string();
            if seen.last() != Some(&origin) {
                seen.push(origin.clone());
            }
            if origin == "quick" && !provisioned_on_quick {
                // Quick-tier code provisions like the optimized one.
                let r = server.api(
                    "POST",
                    "/api/apps/shop/addons",
                    Some(json!({"plan": "kv:mini", "as": "QUICK"})),
                );
                assert_eq!(r.status, 201, "{}", r.text());
                provisioned_on_quick = true;
            }
        }
        assert_kept(&server, &auth, &path);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(seen, ["quick", "compiled"], "origins of the new version");
    assert!(provisioned_on_quick);
    assert!(server.api("GET", "/api/apps/shop/config", None).json()["QUICK_URL"].is_string());

    // The optimized build went to the cache: a restart compiles nothing.
    server.stop();
    let server = Server::start(&env);
    let row = server.api("GET", "/api/plugins", None).json()[0].clone();
    assert_eq!(row["origin"], "cache-hit");
    assert_ne!(row["component_hash"], before);
}

/// Replaces `name`'s component with a new version and waits until the
/// server lists it as served from the quick tier.
fn new_version_on_quick_tier(env: &Env, server: &Server, name: &str) {
    let dir = std::path::Path::new(&env.plugins).join(name);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("addon-manifest.json")).unwrap())
            .unwrap();
    let component = dir.join(manifest["component"].as_str().unwrap());
    let bytes = variant(&std::fs::read(&component).unwrap(), "quick");
    let tmp = component.with_extension("wasm.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &component).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = server.api("GET", "/api/plugins", None).json();
        let row = list.as_array().unwrap().iter().find(|p| p["id"] == name);
        if row.is_some_and(|r| r["origin"] == "quick") {
            return;
        }
        assert!(Instant::now() < deadline, "never on the quick tier: {list}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn quick_tier_code_is_held_to_the_same_deadline_and_memory_cap() {
    let env = Env::with_plugin_copies(&["hostile"], |_, _| {});
    let server = Server::start(&env);
    assert_eq!(
        server
            .api("POST", "/api/apps", Some(json!({"name": "victim"})))
            .status,
        201
    );
    for (attack, expect) in [
        ("loop", "timed out after 1000 ms"),
        ("memory", "memory limit of 32 MiB"),
    ] {
        new_version_on_quick_tier(&env, &server, "hostile");
        let started = Instant::now();
        let r = server.api(
            "POST",
            "/api/apps/victim/addons",
            Some(json!({"plan": "hostile:test", "options": {"attack": attack}})),
        );
        assert!(r.status >= 400, "{attack}: {} {}", r.status, r.text());
        assert!(r.text().contains(expect), "{attack}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // Nothing of the failed provisions was stored.
    assert_eq!(
        server.api("GET", "/api/apps/victim/config", None).json(),
        json!({})
    );
}
