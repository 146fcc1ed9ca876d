//! A partner's backend for the tests, on an ephemeral port of 127.0.0.1:
//! the mailer example's mailbox API, and routes that misbehave on purpose
//! for the outbound attacks (a redirect, a slow answer, a huge one). It
//! counts every request it receives, so a test can prove a refused request
//! never arrived. One thread per connection; every sleep and stream is
//! bounded, and the server stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest `/slow` waits, whatever it is asked.
const MAX_SLOW_MS: u64 = 10_000;
/// The most `/huge` streams, whatever it is asked.
const MAX_HUGE_MB: u64 = 64;

/// A mailbox as the backend keeps it.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub id: String,
    pub uuid: String,
    pub plan: String,
    pub app: String,
    pub username: String,
    pub password: String,
    /// The password before the last rotation, still accepted (its grace
    /// window).
    pub previous: Option<String>,
    pub deleted: bool,
}

#[derive(Default)]
struct State {
    /// (method, path with query) of every request, in arrival order.
    requests: Vec<(String, String)>,
    /// The headers of every request, in arrival order.
    headers: Vec<Vec<(String, String)>>,
    mailboxes: BTreeMap<String, Mailbox>,
    next: u64,
    /// `/slow` requests waiting for their answer now, and the most ever at
    /// once.
    open: usize,
    most_open: usize,
}

pub struct Partner {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Partner {
    /// A backend whose mailbox API accepts `user`:`secret` (the mailer's
    /// manifest id and api.password).
    pub fn start(user: &str, secret: &str) -> Partner {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the partner backend");
        let port = listener.local_addr().unwrap().port();
        let partner = Partner {
            port,
            state: Arc::default(),
            stop: Arc::default(),
        };
        let (state, stop) = (partner.state.clone(), partner.stop.clone());
        let auth = super::http::basic(user, secret);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (state, auth) = (state.clone(), auth.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &state, &auth);
                });
            }
        });
        partner
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most `/slow` requests it was answering at once (each counted
    /// until just before its answer is written, so a client that has its
    /// answer never finds it still counted).
    pub fn most_open(&self) -> usize {
        self.state().most_open
    }

    /// Requests received, all routes.
    pub fn requests(&self) -> usize {
        self.state().requests.len()
    }

    /// Requests received whose path starts with `prefix`.
    pub fn hits(&self, prefix: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|(_, p)| p.starts_with(prefix))
            .count()
    }

    /// The headers of the last request received.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.state().headers.last().cloned().unwrap_or_default()
    }

    pub fn mailbox(&self, id: &str) -> Option<Mailbox> {
        self.state().mailboxes.get(id).cloned()
    }

    /// Whether the backend lets `username`:`password` send mail now.
    pub fn accepts(&self, username: &str, password: &str) -> bool {
        self.state().mailboxes.values().any(|m| {
            !m.deleted
                && m.username == username
                && (m.password == password || m.previous.as_deref() == Some(password))
        })
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn read_request(conn: &TcpStream) -> std::io::Result<Req> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        // Read to the last chunk: closing with a request's bytes unread
        // resets the connection under the answer.
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n.min(1 << 20) + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break body;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        body
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Ok(Req {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn respond(
    mut conn: &TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn json(conn: &TcpStream, status: u16, value: serde_json::Value) -> std::io::Result<()> {
    respond(
        conn,
        status,
        &[("content-type", "application/json")],
        value.to_string().as_bytes(),
    )
}

fn serve(conn: TcpStream, state: &Mutex<State>, auth: &str) -> std::io::Result<()> {
    let req = read_request(&conn)?;
    {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let full = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        s.requests.push((req.method.clone(), full));
        s.headers.push(req.headers.clone());
    }
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["hit"]) => respond(&conn, 200, &[], b"hit"),
        ("GET", ["echo"]) => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into()))
                .collect();
            json(&conn, 200, headers.into())
        }
        ("GET", ["redirect"]) => {
            let to = req.param("to").unwrap_or_default();
            respond(&conn, 302, &[("location", &to)], b"")
        }
        ("GET", ["slow"]) => {
            let ms = req
                .param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5000u64);
            let count = |delta: isize| {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.open = s.open.saturating_add_signed(delta);
                s.most_open = s.most_open.max(s.open);
            };
            count(1);
            std::thread::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS)));
            count(-1);
            respond(&conn, 200, &[], b"slow")
        }
        ("GET", ["huge"]) => {
            // Chunked, with no length announced: only a cap on what is
            // read stops it.
            let mb = req
                .param("mb")
                .and_then(|v| v.parse().ok())
                .unwrap_or(64u64);
            let mut c = &conn;
            c.write_all(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
            )?;
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..(mb.min(MAX_HUGE_MB) << 4) {
                c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                c.write_all(&chunk)?;
                c.write_all(b"\r\n")?;
            }
            c.write_all(b"0\r\n\r\n")
        }
        (_, ["v1", ..]) if req.header("authorization") != Some(auth) => json(
            &conn,
            401,
            serde_json::json!({"error": "unknown partner credentials"}),
        ),
        ("POST", ["v1", "mailboxes"]) => {
            let body = req.json();
            let uuid = body["uuid"].as_str().unwrap_or_default().to_string();
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = s.mailboxes.values().find(|m| m.uuid == uuid && !m.deleted) {
                let m = m.clone();
                drop(s);
                return json(&conn, 200, mailbox_json(&m));
            }
            s.next += 1;
            let n = s.next;
            let m = Mailbox {
                id: format!("mbx-{n}"),
                uuid,
                plan: body["plan"].as_str().unwrap_or_default().to_string(),
                app: body["app"].as_str().unwrap_or_default().to_string(),
                username: format!("user{n}"),
                password: password(),
                previous: None,
                deleted: false,
            };
            s.mailboxes.insert(m.id.clone(), m.clone());
            drop(s);
            json(&conn, 201, mailbox_json(&m))
        }
        (method, ["v1", "mailboxes", id, rest @ ..]) => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(m) = s.mailboxes.get_mut(*id).filter(|m| !m.deleted) else {
                drop(s);
                return json(&conn, 404, serde_json::json!({"error": "no such mailbox"}));
            };
            match (method, rest) {
                ("POST", ["rotate"]) => {
                    m.previous = Some(std::mem::replace(&mut m.password, password()));
                    let m = m.clone();
                    drop(s);
                    json(&conn, 200, mailbox_json(&m))
                }
                ("PUT", []) => {
                    m.plan = req.json()["plan"].as_str().unwrap_or_default().to_string();
                    drop(s);
                    json(&conn, 200, serde_json::json!({}))
                }
                ("DELETE", []) => {
                    m.deleted = true;
                    drop(s);
                    respond(&conn, 204, &[], b"")
                }
                _ => {
                    drop(s);
                    json(&conn, 405, serde_json::json!({"error": "no such route"}))
                }
            }
        }
        _ => respond(&conn, 404, &[], b"no such route"),
    }
}

fn mailbox_json(m: &Mailbox) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "smtp_host": "smtp.mailer.test:587",
        "username": m.username,
        "password": m.password,
    })
}

fn password() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(out.len() as u64);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
