//! The request rows: HTTP requests through an add-on in each language, as
//! an app calls it (closed loop, keep-alive connections), and the same
//! `hello` component served by addonhost and by a bare wasmtime-wasi-http
//! server ([`crate::bare_http`]) in the same run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;

use crate::platform::{load_of, Conn, Load, Server};
use crate::{ms, ratio, row, Opts, Row};

/// The hello add-on in each language: (language, folder).
const HELLOS: [(&str, &str); 3] = [
    ("Rust", "examples/hello-addon/rust"),
    ("Python", "examples/hello-addon/python"),
    ("JavaScript", "examples/hello-addon/js"),
];

pub fn rows(opts: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let hellos = HELLOS
        .iter()
        .map(|(lang, dir)| Ok((*lang, built(Path::new(dir))?)))
        .collect::<anyhow::Result<Vec<(&str, PathBuf)>>>()?;
    let plugins = tmp.join("requests/plugins");
    crate::plugin_copies(&tmp.join("requests"), &["kv", "queue", "flags"])?;
    for (_, component) in &hellos {
        let dir = component.parent().unwrap();
        // A plugin's folder is named after its id (the component's stem).
        let dst = plugins.join(component.file_stem().unwrap());
        std::fs::create_dir_all(&dst)?;
        for file in [
            "addon-manifest.json",
            component.file_name().unwrap().to_str().unwrap(),
        ] {
            std::fs::copy(dir.join(file), dst.join(file))?;
        }
    }
    let server = Server::start(&tmp.join("requests/data"), plugins.to_str().unwrap())?;
    let targets = provision(&server)?;
    server.optimized()?;
    let (connections, seconds) = (opts.connections, opts.load_time());
    eprintln!(
        "bench: HTTP requests through add-ons, {connections} connections, {} s each",
        seconds.as_secs()
    );

    let health = closed_loop(&server.addr, "/healthz", &[], connections, seconds)?;
    rows.push(row(
        format!("HTTP GET /healthz (no add-on), {connections} connections"),
        format!("{:.0}/s", health.per_second),
        "",
        "",
        "",
    ));
    rows.push(latency_row(&health, None));
    for t in &targets {
        let l = closed_loop(&server.addr, &t.path, &t.headers, connections, seconds)?;
        check(&l, &t.what)?;
        rows.push(row(
            format!(
                "HTTP {} through {}, {connections} connections",
                t.what, t.addon
            ),
            format!("{:.0}/s", l.per_second),
            format!("{:.0}/s /healthz", health.per_second),
            ratio(l.per_second, health.per_second),
            t.target,
        ));
        rows.push(
            latency_row(&l, Some(&health)).with_target(if t.target.is_empty() {
                ""
            } else {
                "p50 ≤ 2 ms"
            }),
        );
    }

    // The same hello component, through addonhost and on bare
    // wasmtime-wasi-http, one right after the other.
    for (lang, component) in &hellos {
        let id = component.file_stem().unwrap().to_str().unwrap();
        let ours = closed_loop(
            &server.addr,
            &format!("/addons/{id}/"),
            &[],
            connections,
            seconds,
        )?;
        check(&ours, &format!("hello ({lang}) through addonhost"))?;
        let bare = BareServer::start(component)?;
        let theirs = closed_loop(&bare.addr, "/", &[], connections, seconds)?;
        check(
            &theirs,
            &format!("hello ({lang}) on bare wasmtime-wasi-http"),
        )?;
        drop(bare);
        rows.push(row(
            format!("HTTP hello ({lang}) through an add-on, {connections} connections"),
            format!("{:.0}/s", ours.per_second),
            format!("{:.0}/s bare wasi-http", theirs.per_second),
            ratio(ours.per_second, theirs.per_second),
            "",
        ));
        rows.push(latency_row(&ours, Some(&theirs)));
    }
    Ok(())
}

/// The p50 / p99 row under a throughput row.
fn latency_row(l: &Load, base: Option<&Load>) -> Row {
    row(
        "  latency p50 / p99",
        format!("{} / {}", ms(l.p50), ms(l.p99)),
        base.map(|b| format!("{} / {}", ms(b.p50), ms(b.p99)))
            .unwrap_or_default(),
        base.map(|b| ratio(l.p50.as_secs_f64(), b.p50.as_secs_f64()))
            .unwrap_or_default(),
        "",
    )
}

impl Row {
    fn with_target(mut self, target: &str) -> Row {
        self.target = target.to_string();
        self
    }
}

fn check(l: &Load, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        l.failed == 0,
        "{what}: {} requests failed, the first with {}",
        l.failed,
        l.first_failure.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// The component of the hello add-on in `dir`, built with `addonhost
/// plugins:build` unless it is newer than every source next to it.
fn built(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("addon-manifest.json"))?)?;
    let component = dir.join(manifest["component"].as_str().context("no component")?);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let sources = ["addon-manifest.json", "app.py", "index.js", "src/lib.rs"];
    let fresh = modified(&component).is_some_and(|built| {
        sources
            .iter()
            .filter_map(|s| modified(&dir.join(s)))
            .all(|m| m <= built)
    });
    if !fresh {
        eprintln!("bench: building {}", dir.display());
        let status = Command::new(crate::platform::addonhost_bin())
            .arg("plugins:build")
            .arg(dir)
            // Shares the example add-ons' build cache (Rust).
            .env("CARGO_TARGET_DIR", "plugins/target")
            .status()
            .context("running addonhost plugins:build")?;
        anyhow::ensure!(status.success(), "building {} failed", dir.display());
    }
    Ok(component)
}

/// A route of an example add-on, with its credentials.
struct Target {
    addon: &'static str,
    what: String,
    path: String,
    headers: Vec<(String, String)>,
    target: &'static str,
}

/// Provisions kv, flags, queue and the hellos onto one app and writes what
/// each GET reads; the routes to load.
fn provision(server: &Server) -> anyhow::Result<Vec<Target>> {
    let auth = server.auth();
    let mut api = Conn::connect(&server.addr)?;
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let (s, body) = api.request("POST", "/api/apps", &json, br#"{"name": "requests"}"#)?;
    if s != 201 {
        bail!("creating the app: {s} {}", String::from_utf8_lossy(&body));
    }
    for plan in [
        "kv:mini",
        "flags:free",
        "queue:hobby",
        "hello-rust:basic",
        "hello-python:basic",
        "hello-js:basic",
    ] {
        let (s, body) = api.request(
            "POST",
            "/api/apps/requests/addons",
            &json,
            format!(r#"{{"plan": "{plan}"}}"#).as_bytes(),
        )?;
        if s != 201 {
            bail!(
                "provisioning {plan}: {s} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let (_, config) = api.get("/api/apps/requests/config", &[("authorization", &auth)])?;
    let config: serde_json::Value = serde_json::from_slice(&config)?;
    // (path, basic auth) of a config var's URL.
    let creds = |var: &str| -> anyhow::Result<(String, String)> {
        let url = url::Url::parse(
            config[var]
                .as_str()
                .with_context(|| format!("{var} is not in the config"))?,
        )?;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                url.username(),
                url.password().unwrap_or("")
            ))
        );
        Ok((url.path().to_string(), basic))
    };
    let (kv, kv_auth) = creds("KV_URL")?;
    let (flags, flags_auth) = creds("FLAGS_URL")?;
    let (queue, queue_auth) = creds("QUEUE_URL")?;
    let writes = [
        ("PUT", format!("{kv}/key"), &kv_auth, &b"value"[..]),
        (
            "PUT",
            format!("{flags}/flags/beta"),
            &flags_auth,
            br#"{"enabled": true}"#,
        ),
        ("POST", format!("{queue}/messages"), &queue_auth, b"job"),
    ];
    for (method, path, basic, body) in writes {
        let (s, text) = api.request(method, &path, &[("authorization", basic)], body)?;
        if !(200..300).contains(&s) {
            bail!("{method} {path}: {s} {}", String::from_utf8_lossy(&text));
        }
    }
    let target = |addon, what: &str, path: String, basic: &str, target| Target {
        addon,
        what: what.to_string(),
        path,
        headers: vec![("authorization".to_string(), basic.to_string())],
        target,
    };
    Ok(vec![
        target("kv (Rust)", "GET key", format!("{kv}/key"), &kv_auth, ""),
        target(
            "flags (JavaScript)",
            "GET flag",
            format!("{flags}/flags/beta"),
            &flags_auth,
            "≥ 6,500/s",
        ),
        target(
            "queue (Python)",
            "GET queue",
            queue.clone(),
            &queue_auth,
            "≥ 1,850/s",
        ),
    ])
}

/// `connections` keep-alive connections, each sending its next request as
/// soon as the last is answered, for `seconds` after a second of warm-up;
/// requests/s and latency percentiles of the measured part.
pub fn closed_loop(
    addr: &str,
    path: &str,
    headers: &[(String, String)],
    connections: usize,
    seconds: Duration,
) -> anyhow::Result<Load> {
    let warm_up = Duration::from_secs(1);
    let start = Instant::now();
    let (measure_from, end) = (start + warm_up, start + warm_up + seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, path, headers, stop) = (
                addr.to_string(),
                path.to_string(),
                headers.to_vec(),
                stop.clone(),
            );
            std::thread::spawn(
                move || -> anyhow::Result<(Vec<Duration>, usize, Option<String>)> {
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let mut conn = Conn::connect(&addr)?;
                    let mut lat = Vec::new();
                    let (mut failed, mut first_failure) = (0, None);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if t >= end {
                            break;
                        }
                        let (status, body) = conn.get(&path, &headers)?;
                        if t >= measure_from {
                            lat.push(t.elapsed());
                            if status != 200 {
                                failed += 1;
                                first_failure.get_or_insert_with(|| {
                                    format!("{status} {}", String::from_utf8_lossy(&body))
                                });
                            }
                        }
                    }
                    Ok((lat, failed, first_failure))
                },
            )
        })
        .collect();
    let mut all = Vec::new();
    let (mut failed, mut first_failure) = (0, None);
    let mut error = None;
    for t in threads {
        match t.join().expect("load thread") {
            Ok((lat, f, first)) => {
                all.extend(lat);
                failed += f;
                first_failure = first_failure.or(first);
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = error {
        return Err(e.context(format!("GET {path} on {addr}")));
    }
    Ok(load_of(all, seconds, failed, first_failure))
}

/// `bench serve-bare COMPONENT`, running.
struct BareServer {
    child: Child,
    addr: String,
}

impl BareServer {
    fn start(component: &Path) -> anyhow::Result<BareServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve-bare")
            .arg(component)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting bench serve-bare")?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("bench serve-bare {} did not start", component.display());
        };
        Ok(BareServer {
            addr: addr.to_string(),
            child,
        })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
