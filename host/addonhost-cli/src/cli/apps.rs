//! `apps`, `apps:create`, `apps:info`, `apps:destroy`.

use clap::Args;

use super::output::{self, JsonFlag};
use addonhost::Host;

#[derive(Args, Debug)]
pub struct Create {
    /// App name: lowercase letters, digits and dashes.
    pub name: String,
    /// Region: us or eu.
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Info {
    #[arg(short, long)]
    pub app: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Destroy {
    #[arg(short, long)]
    pub app: String,
    /// The app's name again, to confirm.
    #[arg(long)]
    pub confirm: Option<String>,
}

pub fn list(host: &Host, j: &JsonFlag) -> anyhow::Result<()> {
    let apps = host.apps()?;
    if j.json {
        return output::json(&apps);
    }
    if apps.is_empty() {
        println!("No apps yet. Create one with `addonhost apps:create NAME`.");
    }
    output::table(
        &["App", "Region", "Created"],
        apps.iter()
            .map(|a| vec![a.name.clone(), a.region.clone(), output::when(a.created_at)])
            .collect(),
    );
    Ok(())
}

pub fn create(host: &Host, c: &Create) -> anyhow::Result<()> {
    let app = host.create_app(&c.name, c.region.as_deref())?;
    if c.json {
        return output::json(&app);
    }
    println!(
        "Created app {} in region {} (v1: Initial release)",
        app.name, app.region
    );
    Ok(())
}

pub fn info(host: &Host, i: &Info) -> anyhow::Result<()> {
    let info = host.app_info(&i.app)?;
    if i.json {
        return output::json(&info);
    }
    println!("=== {}", info.app.name);
    println!("Region:       {}", info.app.region);
    println!("Created:      {}", output::when(info.app.created_at));
    println!("Release:      v{}", info.release);
    println!("Config vars:  {}", info.config_vars);
    println!(
        "Add-ons:      {}",
        if info.addons.is_empty() {
            "none".to_string()
        } else {
            info.addons
                .iter()
                .map(|a| format!("{} ({}:{}, {})", a.name, a.service, a.plan, a.state))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(())
}

pub async fn destroy(host: &Host, d: &Destroy) -> anyhow::Result<()> {
    host.destroy_app(&d.app, d.confirm.as_deref()).await?;
    println!("Destroyed app {}", d.app);
    Ok(())
}
