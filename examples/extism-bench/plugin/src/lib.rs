//! The kv example's `provision`, as an Extism plugin: the same steps and the
//! same host round trips (KV reads and writes, secure random bytes, the
//! clock, a log line), with Extism's JSON in/out instead of WIT types.

use extism_pdk::*;
use serde::{Deserialize, Serialize};

#[host_fn]
extern "ExtismHost" {
    fn kv_get(key: String) -> Vec<u8>;
    fn kv_set(key: String, value: Vec<u8>) -> Vec<u8>;
    fn random_bytes(n: u64) -> Vec<u8>;
    fn now() -> u64;
    fn info(message: String) -> Vec<u8>;
}

#[derive(Deserialize)]
pub struct Request {
    uuid: String,
    app: String,
    plan: String,
    options: Vec<(String, String)>,
    base_url: String,
}

#[derive(Serialize)]
pub struct Provisioned {
    id: String,
    config: Vec<(String, String)>,
    message: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Rotating {
    current: String,
    previous: Option<String>,
    previous_expires_at: Option<i64>,
    rotated_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Namespace {
    id: String,
    uuid: String,
    app: String,
    plan: String,
    base_url: String,
    password: Rotating,
    created_at: i64,
    grace_seconds: i64,
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn secret(len: usize) -> Result<String, Error> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in unsafe { random_bytes(64)? } {
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

fn hex_id(n: u64) -> Result<String, Error> {
    Ok(unsafe { random_bytes(n)? }
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn key_limit(plan: &str) -> Option<u64> {
    match plan {
        "mini" => Some(100),
        "pro" => Some(100_000),
        _ => None,
    }
}

fn url(ns: &Namespace) -> String {
    match ns.base_url.split_once("://") {
        Some((scheme, rest)) => format!(
            "{scheme}://{}:{}@{rest}/{}",
            ns.id, ns.password.current, ns.id
        ),
        None => format!(
            "http://{}:{}@{}/{}",
            ns.id, ns.password.current, ns.base_url, ns.id
        ),
    }
}

#[plugin_fn]
pub fn provision(Json(req): Json<Request>) -> FnResult<Json<Provisioned>> {
    let grace_seconds = match req.options.iter().find(|(k, _)| k == "grace_seconds") {
        None => 3600,
        Some((_, v)) => v.parse().map_err(|_| Error::msg("bad --grace_seconds"))?,
    };
    let limit = key_limit(&req.plan).ok_or_else(|| Error::msg("unknown plan"))?;
    let known = unsafe { kv_get(format!("uuid/{}", req.uuid))? };
    if !known.is_empty() {
        let id: String = serde_json::from_slice(&known)?;
        let ns: Namespace = serde_json::from_slice(&unsafe { kv_get(format!("ns/{id}"))? })?;
        return Ok(Json(Provisioned {
            id: ns.id.clone(),
            config: vec![("KV_URL".into(), url(&ns))],
            message: Some(format!("namespace {} (already provisioned)", ns.id)),
        }));
    }
    let ns = Namespace {
        id: format!("kv-{}", hex_id(6)?),
        uuid: req.uuid.clone(),
        app: req.app,
        plan: req.plan,
        base_url: req.base_url,
        password: Rotating {
            current: secret(32)?,
            previous: None,
            previous_expires_at: None,
            rotated_at: None,
        },
        created_at: unsafe { now()? } as i64,
        grace_seconds,
    };
    unsafe {
        kv_set(format!("ns/{}", ns.id), serde_json::to_vec(&ns)?)?;
        kv_set(format!("uuid/{}", req.uuid), serde_json::to_vec(&ns.id)?)?;
        info(format!("created namespace {} for {}", ns.id, ns.app))?;
    }
    Ok(Json(Provisioned {
        id: ns.id.clone(),
        config: vec![("KV_URL".into(), url(&ns))],
        message: Some(format!(
            "namespace {} is ready ({limit} keys on {})",
            ns.id, ns.plan
        )),
    }))
}
