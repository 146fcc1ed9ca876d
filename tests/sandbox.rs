//! The sandbox holds: a plugin that loops, hoards memory, recurses, panics,
//! sleeps or probes for ambient authority is stopped with an error naming the
//! plugin and the reason; the host goes on serving the next call in the same
//! process; and the store is exactly as before.

use crate::support::*;
use addonhost::platform::CreateAddon;
use addonhost::Host;

fn attack(app: &str, what: &str) -> CreateAddon {
    CreateAddon {
        app: app.into(),
        spec: "hostile".into(),
        options: vec![("attack".into(), what.into())],
        ..Default::default()
    }
}

fn kv(app: &str) -> CreateAddon {
    CreateAddon {
        app: app.into(),
        spec: "kv".into(),
        ..Default::default()
    }
}

/// Runs an attack that must fail; checks the message, that nothing was
/// stored, and that a normal add-on still provisions in the same host.
async fn attack_fails(env: &Env, host: &Host, what: &str, expect: &[&str]) -> String {
    let before = snapshot(env, "victim");
    let err = host
        .create_addon(attack("victim", what))
        .await
        .expect_err("the attack must fail");
    let msg = format!("{err:#}");
    for e in expect {
        assert!(
            msg.contains(e),
            "error for {what} should mention {e:?}: {msg}"
        );
    }
    assert_eq!(
        snapshot(env, "victim"),
        before,
        "a failed {what} call changed the store"
    );
    // The host is still alive and serves the next call.
    let ok = host
        .create_addon(kv("bystander"))
        .await
        .expect("next call succeeds");
    assert_eq!(ok.addon.state.as_str(), "provisioned");
    msg
}

fn setup() -> (Env, Host) {
    let env = Env::new();
    env.ok(&["apps:create", "victim"]);
    env.ok(&["apps:create", "bystander"]);
    let host = env.host();
    (env, host)
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_its_deadline() {
    let (env, host) = setup();
    let started = std::time::Instant::now();
    attack_fails(
        &env,
        &host,
        "loop",
        &["hostile", "provision", "timed out", "1000 ms", "timeout"],
    )
    .await;
    // The hostile manifest sets timeout_ms = 1000; the bound only tells a
    // deadline from none, with room for a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn memory_growth_past_cap_is_stopped() {
    let (env, host) = setup();
    attack_fails(
        &env,
        &host,
        "memory",
        &["hostile", "memory limit of 32 MiB"],
    )
    .await;
}

#[tokio::test]
async fn unbounded_recursion_is_reported_as_stack_overflow() {
    let (env, host) = setup();
    attack_fails(&env, &host, "recursion", &["hostile", "stack overflow"]).await;
}

#[tokio::test]
async fn panic_is_reported_with_its_message() {
    let (env, host) = setup();
    attack_fails(
        &env,
        &host,
        "trap",
        &["hostile", "crashed", "panicked on purpose"],
    )
    .await;
}

#[tokio::test]
async fn sleeping_forever_in_wasi_clocks_hits_the_deadline() {
    let (env, host) = setup();
    attack_fails(&env, &host, "sleep", &["hostile", "timed out"]).await;
}

#[tokio::test]
async fn huge_return_value_is_refused_by_size_cap() {
    let (env, host) = setup();
    attack_fails(&env, &host, "huge", &["hostile", "HOSTILE_SEEN", "cap"]).await;
}

#[tokio::test]
async fn plugin_sees_no_files_env_args_or_network() {
    let (env, host) = setup();
    let created = host
        .create_addon(attack("victim", "ambient"))
        .await
        .unwrap();
    let seen = created
        .config
        .iter()
        .find(|(n, _)| n == "HOSTILE_SEEN")
        .map(|(_, v)| v.clone())
        .expect("the probe reports what it saw");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    // Each probe meets the denial it would meet with nothing granted: no
    // preopened directory (so every path is "not found", errno 44 being
    // WASI's ENOENT), sockets refused (errno 2 being WASI's EACCES), no name
    // lookup, and outbound HTTP denied by the host.
    let each = |things: &[&str], error: &str| {
        things
            .iter()
            .map(|t| format!("{t}: {error}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert_eq!(
        seen["fs"].as_str().unwrap(),
        each(
            &["/", ".", "/etc/passwd", "/proc/self/environ"],
            "No such file or directory (os error 44)"
        ),
        "filesystem"
    );
    assert_eq!(
        seen["env"].as_str().unwrap(),
        "0 vars []",
        "environment visible"
    );
    assert_eq!(seen["args"].as_str().unwrap(), "[]");
    assert_eq!(
        seen["net"].as_str().unwrap(),
        each(
            &["127.0.0.1:22", "127.0.0.1:5000", "1.1.1.1:80"],
            "Permission denied (os error 2)"
        ),
        "network"
    );
    assert_eq!(
        seen["dns"].as_str().unwrap(),
        "failed to lookup address information: Non-recoverable error",
        "DNS"
    );
    // It declares no outbound host, so its request is refused by the host
    // with the reason, before any connection.
    assert_eq!(
        seen["http"].as_str().unwrap(),
        "refused: ErrorCode::InternalError(Some(\"outbound request to http://127.0.0.1:5000/healthz refused: \
         http://127.0.0.1:5000 is not among the hosts add-on hostile may reach: none; \
         declare it in outbound.allowed_hosts\"))",
        "outbound HTTP"
    );
    drop(env);
}

#[test]
fn zero_byte_truncated_and_wrong_world_components_fail_to_load_clearly() {
    let rt = addonhost::runtime::Runtime::new(None).unwrap();
    let limits = addonhost::manifest::Limits::default();
    let e = rt.load_bytes("empty", &[], limits).err().unwrap();
    assert!(format!("{e:#}").contains("empty (0 bytes)"), "{e:#}");

    plugins_built();
    let kv = std::fs::read(root().join("plugins/kv/kv.wasm")).unwrap();
    let e = rt
        .load_bytes("cut", &kv[..kv.len() / 2], limits)
        .err()
        .unwrap();
    assert!(!format!("{e:#}").is_empty());

    // A valid component that implements nothing of the addon world.
    let empty = wat::parse_str("(component)").unwrap();
    let e = rt.load_bytes("nothing", &empty, limits).err().unwrap();
    assert!(
        format!("{e:#}").contains("does not implement the addonhost:addon/addon world"),
        "{e:#}"
    );
    // And a valid one loads.
    assert!(rt.load_bytes("kv", &kv, limits).is_ok());
}

#[test]
fn cli_reports_plugin_failure_and_exits_nonzero() {
    let env = Env::new();
    env.ok(&["apps:create", "victim"]);
    let (code, stderr) = env.fails(&[
        "addons:create",
        "hostile",
        "-a",
        "victim",
        "--",
        "--attack",
        "trap",
    ]);
    assert_eq!(code, 5);
    assert!(
        stderr.contains("add-on hostile: provision crashed"),
        "{stderr}"
    );
    assert_eq!(env.json(&["addons", "-a", "victim"]), serde_json::json!([]));
}

#[tokio::test]
async fn every_export_answers_alike_on_its_first_and_later_calls() {
    // A plugin's first call of an export type-checks it; later calls, each
    // in a new instance, use it unchecked: their answers must not differ.
    use addonhost::runtime::{Login, ProvisionRequest, ProvisionResult, Verdict};
    plugins_built();
    let rt = addonhost::runtime::Runtime::new(None).unwrap();
    let kv = std::fs::read(root().join("plugins/kv/kv.wasm")).unwrap();
    let plugin = rt
        .load_bytes("kv", &kv, addonhost::manifest::Limits::default())
        .unwrap();
    let caps = addonhost::runtime::capabilities::InMemory::default();
    let caps = || Box::new(caps.clone());
    let request = ProvisionRequest {
        uuid: "0d9f8a5e-6c1b-4f5e-9d3a-2b7c4e1f0a68".into(),
        app: "shop".into(),
        name: "KV".into(),
        plan: "mini".into(),
        region: "us".into(),
        options: Vec::new(),
        base_url: "http://127.0.0.1:5000/addons/kv".into(),
    };

    // Provision twice with one uuid: the retry answers the same namespace.
    let first = plugin.provision(caps(), request.clone()).await.unwrap();
    let again = plugin.provision(caps(), request).await.unwrap();
    let (ProvisionResult::Provisioned(first), ProvisionResult::Provisioned(again)) = (first, again)
    else {
        panic!("kv provisions at once");
    };
    assert_eq!((&first.id, &first.config), (&again.id, &again.config));
    assert!(first.config[0].1.contains(&first.id), "{:?}", first.config);

    // Rotation: a new password each time, in a URL of the same shape.
    let r1 = plugin.rotate(caps(), &first.id).await.unwrap();
    let r2 = plugin.rotate(caps(), &first.id).await.unwrap();
    assert_ne!(r1, r2);
    assert_eq!(r1[0].0, r2[0].0);

    // Plan change, and an unknown id refused alike both times.
    for _ in 0..2 {
        assert_eq!(
            plugin.change_plan(caps(), &first.id, "pro").await.unwrap(),
            None
        );
        let e = plugin
            .change_plan(caps(), "kv-nope", "pro")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("kv-nope"), "{e}");
    }

    // SSO: a valid login lets in, a forged one is denied, every time.
    let salt = "Hn4Wz8cQ2rTb6YmK1vXs9LdF3gPa7JeU"; // plugins/kv/addon-manifest.json
    let now = addonhost::util::unix_now();
    let uuid = "0d9f8a5e-6c1b-4f5e-9d3a-2b7c4e1f0a68";
    let login = |token: String| Login {
        id: first.id.clone(),
        token,
        resource_id: uuid.into(),
        resource_token: addonhost::sso::token(uuid, salt, now),
        timestamp: now,
        email: "dev@example.com".into(),
        app: "shop".into(),
        context_app: "shop".into(),
        nav_data: String::new(),
        params: Vec::new(),
    };
    for _ in 0..2 {
        let ok = plugin
            .verify(caps(), login(addonhost::sso::token(&first.id, salt, now)))
            .await
            .unwrap();
        assert!(
            matches!(&ok, Verdict::Ok(s) if s.landing == format!("/dashboard/{}", first.id)),
            "{ok:?}"
        );
        let forged = plugin.verify(caps(), login("0".repeat(40))).await.unwrap();
        assert!(matches!(forged, Verdict::Denied(_)), "{forged:?}");
    }

    // Deprovision, then the namespace is gone: a second one is refused.
    plugin.deprovision(caps(), &first.id).await.unwrap();
    assert!(plugin.deprovision(caps(), &first.id).await.is_err());
}

/// An add-on in each language tries to carry state from one request to the
/// next: a module-level counter, a buffer in its memory image, memory it grew
/// or objects it kept. Each request runs in a fresh instance, so every
/// request finds all of it as it was when the component was built.
#[test]
fn no_state_survives_from_one_request_to_the_next_in_any_language() {
    build_remember_addons();
    let mut env = Env::new();
    let r = root();
    env.plugins = format!(
        "{}:{}:{}",
        env.plugins,
        r.join("tests/polyglot/remember-python").display(),
        r.join("tests/polyglot/remember-js").display()
    );
    let server = Server::start(&env);
    for service in ["hostile", "remember-python", "remember-js"] {
        for call in 0..3 {
            let answer = server.addon_request(service, "GET", "/remember", &[], b"");
            assert_eq!(answer.status, 200, "{service}: {}", answer.text());
            let seen = answer.json();
            let residues: Vec<_> = seen.as_object().unwrap().iter().collect();
            assert!(residues.len() >= 3, "{service}: {seen}");
            for (what, n) in residues {
                assert_eq!(
                    n.as_u64(),
                    Some(0),
                    "{service}, request {call}: {what} = {n}: an earlier request's state survived"
                );
            }
        }
    }
}

/// The test-only Python and JavaScript add-ons, built once per test binary.
fn build_remember_addons() {
    let r = root();
    let out = std::process::Command::new(BIN)
        .arg("plugins:build")
        .arg(r.join("tests/polyglot/remember-python"))
        .arg(r.join("tests/polyglot/remember-js"))
        .output()
        .expect("running addonhost plugins:build");
    assert!(
        out.status.success(),
        "plugins:build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
