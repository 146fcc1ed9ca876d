//! Routing an HTTP request to the add-on that serves it. The call runs on
//! the add-on's own behalf (any of its resources is in reach), and whatever
//! it changes — its KV, a partner-initiated update of its config vars —
//! is applied, with the ownership checks and a release, when it succeeds.

use anyhow::Context as _;
use bytes::Bytes;

use super::context::Scope;
use super::{error, take, Host};

/// Headers the host sets after SSO; any arriving from outside are removed.
pub const USER_HEADER: &str = "x-addonhost-user";
/// Carries the add-on's id of the resource the SSO session signed in to
/// ([`Identity::resource`]).
pub const RESOURCE_HEADER: &str = "x-addonhost-resource";

/// Who the host vouches for on this request (from the add-on's SSO session).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The signed-in user, as the add-on's SSO session names them.
    pub user: String,
    /// The add-on's id of the resource signed in to.
    pub resource: String,
}

impl Host {
    /// Serves `request` (its URI relative to the add-on's base URL) with
    /// `service`'s HTTP handler.
    pub async fn addon_http(
        &self,
        service: &str,
        mut request: http::Request<Bytes>,
        identity: Option<Identity>,
    ) -> crate::Result<http::Response<Bytes>> {
        let (manifest, plugin) = self.plugin(service)?;
        if !plugin.serves_http() {
            return Err(error::not_found(format!("add-on {service} does not serve HTTP")).into());
        }
        let headers = request.headers_mut();
        let forged: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-addonhost-"))
            .cloned()
            .collect();
        for k in forged {
            headers.remove(k);
        }
        if let Some(id) = identity {
            let value = |v: &str| {
                v.parse()
                    .context("an identity header that is no header value")
            };
            headers.insert(USER_HEADER, value(&id.user)?);
            headers.insert(RESOURCE_HEADER, value(&id.resource)?);
        }
        self.retrying(service, "http", || async {
            let (ctx, effects) = self.context(&manifest, Scope::Service);
            let outcome = plugin.handle_http(ctx, request.clone()).await;
            self.log_refusals(&effects).await;
            let response = outcome.map_err(error::call)?;
            // The response goes out only once what the call wrote is
            // durable (or it is run again, when what it read changed).
            self.commit_effects(&manifest, take(&effects)).await?;
            Ok(response)
        })
        .await
        .map_err(Into::into)
    }
}
