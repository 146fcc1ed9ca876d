//! The `addonhost` command.

use clap::Parser;

use addonhost::platform::error::{kind_of, Kind};
use addonhost_cli::cli::{self, Cli};

fn main() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADDONHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // stderr gets what ADDONHOST_LOG asks; the hub, what `GET /api/logs`
    // clients ask, whatever ADDONHOST_LOG says (each with its own filter).
    let hub = addonhost_server::logs::LogHub::new();
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if std::env::var("ADDONHOST_LOG_FORMAT").is_ok_and(|f| f == "json") {
        // One JSON object per line, with the fields of the spans it was
        // logged in (the request id, the add-on and the call).
        let stderr = stderr
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter);
        tracing_subscriber::registry()
            .with(stderr)
            .with(hub.layer())
            .init();
    } else {
        let stderr = stderr
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter);
        tracing_subscriber::registry()
            .with(stderr)
            .with(hub.layer())
            .init();
    }
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // A development and test knob, not an operator's: with one worker
    // thread only the runtime's yielding (a busy plugin yields every epoch
    // tick) keeps the server answering while a plugin spins.
    if let Some(n) = worker_threads() {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let code = match runtime.block_on(cli::run(cli, hub)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            match kind_of(&e) {
                Some(Kind::NotFound) => 3,
                Some(Kind::Conflict) => 4,
                Some(Kind::Invalid | Kind::Unauthorized) => 2,
                Some(Kind::Addon) => 5,
                Some(Kind::Busy | Kind::Unavailable | Kind::RateLimited) => 6,
                None => 1,
            }
        }
    };
    std::process::exit(code);
}

/// `ADDONHOST_WORKER_THREADS`: how many worker threads the tokio runtime
/// runs (tokio's default: one per core). Unset, empty or not a positive
/// number: the default, with a warning for a bad value.
fn worker_threads() -> Option<usize> {
    let raw = std::env::var("ADDONHOST_WORKER_THREADS").ok()?;
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ if raw.trim().is_empty() => None,
        _ => {
            tracing::warn!(
                "ADDONHOST_WORKER_THREADS={raw:?} is not a positive number of threads; using one per core"
            );
            None
        }
    }
}
