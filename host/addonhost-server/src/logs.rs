//! A running server's log lines, streamed to whoever holds the API token:
//! `addonhost logs --tail` and `plugins:dev` read them from `GET /api/logs`
//! as server-sent events.
//!
//! [`LogHub`] is a `tracing` layer. It sees the lines the host logs at info
//! level and above — each plugin's own log lines (with the add-on, the call
//! and the resource), one line per plugin call (its outcome and duration),
//! one per HTTP request, and each refusal — whatever `ADDONHOST_LOG` says
//! stderr gets. It is off while no client listens: its filter then refuses
//! every event after one atomic load, so a server nobody tails formats
//! nothing for it.
//!
//! Each client has a bounded buffer ([`CLIENT_BUFFER`] lines). A line that
//! does not fit is dropped for that client and counted, and the client is
//! told how many it missed: a slow reader loses lines, it never slows the
//! server or the other clients.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{self, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Lines buffered for one client before its further lines are dropped.
pub const CLIENT_BUFFER: usize = 1024;
/// Clients streaming at once; more are refused.
pub const MAX_CLIENTS: usize = 64;

/// One log line, as a client receives it (the `data` of one event).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// When, in Unix milliseconds.
    pub at: u64,
    /// `error`, `warn` or `info`.
    pub level: String,
    /// What logged it: `plugin` (an add-on's own line), `call` (a plugin
    /// call's outcome), `request` (an HTTP request), `refusal` (a write or
    /// request the host refused an add-on), `server` (anything else).
    pub kind: String,
    /// The add-on id, when the line is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon: Option<String>,
    /// The app, when the line is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The add-on's id of the resource the call is about, when one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The plugin call (`provision`, `http`, …), when in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The HTTP request it happened in (also answered as `x-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The line itself.
    pub message: String,
    /// Its other fields (`status`, `ms`, `outcome`, `error`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// Which lines a client wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only lines about this add-on.
    pub addon: Option<String>,
    /// Only lines about this app: named in the line (a request for it, a
    /// call made for it), or about one of `resources`.
    pub app: Option<String>,
    /// The add-on ids of the app's resources when the client connected.
    pub resources: Vec<String>,
}

impl LogFilter {
    /// Whether `line` is one the client asked for.
    pub fn matches(&self, line: &LogLine) -> bool {
        if let Some(addon) = &self.addon {
            if line.addon.as_deref() != Some(addon) {
                return false;
            }
        }
        if let Some(app) = &self.app {
            let by_resource = line
                .resource
                .as_ref()
                .is_some_and(|r| self.resources.contains(r));
            if line.app.as_deref() != Some(app) && !by_resource {
                return false;
            }
        }
        true
    }
}

struct Client {
    id: u64,
    filter: LogFilter,
    tx: mpsc::Sender<LogLine>,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    clients: Mutex<Vec<Client>>,
    /// `clients.len()`, read without the lock on every event.
    listening: AtomicUsize,
    next_id: AtomicU64,
}

impl Inner {
    fn clients(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, line: LogLine) {
        let clients = self.clients();
        for c in clients.iter().filter(|c| c.filter.matches(&line)) {
            // Never wait: a full buffer drops the line for that client.
            if c.tx.try_send(line.clone()).is_err() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn remove(&self, id: u64) {
        let mut clients = self.clients();
        clients.retain(|c| c.id != id);
        self.listening.store(clients.len(), Ordering::Relaxed);
    }
}

/// The log lines of this process, for clients to stream. Clones share one
/// hub.
#[derive(Clone, Default)]
pub struct LogHub {
    inner: Arc<Inner>,
}

/// The hub is full: [`MAX_CLIENTS`] are streaming already.
#[derive(Debug)]
pub struct TooManyClients;

impl LogHub {
    /// A hub with no clients.
    pub fn new() -> LogHub {
        LogHub::default()
    }

    /// The `tracing` layer that feeds the hub, with its own filter: add it
    /// to the process's subscriber next to the stderr output.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        HubLayer {
            inner: self.inner.clone(),
        }
        .with_filter(HubFilter {
            inner: self.inner.clone(),
        })
    }

    /// Clients streaming now.
    pub fn clients(&self) -> usize {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// A new client's stream of the lines `filter` picks, from now on.
    pub fn subscribe(&self, filter: LogFilter) -> Result<Subscription, TooManyClients> {
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut clients = self.inner.clients();
        if clients.len() >= MAX_CLIENTS {
            return Err(TooManyClients);
        }
        clients.push(Client {
            id,
            filter,
            tx,
            dropped: dropped.clone(),
        });
        self.inner.listening.store(clients.len(), Ordering::Relaxed);
        Ok(Subscription {
            rx,
            dropped,
            hub: Arc::downgrade(&self.inner),
            id,
        })
    }

    /// Ends every client's stream (the server is shutting down: a stream
    /// never ends by itself, and would hold the shutdown up).
    pub fn close(&self) {
        let mut clients = self.inner.clients();
        clients.clear();
        self.inner.listening.store(0, Ordering::Relaxed);
    }
}

/// One client's lines; it stops receiving when dropped.
pub struct Subscription {
    rx: mpsc::Receiver<LogLine>,
    dropped: Arc<AtomicU64>,
    hub: Weak<Inner>,
    id: u64,
}

impl Subscription {
    /// The next line (`None` once the hub closed), preceded by a line
    /// saying how many were dropped since the last one, if any were.
    pub fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<LogLine>> {
        let missed = self.dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            return Poll::Ready(Some(LogLine {
                at: now_ms(),
                level: "warn".into(),
                kind: "server".into(),
                addon: None,
                app: None,
                resource: None,
                call: None,
                request_id: None,
                message: format!(
                    "{missed} log lines dropped: this client read more slowly than the server logged"
                ),
                fields: BTreeMap::from([("dropped".to_string(), missed.into())]),
            }));
        }
        self.rx.poll_recv(cx)
    }
}

impl futures_core::Stream for Subscription {
    type Item = LogLine;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogLine>> {
        self.get_mut().poll_line(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lines of addonhost's own crates at info and above, while a client
/// listens. Callsites stay "sometimes" interesting, so the check is made
/// per event (one atomic load) rather than cached as never.
struct HubFilter {
    inner: Arc<Inner>,
}

fn wanted(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO && meta.target().starts_with("addonhost")
}

impl<S> Filter<S> for HubFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
        self.inner.listening.load(Ordering::Relaxed) > 0 && wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if wanted(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

struct HubLayer {
    inner: Arc<Inner>,
}

/// The fields of a span a line inherits.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, String)>);

/// Span fields a line takes over when it has none of its own.
const INHERITED: &[&str] = &["addon", "app", "resource", "call", "request_id"];

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if INHERITED.contains(&field.name()) && !value.is_empty() {
            self.0.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if INHERITED.contains(&field.name()) {
            let value = format!("{value:?}");
            if !value.is_empty() && value != "\"\"" {
                self.0.push((field.name(), value));
            }
        }
    }
}

/// An event's fields.
#[derive(Default)]
struct EventFields {
    message: String,
    known: BTreeMap<&'static str, String>,
    other: BTreeMap<String, serde_json::Value>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        if name == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
        } else if name == "kind" || INHERITED.contains(&name) {
            let text = match value {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
            if !text.is_empty() {
                self.known.insert(name, text);
            }
        } else {
            self.other.insert(name.to_string(), value);
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Durations in ms: a tenth of a millisecond is enough to read.
        let rounded = (value * 10.0).round() / 10.0;
        self.put(field, serde_json::json!(rounded));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

impl<S> Layer<S> for HubLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: layer::Context<'_, S>,
    ) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: layer::Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        // The innermost span's value wins over its parents'; the event's
        // own over any span's.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(inherited) = span.extensions().get::<SpanFields>() {
                    for (name, value) in &inherited.0 {
                        fields.known.entry(name).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        // A request line reads as the request: `GET /api/apps 200`.
        if fields.known.get("kind").map(String::as_str) == Some("request") {
            let field = |name: &str| match fields.other.get(name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            fields.message = format!("{} {} {}", field("method"), field("path"), field("status"));
        }
        let mut take = |name: &str| fields.known.remove(name);
        let line = LogLine {
            at: now_ms(),
            level: event.metadata().level().as_str().to_ascii_lowercase(),
            kind: take("kind").unwrap_or_else(|| "server".into()),
            addon: take("addon"),
            app: take("app"),
            resource: take("resource"),
            call: take("call"),
            request_id: take("request_id"),
            message: fields.message,
            fields: fields.other,
        };
        self.inner.publish(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn line(addon: Option<&str>, app: Option<&str>, resource: Option<&str>) -> LogLine {
        LogLine {
            at: 0,
            level: "info".into(),
            kind: "plugin".into(),
            addon: addon.map(Into::into),
            app: app.map(Into::into),
            resource: resource.map(Into::into),
            call: None,
            request_id: None,
            message: "m".into(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn filters_pick_the_addon_and_the_apps_lines() {
        let by_addon = LogFilter {
            addon: Some("kv".into()),
            ..Default::default()
        };
        assert!(by_addon.matches(&line(Some("kv"), None, None)));
        assert!(!by_addon.matches(&line(Some("queue"), None, None)));
        assert!(!by_addon.matches(&line(None, Some("shop"), None)));
        let by_app = LogFilter {
            app: Some("shop".into()),
            resources: vec!["kv-1".into()],
            ..Default::default()
        };
        assert!(by_app.matches(&line(None, Some("shop"), None)));
        assert!(by_app.matches(&line(Some("kv"), None, Some("kv-1"))));
        assert!(!by_app.matches(&line(Some("kv"), None, Some("kv-2"))));
        assert!(!by_app.matches(&line(None, Some("other"), None)));
    }

    #[test]
    fn a_slow_client_loses_lines_and_is_told_how_many() {
        let hub = LogHub::new();
        let subscriber = tracing_subscriber::registry().with(hub.layer());
        let mut sub = hub.subscribe(LogFilter::default()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", addon = "kv", call = "provision");
            let _in = span.enter();
            for i in 0..CLIENT_BUFFER + 10 {
                tracing::info!(kind = "plugin", "line {i}");
            }
        });
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(first)) = sub.poll_line(&mut cx) else {
            panic!("no line")
        };
        assert_eq!(first.fields["dropped"], 10, "{first:?}");
        let Poll::Ready(Some(second)) = sub.poll_line(&mut cx) else {
            panic!("no line")
        };
        assert_eq!(second.message, "line 0");
        assert_eq!(second.addon.as_deref(), Some("kv"));
        assert_eq!(second.call.as_deref(), Some("provision"));
        assert_eq!(second.kind, "plugin");
        drop(sub);
        assert_eq!(hub.clients(), 0);
    }
}
