//! Which provider answers for an add-on: its plugin, or (for a manifest
//! with `remote`) Heroku's protocol to a provider elsewhere. Apart from
//! both, so neither kind of provider knows of the other.

use std::sync::Arc;

use super::provider::Provider;
use super::remote::RemoteProvider;
use super::Host;
use crate::manifest::Manifest;

impl Host {
    /// The add-on `service` as the platform calls it: its plugin (once its
    /// folder is trusted and it loaded), or its remote provider.
    pub(super) fn provider(
        &self,
        service: &str,
    ) -> anyhow::Result<(Arc<Manifest>, Arc<dyn Provider>)> {
        let s = self.service(service)?;
        if let Some(remote) = &s.manifest.remote {
            self.check_trusted(&s.manifest)?;
            let provider = RemoteProvider {
                manifest: s.manifest.clone(),
                remote: remote.clone(),
                client: self
                    .remote_http
                    .with_timeout(std::time::Duration::from_millis(
                        s.manifest.limits.timeout_ms,
                    )),
                callback_base: self.platform_api_url(),
                grants: self.grants()?,
            };
            return Ok((s.manifest.clone(), Arc::new(provider)));
        }
        let (manifest, plugin) = self.plugin(service)?;
        let plugin: Arc<dyn Provider> = plugin;
        Ok((manifest, plugin))
    }

    /// How long a call of `m` may take: its plugin's deadline, or how long
    /// its remote provider has to answer (30 s unless the manifest's
    /// `limits.timeout_ms` says otherwise).
    pub(super) fn call_timeout_ms(m: &Manifest) -> u64 {
        m.limits.timeout_ms
    }
}
