//! `/v2/service_instances/:instance_id`: provision (`PUT`), change plan
//! (`PATCH`), deprovision (`DELETE`), fetch (`GET`, 2.14+) and
//! `last_operation`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{reply, Version};
use crate::Server;
use addonhost::platform::osb::{
    Caller, OsbError, Place, ProvisionOutcome, ProvisionRequest, UpdateRequest,
};

/// The instance id of the path, or a 400.
fn instance_id(path: Result<Path<String>, PathRejection>) -> Result<String, OsbError> {
    path.map(|Path(id)| id)
        .map_err(|e| reply::bad(format!("malformed instance id: {e}")))
}

/// `{}` plus the fields that are set.
fn with(fields: &[(&str, Option<Value>)]) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(m)
}

pub async fn provision(
    State(s): State<Arc<Server>>,
    Extension(v): Extension<Version>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let r = async {
        let instance_id = instance_id(path)?;
        let q = reply::query(q.as_deref())?;
        let accepts_incomplete = reply::accepts_incomplete(&q)?;
        let body = reply::object(&reply::body(body).await?)?;
        let service_id = reply::required(&body, "service_id")?;
        let plan_id = reply::required(&body, "plan_id")?;
        reply::object_field(&body, "context")?;
        let org = reply::text(&body, "organization_guid")?;
        let space = reply::text(&body, "space_guid")?;
        if v < Version(15) && (org.is_none() || space.is_none()) {
            return Err(reply::bad(
                "organization_guid and space_guid are required (OSB 2.13 and 2.14)",
            ));
        }
        let req = ProvisionRequest {
            instance_id,
            service_id,
            plan_id,
            place: Place::of(&body).unwrap_or_else(Place::unplaced),
            parameters: reply::parameters(&body)?.unwrap_or_default(),
            accepts_incomplete,
            maintenance_version: reply::maintenance_version(&body)?,
        };
        s.host.osb_provision(req, &caller).await
    }
    .await;
    match r {
        Ok(ProvisionOutcome::Created { dashboard_url }) => reply::json(
            StatusCode::CREATED,
            with(&[("dashboard_url", dashboard_url.map(Value::from))]),
        ),
        Ok(ProvisionOutcome::Existing { dashboard_url }) => reply::json(
            StatusCode::OK,
            with(&[("dashboard_url", dashboard_url.map(Value::from))]),
        ),
        Ok(ProvisionOutcome::Pending {
            dashboard_url,
            operation,
        }) => reply::json(
            StatusCode::ACCEPTED,
            with(&[
                ("dashboard_url", dashboard_url.map(Value::from)),
                ("operation", Some(Value::from(operation))),
            ]),
        ),
        Err(e) => reply::error(e),
    }
}

pub async fn update(
    State(s): State<Arc<Server>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let r = async {
        let instance_id = instance_id(path)?;
        let q = reply::query(q.as_deref())?;
        // Plan changes are synchronous: accepted either way.
        reply::accepts_incomplete(&q)?;
        let body = reply::object(&reply::body(body).await?)?;
        reply::object_field(&body, "context")?;
        reply::object_field(&body, "previous_values")?;
        let req = UpdateRequest {
            instance_id,
            service_id: reply::required(&body, "service_id")?,
            plan_id: reply::text(&body, "plan_id")?,
            parameters: reply::parameters(&body)?,
            maintenance_version: reply::maintenance_version(&body)?,
        };
        s.host.osb_update(req, &caller).await
    }
    .await;
    match r {
        Ok(()) => reply::json(StatusCode::OK, json!({})),
        Err(e) => reply::error(e),
    }
}

pub async fn deprovision(
    State(s): State<Arc<Server>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let instance_id = instance_id(path)?;
        let q = reply::query(q.as_deref())?;
        reply::accepts_incomplete(&q)?;
        let service_id = reply::query_field(&q, "service_id")?;
        let plan_id = reply::query_field(&q, "plan_id")?;
        s.host
            .osb_deprovision(&instance_id, &service_id, &plan_id, &caller)
            .await
    }
    .await;
    match r {
        Ok(()) => reply::json(StatusCode::OK, json!({})),
        Err(e) => reply::error(e),
    }
}

pub async fn fetch(
    State(s): State<Arc<Server>>,
    Extension(v): Extension<Version>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let r = (|| {
        let instance_id = instance_id(path)?;
        if v < Version(14) {
            return Err(OsbError::NotFound(
                "fetching an instance is part of OSB 2.14 and later".into(),
            ));
        }
        s.host.osb_fetch_instance(&instance_id)
    })();
    match r {
        Ok(i) => reply::json(
            StatusCode::OK,
            with(&[
                ("service_id", Some(Value::from(i.service_id))),
                ("plan_id", Some(Value::from(i.plan_id))),
                ("dashboard_url", i.dashboard_url.map(Value::from)),
                ("parameters", Some(json!(i.parameters))),
            ]),
        ),
        Err(e) => reply::error(e),
    }
}

pub async fn last_operation(
    State(s): State<Arc<Server>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = (|| {
        let instance_id = instance_id(path)?;
        let q = reply::query(q.as_deref())?;
        s.host.osb_last_operation(
            &instance_id,
            q.get("operation")
                .map(String::as_str)
                .filter(|o| !o.is_empty()),
        )
    })();
    match r {
        Ok(op) => reply::json(
            StatusCode::OK,
            with(&[
                ("state", Some(Value::from(op.state.as_str()))),
                ("description", op.description.map(Value::from)),
            ]),
        ),
        Err(e) => reply::error(e),
    }
}
