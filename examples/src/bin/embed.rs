//! Embedding addonhost: a platform of your own in a few lines.
//!
//! Opens a host on a data dir, creates an app, provisions the example `kv`
//! add-on (a sandboxed WASM plugin) and prints the config var it set.
//!
//! ```sh
//! cargo run -p addonhost-examples --bin embed -- /tmp/embedded-data plugins
//! ```

use addonhost::platform::CreateAddon;
use addonhost::{Host, HostOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| ".addonhost-embed".into());
    let plugins = args.next().unwrap_or_else(|| "plugins".into());

    let host = Host::open(HostOptions::new(data, vec![plugins.into()]))?;
    if host.apps()?.iter().all(|a| a.name != "embedded") {
        host.create_app("embedded", None)?;
    }
    let created = host
        .create_addon(CreateAddon {
            app: "embedded".into(),
            spec: "kv:mini".into(),
            ..Default::default()
        })
        .await?;
    println!(
        "provisioned {} ({})",
        created.addon.name, created.addon.state
    );
    for var in host.config("embedded")? {
        println!("{}={}", var.name, var.value);
    }
    Ok(())
}
