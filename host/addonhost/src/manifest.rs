//! `addon-manifest.json`: Heroku's add-on manifest plus addonhost's keys
//! (`plans`, `component`, `limits`, `rotation`, `outbound`).
//!
//! A manifest with a `component` is a plugin run in the sandbox; one with
//! Heroku's `api.production` and no component is a remote add-on: a
//! provider elsewhere that speaks the Add-on Partner API over HTTP.
//!
//! Validation works on the raw JSON rather than through serde so that every
//! error names the field and the rule it broke (`api.config_vars[1]: "kv_url"
//! must match ^[A-Z][0-9A-Z_]+$`), the way Heroku's kensa reports them.
//! Unknown keys are accepted: Heroku manifests carry more than we read.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// The file name the host looks for in every plugin folder.
pub const FILE_NAME: &str = "addon-manifest.json";

/// Default wall-clock deadline of one plugin call.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default deadline of one call of a remote provider (Heroku's).
pub const REMOTE_TIMEOUT_MS: u64 = 30_000;
/// Default memory cap of one plugin call (all its memories together).
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// Default number of calls of one add-on running at once.
pub const DEFAULT_CONCURRENCY: u64 = 64;

/// A validated manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Service slug (`kv`), `^[a-z][a-z0-9-]{1,49}$`.
    pub id: String,
    /// The human-readable service name (`Key-Value Store`), shown in the
    /// catalog and dashboard.
    pub name: String,
    /// Heroku's `api` section: config vars, secrets, regions, requirements.
    pub api: Api,
    /// At least one; exactly one is the default.
    pub plans: Vec<Plan>,
    /// The component, resolved against the manifest's folder (for a remote
    /// add-on, the folder itself: there is no component).
    pub component: PathBuf,
    /// Where a remote add-on is reached (`api.production` and no
    /// `component`); `None` for a plugin.
    pub remote: Option<Remote>,
    /// What one call of the add-on may use (addonhost's `limits` key, defaults
    /// when absent).
    pub limits: Limits,
    /// Whether and how often the server rotates credentials on its own
    /// (addonhost's `rotation` key).
    pub rotation: Rotation,
    /// Where the add-on's own HTTP requests may go (nowhere by default).
    pub outbound: Outbound,
    /// The folder holding the manifest.
    pub dir: PathBuf,
}

/// The manifest's `api` object (Heroku's format).
#[derive(Debug, Clone, Serialize)]
pub struct Api {
    /// Prefix of every config var (`KV`); the default attachment name.
    pub config_vars_prefix: String,
    /// Every var the add-on may ever set, each starting with `PREFIX_`.
    pub config_vars: Vec<String>,
    /// The Partner API secret (`api.password`, at least 32 characters): the
    /// Basic auth password of every Partner API call between the platform
    /// and the add-on's provider. Never serialized.
    #[serde(skip)]
    pub password: String,
    /// The shared SSO secret (`api.sso_salt`, at least 32 characters) the SSO
    /// tokens are hashed with. Never serialized.
    #[serde(skip)]
    pub sso_salt: String,
    /// Where the add-on is offered (`api.regions`); always contains `us` or
    /// `*`.
    pub regions: Vec<String>,
    /// Platform features the add-on asks for (`api.requires`): `attachable`,
    /// `many_per_app` (several resources on one app, the second under a
    /// generated name).
    pub requires: Vec<String>,
    /// `api.version` as written (Heroku's `"3"`), `None` when absent; not
    /// interpreted by the host.
    pub version: Option<String>,
    /// The secret a provider presents at the platform's `/oauth/token`
    /// (`api.client_secret`; the `password` when absent).
    #[serde(skip)]
    pub client_secret: String,
}

/// A remote provider's endpoints, from Heroku's `api.production`: a string
/// base URL (`/heroku/resources` appended; SSO at `<resources>/<id>`) or
/// `{"base_url": <resources URL>, "sso_url": …}` (SSO posts to `sso_url`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Remote {
    /// `POST` here provisions; `<resources_url>/<id>` names a resource.
    pub resources_url: String,
    /// Where the signed SSO form is posted; `None`: `<resources_url>/<id>`.
    pub sso_url: Option<String>,
}

impl Remote {
    /// Where the SSO form for the provider's resource `id` is posted.
    pub fn sso_action(&self, id: &str) -> String {
        match &self.sso_url {
            Some(u) => u.clone(),
            None => format!("{}/{}", self.resources_url, urlencode_segment(id)),
        }
    }
}

/// `s` as one URL path segment.
pub fn urlencode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// One plan the add-on offers (addonhost's `plans` key).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The plan's slug (`mini`), unique in the manifest; what `addons:create
    /// svc:plan` names.
    pub id: String,
    /// Its human-readable name.
    pub name: String,
    /// Whether it is the plan given when none is asked for; exactly one plan of
    /// a manifest is.
    pub default: bool,
}

/// Per-call limits a plugin runs under.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Limits {
    /// Memory cap of one call in MiB, all its memories together (1–4096;
    /// default [`DEFAULT_MEMORY_MB`]).
    pub memory_mb: u64,
    /// Wall-clock deadline of one call in milliseconds (1–600000; default
    /// [`DEFAULT_TIMEOUT_MS`], or [`REMOTE_TIMEOUT_MS`] for a remote provider).
    pub timeout_ms: u64,
    /// Calls of the add-on that may run at once; more are refused as busy.
    pub concurrency: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Credential rotation settings (addonhost's `rotation` key).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Rotation {
    /// The server calls `rotate` this often, when set.
    pub every_seconds: Option<u64>,
    /// How long the add-on keeps a rotated-out credential valid (informational
    /// for the host: the add-on enforces it).
    pub grace_seconds: Option<u64>,
}

/// Outbound HTTP settings (addonhost's `outbound` key).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Outbound {
    /// `scheme://host[:port]` patterns the add-on's calls may reach (see
    /// [`crate::outbound`]); empty: none.
    pub allowed_hosts: crate::outbound::AllowList,
}

/// A manifest that failed to load: which file, which field, which rule.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {field}: {rule}")]
pub struct ManifestError {
    /// The manifest file that failed.
    pub path: PathBuf,
    /// The field at fault, as a JSON path (`api.config_vars[2]`).
    pub field: String,
    /// The rule it broke, phrased to follow the field (`must be an array`).
    pub rule: String,
}

impl Manifest {
    /// The plan marked default (validation guarantees there is one).
    pub fn default_plan(&self) -> &Plan {
        self.plans
            .iter()
            .find(|p| p.default)
            .unwrap_or(&self.plans[0])
    }

    /// The plan with id `id`, `None` if the add-on does not offer it.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// Reads and validates `dir/addon-manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            field: "(file)".into(),
            rule: format!("cannot be read: {e}"),
        })?;
        Manifest::parse(&text, dir).map_err(|(field, rule)| ManifestError { path, field, rule })
    }

    /// Validates manifest JSON whose relative paths resolve against `dir`.
    /// The error is (field, rule).
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, (String, String)> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ("(json)".to_string(), format!("is not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| err("(root)", "must be a JSON object"))?;

        let id = required_str(root, "id", "id")?;
        if !is_slug(&id) {
            return Err(err(
                "id",
                format!("{id:?} must match ^[a-z][a-z0-9-]{{1,49}}$ (lowercase letters, digits, dashes)"),
            ));
        }
        let name = required_str(root, "name", "name")?;

        let api = root
            .get("api")
            .ok_or_else(|| err("api", "is required"))?
            .as_object()
            .ok_or_else(|| err("api", "must be an object"))?;
        if api.contains_key("username") {
            return Err(err(
                "api.username",
                "is deprecated and rejected: the add-on's id is its username; remove the key",
            ));
        }
        let password = required_str(api, "password", "api.password")?;
        if password.chars().count() < 32 {
            return Err(err(
                "api.password",
                "must be at least 32 characters of random data",
            ));
        }
        let sso_salt = required_str(api, "sso_salt", "api.sso_salt")?;
        if sso_salt.chars().count() < 32 {
            return Err(err(
                "api.sso_salt",
                "must be at least 32 characters of random data",
            ));
        }
        let regions = string_array(api, "regions", "api.regions")?
            .ok_or_else(|| err("api.regions", "is required (an array such as [\"*\"])"))?;
        if !regions.iter().any(|r| r == "us" || r == "*") {
            return Err(err("api.regions", "must contain \"us\" or \"*\""));
        }
        let prefix = match api.get("config_vars_prefix") {
            None | Some(Value::Null) => id.to_ascii_uppercase().replace('-', "_"),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(err("api.config_vars_prefix", "must be a string")),
        };
        if !is_prefix(&prefix) {
            return Err(err(
                "api.config_vars_prefix",
                format!("{prefix:?} must match ^[A-Z][0-9A-Z_]*$"),
            ));
        }
        let config_vars = string_array(api, "config_vars", "api.config_vars")?
            .ok_or_else(|| err("api.config_vars", "is required (an array of var names)"))?;
        for (i, var) in config_vars.iter().enumerate() {
            let field = format!("api.config_vars[{i}]");
            if !is_var_name(var) {
                return Err(err(&field, format!("{var:?} must match ^[A-Z][0-9A-Z_]+$")));
            }
            if !var.starts_with(&format!("{prefix}_")) {
                return Err(err(
                    &field,
                    format!("{var:?} must start with the prefix \"{prefix}_\""),
                ));
            }
            if config_vars[..i].contains(var) {
                return Err(err(&field, format!("{var:?} is listed twice")));
            }
            if let Some(why) = crate::reserved::reason(var) {
                return Err(err(
                    &field,
                    format!("{why}; choose another config_vars_prefix"),
                ));
            }
        }
        let requires = string_array(api, "requires", "api.requires")?.unwrap_or_default();
        for (i, r) in requires.iter().enumerate() {
            if r != "attachable" && r != "many_per_app" {
                return Err(err(
                    &format!("api.requires[{i}]"),
                    format!("{r:?} is unknown (known: attachable, many_per_app)"),
                ));
            }
        }
        let version = match api.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(err("api.version", "must be a string")),
        };

        let client_secret = match api.get("client_secret") {
            None | Some(Value::Null) => password.clone(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => return Err(err("api.client_secret", "must be a non-blank string")),
        };

        let plans = parse_plans(root)?;

        let remote = match root.get("component") {
            None | Some(Value::Null) => Some(parse_remote(api)?),
            Some(_) => None,
        };
        let component = match &remote {
            Some(_) => String::new(),
            None => required_str(root, "component", "component")?,
        };
        let component_path = Path::new(&component);
        if component_path.is_absolute()
            || component_path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(err(
                "component",
                format!("{component:?} must be a path inside the manifest's folder"),
            ));
        }

        let mut limits = parse_limits(root)?;
        if remote.is_some()
            && root
                .get("limits")
                .and_then(|l| l.get("timeout_ms"))
                .is_none()
        {
            // Heroku gives a provider 30 seconds to answer.
            limits.timeout_ms = REMOTE_TIMEOUT_MS;
        }
        let rotation = parse_rotation(root)?;
        let outbound = parse_outbound(root)?;

        Ok(Manifest {
            id,
            name,
            api: Api {
                config_vars_prefix: prefix,
                config_vars,
                password,
                sso_salt,
                regions,
                requires,
                version,
                client_secret,
            },
            plans,
            component: dir.join(component_path),
            remote,
            limits,
            rotation,
            outbound,
            dir: dir.to_path_buf(),
        })
    }
}

/// `api.production` of a manifest without a component: the remote
/// provider's endpoints.
fn parse_remote(api: &Map<String, Value>) -> Result<Remote, (String, String)> {
    let http_url = |field: &str, v: &str| -> Result<String, (String, String)> {
        match url::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
                Ok(v.trim_end_matches('/').to_string())
            }
            _ => Err(err(
                field,
                format!(
                    "{:?} must be an http or https URL",
                    crate::util::redact_url(v)
                ),
            )),
        }
    };
    match api.get("production") {
        None | Some(Value::Null) => Err(err(
            "component",
            "is required (or api.production, the URL of a remote add-on that speaks the Add-on Partner API)",
        )),
        Some(Value::String(base)) => Ok(Remote {
            resources_url: format!("{}/heroku/resources", http_url("api.production", base)?),
            sso_url: None,
        }),
        Some(Value::Object(o)) => {
            let base = required_str(o, "base_url", "api.production.base_url")?;
            let sso = required_str(o, "sso_url", "api.production.sso_url")?;
            Ok(Remote {
                resources_url: http_url("api.production.base_url", &base)?,
                sso_url: Some(http_url("api.production.sso_url", &sso)?),
            })
        }
        Some(_) => Err(err(
            "api.production",
            "must be a URL string or an object with base_url and sso_url",
        )),
    }
}

fn err(field: &str, rule: impl Into<String>) -> (String, String) {
    (field.to_string(), rule.into())
}

fn required_str(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<String, (String, String)> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(err(field, "is required")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(err(field, "must not be blank")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(field, "must be a string")),
    }
}

fn string_array(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<Vec<String>>, (String, String)> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| err(&format!("{field}[{i}]"), "must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(err(field, "must be an array")),
    }
}

fn parse_plans(root: &Map<String, Value>) -> Result<Vec<Plan>, (String, String)> {
    let items = match root.get("plans") {
        None | Some(Value::Null) => return Err(err("plans", "is required (at least one plan)")),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(err("plans", "must list at least one plan"))
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("plans", "must be an array")),
    };
    let mut plans = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("plans[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| err(&field, "must be an object"))?;
        let id = required_str(obj, "id", &format!("{field}.id"))?;
        if !is_plan_id(&id) {
            return Err(err(
                &format!("{field}.id"),
                format!("{id:?} must match ^[a-z][a-z0-9-]*$"),
            ));
        }
        if plans.iter().any(|p: &Plan| p.id == id) {
            return Err(err(
                &format!("{field}.id"),
                format!("{id:?} is listed twice"),
            ));
        }
        let name = required_str(obj, "name", &format!("{field}.name"))?;
        let default = match obj.get("default") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(&format!("{field}.default"), "must be true or false")),
        };
        plans.push(Plan { id, name, default });
    }
    match plans.iter().filter(|p| p.default).count() {
        0 => plans[0].default = true,
        1 => {}
        _ => return Err(err("plans", "at most one plan may be the default")),
    }
    Ok(plans)
}

fn bounded_u64(
    obj: &Map<String, Value>,
    key: &str,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, (String, String)> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(err(
                field,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

fn parse_limits(root: &Map<String, Value>) -> Result<Limits, (String, String)> {
    let obj = match root.get("limits") {
        None | Some(Value::Null) => return Ok(Limits::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(err("limits", "must be an object")),
    };
    Ok(Limits {
        memory_mb: bounded_u64(obj, "memory_mb", "limits.memory_mb", 1..=4096)?
            .unwrap_or(DEFAULT_MEMORY_MB),
        timeout_ms: bounded_u64(obj, "timeout_ms", "limits.timeout_ms", 1..=600_000)?
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        concurrency: bounded_u64(obj, "concurrency", "limits.concurrency", 1..=10_000)?
            .unwrap_or(DEFAULT_CONCURRENCY),
    })
}

fn parse_rotation(root: &Map<String, Value>) -> Result<Rotation, (String, String)> {
    let obj = match root.get("rotation") {
        None | Some(Value::Null) => return Ok(Rotation::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(err("rotation", "must be an object")),
    };
    Ok(Rotation {
        every_seconds: bounded_u64(
            obj,
            "every_seconds",
            "rotation.every_seconds",
            1..=u32::MAX as u64,
        )?,
        grace_seconds: bounded_u64(
            obj,
            "grace_seconds",
            "rotation.grace_seconds",
            0..=u32::MAX as u64,
        )?,
    })
}

fn parse_outbound(root: &Map<String, Value>) -> Result<Outbound, (String, String)> {
    let obj = match root.get("outbound") {
        None | Some(Value::Null) => return Ok(Outbound::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(err("outbound", "must be an object")),
    };
    // The add-on's reach: a misspelt key would silently grant nothing, or
    // not what was meant, so unknown keys are refused here.
    if let Some(key) = obj.keys().find(|k| k.as_str() != "allowed_hosts") {
        return Err(err(
            &format!("outbound.{key}"),
            "is unknown (known: allowed_hosts)",
        ));
    }
    let hosts = string_array(obj, "allowed_hosts", "outbound.allowed_hosts")?.unwrap_or_default();
    let allowed_hosts = crate::outbound::AllowList::parse(hosts.iter().map(String::as_str))
        .map_err(|(i, rule)| err(&format!("outbound.allowed_hosts[{i}]"), rule))?;
    Ok(Outbound { allowed_hosts })
}

/// `^[a-z][a-z0-9-]{1,49}$`
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=50).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `^[A-Z][0-9A-Z_]*$`: a config var prefix.
fn is_prefix(s: &str) -> bool {
    s.len() == 1 && s.as_bytes()[0].is_ascii_uppercase() || is_var_name(s)
}

/// `^[a-z][a-z0-9-]*$`, at most 50 characters: a plan id.
fn is_plan_id(s: &str) -> bool {
    s.len() == 1 && s.as_bytes()[0].is_ascii_lowercase() || is_slug(s)
}

/// `^[A-Z][0-9A-Z_]+$`: a config var name.
pub fn is_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "id": "kv", "name": "Key-Value Store",
      "api": {"config_vars_prefix": "KV", "config_vars": ["KV_URL"],
              "password": "0123456789abcdef0123456789abcdef",
              "sso_salt": "fedcba9876543210fedcba9876543210",
              "regions": ["*"], "requires": ["many_per_app"], "version": "3"},
      "plans": [{"id": "mini", "name": "Mini"}, {"id": "pro", "name": "Pro", "default": true}],
      "component": "kv.wasm",
      "limits": {"memory_mb": 32, "timeout_ms": 1000},
      "rotation": {"every_seconds": 60, "grace_seconds": 10}
    }"#;

    fn with(edit: impl FnOnce(&mut Value)) -> Result<Manifest, (String, String)> {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        edit(&mut v);
        Manifest::parse(&v.to_string(), Path::new("/p/kv"))
    }

    fn field_of(r: Result<Manifest, (String, String)>) -> String {
        r.expect_err("manifest should be rejected").0
    }

    #[test]
    fn accepts_valid_manifest_with_addonhost_keys() {
        let m = with(|_| {}).unwrap();
        assert_eq!(m.id, "kv");
        assert_eq!(m.default_plan().id, "pro");
        assert_eq!(m.component, Path::new("/p/kv/kv.wasm"));
        assert_eq!(
            m.limits,
            Limits {
                memory_mb: 32,
                timeout_ms: 1000,
                concurrency: 64
            }
        );
        assert_eq!(m.rotation.every_seconds, Some(60));
    }

    #[test]
    fn prefix_defaults_to_id_uppercased_with_underscores() {
        let m = with(|v| {
            v["id"] = "my-cache".into();
            v["api"]
                .as_object_mut()
                .unwrap()
                .remove("config_vars_prefix");
            v["api"]["config_vars"] = serde_json::json!(["MY_CACHE_URL"]);
        })
        .unwrap();
        assert_eq!(m.api.config_vars_prefix, "MY_CACHE");
    }

    #[test]
    fn limits_default_to_five_seconds_and_64_mib() {
        let m = with(|v| {
            v.as_object_mut().unwrap().remove("limits");
        })
        .unwrap();
        assert_eq!(m.limits, Limits::default());
        assert_eq!(
            m.limits,
            Limits {
                memory_mb: 64,
                timeout_ms: 5000,
                concurrency: 64
            }
        );
    }

    #[test]
    fn rejects_config_vars_that_take_over_processes() {
        let e = with(|v| {
            v["api"]["config_vars_prefix"] = "LD".into();
            v["api"]["config_vars"] = serde_json::json!(["LD_PRELOAD"]);
        })
        .unwrap_err();
        assert_eq!(e.0, "api.config_vars[0]");
        assert!(
            e.1.contains("LD_PRELOAD") && e.1.contains("reserved"),
            "{}",
            e.1
        );
    }

    #[test]
    fn rejects_missing_or_blank_id() {
        assert_eq!(
            field_of(with(|v| {
                v.as_object_mut().unwrap().remove("id");
            })),
            "id"
        );
        assert_eq!(field_of(with(|v| v["id"] = " ".into())), "id");
        assert_eq!(field_of(with(|v| v["id"] = 5.into())), "id");
        assert_eq!(field_of(with(|v| v["id"] = "Bad_Id".into())), "id");
    }

    #[test]
    fn rejects_api_that_is_not_an_object() {
        let e = with(|v| v["api"] = "x".into()).unwrap_err();
        assert_eq!(e, ("api".into(), "must be an object".into()));
    }

    #[test]
    fn rejects_regions_without_us_or_star() {
        assert_eq!(
            field_of(with(|v| v["api"]["regions"] = serde_json::json!(["eu"]))),
            "api.regions"
        );
        assert_eq!(
            field_of(with(|v| v["api"]["regions"] = "us".into())),
            "api.regions"
        );
        assert!(with(|v| v["api"]["regions"] = serde_json::json!(["eu", "us"])).is_ok());
    }

    #[test]
    fn rejects_empty_password_and_short_salt() {
        assert_eq!(
            field_of(with(|v| v["api"]["password"] = "".into())),
            "api.password"
        );
        assert_eq!(
            field_of(with(|v| v["api"]["sso_salt"] = "short".into())),
            "api.sso_salt"
        );
    }

    #[test]
    fn rejects_config_var_not_matching_pattern_or_prefix() {
        let e = with(|v| v["api"]["config_vars"] = serde_json::json!(["KV_URL", "kv_url"]))
            .unwrap_err();
        assert_eq!(e.0, "api.config_vars[1]");
        assert!(e.1.contains("^[A-Z][0-9A-Z_]+$"), "{}", e.1);
        let e = with(|v| v["api"]["config_vars"] = serde_json::json!(["REDIS_URL"])).unwrap_err();
        assert_eq!(e.0, "api.config_vars[0]");
        assert!(e.1.contains("prefix \"KV_\""), "{}", e.1);
        assert_eq!(
            field_of(with(|v| v["api"]["config_vars"] = "KV_URL".into())),
            "api.config_vars"
        );
    }

    #[test]
    fn rejects_deprecated_username() {
        assert_eq!(
            field_of(with(|v| v["api"]["username"] = "kv".into())),
            "api.username"
        );
    }

    #[test]
    fn rejects_bad_plans() {
        assert_eq!(
            field_of(with(|v| v["plans"] = serde_json::json!([]))),
            "plans"
        );
        assert_eq!(
            field_of(with(|v| v["plans"][0]["id"] = "pro".into())),
            "plans[1].id",
            "the second plan with the same id is the duplicate"
        );
        assert_eq!(
            field_of(with(|v| v["plans"][0]["id"] = "Pro Plan".into())),
            "plans[0].id"
        );
        assert_eq!(
            field_of(with(|v| v["plans"][0]["default"] = true.into())),
            "plans"
        );
        assert_eq!(
            field_of(with(|v| v["plans"][1]["name"] = "".into())),
            "plans[1].name"
        );
    }

    #[test]
    fn rejects_component_outside_its_folder_and_bad_limits() {
        assert_eq!(
            field_of(with(|v| v["component"] = "../x.wasm".into())),
            "component"
        );
        assert_eq!(
            field_of(with(|v| v["component"] = "/x.wasm".into())),
            "component"
        );
        assert_eq!(
            field_of(with(|v| v["limits"]["memory_mb"] = 0.into())),
            "limits.memory_mb"
        );
        assert_eq!(
            field_of(with(|v| v["limits"]["timeout_ms"] = "1s".into())),
            "limits.timeout_ms"
        );
    }

    #[test]
    fn outbound_allows_nothing_unless_declared() {
        assert!(with(|_| {}).unwrap().outbound.allowed_hosts.is_empty());
        let m = with(|v| {
            v["outbound"] = serde_json::json!({"allowed_hosts": [
                "https://api.partner.example", "http://127.0.0.1:9000", "https://*.partner.example"
            ]})
        })
        .unwrap();
        assert_eq!(
            m.outbound.allowed_hosts.describe(),
            "https://api.partner.example, http://127.0.0.1:9000, https://*.partner.example"
        );
    }

    #[test]
    fn rejects_bad_outbound_hosts_naming_the_entry() {
        let e = with(|v| {
            v["outbound"] =
                serde_json::json!({"allowed_hosts": ["https://ok.example", "ftp://x.example"]})
        })
        .unwrap_err();
        assert_eq!(e.0, "outbound.allowed_hosts[1]");
        assert!(
            e.1.contains("ftp://x.example") && e.1.contains("http or https"),
            "{}",
            e.1
        );
        let e = with(|v| v["outbound"] = serde_json::json!({"allowed_hosts": ["https://*"]}))
            .unwrap_err();
        assert_eq!(e.0, "outbound.allowed_hosts[0]");
        assert_eq!(
            field_of(with(
                |v| v["outbound"] = serde_json::json!({"allowed_host": []})
            )),
            "outbound.allowed_host"
        );
        assert_eq!(
            field_of(with(
                |v| v["outbound"] = serde_json::json!({"allowed_hosts": "https://a.example"})
            )),
            "outbound.allowed_hosts"
        );
        assert_eq!(field_of(with(|v| v["outbound"] = "all".into())), "outbound");
    }

    #[test]
    fn remote_manifest_takes_either_production_form() {
        let m = with(|v| {
            v.as_object_mut().unwrap().remove("component");
            v["api"]["production"] = "https://kv.example.com/".into();
        })
        .unwrap();
        let r = m.remote.expect("a manifest without a component is remote");
        assert_eq!(r.resources_url, "https://kv.example.com/heroku/resources");
        assert_eq!(
            r.sso_action("kv 1"),
            "https://kv.example.com/heroku/resources/kv%201"
        );
        let m = with(|v| {
            v.as_object_mut().unwrap().remove("component");
            v["api"]["production"] = serde_json::json!({
                "base_url": "https://kv.example.com/partner/resources",
                "sso_url": "https://kv.example.com/sso"});
        })
        .unwrap();
        let r = m.remote.unwrap();
        assert_eq!(r.resources_url, "https://kv.example.com/partner/resources");
        assert_eq!(r.sso_action("kv-1"), "https://kv.example.com/sso");
        assert!(with(|_| {}).unwrap().remote.is_none(), "a component wins");
    }

    #[test]
    fn rejects_remote_manifest_without_urls() {
        let no_component = |v: &mut Value| {
            v.as_object_mut().unwrap().remove("component");
        };
        assert_eq!(field_of(with(no_component)), "component");
        assert_eq!(
            field_of(with(|v| {
                no_component(v);
                v["api"]["production"] = "ftp://x".into();
            })),
            "api.production"
        );
        assert_eq!(
            field_of(with(|v| {
                no_component(v);
                v["api"]["production"] = serde_json::json!({"base_url": "https://x"});
            })),
            "api.production.sso_url"
        );
    }

    #[test]
    fn load_error_names_the_file() {
        let e = Manifest::load(Path::new("/nonexistent/plugin")).unwrap_err();
        assert!(e.to_string().contains("addon-manifest.json"), "{e}");
    }
}
