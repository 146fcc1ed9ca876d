//! Apps: create, list, inspect, destroy.

use anyhow::Context as _;
use serde::Serialize;

use super::{error, AddonView, Host};
use crate::store::{self, App};

/// Regions an app may run in.
pub const REGIONS: &[&str] = &["us", "eu"];

/// `apps:info`.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    #[serde(flatten)]
    pub app: App,
    pub addons: Vec<AddonView>,
    pub config_vars: usize,
    pub release: i64,
}

/// Heroku's rule: `^[a-z][a-z0-9-]{1,29}$`.
fn check_app_name(name: &str) -> anyhow::Result<()> {
    let b = name.as_bytes();
    let ok = (2..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        return Err(error::invalid(format!(
            "app name {name:?} is invalid: 2 to 30 characters, lowercase letters, digits and dashes, starting with a letter"
        )));
    }
    Ok(())
}

impl Host {
    /// Creates an app with its first release.
    pub fn create_app(&self, name: &str, region: Option<&str>) -> anyhow::Result<App> {
        check_app_name(name)?;
        let region = region.unwrap_or("us");
        if !REGIONS.contains(&region) {
            return Err(error::invalid(format!(
                "unknown region {region:?}; regions: {}",
                REGIONS.join(", ")
            )));
        }
        let (owned_name, region) = (name.to_string(), region.to_string());
        self.db.write_blocking(move |tx| {
            let name = owned_name.as_str();
            if store::app_by_name(tx, name)?.is_some() {
                return Err(error::conflict(format!("app {name} already exists")));
            }
            let id = store::insert_app(tx, name, &region)?;
            store::insert_release(tx, id, "Initial release", "user")?;
            store::audit(tx, "user", "apps:create", Some(name), None, &region)?;
            Ok(())
        })?;
        let conn = self.db.read()?;
        self.app(&conn, name)
    }

    pub fn apps(&self) -> anyhow::Result<Vec<App>> {
        store::list_apps(&*self.db.read()?).context("listing apps")
    }

    pub fn app_info(&self, name: &str) -> anyhow::Result<AppInfo> {
        let (app, config_vars, release) = {
            let conn = self.db.read()?;
            let app = self.app(&conn, name)?;
            let vars = store::config_vars(&conn, app.id)?.len();
            let release = store::releases(&conn, app.id)?
                .first()
                .map(|r| r.version)
                .unwrap_or(0);
            (app, vars, release)
        };
        let addons = self.addons(Some(name))?;
        Ok(AppInfo {
            app,
            addons,
            config_vars,
            release,
        })
    }

    /// Deprovisions the app's add-ons, then deletes the app. Stops at the
    /// first add-on that fails to deprovision, leaving the app (and that
    /// add-on) in place.
    pub async fn destroy_app(&self, name: &str, confirm: Option<&str>) -> anyhow::Result<()> {
        {
            let conn = self.db.read()?;
            self.app(&conn, name)?;
        }
        if confirm != Some(name) {
            return Err(error::invalid(format!(
                "destroying {name} deletes its config, releases and add-ons; confirm with --confirm {name}"
            )));
        }
        let owned: Vec<_> = self
            .addons(Some(name))?
            .into_iter()
            .filter(|a| a.app == name)
            .collect();
        for addon in owned {
            self.destroy_addon(&addon.name, Some(name), Some(name))
                .await
                .with_context(|| {
                    format!(
                        "app {name} was not destroyed: add-on {} could not be removed",
                        addon.name
                    )
                })?;
        }
        let name = name.to_string();
        self.db
            .write(move |tx| {
                let app = super::app_named(tx, &name)?;
                store::delete_app(tx, app.id)?;
                store::audit(tx, "user", "apps:destroy", Some(&name), None, "destroyed")?;
                Ok(())
            })
            .await
    }
}
