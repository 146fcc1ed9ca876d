//! `plugins:check`: a conformance checker for add-on authors, in the spirit
//! of Heroku's kensa. It loads one add-on folder into the real runtime, with
//! in-memory capabilities instead of the store, and walks the contract:
//! manifest, provision (and its idempotency), plan change, rotation, SSO
//! (valid; wrong token, kensa's `token=invalid`, wrong resource_token,
//! stale, future), deprovision,
//! and that every outbound request went to a host the manifest declares.
//!
//! Each check is a function of its own that answers an `Outcome`;
//! [`check`] only runs them in order and stops where a failure leaves
//! nothing for the later ones to test (no manifest, no component, no
//! resource).

use std::path::Path;

use serde::Serialize;

use addonhost::manifest::Manifest;
use addonhost::platform::{validate, OutboundPolicy, OutboundView};
use addonhost::runtime::capabilities::InMemory;
use addonhost::runtime::{
    ArtifactCache, Login, Plugin, ProvisionRequest, ProvisionResult, Runtime, Verdict,
};
use addonhost::sso;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked, as the report names it.
    pub name: &'static str,
    /// Whether the add-on passed.
    pub passed: bool,
    /// Why it failed, or what was seen.
    pub detail: String,
}

/// What one check found: `Ok(detail)` when it passed, `Err(detail)` when
/// not, the detail saying what the add-on did.
type Outcome = Result<String, String>;

/// Config vars as an add-on answers them.
type Vars = Vec<(String, String)>;

fn result(name: &'static str, outcome: Outcome) -> CheckResult {
    match outcome {
        Ok(detail) => CheckResult {
            name,
            passed: true,
            detail,
        },
        Err(detail) => CheckResult {
            name,
            passed: false,
            detail,
        },
    }
}

/// Records a check the later ones need the value of; answers that value
/// when the check passed.
fn gate<T>(
    out: &mut Vec<CheckResult>,
    name: &'static str,
    outcome: Result<(T, String), String>,
) -> Option<T> {
    match outcome {
        Ok((value, detail)) => {
            out.push(result(name, Ok(detail)));
            Some(value)
        }
        Err(detail) => {
            out.push(result(name, Err(detail)));
            None
        }
    }
}

/// Runs every check against the add-on in `dir`, provisioning with `options`.
pub async fn check(
    dir: &Path,
    options: Vec<(String, String)>,
    cache: Option<ArtifactCache>,
    outbound: &OutboundPolicy,
    trust: &addonhost::tls::Trust,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let Some(manifest) = gate(&mut out, "manifest is valid", manifest_is_valid(dir)) else {
        return out;
    };
    let runtime = match Runtime::new(cache) {
        Ok(r) => r,
        Err(e) => {
            out.push(result("component loads", Err(format!("{e:#}"))));
            return out;
        }
    };
    let Some(plugin) = gate(
        &mut out,
        "component implements the addon world",
        component_implements_the_world(&runtime, &manifest),
    ) else {
        return out;
    };

    let caps = InMemory::default();
    // The add-on's calls reach what the operator's options grant it, as on
    // a platform; what it reaches beyond, and what it declares that is not
    // granted, is reported.
    let outbound_view = outbound.view(&manifest);
    let mut grant = outbound.grant(&manifest);
    grant.trust = trust.clone();
    caps.grant_outbound(grant);
    let request = provision_request(&manifest, options);
    let (outcome, provisioned) =
        provision_returns_valid_vars(&plugin, &caps, &manifest, &request).await;
    out.push(result(
        "provision returns an id and valid manifest vars",
        outcome,
    ));
    let Some((id, config)) = provisioned else {
        out.push(result(
            "outbound requests go only to declared hosts",
            outbound_stays_declared(&caps, &outbound_view),
        ));
        return out;
    };
    caps.set_config(&id, config.clone());
    let r = Resource {
        manifest: &manifest,
        plugin: &plugin,
        caps,
        uuid: request.uuid.clone(),
        id,
        config,
    };

    out.push(result(
        "provision with the same uuid is idempotent",
        provision_is_idempotent(&r, &request).await,
    ));
    out.push(result(
        "change-plan moves to another plan",
        change_plan_moves_to_another_plan(&r, &request.plan).await,
    ));
    out.push(result(
        "rotate changes the credentials",
        rotate_changes_the_credentials(&r).await,
    ));
    let now = addonhost::util::unix_now();
    out.push(result(
        "sso verify accepts a valid token",
        sso_verify_accepts(&r, r.login(now)).await,
    ));
    for (name, login) in forged_logins(&r, now) {
        out.push(result(name, sso_verify_rejects(&r, login).await));
    }
    out.push(result(
        "deprovision succeeds",
        deprovision_succeeds(&r).await,
    ));
    out.push(result(
        "outbound requests go only to declared hosts",
        outbound_stays_declared(&r.caps, &outbound_view),
    ));
    out
}

/// Every outbound request the checks' calls made was within what the add-on
/// may reach: declared in `outbound.allowed_hosts` (a name reaching a public
/// address) and, for a non-public address, granted by the operator. What it
/// declares but is not granted is said either way.
fn outbound_stays_declared(caps: &InMemory, view: &OutboundView) -> Outcome {
    let declared = view.declared.describe();
    let not_granted = match view.not_granted.is_empty() {
        true => String::new(),
        false => format!(
            "; declared but not granted by the operator: {} (--outbound-grant or --outbound-hosts)",
            view.not_granted.describe()
        ),
    };
    let refused = caps.refused();
    if refused.is_empty() {
        return Ok(format!("none refused (declared: {declared}{not_granted})"));
    }
    let mut whys: Vec<String> = Vec::new();
    for (_, why) in refused {
        if !whys.contains(&why) {
            whys.push(why);
        }
    }
    Err(format!(
        "{} refused: {}{not_granted}",
        whys.len(),
        addonhost::util::truncate(&whys.join(" / "), 1500)
    ))
}

/// The add-on under test and the resource the checks provisioned with it.
struct Resource<'a> {
    manifest: &'a Manifest,
    plugin: &'a Plugin,
    caps: InMemory,
    /// The platform's uuid of the resource.
    uuid: String,
    /// The add-on's own id of the resource.
    id: String,
    /// The vars provision answered (none when it is pending).
    config: Vars,
}

impl Resource<'_> {
    /// The capabilities of one call: the same in-memory state every time.
    fn caps(&self) -> Box<InMemory> {
        Box::new(self.caps.clone())
    }

    /// The login the platform would post at `timestamp`, correctly signed.
    fn login(&self, timestamp: i64) -> Login {
        let salt = &self.manifest.api.sso_salt;
        Login {
            id: self.id.clone(),
            token: sso::token(&self.id, salt, timestamp),
            resource_id: self.uuid.clone(),
            resource_token: sso::token(&self.uuid, salt, timestamp),
            timestamp,
            email: "check@addonhost.local".into(),
            app: "check-app".into(),
            context_app: "check-app".into(),
            nav_data: "{}".into(),
            params: Vec::new(),
        }
    }
}

fn manifest_is_valid(dir: &Path) -> Result<(Manifest, String), String> {
    let m = Manifest::load(dir).map_err(|e| e.to_string())?;
    let plans = m
        .plans
        .iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let detail = format!("{} with plans {plans}", m.id);
    Ok((m, detail))
}

fn component_implements_the_world(
    runtime: &Runtime,
    manifest: &Manifest,
) -> Result<(Plugin, String), String> {
    let plugin = runtime
        .load(&manifest.id, &manifest.component, manifest.limits)
        .map_err(|e| format!("{e:#}"))?;
    Ok((plugin, manifest.component.display().to_string()))
}

/// The request a platform sends for a new resource on the default plan.
fn provision_request(manifest: &Manifest, options: Vars) -> ProvisionRequest {
    ProvisionRequest {
        uuid: uuid::Uuid::new_v4().to_string(),
        app: "check-app".into(),
        name: manifest.api.config_vars_prefix.clone(),
        plan: manifest.default_plan().id.clone(),
        region: "us".into(),
        options,
        base_url: format!("http://127.0.0.1:5000/addons/{}", manifest.id),
    }
}

/// Provisions; the resource (id and vars) comes back whenever the call
/// answered, so that invalid vars fail this check without stopping the
/// others.
async fn provision_returns_valid_vars(
    plugin: &Plugin,
    caps: &InMemory,
    manifest: &Manifest,
    request: &ProvisionRequest,
) -> (Outcome, Option<(String, Vars)>) {
    match plugin
        .provision(Box::new(caps.clone()), request.clone())
        .await
    {
        Ok(ProvisionResult::Provisioned(p)) => {
            let outcome = validate::partner_id(&p.id)
                .and_then(|_| validate::addon_config(manifest, &p.config))
                .map(|_| format!("id {} with {}", p.id, names(&p.config)));
            (outcome, Some((p.id, p.config)))
        }
        Ok(ProvisionResult::Pending(p)) => (
            Ok(format!("pending {} (config follows later)", p.id)),
            Some((p.id, Vec::new())),
        ),
        Err(e) => (Err(e.to_string()), None),
    }
}

async fn provision_is_idempotent(r: &Resource<'_>, request: &ProvisionRequest) -> Outcome {
    match r.plugin.provision(r.caps(), request.clone()).await {
        Ok(ProvisionResult::Provisioned(p)) if p.id == r.id => {
            Ok(format!("answered {} again", r.id))
        }
        Ok(ProvisionResult::Pending(p)) if p.id == r.id => Ok(format!("answered {} again", r.id)),
        Ok(other) => Err(format!("a second resource was made: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn change_plan_moves_to_another_plan(r: &Resource<'_>, current: &str) -> Outcome {
    let Some(other) = r.manifest.plans.iter().find(|p| p.id != current) else {
        return Ok("only one plan: nothing to change".into());
    };
    match r.plugin.change_plan(r.caps(), &r.id, &other.id).await {
        Ok(Some(c)) => validate::addon_config(r.manifest, &c)
            .map(|_| format!("to {} with new config {}", other.id, names(&c))),
        Ok(None) => Ok(format!("to {}, config unchanged", other.id)),
        Err(e) => Err(e.to_string()),
    }
}

async fn rotate_changes_the_credentials(r: &Resource<'_>) -> Outcome {
    match r.plugin.rotate(r.caps(), &r.id).await {
        Ok(c) if c != r.config => {
            validate::addon_config(r.manifest, &c).map(|_| format!("new {}", names(&c)))
        }
        Ok(_) => Err("rotate answered the same config: the credentials did not change".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn sso_verify_accepts(r: &Resource<'_>, login: Login) -> Outcome {
    match r.plugin.verify(r.caps(), login).await {
        Ok(Verdict::Ok(s)) => Ok(format!("lands {} on {}", s.user, s.landing)),
        Ok(Verdict::Denied(why)) => Err(format!("denied a valid login: {why}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Logins a conforming add-on refuses, each breaking one rule of CONTRACT
/// §SSO, under the name of its check.
fn forged_logins(r: &Resource<'_>, now: i64) -> Vec<(&'static str, Login)> {
    let salt = &r.manifest.api.sso_salt;
    let wrong_token = Login {
        token: "0".repeat(40),
        ..r.login(now)
    };
    // Signed with the right salt and time, but for another resource: only an
    // add-on that checks resource_token against its own uuid refuses it.
    let other_resource = uuid::Uuid::new_v4().to_string();
    let wrong_resource_token = Login {
        resource_token: sso::token(&other_resource, salt, now),
        ..r.login(now)
    };
    // Heroku's kensa posts the literal `invalid`: not a hex digest at all,
    // which an add-on must deny like any wrong token (the host answers
    // 403), not fail on.
    let kensa_invalid = Login {
        token: "invalid".into(),
        ..r.login(now)
    };
    vec![
        ("sso verify rejects a wrong token", wrong_token),
        ("sso verify rejects kensa's token=invalid", kensa_invalid),
        (
            "sso verify rejects a wrong resource_token",
            wrong_resource_token,
        ),
        (
            "sso verify rejects a 6-minute-old timestamp",
            r.login(now - 6 * 60),
        ),
        (
            "sso verify rejects a 2-minute-future timestamp",
            r.login(now + 2 * 60),
        ),
    ]
}

async fn sso_verify_rejects(r: &Resource<'_>, login: Login) -> Outcome {
    match r.plugin.verify(r.caps(), login).await {
        Ok(Verdict::Denied(why)) => Ok(format!("denied: {why}")),
        Ok(Verdict::Ok(_)) => Err("the login was accepted".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn deprovision_succeeds(r: &Resource<'_>) -> Outcome {
    r.plugin
        .deprovision(r.caps(), &r.id)
        .await
        .map(|_| format!("{} removed", r.id))
        .map_err(|e| e.to_string())
}

fn names(config: &[(String, String)]) -> String {
    if config.is_empty() {
        return "no vars".into();
    }
    config
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
