//! The Open Service Broker side of the platform (OSB API 2.13–2.17): what
//! Cloud Foundry, Korifi and Kubernetes service catalogs call to provision,
//! bind and rotate addonhost add-ons.
//!
//! An OSB *service instance* is an add-on resource, provisioned, changed and
//! deprovisioned through the same flows as `addons:create` — the plugin, its
//! sandbox, the ownership rules, the uuid as idempotency key. It lives on an
//! app that stands for the platform's context: one app per Cloud Foundry
//! space or Kubernetes namespace ([`Place`]). A *binding* is a view of the
//! instance's config vars as credentials; rotating a binding (2.17's
//! `predecessor_binding_id`) rotates the add-on's credentials, and the
//! predecessor's keep working through the add-on's grace window.
//!
//! This module decides what each request means — new, an identical retry, a
//! conflict, something gone — and answers an outcome or an [`OsbError`]
//! naming the spec's case; the server turns those into statuses and bodies.

mod bindings;
pub mod catalog;
mod context;
mod instances;
mod lifecycle;

use std::collections::BTreeMap;

use base64::Engine as _;

use super::error::{kind_of, Kind};
use super::Host;

pub use bindings::{BindRequest, Binding, BindingState};
pub use catalog::{OfferedPlan, Offering};
pub use context::Place;
pub use instances::{ProvisionOutcome, ProvisionRequest};
pub use lifecycle::{InstanceView, LastOperation, OperationState, UpdateRequest};

/// The OSB API versions the broker speaks: 2.13 through 2.17 (minors).
pub const MINOR_VERSIONS: std::ops::RangeInclusive<u32> = 13..=17;

/// Longest instance or binding id kept (the spec recommends GUIDs).
const MAX_ID_LEN: usize = 255;

/// Who asked, from `X-Broker-API-Originating-Identity: <platform> <base64 JSON>`:
/// recorded in the detail of every entry the broker writes. It is a
/// claim of the broker's client, so it never names the actor (each new
/// claim would be an actor of its own, unbounded by `--audit-keep`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// `cloudfoundry`, `kubernetes`, …
    pub platform: Option<String>,
    /// The decoded identity (compact JSON), or what could not be decoded.
    pub identity: Option<String>,
}

impl Caller {
    /// The caller a header names (`None`: the platform sent none).
    pub fn from_header(value: Option<&str>) -> Caller {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Caller::default();
        };
        let (platform, encoded) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        let identity = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(serde_json::Value::is_object)
            .map(|json| json.to_string())
            .unwrap_or_else(|| format!("undecodable identity {:?}", printable(encoded, 120)));
        Caller {
            platform: Some(printable(platform, 40)),
            identity: Some(printable(&identity, 500)),
        }
    }

    /// The audit trail's actor: `osb`, whoever the client claims to be.
    pub fn actor(&self) -> String {
        crate::platform::actor::OSB.to_string()
    }

    /// Who, in words, for the audit trail's detail.
    fn said(&self) -> String {
        match (&self.platform, &self.identity) {
            (Some(p), Some(i)) => format!("; by {p} user {i}"),
            _ => "; no originating identity".into(),
        }
    }
}

/// At most `max` bytes of `s`, without control characters (it goes into
/// the audit trail and logs as one line).
fn printable(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    crate::util::truncate(&clean, max).to_string()
}

/// Why a broker request was refused, as the cases the spec names.
#[derive(Debug, thiserror::Error)]
pub enum OsbError {
    /// Malformed, or naming an unknown service, plan, instance or binding (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing of that id to fetch (404).
    #[error("{0}")]
    NotFound(String),
    /// The id is taken by a request with other attributes (409).
    #[error("{0}")]
    Conflict(String),
    /// Nothing of that id to delete (410).
    #[error("{0}")]
    Gone(String),
    /// The add-on answers asynchronously and the platform does not accept
    /// it (422 `AsyncRequired`).
    #[error("{0}")]
    AsyncRequired(String),
    /// Another operation on the same instance is in progress (422
    /// `ConcurrencyError`).
    #[error("{0}")]
    Concurrency(String),
    /// The request names another maintenance version than the catalog's
    /// (422 `MaintenanceInfoConflict`).
    #[error("{0}")]
    MaintenanceInfo(String),
    /// The add-on refused or failed, or the change is not supported (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The platform could not serve it now (busy, store unavailable: 503),
    /// or failed unexpectedly (500).
    #[error("{0:#}")]
    Platform(anyhow::Error),
}

impl From<crate::Error> for OsbError {
    fn from(e: crate::Error) -> Self {
        OsbError::from(anyhow::Error::from(e))
    }
}

impl From<anyhow::Error> for OsbError {
    /// The usual reading of a platform error; call sites that know better
    /// map it themselves.
    fn from(e: anyhow::Error) -> Self {
        let message = format!("{e:#}");
        match kind_of(&e) {
            Some(Kind::NotFound | Kind::Invalid) => OsbError::BadRequest(message),
            Some(Kind::Conflict) => OsbError::Concurrency(message),
            Some(Kind::Addon) => OsbError::Unprocessable(message),
            // Unauthorized is the Platform API's (a provider's token), never
            // a broker call's.
            Some(Kind::Busy | Kind::Unavailable | Kind::Unauthorized | Kind::RateLimited)
            | None => OsbError::Platform(e),
        }
    }
}

/// An instance or binding id from a URL: non-empty, of a sane length.
fn check_id(what: &str, id: &str) -> Result<(), OsbError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(OsbError::BadRequest(format!(
            "{what} must be 1 to {MAX_ID_LEN} characters"
        )));
    }
    Ok(())
}

/// A credential set: the add-on's manifest var names to values.
pub type Credentials = BTreeMap<String, String>;

impl Host {
    /// Writes one entry of the broker's audit trail (after the change it
    /// records).
    async fn osb_audit(
        &self,
        caller: &Caller,
        action: &str,
        app: Option<String>,
        addon: Option<String>,
        detail: String,
    ) {
        let (actor, action) = (caller.actor(), action.to_string());
        let detail = format!("{detail}{}", caller.said());
        let r = self
            .store
            .write(move |tx| tx.audit(&actor, &action, app.as_deref(), addon.as_deref(), &detail))
            .await;
        if let Err(e) = r {
            tracing::error!("cannot write the broker's audit entry: {e:#}");
        }
    }
}
