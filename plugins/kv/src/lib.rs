//! A key-value database partner, as an addonhost add-on.
//!
//! Provisioning creates a private namespace with generated credentials and
//! returns `KV_URL` (`http://<user>:<password>@host/addons/kv/<namespace>`),
//! where the host serves the add-on's HTTP routes. Everything the add-on
//! knows lives in its private KV:
//! - `ns/<id>`: the namespace record (plan, credentials with grace window)
//! - `uuid/<uuid>`: the namespace id made for a platform uuid (idempotency)
//! - `data/<id>/<key>`: the namespace's stored values
//!
//! HTTP (relative to `<server>/addons/kv`):
//! - `GET|PUT|DELETE /<namespace>/<key>` with basic auth from `KV_URL`
//!   (the previous password works through the rotation grace window)
//! - `GET /<namespace>`: the keys, as JSON
//! - `GET /dashboard/<namespace>` after SSO: the keys and a "roll credentials"
//!   button; `POST /dashboard/<namespace>/roll` rotates the password and
//!   updates `KV_URL` through the config capability (partner-initiated)

use addonhost_sdk::credentials::{hex_id, secret, Rotating};
use addonhost_sdk::http::{escape, Handler, Request, Response};
use addonhost_sdk::manifest::Manifest;
use addonhost_sdk::{
    sso, store, AddonError, Config, Credentials, Lifecycle, Login, ProvisionRequest,
    ProvisionResult, Provisioned, Session, Sso, Verdict,
};
use serde::{Deserialize, Serialize};

struct Kv;

fn manifest() -> Manifest {
    Manifest::embedded(include_str!("../addon-manifest.json"))
}

/// Keys a namespace may hold on each plan.
fn key_limit(plan: &str) -> Option<u64> {
    match plan {
        "mini" => Some(100),
        "pro" => Some(100_000),
        _ => None,
    }
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
    /// How long a rotated-out password keeps working (`--grace_seconds N`
    /// at provisioning; the manifest's `rotation.grace_seconds` by default).
    #[serde(default = "default_grace")]
    grace_seconds: i64,
}

fn default_grace() -> i64 {
    manifest().rotation.grace_seconds
}

impl Namespace {
    fn url(&self) -> String {
        with_userinfo(&self.base_url, &self.id, &self.password.current, &self.id)
    }

    fn config(&self) -> Config {
        vec![("KV_URL".to_string(), self.url())]
    }
}

/// `http://host/p` + user, password, namespace → `http://user:password@host/p/namespace`.
fn with_userinfo(base: &str, user: &str, password: &str, path: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{password}@{rest}/{path}"),
        None => format!("http://{user}:{password}@{base}/{path}"),
    }
}

fn load(id: &str) -> Result<Namespace, AddonError> {
    store::get::<Namespace>(&format!("ns/{id}"))?
        .ok_or_else(|| AddonError::new(format!("no namespace {id}")))
}

fn save(ns: &Namespace) -> Result<(), AddonError> {
    store::put(&format!("ns/{}", ns.id), ns)
}

impl Lifecycle for Kv {
    fn provision(req: ProvisionRequest) -> Result<ProvisionResult, AddonError> {
        let grace_seconds =
            addonhost_sdk::credentials::grace_from_options(&req.options, default_grace())?;
        if key_limit(&req.plan).is_none() {
            return Err(AddonError::new(format!(
                "unknown plan {:?}; kv offers mini and pro",
                req.plan
            )));
        }
        // A retry with the same uuid answers the namespace already made.
        if let Some(id) = store::get::<String>(&format!("uuid/{}", req.uuid))? {
            let ns = load(&id)?;
            return Ok(ProvisionResult::Provisioned(Provisioned {
                id: ns.id.clone(),
                config: ns.config(),
                message: Some(format!("namespace {} (already provisioned)", ns.id)),
            }));
        }
        let ns = Namespace {
            id: format!("kv-{}", hex_id(6)),
            uuid: req.uuid.clone(),
            app: req.app,
            plan: req.plan,
            base_url: req.base_url,
            password: Rotating::new(secret(32)),
            created_at: addonhost_sdk::now(),
            grace_seconds,
        };
        save(&ns)?;
        store::put(&format!("uuid/{}", req.uuid), &ns.id)?;
        addonhost_sdk::info(&format!("created namespace {} for {}", ns.id, ns.app));
        Ok(ProvisionResult::Provisioned(Provisioned {
            id: ns.id.clone(),
            config: ns.config(),
            message: Some(format!(
                "namespace {} is ready ({} keys on {})",
                ns.id,
                key_limit(&ns.plan).unwrap_or(0),
                ns.plan
            )),
        }))
    }

    fn deprovision(id: String) -> Result<(), AddonError> {
        let ns = load(&id)?;
        store::delete_prefix(&format!("data/{id}/"));
        addonhost_sdk::host::kv::delete(&format!("uuid/{}", ns.uuid));
        addonhost_sdk::host::kv::delete(&format!("ns/{id}"));
        addonhost_sdk::info(&format!("deleted namespace {id}"));
        Ok(())
    }

    fn change_plan(id: String, plan: String) -> Result<Option<Config>, AddonError> {
        let limit = key_limit(&plan).ok_or_else(|| {
            AddonError::new(format!("unknown plan {plan:?}; kv offers mini and pro"))
        })?;
        let mut ns = load(&id)?;
        let used = addonhost_sdk::host::kv::count_keys(&format!("data/{id}/"));
        if used > limit {
            return Err(AddonError::new(format!(
                "namespace {id} holds {used} keys; plan {plan} allows {limit}: delete keys first"
            )));
        }
        ns.plan = plan;
        save(&ns)?;
        // The URL does not depend on the plan: the config stays as it is.
        Ok(None)
    }
}

/// New password, the old one valid through the grace window.
fn roll(id: &str) -> Result<Namespace, AddonError> {
    let mut ns = load(id)?;
    let grace = ns.grace_seconds;
    ns.password.rotate(secret(32), addonhost_sdk::now(), grace);
    save(&ns)?;
    addonhost_sdk::info(&format!(
        "rotated credentials of {id}; the previous password works for {grace} s"
    ));
    Ok(ns)
}

impl Credentials for Kv {
    fn rotate(id: String) -> Result<Config, AddonError> {
        Ok(roll(&id)?.config())
    }
}

impl Handler for Kv {
    fn handle(req: Request) -> Response {
        let segs = req.segments();
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["dashboard", id]) => dashboard(&req, id),
            ("POST", ["dashboard", id, "roll"]) => dashboard_roll(&req, id),
            (_, [id]) => with_auth(&req, id, |ns| {
                if req.method != "GET" {
                    return Response::text(405, "use GET on a namespace\n");
                }
                let prefix = format!("data/{}/", ns.id);
                let keys: Vec<String> = addonhost_sdk::host::kv::list_keys(&prefix)
                    .into_iter()
                    .map(|k| k[prefix.len()..].to_string())
                    .collect();
                Response::json(
                    200,
                    &serde_json::json!({"namespace": ns.id, "plan": ns.plan, "keys": keys}),
                )
            }),
            (_, [id, key]) => with_auth(&req, id, |ns| data(&req, &ns, key)),
            _ => Response::text(404, "not found\n"),
        }
    }
}

/// Runs `f` when the request carries the namespace's credentials.
fn with_auth(req: &Request, id: &str, f: impl FnOnce(Namespace) -> Response) -> Response {
    let Ok(Some(ns)) = store::get::<Namespace>(&format!("ns/{id}")) else {
        return Response::text(404, "no such namespace\n");
    };
    match req.basic_auth() {
        Some((user, password))
            if user == ns.id && ns.password.accepts(&password, addonhost_sdk::now()) =>
        {
            f(ns)
        }
        _ => Response::unauthorized("kv"),
    }
}

fn data(req: &Request, ns: &Namespace, key: &str) -> Response {
    if key.is_empty() || key.len() > 256 {
        return Response::text(400, "keys are 1 to 256 bytes\n");
    }
    let k = format!("data/{}/{key}", ns.id);
    match req.method.as_str() {
        "GET" => match addonhost_sdk::host::kv::get(&k) {
            Some(v) => Response::new(200, "application/octet-stream", v),
            None => Response::text(404, format!("no key {key}\n")),
        },
        "PUT" | "POST" => {
            let exists = addonhost_sdk::host::kv::get(&k).is_some();
            let used = addonhost_sdk::host::kv::count_keys(&format!("data/{}/", ns.id));
            if !exists && used >= key_limit(&ns.plan).unwrap_or(0) {
                return Response::text(
                    507,
                    format!("plan {} is full; upgrade to store more keys\n", ns.plan),
                );
            }
            match addonhost_sdk::host::kv::set(&k, &req.body) {
                Ok(()) => Response::text(if exists { 200 } else { 201 }, "stored\n"),
                Err(e) => Response::text(413, format!("{e}\n")),
            }
        }
        "DELETE" => {
            addonhost_sdk::host::kv::delete(&k);
            Response::text(204, "")
        }
        _ => Response::text(405, "use GET, PUT or DELETE\n"),
    }
}

/// The namespace the signed-in user may manage, or the response refusing.
fn signed_in(req: &Request, id: &str) -> Result<(String, Namespace), Response> {
    match req.session() {
        Some((user, resource)) if resource == id => match load(id) {
            Ok(ns) => Ok((user, ns)),
            Err(_) => Err(Response::text(404, "no such namespace\n")),
        },
        _ => Err(Response::html(
            403,
            "<h1>403</h1><p>Sign in from the addonhost dashboard.</p>",
        )),
    }
}

fn dashboard(req: &Request, id: &str) -> Response {
    let (user, ns) = match signed_in(req, id) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let prefix = format!("data/{}/", ns.id);
    let keys = addonhost_sdk::host::kv::list_keys(&prefix);
    let rows: String = keys
        .iter()
        .map(|k| format!("<li><code>{}</code></li>", escape(&k[prefix.len()..])))
        .collect();
    let rotated = match (ns.password.rotated_at, ns.password.previous_expires_at) {
        (Some(at), Some(until)) => format!(
            "<p>Credentials last rolled at {at} (Unix time); the previous password works until {until}.</p>"
        ),
        _ => "<p>Credentials never rolled.</p>".into(),
    };
    Response::html(
        200,
        format!(
            r#"<!doctype html><html><head><meta charset="utf-8"><title>kv · {id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;color:#222}}
h1{{font-size:1.4rem}} code{{background:#f3f3f3;padding:0 .3rem}} .card{{border:1px solid #ddd;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}}
button{{background:#6b46c1;color:#fff;border:0;border-radius:6px;padding:.5rem 1rem;cursor:pointer}}</style></head>
<body><h1>Key-Value Store · namespace <code id="namespace">{id}</code></h1>
<p>Signed in as <strong id="user">{user}</strong> · app <code>{app}</code> · plan <strong>{plan}</strong></p>
<div class="card"><h2>Keys (<span id="key-count">{count}</span>)</h2><ul id="keys">{rows}</ul></div>
<div class="card"><h2>Credentials</h2>{rotated}
<form method="post" action="{id}/roll"><button id="roll" type="submit">Roll credentials</button></form></div>
</body></html>"#,
            id = escape(&ns.id),
            user = escape(&user),
            app = escape(&ns.app),
            plan = escape(&ns.plan),
            count = keys.len(),
        ),
    )
}

/// Partner-initiated rotation from the dashboard: a new password, and
/// `KV_URL` updated on the app through the config capability.
fn dashboard_roll(req: &Request, id: &str) -> Response {
    let ns = match signed_in(req, id) {
        Ok((_, ns)) => ns,
        Err(r) => return r,
    };
    let ns = match roll(&ns.id) {
        Ok(ns) => ns,
        Err(e) => return Response::text(500, e.message),
    };
    let changes = vec![("KV_URL".to_string(), Some(ns.url()))];
    if let Err(e) = addonhost_sdk::host::config::update(
        &ns.id,
        &changes,
        "credentials rolled from the kv dashboard",
    ) {
        return Response::text(409, format!("the host refused the new KV_URL: {e}\n"));
    }
    // Relative, so it holds whatever URL the server is reached at.
    Response::redirect(&format!("../{}", ns.id))
}

impl Sso for Kv {
    fn verify(login: Login) -> Verdict {
        let salt = manifest().api.sso_salt;
        if let Err(denied) = sso::check_login(&login, &salt, addonhost_sdk::now()) {
            return Verdict::Denied(denied.to_string());
        }
        match store::get::<Namespace>(&format!("ns/{}", login.id)) {
            Ok(Some(ns)) => Verdict::Ok(Session {
                user: login.email,
                landing: format!("/dashboard/{}", ns.id),
            }),
            Ok(None) => Verdict::Denied(format!("no namespace {}", login.id)),
            Err(e) => Verdict::Denied(e.message),
        }
    }
}

addonhost_sdk::export_addon!(Kv);
addonhost_sdk::export_http!(Kv);
