//! Slow and hostile HTTP clients, and a plugin lying about its framing:
//! the server keeps answering everyone else and never lets a connection be
//! desynchronised.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

fn server_with(env: &Env, args: &[&str]) -> Server {
    let mut a = vec!["serve", "--port", "0"];
    a.extend_from_slice(args);
    Server::start_with(env.command(&a), env)
}

#[test]
fn idle_and_slowloris_connections_neither_starve_requests_nor_stay_open() {
    let env = Env::new();
    let server = server_with(&env, &["--header-timeout", "2"]);
    // 2,000 connections that never send a byte, 200 that send a request's
    // headers one byte at a time.
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                let started = Instant::now();
                for b in head {
                    if s.write_all(&[*b]).is_err() {
                        // Cut off by the server.
                        return started.elapsed();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                started.elapsed()
            })
        })
        .collect();
    // Meanwhile every ordinary request is answered.
    let until = Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while Instant::now() < until {
        assert_eq!(server.get("/healthz", &[]).status, 200);
        assert_eq!(server.api("GET", "/api/apps", None).status, 200);
        answered += 1;
    }
    assert!(answered > 0);
    // The slow clients were cut off at the header timeout, long before
    // they could finish (~17 s at their pace).
    for t in slow {
        let took = t.join().unwrap();
        assert!(
            took < Duration::from_secs(12),
            "a slowloris client held on for {took:?}"
        );
    }
    // And the idle ones were closed by the server: an end of stream (or a
    // reset) well before the client's own read timeout, which would mean
    // the connection was still open.
    for (i, mut s) in idle.into_iter().enumerate().step_by(40) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        let waited = Instant::now();
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "idle connection {i} was not closed by the server: {other:?} after {:?}",
                waited.elapsed()
            ),
        }
        assert!(
            waited.elapsed() < Duration::from_secs(8),
            "idle connection {i} closed only after {:?}",
            waited.elapsed()
        );
    }
}

#[test]
fn an_unauthenticated_request_is_refused_before_its_body_is_read() {
    let env = Env::new();
    let server = Server::start(&env);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Announces 100 MB and sends none of it.
    s.write_all(
        format!(
            "POST /api/apps HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).expect("an answer without the body");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// Two requests on one kept-alive connection, the first to a hostile
/// route; everything the connection carried back.
fn two_on_one_connection(server: &Server, first: &str) -> String {
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let host = server.addr.clone();
    s.write_all(
        format!(
            "GET {first} HTTP/1.1\r\nHost: {host}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn a_plugin_lying_about_its_framing_cannot_desync_a_kept_alive_connection() {
    let env = Env::new();
    let server = Server::start(&env);
    server.app_with("shop", &[json!({"plan": "hostile"})]);
    // The plugin claims `content-length: 0` over a body that looks like a
    // response: whatever the first answer is, the second request gets its
    // own answer and nothing smuggled.
    let text = two_on_one_connection(&server, "/addons/hostile/desync");
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    let healthz = text.rfind("HTTP/1.1 200 OK\r\n").unwrap();
    assert!(text[healthz..].ends_with("ok\n"), "{text}");
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("x-smuggled: yes\r\n\r\nok"),
        "{text}"
    );
    assert!(statuses.len() <= 3, "{text}");

    // Hop-by-hop headers from a plugin never reach the client, and the
    // connection stays the host's to keep alive.
    let text = two_on_one_connection(&server, "/addons/hostile/hop");
    let first = &text[..text.find("\r\n\r\n").unwrap()];
    let lower = first.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{first}");
    // (A plain header such as x-smuggled is the plugin's to set; the
    // `Connection` naming it never arrives.)
    for forbidden in [
        "connection:",
        "keep-alive",
        "upgrade",
        "trailer",
        "proxy-connection",
    ] {
        assert!(
            !lower.contains(forbidden),
            "{forbidden} reached the client: {first}"
        );
    }
    let healthz = text.rfind("HTTP/1.1 200 OK\r\n").unwrap();
    assert!(
        healthz > 0 && text[healthz..].ends_with("ok\n"),
        "the connection was not kept alive: {text}"
    );
}

#[test]
fn sign_in_never_redirects_off_site() {
    let env = Env::new();
    let server = Server::start(&env);
    for next in [
        "/%5Cevil.example",
        "//evil.example",
        "/%2F/evil.example",
        "https://evil.example",
    ] {
        let r = support::http::request(
            &server.addr,
            "POST",
            &format!("/login?next={next}"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("token={}", server.token).as_bytes(),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.header("location"), Some("/"), "next={next}");
    }
    let r = support::http::request(
        &server.addr,
        "POST",
        "/login?next=/apps/shop",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={}", server.token).as_bytes(),
    );
    assert_eq!(r.header("location"), Some("/apps/shop"));
}
