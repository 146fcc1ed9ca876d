//! addonhost's benchmark suite: every row measured in the same run as its
//! baseline, printed as one table with the ratio and the target.
//!
//! ```sh
//! cargo build --release -p addonhost-cli -p addonhost-examples
//! target/release/addonhost plugins:build      # the example add-ons
//! target/release/bench                        # the full run (a few minutes)
//! target/release/bench --quick                # a smoke run (seconds; add --extism for row 1c)
//! ```
//!
//! Rows: plugin call overhead against bare wasmtime; provisioning over HTTP
//! against bare SQLite transactions of the same shape, at 1, 8 and 32
//! clients; the same with the state in PostgreSQL, one and two servers,
//! against bare PostgreSQL transactions (a throwaway cluster unless
//! `ADDONHOST_TEST_PG` names a server; in `--quick` runs only then); cold start with the Rust, Python and JavaScript examples
//! (compiled cache cold vs warm); hot-reload swap latency and failed requests
//! under load; resident memory per idle plugin.

mod author;
mod bare_http;
mod call;
mod extism;
mod open_loop;
mod platform;
mod postgres;
mod reload;
mod requests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use platform::Server;

pub struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: String,
}

pub fn row(
    what: impl Into<String>,
    ours: impl Into<String>,
    baseline: impl Into<String>,
    ratio: impl Into<String>,
    target: &str,
) -> Row {
    Row {
        what: what.into(),
        ours: ours.into(),
        baseline: baseline.into(),
        ratio: ratio.into(),
        target: target.to_string(),
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn ratio(ours: f64, base: f64) -> String {
    format!("{:.2}x", ours / base)
}

/// A plugin folder holding copies of the named example add-ons.
pub fn plugin_copies(root: &Path, names: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = root.join("plugins");
    for name in names {
        let src = Path::new("plugins").join(name);
        let dst = dir.join(name);
        std::fs::create_dir_all(&dst)?;
        for entry in std::fs::read_dir(&src)? {
            let path = entry?.path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            if file == "addon-manifest.json" || file.ends_with(".wasm") {
                std::fs::copy(&path, dst.join(&file))?;
            }
        }
    }
    Ok(dir)
}

/// addonhost's benchmark suite: every row measured against a baseline in
/// the same run, printed as one table with the ratio and the target. Run it
/// from the repository root after `addonhost plugins:build`.
#[derive(clap::Parser)]
#[command(name = "bench")]
pub struct Opts {
    /// A smoke run: a few iterations of every row (seconds, not minutes).
    #[arg(long)]
    quick: bool,
    /// Include the Extism row in a --quick run (a full run always has it).
    #[arg(long)]
    extism: bool,
    /// Run one group of rows only.
    #[arg(long, value_enum)]
    only: Option<Group>,
    /// Provisioning at this many clients only, instead of 1, 8 and 32
    /// (to profile the server).
    #[arg(long, value_parser = positive)]
    clients: Option<usize>,
    /// Provisionings per concurrency level.
    #[arg(long, value_parser = positive)]
    provisions: Option<usize>,
    /// Seconds of load for each HTTP-request row (default 8; 1 with --quick).
    #[arg(long, value_parser = positive)]
    seconds: Option<usize>,
    /// Connections for the HTTP-request rows.
    #[arg(long, value_parser = positive, default_value_t = 16)]
    connections: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The groups of rows, in the order a full run prints them.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Call overhead against bare wasmtime (and Extism).
    Calls,
    /// HTTP requests through an add-on in each language, against a bare
    /// wasmtime-wasi-http server.
    Requests,
    /// Provisioning throughput over HTTP against bare SQLite transactions.
    Http,
    /// Provisioning latency at fixed rates (open loop).
    Latency,
    /// Provisioning on PostgreSQL, one and two servers.
    Postgres,
    /// Start with the cache cold and warm.
    Start,
    /// Hot reload under load.
    Reload,
    /// Resident memory per idle plugin.
    Memory,
    /// Edit to live with `plugins:dev`, per language.
    Author,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The bare baseline of the request rows: serve COMPONENT's
    /// wasi:http/incoming-handler on 127.0.0.1 with nothing but
    /// wasmtime-wasi-http (the bench runs it as its own process).
    #[command(hide = true)]
    ServeBare { component: PathBuf },
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s}: expected a positive number")),
    }
}

impl Opts {
    fn wants(&self, group: Group) -> bool {
        self.only.is_none_or(|o| o == group)
    }

    fn extism(&self) -> bool {
        !self.quick || self.extism
    }

    /// How long each HTTP-request row loads the server.
    fn load_time(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(if self.quick { 1 } else { 8 }) as u64)
    }
}

fn main() -> anyhow::Result<()> {
    let opts = <Opts as clap::Parser>::parse();
    if let Some(Command::ServeBare { component }) = &opts.command {
        return bare_http::serve(component);
    }
    for example in ["kv", "exceptions", "queue", "flags"] {
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            Path::new("plugins")
                .join(example)
                .join("addon-manifest.json"),
        )?)?;
        let component = Path::new("plugins")
            .join(example)
            .join(m["component"].as_str().unwrap_or_default());
        anyhow::ensure!(
            component.is_file(),
            "{} is missing: run `addonhost plugins:build` first (from the repository root)",
            component.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    // Failures a row measured (a request that failed during reloads): the
    // table is still printed, then the run fails with them.
    let mut failures = Vec::new();
    if opts.wants(Group::Calls) {
        calls(&opts, &mut rows)?;
    }
    if opts.wants(Group::Requests) {
        requests::rows(&opts, tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Http) {
        http(&opts, tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Latency) {
        open_loop::rows(&opts, tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Postgres) && (!opts.quick || std::env::var("ADDONHOST_TEST_PG").is_ok()) {
        postgres_rows(&opts, tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Start) {
        start(&opts, tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Reload) {
        reload(&opts, tmp.path(), &mut rows, &mut failures)?;
    }
    if opts.wants(Group::Memory) {
        memory(tmp.path(), &mut rows)?;
    }
    if opts.wants(Group::Author) {
        author::rows(opts.quick, tmp.path(), &mut rows)?;
    }
    print_table(&rows);
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(())
}

fn calls(opts: &Opts, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // 1. Plugin call overhead.
    let calls = if opts.quick { 50 } else { 3000 };
    eprintln!("bench: call overhead ({calls} calls each)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // 1a. A trivial provision: the cost of a call by itself.
    let minimal = call::minimal_addon()?;
    let m = rt.block_on(call::measure(&minimal, calls))?;
    call_rows(rows, "trivial provision", &m, "≤ 1.2x, ≤ 10 µs");
    // 1b. A real one: the kv example's provision (JSON, random, KV round trips).
    let c = rt.block_on(call::measure("plugins/kv/kv.wasm", calls))?;
    call_rows(rows, "kv provision", &c, "≤ 1.2x");

    // 1c. The same logic as an Extism plugin (its own build: wasmtime 43).
    if !opts.extism() {
        eprintln!("bench: Extism row skipped in --quick (add --extism)");
    } else {
        eprintln!("bench: Extism (building examples/extism-bench on first use)");
        let extism = extism::measure(calls)?;
        let vs = |what: &str, ours: Duration, theirs: Duration, target: &str| {
            row(
                format!("call overhead vs Extism 1.30, {what}"),
                us(ours),
                format!("{} Extism", us(theirs)),
                ratio(ours.as_secs_f64(), theirs.as_secs_f64()),
                target,
            )
        };
        rows.push(vs("median", c.ours.0, extism.0, "< 1x (faster)"));
        rows.push(vs("p99", c.ours.1, extism.1, ""));
    }

    Ok(())
}

/// The median and p99 rows of one call-overhead measurement.
fn call_rows(rows: &mut Vec<Row>, what: &str, c: &call::CallOverhead, target: &str) {
    let pair = |label: String, ours: Duration, bare: Duration, target: &str| {
        row(
            label,
            us(ours),
            format!("{} bare wasmtime", us(bare)),
            ratio(ours.as_secs_f64(), bare.as_secs_f64()),
            target,
        )
    };
    rows.push(pair(
        format!("call overhead, median (instantiate + {what})"),
        c.ours.0,
        c.bare.0,
        target,
    ));
    rows.push(pair("call overhead, p99".into(), c.ours.1, c.bare.1, ""));
}

/// Provisioning throughput over HTTP at 1, 8 and 32 clients (closed loop);
/// the highest rate seen, for the open-loop rows.
fn http(opts: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // 2. Provisioning over HTTP vs bare SQLite transactions.
    let total = opts
        .provisions
        .unwrap_or(if opts.quick { 32 } else { 3200 });
    let kv_only = plugin_copies(&tmp.join("p"), &["kv"])?;
    let server = Server::start(&tmp.join("throughput"), kv_only.to_str().unwrap())?;
    let concurrency = match opts.clients {
        Some(n) => vec![n],
        None => vec![1, 8, 32],
    };
    for clients in concurrency {
        eprintln!("bench: provisioning over HTTP, {clients} clients");
        let per_client = (total / clients).max(1);
        let ours = platform::provisioning(&server, clients, per_client)?;
        anyhow::ensure!(
            ours.failed == 0,
            "{} provisionings failed, the first with {}",
            ours.failed,
            ours.first_failure.as_deref().unwrap_or("?")
        );
        let base_dir = tempfile::tempdir()?;
        let base = platform::sqlite_baseline(base_dir.path(), clients, per_client)?;
        rows.push(row(
            format!("provisions/s over HTTP, {clients} clients"),
            format!("{:.0}/s", ours.per_second),
            format!("{:.0}/s SQLite txns", base.per_second),
            ratio(ours.per_second, base.per_second),
            if clients == 32 { "≥ 5,000/s" } else { "" },
        ));
        // Closed loop: each client waits for its answer, so this latency is
        // the concurrency divided by the throughput (Little's law); the
        // latency rows below measure it at fixed rates instead.
        rows.push(row(
            format!("  latency p50 / p99, {clients} clients (closed loop)"),
            format!("{} / {}", ms(ours.p50), ms(ours.p99)),
            format!("{} / {}", ms(base.p50), ms(base.p99)),
            ratio(ours.p99.as_secs_f64(), base.p99.as_secs_f64()),
            "",
        ));
    }
    drop(server);
    Ok(())
}

fn postgres_rows(opts: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // 2b. Provisioning over HTTP with the state in PostgreSQL, one and two
    // servers on one database, vs bare PostgreSQL transactions.
    let concurrency = match opts.clients {
        Some(n) => vec![n],
        None => vec![1, 32],
    };
    let kv_only = plugin_copies(&tmp.join("pg-plugins"), &["kv"])?;
    postgres::rows(
        &concurrency,
        opts.provisions,
        opts.quick,
        tmp,
        kv_only.to_str().unwrap(),
        rows,
    )
}

/// The plugin folder with all four examples and the data dir whose cache
/// holds them compiled.
fn all_examples(tmp: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let all = tmp.join("all/plugins");
    if !all.exists() {
        plugin_copies(&tmp.join("all"), &["kv", "exceptions", "queue", "flags"])?;
    }
    Ok((all, tmp.join("cold")))
}

fn start(opts: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // 3. Cold start with all four examples (Rust, Python, JavaScript).
    eprintln!("bench: cold start, compiled cache cold then warm");
    let (all, data) = all_examples(tmp)?;
    let cold = Server::start(&data, all.to_str().unwrap())?.started_in;
    let mut warm = Vec::new();
    for _ in 0..if opts.quick { 1 } else { 5 } {
        warm.push(Server::start(&data, all.to_str().unwrap())?.started_in);
    }
    warm.sort();
    let warm = warm[warm.len() / 2];
    rows.push(row(
        "start → first request, 4 examples, cache warm",
        ms(warm),
        format!("{} cache cold", ms(cold)),
        ratio(warm.as_secs_f64(), cold.as_secs_f64()),
        "≤ 150 ms",
    ));

    Ok(())
}

fn reload(
    opts: &Opts,
    tmp: &Path,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    // 4. Hot reload under load.
    let reloads = if opts.quick { 3 } else { 20 };
    eprintln!("bench: {reloads} hot reloads under load");
    let reload_plugins = plugin_copies(&tmp.join("r"), &["kv"])?;
    let server = Server::start(&tmp.join("reload"), reload_plugins.to_str().unwrap())?;
    let mut r = reload::hot_reload(&server, &reload_plugins.join("kv"), reloads)?;
    drop(server);
    r.compiled.sort();
    r.cached.sort();
    rows.push(row(
        format!("hot reload, new version: file change → serving, median of {reloads}"),
        ms(r.compiled[r.compiled.len() / 2]),
        format!("max {}", ms(*r.compiled.last().unwrap())),
        "",
        "≤ 50 ms",
    ));
    rows.push(row(
        format!("hot reload, version already compiled, median of {reloads}"),
        ms(r.cached[r.cached.len() / 2]),
        format!("max {}", ms(*r.cached.last().unwrap())),
        "",
        "≤ 50 ms",
    ));
    rows.push(row(
        format!("  failed requests across {} reloads", 2 * reloads),
        r.failed.to_string(),
        format!("{} served", r.served),
        "",
        "0",
    ));
    if r.failed > 0 {
        failures.push(format!(
            "{} of {} requests failed across {} hot reloads (a swap must lose no request)",
            r.failed,
            r.failed + r.served,
            2 * reloads
        ));
    }
    Ok(())
}

/// `n` copies of an example add-on, each with its own id and a component
/// that differs by a custom section (so each compiles and maps separately,
/// like distinct add-ons would).
fn distinct_copies(root: &Path, name: &str, n: u64) -> anyhow::Result<PathBuf> {
    let src = Path::new("plugins").join(name);
    let text = std::fs::read_to_string(src.join("addon-manifest.json"))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    let file = manifest["component"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let component = std::fs::read(src.join(&file))?;
    for i in 1..=n {
        let id = format!("{name}{i}");
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir)?;
        let mut m = manifest.clone();
        m["id"] = id.clone().into();
        m["api"]["config_vars_prefix"] = id.to_ascii_uppercase().into();
        m["api"]["config_vars"] = manifest["api"]["config_vars"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .map(|v| {
                let prefix = manifest["api"]["config_vars_prefix"].as_str().unwrap_or("");
                serde_json::Value::from(v.replacen(prefix, &id.to_ascii_uppercase(), 1))
            })
            .collect();
        std::fs::write(dir.join("addon-manifest.json"), m.to_string())?;
        std::fs::write(dir.join(&file), reload::variant(&component, i))?;
    }
    Ok(root.to_path_buf())
}

fn memory(tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // 5. Resident memory per loaded idle plugin: a server with four distinct
    // copies of an example, against the same server with none, divided by
    // four (one-time costs of the first plugin are spread, as in a host that
    // loads many).
    eprintln!("bench: resident memory per idle plugin");
    const COPIES: u64 = 4;
    let data = tmp.join("memory");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty)?;
    for (name, lang, target) in [
        ("kv", "Rust", "≤ 2 MiB"),
        ("queue", "Python", ""),
        ("flags", "JavaScript", ""),
    ] {
        let plugins = distinct_copies(&tmp.join(format!("mem-{name}")), name, COPIES)?;
        // Compile into the cache first: the row is about a warm start.
        drop(Server::start(&data, plugins.to_str().unwrap())?);
        let base = Server::start(&data, empty.to_str().unwrap())?.rss_kib();
        let loaded = Server::start(&data, plugins.to_str().unwrap())?.rss_kib();
        rows.push(row(
            format!("RSS per idle plugin: {name} ({lang})"),
            format!(
                "{:.1} MiB",
                loaded.saturating_sub(base) as f64 / 1024.0 / COPIES as f64
            ),
            format!("{:.1} MiB host alone", base as f64 / 1024.0),
            "",
            target,
        ));
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let w = |f: &dyn Fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (a, b, c, d) = (
        w(&|r| r.what.chars().count()),
        w(&|r| r.ours.chars().count()).max(9),
        w(&|r| r.baseline.chars().count()).max(8),
        w(&|r| r.ratio.chars().count()).max(5),
    );
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
    println!(
        "\n{}  {}  {}  {}  target",
        pad("", a),
        pad("addonhost", b),
        pad("baseline", c),
        pad("ratio", d)
    );
    for r in rows {
        println!(
            "{}  {}  {}  {}  {}",
            pad(&r.what, a),
            pad(&r.ours, b),
            pad(&r.baseline, c),
            pad(&r.ratio, d),
            r.target
        );
    }
}
