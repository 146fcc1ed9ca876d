//! `config*`, `releases`, `run`, `audit`.

use clap::Args;

use super::output;
use addonhost::Host;

#[derive(Args, Debug)]
pub struct Show {
    #[arg(short, long)]
    pub app: String,
    /// One JSON object NAME → value.
    #[arg(long, conflicts_with = "shell")]
    pub json: bool,
    /// NAME='value' lines, for `eval` or a .env file.
    #[arg(long)]
    pub shell: bool,
}

#[derive(Args, Debug)]
pub struct Get {
    pub name: String,
    #[arg(short, long)]
    pub app: String,
}

#[derive(Args, Debug)]
pub struct Set {
    /// NAME=value pairs.
    #[arg(required = true)]
    pub pairs: Vec<String>,
    #[arg(short, long)]
    pub app: String,
    /// Take over vars an add-on set (the add-on can no longer update them).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct Unset {
    #[arg(required = true)]
    pub names: Vec<String>,
    #[arg(short, long)]
    pub app: String,
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct Releases {
    #[arg(short, long)]
    pub app: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Run {
    #[arg(short, long)]
    pub app: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Audit {
    #[arg(short, long)]
    pub app: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

/// `'…'` with embedded quotes escaped for POSIX shells.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

pub fn show(host: &Host, s: &Show) -> anyhow::Result<()> {
    let vars = host.config(&s.app)?;
    if s.json {
        let map: serde_json::Map<String, serde_json::Value> =
            vars.into_iter().map(|v| (v.name, v.value.into())).collect();
        return output::json(&map);
    }
    if s.shell {
        for v in vars {
            println!("{}={}", v.name, shell_quote(&v.value));
        }
        return Ok(());
    }
    println!("=== {} Config Vars", s.app);
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in vars {
        let owner = v.addon.map(|a| format!("   ({a})")).unwrap_or_default();
        println!(
            "{:width$}  {}{owner}",
            format!("{}:", v.name),
            v.value,
            width = width + 1
        );
    }
    Ok(())
}

pub fn get(host: &Host, g: &Get) -> anyhow::Result<()> {
    match host.config_get(&g.app, &g.name)? {
        Some(v) => {
            println!("{v}");
            Ok(())
        }
        None => Err(addonhost::platform::error::not_found(format!(
            "config var {} is not set on app {}",
            g.name, g.app
        ))),
    }
}

fn parse_pair(p: &str) -> anyhow::Result<(String, String)> {
    match p.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(addonhost::platform::error::invalid(format!(
            "{p:?} is not NAME=value (e.g. config:set LOG_LEVEL=debug)"
        ))),
    }
}

pub fn set(host: &Host, s: &Set) -> anyhow::Result<()> {
    let pairs = s
        .pairs
        .iter()
        .map(|p| parse_pair(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let release = host.config_set(&s.app, &pairs, s.force)?;
    println!(
        "Set {} on {} and restarted (v{})",
        pairs
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        s.app,
        release.version
    );
    Ok(())
}

pub fn unset(host: &Host, u: &Unset) -> anyhow::Result<()> {
    let release = host.config_unset(&u.app, &u.names, u.force)?;
    println!(
        "Unset {} on {} and restarted (v{})",
        u.names.join(", "),
        u.app,
        release.version
    );
    Ok(())
}

pub fn releases(host: &Host, r: &Releases) -> anyhow::Result<()> {
    let releases = host.releases(&r.app)?;
    if r.json {
        return output::json(&releases);
    }
    println!("=== {} Releases", r.app);
    output::table(
        &["Version", "Description", "By", "When"],
        releases
            .iter()
            .map(|r| {
                vec![
                    format!("v{}", r.version),
                    r.description.clone(),
                    r.actor.clone(),
                    output::when(r.created_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// Runs the command with the app's vars added to the environment and
/// returns its exit code (128 + signal when killed by one).
pub async fn run(host: &Host, r: &Run) -> anyhow::Result<i32> {
    let vars = host.config(&r.app)?;
    let (program, args) = r.command.split_first().expect("clap requires a command");
    let status = tokio::process::Command::new(program)
        .args(args)
        .envs(vars.into_iter().map(|v| (v.name, v.value)))
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {program:?}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Ok(128 + sig);
        }
    }
    Ok(status.code().unwrap_or(1))
}

pub fn audit(host: &Host, a: &Audit) -> anyhow::Result<()> {
    let entries = host.audit(a.app.as_deref(), a.limit)?;
    if a.json {
        return output::json(&entries);
    }
    output::table(
        &["When", "Actor", "Action", "App", "Add-on", "Detail"],
        entries
            .iter()
            .map(|e| {
                vec![
                    output::when(e.at),
                    e.actor.clone(),
                    e.action.clone(),
                    e.app.clone().unwrap_or_default(),
                    e.addon.clone().unwrap_or_default(),
                    e.detail.clone(),
                ]
            })
            .collect(),
    );
    Ok(())
}
