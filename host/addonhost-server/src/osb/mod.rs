//! The Open Service Broker API (2.13–2.17) under `/osb` (configurable):
//! Cloud Foundry, Korifi and Kubernetes service catalogs provision, bind and
//! rotate addonhost add-ons through it.
//!
//! Every request passes `guard` first: HTTP Basic credentials (401 before
//! anything else is looked at, the body included), then
//! `X-Broker-API-Version` (412 without one of 2.13 to 2.17), then the
//! originating identity, which the platform records with every change.
//! Handlers parse, call the library's broker (`addonhost::platform::osb`),
//! and render what it answered for the version asked: a 2.13 platform never
//! sees a 2.14 field.
//!
//! | method | path (under the prefix) | |
//! |---|---|---|
//! | GET | /v2/catalog | one service per add-on |
//! | PUT, PATCH, DELETE, GET | /v2/service_instances/:id | provision, change plan, deprovision, fetch |
//! | GET | /v2/service_instances/:id/last_operation | an asynchronous provisioning's state |
//! | PUT, DELETE, GET | /v2/service_instances/:id/service_bindings/:bid | bind (or rotate), unbind, fetch |
//! | GET | /v2/service_instances/:id/service_bindings/:bid/last_operation | a binding's state |

mod bindings;
mod catalog;
pub mod credentials;
mod instances;
mod reply;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

use crate::Server;
use addonhost::platform::osb::{Caller, MINOR_VERSIONS};

pub use credentials::Credentials;

/// Where the broker answers and whom it lets in.
#[derive(Debug, Clone)]
pub struct Broker {
    /// The path prefix (`/osb`).
    pub path: String,
    /// The HTTP Basic credentials platforms register the broker with.
    pub credentials: Credentials,
}

/// The OSB minor version a request asked for (`2.15` → 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

const VERSION_HEADER: &str = "x-broker-api-version";
const IDENTITY_HEADER: &str = "x-broker-api-originating-identity";
const REQUEST_ID_HEADER: &str = "x-broker-api-request-identity";

/// The broker's routes, behind `guard`.
pub fn router(server: Arc<Server>) -> Router<Arc<Server>> {
    Router::new()
        .route("/v2/catalog", get(catalog::catalog))
        .route(
            "/v2/service_instances/{instance_id}",
            get(instances::fetch)
                .put(instances::provision)
                .patch(instances::update)
                .delete(instances::deprovision),
        )
        .route(
            "/v2/service_instances/{instance_id}/last_operation",
            get(instances::last_operation),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}",
            get(bindings::fetch)
                .put(bindings::bind)
                .delete(bindings::unbind),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation",
            get(bindings::last_operation),
        )
        .fallback(|req: Request| async move {
            reply::problem(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no broker route {} {}", req.method(), req.uri().path()),
            )
        })
        .layer(middleware::from_fn_with_state(server, guard))
}

/// Credentials, then the version, then who asks — before any handler (and
/// so before any body) runs.
async fn guard(State(server): State<Arc<Server>>, mut req: Request, next: Next) -> Response {
    let Some(broker) = &server.osb else {
        return reply::problem(StatusCode::NOT_FOUND, "NotFound", "the broker is off");
    };
    if !authorized(&req, &broker.credentials) {
        let mut r = reply::problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong broker credentials; see `addonhost osb:credentials`",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"addonhost broker\""),
        );
        return r;
    }
    let asked = req
        .headers()
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string());
    let Some(version) = asked.as_deref().and_then(parse_version) else {
        return reply::problem(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &format!(
                "{}; this broker speaks Open Service Broker API versions 2.{} to 2.{}",
                match asked {
                    Some(v) => format!("X-Broker-API-Version {v:?} is not supported"),
                    None => "the X-Broker-API-Version header is required".into(),
                },
                MINOR_VERSIONS.start(),
                MINOR_VERSIONS.end()
            ),
        );
    };
    let caller = Caller::from_header(
        req.headers()
            .get(IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let request_id = req.headers().get(REQUEST_ID_HEADER).cloned();
    req.extensions_mut().insert(version);
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(id) = request_id {
        // The spec asks brokers to send it back, for tracing.
        resp.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    resp
}

/// `Authorization: Basic …` carrying the broker's credentials.
fn authorized(req: &Request, credentials: &Credentials) -> bool {
    let Some(encoded) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    credentials.accepts(user, password)
}

/// `2.15` → 15, for the versions the broker speaks.
fn parse_version(v: &str) -> Option<Version> {
    let (major, minor) = v.split_once('.')?;
    let minor: u32 = minor.parse().ok()?;
    (major == "2" && MINOR_VERSIONS.contains(&minor)).then_some(Version(minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_2_13_to_2_17_are_spoken() {
        for v in ["2.13", "2.14", "2.15", "2.16", "2.17"] {
            assert!(parse_version(v).is_some(), "{v}");
        }
        for v in ["2.12", "2.18", "3.13", "2", "2.x", "", "2.13.1", "02.13"] {
            assert_eq!(parse_version(v), None, "{v}");
        }
    }
}
