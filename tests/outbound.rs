//! Add-ons that call their partner's backend: outbound HTTP reaches the hosts
//! an add-on declares (`outbound.allowed_hosts`) and nothing else. Each
//! attack comes from the hostile add-on through the SDK's `fetch`, at a
//! partner backend the test runs on 127.0.0.1 that counts what reaches it:
//! a refused request must fail the call with a sentence saying what was
//! refused and why, never arrive, leave the store as it was, and leave the
//! host serving the next call.
//!
//! A name resolving to a private address: the hostile add-on declares
//! `http://localhost:PORT` — a name, which the allow-list accepts — and the
//! system resolver (/etc/hosts) turns it into 127.0.0.1, the very address
//! that is reachable when declared as itself (`http://127.0.0.1:PORT`, the
//! first test). Only the check of the resolved address stands between the
//! two, which is what DNS rebinding attacks. Rebinding itself — an answer
//! that changes between lookups — is played by a DNS server the test runs
//! (`support/dns.rs`), the host pointed at it with `--outbound-resolver`.
//! No test ever sends traffic beyond the loopback.

use crate::support;

use std::path::{Path, PathBuf};

use crate::support::partner::Partner;
use crate::support::*;
use addonhost::platform::{CreateAddon, Deny, OutboundPolicy};
use addonhost::{Host, HostOptions};

fn attack(what: &str, options: &[(&str, &str)]) -> CreateAddon {
    let mut all = vec![("attack".to_string(), what.to_string())];
    all.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    CreateAddon {
        app: "victim".into(),
        spec: "hostile".into(),
        options: all,
        ..Default::default()
    }
}

/// An environment whose hostile add-on declares `hosts`, with the apps
/// `victim` and `bystander`. The operator grants it what it declares (the
/// partner backends of these tests are on the loopback, which a manifest
/// alone never opens).
fn declaring(hosts: &[String]) -> Env {
    let mut env = declaring_ungranted(hosts);
    env.outbound_grant = Some(format!("hostile={}", hosts.join(",")));
    env
}

/// [`declaring`], with nothing granted by the operator.
fn declaring_ungranted(hosts: &[String]) -> Env {
    let hosts = hosts.to_vec();
    let env = Env::with_plugin_copies(&["hostile", "kv"], move |name, m| {
        if name == "hostile" {
            m["outbound"] = serde_json::json!({ "allowed_hosts": hosts });
        }
    });
    env.ok(&["apps:create", "victim"]);
    env.ok(&["apps:create", "bystander"]);
    env
}

/// An in-process host on `env` under the operator's `outbound` policy (plus
/// the environment's grants).
fn host_with(env: &Env, mut outbound: OutboundPolicy) -> Host {
    let mut opts = HostOptions::new(env.data(), std::env::split_paths(&env.plugins).collect());
    opts.database = env.database_url();
    env.grant_outbound(&mut outbound);
    opts.outbound = outbound;
    Host::open(opts).unwrap()
}

/// Runs an attack that must fail; checks that the message says each of
/// `expect`, that nothing was stored, and that the host still provisions.
async fn refused(env: &Env, host: &Host, attack: CreateAddon, expect: &[&str]) -> String {
    let before = snapshot(env, "victim");
    let err = host
        .create_addon(attack)
        .await
        .expect_err("the attack must fail");
    let msg = format!("{err:#}");
    for e in expect {
        assert!(msg.contains(e), "the error should say {e:?}: {msg}");
    }
    assert_eq!(
        snapshot(env, "victim"),
        before,
        "a refused call changed the store"
    );
    let next = host
        .create_addon(CreateAddon {
            app: "bystander".into(),
            spec: "kv".into(),
            ..Default::default()
        })
        .await
        .expect("the host serves the next call");
    assert_eq!(next.addon.state.as_str(), "provisioned");
    msg
}

fn seen(created: &addonhost::platform::AddonCreated) -> String {
    created
        .config
        .iter()
        .find(|(n, _)| n == "HOSTILE_SEEN")
        .map(|(_, v)| v.clone())
        .expect("HOSTILE_SEEN is set")
}

#[tokio::test]
async fn a_declared_host_is_reached_with_nothing_the_host_adds() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let host = env.host();
    let created = host
        .create_addon(attack(
            "fetch",
            &[("url", &format!("{}/echo", partner.url()))],
        ))
        .await
        .expect("a declared host is reached");
    let seen = seen(&created);
    assert!(seen.starts_with("status 200: {"), "{seen}");
    assert_eq!(partner.hits("/echo"), 1);
    // Only the host header: no platform token, cookie, proxy or forwarding
    // header ever leaves with an add-on's request.
    let names: Vec<String> = partner
        .last_headers()
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert_eq!(names, ["host"], "{:?}", partner.last_headers());
    assert_eq!(
        partner.last_headers()[0].1,
        format!("127.0.0.1:{}", partner.port)
    );
}

/// An add-on's backend behind TLS with a certificate of the operator's
/// private CA: refused as untrusted until the operator adds that CA with
/// `--extra-ca`, the same option the host's own client trusts, and reached
/// then; a certificate from any other CA stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_ons_https_request_trusts_the_operators_extra_ca_and_nothing_else() {
    let partner = Partner::start("x", "y");
    let ca = support::tls::TestCa::new();
    let (cert, key) = ca.leaf("backend", &["IP:127.0.0.1"], "ca");
    let proxy = support::tls::TlsProxy::start(&cert, &key);
    proxy.forward_to(partner.port);
    let (other_cert, other_key) = ca.leaf("other", &["IP:127.0.0.1"], "other-ca");
    let other = support::tls::TlsProxy::start(&other_cert, &other_key);
    other.forward_to(partner.port);
    let declared = [
        format!("https://127.0.0.1:{}", proxy.port),
        format!("https://127.0.0.1:{}", other.port),
    ];
    let env = declaring(&declared);
    let fetch = |url: &str| attack("fetch", &[("url", url)]);
    let ours = format!("{}/hit", declared[0]);
    let theirs = format!("{}/hit", declared[1]);

    let mozilla_only = host_with(&env, OutboundPolicy::default());
    refused(
        &env,
        &mozilla_only,
        fetch(&ours),
        &[
            "not issued by a trusted certificate authority",
            "--extra-ca",
        ],
    )
    .await;
    assert_eq!(partner.hits("/hit"), 0);

    let mut opts = HostOptions::new(env.data(), std::env::split_paths(&env.plugins).collect());
    opts.database = env.database_url();
    env.grant_outbound(&mut opts.outbound);
    opts.trust = addonhost::tls::Trust::with_extra_ca(&ca.ca()).unwrap();
    let trusting = Host::open(opts).unwrap();
    let created = trusting
        .create_addon(fetch(&ours))
        .await
        .expect("the operator's CA is trusted");
    assert_eq!(seen(&created), "status 200: hit");
    assert_eq!(partner.hits("/hit"), 1);
    refused(
        &env,
        &trusting,
        fetch(&theirs),
        &["not issued by a trusted certificate authority"],
    )
    .await;
    assert_eq!(partner.hits("/hit"), 1);
}

#[tokio::test]
async fn an_undeclared_host_is_refused_and_never_reached() {
    let declared = Partner::start("x", "y");
    let other = Partner::start("x", "y");
    let env = declaring(&[declared.url()]);
    let host = env.host();
    let msg = refused(
        &env,
        &host,
        attack("fetch", &[("url", &format!("{}/hit", other.url()))]),
        &[
            &format!("outbound request to {}/hit refused", other.url()),
            &format!(
                "{} is not among the hosts add-on hostile may reach: {}",
                other.url(),
                declared.url()
            ),
            "outbound.allowed_hosts",
        ],
    )
    .await;
    assert_eq!(other.requests(), 0, "{msg}");
    // Operators see the attempt: counted by add-on and outcome…
    let metrics = host.metrics_text();
    assert!(
        metrics
            .contains(r#"addonhost_outbound_requests_total{addon="hostile",outcome="refused"} 1"#),
        "{metrics}"
    );
    // …and on the audit trail, like a refused write.
    let audit = env.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "refused"
                && e["detail"].as_str().unwrap_or("").contains(&other.url())),
        "{audit}"
    );
}

#[tokio::test]
async fn a_redirect_to_an_undeclared_host_is_not_followed() {
    let declared = Partner::start("x", "y");
    let other = Partner::start("x", "y");
    let env = declaring(&[declared.url()]);
    let host = env.host();
    let target = format!("{}/hit", other.url());
    let redirect = format!(
        "{}/redirect?to={}",
        declared.url(),
        url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
    );
    // The host hands the 3xx back as it is…
    let created = host
        .create_addon(attack("fetch", &[("url", &redirect), ("follow", "false")]))
        .await
        .expect("the redirect itself is an answer");
    assert!(
        seen(&created).starts_with("status 302"),
        "{}",
        seen(&created)
    );
    // …and the request an add-on makes to follow it is checked like any.
    refused(
        &env,
        &host,
        attack("fetch", &[("url", &redirect)]),
        &[
            &format!("outbound request to {target} refused"),
            "is not among the hosts",
        ],
    )
    .await;
    assert_eq!(declared.hits("/redirect"), 2);
    assert_eq!(other.requests(), 0);
}

#[tokio::test]
async fn a_declared_name_that_resolves_to_the_loopback_is_refused() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[format!("http://localhost:{}", partner.port)]);
    let host = env.host();
    let msg = refused(
        &env,
        &host,
        attack(
            "fetch",
            &[("url", &format!("http://localhost:{}/hit", partner.port))],
        ),
        &["refused: localhost resolved to ", "a loopback address"],
    )
    .await;
    assert!(
        msg.contains(&format!("http://127.0.0.1:{}", partner.port))
            || msg.contains(&format!("http://[::1]:{}", partner.port)),
        "the error says how to declare the address itself: {msg}"
    );
    assert_eq!(partner.requests(), 0, "{msg}");
}

#[tokio::test]
async fn an_undeclared_private_address_literal_is_refused() {
    // The partner is declared by name; the add-on aims at addresses instead:
    // the same backend by its loopback address, and the cloud metadata
    // service. Neither is declared as itself, so neither is reached.
    let partner = Partner::start("x", "y");
    let env = declaring(&[format!("http://localhost:{}", partner.port)]);
    let host = env.host();
    for url in [
        format!("http://127.0.0.1:{}/hit", partner.port),
        format!("http://[::ffff:127.0.0.1]:{}/hit", partner.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        refused(
            &env,
            &host,
            attack("fetch", &[("url", &url)]),
            &["refused", "is not among the hosts add-on hostile may reach"],
        )
        .await;
    }
    assert_eq!(partner.requests(), 0);
}

#[tokio::test]
async fn a_slow_upstream_ends_before_the_call_deadline() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let host = env.host();
    // The hostile add-on's deadline is 1000 ms; the upstream answers after 5 s.
    let msg = refused(
        &env,
        &host,
        attack(
            "fetch",
            &[("url", &format!("{}/slow?ms=5000", partner.url()))],
        ),
        &[
            "outbound request to",
            "/slow?ms=5000: timed out after",
            "before the call's deadline",
        ],
    )
    .await;
    // The add-on got the error and answered with it: the call was not cut
    // off at its own deadline.
    assert!(!msg.contains("limits.timeout_ms"), "{msg}");
    assert_eq!(partner.hits("/slow"), 1);
}

#[tokio::test]
async fn a_huge_response_is_cut_at_the_call_cap() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let host = env.host();
    // 64 MiB, chunked with no length announced, at an add-on whose memory
    // cap is 32 MiB.
    let msg = refused(
        &env,
        &host,
        attack(
            "fetch",
            &[("url", &format!("{}/huge?mb=64", partner.url()))],
        ),
        &[
            "/huge?mb=64",
            "passed the cap of 4 MiB",
            "the rest was not read",
        ],
    )
    .await;
    assert!(!msg.contains("memory limit"), "{msg}");
}

#[tokio::test]
async fn a_thousand_requests_in_one_call_hit_the_budget() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let host = env.host();
    refused(
        &env,
        &host,
        attack(
            "fetch-many",
            &[
                ("url", &format!("{}/hit", partner.url())),
                ("count", "1000"),
            ],
        ),
        &["provision exceeded its budget: more than 100 outbound HTTP requests in one call"],
    )
    .await;
    assert_eq!(partner.hits("/hit"), 100);
}

#[tokio::test]
async fn many_requests_at_once_reach_the_partner_eight_at_a_time() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let host = env.host();
    // 24 slow requests sent together: three waves of eight, well inside
    // the 1000 ms deadline.
    let created = host
        .create_addon(attack(
            "fetch-parallel",
            &[
                ("url", &format!("{}/slow?ms=150", partner.url())),
                ("count", "24"),
            ],
        ))
        .await
        .expect("every request is answered, eight at a time");
    assert_eq!(seen(&created), "24 answered");
    assert_eq!(partner.hits("/slow"), 24);
    assert_eq!(
        partner.most_open(),
        8,
        "the partner never sees more than 8 of a call's requests at once"
    );
}

#[tokio::test]
async fn https_goes_through_tls() {
    // A plain-HTTP listener answers a TLS handshake with garbage: the
    // request fails in TLS, which proves it spoke TLS.
    let partner = Partner::start("x", "y");
    let tls = format!("https://127.0.0.1:{}", partner.port);
    let env = declaring(std::slice::from_ref(&tls));
    let host = env.host();
    refused(
        &env,
        &host,
        attack("fetch", &[("url", &format!("{tls}/hit"))]),
        &[&format!("outbound request to {tls}/hit: TLS")],
    )
    .await;
}

#[tokio::test]
async fn the_operator_denies_or_narrows_what_add_ons_declare() {
    let partner = Partner::start("x", "y");
    let mut env = declaring(&[partner.url()]);
    let url = format!("{}/hit", partner.url());
    let denied = host_with(
        &env,
        OutboundPolicy {
            deny: Deny::All,
            ..Default::default()
        },
    );
    refused(
        &env,
        &denied,
        attack("fetch", &[("url", &url)]),
        &["may reach: none (the operator's --deny-outbound narrowed what it declared)"],
    )
    .await;
    // (Without its grant: the ceiling alone decides.)
    let grant = env.outbound_grant.take();
    let narrowed = host_with(
        &env,
        OutboundPolicy {
            ceiling: Some(
                addonhost::outbound::AllowList::parse(["https://api.partner.example"]).unwrap(),
            ),
            ..Default::default()
        },
    );
    env.outbound_grant = grant;
    refused(
        &env,
        &narrowed,
        attack("fetch", &[("url", &url)]),
        &["--outbound-hosts"],
    )
    .await;
    assert_eq!(partner.requests(), 0);
    // Denying another add-on leaves this one its hosts.
    let others = host_with(
        &env,
        OutboundPolicy {
            deny: Deny::Addons(vec!["kv".into()]),
            ..Default::default()
        },
    );
    others
        .create_addon(attack("fetch", &[("url", &url)]))
        .await
        .expect("only kv is denied");
    assert_eq!(partner.requests(), 1);
}

/// A manifest alone declares a loopback address — the partner backend here,
/// standing for any unauthenticated service on the host's loopback, such as
/// `--metrics-bind` — and nothing of the operator's grants it: the request
/// is refused before it leaves, and `plugins` says what is declared but not
/// granted.
#[tokio::test]
async fn a_manifest_alone_cannot_open_the_loopback() {
    let partner = Partner::start("x", "y");
    let env = declaring_ungranted(&[partner.url()]);
    let url = format!("{}/hit", partner.url());
    let host = host_with(&env, OutboundPolicy::default());
    refused(
        &env,
        &host,
        attack("fetch", &[("url", &url)]),
        &[
            &format!("{} is declared but not granted", partner.url()),
            &format!("--outbound-grant hostile={}", partner.url()),
        ],
    )
    .await;
    assert_eq!(partner.requests(), 0, "the loopback was reached");
    let rows = env.json(&["plugins"]);
    let hostile = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "hostile")
        .cloned()
        .unwrap();
    assert_eq!(
        hostile["outbound"]["allowed"],
        serde_json::json!([]),
        "{hostile}"
    );
    assert_eq!(
        hostile["outbound"]["not_granted"],
        serde_json::json!([partner.url()]),
        "{hostile}"
    );
    let table = env.ok(&["plugins"]);
    assert!(table.contains("not granted"), "{table}");

    // The operator's consent opens it: a grant of that add-on's own…
    let grant = format!("hostile={}", partner.url());
    let granted = host_with(&env, {
        let mut p = OutboundPolicy::default();
        let (id, list) = addonhost::platform::outbound::parse_grant(&grant).unwrap();
        p.grant_to(&id, list);
        p
    });
    granted
        .create_addon(attack("fetch", &[("url", &url)]))
        .await
        .expect("granted by the operator");
    assert_eq!(partner.hits("/hit"), 1);
    let rows = env.json(&["--outbound-grant", &grant, "plugins"]);
    let hostile = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "hostile")
        .cloned()
        .unwrap();
    assert_eq!(
        hostile["outbound"]["allowed"],
        serde_json::json!([partner.url()])
    );
    assert_eq!(hostile["outbound"]["not_granted"], serde_json::json!([]));
    // …or the operator's list for every add-on.
    let listed = host_with(
        &env,
        OutboundPolicy {
            ceiling: Some(addonhost::outbound::AllowList::parse([partner.url().as_str()]).unwrap()),
            ..Default::default()
        },
    );
    listed
        .create_addon(attack("fetch", &[("url", &url)]))
        .await
        .expect("listed by the operator");
    assert_eq!(partner.hits("/hit"), 2);
}

#[test]
fn plugins_list_shows_what_each_add_on_may_reach() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let rows = env.json(&["plugins"]);
    let row = |rows: &serde_json::Value, id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let hostile = row(&rows, "hostile");
    assert_eq!(
        hostile["outbound"]["declared"],
        serde_json::json!([partner.url()])
    );
    assert_eq!(
        hostile["outbound"]["allowed"],
        serde_json::json!([partner.url()])
    );
    assert_eq!(
        row(&rows, "kv")["outbound"]["allowed"],
        serde_json::json!([])
    );
    let table = env.ok(&["plugins"]);
    assert!(
        table.contains("Outbound") && table.contains(&partner.url()),
        "{table}"
    );

    // The global option, before or after the command.
    let denied = env.json(&["--deny-outbound=hostile", "plugins"]);
    assert_eq!(
        row(&denied, "hostile")["outbound"]["allowed"],
        serde_json::json!([])
    );
    assert_eq!(
        row(&denied, "hostile")["outbound"]["narrowed_by"],
        "--deny-outbound"
    );
    let text = env.ok(&["plugins", "--deny-outbound"]);
    assert!(text.contains("none (--deny-outbound; declares"), "{text}");
    let (_, err) = env.fails(&["plugins", "--outbound-hosts", "ftp://x.example"]);
    assert!(
        err.contains("--outbound-hosts") && err.contains("http or https"),
        "{err}"
    );

    // `serve --deny-outbound`: the API shows it, and provisioning obeys it.
    let server = Server::start_with(
        env.command(&["serve", "--port", "0", "--deny-outbound"]),
        &env,
    );
    let listed = server.api("GET", "/api/plugins", None).json();
    assert_eq!(
        row(&listed, "hostile")["outbound"]["narrowed_by"],
        "--deny-outbound"
    );
    let r = server.api(
        "POST",
        "/api/apps/victim/addons",
        Some(serde_json::json!({
            "plan": "hostile",
            "options": {"attack": "fetch", "url": format!("{}/hit", partner.url())}
        })),
    );
    assert!(r.status >= 400, "{}", r.text());
    assert!(r.text().contains("--deny-outbound"), "{}", r.text());
    assert_eq!(partner.requests(), 0);
}

/// The mailer example, copied with its backend declared at `partner`.
fn mailer_env(partner: &Partner) -> Env {
    mailer_built();
    let url = partner.url();
    let mut env = Env::with_plugin_copies(&[], |_, _| {});
    let dir = env.data().join("plugins/mailer");
    std::fs::create_dir_all(&dir).unwrap();
    let src = root().join("plugins/mailer");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("addon-manifest.json")).unwrap())
            .unwrap();
    m["outbound"] = serde_json::json!({ "allowed_hosts": [url] });
    std::fs::write(dir.join("addon-manifest.json"), m.to_string()).unwrap();
    std::fs::copy(src.join("mailer.wasm"), dir.join("mailer.wasm")).unwrap();
    std::fs::copy(src.join("Cargo.toml"), dir.join("Cargo.toml")).unwrap();
    env.plugins = env.data().join("plugins").to_str().unwrap().to_string();
    // Its backend is on the loopback: the operator grants it.
    env.outbound_grant = Some(format!("mailer={url}"));
    env
}

fn mailer_partner() -> Partner {
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("plugins/mailer/addon-manifest.json")).unwrap(),
    )
    .unwrap();
    Partner::start("mailer", m["api"]["password"].as_str().unwrap())
}

/// (username, password) inside `MAILER_URL`.
fn mailer_credentials(env: &Env, app: &str) -> (String, String) {
    let url = env.config(app)["MAILER_URL"].as_str().unwrap().to_string();
    let u = url::Url::parse(&url).unwrap();
    assert_eq!(u.scheme(), "smtp", "{url}");
    (u.username().to_string(), u.password().unwrap().to_string())
}

#[test]
fn the_mailer_provisions_rotates_and_deprovisions_through_its_backend() {
    let partner = mailer_partner();
    let env = mailer_env(&partner);
    env.ok(&["apps:create", "shop"]);
    let backend = partner.url();
    let created = env.create("mailer", "shop", &["--", "--backend", &backend]);
    let id = created["addon"]["addon_id"].as_str().unwrap().to_string();
    let mailbox = partner.mailbox(&id).expect("the backend made the mailbox");
    assert_eq!(
        (mailbox.app.as_str(), mailbox.plan.as_str()),
        ("shop", "starter")
    );
    // The credentials on the app are the ones the backend issued.
    let (user, password) = mailer_credentials(&env, "shop");
    assert_eq!(
        (user.as_str(), password.as_str()),
        (mailbox.username.as_str(), mailbox.password.as_str())
    );

    env.ok(&["addons:rotate", "MAILER", "-a", "shop"]);
    let (_, rotated) = mailer_credentials(&env, "shop");
    let mailbox = partner.mailbox(&id).unwrap();
    assert_eq!(rotated, mailbox.password);
    assert_ne!(rotated, password);
    // The backend keeps the previous password through its grace window.
    assert!(partner.accepts(&user, &password) && partner.accepts(&user, &rotated));

    env.ok(&["addons:upgrade", "MAILER", "mailer:pro", "-a", "shop"]);
    assert_eq!(partner.mailbox(&id).unwrap().plan, "pro");

    env.ok(&[
        "addons:destroy",
        "MAILER",
        "-a",
        "shop",
        "--confirm",
        "shop",
    ]);
    assert!(partner.mailbox(&id).unwrap().deleted);
    assert!(!env.config("shop").contains_key("MAILER_URL"));
    assert!(!partner.accepts(&user, &rotated));
}

#[test]
fn plugins_check_reports_calls_to_undeclared_hosts() {
    let partner = mailer_partner();
    let elsewhere = mailer_partner();
    let env = mailer_env(&partner);
    let dir = env.data().join("plugins/mailer");
    let check = |backend: &str| {
        let r = env.run(&[
            "plugins:check",
            dir.to_str().unwrap(),
            "--json",
            "--",
            "--backend",
            backend,
        ]);
        (
            r.code,
            serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap(),
        )
    };
    let (code, report) = check(&partner.url());
    assert_eq!(code, 0, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 14, "{report}");
    assert_eq!(
        checks.last().unwrap()["name"],
        "outbound requests go only to declared hosts"
    );

    let (code, report) = check(&elsewhere.url());
    assert_eq!(code, 1, "{report}");
    let outbound = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound requests go only to declared hosts")
        .cloned()
        .expect("the outbound check runs even when provisioning failed");
    assert_eq!(outbound["passed"], false);
    let detail = outbound["detail"].as_str().unwrap();
    assert!(
        detail.contains(&elsewhere.url()) && detail.contains("outbound.allowed_hosts"),
        "{detail}"
    );
    assert_eq!(elsewhere.requests(), 0);
}

/// A `plugins:new --lang LANG` scaffold whose provision takes its key from
/// a partner (`edits`, each `(from, to)` in its source file), built.
fn fetching_scaffold(env: &mut Env, lang: &str, file: &str, edits: &[(&str, &str)]) -> PathBuf {
    let plugins = env.data().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let name = format!("{}fetch", &lang[..2]);
    env.ok(&[
        "plugins:new",
        &name,
        "--lang",
        lang,
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    let dir = plugins.join(&name);
    let source = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut edited = source;
    for (from, to) in edits {
        assert!(edited.contains(from), "the scaffold has {from:?}");
        edited = edited.replacen(from, to, 1);
    }
    std::fs::write(dir.join(file), edited).unwrap();
    env.plugins = plugins.to_str().unwrap().to_string();
    env.ok(&["plugins:build", dir.to_str().unwrap()]);
    dir
}

/// The scaffold at `dir` is refused `partner` until it declares it, then
/// reaches it: the partner's answer (`hit`) becomes the resource's key.
/// `says` is what the refusal reads like in that language.
fn refused_then_reached(env: &mut Env, partner: &Partner, dir: &Path, says: &str) {
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    env.ok(&["apps:create", "shop"]);
    let (_, err) = env.fails(&["addons:create", &name, "-a", "shop"]);
    assert!(err.contains(says), "{err}");
    assert_eq!(partner.requests(), 0);
    // The host's reason is on the audit trail whatever the language shows.
    let audit = env.json(&["audit"]).to_string();
    assert!(audit.contains("is not among the hosts"), "{audit}");

    let path = dir.join("addon-manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["outbound"] = serde_json::json!({ "allowed_hosts": [partner.url()] });
    std::fs::write(&path, m.to_string()).unwrap();
    // Declared, and (a loopback address) granted by the operator.
    env.outbound_grant = Some(format!("{name}={}", partner.url()));
    env.create(&name, "shop", &[]);
    let var = format!("{}_URL", name.to_ascii_uppercase());
    let url = env.config("shop")[&var].as_str().unwrap().to_string();
    assert!(url.ends_with("?key=hit"), "{url}");
    assert_eq!(partner.hits("/hit"), 1);
}

#[test]
fn a_python_add_on_reaches_only_what_it_declares() {
    let partner = Partner::start("x", "y");
    let mut env = Env::with_plugin_copies(&[], |_, _| {});
    let dir = fetching_scaffold(
        &mut env,
        "python",
        "app.py",
        &[(
            r#""key": addonhost.secret(32),"#,
            &format!(
                r#""key": addonhost.fetch("{}/hit").body.decode(),"#,
                partner.url()
            ),
        )],
    );
    // Python's FetchError carries the host's sentence into the call's error.
    let says = format!("outbound request to {}/hit refused", partner.url());
    refused_then_reached(&mut env, &partner, &dir, &says);
}

#[test]
fn a_javascript_add_on_reaches_only_what_it_declares() {
    // The standard fetch in an async export.
    let partner = Partner::start("x", "y");
    let mut env = Env::with_plugin_copies(&[], |_, _| {});
    let dir = fetching_scaffold(
        &mut env,
        "js",
        "index.js",
        &[
            ("  provision(request) {", "  async provision(request) {"),
            (
                "      key: secret(32),",
                &format!(
                    "      key: await (await fetch('{}/hit')).text(),",
                    partner.url()
                ),
            ),
        ],
    );
    // StarlingMonkey's fetch rejects with a generic NetworkError; the reason
    // is in the log and the audit trail.
    refused_then_reached(&mut env, &partner, &dir, "NetworkError");
}

/// A careless manifest declares the private addresses themselves — the
/// partner backend by its loopback address, its IPv4-mapped IPv6 form, and
/// the cloud metadata service. Declaring them gets past the allow-list;
/// the private-address rule still refuses each (no operator grant), before
/// anything is sent.
#[tokio::test]
async fn a_declared_private_address_literal_is_refused_without_the_operators_grant() {
    let partner = Partner::start("x", "y");
    let loopback = format!("http://127.0.0.1:{}", partner.port);
    let mapped = format!("http://[::ffff:127.0.0.1]:{}", partner.port);
    let metadata = "http://169.254.169.254".to_string();
    let env = declaring_ungranted(&[loopback.clone(), mapped.clone(), metadata.clone()]);

    let host = host_with(&env, OutboundPolicy::default());
    for url in [
        format!("{loopback}/hit"),
        format!("{mapped}/hit"),
        format!("{metadata}/latest/meta-data/"),
    ] {
        let msg = refused(
            &env,
            &host,
            attack("fetch", &[("url", &url)]),
            &[
                &format!("outbound request to {url} refused"),
                "is declared but not granted: a loopback, private or link-local address is reached only with the operator's consent",
                "--outbound-grant hostile=",
            ],
        )
        .await;
        // Not the allow-list's refusal: the address was declared.
        assert!(!msg.contains("is not among the hosts"), "{msg}");
    }
    assert_eq!(partner.requests(), 0, "a private address was reached");
    // Declared, not granted (the mapped form is the loopback address itself).
    let rows = env.json(&["plugins"]);
    let hostile = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "hostile")
        .unwrap();
    assert_eq!(
        hostile["outbound"]["not_granted"],
        serde_json::json!([loopback, metadata]),
        "{hostile}"
    );
    assert_eq!(hostile["outbound"]["allowed"], serde_json::json!([]));
}

/// A certificate valid in every other way — issued by the CA the operator
/// trusts with `--extra-ca`, current — but for another name than the one
/// the add-on called is refused, named; the same certificate's server is
/// reached by the name it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_ons_https_request_to_a_certificate_for_another_name_is_refused() {
    let partner = Partner::start("x", "y");
    let ca = support::tls::TestCa::new();
    // For `localhost` only, served on 127.0.0.1.
    let (cert, key) = ca.leaf("elsewhere", &["localhost"], "ca");
    let proxy = support::tls::TlsProxy::start(&cert, &key);
    proxy.forward_to(partner.port);
    let by_address = format!("https://127.0.0.1:{}", proxy.port);
    let env = declaring(std::slice::from_ref(&by_address));
    let mut opts = HostOptions::new(env.data(), std::env::split_paths(&env.plugins).collect());
    opts.database = env.database_url();
    env.grant_outbound(&mut opts.outbound);
    opts.trust = addonhost::tls::Trust::with_extra_ca(&ca.ca()).unwrap();
    let trusting = Host::open(opts).unwrap();
    refused(
        &env,
        &trusting,
        attack("fetch", &[("url", &format!("{by_address}/hit"))]),
        &[
            &format!("outbound request to {by_address}/hit: TLS"),
            "its TLS certificate is for another name",
        ],
    )
    .await;
    assert_eq!(partner.hits("/hit"), 0);
}

/// A backend that never accepts — a listener on 127.0.0.1 whose queue of
/// connections is full, so the kernel drops the host's SYNs — under a
/// call deadline of 20 s: connecting gives up at the host's 3 s, and the
/// add-on gets that error to answer with, long before its deadline.
#[tokio::test]
async fn connecting_to_a_backend_that_never_accepts_gives_up_after_three_seconds() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Fill the accept queue: connect until a connection no longer opens.
    let mut held = Vec::new();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let full = loop {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 5000, "the listener's queue never filled");
    };
    assert_eq!(full.kind(), std::io::ErrorKind::TimedOut, "{full}");
    let backend = format!("http://127.0.0.1:{port}");
    let grant = backend.clone();
    let mut env = Env::with_plugin_copies(&["hostile", "kv"], move |name, m| {
        if name == "hostile" {
            m["outbound"] = serde_json::json!({ "allowed_hosts": [grant] });
            m["limits"]["timeout_ms"] = serde_json::json!(20_000);
        }
    });
    env.ok(&["apps:create", "victim"]);
    env.ok(&["apps:create", "bystander"]);
    env.outbound_grant = Some(format!("hostile={backend}"));
    let host = env.host();
    let started = std::time::Instant::now();
    let msg = refused(
        &env,
        &host,
        attack("fetch", &[("url", &format!("{backend}/hit"))]),
        &[&format!(
            "outbound request to {backend}/hit: could not connect within "
        )],
    )
    .await;
    let took = started.elapsed();
    let ms: u64 = msg
        .split("could not connect within ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    // Generous bounds: the 3 s limit, not the call's 20 s deadline.
    assert!((3000..6000).contains(&ms), "{msg}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}: {msg}");
    assert!(!msg.contains("limits.timeout_ms"), "{msg}");
    drop(held);
}

/// While serving a signed-in user's request — the dashboard's session
/// cookie and the API token on it, or the add-on's own SSO session on its
/// origin — the add-on calls its backend: the request that leaves carries
/// what the add-on set and the `host` header, nothing of the user's.
#[test]
fn a_fetch_while_serving_a_signed_in_user_carries_no_platform_credential() {
    let partner = Partner::start("x", "y");
    let env = declaring(&[partner.url()]);
    let server = Server::start(&env);
    let r = server.api(
        "POST",
        "/api/apps/victim/addons",
        Some(serde_json::json!({"plan": "hostile", "options": {"sso": "yes"}})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let session = server.sign_in();
    let bearer = format!("Bearer {}", server.token);
    let fetch = format!(
        "/fetch?url={}",
        url::form_urlencoded::byte_serialize(format!("{}/echo", partner.url()).as_bytes())
            .collect::<String>()
    );
    let only_host = |partner: &Partner| {
        let names: Vec<String> = partner
            .last_headers()
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        assert_eq!(names, ["host"], "{:?}", partner.last_headers());
    };
    // On the platform's origin, with everything a signed-in browser has.
    let r = server.get(
        &format!("/addons/hostile{fetch}"),
        &[("cookie", &session), ("authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("status 200: "), "{}", r.text());
    assert_eq!(partner.hits("/echo"), 1);
    only_host(&partner);
    // On its own origin, signed in through SSO.
    let fields = server.sso_form("victim", &session, "HOSTILE");
    let login = server.sso_login("hostile", &fields);
    assert_eq!(login.status, 302, "{}", login.text());
    let sso = login
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("addonhost_sso_hostile="))
        .expect("the add-on's session cookie");
    let r = server.addon_request(
        "hostile",
        "GET",
        &fetch,
        &[
            ("cookie", &format!("{sso}; {session}")),
            ("authorization", &bearer),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(partner.hits("/echo"), 2);
    only_host(&partner);
    let sso_value = sso.split_once('=').unwrap().1;
    for (_, v) in partner.last_headers() {
        assert!(!v.contains(sso_value) && !v.contains(&server.token), "{v}");
    }
}

/// A host resolving add-ons' names with the DNS server the test runs
/// (`--outbound-resolver`), and the hostile add-on declaring `hosts`.
fn host_resolving_with(env: &Env, dns: &support::dns::Dns) -> Host {
    let mut opts = HostOptions::new(env.data(), std::env::split_paths(&env.plugins).collect());
    opts.database = env.database_url();
    env.grant_outbound(&mut opts.outbound);
    opts.outbound_resolver = addonhost::runtime::outbound::Resolver::dns(dns.addr);
    Host::open(opts).unwrap()
}

/// DNS rebinding, with a DNS server under the test's control: a declared
/// partner name whose answer changes from one lookup to the next — the
/// loopback, a private address, the loopback among other addresses — each
/// request asks again and each answer is checked, so none is reached; and
/// a name answering the cloud metadata address is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_name_whose_dns_answer_changes_or_points_at_metadata_is_refused() {
    use std::net::IpAddr;
    let partner = Partner::start("x", "y");
    let dns = support::dns::Dns::start();
    let rebind = "api.rebind.test";
    let metadata = "meta.rebind.test";
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    dns.answer(
        rebind,
        &[
            &[ip("127.0.0.1")],
            &[ip("10.1.2.3")],
            &[ip("127.0.0.1"), ip("127.0.0.2")],
        ],
    );
    dns.answer(metadata, &[&[ip("169.254.169.254")]]);
    let declared = [
        format!("http://{rebind}:{}", partner.port),
        format!("http://{metadata}:{}", partner.port),
    ];
    let env = declaring(&declared);
    let host = host_resolving_with(&env, &dns);
    let url = format!("{}/hit", declared[0]);
    for (lookup, (address, kind)) in [
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private (10.0.0.0/8) address"),
        ("127.0.0.1", "a loopback address"),
    ]
    .into_iter()
    .enumerate()
    {
        refused(
            &env,
            &host,
            attack("fetch", &[("url", &url)]),
            &[
                &format!(
                    "outbound request to {url} refused: {rebind} resolved to {address}, {kind}"
                ),
                "a non-public address is reached only when declared as itself",
            ],
        )
        .await;
        // Asked again for every request: the answer of this lookup is the
        // one refused, not a remembered one.
        assert_eq!(dns.lookups(rebind), lookup + 1);
    }
    let url = format!("{}/latest/meta-data/", declared[1]);
    refused(
        &env,
        &host,
        attack("fetch", &[("url", &url)]),
        &[&format!(
            "{metadata} resolved to 169.254.169.254, a link-local (169.254.0.0/16, where cloud metadata services live) address"
        )],
    )
    .await;
    assert_eq!(dns.lookups(metadata), 1);
    assert_eq!(partner.requests(), 0, "a name led to a non-public address");
    // A name the server does not know fails as unresolved, naming it.
    let unknown = "nowhere.rebind.test";
    let env2 = declaring(&[format!("http://{unknown}:{}", partner.port)]);
    let host2 = host_resolving_with(&env2, &dns);
    refused(
        &env2,
        &host2,
        attack(
            "fetch",
            &[("url", &format!("http://{unknown}:{}/hit", partner.port))],
        ),
        &[&format!("resolving {unknown}: ")],
    )
    .await;
    assert!(
        dns.asked().iter().any(|(n, _)| n == unknown),
        "{:?}",
        dns.asked()
    );
}
