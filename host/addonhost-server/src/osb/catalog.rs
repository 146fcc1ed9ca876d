//! `GET /v2/catalog`: the offerings, with only the fields the requested
//! version defines (a field added in 2.14 is never shown to a 2.13
//! platform, which may reject what it does not know).

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{reply, Version};
use crate::Server;
use addonhost::platform::osb::Offering;

pub async fn catalog(State(s): State<Arc<Server>>, Extension(v): Extension<Version>) -> Response {
    match s.host.osb_offerings() {
        Ok(offerings) => reply::json(
            StatusCode::OK,
            json!({ "services": offerings.iter().map(|o| service(o, v)).collect::<Vec<_>>() }),
        ),
        Err(e) => reply::error(e.into()),
    }
}

fn service(o: &Offering, v: Version) -> Value {
    let mut s = Map::new();
    s.insert("id".into(), json!(o.id));
    s.insert("name".into(), json!(o.name));
    s.insert("description".into(), json!(o.description));
    s.insert("tags".into(), json!(["addonhost"]));
    s.insert("bindable".into(), json!(true));
    s.insert("plan_updateable".into(), json!(o.plan_updateable));
    s.insert(
        "metadata".into(),
        json!({ "displayName": o.description, "addonhost": { "addon": o.name } }),
    );
    if v >= Version(14) {
        s.insert("instances_retrievable".into(), json!(true));
        s.insert("bindings_retrievable".into(), json!(true));
    }
    if v >= Version(15) {
        // A platform-side rename changes nothing here: the app of a space
        // is named after its ids.
        s.insert("allow_context_updates".into(), json!(false));
    }
    let plans: Vec<Value> = o
        .plans
        .iter()
        .map(|p| {
            let mut plan = Map::new();
            plan.insert("id".into(), json!(p.id));
            plan.insert("name".into(), json!(p.name));
            plan.insert("description".into(), json!(p.description));
            plan.insert("free".into(), json!(true));
            plan.insert(
                "metadata".into(),
                json!({ "displayName": p.description, "default": p.default }),
            );
            if v >= Version(15) {
                plan.insert("plan_updateable".into(), json!(o.plan_updateable));
                if let Some(version) = &o.maintenance_version {
                    plan.insert(
                        "maintenance_info".into(),
                        json!({
                            "version": version,
                            "description": format!("add-on {} as its current component serves it", o.name),
                        }),
                    );
                }
            }
            if v >= Version(17) {
                plan.insert("binding_rotatable".into(), json!(o.binding_rotatable));
            }
            Value::Object(plan)
        })
        .collect();
    s.insert("plans".into(), Value::Array(plans));
    Value::Object(s)
}
