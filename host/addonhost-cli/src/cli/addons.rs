//! `addons:*`: the catalog and the add-on lifecycle.

use clap::Args;

use super::output::{self, JsonFlag};
use addonhost::platform::{AddonChanged, AddonView, CreateAddon};
use addonhost::Host;

#[derive(Args, Debug)]
pub struct Plans {
    pub service: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Create {
    /// SERVICE or SERVICE:PLAN, e.g. kv:mini.
    pub spec: String,
    #[arg(short, long)]
    pub app: String,
    /// Attachment name; config vars appear under it (CACHE → CACHE_URL).
    #[arg(long = "as")]
    pub as_name: Option<String>,
    /// Idempotency key: a retry with the same uuid returns the same add-on.
    #[arg(long)]
    pub uuid: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Options for the add-on after `--`: `-- --key value --flag`.
    #[arg(last = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

#[derive(Args, Debug)]
pub struct List {
    #[arg(short, long)]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Info {
    /// Add-on name (kv-shaped-48213), uuid, or attachment name with -a.
    pub addon: String,
    #[arg(short, long)]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Upgrade {
    pub addon: String,
    /// The new plan: SERVICE:PLAN or PLAN.
    pub spec: String,
    #[arg(short, long)]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Rotate {
    pub addon: String,
    #[arg(short, long)]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Destroy {
    pub addon: String,
    #[arg(short, long)]
    pub app: Option<String>,
    /// The owning app's name, to confirm.
    #[arg(long)]
    pub confirm: Option<String>,
}

/// `--key value --flag --k=v` → [(key, value), (flag, "true"), (k, v)].
pub fn parse_options(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(key) = args[i].strip_prefix("--").filter(|k| !k.is_empty()) else {
            anyhow::bail!(
                "add-on option {:?} must look like --key value (after a bare --)",
                args[i]
            );
        };
        if let Some((k, v)) = key.split_once('=') {
            out.push((k.to_string(), v.to_string()));
            i += 1;
        } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
            out.push((key.to_string(), args[i + 1].clone()));
            i += 2;
        } else {
            out.push((key.to_string(), "true".to_string()));
            i += 1;
        }
    }
    Ok(out)
}

pub fn services(host: &Host, j: &JsonFlag) -> anyhow::Result<()> {
    let services = host.services();
    if j.json {
        return output::json(&services);
    }
    output::table(
        &["Service", "Name", "Plans", "Config vars"],
        services
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone(),
                    s.plans
                        .iter()
                        .map(|p| {
                            if p.default {
                                format!("{} (default)", p.id)
                            } else {
                                p.id.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.config_vars.join(", "),
                ]
            })
            .collect(),
    );
    for b in &host.catalog().broken {
        eprintln!("warning: {}: {}", b.dir.display(), b.error);
    }
    Ok(())
}

pub fn plans(host: &Host, p: &Plans) -> anyhow::Result<()> {
    let service = host.service(&p.service)?;
    let plans = &service.manifest.plans;
    if p.json {
        return output::json(plans);
    }
    output::table(
        &["Plan", "Name", "Default"],
        plans
            .iter()
            .map(|pl| {
                vec![
                    format!("{}:{}", p.service, pl.id),
                    pl.name.clone(),
                    if pl.default {
                        "yes".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect(),
    );
    Ok(())
}

pub async fn create(host: &Host, c: &Create) -> anyhow::Result<()> {
    let created = host
        .create_addon(CreateAddon {
            app: c.app.clone(),
            spec: c.spec.clone(),
            as_name: c.as_name.clone(),
            options: parse_options(&c.options)?,
            uuid: c.uuid.clone(),
            actor: None,
        })
        .await?;
    if c.json {
        return output::json(&created);
    }
    let a = &created.addon;
    let verb = if created.existing {
        "Already provisioned"
    } else {
        "Created"
    };
    println!(
        "{verb} {} ({}:{}) on {} as {} — {}",
        a.name,
        a.service,
        a.plan,
        a.app,
        a.attachments
            .first()
            .map(|s| s.rsplit("::").next().unwrap_or(s))
            .unwrap_or("-"),
        a.state
    );
    for (name, value) in &created.config {
        println!("  {name}: {}", output::mask(value));
    }
    if let Some(m) = &created.message {
        println!("{m}");
    }
    Ok(())
}

fn addon_rows(addons: &[AddonView]) -> Vec<Vec<String>> {
    addons
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                format!("{}:{}", a.service, a.plan),
                a.attachments.join(", "),
                a.state.to_string(),
            ]
        })
        .collect()
}

pub fn list(host: &Host, l: &List) -> anyhow::Result<()> {
    let addons = host.addons(l.app.as_deref())?;
    if l.json {
        return output::json(&addons);
    }
    if addons.is_empty() {
        println!(
            "No add-ons{}.",
            l.app
                .as_ref()
                .map(|a| format!(" on {a}"))
                .unwrap_or_default()
        );
    }
    output::table(
        &["Add-on", "Plan", "Attachments", "State"],
        addon_rows(&addons),
    );
    Ok(())
}

pub fn info(host: &Host, i: &Info) -> anyhow::Result<()> {
    let a = host.addon_info(&i.addon, i.app.as_deref())?;
    if i.json {
        return output::json(&a);
    }
    println!("=== {}", a.name);
    println!("Service:      {}", a.service);
    println!("Plan:         {}", a.plan);
    println!("State:        {}", a.state);
    println!("Owning app:   {}", a.app);
    println!("Attachments:  {}", a.attachments.join(", "));
    println!("Config vars:  {}", a.config_vars.join(", "));
    println!("UUID:         {}", a.uuid);
    println!("Add-on id:    {}", a.addon_id.as_deref().unwrap_or("-"));
    println!("Created:      {}", output::when(a.created_at));
    let rot = &a.rotation;
    match rot.last_rotated_at {
        Some(at) => println!("Rotated:      {}", output::when(at)),
        None => println!("Rotated:      never"),
    }
    if let Some(until) = rot.previous_expires_at {
        let state = if until > addonhost::util::unix_now() {
            "valid until"
        } else {
            "expired at"
        };
        println!("Previous credential: {state} {}", output::when(until));
    }
    if let Some(every) = rot.every_seconds {
        println!(
            "Rotation schedule: every {every} s, next {}",
            rot.next_at.map(output::when).unwrap_or_else(|| "-".into())
        );
    }
    if let Some(e) = &rot.error {
        println!("Rotation failing ({} times): {e}", rot.failures);
    }
    if let Some(m) = &a.message {
        println!("Message:      {m}");
    }
    Ok(())
}

fn print_change(verb: &str, c: &AddonChanged, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(c);
    }
    let release = c
        .release
        .map(|v| format!(" (release v{v})"))
        .unwrap_or_default();
    println!("{verb} {}{release}", c.addon.name);
    if !c.changed.is_empty() {
        println!("  changed: {}", c.changed.join(", "));
    }
    Ok(())
}

pub async fn upgrade(host: &Host, u: &Upgrade) -> anyhow::Result<()> {
    let c = host
        .upgrade_addon(&u.addon, &u.spec, u.app.as_deref())
        .await?;
    print_change(
        &format!("Changed plan to {}:{} for", c.addon.service, c.addon.plan),
        &c,
        u.json,
    )
}

pub async fn rotate(host: &Host, r: &Rotate) -> anyhow::Result<()> {
    let c = host.rotate_addon(&r.addon, r.app.as_deref()).await?;
    print_change("Rotated credentials of", &c, r.json)
}

pub async fn destroy(host: &Host, d: &Destroy) -> anyhow::Result<()> {
    let c = host
        .destroy_addon(&d.addon, d.app.as_deref(), d.confirm.as_deref())
        .await?;
    print_change("Destroyed", &c, false)
}

#[cfg(test)]
mod tests {
    use super::parse_options;

    #[test]
    fn options_take_values_flags_and_equals() {
        let args: Vec<String> = ["--size", "10", "--fast", "--k=v"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_options(&args).unwrap(),
            vec![
                ("size".into(), "10".into()),
                ("fast".into(), "true".into()),
                ("k".into(), "v".into())
            ]
        );
        assert!(parse_options(&["size".to_string()]).is_err());
    }
}
