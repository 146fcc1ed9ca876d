//! Apps: create, list, inspect, destroy.

use anyhow::Context as _;
use serde::Serialize;

use super::{error, AddonView, Host};
use crate::store::App;

/// Regions an app may run in.
pub const REGIONS: &[&str] = &["us", "eu"];

/// `apps:info`.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    /// The app itself (its fields flattened into the JSON).
    #[serde(flatten)]
    pub app: App,
    /// The add-ons it owns or has attached.
    pub addons: Vec<AddonView>,
    /// How many config vars it has, user-set and add-on-owned.
    pub config_vars: usize,
    /// Its current release version (0 before the first).
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
    pub fn create_app(&self, name: &str, region: Option<&str>) -> crate::Result<App> {
        self.create_app_as(name, region, super::actor::USER)
    }

    /// [`Host::create_app`], recorded as `actor` (the Partner API and the
    /// service broker make apps standing for their platforms').
    pub(crate) fn create_app_as(
        &self,
        name: &str,
        region: Option<&str>,
        actor: &str,
    ) -> crate::Result<App> {
        check_app_name(name)?;
        let region = region.unwrap_or("us");
        if !REGIONS.contains(&region) {
            return Err(error::invalid(format!(
                "unknown region {region:?}; regions: {}",
                REGIONS.join(", ")
            ))
            .into());
        }
        let (owned_name, region, actor) = (name.to_string(), region.to_string(), actor.to_string());
        self.store.write_blocking(move |tx| {
            let name = owned_name.as_str();
            if tx.app_by_name(name)?.is_some() {
                return Err(error::conflict(format!("app {name} already exists")));
            }
            let id = tx.insert_app(name, &region)?;
            tx.insert_release(id, "Initial release", &actor)?;
            tx.audit(&actor, "apps:create", Some(name), None, &region)?;
            Ok(())
        })?;
        self.store
            .read(|tx| super::app_named(tx, name))
            .map_err(Into::into)
    }

    /// Every app, by name (`apps`).
    pub fn apps(&self) -> crate::Result<Vec<App>> {
        self.store
            .read(|tx| tx.list_apps())
            .context("listing apps")
            .map_err(Into::into)
    }

    /// `apps:info`: the app with its add-ons, its number of vars and its
    /// current release.
    pub fn app_info(&self, name: &str) -> crate::Result<AppInfo> {
        let (app, config_vars, release) = self.store.read(|tx| {
            let app = super::app_named(tx, name)?;
            let vars = tx.config_vars(app.id)?.len();
            let release = tx.releases(app.id)?.first().map(|r| r.version).unwrap_or(0);
            Ok((app, vars, release))
        })?;
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
    pub async fn destroy_app(&self, name: &str, confirm: Option<&str>) -> crate::Result<()> {
        self.store.read(|tx| super::app_named(tx, name))?;
        if confirm != Some(name) {
            return Err(error::invalid(format!(
                "destroying {name} deletes its config, releases and add-ons; confirm with --confirm {name}"
            )).into());
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
        self.store
            .write(move |tx| {
                let app = super::app_named(tx, &name)?;
                tx.delete_app(app.id)?;
                tx.audit("user", "apps:destroy", Some(&name), None, "destroyed")?;
                Ok(())
            })
            .await
            .map_err(Into::into)
    }
}
