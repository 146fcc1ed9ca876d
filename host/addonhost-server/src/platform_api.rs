//! The Platform API remote providers call back, under `/platform` (Heroku's
//! shapes; a provider's platform base URL is `<server>/platform`):
//!
//! | method | path | |
//! |---|---|---|
//! | POST | /platform/oauth/token | `grant_type=authorization_code&code=…&client_secret=…` (or `refresh_token`) → `{access_token, refresh_token, expires_in}` |
//! | GET | /platform/addons/:uuid | the add-on (also `/platform/vendor/apps/:uuid`) |
//! | PATCH | /platform/addons/:uuid/config | `{"config": [{"name", "value" \| null}]}` → the add-on's config |
//! | POST | /platform/addons/:uuid/actions/provision | completes an asynchronous provisioning |
//!
//! Every route but `/oauth/token` needs `Authorization: Bearer <access
//! token>`, checked before the body is read; a token reaches the one add-on
//! it was granted for. Errors are `{"id", "message"}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::{read, status_of};
use crate::Server;
use addonhost::platform::platform_api::ConfigEntry;

pub fn router() -> Router<Arc<Server>> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/addons/{addon}", get(addon))
        .route("/vendor/apps/{addon}", get(addon))
        .route("/addons/{addon}/config", patch(config))
        .route("/addons/{addon}/actions/provision", post(provisioned))
        .fallback(|req: Request| async move {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!(
                    "no Platform API route {} {}",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
}

fn error(status: StatusCode, id: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({ "id": id, "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn failure(s: &Server, e: anyhow::Error) -> Response {
    let status = status_of(&e);
    let id = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let mut r = error(status, "rate_limit", &format!("{e:#}"));
            // Long enough for the bucket to hold a request again.
            let per_hour = s.host.options().platform_api_rate.max(1);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(3600u32.div_ceil(per_hour)),
            );
            return r;
        }
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_params",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal_error",
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("platform API: {e:#}");
    }
    error(status, id, &format!("{e:#}"))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn no_bearer() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing bearer token: trade the provision request's oauth_grant at /oauth/token",
    )
}

/// `POST /oauth/token`: form-encoded as Heroku's, or JSON.
async fn token(State(s): State<Arc<Server>>, req: Request) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match read(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params: BTreeMap<String, String> = if json {
        match serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&body) {
            Ok(m) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                .collect(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("malformed JSON body: {e}"),
                )
            }
        }
    } else {
        url::form_urlencoded::parse(&body).into_owned().collect()
    };
    match s.host.oauth_token(&params).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => failure(&s, e.into()),
    }
}

async fn addon(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return no_bearer();
    };
    match s.host.platform_addon(&token, &addon) {
        Ok(a) => Json(a).into_response(),
        Err(e) => failure(&s, e.into()),
    }
}

#[derive(Deserialize)]
struct ConfigBody {
    config: Vec<ConfigEntry>,
}

async fn config(State(s): State<Arc<Server>>, Path(addon): Path<String>, req: Request) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return no_bearer();
    };
    // The token first: nobody else's body is read (the rate is spent once,
    // by the update).
    if let Err(e) = s.host.platform_check_token(&token, &addon) {
        return failure(&s, e.into());
    }
    let body = match read(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let changes: ConfigBody = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_params",
                &format!("expected {{\"config\": [{{\"name\", \"value\"}}]}}: {e}"),
            )
        }
    };
    match s
        .host
        .platform_config_update(&token, &addon, changes.config)
        .await
    {
        Ok(config) => Json(config).into_response(),
        Err(e) => failure(&s, e.into()),
    }
}

async fn provisioned(
    State(s): State<Arc<Server>>,
    Path(addon): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return no_bearer();
    };
    match s.host.platform_provisioned(&token, &addon).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => failure(&s, e.into()),
    }
}
