//! `plugins`, `plugins:new`, `plugins:build`, `plugins:dev`, `plugins:check`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::output::{self, JsonFlag};
use super::Cli;
use crate::authoring;
use addonhost::Host;

#[derive(Args, Debug)]
pub struct Build {
    /// Add-on folders (with addon-manifest.json); every discovered plugin
    /// folder when none are given.
    pub dirs: Vec<PathBuf>,
}

pub fn list(host: &Host, j: &JsonFlag) -> anyhow::Result<()> {
    let rows = host.plugin_statuses();
    if j.json {
        return output::json(&rows);
    }
    output::table(
        &[
            "Plugin",
            "Name",
            "Language",
            "Component",
            "Loaded",
            "Storage",
            "Outbound",
            "Status",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.name.clone(),
                    match (&r.remote, r.language) {
                        (Some(_), _) => "remote".to_string(),
                        (None, l) => l.map_or("unknown", |l| l.name()).to_string(),
                    },
                    r.component_hash.clone().unwrap_or_else(|| "-".into()),
                    r.loaded_at.map(output::when).unwrap_or_else(|| "-".into()),
                    r.storage
                        .map(|s| {
                            format!(
                                "{} keys, {} of {}",
                                s.keys,
                                output::bytes(s.bytes),
                                output::bytes(s.quota_bytes)
                            )
                        })
                        .unwrap_or_else(|| "-".into()),
                    r.outbound
                        .as_ref()
                        .map(outbound_cell)
                        .unwrap_or_else(|| "-".into()),
                    match (&r.error, &r.remote) {
                        (Some(e), _) => format!("{}: {e}", r.status),
                        (None, Some(url)) => format!("{} ({url})", r.status),
                        (None, None) => r.status.clone(),
                    },
                ]
            })
            .collect(),
    );
    Ok(())
}

/// The hosts an add-on may reach, what the operator took away, and what
/// it declares that the operator has not granted.
fn outbound_cell(o: &addonhost::platform::OutboundView) -> String {
    let allowed = o.allowed.describe();
    let cell = match o.narrowed_by {
        Some(option) if o.allowed.is_empty() => {
            format!("none ({option}; declares {})", o.declared.describe())
        }
        Some(option) => format!("{allowed} ({option}; declares {})", o.declared.describe()),
        None => allowed,
    };
    match o.not_granted.is_empty() {
        true => cell,
        false => format!(
            "{cell} (not granted: {}; see --outbound-grant)",
            o.not_granted.describe()
        ),
    }
}

#[derive(Args, Debug)]
pub struct Trust {
    /// The add-on folder to bind to its id in this data dir.
    pub dir: PathBuf,
}

/// `plugins:trust DIR`: the operator confirms that the add-on in DIR may
/// serve its id (and with it that id's resources, vars and KV).
pub fn trust(host: &Host, t: &Trust) -> anyhow::Result<()> {
    let id = host.trust(&t.dir)?;
    println!(
        "{} may now serve add-on {id} in this data dir",
        t.dir.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct Deploy {
    /// The add-on folder whose built component every server may serve.
    pub dir: PathBuf,
    /// Accept this component alone: servers still running another stop
    /// serving the add-on (the end of a rolling deploy).
    #[arg(long)]
    pub only: bool,
}

/// `plugins:deploy DIR [--only]`: on a shared database, accept DIR's
/// component for every server.
pub fn deploy(host: &Host, d: &Deploy) -> anyhow::Result<()> {
    if !host.shared_store() {
        anyhow::bail!(
            "plugins:deploy is for servers sharing a PostgreSQL database (--database); \
             with the SQLite data dir, the one server serves whatever its folder holds"
        );
    }
    let (id, hash, retired) = host.deploy_component(&d.dir, d.only)?;
    println!("add-on {id}: component {} accepted", &hash[..16]);
    if d.only {
        println!("add-on {id}: {retired} other component(s) retired; servers still running one stop serving {id}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct Check {
    /// The add-on folder (with addon-manifest.json and its built component).
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Provisioning options after `--`: `-- --key value`.
    #[arg(last = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

/// Runs the conformance checks; exit code 1 when any fails.
pub async fn check(cli: &Cli, c: &Check) -> anyhow::Result<i32> {
    let options = super::addons::parse_options(&c.options)?;
    let host_options = cli.options()?;
    let results = crate::check::check(
        &c.dir,
        options,
        Some(addonhost::runtime::ArtifactCache::new(
            cli.data.join("cache"),
        )),
        &host_options.outbound,
        &host_options.trust,
    )
    .await;
    let failed = results.iter().filter(|r| !r.passed).count();
    if c.json {
        output::json(&serde_json::json!({"passed": failed == 0, "checks": results}))?;
    } else {
        for r in &results {
            println!(
                "{} {:<48} {}",
                if r.passed { "✓" } else { "✗" },
                r.name,
                r.detail
            );
        }
        println!(
            "\n{} of {} checks passed",
            results.len() - failed,
            results.len()
        );
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

pub fn build(cli: &Cli, b: &Build) -> anyhow::Result<()> {
    let dirs = if b.dirs.is_empty() {
        let roots: Vec<PathBuf> = std::env::split_paths(&cli.plugins).collect();
        let catalog = addonhost::platform::Catalog::discover(&roots, &cli.options()?.policy);
        // Remote add-ons have nothing to build.
        let mut dirs: Vec<PathBuf> = catalog
            .services()
            .filter(|s| !s.is_remote())
            .map(|s| s.manifest.dir.clone())
            .collect();
        dirs.extend(catalog.broken.iter().map(|b| b.dir.clone()));
        if dirs.is_empty() {
            bail!(
                "no add-on folders found under {}; pass folders to build",
                cli.plugins
            );
        }
        dirs
    } else {
        b.dirs.clone()
    };
    for dir in &dirs {
        authoring::build(dir)?;
    }
    Ok(())
}

/// A language on the command line: its name or an alias (`rs`, `py`,
/// `javascript`), listed in `--help`.
#[derive(Debug, Clone, Copy)]
pub struct LanguageArg(pub authoring::Language);

impl clap::ValueEnum for LanguageArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            LanguageArg(authoring::Language::Rust),
            LanguageArg(authoring::Language::Python),
            LanguageArg(authoring::Language::Js),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(
            clap::builder::PossibleValue::new(self.0.name())
                .aliases(self.0.aliases().iter().copied()),
        )
    }
}

#[derive(Args, Debug)]
pub struct New {
    /// The add-on's id: lowercase letters, digits and dashes (`my-cache`).
    pub name: String,
    /// The language to write it in.
    #[arg(long)]
    pub lang: LanguageArg,
    /// The folder to create it in (as DIR/NAME).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

pub fn new(n: &New) -> anyhow::Result<()> {
    let lang = n.lang.0;
    let dir = authoring::scaffold::new(&n.name, lang, &n.dir)?;
    println!("Created {} ({}) in {}", n.name, lang.name(), dir.display());
    println!("Next:");
    println!("  addonhost plugins:build {}", dir.display());
    println!("  addonhost plugins:check {}", dir.display());
    println!(
        "  addonhost plugins:dev {}    # rebuild on save; `addonhost serve` reloads it",
        dir.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct Dev {
    /// The add-on folder to watch and rebuild.
    pub dir: PathBuf,
    /// Stop after this many builds (the first one included).
    #[arg(long, hide = true)]
    pub max_builds: Option<usize>,
    /// Do not show the add-on's log lines and calls from the running
    /// server (--url).
    #[arg(long)]
    pub no_logs: bool,
}

pub fn dev(cli: &Cli, d: &Dev) -> anyhow::Result<()> {
    // The add-on's log lines and calls, from the server --url names.
    let logs = (!d.no_logs)
        .then(|| super::logs::Target::of(cli))
        .transpose()?;
    authoring::dev::run(&d.dir, d.max_builds, logs)
}
