//! The broker's wire details: errors in the spec's shape
//! `{"error": …, "description": …}`, and the reading of bodies, query
//! strings and fields with a 400 that names what is wrong.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use addonhost::platform::error::{kind_of, Kind};
use addonhost::platform::osb::OsbError;

/// A JSON answer.
pub fn json(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// An error body: `error` a camel-case word naming the case (the spec's own
/// codes where it names one), `description` for people.
pub fn problem(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = json(
        status,
        serde_json::json!({ "error": error, "description": description }),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The response for a refused request.
pub fn error(e: OsbError) -> Response {
    let description = e.to_string();
    match e {
        OsbError::BadRequest(_) => problem(StatusCode::BAD_REQUEST, "BadRequest", &description),
        OsbError::NotFound(_) => problem(StatusCode::NOT_FOUND, "NotFound", &description),
        OsbError::Conflict(_) => problem(StatusCode::CONFLICT, "Conflict", &description),
        // Platforms take a 410 as "already done"; OSB 2.13 says its body is `{}`.
        OsbError::Gone(_) => json(StatusCode::GONE, serde_json::json!({})),
        OsbError::AsyncRequired(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AsyncRequired",
            &description,
        ),
        OsbError::Concurrency(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ConcurrencyError",
            &description,
        ),
        OsbError::MaintenanceInfo(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "MaintenanceInfoConflict",
            &description,
        ),
        OsbError::Unprocessable(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntity",
            &description,
        ),
        OsbError::Platform(e) => match kind_of(&e) {
            Some(Kind::Busy | Kind::Unavailable) => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &description,
            ),
            _ => {
                tracing::error!("broker request failed: {e:#}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &description,
                )
            }
        },
    }
}

/// A 400 naming what is wrong.
pub fn bad(message: impl Into<String>) -> OsbError {
    OsbError::BadRequest(message.into())
}

/// The query string's fields.
pub fn query(raw: Option<&str>) -> Result<HashMap<String, String>, OsbError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad(format!("malformed query string: {e}")))
}

/// A required query field, non-empty.
pub fn query_field(q: &HashMap<String, String>, key: &str) -> Result<String, OsbError> {
    match q.get(key) {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err(bad(format!("the query parameter {key} is required"))),
    }
}

/// `accepts_incomplete`: `true`, `false` or absent.
pub fn accepts_incomplete(q: &HashMap<String, String>) -> Result<bool, OsbError> {
    match q.get("accepts_incomplete").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad(format!(
            "accepts_incomplete must be true or false, not {other:?}"
        ))),
    }
}

/// The request body, read within the server's limit.
pub async fn body(body: Body) -> Result<Bytes, OsbError> {
    crate::error::read(body).await.map_err(|r| {
        bad(match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "the request body is over {} bytes",
                crate::error::MAX_BODY_BYTES
            ),
            StatusCode::REQUEST_TIMEOUT => "the request body took too long to arrive".into(),
            _ => "the request body could not be read".into(),
        })
    })
}

/// The body as a JSON object (an empty body is `{}`).
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, OsbError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the request body must be a JSON object")),
        Err(e) => Err(bad(format!("malformed JSON body: {e}"))),
    }
}

/// An optional string field: present means a non-empty string.
pub fn text(m: &Map<String, Value>, key: &str) -> Result<Option<String>, OsbError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{key} must be a non-empty string"))),
    }
}

/// A required string field.
pub fn required(m: &Map<String, Value>, key: &str) -> Result<String, OsbError> {
    text(m, key)?.ok_or_else(|| bad(format!("{key} is required")))
}

/// An optional object field.
pub fn object_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, OsbError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(bad(format!("{key} must be a JSON object"))),
    }
}

/// `parameters`, as the add-on's options: strings as they are, anything
/// else as its JSON text.
pub fn parameters(m: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, OsbError> {
    Ok(object_field(m, "parameters")?.map(|p| {
        p.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }))
}

/// `maintenance_info.version`, if sent.
pub fn maintenance_version(m: &Map<String, Value>) -> Result<Option<String>, OsbError> {
    match object_field(m, "maintenance_info")? {
        Some(info) => text(info, "version"),
        None => Ok(None),
    }
}
