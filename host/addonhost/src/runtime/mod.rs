//! The sandbox: wasmtime's component model running add-on plugins.
//!
//! Each plugin is compiled once (or loaded from the artifact cache) and
//! pre-instantiated; every call then gets a fresh `Store` — so nothing leaks
//! from one call to the next — with a wall-clock deadline (epoch
//! interruption, plus a timer for time spent blocked in WASI), a memory cap
//! and the host-side bounds of [`limits`]. WASI is linked with no
//! capabilities at all: no preopened directories, no environment, no
//! arguments, no sockets, stdio going nowhere (the tail of stderr is kept to
//! explain traps); HTTP requests go out only to the hosts a call was granted
//! ([`outbound`]). A trap, a timeout or a limit hit comes back as a
//! [`CallError`] naming the plugin, the call and the reason; it never takes
//! the host down.
//!
//! The runtime knows nothing of SQL, apps or HTTP: what a plugin may import
//! is the [`Capabilities`] the caller passes in with each call.

pub mod bindings;
pub mod cache;
mod call;
pub mod capabilities;
pub mod dev;
mod error;
mod exports;
pub mod http;
pub mod limits;
pub mod outbound;
mod stderr;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpView;

pub use bindings::{AddonError, Level, Login, ProvisionRequest, ProvisionResult, Session, Verdict};
pub use cache::{content_hash, ArtifactCache, Origin};
pub use capabilities::Capabilities;
pub use error::CallError;
pub use http::MAX_RESPONSE_BYTES;
pub use limits::{BudgetExceeded, Slots};
pub use outbound::Grant;

use crate::manifest::Limits;
use crate::metrics::Metrics;
use bindings::{Addon, AddonPre};
use exports::Exports;
use limits::{LogBudget, MemoryLimiter};
use stderr::TailPipe;

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The per-call state of one plugin instance.
pub struct CallState {
    /// Built on the plugin's first WASI call: many calls make none, and a
    /// context costs the seeding of its random number generators.
    wasi: Option<WasiCtx>,
    /// The tail of the plugin's stderr (kept to explain panics).
    stderr: TailPipe,
    http: wasmtime_wasi_http::WasiHttpCtx,
    /// Where the call's outbound requests may go, and what they spent.
    http_hooks: outbound::Outbound,
    table: ResourceTable,
    limiter: MemoryLimiter,
    log: LogBudget,
    caps: Box<dyn Capabilities>,
    /// A development build's sources, handed to its loader.
    dev: dev::Sources,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &self.stderr;
        // No preopens, env, args or network; only stderr is kept. Sockets
        // are refused outright (not only their addresses), so a plugin
        // cannot hold host descriptors; set here rather than trusted to the
        // builder's defaults.
        let ctx = self.wasi.get_or_insert_with(|| {
            WasiCtx::builder()
                .stderr(stderr.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// The wasmtime engine and the linker shared by every plugin.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<ArtifactCache>,
    /// Calls running, per add-on and in all.
    slots: Arc<Slots>,
    /// The quick tier (Winch), made on first use.
    quick: OnceLock<Result<Tier, String>>,
    /// Engines the epoch ticker advances.
    ticking: Arc<Mutex<Vec<wasmtime::EngineWeak>>>,
    ticker_stop: Arc<AtomicBool>,
    /// Where every call is counted and timed.
    metrics: Arc<Metrics>,
}

/// A second engine that compiles with Winch, wasmtime's baseline compiler:
/// several times faster to compile than Cranelift, slower to run. Hot reload
/// serves a new version from it at once while Cranelift compiles the
/// version that replaces it (see [`Runtime::load_quick`]).
struct Tier {
    engine: Engine,
    linker: Linker<CallState>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A loaded plugin: compiled, type-checked against the `addon` world, and
/// pre-instantiated.
pub struct Plugin {
    id: String,
    /// Checked at load to implement the `addon` world; each call
    /// instantiates its `InstancePre` and calls through `exports`.
    pre: AddonPre<CallState>,
    exports: Exports,
    /// Set when the component also exports `wasi:http/incoming-handler`.
    proxy: Option<wasmtime_wasi_http::p2::bindings::ProxyPre<CallState>>,
    limits: Limits,
    engine: Engine,
    /// Its instance slots, shared with every other loaded version of it.
    slots: limits::AddonSlots,
    /// Hex SHA-256 of the component.
    pub content_hash: String,
    /// Whether this load compiled or hit the artifact cache.
    pub origin: Origin,
    /// What a development build (`plugins:dev`) carries; `None` for a
    /// production build.
    dev: dev::Sources,
    metrics: Arc<Metrics>,
    /// Its call metrics, resolved once.
    calls: Arc<crate::metrics::AddonMetrics>,
}

impl Runtime {
    /// A runtime whose compiled components are cached in `cache` (if any).
    pub fn new(cache: Option<ArtifactCache>) -> anyhow::Result<Runtime> {
        Runtime::with_metrics(cache, Arc::new(Metrics::new()))
    }

    /// [`Runtime::new`], counting every call in `metrics`.
    pub fn with_metrics(
        cache: Option<ArtifactCache>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Runtime> {
        let config = base_config();
        // Every call instantiates afresh, so instantiation is the hot path:
        // the pooling allocator reuses pre-reserved slots (no mmap/munmap and
        // the cross-core TLB shootdowns they bring per call), resets small
        // memories with memset, and copy-on-write images make data segments
        // free. Where the address space cannot be reserved, the on-demand
        // allocator takes over.
        let pooled = {
            let mut pooled = config.clone();
            pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config()));
            Engine::new(&pooled)
        };
        let engine = match pooled {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!("pooling allocator unavailable ({e}); allocating on demand");
                wt(Engine::new(&config)).context("configuring wasmtime")?
            }
        };
        let linker = linker_for(&engine)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticking = Arc::new(Mutex::new(vec![engine.weak()]));
        let (engines, stop) = (ticking.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("addonhost-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    let engines = engines.lock().unwrap_or_else(|p| p.into_inner());
                    for weak in engines.iter() {
                        if let Some(engine) = weak.upgrade() {
                            engine.increment_epoch();
                        }
                    }
                }
            })
            .context("starting the epoch ticker")?;

        Ok(Runtime {
            engine,
            linker,
            cache,
            slots: Arc::new(Slots::default()),
            quick: OnceLock::new(),
            ticking,
            ticker_stop,
            metrics,
        })
    }

    /// The component in `bytes` compiled by the quick tier (Winch), not
    /// cached: a stand-in until [`Runtime::load`] has compiled it properly.
    /// Its calls behave the same, only run slower. `None` when the artifact
    /// cache already holds it (then [`Runtime::load`] takes no compiling).
    pub fn load_quick(
        &self,
        id: &str,
        bytes: &[u8],
        limits: Limits,
    ) -> anyhow::Result<Option<Plugin>> {
        let (code, dev) = split_dev(bytes)?;
        if (self.cache.as_ref())
            .is_some_and(|c| c.contains(&self.engine, &cache::content_hash(code)))
        {
            return Ok(None);
        }
        let content_hash = cache::content_hash(bytes);
        let tier = self
            .quick
            .get_or_init(|| {
                let mut config = base_config();
                config.strategy(wasmtime::Strategy::Winch);
                // Winch compiles the functions; the trampolines between host
                // and wasm (hundreds in a component built with std) are still
                // Cranelift's, and unoptimized they compile ~10% faster.
                config.cranelift_opt_level(wasmtime::OptLevel::None);
                let engine = wt(Engine::new(&config))
                    .map_err(|e| format!("configuring the quick tier: {e:#}"))?;
                let linker = linker_for(&engine).map_err(|e| format!("{e:#}"))?;
                self.ticking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(engine.weak());
                Ok(Tier { engine, linker })
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let component = wt(Component::new(&tier.engine, code))
            .with_context(|| format!("add-on {id}: quick compile"))?;
        plugin_of(
            id,
            (&tier.engine, &tier.linker, &self.slots, &self.metrics),
            &component,
            limits,
            (content_hash, Origin::Quick, dev),
        )
        .map(Some)
    }

    /// The metrics every call of this runtime's plugins is counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The wasmtime engine every plugin of this runtime is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from cache) the component at `path` and checks that
    /// it implements the `addon` world.
    pub fn load(&self, id: &str, path: &Path, limits: Limits) -> anyhow::Result<Plugin> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("add-on {id}: cannot read component {}", path.display()))?;
        self.load_bytes(id, &bytes, limits)
            .with_context(|| format!("add-on {id}: cannot load component {}", path.display()))
    }

    /// Like [`Runtime::load`], from bytes.
    pub fn load_bytes(&self, id: &str, bytes: &[u8], limits: Limits) -> anyhow::Result<Plugin> {
        if bytes.is_empty() {
            anyhow::bail!("the file is empty (0 bytes): rebuild the add-on");
        }
        // A development build's sources are not code: its code compiles
        // (and is cached) by the code's hash, so an edit compiles nothing.
        let (code, dev) = split_dev(bytes)?;
        let (component, origin) = match &self.cache {
            Some(cache) => cache.load(&self.engine, code, &cache::content_hash(code))?,
            None => (wt(Component::new(&self.engine, code))?, Origin::Compiled),
        };
        plugin_of(
            id,
            (&self.engine, &self.linker, &self.slots, &self.metrics),
            &component,
            limits,
            (cache::content_hash(bytes), origin, dev),
        )
    }

    /// Calls of add-on `id` running now, in this process.
    pub fn in_flight(&self, id: &str) -> usize {
        self.slots.in_flight(id)
    }
}

/// A component's code and, for a development build, what it carries.
fn split_dev(bytes: &[u8]) -> anyhow::Result<(&[u8], dev::Sources)> {
    Ok(match dev::split(bytes)? {
        Some((code, build)) => (code, Some(Arc::new(build))),
        None => (bytes, None),
    })
}

/// Hands the outbound requests the host refused during a call to the
/// call's capabilities (the audit trail, `plugins:check`).
fn report_refusals(state: &mut CallState) {
    for (url, why) in state.http_hooks.take_refusals() {
        state.caps.outbound_refused(&url, &why);
    }
}

/// The settings both tiers share.
fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config.max_wasm_stack(1 << 20);
    // A trap's backtrace names functions, files and lines from the
    // component's DWARF where it has any (a `plugins:dev` build keeps line
    // tables; release builds are stripped and parse nothing): the author
    // sees the line that trapped, not only the trap.
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    // No add-on call runs concurrently inside its store (the component
    // model's async ABI): without the bookkeeping for it, a store is
    // cheaper to create and to drop.
    config.concurrency_support(false);
    config
}

/// What a plugin may import: WASI (granting nothing), wasi:http types and
/// the `addon` world's imports.
fn linker_for(engine: &Engine) -> anyhow::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    // WASI is linked so that std-built components instantiate, but the
    // context built per call grants nothing (see `new_store`).
    wt(wasmtime_wasi::p2::add_to_linker_async(&mut linker)).context("linking WASI")?;
    // wasi:http types, so add-ons can serve HTTP, and the outgoing handler
    // through the call's budget; every request is then checked by
    // `outbound::Outbound`.
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    wt(
        wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<
            _,
            wasmtime_wasi_http::WasiHttp,
        >(
            &mut linker,
            &options.into(),
            <CallState as WasiHttpView>::http,
        ),
    )
    .context("linking wasi:http")?;
    wt(outbound::add_to_linker(&mut linker)).context("linking wasi:http/outgoing-handler")?;
    wt(dev::add_to_linker(&mut linker)).context("linking addonhost:addon/dev")?;
    wt(Addon::add_to_linker::<CallState, HasSelf<CallState>>(
        &mut linker,
        |s| s,
    ))
    .context("linking the addon world's imports")?;

    Ok(linker)
}

/// A compiled component, type-checked against the `addon` world and
/// pre-instantiated.
fn plugin_of(
    id: &str,
    (engine, linker, slots, metrics): (&Engine, &Linker<CallState>, &Arc<Slots>, &Arc<Metrics>),
    component: &Component,
    limits: Limits,
    (content_hash, origin, dev): (String, Origin, dev::Sources),
) -> anyhow::Result<Plugin> {
    let pre = wt(linker.instantiate_pre(component))
        .context("the component imports something the host does not provide")?;
    let proxy = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone()).ok();
    let pre = wt(AddonPre::new(pre))
        .context("the component does not implement the addonhost:addon/addon world")?;
    let exports = Exports::find(component)?;
    Ok(Plugin {
        id: id.to_string(),
        pre,
        exports,
        proxy,
        limits,
        engine: engine.clone(),
        slots: slots.for_addon(id, limits.concurrency as usize),
        content_hash,
        origin,
        dev,
        metrics: metrics.clone(),
        calls: metrics.for_addon(id),
    })
}

/// Instance slots: enough for many concurrent calls of components of any of
/// the three languages (a Python or JavaScript component holds dozens of core
/// instances, several memories and large function tables). Public so that
/// `bench`'s bare-wasmtime baselines run on the very same settings.
pub fn pool_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1000)
        .total_core_instances(10_000)
        .total_memories(2000)
        .total_tables(10_000)
        .max_core_instances_per_component(200)
        // A call's memories share one cap (`MemoryLimiter`); more than a few
        // per component is no add-on's need.
        .max_memories_per_component(16)
        .max_tables_per_component(200)
        .max_tables_per_module(8)
        .table_elements(200_000)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        // The manifest's memory limit is enforced per call by `MemoryLimiter`.
        .max_memory_size(4 << 30)
        // Reset in place, not madvise, up to 4 MiB of what a call touched:
        // no syscall (and no TLB flush) to recycle a small add-on's memory.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(1 << 16)
        // Where the kernel can tell (Linux 6.7+), reset only the pages the
        // call dirtied rather than memset the whole resident prefix.
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// wasmtime has its own error type; the host speaks anyhow.
fn wt<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(anyhow::Error::from)
}
