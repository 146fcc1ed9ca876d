//! Row 1c of `bench`: instantiate + one `provision` of the kv logic as an
//! Extism plugin, a fresh instance per call from a `CompiledPlugin` (what
//! addonhost does with an `InstancePre`), with the same host round trips as
//! the kv component: KV get/set, secure random bytes, the clock, a log line.
//! Prints `{"median_ns": …, "p99_ns": …}` for `bench` to put in its table.
//!
//! Usage: extism-bench PLUGIN.wasm CALLS

use std::collections::HashMap;
use std::time::{Duration, Instant};

use extism::{host_fn, CompiledPlugin, Manifest, Plugin, PluginBuilder, UserData, Wasm, PTR};

type Kv = HashMap<String, Vec<u8>>;

host_fn!(kv_get(user_data: Kv; key: String) -> Vec<u8> {
    let kv = user_data.get()?;
    let kv = kv.lock().unwrap();
    Ok(kv.get(&key).cloned().unwrap_or_default())
});

host_fn!(kv_set(user_data: Kv; key: String, value: Vec<u8>) -> Vec<u8> {
    let kv = user_data.get()?;
    kv.lock().unwrap().insert(key, value);
    Ok(Vec::new())
});

host_fn!(random_bytes(n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; n as usize];
    getrandom::fill(&mut buf).map_err(|e| extism::Error::msg(e.to_string()))?;
    Ok(buf)
});

host_fn!(now() -> u64 {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
});

host_fn!(info(_message: String) -> Vec<u8> { Ok(Vec::new()) });

fn main() -> Result<(), extism::Error> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: extism-bench PLUGIN.wasm CALLS");
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let bytes = std::fs::read(&path)?;
    let kv = UserData::new(Kv::new());
    let builder = PluginBuilder::new(Manifest::new([Wasm::data(bytes)]))
        .with_wasi(false)
        .with_function("kv_get", [PTR], [PTR], kv.clone(), kv_get)
        .with_function("kv_set", [PTR, PTR], [PTR], kv.clone(), kv_set)
        .with_function(
            "random_bytes",
            [PTR],
            [PTR],
            UserData::new(()),
            random_bytes,
        )
        .with_function("now", [], [PTR], UserData::new(()), now)
        .with_function("info", [PTR], [PTR], UserData::new(()), info);
    let compiled = CompiledPlugin::new(builder)?;
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        // A fresh KV per call, as addonhost's bench gives each call.
        kv.get()?.lock().unwrap().clear();
        let request = format!(
            r#"{{"uuid":"00000000-0000-4000-8000-{i:012}","app":"bench","plan":"mini","options":[],"base_url":"http://127.0.0.1:5000/addons/kv"}}"#
        );
        let start = Instant::now();
        let mut plugin = Plugin::new_from_compiled(&compiled)?;
        let out: String = plugin.call("provision", request.as_str())?;
        // Tearing the instance down is part of a fresh-instance call, as in
        // the other two measurements.
        drop(plugin);
        let elapsed = start.elapsed();
        assert!(out.contains("KV_URL"), "{out}");
        if i >= n / 10 {
            times.push(elapsed);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!(
        "{}",
        serde_json::json!({"median_ns": median.as_nanos() as u64, "p99_ns": p99.as_nanos() as u64})
    );
    Ok(())
}
