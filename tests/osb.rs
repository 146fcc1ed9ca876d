//! The Open Service Broker API, checked against the specification
//! (openservicebrokerapi/servicebroker, 2.13 to 2.17) over real HTTP against
//! `addonhost serve`, with the kv example add-on and the hostile test add-on
//! (which answers provisioning later with `--attack pending`): both auth
//! failures, version negotiation, the catalog's fields per version, every
//! status and body rule of instances and bindings, sync and async, binding
//! rotation with its grace window, the originating identity in the audit
//! trail — and a platform's whole flow end to end.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{http, root, unix_now, Env, KvUrl, Server};
use serde_json::{json, Value};

/// The version most requests speak.
const V: &str = "2.17";
const VERSIONS: [&str; 5] = ["2.13", "2.14", "2.15", "2.16", "2.17"];

/// A Cloud Foundry originating identity: `{"user_id": "683ea748-…"}`.
const CF_USER: &str =
    "cloudfoundry eyJ1c2VyX2lkIjoiNjgzZWE3NDgtMzA5Mi00ZmY0LWI2NTYtMzljYWNjNGQ1MzYwIn0=";

/// A running server and its broker credentials.
struct Broker {
    server: Server,
    auth: String,
}

/// One offering's ids.
struct Ids {
    service: String,
    /// Plan name → plan id.
    plans: Vec<(String, String)>,
}

impl Ids {
    fn plan(&self, name: &str) -> &str {
        &self.plans.iter().find(|(n, _)| n == name).unwrap().1
    }
}

impl Broker {
    fn start(env: &Env) -> Broker {
        let server = Server::start(env);
        let line = std::fs::read_to_string(env.data().join("osb-credentials"))
            .expect("serve made the broker's credentials");
        let (user, password) = line.trim().split_once(':').unwrap();
        let auth = http::basic(user, password);
        Broker { server, auth }
    }

    /// A request with the broker's credentials and `version`, plus `headers`.
    fn raw(
        &self,
        method: &str,
        path: &str,
        version: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        let mut all = vec![
            ("authorization", self.auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(v) = version {
            all.push(("x-broker-api-version", v));
        }
        all.extend_from_slice(headers);
        http::request(
            &self.server.addr,
            method,
            &format!("/osb{path}"),
            &all,
            body,
        )
    }

    fn call(&self, method: &str, path: &str, version: &str, body: Option<Value>) -> http::Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, Some(version), &[], body.as_bytes())
    }

    fn catalog(&self, version: &str) -> Value {
        let r = self.call("GET", "/v2/catalog", version, None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn ids(&self, service: &str) -> Ids {
        let catalog = self.catalog(V);
        let s = catalog["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .unwrap_or_else(|| panic!("{service} is in the catalog: {catalog}"));
        Ids {
            service: s["id"].as_str().unwrap().to_string(),
            plans: s["plans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["id"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        }
    }

    /// `PUT /v2/service_instances/:id` in Cloud Foundry space `space`.
    fn provision(
        &self,
        id: &str,
        ids: &Ids,
        plan: &str,
        space: &str,
        extra: Value,
    ) -> http::Response {
        let mut body = json!({
            "service_id": ids.service,
            "plan_id": ids.plan(plan),
            "organization_guid": "org-1",
            "space_guid": space,
            "context": {"platform": "cloudfoundry", "organization_guid": "org-1", "space_guid": space},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call("PUT", &format!("/v2/service_instances/{id}"), V, Some(body))
    }

    fn bind(
        &self,
        instance: &str,
        binding: &str,
        ids: &Ids,
        plan: &str,
        extra: Value,
    ) -> http::Response {
        let mut body = json!({"service_id": ids.service, "plan_id": ids.plan(plan)});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call(
            "PUT",
            &format!("/v2/service_instances/{instance}/service_bindings/{binding}"),
            V,
            Some(body),
        )
    }

    fn deprovision(&self, id: &str, ids: &Ids, plan: &str) -> http::Response {
        self.call(
            "DELETE",
            &format!(
                "/v2/service_instances/{id}?service_id={}&plan_id={}",
                ids.service,
                ids.plan(plan)
            ),
            V,
            None,
        )
    }

    fn unbind(&self, instance: &str, binding: &str, ids: &Ids, plan: &str) -> http::Response {
        self.call(
            "DELETE",
            &format!(
                "/v2/service_instances/{instance}/service_bindings/{binding}?service_id={}&plan_id={}",
                ids.service,
                ids.plan(plan)
            ),
            V,
            None,
        )
    }

    fn last_operation(&self, id: &str, operation: Option<&str>) -> http::Response {
        let q = operation
            .map(|o| format!("?operation={o}"))
            .unwrap_or_default();
        self.call(
            "GET",
            &format!("/v2/service_instances/{id}/last_operation{q}"),
            V,
            None,
        )
    }

    /// Every add-on on every app, through the platform's own API.
    fn addons(&self) -> Vec<Value> {
        let apps = self.server.api("GET", "/api/apps", None).json();
        let mut all = Vec::new();
        for app in apps.as_array().unwrap() {
            let name = app["name"].as_str().unwrap();
            let addons = self
                .server
                .api("GET", &format!("/api/apps/{name}/addons"), None)
                .json();
            all.extend(addons.as_array().unwrap().iter().cloned());
        }
        all
    }

    fn apps(&self) -> Vec<String> {
        self.server
            .api("GET", "/api/apps", None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The app a dashboard URL (`…/myapps/<app>/addons/<attachment>`) names.
fn app_of(dashboard_url: &Value) -> String {
    let url = dashboard_url.as_str().expect("a dashboard_url");
    url.split("/myapps/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// An error body in the spec's shape, with `error` as given.
fn assert_error(r: &http::Response, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["description"].as_str().is_some_and(|d| !d.is_empty()),
        "a description: {body}"
    );
}

#[test]
fn both_auth_failures_are_401_before_the_version_the_route_or_the_body() {
    let env = Env::new();
    let b = Broker::start(&env);
    let addr = &b.server.addr;
    let wrong_password = http::basic("addonhost", "osb_not-the-password-0000000000000000");
    let line = std::fs::read_to_string(env.data().join("osb-credentials")).unwrap();
    let password = line.trim().split_once(':').unwrap().1.to_string();
    let wrong_user = http::basic("admin", &password);
    let requests: [(&str, &str, &[u8]); 4] = [
        ("GET", "/osb/v2/catalog", b""),
        ("PUT", "/osb/v2/service_instances/i-1", b"{not json"),
        ("DELETE", "/osb/v2/service_instances/never-made", b""),
        ("GET", "/osb/v2/no-such-route", b""),
    ];
    for (method, path, body) in requests {
        for auth in [
            None,
            Some(wrong_password.as_str()),
            Some(wrong_user.as_str()),
            Some("Basic !!not-base64!!"),
            Some("Bearer whatever"),
        ] {
            // Without a version header, which would be a 412 otherwise.
            let mut headers = vec![];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let r = http::request(addr, method, path, &headers, body);
            assert_error(&r, 401, "Unauthorized");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Basic")),
                "{method} {path}: {:?}",
                r.headers
            );
        }
    }
    assert!(b.apps().is_empty(), "nothing was made: {:?}", b.apps());
    // The platform's API token is not the broker's password either.
    let bearer = format!("Bearer {}", b.server.token);
    let r = http::request(
        addr,
        "GET",
        "/osb/v2/catalog",
        &[("authorization", &bearer), ("x-broker-api-version", V)],
        b"",
    );
    assert_eq!(r.status, 401);
    // And the broker's credentials open nothing of the platform's API.
    let r = http::request(addr, "GET", "/api/apps", &[("authorization", &b.auth)], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn the_version_header_is_required_and_only_2_13_to_2_17_are_spoken() {
    let env = Env::new();
    let b = Broker::start(&env);
    let r = b.raw("GET", "/v2/catalog", None, &[], b"");
    assert_error(&r, 412, "PreconditionFailed");
    assert!(
        r.text().contains("2.13") && r.text().contains("2.17"),
        "{}",
        r.text()
    );
    for v in ["2.12", "2.18", "3.0", "1.0", "two", ""] {
        let r = b.raw("GET", "/v2/catalog", Some(v), &[], b"");
        assert_error(&r, 412, "PreconditionFailed");
    }
    // Checked before the route and the body too.
    let r = b.raw(
        "PUT",
        "/v2/service_instances/i-1",
        Some("2.12"),
        &[],
        b"{not json",
    );
    assert_error(&r, 412, "PreconditionFailed");
    for v in VERSIONS {
        let r = b.raw(
            "GET",
            "/v2/catalog",
            Some(v),
            &[("x-broker-api-request-identity", "req-7f3a")],
            b"",
        );
        assert_eq!(r.status, 200, "{v}: {}", r.text());
        // The request identity comes back, for the platform's tracing.
        assert_eq!(r.header("x-broker-api-request-identity"), Some("req-7f3a"));
    }
}

#[test]
fn the_catalog_is_one_service_per_addon_with_ids_stable_across_restarts() {
    let env = Env::new();
    let b = Broker::start(&env);
    let catalog = b.catalog(V);
    let keys: Vec<&String> = catalog.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["services"], "only services at the top level");
    let services = catalog["services"].as_array().unwrap();
    let names: BTreeSet<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["exceptions", "hostile", "kv"]));
    let mut ids = BTreeSet::new();
    for s in services {
        let name = s["name"].as_str().unwrap();
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
            "{name} is CLI-friendly"
        );
        assert!(
            ids.insert(s["id"].as_str().unwrap().to_string()),
            "ids are unique"
        );
        assert!(!s["description"].as_str().unwrap().is_empty());
        assert_eq!(s["bindable"], true);
        assert!(s["metadata"].is_object());
        let plans = s["plans"].as_array().unwrap();
        assert!(!plans.is_empty());
        assert_eq!(s["plan_updateable"], plans.len() > 1, "{name}");
        for p in plans {
            assert!(
                ids.insert(p["id"].as_str().unwrap().to_string()),
                "ids are unique"
            );
            assert!(!p["name"].as_str().unwrap().is_empty());
            assert!(!p["description"].as_str().unwrap().is_empty());
        }
    }
    let kv = services.iter().find(|s| s["name"] == "kv").unwrap();
    let plans: Vec<&str> = kv["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(plans, ["mini", "pro"], "the manifest's plans");

    let id_list = |c: &Value| -> Vec<(String, Vec<String>)> {
        c["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["plans"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["id"].as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    let before = id_list(&catalog);
    b.server.stop();
    let b = Broker::start(&env);
    assert_eq!(id_list(&b.catalog(V)), before, "ids survive a restart");
    // Another broker (another store) has ids of its own.
    let other = Env::new();
    let ob = Broker::start(&other);
    let theirs: BTreeSet<String> = id_list(&ob.catalog(V))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(before.iter().all(|(s, _)| !theirs.contains(s)));
}

#[test]
fn catalog_fields_follow_the_requested_version() {
    let env = Env::new();
    let b = Broker::start(&env);
    // The fields each version's spec defines (Service Offering and Plan
    // objects).
    let service_fields = |minor: u32| {
        let mut f = vec![
            "name",
            "id",
            "description",
            "tags",
            "requires",
            "bindable",
            "metadata",
            "dashboard_client",
            "plan_updateable",
            "plans",
        ];
        if minor >= 14 {
            f.extend(["instances_retrievable", "bindings_retrievable"]);
        }
        if minor >= 15 {
            f.push("allow_context_updates");
        }
        f
    };
    let plan_fields = |minor: u32| {
        let mut f = vec![
            "id",
            "name",
            "description",
            "metadata",
            "free",
            "bindable",
            "schemas",
        ];
        if minor >= 15 {
            f.extend([
                "plan_updateable",
                "maximum_polling_duration",
                "maintenance_info",
            ]);
        }
        if minor >= 17 {
            f.push("binding_rotatable");
        }
        f
    };
    for (minor, v) in (13..=17).zip(VERSIONS) {
        let catalog = b.catalog(v);
        for s in catalog["services"].as_array().unwrap() {
            for key in s.as_object().unwrap().keys() {
                assert!(
                    service_fields(minor).contains(&key.as_str()),
                    "{v}: service field {key} is not in {v}'s spec"
                );
            }
            for p in s["plans"].as_array().unwrap() {
                for key in p.as_object().unwrap().keys() {
                    assert!(
                        plan_fields(minor).contains(&key.as_str()),
                        "{v}: plan field {key} is not in {v}'s spec"
                    );
                }
            }
        }
        let kv = catalog["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "kv")
            .unwrap()
            .clone();
        let hostile = catalog["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "hostile")
            .unwrap()
            .clone();
        let plan = &kv["plans"][0];
        assert_eq!(
            kv["bindings_retrievable"].as_bool(),
            (minor >= 14).then_some(true),
            "{v}"
        );
        assert_eq!(
            kv["instances_retrievable"].as_bool(),
            (minor >= 14).then_some(true),
            "{v}"
        );
        assert_eq!(
            plan["maintenance_info"]["version"]
                .as_str()
                .is_some_and(|s| s.starts_with("1.0.0+")),
            minor >= 15,
            "{v}: {plan}"
        );
        assert_eq!(
            plan["binding_rotatable"].as_bool(),
            (minor >= 17).then_some(true),
            "{v}: kv keeps replaced credentials for a grace window"
        );
        assert_eq!(
            hostile["plans"][0]["binding_rotatable"].as_bool(),
            (minor >= 17).then_some(false),
            "{v}: hostile keeps none"
        );
    }
}

#[test]
fn provisioning_is_201_then_200_for_the_same_request_and_409_for_another() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let params = json!({"parameters": {"grace_seconds": 60}});
    let r = b.provision("inst-1", &kv, "mini", "space-1", params.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let app = app_of(&created["dashboard_url"]);
    assert!(app.starts_with("osb-"), "{app}");
    // The identical request again: 200, the same answer.
    let r = b.provision("inst-1", &kv, "mini", "space-1", params.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), created);
    // The same id asking for something else: 409, whatever differs.
    assert_error(
        &b.provision("inst-1", &kv, "pro", "space-1", params.clone()),
        409,
        "Conflict",
    );
    assert_error(
        &b.provision(
            "inst-1",
            &kv,
            "mini",
            "space-1",
            json!({"parameters": {"grace_seconds": 30}}),
        ),
        409,
        "Conflict",
    );
    assert_error(
        &b.provision("inst-1", &kv, "mini", "space-2", params.clone()),
        409,
        "Conflict",
    );
    let hostile = b.ids("hostile");
    assert_error(
        &b.provision("inst-1", &hostile, "test", "space-1", json!({})),
        409,
        "Conflict",
    );
    assert_eq!(b.addons().len(), 1, "one add-on: {:?}", b.addons());
    let addon = &b.addons()[0];
    assert_eq!(addon["service"], "kv");
    assert_eq!(addon["plan"], "mini");
    assert_eq!(addon["app"], app.as_str());
    // Another instance in the same space lives on the same app, one in
    // another space on another.
    let r = b.provision("inst-2", &kv, "mini", "space-1", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app_of(&r.json()["dashboard_url"]), app);
    let r = b.provision("inst-3", &kv, "mini", "space-2", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(app_of(&r.json()["dashboard_url"]), app);
    // A Kubernetes namespace is a place too.
    let r = b.call(
        "PUT",
        "/v2/service_instances/inst-4",
        V,
        Some(json!({"service_id": kv.service, "plan_id": kv.plan("mini"),
                    "context": {"platform": "kubernetes", "namespace": "shop", "clusterid": "c-1"}})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(b.addons().len(), 4);
}

#[test]
fn an_addon_allowing_one_per_app_allows_one_instance_per_space() {
    let env = Env::with_plugin_copies(&["kv"], |_, m| {
        m["api"]["requires"] = json!([]);
    });
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    assert_eq!(
        b.provision("inst-1", &kv, "mini", "space-1", json!({}))
            .status,
        201
    );
    let r = b.provision("inst-2", &kv, "mini", "space-1", json!({}));
    assert_error(&r, 422, "UnprocessableEntity");
    assert!(r.text().contains("one per app"), "{}", r.text());
    // Refused, the id is free: in another space it is fine.
    assert_eq!(
        b.provision("inst-2", &kv, "mini", "space-2", json!({}))
            .status,
        201
    );
}

#[test]
fn missing_or_unknown_ids_and_malformed_requests_are_400_and_store_nothing() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let hostile = b.ids("hostile");
    let place = json!({"organization_guid": "org-1", "space_guid": "space-1"});
    let with = |extra: Value| {
        let mut body = place.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let bad_bodies = [
        with(json!({"plan_id": kv.plan("mini")})),
        with(json!({"service_id": kv.service})),
        with(json!({"service_id": "no-such-service", "plan_id": kv.plan("mini")})),
        with(json!({"service_id": kv.service, "plan_id": "no-such-plan"})),
        with(json!({"service_id": kv.service, "plan_id": hostile.plan("test")})),
        with(json!({"service_id": kv.service, "plan_id": ""})),
        with(json!({"service_id": 7, "plan_id": kv.plan("mini")})),
        with(json!({"service_id": kv.service, "plan_id": kv.plan("mini"), "parameters": [1, 2]})),
        with(json!({"service_id": kv.service, "plan_id": kv.plan("mini"), "context": "cf"})),
        json!([1, 2, 3]),
    ];
    for body in bad_bodies {
        let r = b.call("PUT", "/v2/service_instances/inst-1", V, Some(body.clone()));
        assert_error(&r, 400, "BadRequest");
    }
    let r = b.raw(
        "PUT",
        "/v2/service_instances/inst-1",
        Some(V),
        &[],
        b"{not json",
    );
    assert_error(&r, 400, "BadRequest");
    let ok = with(json!({"service_id": kv.service, "plan_id": kv.plan("mini")}));
    let r = b.raw(
        "PUT",
        "/v2/service_instances/inst-1?accepts_incomplete=maybe",
        Some(V),
        &[],
        ok.to_string().as_bytes(),
    );
    assert_error(&r, 400, "BadRequest");
    // Before 2.15, organization_guid and space_guid are required.
    let unplaced = json!({"service_id": kv.service, "plan_id": kv.plan("mini")});
    for v in ["2.13", "2.14"] {
        let r = b.call(
            "PUT",
            "/v2/service_instances/inst-1",
            v,
            Some(unplaced.clone()),
        );
        assert_error(&r, 400, "BadRequest");
    }
    assert!(b.apps().is_empty(), "nothing was made: {:?}", b.apps());
    assert!(b.addons().is_empty());
    // The id was not burnt by the refusals; from 2.15 the place is optional.
    let r = b.call(
        "PUT",
        "/v2/service_instances/inst-1",
        "2.15",
        Some(unplaced),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app_of(&r.json()["dashboard_url"]), "osb-default");
}

#[test]
fn a_plan_change_goes_through_the_addon_and_is_200() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let catalog = b.catalog(V);
    let maintenance = catalog["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "kv")
        .unwrap()["plans"][0]["maintenance_info"]
        .clone();
    // Provisioning against a maintenance version the catalog no longer
    // offers is refused; the current one is accepted.
    let stale = json!({"maintenance_info": {"version": "0.9.0+old"}});
    let r = b.provision("inst-1", &kv, "mini", "space-1", stale.clone());
    assert_error(&r, 422, "MaintenanceInfoConflict");
    let r = b.provision(
        "inst-1",
        &kv,
        "mini",
        "space-1",
        json!({"maintenance_info": maintenance}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let patch = |body: Value| b.call("PATCH", "/v2/service_instances/inst-1", V, Some(body));
    let r = patch(json!({"service_id": kv.service, "plan_id": kv.plan("pro"),
                         "previous_values": {"plan_id": kv.plan("mini")}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_eq!(b.addons()[0]["plan"], "pro", "the plugin changed the plan");
    let releases = b.addons()[0]["app"].as_str().unwrap().to_string();
    let descriptions: Vec<String> = b
        .server
        .api("GET", &format!("/api/apps/{releases}/releases"), None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap().to_string())
        .collect();
    assert!(descriptions[0].contains("to kv:pro"), "{descriptions:?}");
    // The same plan again, or no plan: nothing to do, 200.
    let r = patch(json!({"service_id": kv.service, "plan_id": kv.plan("pro")}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = patch(json!({"service_id": kv.service}));
    assert_eq!(r.status, 200, "{}", r.text());
    // Fetching shows the plan it is on now; provisioning it again with the
    // new plan is the same request, with the old one a conflict.
    let r = b.call("GET", "/v2/service_instances/inst-1", "2.14", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["plan_id"], kv.plan("pro"));
    assert_eq!(r.json()["service_id"], kv.service);
    assert_eq!(
        b.provision("inst-1", &kv, "pro", "space-1", json!({}))
            .status,
        200
    );
    assert_error(
        &b.provision("inst-1", &kv, "mini", "space-1", json!({})),
        409,
        "Conflict",
    );
    // What cannot be done.
    assert_error(
        &patch(json!({"plan_id": kv.plan("mini")})),
        400,
        "BadRequest",
    );
    assert_error(
        &patch(json!({"service_id": kv.service, "plan_id": "no-such-plan"})),
        400,
        "BadRequest",
    );
    assert_error(
        &patch(json!({"service_id": b.ids("hostile").service, "plan_id": kv.plan("mini")})),
        400,
        "BadRequest",
    );
    assert_error(
        &b.call(
            "PATCH",
            "/v2/service_instances/never-made",
            V,
            Some(json!({"service_id": kv.service, "plan_id": kv.plan("mini")})),
        ),
        400,
        "BadRequest",
    );
    assert_error(
        &patch(json!({"service_id": kv.service, "parameters": {"grace_seconds": 5}})),
        422,
        "UnprocessableEntity",
    );
    let mut stale_patch = stale;
    stale_patch["service_id"] = json!(kv.service);
    assert_error(&patch(stale_patch), 422, "MaintenanceInfoConflict");
    assert_eq!(b.addons()[0]["plan"], "pro", "the refusals changed nothing");
}

#[test]
fn deprovisioning_is_200_then_410_and_takes_the_vars_away() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let r = b.provision("inst-1", &kv, "mini", "space-1", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let app = app_of(&r.json()["dashboard_url"]);
    let config = || {
        b.server
            .api("GET", &format!("/api/apps/{app}/config"), None)
            .json()
    };
    assert!(config()["KV_URL"].is_string());
    // service_id and plan_id are required query parameters.
    for q in [
        String::new(),
        format!("?service_id={}", kv.service),
        format!("?plan_id={}", kv.plan("mini")),
        format!("?service_id=other&plan_id={}", kv.plan("mini")),
    ] {
        let r = b.call(
            "DELETE",
            &format!("/v2/service_instances/inst-1{q}"),
            V,
            None,
        );
        assert_error(&r, 400, "BadRequest");
    }
    assert_eq!(b.addons().len(), 1, "still there");
    let r = b.deprovision("inst-1", &kv, "mini");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert!(config().get("KV_URL").is_none(), "{}", config());
    assert!(b.addons().is_empty());
    let r = b.deprovision("inst-1", &kv, "mini");
    assert_eq!(r.status, 410, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_eq!(b.deprovision("never-made", &kv, "mini").status, 410);
    assert_error(
        &b.call("GET", "/v2/service_instances/inst-1", V, None),
        404,
        "NotFound",
    );
    assert_error(&b.last_operation("inst-1", None), 404, "NotFound");
    // The id may be used again.
    assert_eq!(
        b.provision("inst-1", &kv, "mini", "space-1", json!({}))
            .status,
        201
    );
}

#[test]
fn a_pending_addon_is_202_with_an_operation_that_last_operation_follows() {
    let env = Env::new();
    let b = Broker::start(&env);
    let hostile = b.ids("hostile");
    let put = |id: &str, incomplete: bool| {
        let q = if incomplete {
            "?accepts_incomplete=true"
        } else {
            ""
        };
        let body = json!({"service_id": hostile.service, "plan_id": hostile.plan("test"),
                          "organization_guid": "org-1", "space_guid": "space-1",
                          "parameters": {"attack": "pending"}});
        b.call(
            "PUT",
            &format!("/v2/service_instances/{id}{q}"),
            V,
            Some(body),
        )
    };
    // A platform that cannot poll: 422 AsyncRequired, and nothing stays.
    assert_error(&put("inst-1", false), 422, "AsyncRequired");
    assert!(b.addons().is_empty(), "no live add-on: {:?}", b.addons());
    let r = put("inst-1", true);
    assert_eq!(r.status, 202, "the id is free again: {}", r.text());
    let accepted = r.json();
    let operation = accepted["operation"].as_str().unwrap().to_string();
    assert!(!operation.is_empty());
    let app = app_of(&accepted["dashboard_url"]);
    // Sent again while in progress: 202 with the same operation, never 200.
    let again = put("inst-1", true);
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["operation"], operation.as_str());
    assert_error(&put("inst-1", false), 422, "AsyncRequired");
    let r = b.last_operation("inst-1", Some(&operation));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "in progress");
    assert_error(
        &b.last_operation("inst-1", Some("not-this-one")),
        400,
        "BadRequest",
    );
    // Not fetchable, bindable or changeable while in progress.
    assert_error(
        &b.call("GET", "/v2/service_instances/inst-1", V, None),
        404,
        "NotFound",
    );
    assert_error(
        &b.bind("inst-1", "bind-1", &hostile, "test", json!({})),
        422,
        "ConcurrencyError",
    );
    assert_error(
        &b.call(
            "PATCH",
            "/v2/service_instances/inst-1",
            V,
            Some(json!({"service_id": hostile.service, "plan_id": hostile.plan("test")})),
        ),
        422,
        "ConcurrencyError",
    );
    // The partner completes it (from its own HTTP route, as a provider's
    // machinery would).
    let partner_id = |app: &str| {
        b.server
            .api("GET", &format!("/api/apps/{app}/addons"), None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "provisioning")
            .expect("a provisioning add-on")["addon_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let id = partner_id(&app);
    let r = http::request(
        &b.server.addr,
        "POST",
        &format!("/addons/hostile/complete/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.last_operation("inst-1", Some(&operation));
    assert_eq!(r.json()["state"], "succeeded", "{}", r.text());
    assert_eq!(
        put("inst-1", true).status,
        200,
        "complete: the same request is 200 now"
    );
    let r = b.bind("inst-1", "bind-1", &hostile, "test", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.json()["credentials"]["HOSTILE_URL"].is_string(),
        "{}",
        r.text()
    );

    // Another one the partner fails: last_operation says so, with its reason.
    let r = put("inst-2", true);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = partner_id(&app);
    let r = http::request(
        &b.server.addr,
        "POST",
        &format!("/addons/hostile/fail/{id}"),
        &[],
        b"no capacity left in region us",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.last_operation("inst-2", None);
    assert_eq!(r.json()["state"], "failed", "{}", r.text());
    assert!(
        r.json()["description"]
            .as_str()
            .unwrap()
            .contains("no capacity left"),
        "{}",
        r.text()
    );
    assert_error(&put("inst-2", true), 409, "Conflict");
    // The platform's orphan mitigation: delete it, then it is gone.
    assert_eq!(b.deprovision("inst-2", &hostile, "test").status, 200);
    assert_eq!(b.deprovision("inst-2", &hostile, "test").status, 410);
}

#[test]
fn bindings_hand_out_the_instance_config_vars_as_credentials() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let r = b.provision("inst-1", &kv, "mini", "space-1", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let app = app_of(&r.json()["dashboard_url"]);
    assert_eq!(
        b.provision("inst-2", &kv, "mini", "space-1", json!({}))
            .status,
        201
    );
    let app_config = b
        .server
        .api("GET", &format!("/api/apps/{app}/config"), None)
        .json();
    let for_app = json!({"bind_resource": {"app_guid": "app-a"}});
    let r = b.bind("inst-1", "bind-1", &kv, "mini", for_app.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    let bound = r.json();
    // The instance's vars, under the manifest's names.
    assert_eq!(
        bound["credentials"],
        json!({"KV_URL": app_config["KV_URL"]})
    );
    assert_eq!(bound["endpoints"][0]["host"], "127.0.0.1", "{bound}");
    assert!(bound.get("metadata").is_none(), "no expiry: {bound}");
    let r = b.bind("inst-1", "bind-1", &kv, "mini", for_app.clone());
    assert_eq!(r.status, 200, "the identical request: {}", r.text());
    assert_eq!(r.json(), bound);
    assert_error(
        &b.bind(
            "inst-1",
            "bind-1",
            &kv,
            "mini",
            json!({"bind_resource": {"app_guid": "app-b"}}),
        ),
        409,
        "Conflict",
    );
    assert_error(
        &b.bind("inst-2", "bind-1", &kv, "mini", for_app.clone()),
        409,
        "Conflict",
    );
    // The second instance's binding carries its own vars (KV_ORANGE_URL
    // on the app, KV_URL in the credentials).
    let r = b.bind("inst-2", "bind-2", &kv, "mini", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["credentials"]["KV_URL"],
        app_config["KV_ORANGE_URL"]
    );
    // Refused: unknown ids, missing fields, parameters bindings do not take.
    assert_error(
        &b.bind("never-made", "bind-3", &kv, "mini", json!({})),
        400,
        "BadRequest",
    );
    let hostile = b.ids("hostile");
    for body in [
        json!({"plan_id": kv.plan("mini")}),
        json!({"service_id": kv.service}),
        json!({"service_id": hostile.service, "plan_id": hostile.plan("test")}),
        json!({"service_id": kv.service, "plan_id": "no-such-plan"}),
        json!({"service_id": kv.service, "plan_id": kv.plan("mini"), "parameters": {"x": 1}}),
    ] {
        let r = b.call(
            "PUT",
            "/v2/service_instances/inst-1/service_bindings/bind-3",
            V,
            Some(body),
        );
        assert_error(&r, 400, "BadRequest");
    }
    // Fetching (2.14+, where the catalog says bindings_retrievable).
    let path = "/v2/service_instances/inst-1/service_bindings/bind-1";
    let r = b.call("GET", path, "2.14", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["credentials"], bound["credentials"]);
    assert!(r.json().get("endpoints").is_none(), "endpoints are 2.15's");
    assert_error(&b.call("GET", path, "2.13", None), 404, "NotFound");
    let r = b.call("GET", &format!("{path}/last_operation"), V, None);
    assert_eq!(r.json(), json!({"state": "succeeded"}));
    // A 2.13 platform gets credentials only.
    let r = b.call(
        "PUT",
        "/v2/service_instances/inst-1/service_bindings/bind-4",
        "2.13",
        Some(json!({"service_id": kv.service, "plan_id": kv.plan("mini")})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["credentials"]);
    // Unbinding: service_id and plan_id required, 200 then 410.
    assert_error(&b.call("DELETE", path, V, None), 400, "BadRequest");
    let r = b.unbind("inst-1", "bind-1", &kv, "mini");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    let r = b.unbind("inst-1", "bind-1", &kv, "mini");
    assert_eq!(r.status, 410, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    assert_eq!(
        b.unbind("inst-2", "bind-4", &kv, "mini").status,
        410,
        "not inst-2's"
    );
    assert_error(&b.call("GET", path, V, None), 404, "NotFound");
    // Unbinding forgets the binding; the instance and its vars stay.
    let after = b
        .server
        .api("GET", &format!("/api/apps/{app}/config"), None)
        .json();
    assert_eq!(after["KV_URL"], app_config["KV_URL"]);
}

#[test]
fn binding_rotation_needs_a_live_predecessor_of_the_same_instance_and_a_grace_window() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let hostile = b.ids("hostile");
    for (id, ids, plan) in [
        ("kv-1", &kv, "mini"),
        ("kv-2", &kv, "mini"),
        ("h-1", &hostile, "test"),
    ] {
        let r = b.provision(id, ids, plan, "space-1", json!({}));
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            b.bind(id, &format!("{id}-b1"), ids, plan, json!({})).status,
            201
        );
    }
    let from = |pid: &str| json!({"predecessor_binding_id": pid});
    // An add-on without a grace window cannot keep the predecessor working.
    assert_error(
        &b.bind("h-1", "h-1-b2", &hostile, "test", from("h-1-b1")),
        400,
        "BadRequest",
    );
    assert_error(
        &b.bind("kv-1", "kv-1-b2", &kv, "mini", from("no-such")),
        400,
        "BadRequest",
    );
    assert_error(
        &b.bind("kv-1", "kv-1-b2", &kv, "mini", from("kv-2-b1")),
        400,
        "BadRequest",
    );
    let before = b
        .call(
            "GET",
            "/v2/service_instances/kv-1/service_bindings/kv-1-b1",
            V,
            None,
        )
        .json();
    // Before 2.17 the field means nothing: a plain binding, no rotation.
    let r = b.call(
        "PUT",
        "/v2/service_instances/kv-1/service_bindings/kv-1-plain",
        "2.16",
        Some(json!({"service_id": kv.service, "plan_id": kv.plan("mini"),
                    "predecessor_binding_id": "kv-1-b1"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["credentials"], before["credentials"]);
    let r = b.bind("kv-1", "kv-1-b2", &kv, "mini", from("kv-1-b1"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json()["credentials"], before["credentials"], "rotated");
    let again = b.bind("kv-1", "kv-1-b2", &kv, "mini", from("kv-1-b1"));
    assert_eq!(again.status, 200, "the identical request: {}", again.text());
    assert_eq!(
        again.json()["credentials"],
        r.json()["credentials"],
        "not rotated twice"
    );
    // A predecessor is rotated once: its successor is the one to rotate.
    assert_error(
        &b.bind("kv-1", "kv-1-b3", &kv, "mini", from("kv-1-b1")),
        400,
        "BadRequest",
    );
    assert_eq!(
        b.bind("kv-1", "kv-1-b3", &kv, "mini", from("kv-1-b2"))
            .status,
        201
    );
    // Two rotations on, the first credentials are gone: kv keeps one
    // previous password, and the binding says so.
    let first = b
        .call(
            "GET",
            "/v2/service_instances/kv-1/service_bindings/kv-1-b1",
            V,
            None,
        )
        .json();
    let expires = first["metadata"]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let second = b
        .call(
            "GET",
            "/v2/service_instances/kv-1/service_bindings/kv-1-b2",
            V,
            None,
        )
        .json();
    assert!(
        expires.as_str() <= second["metadata"]["expires_at"].as_str().unwrap(),
        "{first} {second}"
    );
}

#[test]
fn the_originating_identity_is_recorded_in_the_audit_trail() {
    let env = Env::new();
    let b = Broker::start(&env);
    let kv = b.ids("kv");
    let cf = [("x-broker-api-originating-identity", CF_USER)];
    let body = json!({"service_id": kv.service, "plan_id": kv.plan("mini"),
                      "organization_guid": "org-1", "space_guid": "space-1"});
    let r = b.raw(
        "PUT",
        "/v2/service_instances/inst-1",
        Some(V),
        &cf,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let bind = json!({"service_id": kv.service, "plan_id": kv.plan("mini")});
    let k8s = "kubernetes eyJ1c2VybmFtZSI6ImR1a2UiLCJ1aWQiOiJjMmRkZTI0Mi01Y2UwIn0="; // {"username":"duke","uid":"c2dde242-5ce0"}
    let r = b.raw(
        "PUT",
        "/v2/service_instances/inst-1/service_bindings/bind-1",
        Some(V),
        &[("x-broker-api-originating-identity", k8s)],
        bind.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b.raw(
        "DELETE",
        &format!(
            "/v2/service_instances/inst-1/service_bindings/bind-1?service_id={}&plan_id={}",
            kv.service,
            kv.plan("mini")
        ),
        Some(V),
        &[(
            "x-broker-api-originating-identity",
            "cloudfoundry %%%not-base64",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = env.json(&["audit"]);
    let entry = |action: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("an {action} entry: {audit}"))
            .clone()
    };
    let provision = entry("osb:provision");
    // The claimed identity is in the detail, never the actor.
    assert_eq!(provision["actor"], "osb");
    assert!(
        provision["detail"]
            .as_str()
            .unwrap()
            .contains(r#"by cloudfoundry user {"user_id":"683ea748-3092-4ff4-b656-39cacc4d5360"}"#),
        "{provision}"
    );
    assert!(provision["app"].as_str().unwrap().starts_with("osb-"));
    let bound = entry("osb:bind");
    assert_eq!(bound["actor"], "osb");
    assert!(
        bound["detail"]
            .as_str()
            .unwrap()
            .contains("by kubernetes user")
            && bound["detail"].as_str().unwrap().contains("duke"),
        "{bound}"
    );
    let unbound = entry("osb:unbind");
    assert!(
        unbound["detail"]
            .as_str()
            .unwrap()
            .contains("undecodable identity"),
        "{unbound}"
    );
}

/// What a platform does, end to end: read the catalog, provision, bind,
/// hand the credentials to an app that uses them against the kv add-on's
/// HTTP route, rotate the binding (the old credentials keep working through
/// the add-on's grace window, then stop), unbind and deprovision.
#[test]
fn a_platform_provisions_binds_uses_rotates_unbinds_and_deprovisions() {
    const GRACE: i64 = 3;
    // A short window, so that its end comes within the test: the manifest
    // says it (the broker's expires_at), and so does the instance's
    // `grace_seconds` parameter (what kv enforces).
    let env = Env::with_plugin_copies(&["kv"], |_, m| {
        m["rotation"] = json!({"grace_seconds": GRACE});
    });
    let b = Broker::start(&env);
    let addr = b.server.addr.clone();
    // The catalog: the platform's marketplace.
    let catalog = b.catalog(V);
    let kv = &catalog["services"][0];
    assert_eq!(kv["name"], "kv");
    let mini = kv["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mini")
        .unwrap();
    assert_eq!(mini["binding_rotatable"], true);
    let (service_id, plan_id) = (kv["id"].as_str().unwrap(), mini["id"].as_str().unwrap());
    let cf = [("x-broker-api-originating-identity", CF_USER)];

    // `cf create-service kv mini cache`
    let body = json!({
        "service_id": service_id, "plan_id": plan_id,
        "organization_guid": "org-1", "space_guid": "space-1",
        "context": {"platform": "cloudfoundry", "organization_guid": "org-1",
                    "space_guid": "space-1", "instance_name": "cache"},
        "maintenance_info": mini["maintenance_info"],
        "parameters": {"grace_seconds": GRACE},
    });
    let r = b.raw(
        "PUT",
        "/v2/service_instances/cache-1?accepts_incomplete=true",
        Some(V),
        &cf,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "kv provisions synchronously: {}", r.text());

    // `cf bind-service shop cache`
    let bind = |id: &str, extra: Value| {
        let mut body = json!({"service_id": service_id, "plan_id": plan_id,
                              "bind_resource": {"app_guid": "shop-guid"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        b.raw(
            "PUT",
            &format!("/v2/service_instances/cache-1/service_bindings/{id}?accepts_incomplete=true"),
            Some(V),
            &cf,
            body.to_string().as_bytes(),
        )
    };
    let r = bind("shop-1", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let old = KvUrl::parse(r.json()["credentials"]["KV_URL"].as_str().unwrap());

    // The app uses them (VCAP_SERVICES → KV_URL) against the add-on's route.
    let use_kv = |kv: &KvUrl, method: &str, body: &[u8]| {
        http::request(
            &addr,
            method,
            &format!("{}/greeting", kv.path),
            &[("authorization", &kv.auth())],
            body,
        )
    };
    assert_eq!(use_kv(&old, "PUT", b"hello from cf").status, 201);
    let r = use_kv(&old, "GET", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from cf"));

    // The platform rotates the binding.
    let r = bind("shop-2", json!({"predecessor_binding_id": "shop-1"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let rotated_at = unix_now();
    let new = KvUrl::parse(r.json()["credentials"]["KV_URL"].as_str().unwrap());
    assert_eq!(new.path, old.path, "the same namespace");
    assert_ne!(new.password, old.password, "new credentials");
    assert!(
        r.json().get("metadata").is_none(),
        "the successor does not expire"
    );
    assert_eq!(use_kv(&new, "GET", b"").text(), "hello from cf");
    // The predecessor keeps working through the grace window, and says
    // until when.
    assert_eq!(
        use_kv(&old, "GET", b"").status,
        200,
        "old credentials in the window"
    );
    let r = b.call(
        "GET",
        "/v2/service_instances/cache-1/service_bindings/shop-1",
        V,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["credentials"]["KV_URL"], old.url.as_str());
    let expires_at = r.json()["metadata"]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(expires_at.ends_with(".0Z"), "{expires_at}");
    // Then the window closes: the old password stops, the new one works.
    let deadline = Instant::now() + Duration::from_secs(GRACE as u64 + 10);
    loop {
        let status = use_kv(&old, "GET", b"").status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "the old credentials never stopped working"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        unix_now() >= rotated_at + GRACE - 1,
        "they worked for the grace window ({GRACE} s)"
    );
    assert_eq!(use_kv(&new, "GET", b"").text(), "hello from cf");

    // `cf unbind-service`, `cf delete-service`.
    for id in ["shop-1", "shop-2"] {
        let r = b.raw(
            "DELETE",
            &format!(
                "/v2/service_instances/cache-1/service_bindings/{id}?service_id={service_id}&plan_id={plan_id}"
            ),
            Some(V),
            &cf,
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = b.raw(
        "DELETE",
        &format!("/v2/service_instances/cache-1?service_id={service_id}&plan_id={plan_id}&accepts_incomplete=true"),
        Some(V),
        &cf,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        use_kv(&new, "GET", b"").status,
        404,
        "the namespace is gone"
    );
    let actions: Vec<String> = env
        .json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "osb")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in [
        "osb:provision",
        "osb:bind",
        "osb:rotate-binding",
        "osb:unbind",
        "osb:deprovision",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

/// The same flow as a platform's plain HTTP requests: the shell script in
/// `examples/` (curl and jq) against a real server, run twice — the second
/// run starts by deprovisioning what a first one could have left.
#[test]
fn the_platform_example_script_runs_against_serve() {
    let env = Env::new();
    let b = Broker::start(&env);
    let printed = env.json(&["osb:credentials"]);
    let script = root().join("examples/osb-platform.sh");
    for run in 1..=2 {
        let out = std::process::Command::new("sh")
            .arg(&script)
            .env("OSB_URL", format!("http://{}/osb", b.server.addr))
            .env("OSB_USER", printed["username"].as_str().unwrap())
            .env("OSB_PASSWORD", printed["password"].as_str().unwrap())
            .output()
            .expect("running sh");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "run {run}: {stdout}{stderr}");
        for line in [
            "provisioned osb-example-cache (and a retry answered 200)",
            "read back: hello from the platform",
            "the old ones still work: hello from the platform",
            "unbound and deprovisioned (and a second deprovisioning answered 410)",
        ] {
            assert!(stdout.contains(line), "run {run}: {line:?} in {stdout}");
        }
    }
}

#[test]
fn servers_sharing_a_database_share_the_broker_credentials_catalog_and_instances() {
    let env = Env::on_postgres();
    let first = Broker::start(&env);
    let sibling = env.sibling();
    let second = Broker::start(&sibling);
    // One set of credentials, kept in the store: a platform may be sent to
    // either server.
    assert_eq!(first.auth, second.auth);
    let printed = sibling.json(&["osb:credentials"]);
    assert_eq!(
        http::basic(
            printed["username"].as_str().unwrap(),
            printed["password"].as_str().unwrap()
        ),
        first.auth
    );
    assert_eq!(
        first.catalog(V),
        second.catalog(V),
        "the same ids everywhere"
    );
    let kv = first.ids("kv");
    assert_eq!(
        first
            .provision("inst-1", &kv, "mini", "space-1", json!({}))
            .status,
        201
    );
    let r = second.provision("inst-1", &kv, "mini", "space-1", json!({}));
    assert_eq!(
        r.status,
        200,
        "the same instance on the other server: {}",
        r.text()
    );
    let r = second.bind("inst-1", "bind-1", &kv, "mini", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let fetched = first.call(
        "GET",
        "/v2/service_instances/inst-1/service_bindings/bind-1",
        V,
        None,
    );
    assert_eq!(fetched.json()["credentials"], r.json()["credentials"]);
    assert_eq!(second.unbind("inst-1", "bind-1", &kv, "mini").status, 200);
    assert_eq!(first.unbind("inst-1", "bind-1", &kv, "mini").status, 410);
    assert_eq!(second.deprovision("inst-1", &kv, "mini").status, 200);
    assert_eq!(first.deprovision("inst-1", &kv, "mini").status, 410);
}

#[test]
fn the_broker_path_is_configurable_and_the_broker_can_be_turned_off() {
    let env = Env::new();
    let printed = env.json(&["osb:credentials"]);
    assert_eq!(printed["username"], "addonhost");
    assert_eq!(printed["url"], "http://127.0.0.1:5000/osb");
    let text = env.ok(&["osb:credentials"]);
    assert!(
        text.contains(&format!(
            "cf create-service-broker addonhost addonhost {} http://127.0.0.1:5000/osb",
            printed["password"].as_str().unwrap()
        )),
        "{text}"
    );
    let auth = http::basic("addonhost", printed["password"].as_str().unwrap());
    let get = |server: &Server, path: &str| {
        http::request(
            &server.addr,
            "GET",
            path,
            &[("authorization", &auth), ("x-broker-api-version", V)],
            b"",
        )
    };
    let moved = Server::start_with(
        env.command(&["serve", "--port", "0", "--osb-path", "/broker/v2x"]),
        &env,
    );
    assert_eq!(
        get(&moved, "/broker/v2x/v2/catalog").status,
        200,
        "the credentials printed before serve are the broker's"
    );
    assert_ne!(get(&moved, "/osb/v2/catalog").status, 200);
    // The metrics count the broker's requests as a route class of their
    // own, wherever it answers.
    let metrics = moved.api("GET", "/metrics", None).text();
    assert!(
        metrics.contains("addonhost_http_requests_total{route=\"osb\",status=\"200\"} 1"),
        "{metrics}"
    );
    drop(moved);
    let off = Server::start_with(env.command(&["serve", "--port", "0", "--no-osb"]), &env);
    assert_ne!(get(&off, "/osb/v2/catalog").status, 200);
    drop(off);
    let r = env.run(&["serve", "--port", "0", "--osb-path", "/api"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--osb-path"), "{}", r.stderr);
}

/// Each broker request claims another originating identity (any platform
/// name, any user): were the identity part of the actor, each would be an
/// actor of its own, never reaching its `--audit-keep` bound, and the
/// trail would grow without limit. The actor is `osb`, one bounded actor;
/// the identity is in each entry's detail. What the broker makes is
/// recorded as the broker's, so the operator's own entries stay.
#[test]
fn originating_identities_never_become_actors_so_the_audit_trail_stays_bounded() {
    let env = Env::new();
    let server = Server::start_with(
        env.command(&["serve", "--port", "0", "--audit-keep", "10"]),
        &env,
    );
    let line = std::fs::read_to_string(env.data().join("osb-credentials")).unwrap();
    let (user, password) = line.trim().split_once(':').unwrap();
    let b = Broker {
        server,
        auth: http::basic(user, password),
    };
    env.ok(&["apps:create", "mine"]);
    let kv = b.ids("kv");
    for i in 0..30 {
        use base64::Engine;
        let who = base64::engine::general_purpose::STANDARD
            .encode(format!(r#"{{"user_id":"user-{i}"}}"#));
        let header = format!("platform-{i} {who}");
        let body = json!({"service_id": kv.service, "plan_id": kv.plan("mini"),
                          "organization_guid": "org-1", "space_guid": "space-1"});
        let id = format!("inst-{i}");
        let r = b.raw(
            "PUT",
            &format!("/v2/service_instances/{id}"),
            Some(V),
            &[("x-broker-api-originating-identity", &header)],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = b.raw(
            "DELETE",
            &format!(
                "/v2/service_instances/{id}?service_id={}&plan_id={}",
                kv.service,
                kv.plan("mini")
            ),
            Some(V),
            &[("x-broker-api-originating-identity", &header)],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let audit = env.json(&["audit", "--limit", "100000"]);
    let audit = audit.as_array().unwrap();
    let actors: BTreeSet<&str> = audit.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, BTreeSet::from(["osb", "user"]), "{actors:?}");
    let broker = audit.iter().filter(|e| e["actor"] == "osb").count();
    assert!(broker <= 10 + 16, "{broker} entries of the broker kept");
    let newest = audit
        .iter()
        .find(|e| e["action"] == "osb:deprovision")
        .unwrap();
    let detail = newest["detail"].as_str().unwrap();
    assert!(
        detail.contains("platform-29") && detail.contains(r#"{"user_id":"user-29"}"#),
        "{newest}"
    );
    // The operator's own entry is still there.
    assert!(
        audit
            .iter()
            .any(|e| e["actor"] == "user" && e["action"] == "apps:create" && e["app"] == "mine"),
        "{audit:?}"
    );
}
