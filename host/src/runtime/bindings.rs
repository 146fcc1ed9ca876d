//! Host bindings of the `addon` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "addon",
    exports: { default: async },
});

pub use self::addonhost::addon::log::Level;
pub use self::addonhost::addon::types::AddonError;
pub use self::exports::addonhost::addon::lifecycle::{
    Pending, ProvisionRequest, ProvisionResult, Provisioned,
};
pub use self::exports::addonhost::addon::sso::{Login, Session, Verdict};
