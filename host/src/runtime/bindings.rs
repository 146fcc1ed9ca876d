//! Host bindings of the `addon` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "addon",
    exports: { default: async },
});

pub use addonhost::addon::log::Level;
pub use addonhost::addon::types::AddonError;
pub use exports::addonhost::addon::lifecycle::{
    Pending, ProvisionRequest, ProvisionResult, Provisioned,
};
pub use exports::addonhost::addon::sso::{Login, Session, Verdict};
