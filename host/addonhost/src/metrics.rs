//! What operators watch: every add-on's calls, failures and costs, and the
//! platform's own work, as Prometheus metrics (`GET /metrics`), plus a
//! five-minute window per add-on for `addonhost plugins` and the dashboard.
//!
//! Label values are bounded by construction: add-on ids come from the
//! catalog (the operator's plugin folders), calls and outcomes from fixed
//! lists, routes from a fixed set of classes. Nothing a plugin returns or a
//! client sends becomes a label value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use crate::runtime::CallError;

/// How a plugin call ended, as the `outcome` label says it.
pub fn outcome_of<T>(r: &Result<T, CallError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(CallError::Addon { .. }) => "addon_error",
        Err(CallError::Timeout { .. }) => "timeout",
        Err(CallError::MemoryLimit { .. }) => "memory",
        Err(CallError::Trap { .. }) => "trap",
        Err(CallError::Budget { .. } | CallError::Busy { .. }) => "rejected",
        Err(CallError::Unavailable { .. }) => "unavailable",
    }
}

/// Labels of `addonhost_plugin_calls_total`: which add-on, which export, how
/// the call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The add-on id (from the catalog, so bounded by the operator's plugin
    /// folders).
    pub addon: String,
    /// The export called (`provision`, `rotate`, `sso-verify`, …), from the
    /// runtime's fixed list.
    pub call: &'static str,
    /// How it ended, as [`outcome_of`] names it: `ok`, `addon_error`,
    /// `timeout`, `memory`, `trap` or `rejected`.
    pub outcome: &'static str,
}

/// Labels of the plugin call duration histogram: add-on and export, without the
/// outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddonCall {
    /// The add-on id.
    pub addon: String,
    /// The export called.
    pub call: &'static str,
}

/// The single `addon` label of the per-add-on gauges and counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddonLabel {
    /// The add-on id.
    pub addon: String,
}

/// Labels of the per-add-on outcome counters (provisionings, scheduled
/// rotations, outbound requests).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddonOutcome {
    /// The add-on id.
    pub addon: String,
    /// The outcome, from the fixed list of the counter it labels (see its field
    /// on [`Metrics`]).
    pub outcome: &'static str,
}

/// Labels of `addonhost_http_requests_total`, set by the server for every
/// request it answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route class (`api`, `dashboard`, `consumption`, `addon_origin`,
    /// `osb`, …), never the raw path.
    pub route: &'static str,
    /// The HTTP status answered.
    pub status: u16,
}

/// The `route` label of the HTTP request duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route class, as in [`HttpLabels::route`].
    pub route: &'static str,
}

/// The `outcome` label of the plugin reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `loaded`, `failed` or `removed`.
    pub outcome: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 50 µs to ~3.3 min.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

/// The host's metrics. One per [`crate::Host`] (so several hosts in one
/// process, as in tests, keep theirs apart).
pub struct Metrics {
    registry: Registry,
    /// Plugin calls by add-on, export and outcome
    /// (`addonhost_plugin_calls_total`), counted by the runtime after every
    /// call.
    pub plugin_calls: Family<CallLabels, Counter>,
    /// How long each plugin call took, instantiation included
    /// (`addonhost_plugin_call_duration_seconds`).
    pub plugin_call_seconds: Family<AddonCall, Histogram>,
    /// Calls of each add-on running now (instance slots in use); read from the
    /// runtime when the metrics are encoded by [`crate::Host::metrics_text`].
    pub plugin_calls_in_flight: Family<AddonLabel, Gauge>,
    /// How many calls each add-on may run at once (its manifest's
    /// `limits.concurrency`); set at encoding time.
    pub plugin_concurrency_limit: Family<AddonLabel, Gauge>,
    /// Keys each add-on keeps in its KV, read from the store at encoding time.
    pub kv_keys: Family<AddonLabel, Gauge>,
    /// Bytes (keys plus values) each add-on keeps in its KV, read from the
    /// store at encoding time.
    pub kv_bytes: Family<AddonLabel, Gauge>,
    /// Writes of an add-on the ownership rules refused: config vars it does not
    /// own, resources not its own.
    pub config_updates_refused: Family<AddonLabel, Counter>,
    /// Provisionings by add-on and outcome: `provisioned`, `pending` or
    /// `failed`.
    pub provisionings: Family<AddonOutcome, Counter>,
    /// Scheduled credential rotations by add-on and outcome: `due`, `ok` or
    /// `failed`.
    pub scheduled_rotations: Family<AddonOutcome, Counter>,
    /// Outbound HTTP requests of add-ons by outcome: `answered`, `refused`,
    /// `timeout`, `too_large`, `failed`, `over_budget`; a body cut off after
    /// its answer counts again as `body_timeout` or `body_too_large`.
    pub outbound_requests: Family<AddonOutcome, Counter>,
    /// Provider mode: attempts at delivering a change owed to a calling
    /// platform, by add-on and outcome: `delivered`, `retry` (failed, tried
    /// again later) or `failed` (given up on until an operator retries).
    pub partner_deliveries: Family<AddonOutcome, Counter>,
    /// Provider mode: changes owed to calling platforms and not delivered
    /// yet (one per resource), read from the store at encoding time.
    pub partner_owed: Family<AddonLabel, Gauge>,
    /// Provider mode: owed changes given up on, waiting for an operator's
    /// `partner:retry`; read from the store at encoding time.
    pub partner_owed_failed: Family<AddonLabel, Gauge>,
    /// Releases made by this process (on any app), counted by the store backend
    /// as it writes them.
    pub releases: Counter,
    /// HTTP requests by route class and status; counted by the server, not the
    /// library.
    pub http_requests: Family<HttpLabels, Counter>,
    /// How long HTTP requests took to answer, by route class; observed by the
    /// server.
    pub http_request_seconds: Family<RouteLabel, Histogram>,
    /// Commit latency of successful [`crate::store::Store::write`]s and
    /// `write_blocking`s: submitted to durable.
    pub store_write_seconds: Histogram,
    /// Batches the SQLite engine has committed since it opened (0 on
    /// PostgreSQL); read at encoding time.
    pub store_batches: Gauge,
    /// Writes the SQLite engine has committed since it opened; divided by
    /// [`Metrics::store_batches`] it gives writes per batch.
    pub store_writes: Gauge,
    /// Size of the SQLite write-ahead log in bytes, read at encoding time.
    pub store_wal_bytes: Gauge,
    /// Statements this process sent to PostgreSQL (0 on SQLite); read at
    /// encoding time.
    pub store_statements: Gauge,
    /// Round trips to PostgreSQL: statements sent together count once.
    pub store_round_trips: Gauge,
    /// Write transactions PostgreSQL refused for a conflict (a deadlock, a
    /// key two writers raced for) and that ran again.
    pub store_reruns: Gauge,
    /// Plugin versions reloaded, by outcome (`loaded`, `failed`, `removed`).
    pub reloads: Family<OutcomeLabel, Counter>,
    /// Each add-on's call metrics, resolved once (see [`AddonMetrics`]).
    addons: Mutex<HashMap<String, Arc<AddonMetrics>>>,
}

/// The exports a plugin call can be of, as the `call` label names them.
const CALLS: [&str; 6] = [
    "provision",
    "deprovision",
    "change-plan",
    "rotate",
    "sso-verify",
    "http",
];
/// Every outcome [`outcome_of`] names.
const OUTCOMES: [&str; 6] = ["ok", "addon_error", "timeout", "memory", "trap", "rejected"];

/// One add-on's call metrics: its series of the call counter and histogram,
/// looked up on first use of each and kept, and its five-minute window. A
/// call records into these handles without building label values or
/// searching the families (a fresh instance per call makes the call's own
/// bookkeeping count). Shared by every loaded version of the add-on.
pub struct AddonMetrics {
    addon: String,
    calls: [OnceLock<Histogram>; CALLS.len()],
    outcomes: [[OnceLock<Counter>; OUTCOMES.len()]; CALLS.len()],
    window: Mutex<Window>,
    /// Where the series live.
    families: (Family<CallLabels, Counter>, Family<AddonCall, Histogram>),
}

impl AddonMetrics {
    /// Records one call of export `call` that ended with `outcome`, started
    /// at `started` and took `took`.
    pub fn record(
        &self,
        call: &'static str,
        outcome: &'static str,
        started: Instant,
        took: Duration,
    ) {
        let c = CALLS.iter().position(|&k| k == call);
        let o = OUTCOMES.iter().position(|&k| k == outcome);
        let (calls, seconds) = &self.families;
        match (c, o) {
            (Some(c), Some(o)) => {
                self.outcomes[c][o]
                    .get_or_init(|| {
                        calls
                            .get_or_create(&self.call_labels(call, outcome))
                            .clone()
                    })
                    .inc();
                self.calls[c]
                    .get_or_init(|| seconds.get_or_create(&self.addon_call(call)).clone())
                    .observe(took.as_secs_f64());
            }
            // A label outside the fixed lists (none today): counted all the
            // same, the slow way.
            _ => {
                calls.get_or_create(&self.call_labels(call, outcome)).inc();
                seconds
                    .get_or_create(&self.addon_call(call))
                    .observe(took.as_secs_f64());
            }
        }
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(started + took, outcome != "ok", took);
    }

    fn call_labels(&self, call: &'static str, outcome: &'static str) -> CallLabels {
        CallLabels {
            addon: self.addon.clone(),
            call,
            outcome,
        }
    }

    fn addon_call(&self, call: &'static str) -> AddonCall {
        AddonCall {
            addon: self.addon.clone(),
            call,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, every one registered under the `addonhost_`
    /// prefix and at zero.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("addonhost");
        let plugin_calls = Family::<CallLabels, Counter>::default();
        r.register(
            "plugin_calls",
            "Plugin calls by add-on, export and outcome",
            plugin_calls.clone(),
        );
        let plugin_call_seconds =
            Family::<AddonCall, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register_with_unit(
            "plugin_call_duration",
            "How long plugin calls took, instantiation included",
            Unit::Seconds,
            plugin_call_seconds.clone(),
        );
        let plugin_calls_in_flight = Family::<AddonLabel, Gauge>::default();
        r.register(
            "plugin_calls_in_flight",
            "Plugin calls running now (instance slots in use)",
            plugin_calls_in_flight.clone(),
        );
        let plugin_concurrency_limit = Family::<AddonLabel, Gauge>::default();
        r.register(
            "plugin_concurrency_limit",
            "Calls an add-on may run at once (its limits.concurrency)",
            plugin_concurrency_limit.clone(),
        );
        let kv_keys = Family::<AddonLabel, Gauge>::default();
        r.register(
            "addon_kv_keys",
            "Keys an add-on keeps in its KV",
            kv_keys.clone(),
        );
        let kv_bytes = Family::<AddonLabel, Gauge>::default();
        r.register_with_unit(
            "addon_kv",
            "Bytes an add-on keeps in its KV (keys and values)",
            Unit::Bytes,
            kv_bytes.clone(),
        );
        let config_updates_refused = Family::<AddonLabel, Counter>::default();
        r.register(
            "config_updates_refused",
            "Writes of an add-on refused by the ownership rules (config vars, foreign resources)",
            config_updates_refused.clone(),
        );
        let provisionings = Family::<AddonOutcome, Counter>::default();
        r.register(
            "provisionings",
            "Provisionings by add-on and outcome (provisioned, pending, failed)",
            provisionings.clone(),
        );
        let scheduled_rotations = Family::<AddonOutcome, Counter>::default();
        r.register(
            "scheduled_rotations",
            "Scheduled rotations by add-on and outcome (due, ok, failed)",
            scheduled_rotations.clone(),
        );
        let outbound_requests = Family::<AddonOutcome, Counter>::default();
        r.register(
            "outbound_requests",
            "Outbound HTTP requests of add-ons by outcome (answered, refused, timeout, too_large, failed, over_budget; a body cut off after its answer counts again as body_timeout or body_too_large)",
            outbound_requests.clone(),
        );
        let partner_deliveries = Family::<AddonOutcome, Counter>::default();
        r.register(
            "partner_deliveries",
            "Provider mode: attempts at delivering a change owed to a calling platform, by outcome (delivered, retry, failed)",
            partner_deliveries.clone(),
        );
        let partner_owed = Family::<AddonLabel, Gauge>::default();
        r.register(
            "partner_owed_changes",
            "Provider mode: changes owed to calling platforms not delivered yet (one per resource)",
            partner_owed.clone(),
        );
        let partner_owed_failed = Family::<AddonLabel, Gauge>::default();
        r.register(
            "partner_owed_changes_failed",
            "Provider mode: owed changes given up on, waiting for `addonhost partner:retry`",
            partner_owed_failed.clone(),
        );
        let releases = Counter::default();
        r.register("releases", "Releases made", releases.clone());
        let http_requests = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests by route class and status",
            http_requests.clone(),
        );
        let http_request_seconds =
            Family::<RouteLabel, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register_with_unit(
            "http_request_duration",
            "How long HTTP requests took to answer, by route class",
            Unit::Seconds,
            http_request_seconds.clone(),
        );
        let store_write_seconds = seconds_histogram();
        r.register_with_unit(
            "store_write_duration",
            "How long a write took from submitted to durable (commit latency)",
            Unit::Seconds,
            store_write_seconds.clone(),
        );
        let store_batches = Gauge::default();
        r.register(
            "store_batches_committed",
            "Batches the SQLite engine committed (writes per batch: store_writes_committed / this)",
            store_batches.clone(),
        );
        let store_writes = Gauge::default();
        r.register(
            "store_writes_committed",
            "Writes the SQLite engine committed",
            store_writes.clone(),
        );
        let store_wal_bytes = Gauge::default();
        r.register_with_unit(
            "store_wal",
            "Size of the SQLite write-ahead log",
            Unit::Bytes,
            store_wal_bytes.clone(),
        );
        let store_statements = Gauge::default();
        r.register(
            "store_statements_sent",
            "Statements sent to PostgreSQL (BEGIN and COMMIT included)",
            store_statements.clone(),
        );
        let store_round_trips = Gauge::default();
        r.register(
            "store_round_trips",
            "Round trips to PostgreSQL (statements pipelined together count once)",
            store_round_trips.clone(),
        );
        let store_reruns = Gauge::default();
        r.register(
            "store_write_reruns",
            "Write transactions PostgreSQL refused for a conflict and that ran again",
            store_reruns.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "plugin_reloads",
            "Plugin versions reloaded, by outcome (loaded, failed, removed)",
            reloads.clone(),
        );
        Metrics {
            registry: r,
            plugin_calls,
            plugin_call_seconds,
            plugin_calls_in_flight,
            plugin_concurrency_limit,
            kv_keys,
            kv_bytes,
            config_updates_refused,
            provisionings,
            scheduled_rotations,
            outbound_requests,
            partner_deliveries,
            partner_owed,
            partner_owed_failed,
            releases,
            http_requests,
            http_request_seconds,
            store_write_seconds,
            store_batches,
            store_writes,
            store_wal_bytes,
            store_statements,
            store_round_trips,
            store_reruns,
            reloads,
            addons: Mutex::new(HashMap::new()),
        }
    }

    /// Add-on `addon`'s call metrics, to record its calls into.
    pub fn for_addon(&self, addon: &str) -> Arc<AddonMetrics> {
        let mut addons = self.addons.lock().unwrap_or_else(|p| p.into_inner());
        addons
            .entry(addon.to_string())
            .or_insert_with(|| {
                Arc::new(AddonMetrics {
                    addon: addon.to_string(),
                    calls: Default::default(),
                    outcomes: Default::default(),
                    window: Mutex::default(),
                    families: (self.plugin_calls.clone(), self.plugin_call_seconds.clone()),
                })
            })
            .clone()
    }

    /// Records one plugin call (the runtime records through
    /// [`Metrics::for_addon`]'s handles instead).
    pub fn plugin_call(
        &self,
        addon: &str,
        call: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.for_addon(addon)
            .record(call, outcome, Instant::now() - took, took);
    }

    /// Records one outbound HTTP request of `addon` (or the cut-off of its
    /// body), `outcome` from the fixed list of [`Metrics::outbound_requests`].
    pub fn outbound_request(&self, addon: &str, outcome: &'static str) {
        self.outbound_requests
            .get_or_create(&AddonOutcome {
                addon: addon.to_string(),
                outcome,
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An add-on's calls over the last five minutes.
    pub fn recent(&self, addon: &str) -> Recent {
        let addons = self.addons.lock().unwrap_or_else(|p| p.into_inner());
        addons
            .get(addon)
            .map(|a| {
                a.window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .recent(Instant::now())
            })
            .unwrap_or_default()
    }
}

/// An add-on's calls over the last five minutes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Recent {
    /// Calls that ended in the window, whatever their outcome.
    pub calls: u64,
    /// Of those, the calls that did not end `ok` (add-on errors, traps,
    /// timeouts, limits, rejections).
    pub errors: u64,
    /// The 99th percentile of the calls' durations, in milliseconds (the
    /// upper bound of its bucket; `None` without calls).
    pub p99_ms: Option<f64>,
}

/// Upper bounds (ms) of the window's duration buckets: 0.1 ms doubling.
const WINDOW_BUCKETS: usize = 20;
const MINUTES: usize = 5;

fn bucket_bound_ms(i: usize) -> f64 {
    0.1 * f64::from(1u32 << i)
}

#[derive(Default)]
struct Minute {
    /// Which minute (since the window's start) this slot holds.
    index: u64,
    calls: u64,
    errors: u64,
    buckets: [u64; WINDOW_BUCKETS],
}

/// Five one-minute slots, reused round-robin.
#[derive(Default)]
struct Window {
    start: Option<Instant>,
    minutes: [Minute; MINUTES],
}

impl Window {
    fn minute(&self, now: Instant) -> u64 {
        now.duration_since(self.start.unwrap_or(now)).as_secs() / 60
    }

    fn record(&mut self, now: Instant, error: bool, took: Duration) {
        if self.start.is_none() {
            self.start = Some(now);
        }
        let m = self.minute(now);
        let slot = &mut self.minutes[(m % MINUTES as u64) as usize];
        if slot.index != m || slot.calls == 0 {
            *slot = Minute {
                index: m,
                ..Minute::default()
            };
        }
        slot.calls += 1;
        slot.errors += u64::from(error);
        let ms = took.as_secs_f64() * 1000.0;
        let b = (0..WINDOW_BUCKETS)
            .find(|&i| ms <= bucket_bound_ms(i))
            .unwrap_or(WINDOW_BUCKETS - 1);
        slot.buckets[b] += 1;
    }

    fn recent(&self, now: Instant) -> Recent {
        let m = self.minute(now);
        let live = self
            .minutes
            .iter()
            .filter(|s| s.calls > 0 && m.saturating_sub(s.index) < MINUTES as u64);
        let mut r = Recent::default();
        let mut buckets = [0u64; WINDOW_BUCKETS];
        for s in live {
            r.calls += s.calls;
            r.errors += s.errors;
            for (b, n) in buckets.iter_mut().zip(s.buckets) {
                *b += n;
            }
        }
        if r.calls > 0 {
            let rank = (r.calls * 99).div_ceil(100);
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    r.p99_ms = Some(bucket_bound_ms(i));
                    break;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_five_minutes_and_its_p99() {
        let mut w = Window::default();
        let t0 = Instant::now();
        for _ in 0..99 {
            w.record(t0, false, Duration::from_micros(80));
        }
        w.record(t0, true, Duration::from_millis(50));
        let r = w.recent(t0);
        assert_eq!((r.calls, r.errors), (100, 1));
        assert_eq!(r.p99_ms, Some(0.1));
        // Six minutes later the old minute is gone.
        let later = t0 + Duration::from_secs(6 * 60);
        w.record(later, false, Duration::from_millis(3));
        let r = w.recent(later);
        assert_eq!((r.calls, r.errors), (1, 0));
        assert_eq!(r.p99_ms, Some(3.2));
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.plugin_call("kv", "provision", "ok", Duration::from_millis(2));
        m.releases.inc();
        let text = m.encode();
        assert!(
            text.contains(
                "addonhost_plugin_calls_total{addon=\"kv\",call=\"provision\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("addonhost_plugin_call_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("addonhost_releases_total 1"), "{text}");
    }
}
