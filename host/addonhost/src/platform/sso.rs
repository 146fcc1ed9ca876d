//! Single sign-on, the platform's half: build the signed login form for an
//! add-on's SSO route; check a posted one as far as the host can (both
//! signatures, the time window, that it was not used before); and ask the
//! add-on's `sso.verify` about it.
//!
//! A form is good for five minutes and signs nothing but (id, timestamp):
//! posted again it would make another session, so each is accepted once,
//! in every server sharing the store (the form's key is spent in the same
//! transaction that stores its session).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::context::Scope;
use super::{error, take, Host};
use crate::runtime::{Login, Verdict};
use crate::sso;
use crate::store::ResourceState;

/// The form fields the platform posts to an add-on's SSO login.
#[derive(Debug, Clone, Serialize)]
pub struct SsoForm {
    /// The add-on's service, whose SSO route receives the form.
    pub service: String,
    /// The form's fields in order: `id`, `token`, `resource_id`,
    /// `resource_token`, `timestamp`, `email`, `app`, `context_app`, `nav-data`
    /// (`user_id` for a remote provider), then the extra query params passed
    /// through.
    pub fields: Vec<(String, String)>,
    /// Where a remote add-on's provider takes the form (its `sso_url`, or
    /// `<resources URL>/<id>`); `None` for a plugin (its own origin's
    /// `/sso/login`).
    pub action: Option<String>,
}

impl SsoForm {
    /// The login as the WIT `sso.login` record.
    pub fn to_login(&self) -> anyhow::Result<Login> {
        login_from_fields(&self.fields)
    }
}

/// Parses posted form fields into a login; unknown fields are extra params.
pub fn login_from_fields(fields: &[(String, String)]) -> anyhow::Result<Login> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let need = |k: &str| {
        get(k).ok_or_else(|| error::invalid(format!("SSO login is missing the {k} field")))
    };
    const KNOWN: &[&str] = &[
        "id",
        "token",
        "resource_id",
        "resource_token",
        "timestamp",
        "email",
        "app",
        "context_app",
        "nav-data",
    ];
    let timestamp = need("timestamp")?;
    Ok(Login {
        id: need("id")?,
        token: need("token")?,
        resource_id: need("resource_id")?,
        resource_token: need("resource_token")?,
        timestamp: timestamp
            .parse()
            .map_err(|_| error::invalid(format!("SSO timestamp {timestamp:?} is not a number")))?,
        email: get("email").unwrap_or_default(),
        app: get("app").unwrap_or_default(),
        context_app: get("context_app").unwrap_or_default(),
        nav_data: get("nav-data").unwrap_or_default(),
        params: fields
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .cloned()
            .collect(),
    })
}

/// Why a posted SSO form is not a login.
#[derive(Debug)]
pub enum FormRefused {
    /// A field the form must carry is missing (a malformed request: 400).
    Missing(String),
    /// The form is there but wrong: a token that does not match, a
    /// timestamp that is no number or out of its window, a form used
    /// already (403, as kensa expects).
    Denied(String),
    /// Nothing to sign in to here (no such add-on), or the store failed.
    Platform(crate::Error),
}

/// A posted form the host found good: the login to ask the add-on about,
/// and the form's key, to spend with the session it makes.
#[derive(Debug, Clone)]
pub struct CheckedLogin {
    /// The login, for `sso.verify`.
    pub login: Login,
    /// The form's single-use key: a hash of (add-on, id, timestamp,
    /// token), the values the signature covers.
    pub form_key: String,
    /// Until when the form could be presented (then it is stale anyway).
    pub key_expires_at: i64,
}

/// The single-use key of a form of `service` signing (`id`, `timestamp`) as
/// `token` (either case: the add-on accepts both, so both are one form).
fn form_key(service: &str, id: &str, timestamp: i64, token: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        service,
        id,
        &timestamp.to_string(),
        &token.to_ascii_lowercase(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("sso:{}", hex::encode(h.finalize()))
}

impl Host {
    /// Checks a form posted to `service`'s SSO login before its plugin is
    /// asked: `id`, `token` and `timestamp` first (kensa's own form has
    /// nothing else), then `resource_id` and `resource_token`, then that the
    /// form was not used already. What is missing is [`FormRefused::Missing`];
    /// whatever is wrong, malformed or stale is [`FormRefused::Denied`],
    /// naming the field. The plugin's `sso.verify` still decides; a plugin
    /// that accepts anything no longer lets a forged form in.
    pub fn sso_check_form(
        &self,
        service: &str,
        fields: &[(String, String)],
    ) -> Result<CheckedLogin, FormRefused> {
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let need = |k: &str| {
            get(k)
                .ok_or_else(|| FormRefused::Missing(format!("SSO login is missing the {k} field")))
        };
        let (id, token, timestamp) = (need("id")?, need("token")?, need("timestamp")?);
        let timestamp: i64 = timestamp.parse().map_err(|_| {
            FormRefused::Denied(format!(
                "SSO timestamp {:?} is not a number of seconds",
                crate::util::truncate(timestamp, 40)
            ))
        })?;
        let (manifest, _) = self.plugin(service).map_err(FormRefused::Platform)?;
        let salt = &manifest.api.sso_salt;
        let now = crate::util::unix_now();
        sso::check_token(id, salt, timestamp, token, now)
            .map_err(|d| FormRefused::Denied(d.to_string()))?;
        let (resource_id, resource_token) = (need("resource_id")?, need("resource_token")?);
        sso::check(id, resource_id, token, resource_token, timestamp, salt, now)
            .map_err(|d| FormRefused::Denied(d.to_string()))?;
        let key = form_key(service, id, timestamp, token);
        let used = self
            .store
            .read(|tx| tx.spent(&key, now))
            .map_err(|e| FormRefused::Platform(e.into()))?;
        if used {
            return Err(FormRefused::Denied(
                "this sign-in form was used already: sign in again from the platform".into(),
            ));
        }
        let login = login_from_fields(fields).map_err(|e| FormRefused::Missing(e.to_string()))?;
        Ok(CheckedLogin {
            login,
            form_key: key,
            key_expires_at: timestamp.saturating_add(sso::MAX_AGE_SECONDS + 1),
        })
    }

    /// The signed SSO form for the add-on attached to `app` as `attachment`
    /// (or named so), at `timestamp`, for `email`; `params` are passed
    /// through (`?issue_no=42`).
    pub fn sso_form(
        &self,
        app: &str,
        addon: &str,
        email: &str,
        params: &[(String, String)],
        timestamp: i64,
    ) -> crate::Result<SsoForm> {
        let r = self.store.read(|tx| self.resolve(tx, addon, Some(app)))?;
        let pid = r
            .partner_id
            .clone()
            .filter(|_| r.state == ResourceState::Provisioned)
            .ok_or_else(|| {
                error::conflict(format!(
                    "add-on {} is {}: nothing to sign in to yet",
                    r.name, r.state
                ))
            })?;
        let service = self.service(&r.service)?;
        let salt = &service.manifest.api.sso_salt;
        let nav =
            serde_json::json!({"app": app, "addon": r.name, "service": r.service}).to_string();
        let mut fields = vec![
            ("id".to_string(), pid.clone()),
            ("token".to_string(), sso::token(&pid, salt, timestamp)),
            ("resource_id".to_string(), r.uuid.clone()),
            (
                "resource_token".to_string(),
                sso::token(&r.uuid, salt, timestamp),
            ),
            ("timestamp".to_string(), timestamp.to_string()),
            ("email".to_string(), email.to_string()),
            ("app".to_string(), app.to_string()),
            ("context_app".to_string(), app.to_string()),
            ("nav-data".to_string(), nav),
        ];
        let action = service.manifest.remote.as_ref().map(|remote| {
            // Heroku's form carries the user too.
            fields.push(("user_id".to_string(), email.to_string()));
            remote.sso_action(&pid)
        });
        fields.extend(params.iter().cloned());
        Ok(SsoForm {
            service: r.service,
            fields,
            action,
        })
    }

    /// Asks the add-on's `sso.verify` about a posted login. The call may read
    /// only the resource the login names.
    pub async fn sso_verify(&self, service: &str, login: Login) -> crate::Result<Verdict> {
        let (manifest, plugin) = self.plugin(service)?;
        let known = self
            .store
            .read(|tx| tx.resource_by_partner_id(service, &login.id))?
            .is_some();
        if !known {
            return Ok(Verdict::Denied(format!(
                "no {service} add-on with id {}",
                login.id
            )));
        }
        self.retrying(service, "sso-verify", || async {
            let (ctx, effects) = self.context(
                &manifest,
                Scope::Resource {
                    partner_id: login.id.clone(),
                },
            );
            let verdict = plugin.verify(ctx, login.clone()).await;
            self.log_refusals(&effects).await;
            let verdict = verdict.map_err(error::call)?;
            // Like any call, a verify may have written its KV (a last-login
            // note).
            self.commit_effects(&manifest, take(&effects)).await?;
            Ok(verdict)
        })
        .await
        .map_err(Into::into)
    }
}
