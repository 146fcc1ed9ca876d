//! Provider mode: Heroku's Add-on Partner API for every plugin this server
//! has loaded, so a platform that speaks it (Heroku, another addonhost) can
//! offer the plugin as an add-on.
//!
//! Each add-on's base URL is `<server>/partner/<service>` (and its own
//! origin, `kv.localhost:5000`, answers the same `/heroku/resources` paths):
//!
//! | method | path | |
//! |---|---|---|
//! | POST | /heroku/resources | provision (the v3 request) → 200 `{id, config, message}`, 202 when pending |
//! | PUT | /heroku/resources/:id | `{"plan"}` plan change → 200 (`{"config"}` when it changed) |
//! | DELETE | /heroku/resources/:id | deprovision → 200, 410 when gone already |
//! | POST | /heroku/resources/:id/rotate | addonhost's extension: new credentials → 200 `{"config"}` |
//! | GET, POST | /heroku/resources/:id | SSO (on the add-on's origin; the platform's origin redirects there) |
//!
//! Basic `<id>:<api.password>` is checked first, before the body is read
//! and before the resource is looked up: anything else is a 401 with
//! `WWW-Authenticate`. Then the credential's rate (`--partner-api-rate`):
//! past it a 429 with `Retry-After`, nothing read or written. What cannot
//! be served is a 422 `{"message"}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::{read, status_of};
use crate::Server;
use addonhost::platform::partner::ProvisionV3;

/// `/partner/<service>/heroku/resources[/…]` on the platform's origin.
pub async fn on_platform(
    State(server): State<Arc<Server>>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let prefix = format!("/partner/{service}/heroku/resources");
    let rest = req
        .uri()
        .path()
        .strip_prefix(&prefix)
        .unwrap_or("")
        .to_string();
    handle(&server, &service, &rest, req, false).await
}

/// A `{"message": …}` answer.
fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn unauthorized(service: &str) -> Response {
    let mut r = message(
        StatusCode::UNAUTHORIZED,
        "missing or wrong credentials: use Basic <add-on id>:<api.password>",
    );
    let realm = format!("Basic realm=\"{service}\"");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&realm).unwrap_or(HeaderValue::from_static("Basic")),
    );
    r
}

/// A platform error as the Partner API answers it.
fn failure(e: anyhow::Error) -> Response {
    let status = match status_of(&e) {
        s @ (StatusCode::UNAUTHORIZED
        | StatusCode::NOT_FOUND
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::INTERNAL_SERVER_ERROR) => s,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("partner API: {e:#}");
    }
    let mut r = message(status, &format!("{e:#}"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn config_object(config: &[(String, String)]) -> Value {
    Value::Object(
        config
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// The Partner API of add-on `service`, `rest` being the path after
/// `/heroku/resources`; `on_origin` when the request came to the add-on's
/// own origin (where SSO can set its cookies).
pub async fn handle(
    server: &Arc<Server>,
    service: &str,
    rest: &str,
    req: Request,
    on_origin: bool,
) -> Response {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let id = segments
        .first()
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s));
    // SSO is the browser's, signed by token rather than Basic auth.
    let browser = method == Method::GET || (method == Method::POST && !has_basic(&req));
    if let (Some(id), 1, true) = (&id, segments.len(), browser) {
        return sso(server, service, id, req, on_origin).await;
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(addonhost::platform::remote_http::parse_basic)
        .is_some_and(|(user, password)| server.host.partner_authorized(service, &user, &password));
    if !authorized {
        return unauthorized(service);
    }
    // Metered per credential, once it is known good: past the rate nothing
    // is read or written.
    if let Err(e) = server.host.charge_partner_api(service) {
        let mut r = message(StatusCode::TOO_MANY_REQUESTS, &format!("{e:#}"));
        // Long enough for the bucket to hold a request again.
        let per_hour = server.host.options().partner_api_rate.max(1);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(3600u32.div_ceil(per_hour)),
        );
        return r;
    }
    let body = match read(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let json: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("malformed JSON body: {e}"),
                )
            }
        }
    };
    let host = &server.host;
    match (method, id, segments.len()) {
        (Method::POST, None, _) => {
            let v3: ProvisionV3 = match serde_json::from_value(json) {
                Ok(v) => v,
                Err(e) => {
                    return message(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("malformed provision request: {e}"),
                    )
                }
            };
            match host.partner_provision(service, v3).await {
                Ok(a) => (
                    StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
                    Json(a.body),
                )
                    .into_response(),
                Err(e) => failure(e.into()),
            }
        }
        (Method::PUT, Some(id), 1) => {
            let Some(plan) = json.get("plan").and_then(Value::as_str) else {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the plan change names no \"plan\"",
                );
            };
            match host.partner_change_plan(service, &id, plan).await {
                Ok(Some(config)) => Json(json!({
                    "config": config_object(&config),
                    "message": format!("changed to {plan}"),
                }))
                .into_response(),
                Ok(None) => Json(json!({ "message": format!("on plan {plan}") })).into_response(),
                Err(e) => failure(e.into()),
            }
        }
        (Method::DELETE, Some(id), 1) => match host.partner_deprovision(service, &id).await {
            Ok(true) => Json(json!({})).into_response(),
            Ok(false) => message(StatusCode::GONE, &format!("{id} was deprovisioned already")),
            Err(e) => failure(e.into()),
        },
        (Method::POST, Some(id), 2) if segments[1] == "rotate" => {
            match host.partner_rotate(service, &id).await {
                Ok(config) => Json(json!({ "config": config_object(&config) })).into_response(),
                Err(e) => failure(e.into()),
            }
        }
        (m, _, _) => message(
            StatusCode::NOT_FOUND,
            &format!("no Partner API route {m} /heroku/resources{rest}"),
        ),
    }
}

fn has_basic(req: &Request) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic "))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// SSO with the id in the path (`GET|POST /heroku/resources/:id`): on the
/// add-on's origin the plugin decides; on the platform's origin the browser
/// is sent to the add-on's origin with the same request (a 307 keeps a
/// POST's body), so the session cookie is that origin's.
async fn sso(
    server: &Arc<Server>,
    service: &str,
    id: &str,
    req: Request,
    on_origin: bool,
) -> Response {
    if !on_origin {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let rest = path_and_query
            .strip_prefix(&format!("/partner/{service}"))
            .unwrap_or(path_and_query);
        let to = format!("{}{rest}", server.host.addon_origin(service));
        let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if req.method() == Method::POST {
        let body = match read(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        fields.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    // The path names the resource; a field that says otherwise is refused.
    match fields.iter().find(|(k, _)| k == "id") {
        Some((_, v)) if v != id => {
            return message(StatusCode::FORBIDDEN, "the form's id is not the path's")
        }
        Some(_) => {}
        None => fields.push(("id".to_string(), id.to_string())),
    }
    crate::sso::login_fields(server, service, fields).await
}
