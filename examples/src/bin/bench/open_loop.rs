//! Provisioning latency at a given load: requests sent at a fixed rate, each
//! timed from the moment it was due, against addonhost and bare SQLite.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::platform::{baseline_provision, rand_u64, sqlite_apps, Conn, Server};
use crate::{ms, ratio, row, Opts, Row};

/// Latency percentiles of an open-loop run, each request timed from the
/// moment it was due.
pub struct OpenLoop {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub failed: usize,
    pub first_failure: Option<String>,
}

/// Senders of an open-loop run: enough that a request rarely waits for a
/// free one at these rates (when it does, the wait counts in its latency).
const OPEN_LOOP_SENDERS: usize = 64;

/// Sends requests at `rate` per second for `duration`: request k is due at
/// start + k / rate whatever became of the earlier ones (an open loop: a
/// slow answer does not slow the arrivals), and is timed from then, so any
/// queueing — for a sender, a connection, the server — is in its latency
/// (no coordinated omission). Each of `senders` (a thread each) takes the
/// next request due; `send(k)` makes request k and says what failed.
fn open_loop<S>(rate: f64, duration: Duration, senders: Vec<S>) -> anyhow::Result<OpenLoop>
where
    S: FnMut(usize) -> anyhow::Result<Option<String>> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let threads: Vec<_> = senders
        .into_iter()
        .map(|mut send| {
            let next = next.clone();
            std::thread::spawn(
                move || -> anyhow::Result<(Vec<Duration>, usize, Option<String>)> {
                    let mut lat = Vec::new();
                    let (mut failed, mut first_failure) = (0, None);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if k >= total {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(k as f64 / rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if let Some(failure) = send(k)? {
                            failed += 1;
                            first_failure.get_or_insert(failure);
                        }
                        lat.push(due.elapsed());
                    }
                    Ok((lat, failed, first_failure))
                },
            )
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    let (mut failed, mut first_failure) = (0, None);
    for t in threads {
        let (lat, f, first) = t.join().expect("open-loop sender")?;
        all.extend(lat);
        failed += f;
        first_failure = first_failure.or(first);
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok(OpenLoop {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        failed,
        first_failure,
    })
}

/// Provisioning over HTTP at a fixed `rate` (see [`open_loop`]): each
/// sender provisions onto an app of its own through `POST
/// /api/apps/:app/addons`.
pub fn provisioning_open_loop(
    server: &Server,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<OpenLoop> {
    let auth = server.auth();
    let run = format!("o{:x}", rand_u64());
    let mut senders = Vec::new();
    for c in 0..OPEN_LOOP_SENDERS {
        let mut conn = Conn::connect(&server.addr)?;
        let app = format!("{run}-{c}");
        let (status, text) = conn.request(
            "POST",
            "/api/apps",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            format!(r#"{{"name": "{app}"}}"#).as_bytes(),
        )?;
        if status != 201 {
            bail!(
                "creating an app: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        let auth = auth.clone();
        senders.push(move |k: usize| -> anyhow::Result<Option<String>> {
            let body = format!(r#"{{"plan": "kv:mini", "as": "K{k}"}}"#);
            let (status, text) = conn.request(
                "POST",
                &format!("/api/apps/{app}/addons"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.as_bytes(),
            )?;
            Ok((status != 201).then(|| format!("{status} {}", String::from_utf8_lossy(&text))))
        });
    }
    open_loop(rate, duration, senders)
}

/// The baseline of [`provisioning_open_loop`]: the bare SQLite transactions
/// of [`sqlite_baseline`] at the same fixed rate, a connection per sender.
pub fn sqlite_open_loop(dir: &Path, rate: f64, duration: Duration) -> anyhow::Result<OpenLoop> {
    let open = sqlite_apps(dir, OPEN_LOOP_SENDERS)?;
    let mut senders = Vec::new();
    for c in 0..OPEN_LOOP_SENDERS {
        let mut conn = open()?;
        let app: i64 = conn.query_row(
            "SELECT id FROM apps WHERE name = ?1",
            [format!("base-{c}")],
            |r| r.get(0),
        )?;
        senders.push(move |k: usize| -> anyhow::Result<Option<String>> {
            baseline_provision(&mut conn, app, &format!("{k}-{:x}", rand_u64()), k)?;
            Ok(None)
        });
    }
    open_loop(rate, duration, senders)
}

/// Provisioning latency open loop: requests sent at 25, 50 and 80 % of the
/// maximum rate, each timed from the moment it was due, against bare SQLite
/// transactions of the same shape sent at the same rates.
pub fn rows(opts: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let kv_only = crate::plugin_copies(&tmp.join("lat"), &["kv"])?;
    let server = crate::platform::Server::start(&tmp.join("latency"), kv_only.to_str().unwrap())?;
    let seconds = Duration::from_secs_f64(if opts.quick { 0.5 } else { 5.0 });
    // The rates are fractions of the maximum the server sustains for as long
    // as one open-loop run lasts: a short burst (a few thousand
    // provisionings, well under a second) runs ~30 % faster than the same
    // clients sustain over seconds, when the write-ahead log's checkpoints and
    // rewinds come due, and "50 %" of it would be ~70 % of what the server
    // can keep up.
    eprintln!(
        "bench: the sustained maximum provisioning rate (32 clients, closed loop, {:.1} s)",
        seconds.as_secs_f64()
    );
    let burst = crate::platform::provisioning(&server, 32, if opts.quick { 1 } else { 100 })?;
    anyhow::ensure!(
        burst.failed == 0,
        "provisionings failed: {:?}",
        burst.first_failure
    );
    let per_client = (burst.per_second * seconds.as_secs_f64() / 32.0).ceil() as usize;
    let max_rate = crate::platform::provisioning(&server, 32, per_client.max(1))?.per_second;
    rows.push(row(
        format!(
            "sustained maximum: provisions/s over {:.0} s, 32 clients (closed loop)",
            seconds.as_secs_f64()
        ),
        format!("{max_rate:.0}/s"),
        format!("{:.0}/s in a burst of 3,200", burst.per_second),
        "",
        "",
    ));
    for percent in [25, 50, 80] {
        let rate = max_rate * percent as f64 / 100.0;
        eprintln!("bench: provisioning open loop at {rate:.0}/s ({percent} % of {max_rate:.0}/s)");
        let ours = provisioning_open_loop(&server, rate, seconds)?;
        anyhow::ensure!(
            ours.failed == 0,
            "{} provisionings failed at {rate:.0}/s, the first with {}",
            ours.failed,
            ours.first_failure.as_deref().unwrap_or("?")
        );
        let base_dir = tempfile::tempdir()?;
        let base = sqlite_open_loop(base_dir.path(), rate, seconds)?;
        let three = |l: &OpenLoop| format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.p999));
        rows.push(row(
            format!(
                "provisioning latency p50 / p99 / p99.9 at {percent} % of max ({rate:.0}/s, open loop)"
            ),
            three(&ours),
            format!("{} SQLite", three(&base)),
            ratio(ours.p99.as_secs_f64(), base.p99.as_secs_f64()),
            if percent == 50 { "p99 ≤ 5 ms" } else { "" },
        ));
        if percent == 50 {
            // What the same senders measure against a request that does
            // nothing: the part of the latency that is this machine's (the
            // two cores shared by the senders and the server, thread
            // wake-ups), not the provisioning's.
            let floor = healthz_open_loop(&server, rate, seconds)?;
            rows.push(row(
                format!("  the same open loop on GET /healthz ({rate:.0}/s): the harness floor"),
                three(&floor),
                "",
                "",
                "",
            ));
        }
    }
    Ok(())
}

/// `GET /healthz` (no add-on, no store) at a fixed `rate`, sent and timed as
/// [`provisioning_open_loop`] sends and times its requests.
fn healthz_open_loop(server: &Server, rate: f64, duration: Duration) -> anyhow::Result<OpenLoop> {
    let mut senders = Vec::new();
    for _ in 0..OPEN_LOOP_SENDERS {
        let mut conn = Conn::connect(&server.addr)?;
        senders.push(move |_k: usize| -> anyhow::Result<Option<String>> {
            let (status, _) = conn.get("/healthz", &[])?;
            Ok((status != 200).then(|| format!("{status}")))
        });
    }
    open_loop(rate, duration, senders)
}
