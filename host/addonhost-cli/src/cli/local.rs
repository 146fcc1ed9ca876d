//! `local`: run an app's Procfile processes with its config vars, like
//! `heroku local`, and restart them when a new release of the app appears —
//! however it was made (the CLI in another terminal, the server, a scheduled
//! rotation). A process that read its password once at start is restarted
//! with the new one instead of failing after a credential roll.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use addonhost::Host;

#[derive(Args, Debug)]
pub struct Local {
    #[arg(short, long)]
    pub app: String,
    /// The Procfile: `name: command` lines.
    #[arg(short = 'f', long, default_value = "Procfile")]
    pub procfile: PathBuf,
    /// How often to look for a new release, in milliseconds: 200 by
    /// default; 5,000 where the database announces each release (PostgreSQL
    /// with LISTEN), the look then only backing the announcements up. There,
    /// 0 means never to look: announcements only.
    #[arg(long)]
    pub poll_ms: Option<u64>,
}

/// `name: command` pairs of a Procfile.
pub fn parse_procfile(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, cmd)) if !name.trim().is_empty() && !cmd.trim().is_empty() => {
                let name = name.trim();
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    bail!("Procfile line {}: process name {name:?} may only hold letters, digits, - and _", i + 1);
                }
                out.push((name.to_string(), cmd.trim().to_string()));
            }
            _ => bail!(
                "Procfile line {}: expected `name: command`, got {line:?}",
                i + 1
            ),
        }
    }
    if out.is_empty() {
        bail!("the Procfile lists no processes");
    }
    Ok(out)
}

fn spawn(name: &str, cmd: &str, env: &[(String, String)]) -> anyhow::Result<Child> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    #[cfg(unix)]
    c.process_group(0);
    let mut child = c
        .spawn()
        .with_context(|| format!("starting {name}: {cmd}"))?;
    let width = 10;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{name:<width$}| {line}");
            }
        });
    }
    Ok(child)
}

/// Sends `signal` to the process group `pid` leads (its shell and whatever
/// the shell started). Only for our own children, which lead their groups.
#[cfg(unix)]
fn signal_group(pid: u32, signal: libc::c_int) {
    // A group id of 0 or 1 would mean "our group" or "every process".
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        if pgid > 1 {
            // SAFETY: killpg only sends a signal; pgid is a child we spawned
            // with process_group(0), so the group is exactly that child's.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }
}

/// Stops a process and its children: SIGTERM to its group, SIGKILL after
/// 500 ms.
async fn stop(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(Duration::from_millis(500), child.wait())
            .await
            .is_ok()
        {
            return;
        }
        signal_group(pid, libc::SIGKILL);
    }
    let _ = child.kill().await;
    let _ = child.wait().await;
}

/// The app's latest release: (version, description, environment).
type Current = (i64, String, Vec<(String, String)>);

fn current(host: &Host, app: &str) -> anyhow::Result<Current> {
    let release = host
        .releases(app)?
        .into_iter()
        .next()
        .context("the app has no release")?;
    let env = host
        .config(app)?
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect();
    Ok((release.version, release.description, env))
}

pub async fn run(host: &Host, l: &Local) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&l.procfile)
        .with_context(|| format!("cannot read {}", l.procfile.display()))?;
    let procs = parse_procfile(&text)?;
    // On PostgreSQL the database announces each release as it commits;
    // polling then only backs that up.
    let mut releases = host.subscribe_releases();
    let poll = match (&releases, l.poll_ms) {
        // Announcements only.
        (Some(_), Some(0)) => None,
        (Some(_), ms) => Some(Duration::from_millis(ms.unwrap_or(5000).max(20))),
        (None, Some(0)) => bail!(
            "--poll-ms 0 (announcements only) needs a store that announces new releases: \
             PostgreSQL, reached directly or with --database-listen-url"
        ),
        (None, ms) => Some(Duration::from_millis(ms.unwrap_or(200).max(20))),
    };
    if let (None, true, Some(poll)) = (&releases, host.shared_store(), poll) {
        println!(
            "local: the database is reached through a pooler and no --database-listen-url is given: \
             looking for new releases every {} ms",
            poll.as_millis()
        );
    }
    let mut ticker = poll.map(tokio::time::interval);
    let (mut version, description, env) = current(host, &l.app)?;
    println!("local: {} on release v{version} ({description})", l.app);
    let mut children = Vec::new();
    for (name, cmd) in &procs {
        children.push(spawn(name, cmd, &env)?);
    }
    let ctrl_c = super::signal::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                for c in children.iter_mut() {
                    stop(c).await;
                }
                return Ok(0);
            }
            _ = announced(&mut releases, &l.app) => {}
            _ = tick(&mut ticker) => {}
        }
        let (latest, description, env) = match current(host, &l.app) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("local: {e:#}");
                continue;
            }
        };
        if latest == version {
            continue;
        }
        version = latest;
        println!("local: release v{version} ({description}): restarting");
        for c in children.iter_mut() {
            stop(c).await;
        }
        children.clear();
        for (name, cmd) in &procs {
            children.push(spawn(name, cmd, &env)?);
        }
    }
}

/// Resolves at the ticker's next tick; never without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the store announces a release of `app` (or asks everyone
/// to look); never without a subscription.
async fn announced(releases: &mut Option<tokio::sync::broadcast::Receiver<String>>, app: &str) {
    let Some(rx) = releases else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(name) if name.is_empty() || name == app => return,
            Ok(_) => {}
            // Missed some: one of them may be ours.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *releases = None;
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_procfile;

    #[test]
    fn procfile_lines_are_parsed_and_bad_ones_named() {
        let p = parse_procfile("# comment\nweb: ./server --port 5000\n\nworker:  sh -c 'x: y'\n")
            .unwrap();
        assert_eq!(
            p,
            vec![
                ("web".into(), "./server --port 5000".into()),
                ("worker".into(), "sh -c 'x: y'".into())
            ]
        );
        assert!(parse_procfile("web ./server")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        assert!(parse_procfile("\n").is_err());
    }
}
