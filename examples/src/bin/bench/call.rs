//! Plugin call overhead: one `provision` in a fresh instance, of the minimal
//! add-on (no host round trip) and of the kv example, (a) on bare wasmtime —
//! the best plain embedding of wasmtime 48: the pooling allocator with the
//! same slots and keep-resident settings as addonhost, copy-on-write memory
//! images, `InstancePre` + fresh `Store` + call, a WASI context only if the
//! guest calls WASI — and (b) through addonhost's runtime path (limits,
//! deadline with cooperative yields, stderr capture, capability dispatch,
//! error classification, metrics).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use addonhost::manifest::Limits;
use addonhost::runtime::bindings::addonhost::addon::{config, kv, log, types};
use addonhost::runtime::bindings::{
    Addon, AddonError, AddonPre, Level, ProvisionRequest, ProvisionResult,
};
use addonhost::runtime::capabilities::Budgeted;
use addonhost::runtime::{Capabilities, Runtime};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, TypedFunc};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Bare host state: WASI with nothing granted (made on the guest's first
/// WASI call: many calls make none) and an in-memory KV.
pub struct Bare {
    wasi: Option<WasiCtx>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    hooks: addonhost::runtime::outbound::DenyOutbound,
    table: ResourceTable,
    kv: HashMap<String, Vec<u8>>,
}

impl Bare {
    pub fn new() -> Bare {
        Bare {
            wasi: None,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: addonhost::runtime::outbound::DenyOutbound,
            table: ResourceTable::new(),
            kv: HashMap::new(),
        }
    }
}

/// The best plain embedding of wasmtime 48 for a fresh instance per call:
/// the component model without its async bookkeeping (no guest here uses
/// it) and the pooling allocator with addonhost's own slots and
/// keep-resident settings (copy-on-write memory images are wasmtime's
/// default). No epoch interruption, no limiter: a baseline pays for nothing
/// it does not use.
pub fn bare_engine() -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.concurrency_support(false);
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
        addonhost::runtime::pool_config(),
    ));
    Engine::new(&cfg).map_err(anyhow::Error::from)
}

/// WASI, wasi:http types and the `addon` world's imports (answered by
/// [`Bare`]): what an add-on's component needs to instantiate.
pub fn bare_linker(engine: &Engine) -> anyhow::Result<Linker<Bare>> {
    let mut linker: Linker<Bare> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)?;
    Addon::add_to_linker::<Bare, HasSelf<Bare>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
    Ok(linker)
}

impl wasmtime_wasi_http::WasiHttpView for Bare {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

impl types::Host for Bare {}
impl config::Host for Bare {
    fn get(&mut self, _: String, _: String) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
    fn list(&mut self, _: String) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    fn update(
        &mut self,
        _: String,
        _: Vec<(String, Option<String>)>,
        _: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Ok(()))
    }
    fn complete(
        &mut self,
        _: String,
        _: Vec<(String, String)>,
        _: Option<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Ok(()))
    }
    fn fail(&mut self, _: String, _: String) -> wasmtime::Result<Result<(), String>> {
        Ok(Ok(()))
    }
}
impl kv::Host for Bare {
    fn get(&mut self, k: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv.get(&k).cloned())
    }
    fn set(&mut self, k: String, v: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.kv.insert(k, v);
        Ok(Ok(()))
    }
    fn delete(&mut self, k: String) -> wasmtime::Result<()> {
        self.kv.remove(&k);
        Ok(())
    }
    fn list_keys(&mut self, p: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .kv
            .keys()
            .filter(|k| k.starts_with(&p))
            .cloned()
            .collect())
    }
    fn list_keys_after(&mut self, p: String, a: String, n: u32) -> wasmtime::Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .kv
            .keys()
            .filter(|k| k.starts_with(&p) && **k > a)
            .cloned()
            .collect();
        keys.sort();
        keys.truncate(n as usize);
        Ok(keys)
    }
    fn count_keys(&mut self, p: String) -> wasmtime::Result<u64> {
        Ok(self.kv.keys().filter(|k| k.starts_with(&p)).count() as u64)
    }
}
impl log::Host for Bare {
    fn log(&mut self, _: Level, _: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The same in-memory capabilities, through addonhost's trait.
#[derive(Default)]
struct MemCaps(HashMap<String, Vec<u8>>);
impl Capabilities for MemCaps {
    fn config_get(&mut self, _: &str, _: &str) -> Budgeted<Option<String>> {
        Ok(None)
    }
    fn config_list(&mut self, _: &str) -> Budgeted<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    fn config_update(
        &mut self,
        _: &str,
        _: Vec<(String, Option<String>)>,
        _: &str,
    ) -> Budgeted<Result<(), String>> {
        Ok(Ok(()))
    }
    fn complete(
        &mut self,
        _: &str,
        _: Vec<(String, String)>,
        _: Option<String>,
    ) -> Budgeted<Result<(), String>> {
        Ok(Ok(()))
    }
    fn fail(&mut self, _: &str, _: &str) -> Budgeted<Result<(), String>> {
        Ok(Ok(()))
    }
    fn kv_get(&mut self, k: &str) -> Budgeted<Option<Vec<u8>>> {
        Ok(self.0.get(k).cloned())
    }
    fn kv_set(&mut self, k: &str, v: Vec<u8>) -> Budgeted<Result<(), String>> {
        self.0.insert(k.into(), v);
        Ok(Ok(()))
    }
    fn kv_delete(&mut self, k: &str) -> Budgeted<()> {
        self.0.remove(k);
        Ok(())
    }
    fn kv_list_keys(&mut self, p: &str, a: Option<&str>, n: usize) -> Budgeted<Vec<String>> {
        let mut keys: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.starts_with(p) && a.is_none_or(|a| k.as_str() > a))
            .cloned()
            .collect();
        keys.sort();
        keys.truncate(n);
        Ok(keys)
    }
    fn kv_count_keys(&mut self, p: &str) -> Budgeted<u64> {
        Ok(self.0.keys().filter(|k| k.starts_with(p)).count() as u64)
    }
    fn log(&mut self, _: Level, _: &str) {}
}

/// `lifecycle.provision` as Rust types (`wit/addon.wit`).
type ProvisionFn = TypedFunc<(ProvisionRequest,), (Result<ProvisionResult, AddonError>,)>;

fn request(i: usize) -> ProvisionRequest {
    ProvisionRequest {
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        app: "bench".into(),
        name: "KV".into(),
        plan: "mini".into(),
        region: "us".into(),
        options: Vec::new(),
        base_url: "http://127.0.0.1:5000/addons/kv".into(),
    }
}

pub fn stats(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[(d.len() * 99 / 100).min(d.len() - 1)])
}

/// Builds `examples/minimal-addon` (the smallest Rust add-on: a provision
/// with no host round trip) into the example add-ons' build cache and
/// returns its component.
pub fn minimal_addon() -> anyhow::Result<String> {
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            "plugins/target",
            "--manifest-path",
            "examples/minimal-addon/Cargo.toml",
        ])
        .status()
        .map_err(|e| anyhow::anyhow!("building examples/minimal-addon: cannot start cargo: {e}"))?;
    anyhow::ensure!(
        status.success(),
        "building examples/minimal-addon failed ({status})"
    );
    Ok("plugins/target/wasm32-wasip2/release/minimal_addon.wasm".to_string())
}

/// Medians and p99s of (a) bare wasmtime and (b) addonhost's runtime.
pub struct CallOverhead {
    pub bare: (Duration, Duration),
    pub ours: (Duration, Duration),
}

pub async fn measure(path: &str, n: usize) -> anyhow::Result<CallOverhead> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    // (a) bare wasmtime.
    let engine = bare_engine()?;
    let linker = bare_linker(&engine)?;
    let component = Component::new(&engine, &bytes).map_err(anyhow::Error::from)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)?;
    // What the bindings' `AddonPre::new` checks once: the component
    // implements the world (and so exports `provision`).
    AddonPre::new(pre.clone()).map_err(anyhow::Error::from)?;
    // The one export called, found once and type-checked on the first call
    // (the generated bindings would look up and check all five on every
    // instantiation): the same shortcut addonhost's runtime takes.
    let interface = component
        .get_export_index(None, "addonhost:addon/lifecycle@0.1.0")
        .ok_or_else(|| anyhow::anyhow!("{path} exports no lifecycle interface"))?;
    let provision = component
        .get_export_index(Some(&interface), "provision")
        .ok_or_else(|| anyhow::anyhow!("{path} exports no provision"))?;
    let mut checked = false;
    let mut bare = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        let mut store = Store::new(&engine, Bare::new());
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        let func = instance
            .get_func(&mut store, provision)
            .ok_or_else(|| anyhow::anyhow!("no provision in the instance"))?;
        let typed: ProvisionFn = if checked {
            // SAFETY: the same export of the same component was type-checked
            // against these types on the first call.
            unsafe { TypedFunc::new_unchecked(func) }
        } else {
            checked = true;
            func.typed(&store).map_err(anyhow::Error::from)?
        };
        let (r,) = typed
            .call_async(&mut store, (request(i),))
            .await
            .map_err(anyhow::Error::from)?;
        assert!(r.is_ok());
        // Dropping the store returns its slot to the pool, which resets the
        // instance's memories and tables: part of every fresh-instance call.
        drop(store);
        if i >= n / 10 {
            bare.push(start.elapsed());
        }
    }

    // (b) addonhost's runtime path.
    let runtime = Runtime::new(None)?;
    let plugin = runtime.load_bytes("kv", &bytes, Limits::default())?;
    let mut ours = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let start = Instant::now();
        let r = plugin
            .provision(Box::<MemCaps>::default(), request(i))
            .await;
        assert!(r.is_ok(), "{r:?}");
        if i >= n / 10 {
            ours.push(start.elapsed());
        }
    }

    Ok(CallOverhead {
        bare: stats(bare),
        ours: stats(ours),
    })
}
