//! Provider mode from the command line: `partner:manifest` (a plugin as a
//! Heroku add-on partner ships it), `partner:pending` (what calling
//! platforms are owed and not delivered yet) and `partner:retry` (try again
//! what was given up on).

use clap::Args;
use serde_json::json;

use addonhost::Host;

#[derive(Args, Debug)]
pub struct Manifest {
    /// The add-on (a plugin loaded from --plugins).
    pub service: String,
    /// The public base URL `addonhost serve` is reached at by the platform
    /// (https://addons.example.com); the Partner API is under
    /// <url>/partner/<service> and SSO on the add-on's own origin.
    #[arg(long)]
    pub url: String,
    /// The base URL for `api.test` [default: --url].
    #[arg(long)]
    pub test_url: Option<String>,
}

/// `partner:pending`.
#[derive(Args, Debug)]
pub struct Pending {
    #[command(flatten)]
    pub json: super::output::JsonFlag,
}

/// `partner:retry`.
#[derive(Args, Debug)]
pub struct Retry {
    /// The resources (platform uuids) whose owed changes to try again
    /// [default: every one given up on].
    pub uuids: Vec<String>,
}

/// Lists what calling platforms are owed: pending, being delivered, or
/// given up on (with why); var names only, never values.
pub fn pending(host: &Host, p: &Pending) -> anyhow::Result<()> {
    let owed = host.owed()?;
    if p.json.json {
        return super::output::json(&owed);
    }
    super::output::table(
        &[
            "Resource",
            "Add-on",
            "State",
            "Owed",
            "Attempts",
            "Next",
            "Since",
            "Last error",
        ],
        owed.iter()
            .map(|o| {
                let mut what = o.vars.join(", ");
                if o.completion {
                    what = match what.is_empty() {
                        true => "provisioned".into(),
                        false => format!("{what}; provisioned"),
                    };
                }
                vec![
                    format!(
                        "{}{}",
                        o.uuid,
                        o.resource
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ),
                    o.addon.clone(),
                    o.state.to_string(),
                    what,
                    o.attempts.to_string(),
                    match o.state {
                        "failed" => "on partner:retry".into(),
                        _ => super::output::when(o.due_at),
                    },
                    super::output::when(o.since),
                    o.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// Makes what was given up on due again; a running `serve` delivers it.
pub async fn retry(host: &Host, r: &Retry) -> anyhow::Result<()> {
    let n = host.retry_owed(&r.uuids).await?;
    match n {
        0 => println!(
            "Nothing given up on to retry (`addonhost partner:pending` lists what is owed)"
        ),
        1 => println!("1 owed change will be delivered again by a running server"),
        n => println!("{n} owed changes will be delivered again by a running server"),
    }
    Ok(())
}

/// Prints the manifest Heroku's tooling takes (`api.production`,
/// `api.test`, the vars, secrets, regions and requirements).
pub fn manifest(host: &Host, a: &Manifest) -> anyhow::Result<()> {
    let s = host.service(&a.service)?;
    let m = &s.manifest;
    if m.remote.is_some() {
        return Err(addonhost::platform::error::invalid(format!(
            "add-on {} is remote here: its provider ships its own manifest",
            m.id
        )));
    }
    let endpoints = |base: &str| {
        let base = base.trim_end_matches('/');
        let mut opts = host.options().clone();
        opts.public_url = base.to_string();
        json!({
            "base_url": format!("{base}/partner/{}/heroku/resources", m.id),
            "sso_url": format!("{}/sso/login", addonhost::platform::addon_origin(&opts, &m.id)),
        })
    };
    // Heroku refuses a manifest whose production URLs are not https (its
    // checks say so only when it is pushed): said here, before.
    if url::Url::parse(&a.url).is_ok_and(|u| u.scheme() == "http") {
        eprintln!(
            "warning: api.production would be plain http ({}): Heroku requires https for a \
             production add-on. Put this server behind TLS and pass --url https://…",
            a.url
        );
    }
    let manifest = json!({
        "id": m.id,
        "name": m.name,
        "api": {
            "config_vars_prefix": m.api.config_vars_prefix,
            "config_vars": m.api.config_vars,
            "password": m.api.password,
            "sso_salt": m.api.sso_salt,
            "regions": m.api.regions,
            "requires": m.api.requires,
            "production": endpoints(&a.url),
            "test": endpoints(a.test_url.as_deref().unwrap_or(&a.url)),
            "version": "3",
        },
    });
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}
