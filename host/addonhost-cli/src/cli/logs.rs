//! `logs --tail`: a running server's log lines, streamed from its API
//! (`GET /api/logs`, server-sent events) with the API token, like
//! `heroku logs --tail`. `plugins:dev` shows its add-on's lines the same way.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::Cli;
use addonhost_server::logs::LogLine;

// (No doc comment: clap would print it as the command's help.)
#[allow(missing_docs)]
#[derive(Args, Debug)]
pub struct Logs {
    /// Keep streaming new lines (the server keeps no history: lines are
    /// streamed from the moment the command connects).
    #[arg(short, long)]
    pub tail: bool,
    /// Only lines about this app.
    #[arg(short, long)]
    pub app: Option<String>,
    /// Only lines about this add-on (its id, like `kv`).
    #[arg(long)]
    pub addon: Option<String>,
    /// One JSON object per line, as the server sends them.
    #[arg(long)]
    pub json: bool,
}

/// Where the server is and the token it takes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The API bearer token.
    pub token: String,
}

impl Target {
    /// The server `--url` names (default `http://127.0.0.1:5000`), with the
    /// API token of the data dir (or of the shared database).
    pub fn of(cli: &Cli) -> anyhow::Result<Target> {
        let url = cli.url.as_deref().unwrap_or("http://127.0.0.1:5000");
        let parsed = url::Url::parse(url).with_context(|| format!("--url {url:?}"))?;
        if parsed.scheme() != "http" {
            bail!("--url {url}: the log stream is read over http:// (a server behind TLS: run the command on its machine, against its local address)");
        }
        let host = parsed.host_str().context("--url has no host")?;
        let authority = format!("{host}:{}", parsed.port().unwrap_or(80));
        let token = match cli.database {
            Some(_) => addonhost_server::token::for_host(&cli.host()?)?,
            None => addonhost_server::token::load_or_create(&cli.data)?,
        };
        Ok(Target { authority, token })
    }
}

/// `logs --tail`.
pub async fn run(cli: &Cli, l: &Logs) -> anyhow::Result<()> {
    if !l.tail {
        bail!(
            "a server keeps no log history: `addonhost logs --tail` streams its lines from now on"
        );
    }
    let target = Target::of(cli)?;
    let json = l.json;
    stream(&target, l.app.as_deref(), l.addon.as_deref(), |line| {
        if json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            println!("{}", format_line(&line));
        }
    })
    .await
}

/// Streams the server's lines (those of `app` and `addon` when given) to
/// `each` until the server ends the stream; an error when it cannot be
/// reached or refuses.
pub async fn stream(
    target: &Target,
    app: Option<&str>,
    addon: Option<&str>,
    mut each: impl FnMut(LogLine),
) -> anyhow::Result<()> {
    let mut path = "/api/logs".to_string();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(app) = app {
        query.append_pair("app", app);
    }
    if let Some(addon) = addon {
        query.append_pair("addon", addon);
    }
    let query = query.finish();
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&target.authority),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting to {}: timed out", target.authority))?
    .with_context(|| {
        format!(
            "no addonhost server answers at {} (start one with `addonhost serve`, or name it with --url)",
            target.authority
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(&path)
        .header(http::header::HOST, &target.authority)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", target.token),
        )
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
        if status == http::StatusCode::UNAUTHORIZED {
            bail!(
                "the server at {} refused the API token of this data dir (--data): {message}",
                target.authority
            );
        }
        bail!(
            "the server at {} answered {status}: {message}",
            target.authority
        );
    }
    // Said once the server accepted the stream: lines from here on reach us.
    eprintln!(
        "==> streaming the log lines of http://{} (Ctrl-C to stop)",
        target.authority
    );
    let mut events = EventParser::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the log stream")?;
        if let Ok(data) = frame.into_data() {
            for event in events.push(&data) {
                if let Ok(line) = serde_json::from_str::<LogLine>(&event) {
                    each(line);
                }
            }
        }
    }
    Ok(())
}

/// Server-sent events out of a byte stream: the `data` of each event.
#[derive(Default)]
struct EventParser {
    pending: String,
    data: Vec<String>,
}

impl EventParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data
                    .push(data.strip_prefix(' ').unwrap_or(data).to_string());
            }
        }
        out
    }
}

/// A line as a person reads it, Heroku style:
/// `2025-01-02T03:04:05.678Z kv[provision kv-1a2b]: message`.
pub fn format_line(line: &LogLine) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(line.at as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default();
    let source = match (&line.addon, line.kind.as_str()) {
        (_, "request") => "router".to_string(),
        (Some(addon), _) => {
            let inside: Vec<&str> = [line.call.as_deref(), line.resource.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if inside.is_empty() {
                addon.clone()
            } else {
                format!("{addon}[{}]", inside.join(" "))
            }
        }
        (None, _) => "addonhost".to_string(),
    };
    let level = match line.level.as_str() {
        "info" => String::new(),
        other => format!("{other}: "),
    };
    format!("{at} {source}: {level}{}", describe(line))
}

/// The line's words, with what its fields add: a call's duration and
/// error, a request's duration and id.
pub fn describe(line: &LogLine) -> String {
    let ms = line.fields.get("ms").and_then(|v| v.as_f64());
    match line.kind.as_str() {
        "call" => {
            let mut s = line.message.clone();
            if let Some(ms) = ms {
                s.push_str(&format!(" in {ms:.1} ms"));
            }
            if let Some(e) = line.fields.get("error").and_then(|v| v.as_str()) {
                s.push_str(": ");
                s.push_str(e);
            }
            s
        }
        "request" => {
            let mut s = line.message.clone();
            if let Some(ms) = ms {
                s.push_str(&format!(" in {ms:.1} ms"));
            }
            if let Some(id) = &line.request_id {
                s.push_str(&format!(" (request {id})"));
            }
            s
        }
        _ => line.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_across_chunks() {
        let mut p = EventParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            p.push(b":1}\n\n:keep-alive\n\ndata: x\n"),
            vec!["{\"a\":1}"]
        );
        assert_eq!(p.push(b"\n"), vec!["x"]);
    }
}
