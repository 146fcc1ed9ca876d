//! `/v2/service_instances/:instance_id/service_bindings/:binding_id`: bind
//! or rotate (`PUT`), unbind (`DELETE`), fetch (`GET`, 2.14+) and
//! `last_operation` (2.14+).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{reply, Version};
use crate::Server;
use addonhost::platform::osb::{BindRequest, Binding, BindingState, Caller, OsbError};

type Ids = Result<Path<(String, String)>, PathRejection>;

fn ids(path: Ids) -> Result<(String, String), OsbError> {
    path.map(|Path(ids)| ids)
        .map_err(|e| reply::bad(format!("malformed instance or binding id: {e}")))
}

/// A binding as the version asked sees it: `credentials` always,
/// `endpoints` from 2.15, `metadata.expires_at` from 2.16.
fn render(b: &Binding, v: Version) -> Value {
    let mut m = Map::new();
    m.insert("credentials".into(), json!(b.credentials));
    if v >= Version(15) {
        let endpoints: Vec<Value> = b
            .endpoints()
            .into_iter()
            .map(|(host, port)| json!({ "host": host, "ports": [port], "protocol": "tcp" }))
            .collect();
        if !endpoints.is_empty() {
            m.insert("endpoints".into(), Value::Array(endpoints));
        }
    }
    if v >= Version(16) {
        if let Some(at) = b.expires_at_iso() {
            m.insert("metadata".into(), json!({ "expires_at": at }));
        }
    }
    Value::Object(m)
}

pub async fn bind(
    State(s): State<Arc<Server>>,
    Extension(v): Extension<Version>,
    Extension(caller): Extension<Caller>,
    path: Ids,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let r = async {
        let (instance_id, binding_id) = ids(path)?;
        let q = reply::query(q.as_deref())?;
        // Bindings are made synchronously: accepted either way.
        reply::accepts_incomplete(&q)?;
        let body = reply::object(&reply::body(body).await?)?;
        reply::object_field(&body, "context")?;
        let resource = reply::object_field(&body, "bind_resource")?;
        let app_guid = match resource {
            Some(r) => reply::text(r, "app_guid")?,
            None => None,
        }
        .or(reply::text(&body, "app_guid")?);
        let route = match resource {
            Some(r) => reply::text(r, "route")?,
            None => None,
        };
        // Binding rotation is 2.17's; older platforms' unknown fields are
        // ignored, as the spec asks.
        let predecessor_binding_id = if v >= Version(17) {
            reply::text(&body, "predecessor_binding_id")?
        } else {
            None
        };
        let req = BindRequest {
            instance_id,
            binding_id,
            service_id: reply::required(&body, "service_id")?,
            plan_id: reply::required(&body, "plan_id")?,
            app_guid,
            route,
            has_parameters: reply::parameters(&body)?.is_some_and(|p| !p.is_empty()),
            predecessor_binding_id,
        };
        s.host.osb_bind(req, &caller).await
    }
    .await;
    match r {
        Ok((BindingState::Created, b)) => reply::json(StatusCode::CREATED, render(&b, v)),
        Ok((BindingState::Existing, b)) => reply::json(StatusCode::OK, render(&b, v)),
        Err(e) => reply::error(e),
    }
}

pub async fn unbind(
    State(s): State<Arc<Server>>,
    Extension(caller): Extension<Caller>,
    path: Ids,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let (instance_id, binding_id) = ids(path)?;
        let q = reply::query(q.as_deref())?;
        reply::accepts_incomplete(&q)?;
        let service_id = reply::query_field(&q, "service_id")?;
        let plan_id = reply::query_field(&q, "plan_id")?;
        s.host
            .osb_unbind(&instance_id, &binding_id, &service_id, &plan_id, &caller)
            .await
    }
    .await;
    match r {
        Ok(()) => reply::json(StatusCode::OK, json!({})),
        Err(e) => reply::error(e),
    }
}

/// Fetching bindings and their last operation are 2.14's.
fn since_2_14(v: Version, what: &str) -> Result<(), OsbError> {
    if v < Version(14) {
        return Err(OsbError::NotFound(format!(
            "{what} is part of OSB 2.14 and later"
        )));
    }
    Ok(())
}

pub async fn fetch(
    State(s): State<Arc<Server>>,
    Extension(v): Extension<Version>,
    path: Ids,
) -> Response {
    let r = (|| {
        let (instance_id, binding_id) = ids(path)?;
        since_2_14(v, "fetching a binding")?;
        s.host.osb_fetch_binding(&instance_id, &binding_id)
    })();
    match r {
        Ok(b) => reply::json(StatusCode::OK, render(&b, v)),
        Err(e) => reply::error(e),
    }
}

pub async fn last_operation(
    State(s): State<Arc<Server>>,
    Extension(v): Extension<Version>,
    path: Ids,
) -> Response {
    let r = (|| {
        let (instance_id, binding_id) = ids(path)?;
        since_2_14(v, "a binding's last operation")?;
        s.host.osb_binding_operation(&instance_id, &binding_id)
    })();
    match r {
        Ok(state) => reply::json(StatusCode::OK, json!({ "state": state.as_str() })),
        Err(e) => reply::error(e),
    }
}
