//! One way for the platform to call an add-on, wherever it runs: a plugin in
//! this host's sandbox, or a remote provider that speaks Heroku's Add-on
//! Partner API over HTTP. Provisioning, plan changes, rotation and
//! deprovisioning go through [`Provider`], so their reservation, validation,
//! ownership and release rules are written once.
//!
//! Errors come back as the platform's user errors (`Busy` when the call was
//! refused before it started, `Addon` otherwise), each naming the add-on.

use std::future::Future;
use std::pin::Pin;

use super::context::CallContext;
use super::error;
use crate::runtime::{Plugin, ProvisionRequest, ProvisionResult};

/// Config vars by manifest name.
pub type Config = Vec<(String, String)>;

/// What a provider call answers, later.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// An add-on as the platform calls it. `caps` is what the call may see and
/// change through the host (a plugin's imports); a remote provider changes
/// things through the Platform API instead, and ignores it.
pub trait Provider: Send + Sync {
    /// Creates the resource for `req.uuid`, or answers the one made for it.
    fn provision(
        &self,
        caps: Box<CallContext>,
        req: ProvisionRequest,
    ) -> Answer<'_, ProvisionResult>;
    /// Destroys resource `id` (the add-on's id for it).
    fn deprovision<'a>(&'a self, caps: Box<CallContext>, id: &'a str) -> Answer<'a, ()>;
    /// Moves `id` to `plan`; `Some` config replaces the resource's vars.
    fn change_plan<'a>(
        &'a self,
        caps: Box<CallContext>,
        id: &'a str,
        plan: &'a str,
    ) -> Answer<'a, Option<Config>>;
    /// New credentials for `id`: its whole new config.
    fn rotate<'a>(&'a self, caps: Box<CallContext>, id: &'a str) -> Answer<'a, Config>;
}

impl Provider for Plugin {
    fn provision(
        &self,
        caps: Box<CallContext>,
        req: ProvisionRequest,
    ) -> Answer<'_, ProvisionResult> {
        Box::pin(async move {
            Plugin::provision(self, caps, req)
                .await
                .map_err(error::call)
        })
    }

    fn deprovision<'a>(&'a self, caps: Box<CallContext>, id: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            Plugin::deprovision(self, caps, id)
                .await
                .map_err(error::call)
        })
    }

    fn change_plan<'a>(
        &'a self,
        caps: Box<CallContext>,
        id: &'a str,
        plan: &'a str,
    ) -> Answer<'a, Option<Config>> {
        Box::pin(async move {
            Plugin::change_plan(self, caps, id, plan)
                .await
                .map_err(error::call)
        })
    }

    fn rotate<'a>(&'a self, caps: Box<CallContext>, id: &'a str) -> Answer<'a, Config> {
        Box::pin(async move { Plugin::rotate(self, caps, id).await.map_err(error::call) })
    }
}
