//! Host bindings of the `addon` world, generated from `wit/`.

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
