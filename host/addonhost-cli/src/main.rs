//! The `addonhost` command.

use clap::Parser;

use addonhost::platform::error::{kind_of, Kind};
use addonhost_cli::cli::{self, Cli};

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADDONHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("ADDONHOST_LOG_FORMAT").is_ok_and(|f| f == "json") {
        // One JSON object per line, with the fields of the spans it was
        // logged in (the request id, the add-on and the call).
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let code = match runtime.block_on(cli::run(cli)) {
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
