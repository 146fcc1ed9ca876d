//! Host bindings of the `addon` world, generated from `wit/`.

// `bindgen!` generates the items of this module (interface modules, host
// traits, `add_to_linker` functions, the world's structs). It carries over
// the doc comments written in `wit/addon.wit`, but the scaffolding it adds
// around them has none and cannot be given any here: `wit/addon.wit` is
// where these types are documented.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "addon",
    exports: { default: async },
    // A host function may trap its caller: a call that runs out of a budget
    // stops there (see `limits::BudgetExceeded`).
    imports: { default: trappable },
});

pub use self::addonhost::addon::log::Level;
pub use self::addonhost::addon::types::AddonError;
pub use self::exports::addonhost::addon::lifecycle::{
    Pending, ProvisionRequest, ProvisionResult, Provisioned,
};
pub use self::exports::addonhost::addon::sso::{Login, Session, Verdict};
