//! The plugin exports the host calls, found once per plugin and type-checked
//! once, so that a call looks up and checks only the function it calls.
//!
//! The generated bindings (`Addon`) look up and type-check every export of
//! the world on each instantiation: for a fresh instance per call that was
//! about a twentieth of a trivial call.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, Lift, Lower, TypedFunc,
};
use wasmtime::Store;

use super::bindings::{AddonError, Login, ProvisionRequest, ProvisionResult, Verdict};
use super::CallState;

/// The WIT package the interfaces belong to (`wit/addon.wit`).
const PACKAGE: &str = "addonhost:addon";
const VERSION: &str = "0.1.0";

/// Config vars as the WIT's `list<tuple<string, string>>`.
type Vars = Vec<(String, String)>;
/// The results of an export answering `result<T, addon-error>`.
type Answer<T> = (Result<T, AddonError>,);

/// Every export the host calls, with its WIT signature (`wit/addon.wit`)
/// as Rust types.
pub(super) struct Exports {
    pub provision: Export<(ProvisionRequest,), Answer<ProvisionResult>>,
    pub deprovision: Export<(String,), Answer<()>>,
    pub change_plan: Export<(String, String), Answer<Option<Vars>>>,
    pub rotate: Export<(String,), Answer<Vars>>,
    pub verify: Export<(Login,), (Verdict,)>,
}

impl Exports {
    /// Finds the exports in `component` (which `AddonPre::new` has already
    /// checked implements the world).
    pub fn find(component: &Component) -> anyhow::Result<Exports> {
        Ok(Exports {
            provision: Export::find(component, "lifecycle", "provision")?,
            deprovision: Export::find(component, "lifecycle", "deprovision")?,
            change_plan: Export::find(component, "lifecycle", "change-plan")?,
            rotate: Export::find(component, "credentials", "rotate")?,
            verify: Export::find(component, "sso", "verify")?,
        })
    }
}

/// One exported function of type `P -> R`.
///
/// Its type is checked against `P` and `R` on its first call; as a plugin's
/// component never changes, later calls (each in a new instance of it) use
/// the function unchecked.
pub(super) struct Export<P, R> {
    index: ComponentExportIndex,
    checked: AtomicBool,
    _type: PhantomData<fn(P) -> R>,
}

impl<P, R> Export<P, R>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    fn find(component: &Component, interface: &str, func: &str) -> anyhow::Result<Self> {
        let qualified = format!("{PACKAGE}/{interface}@{VERSION}");
        let index = component
            .get_export_index(None, &qualified)
            .and_then(|i| component.get_export_index(Some(&i), func))
            .with_context(|| format!("the component does not export {qualified}#{func}"))?;
        Ok(Export {
            index,
            checked: AtomicBool::new(false),
            _type: PhantomData,
        })
    }

    /// Calls the function in `instance`.
    pub async fn call(
        &self,
        store: &mut Store<CallState>,
        instance: &Instance,
        params: P,
    ) -> wasmtime::Result<R> {
        let func = instance.get_func(&mut *store, self.index).ok_or_else(|| {
            wasmtime::format_err!("the instance lacks an export it was found with")
        })?;
        let typed = if self.checked.load(Ordering::Acquire) {
            // SAFETY: this export was type-checked against `P` and `R` (the
            // only types this `Export` is used with) on an earlier call, in an
            // instance of the same component.
            unsafe { TypedFunc::<P, R>::new_unchecked(func) }
        } else {
            let typed = func.typed::<P, R>(&*store)?;
            self.checked.store(true, Ordering::Release);
            typed
        };
        typed.call_async(&mut *store, params).await
    }
}
