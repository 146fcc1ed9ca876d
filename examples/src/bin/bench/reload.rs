//! Hot-reload swap latency under load: how long from a component file
//! replaced to the new version serving, while a client reads without pause.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;

use crate::platform::{Conn, Server};

/// A copy of `component` made different by a trailing custom section, so it
/// hashes (and compiles) as a new version.
pub fn variant(component: &[u8], n: u64) -> Vec<u8> {
    use wasm_encoder::{Encode, Section};
    let section = wasm_encoder::CustomSection {
        name: "addonhost-bench".into(),
        data: n.to_le_bytes().to_vec().into(),
    };
    let mut out = component.to_vec();
    out.push(section.id());
    section.encode(&mut out);
    out
}

/// What [`hot_reload`] measured: file renamed → `/api/plugins` shows the new
/// hash, for new versions and for versions already compiled; reads served
/// and failed meanwhile.
pub struct Reloads {
    pub compiled: Vec<Duration>,
    pub cached: Vec<Duration>,
    pub served: u64,
    pub failed: u64,
}

/// Hot reload under load: a client reads a kv key over HTTP without pause
/// while the component is replaced, `reloads` times by new versions and as
/// many times by versions already compiled.
pub fn hot_reload(server: &Server, plugin_dir: &Path, reloads: u64) -> anyhow::Result<Reloads> {
    let auth = server.auth();
    let mut api = Conn::connect(&server.addr)?;
    let (s, _) = api.request(
        "POST",
        "/api/apps",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"name": "reload"}"#,
    )?;
    if s != 201 {
        bail!("creating the app: {s}");
    }
    let (s, _) = api.request(
        "POST",
        "/api/apps/reload/addons",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"plan": "kv:mini"}"#,
    )?;
    if s != 201 {
        bail!("provisioning kv: {s}");
    }
    let (_, config) = api.get("/api/apps/reload/config", &[("authorization", &auth)])?;
    let config: serde_json::Value = serde_json::from_slice(&config)?;
    let url = config["KV_URL"].as_str().context("KV_URL")?.to_string();
    let parsed = url::Url::parse(&url)?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            parsed.username(),
            parsed.password().unwrap_or("")
        ))
    );
    let key_path = format!("{}/k", parsed.path());
    let (s, _) = api.request("PUT", &key_path, &[("authorization", &basic)], b"v")?;
    if !(200..300).contains(&s) {
        bail!("writing a key: {s}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = server.addr.clone();
        std::thread::spawn(move || {
            let mut conn = Conn::connect(&addr).ok();
            while !stop.load(Ordering::Relaxed) {
                let r = conn
                    .as_mut()
                    .map(|c| c.get(&key_path, &[("authorization", &basic)]));
                match r {
                    Some(Ok((200, body))) if body == b"v" => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        conn = Conn::connect(&addr).ok();
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let component = plugin_dir.join("kv.wasm");
    let original = std::fs::read(&component)?;
    let mut swaps = Vec::new();
    // `reloads` new versions (each compiled on arrival), then as many
    // switches back to versions already compiled (cache hits): the second
    // half measures the swap itself.
    let mut cached = Vec::new();
    for step in 1..=2 * reloads {
        let n = if step <= reloads { step } else { 1 + step % 2 };
        let bytes = variant(&original, n);
        let hash = &addonhost::runtime::cache::content_hash(&bytes)[..16];
        let tmp = plugin_dir.join("kv.wasm.tmp");
        std::fs::write(&tmp, &bytes)?;
        let t = Instant::now();
        std::fs::rename(&tmp, &component)?;
        loop {
            let (_, body) = api.get("/api/plugins", &[("authorization", &auth)])?;
            if String::from_utf8_lossy(&body).contains(hash) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("reload {step} did not happen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if step <= reloads {
            swaps.push(t.elapsed());
        } else {
            cached.push(t.elapsed());
        }
        // A new version serves from the quick tier first; the next change
        // comes once its optimized build has replaced it (as saves in
        // development do, seconds apart), so each swap is timed alone.
        let settled = Instant::now();
        loop {
            let (_, body) = api.get("/api/plugins", &[("authorization", &auth)])?;
            let list: serde_json::Value = serde_json::from_slice(&body)?;
            let quick = list
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["id"] == "kv" && p["origin"] == "quick");
            if !quick {
                break;
            }
            if settled.elapsed() > Duration::from_secs(30) {
                bail!("reload {step}: the optimized build did not arrive within 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
    Ok(Reloads {
        compiled: swaps,
        cached,
        served: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    })
}
