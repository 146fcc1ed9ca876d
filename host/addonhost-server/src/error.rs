//! How failures become responses: the platform's error kinds as HTTP
//! statuses, JSON errors `{"message": …}` for the API, and request bodies
//! read within the server's limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use addonhost::platform::error::{kind_of, Kind};

/// Largest request body the server reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The status for a platform error: 404, 409, 400, 401, 422 (the add-on
/// failed), 503 (busy: retry), 429 (over a rate), else 500.
pub fn status_of(e: &anyhow::Error) -> StatusCode {
    match kind_of(e) {
        Some(Kind::NotFound) => StatusCode::NOT_FOUND,
        Some(Kind::Conflict) => StatusCode::CONFLICT,
        Some(Kind::Invalid) => StatusCode::BAD_REQUEST,
        Some(Kind::Unauthorized) => StatusCode::UNAUTHORIZED,
        Some(Kind::Addon) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(Kind::Busy | Kind::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        Some(Kind::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        None => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"message": …}` with `status` (and `Retry-After` when it is 503).
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "message": message }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A platform error answered as JSON.
pub struct ApiError(pub anyhow::Error);

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(e)
    }
}

impl From<addonhost::Error> for ApiError {
    fn from(e: addonhost::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{:#}", self.0);
        }
        json_error(status, &format!("{:#}", self.0))
    }
}

/// A JSON request body, read whole within [`MAX_BODY_BYTES`]: 413 past it,
/// 400 naming what is wrong with it otherwise.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body(req, state).await?;
        let parsed = serde_json::from_slice(&bytes).map_err(|e| {
            json_error(
                StatusCode::BAD_REQUEST,
                &format!("malformed JSON body: {e}"),
            )
        })?;
        // No name or value the platform keeps can hold a NUL (a process
        // environment cannot, nor can PostgreSQL's text): refused, named,
        // before any of it is looked up or stored.
        if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if let Some(at) = nul_in(&value, "") {
                    return Err(json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("the JSON body holds a NUL character (\\u0000) in {at}: no name or value here can hold one"),
                    ));
                }
            }
        }
        Ok(JsonBody(parsed))
    }
}

/// Where in `v` a string (a key or a value) holds a NUL, as a JSON
/// pointer (`/options/x`), if anywhere.
fn nul_in(v: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    let here = || {
        if at.is_empty() {
            "/".to_string()
        } else {
            at.to_string()
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(here()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{at}/{i}"))),
        Value::Object(fields) => fields.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(format!("a field name under {}", here()))
            } else {
                nul_in(
                    item,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            }
        }),
        _ => None,
    }
}

/// The request body, whole, within [`MAX_BODY_BYTES`]: 413 past it, 408
/// when the client is too slow to send it.
pub async fn body<S: Send + Sync>(req: Request, _state: &S) -> Result<Bytes, Response> {
    read(req.into_body()).await
}

/// [`body`], from the body itself.
pub async fn read(body: axum::body::Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut timed_out = false;
            let mut too_large = false;
            while let Some(err) = source {
                timed_out |= err.is::<tower_http::timeout::TimeoutError>();
                too_large |= err.is::<http_body_util::LengthLimitError>();
                source = err.source();
            }
            if too_large {
                json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body over {MAX_BODY_BYTES} bytes"),
                )
            } else if timed_out {
                json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body took too long to arrive",
                )
            } else {
                json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {e}"),
                )
            }
        })
}

/// `401` for a missing or wrong bearer token, saying where to get one.
pub fn unauthorized_bearer() -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token; see `addonhost auth:token`",
    );
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    r
}
