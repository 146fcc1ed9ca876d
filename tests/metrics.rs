//! What operators see: `GET /metrics` after a known workload, the token it
//! needs, the JSON log lines, and label values a hostile add-on cannot
//! multiply.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

/// The value of the sample `name{labels}` (labels as written, sorted as
/// the exposition writes them), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn scrape(server: &Server) -> String {
    let r = server.get(
        "/metrics",
        &[("authorization", &format!("Bearer {}", server.token))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn a_known_workload_shows_exactly_its_counts_under_the_right_labels() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with(
        "shop",
        &[
            json!({"plan": "kv:mini", "as": "A"}),
            json!({"plan": "kv:mini", "as": "B"}),
            json!({"plan": "kv:mini", "as": "C"}),
        ],
    );
    // One hostile provisioning that runs past its 1 s deadline.
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "hostile", "options": {"attack": "sleep"}})),
    );
    assert!(r.status >= 400, "{}", r.text());
    // Five requests to the kv add-on's routes.
    let config = server.api("GET", "/api/apps/shop/config", None).json();
    let kv = KvUrl::parse(config["A_URL"].as_str().unwrap());
    for i in 0..5 {
        let r = server.kv_put(&kv, &format!("k{i}"), b"v");
        assert!(r.status < 300, "{}", r.text());
    }
    let text = scrape(&server);
    let calls = |addon: &str, call: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "addonhost_plugin_calls_total{{addon=\"{addon}\",call=\"{call}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(calls("kv", "provision", "ok"), 3.0, "{text}");
    assert_eq!(calls("kv", "http", "ok"), 5.0, "{text}");
    assert_eq!(calls("hostile", "provision", "timeout"), 1.0, "{text}");
    assert_eq!(calls("hostile", "provision", "ok"), 0.0, "{text}");
    let prov = |addon: &str, outcome: &str| {
        sample(
            &text,
            &format!("addonhost_provisionings_total{{addon=\"{addon}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(prov("kv", "provisioned"), 3.0, "{text}");
    assert_eq!(prov("hostile", "failed"), 1.0, "{text}");
    // The initial release and one per attachment.
    assert_eq!(sample(&text, "addonhost_releases_total"), 4.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "addonhost_http_requests_total{route=\"consumption\",status=\"200\"}"
        ) + sample(
            &text,
            "addonhost_http_requests_total{route=\"consumption\",status=\"201\"}"
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "addonhost_plugin_call_duration_seconds_count{addon=\"kv\",call=\"provision\"}"
        ),
        3.0,
        "{text}"
    );
    // The kv add-on keeps a record per namespace and the five keys.
    assert!(
        sample(&text, "addonhost_addon_kv_keys{addon=\"kv\"}") >= 8.0,
        "{text}"
    );
    assert!(
        sample(&text, "addonhost_store_write_duration_seconds_count") > 0.0,
        "{text}"
    );
    // The same window in GET /api/plugins (what the dashboard shows).
    let plugins = server.api("GET", "/api/plugins", None).json();
    let kv = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "kv")
        .unwrap();
    assert_eq!(kv["recent"]["calls"], 8, "{kv}");
    assert_eq!(kv["recent"]["errors"], 0, "{kv}");
    assert!(kv["recent"]["p99_ms"].as_f64().unwrap() > 0.0, "{kv}");
    let hostile = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "hostile")
        .unwrap();
    assert_eq!(hostile["recent"]["errors"], 1, "{hostile}");
}

#[test]
fn metrics_need_the_api_token_except_on_their_own_address() {
    let env = Env::new();
    let server = Server::start_with(
        env.command(&["serve", "--port", "0", "--metrics-bind", "127.0.0.1:0"]),
        &env,
    );
    for auth in [None, Some("Bearer nope".to_string())] {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let r = server.get("/metrics", &headers);
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(!r.text().contains("addonhost_"), "{}", r.text());
    }
    assert!(scrape(&server).contains("addonhost_releases_total"));
}

#[test]
fn a_scrape_on_the_metrics_address_needs_no_token() {
    let env = Env::new();
    let mut child = env
        .command(&["serve", "--port", "0", "--metrics-bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let r = http::request(&addr, "GET", "/metrics", &[], b"");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("addonhost_plugin_calls"), "{}", r.text());
}

#[test]
fn json_log_lines_parse_and_carry_the_addon_and_the_request_id() {
    let env = Env::new();
    let mut command = env.command(&["serve", "--port", "0"]);
    command
        .env("ADDONHOST_LOG", "info")
        .env("ADDONHOST_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = command.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().unwrap();
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            seen.lock().unwrap().push(line.unwrap());
        }
    });
    let addr = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split("serving on http://").nth(1).map(str::to_string));
        if let Some(rest) = found {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = std::fs::read_to_string(env.data().join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    let auth = format!("Bearer {token}");
    let api = |method: &str, path: &str, body: Value| {
        http::request(
            &addr,
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(
        api("POST", "/api/apps", json!({"name": "shop"})).status,
        201
    );
    // The hostile add-on logs from inside its call.
    let r = api(
        "POST",
        "/api/apps/shop/addons",
        json!({"plan": "hostile", "options": {"attack": "log-flood", "count": "3", "size": "10"}}),
    );
    let request_id = r.header("x-request-id").expect("x-request-id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let parsed: Vec<Value> = loop {
        let parsed: Vec<Value> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        // The first request's line may be written before the second's: wait
        // for the line of the request under test, not just any request line.
        if parsed
            .iter()
            .any(|v| v["message"] == "request" && v["span"]["request_id"] == request_id.as_str())
        {
            break parsed;
        }
        assert!(
            Instant::now() < deadline,
            "no request line with id {request_id} logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    // Every line of stderr past the banner is one JSON object.
    for l in lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.contains("serving on"))
    {
        assert!(l.starts_with('{'), "not JSON: {l}");
    }
    let plugin_lines: Vec<&Value> = parsed
        .iter()
        .filter(|v| v["addon"] == "hostile" && v["message"] == "xxxxxxxxxx")
        .collect();
    assert_eq!(plugin_lines.len(), 3, "{parsed:#?}");
    let ids: Vec<&Value> = parsed
        .iter()
        .filter(|p| p["message"] == "request" && p["span"]["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "the request line carries its id");
    for v in plugin_lines {
        assert_eq!(v["span"]["call"], "provision", "{v}");
        assert_eq!(v["span"]["addon"], "hostile", "{v}");
        // The add-on's own line names the request it was logged for: the
        // request's span is among the spans the line was logged in.
        let spans = v["spans"]
            .as_array()
            .unwrap_or_else(|| panic!("no spans: {v}"));
        let request = spans
            .iter()
            .find(|s| s["name"] == "request")
            .unwrap_or_else(|| panic!("the add-on's line is not in its request's span: {v}"));
        assert_eq!(request["request_id"], request_id.as_str(), "{v}");
        assert_eq!(spans.last().unwrap()["name"], "call", "{v}");
    }
}

#[test]
fn a_hostile_add_on_cannot_multiply_label_values() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "hostile", "as": "H"})]);
    // Paths, methods and answers of its choosing; user input in URLs.
    for i in 0..40 {
        let _ = server.get(
            &format!("/addons/hostile/attack/{i}-{}", "z".repeat(i)),
            &[],
        );
        let _ = server.get(&format!("/no-such-route-{i}"), &[]);
        let _ = server.addon_request("hostile", "GET", &format!("/page-{i}"), &[], b"");
        let _ = server.api("GET", &format!("/api/apps/app-{i}"), None);
    }
    let text = scrape(&server);
    for needle in ["attack/", "no-such-route", "page-", "app-3"] {
        assert!(
            !text.contains(needle),
            "{needle} became a label value:\n{text}"
        );
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("addonhost_http_requests_total{"))
        .count();
    assert!(series <= 20, "{series} request series:\n{text}");
}
