//! Hot reload in a running server and the compiled-artifact cache: swaps
//! under load lose no request, a broken plugin keeps the old version
//! serving, removed plugins go and come back, data survives, and a second
//! start compiles nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::http::request;
use crate::support::*;
use serde_json::{json, Value};

fn kv_env() -> Env {
    Env::with_plugin_copies(&["kv"], |_, _| {})
}

fn plugin_dir(env: &Env) -> std::path::PathBuf {
    std::path::Path::new(&env.plugins).join("kv")
}

/// Polls the server's plugin list until `ok` holds for kv's row (or None if
/// kv is gone).
fn wait_for(server: &Server, what: &str, ok: impl Fn(Option<&Value>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
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

/// Replaces kv's component with `bytes` (written then renamed, as a build
/// tool would).
fn replace_component(env: &Env, bytes: &[u8]) {
    let component = plugin_dir(env).join("kv.wasm");
    let tmp = component.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &component).unwrap();
}

/// kv's row in the server's plugin list.
fn kv_row(server: &Server) -> Value {
    let list = server.api("GET", "/api/plugins", None).json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "kv")
        .cloned()
        .unwrap_or(Value::Null)
}

/// What the load saw go wrong, request by request.
type Failures = Arc<std::sync::Mutex<Vec<String>>>;

/// `id`'s row in the server's plugin list.
fn plugin_row(server: &Server, id: &str) -> Value {
    let list = server.api("GET", "/api/plugins", None).json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The hostile add-on's component answering `/marker` with build `n`: the
/// digits of its marker rewritten in place (the same length: the component
/// stays valid; its code is unchanged, its data is not).
fn marked(component: &[u8], n: u32) -> Vec<u8> {
    let prefix = b"addonhost-build-marker:";
    let at: Vec<usize> = component
        .windows(prefix.len())
        .enumerate()
        .filter(|(_, w)| *w == prefix)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the marker is in the component once: {at:?}");
    let mut out = component.to_vec();
    let digits = format!("{n:09}");
    let start = at[0] + prefix.len();
    out[start..start + 9].copy_from_slice(digits.as_bytes());
    out
}

/// The build number a `/marker` answer names.
fn build_of(body: &str) -> Option<u32> {
    body.strip_prefix("addonhost-build-marker:")?.parse().ok()
}

/// Waits until the server lists, for each `(id, hash)`, a build other than
/// `hash` served from its optimized code; for each, the origins it was
/// listed with in order (the quick tier, then compiled or a cache hit) and
/// its new hash. Both are watched at once: one's quick tier can come and go
/// while the other compiles.
fn optimized_builds(
    server: &Server,
    old: &[(&str, Value)],
    what: &str,
) -> Vec<(Vec<String>, Value)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); old.len()];
    let mut done: Vec<Option<Value>> = vec![None; old.len()];
    // Optimized: compiled, or found in the cache when a second reload of
    // the same version (the other add-on's change seen at the same moment)
    // waited for the first one's compile.
    let optimized =
        |o: Option<&String>| matches!(o.map(String::as_str), Some("compiled" | "cache-hit"));
    while done.iter().any(Option::is_none) {
        let list = server.api("GET", "/api/plugins", None).json();
        for (i, (id, hash)) in old.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let row = list
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == *id)
                .cloned()
                .unwrap_or(Value::Null);
            assert!(
                row["error"].is_null(),
                "{what}: {id}'s new build was refused: {row}"
            );
            if row["component_hash"] != *hash {
                let origin = row["origin"].as_str().unwrap_or("none").to_string();
                if seen[i].last() != Some(&origin) {
                    seen[i].push(origin);
                }
                if optimized(seen[i].last()) {
                    done[i] = Some(row["component_hash"].clone());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: a new build never finished optimizing: {seen:?} {list}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    seen.into_iter()
        .zip(done.into_iter().map(Option::unwrap))
        .collect()
}

/// Clients asking the hostile add-on which build answers, each recording
/// the builds it saw in order.
struct MarkerClients {
    stop: Arc<AtomicBool>,
    /// Per client: the newest build it saw.
    latest: Vec<Arc<AtomicUsize>>,
    threads: Vec<std::thread::JoinHandle<Vec<u32>>>,
}

impl MarkerClients {
    fn start(server: &Server, n: usize, failures: &Failures) -> MarkerClients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut latest = Vec::new();
        let mut threads = Vec::new();
        for c in 0..n {
            let mine = Arc::new(AtomicUsize::new(0));
            latest.push(mine.clone());
            let (addr, stop, failures) = (server.addr.clone(), stop.clone(), failures.clone());
            let host = server.addon_host("hostile");
            threads.push(std::thread::spawn(move || {
                let mut builds = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = request(&addr, "GET", "/marker", &[("host", &host)], b"");
                    match (r.status, build_of(&r.text())) {
                        (200, Some(b)) => {
                            if builds.last() != Some(&b) {
                                builds.push(b);
                            }
                            mine.store(b as usize, Ordering::Relaxed);
                        }
                        _ => failures.lock().unwrap().push(format!(
                            "marker client {c}: {} {:?}",
                            r.status,
                            r.text()
                        )),
                    }
                }
                builds
            }));
        }
        MarkerClients {
            stop,
            latest,
            threads,
        }
    }

    /// Waits until every client has been answered by build `n`.
    fn wait_for(&self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .latest
            .iter()
            .any(|l| l.load(Ordering::Relaxed) < n as usize)
        {
            assert!(
                Instant::now() < deadline,
                "build {n} never answered every client"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the clients; the builds each saw, in order.
    fn stop(self) -> Vec<Vec<u32>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    }
}

#[test]
fn twenty_new_versions_under_continuous_load_fail_no_request_and_keep_data() {
    let env = Env::with_plugin_copies(&["kv", "hostile"], |_, _| {});
    let (server, auth, path, url) = setup(&env);
    let original = std::fs::read(plugin_dir(&env).join("kv.wasm")).unwrap();
    let hostile_wasm = std::path::Path::new(&env.plugins).join("hostile/hostile.wasm");
    let hostile_original = std::fs::read(&hostile_wasm).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures: Failures = Default::default();
    // Writes, reads back what it wrote, reads the key `setup` stored, and
    // provisions: every answer checked by its body, not only its status.
    let hammer = {
        let (addr, token, stop, done, failures) = (
            server.addr.clone(),
            server.token.clone(),
            stop.clone(),
            done.clone(),
            failures.clone(),
        );
        let (auth, path) = (auth.clone(), path.clone());
        std::thread::spawn(move || {
            let bearer = format!("Bearer {token}");
            let fail = |what: String| failures.lock().unwrap().push(what);
            // key → last value written and acknowledged.
            let mut written = std::collections::BTreeMap::new();
            // attachment → its URL, as the provisioning answered it.
            let mut provisioned = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match i % 5 {
                    4 => {
                        let name = format!("K{i}");
                        let body = json!({"plan": "kv:mini", "as": name});
                        let r = request(
                            &addr,
                            "POST",
                            "/api/apps/shop/addons",
                            &[("authorization", &bearer)],
                            body.to_string().as_bytes(),
                        );
                        let created = (r.status == 201)
                            .then(|| serde_json::from_slice::<Value>(&r.body).ok())
                            .flatten();
                        let var = format!("{name}_URL");
                        let answered = created.as_ref().and_then(|c| {
                            c["config"].as_array()?.iter().find_map(|p| {
                                (p[0] == var.as_str()).then(|| p[1].as_str().map(String::from))?
                            })
                        });
                        match answered {
                            Some(u)
                                if created.as_ref().unwrap()["addon"]["state"] == "provisioned" =>
                            {
                                provisioned.push((var, u))
                            }
                            _ => fail(format!("provision {name}: {} {}", r.status, r.text())),
                        }
                    }
                    _ => {
                        // 50 keys: within the mini plan's 100.
                        let (key, value) = (format!("h{}", i % 50), format!("value {i}"));
                        let put = request(
                            &addr,
                            "PUT",
                            &format!("{path}/{key}"),
                            &[("authorization", &auth)],
                            value.as_bytes(),
                        );
                        if !(200..300).contains(&put.status) {
                            fail(format!("PUT {key}: {} {}", put.status, put.text()));
                        } else {
                            written.insert(key.clone(), value.clone());
                        }
                        for (key, want) in [(key.as_str(), value.as_str()), ("k", "kept")] {
                            let get = request(
                                &addr,
                                "GET",
                                &format!("{path}/{key}"),
                                &[("authorization", &auth)],
                                b"",
                            );
                            if (get.status, get.text().as_str()) != (200, want) {
                                fail(format!(
                                    "GET {key}: {} {:?}, expected {want:?}",
                                    get.status,
                                    get.text()
                                ));
                            }
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            (written, provisioned)
        })
    };
    // Three more clients asking the hostile add-on which build answers:
    // each new build of it answers with its own number.
    let markers = MarkerClients::start(&server, 3, &failures);
    markers.wait_for(0);
    // Each round a new build of kv (another content hash) and of hostile
    // (another answer): each must serve from the quick tier first, then
    // from its optimized build, while the load runs; the round ends once
    // every marker client has been answered by hostile's new build.
    let mut hash = kv_row(&server)["component_hash"].clone();
    let mut hostile_hash = plugin_row(&server, "hostile")["component_hash"].clone();
    let mut origins = Vec::new();
    for round in 1..=20 {
        let served_before = done.load(Ordering::Relaxed);
        replace_component(&env, &variant(&original, &format!("reload {round}")));
        let tmp = hostile_wasm.with_extension("wasm.tmp");
        std::fs::write(&tmp, marked(&hostile_original, round)).unwrap();
        std::fs::rename(&tmp, &hostile_wasm).unwrap();
        let mut builds = optimized_builds(
            &server,
            &[("kv", hash.clone()), ("hostile", hostile_hash.clone())],
            &format!("round {round}"),
        )
        .into_iter();
        let (seen, h) = builds.next().unwrap();
        origins.push(seen);
        hash = h;
        let (seen, h) = builds.next().unwrap();
        origins.push(seen);
        hostile_hash = h;
        markers.wait_for(round);
        assert!(
            done.load(Ordering::Relaxed) > served_before,
            "round {round}: no request ran during the swaps"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let builds = markers.stop();
    let (written, provisioned) = hammer.join().unwrap();
    let done = done.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    println!(
        "{done} kv requests across 20 new versions, {} failed; builds each marker client saw: {builds:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests, the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    for (i, seen) in origins.iter().enumerate() {
        assert!(
            seen.len() == 2 && seen[0] == "quick",
            "round {}: the origins {}'s new build was listed with: {seen:?}",
            i / 2 + 1,
            ["kv", "hostile"][i % 2]
        );
    }
    // The builds advance: no client is answered by an older build after a
    // newer one, and each saw every build from the first to the last.
    for (c, seen) in builds.iter().enumerate() {
        assert_eq!(
            seen,
            &(0..=20).collect::<Vec<u32>>(),
            "marker client {c}: the builds that answered it, in order"
        );
    }
    assert!(
        !provisioned.is_empty(),
        "no provisioning ran during reloads"
    );
    // Everything written during the reloads reads back, and the add-ons
    // provisioned meanwhile keep the URLs they answered.
    let kv = KvUrl::parse(&url);
    for (key, value) in written
        .iter()
        .chain([(&"k".to_string(), &"kept".to_string())])
    {
        let get = request(
            &server.addr,
            "GET",
            &format!("{}/{key}", kv.path),
            &[("authorization", &kv.auth())],
            b"",
        );
        assert_eq!((get.status, get.text()), (200, value.clone()), "{key}");
    }
    let config = server.api("GET", "/api/apps/shop/config", None).json();
    assert_eq!(config["KV_URL"], url.as_str());
    for (var, u) in &provisioned {
        assert_eq!(config[var], u.as_str(), "{var}");
    }
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut provisioned_on_quick = false;
    // Optimized: compiled, or found in the cache when a second reload of
    // the same version asked again (it waits for the first's compile).
    let optimized =
        |o: Option<&String>| matches!(o.map(String::as_str), Some("compiled" | "cache-hit"));
    while !optimized(seen.last()) {
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
    assert_eq!(seen.len(), 2, "origins of the new version: {seen:?}");
    assert_eq!(seen[0], "quick", "origins of the new version: {seen:?}");
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
    let deadline = Instant::now() + Duration::from_secs(120);
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
        // Stopped by its 1 s deadline, not left to run: the bound is loose
        // enough for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    // Nothing of the failed provisions was stored.
    assert_eq!(
        server.api("GET", "/api/apps/victim/config", None).json(),
        json!({})
    );
}

#[test]
fn two_loads_of_one_new_component_compile_it_once() {
    // Two reload events for the same new component (a reload and the
    // optimize it started, or two bursts of one save) load it at once: one
    // compiles and stores it, the other waits and reads what was stored —
    // before, both compiled, and one failed to store its copy ("renaming …
    // No such file or directory").
    let env = kv_env();
    let bytes = std::fs::read(plugin_dir(&env).join("kv.wasm")).unwrap();
    let bytes = variant(&bytes, "compile-once");
    let dir = env.data().join("once-cache");
    let runtime = addonhost::runtime::Runtime::new(None).unwrap();
    let engine = runtime.engine().clone();
    let cache = addonhost::runtime::ArtifactCache::new(&dir);
    let hash = addonhost::runtime::content_hash(&bytes);
    let barrier = std::sync::Barrier::new(2);
    let origins: Vec<addonhost::runtime::Origin> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cache.load(&engine, &bytes, &hash).unwrap().1
                })
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let compiled = origins
        .iter()
        .filter(|o| **o == addonhost::runtime::Origin::Compiled)
        .count();
    assert_eq!(compiled, 1, "{origins:?}");
    assert!(origins.contains(&addonhost::runtime::Origin::CacheHit));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "one artifact and its sum, nothing left over: {files:?}"
    );
    assert!(files[0].ends_with(".cwasm") && files[1].ends_with(".sum"));
}
