//! Config vars as the user sees and sets them. An add-on's vars are refused
//! to the user unless forced; a forced var becomes the user's, and the add-on
//! can no longer read or write it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{error, Host};
use crate::store::{Release, Tx};

/// One var with who owns it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigVarView {
    /// The var's name as the app sees it.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The owning add-on resource (`kv-shaped-48213`), `None` for the user.
    pub addon: Option<String>,
    /// The attachment name the add-on set it under.
    pub attachment: Option<String>,
}

/// A name a user may set: `^[A-Za-z_][A-Za-z0-9_]*$`.
fn check_user_var(name: &str) -> anyhow::Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !ok {
        return Err(error::invalid(format!(
            "config var name {name:?} is invalid: letters, digits and underscores, not starting with a digit"
        )));
    }
    Ok(())
}

impl Host {
    /// Every var of the app with its owner.
    pub fn config(&self, app: &str) -> crate::Result<Vec<ConfigVarView>> {
        let (vars, owners) = self.store.read(|tx| {
            let app = super::app_named(tx, app)?;
            Ok((tx.config_vars(app.id)?, tx.var_owners(app.id)?))
        })?;
        Ok(vars
            .into_iter()
            .map(|v| {
                let owner = v.attachment_id.and_then(|id| owners.get(&id).cloned());
                ConfigVarView {
                    name: v.name,
                    value: v.value,
                    addon: owner.as_ref().map(|o| o.0.clone()),
                    attachment: owner.map(|o| o.1),
                }
            })
            .collect())
    }

    /// One var's value.
    pub fn config_get(&self, app: &str, name: &str) -> crate::Result<Option<String>> {
        self.store
            .read(|tx| {
                let app = super::app_named(tx, app)?;
                Ok(tx.config_var(app.id, name)?.map(|v| v.value))
            })
            .map_err(Into::into)
    }

    /// Sets user vars in one release. An add-on's var is refused unless
    /// `force`, which transfers it to the user.
    pub fn config_set(
        &self,
        app: &str,
        pairs: &[(String, String)],
        force: bool,
    ) -> crate::Result<Release> {
        if pairs.is_empty() {
            return Err(error::invalid("nothing to set: give NAME=value pairs").into());
        }
        self.config_change(app, pairs, &[], force)
    }

    /// Removes user vars in one release; an add-on's var is refused unless
    /// `force`, which makes the name the user's.
    pub fn config_unset(&self, app: &str, names: &[String], force: bool) -> crate::Result<Release> {
        if names.is_empty() {
            return Err(error::invalid("nothing to unset: give var names").into());
        }
        self.config_change(app, &[], names, force)
    }

    /// Sets `set` and removes `unset` in one transaction and one release,
    /// or changes nothing. An add-on's var is refused unless `force`; a
    /// forced change makes the name the user's for good: that add-on's
    /// later writes to it (a rotation, a plan change, a partner-initiated
    /// update) are refused and audited, whether the user set it or removed
    /// it.
    pub fn config_change(
        &self,
        app: &str,
        set: &[(String, String)],
        unset: &[String],
        force: bool,
    ) -> crate::Result<Release> {
        if set.is_empty() && unset.is_empty() {
            return Err(error::invalid("nothing to change: give vars to set or unset").into());
        }
        for (name, value) in set {
            check_user_var(name)?;
            // A process's environment cannot hold a NUL (nor can
            // PostgreSQL's text): refused here, named, on every store.
            if value.contains('\0') {
                return Err(error::invalid(format!(
                    "config var {name}: its value contains a NUL character, which no environment variable can hold"
                ))
                .into());
            }
        }
        if let Some(name) = unset.iter().find(|n| set.iter().any(|(s, _)| s == *n)) {
            return Err(error::invalid(format!(
                "config var {name} is both set and unset in one change"
            ))
            .into());
        }
        let (app, set, unset) = (app.to_string(), set.to_vec(), unset.to_vec());
        self.store
            .write_blocking(move |tx| {
                let app = app.as_str();
                let app_row = super::app_named(tx, app)?;
                let owners = tx.var_owners(app_row.id)?;
                for name in &unset {
                    if tx.config_var(app_row.id, name)?.is_none() {
                        return Err(error::not_found(format!(
                            "config var {name} is not set on app {app}"
                        )));
                    }
                }
                let names = set.iter().map(|(n, _)| n).chain(&unset);
                for name in names.clone() {
                    refuse_addon_var(tx, app_row.id, name, force, &owners)?;
                }
                // Vars forced away from an add-on: the name is the user's now.
                let mut taken = Vec::new();
                for name in names {
                    if let Some(att) = tx
                        .config_var(app_row.id, name)?
                        .and_then(|v| v.attachment_id)
                    {
                        tx.take_over_var(att, name)?;
                        taken.push(format!(
                            "{name} from {}",
                            owners.get(&att).map(|o| o.0.as_str()).unwrap_or("?")
                        ));
                    }
                }
                for (name, value) in &set {
                    tx.upsert_var(app_row.id, name, value, None)?;
                }
                for name in &unset {
                    tx.delete_var(app_row.id, name)?;
                }
                let list = |v: Vec<&str>| v.join(", ");
                let set_names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
                let unset_names: Vec<&str> = unset.iter().map(String::as_str).collect();
                let description = match (set_names.is_empty(), unset_names.is_empty()) {
                    (false, true) => format!("Set {}", list(set_names.clone())),
                    (true, false) => format!("Remove {}", list(unset_names.clone())),
                    _ => format!(
                        "Set {}; remove {}",
                        list(set_names.clone()),
                        list(unset_names.clone())
                    ),
                };
                let version = tx.insert_release(app_row.id, &description, "user")?;
                let forced = if taken.is_empty() {
                    String::new()
                } else {
                    format!(" (forced: took over {})", taken.join(", "))
                };
                if !set_names.is_empty() {
                    tx.audit(
                        "user",
                        "config:set",
                        Some(app),
                        None,
                        &format!("{}{forced}", list(set_names)),
                    )?;
                }
                if !unset_names.is_empty() {
                    let forced = if set.is_empty() {
                        forced
                    } else {
                        String::new()
                    };
                    tx.audit(
                        "user",
                        "config:unset",
                        Some(app),
                        None,
                        &format!("{}{forced}", list(unset_names)),
                    )?;
                }
                release(tx, app_row.id, version)
            })
            .map_err(Into::into)
    }

    /// Releases, newest first.
    pub fn releases(&self, app: &str) -> crate::Result<Vec<Release>> {
        self.store
            .read(|tx| {
                let app = super::app_named(tx, app)?;
                tx.releases(app.id)
            })
            .map_err(Into::into)
    }
}

fn release(c: &dyn Tx, app_id: i64, version: i64) -> anyhow::Result<Release> {
    c.releases(app_id)?
        .into_iter()
        .find(|r| r.version == version)
        .ok_or_else(|| anyhow::anyhow!("release v{version} vanished"))
}

fn refuse_addon_var(
    c: &dyn Tx,
    app_id: i64,
    name: &str,
    force: bool,
    owners: &BTreeMap<i64, (String, String)>,
) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Some(var) = c.config_var(app_id, name)? {
        if let Some(att) = var.attachment_id {
            let (addon, attachment) = owners.get(&att).cloned().unwrap_or_default();
            return Err(error::conflict(format!(
                "{name} is set by add-on {addon} (attached as {attachment}); changing it would break the add-on's credentials. \
                 Use --force to take it over (the add-on can then no longer update it)"
            )));
        }
    }
    Ok(())
}
