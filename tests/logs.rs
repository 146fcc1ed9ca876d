//! `addonhost logs --tail`: a running server's log lines over its API
//! (`GET /api/logs`, server-sent events, with the token) — an add-on's own
//! lines with the call and the resource, each call's outcome, request
//! lines — narrowed to one add-on or one app; and a client that stops
//! reading, which loses lines (and is told how many) while the server
//! answers everyone else as before.

use std::io::{BufRead, Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

/// A `logs --tail --json` process and the lines it printed.
struct Tail {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tail {
    /// Starts `logs --tail --json ARGS` against `server` and waits until it
    /// streams.
    fn start(env: &Env, server: &Server, args: &[&str]) -> Tail {
        let mut all = vec!["logs", "--tail", "--json"];
        all.extend_from_slice(args);
        let mut child = env
            .command(&all)
            .env("ADDONHOST_URL", format!("http://{}", server.addr))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        stderr.read_line(&mut said).unwrap();
        assert!(said.contains("streaming the log lines"), "{said}");
        std::thread::spawn(move || for _ in stderr.lines() {});
        Tail { child, lines }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| ok(l)) {
                return line;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {what} in {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn provision(server: &Server, app: &str, body: Value) -> Value {
    let r = server.api("POST", &format!("/api/apps/{app}/addons"), Some(body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[test]
fn logs_tail_streams_an_addons_lines_and_calls_narrowed_to_the_addon_or_the_app() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[]);
    server.app_with("other", &[]);
    let by_addon = Tail::start(&env, &server, &["--addon", "hostile"]);
    let by_app = Tail::start(&env, &server, &["-a", "shop"]);

    // The hostile add-on logs three lines of its own while provisioning.
    provision(
        &server,
        "shop",
        json!({"plan": "hostile", "options": {"attack": "log-flood", "count": "3", "size": "12"}}),
    );
    provision(&server, "other", json!({"plan": "kv"}));
    provision(&server, "shop", json!({"plan": "exceptions"}));

    let call = by_addon.wait_for("hostile's provision call", |l| {
        l["kind"] == "call" && l["call"] == "provision"
    });
    assert_eq!(call["addon"], "hostile");
    assert_eq!(call["fields"]["outcome"], "ok");
    assert!(call["fields"]["ms"].as_f64().unwrap() > 0.0, "{call}");
    let own: Vec<Value> = by_addon
        .lines()
        .into_iter()
        .filter(|l| l["kind"] == "plugin")
        .collect();
    assert_eq!(own.len(), 3, "{own:#?}");
    for line in &own {
        assert_eq!(line["message"], "x".repeat(12));
        assert_eq!(line["level"], "error");
        assert_eq!(line["call"], "provision");
        assert_eq!(line["app"], "shop");
    }
    assert!(
        by_addon.lines().iter().all(|l| l["addon"] == "hostile"),
        "only hostile's lines: {:#?}",
        by_addon.lines()
    );

    // By app: the requests about shop and the calls they made, nothing of
    // the other app.
    by_app.wait_for("exceptions' provision call", |l| {
        l["kind"] == "call" && l["addon"] == "exceptions"
    });
    let lines = by_app.lines();
    assert!(
        lines.iter().any(|l| l["kind"] == "request"
            && l["message"] == "POST /api/apps/shop/addons 201"
            && l["request_id"].is_string()),
        "{lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "call" && l["addon"] == "hostile"));
    assert!(
        lines
            .iter()
            .all(|l| l["app"] == "shop" && l["addon"] != "kv"),
        "only shop's lines: {lines:#?}"
    );

    // A failed call is one line with its error.
    let r = server.api(
        "POST",
        "/api/apps/shop/addons",
        Some(json!({"plan": "hostile", "options": {"attack": "trap"}})),
    );
    assert_ne!(r.status, 201);
    let failed = by_addon.wait_for("the failed call", |l| {
        l["kind"] == "call" && l["fields"]["outcome"] == "trap"
    });
    let error = failed["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains("hostile add-on panicked on purpose") && error.contains("src/lib.rs:"),
        "the panic names its line: {error}"
    );

    // Refused: a wrong token, an unknown add-on, no --tail.
    let wrong = env
        .command(&["logs", "--tail"])
        .env("ADDONHOST_URL", format!("http://{}", server.addr))
        .env("ADDONHOST_DATA", env.data().join("elsewhere"))
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("refused the API token"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let unknown = env
        .command(&["logs", "--tail", "--addon", "nope"])
        .env("ADDONHOST_URL", format!("http://{}", server.addr))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown add-on service"));
    let (_, err) = env.fails(&["logs"]);
    assert!(err.contains("--tail"), "{err}");
}

/// One keep-alive connection sending `GET /healthz` `n` times; answers how
/// many were answered `ok`.
fn healthz_flood(addr: &str, n: usize) -> usize {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answered = 0;
    let mut buf = Vec::new();
    for _ in 0..n {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        buf.clear();
        // Read one response: headers, then its 3-byte body.
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let mut body = [0u8; 3];
        conn.read_exact(&mut body).unwrap();
        if buf.starts_with(b"HTTP/1.1 200") && &body == b"ok\n" {
            answered += 1;
        }
    }
    answered
}

#[test]
fn a_log_client_that_stops_reading_loses_lines_and_never_slows_the_server() {
    let env = Env::new();
    let server = Server::start(&env);
    // A client that connects and then reads nothing, with a small receive
    // buffer, so the kernel holds little for it.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt on a socket this test owns, with a c_int value.
        let r = unsafe {
            libc::setsockopt(
                slow.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
    }
    write!(
        slow,
        "GET /api/logs HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\naccept: text/event-stream\r\n\r\n",
        server.addr, server.token
    )
    .unwrap();
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // Requests keep being answered while its buffer fills: every one of
    // them, each logged as a line the client will not read in time.
    const REQUESTS: usize = 40_000;
    let started = Instant::now();
    assert_eq!(healthz_flood(&server.addr, REQUESTS), REQUESTS);
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the flood took {:?}",
        started.elapsed()
    );
    // The API still answers for others.
    assert_eq!(server.api("GET", "/api/plugins", None).status, 200);

    // Read now: the client learns how many lines it lost. Once it has read
    // all there was (the stream goes quiet), a new request's line reaches
    // it. Every healthz line reached it or was counted.
    slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reader = std::io::BufReader::new(slow);
    let (mut dropped, mut received, mut notices) = (0u64, 0u64, 0);
    let mut marker_sent = false;
    let started = Instant::now();
    let mut line = String::new();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "reading the stream took too long"
        );
        match reader.read_line(&mut line) {
            Ok(0) => panic!("the stream ended"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Quiet: what was buffered may all be read (or TCP's
                // zero-window probing paused the stream: then this request's
                // line may be dropped in turn, and the next quiet moment
                // sends another).
                assert_eq!(server.api("GET", "/api/apps", None).status, 200);
                marker_sent = true;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        let whole = std::mem::take(&mut line);
        let Some(data) = whole.trim_end().strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(n) = v["fields"]["dropped"].as_u64() {
            assert_eq!(v["kind"], "server");
            assert!(v["message"].as_str().unwrap().contains("lines dropped"));
            dropped += n;
            notices += 1;
        } else if v["message"] == "GET /healthz 200" {
            received += 1;
        } else if v["message"] == "GET /api/apps 200" && marker_sent {
            break;
        }
    }
    assert!(notices >= 1 && dropped > 0, "no drop was told");
    assert!(received < REQUESTS as u64, "{received} lines received");
    assert!(
        received + dropped >= REQUESTS as u64,
        "{received} received + {dropped} dropped < {REQUESTS}"
    );
}
