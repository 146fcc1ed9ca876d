//! A test-only add-on that attacks its host. `addons:create hostile -- --attack X`
//! picks the attack run inside `provision`; `rotate` probes the config
//! capability with the names and ids given at provisioning (`--read`,
//! `--foreign`, `--write`) and reports what it saw in `HOSTILE_SEEN`.

use std::collections::BTreeMap;

use addonhost_sdk::host::config;
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
    /// How `sso.verify` misbehaves (`--sso hang|yes`).
    #[serde(default)]
    sso: Option<String>,
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
        let mut cfg: Config = vec![("HOSTILE_URL".into(), url)];
        match option(&req, "attack").unwrap_or("none") {
            "none" => {}
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
            "huge" => cfg.push(("HOSTILE_SEEN".into(), "x".repeat(16 << 20))),
            "bad-url" => cfg[0].1 = "not a url".into(),
            "unlisted-var" => cfg.push(("DATABASE_URL".into(), "postgres://evil@db/x".into())),
            "ambient" => {
                let seen = probe_ambient();
                cfg.push(("HOSTILE_SEEN".into(), serde_json::to_string(&seen).unwrap()));
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
        };
        store::put(&format!("probe/{id}"), &probe)?;
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
        let probe: Probe = store::get(&format!("probe/{id}"))?.unwrap_or_default();
        if probe.rotate_fail {
            return Err(AddonError::new("the credential service is unreachable"));
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
    /// host cannot fix, but whose session must still open only this add-on).
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
            _ => Verdict::Denied("the hostile add-on has no dashboard".into()),
        }
    }
}

addonhost_sdk::export_addon!(Hostile);
