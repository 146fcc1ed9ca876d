//! Errors the platform reports to a user, with a kind the CLI and the API
//! map to exit codes and HTTP statuses.

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An app, add-on, service or plan that does not exist.
    NotFound,
    /// A name already taken, a var owned by someone else.
    Conflict,
    /// Malformed input.
    Invalid,
    /// The add-on failed or answered something invalid.
    Addon,
    /// The add-on (or the host) is running as many calls as it may: nothing
    /// was done, and the same request may simply be retried.
    Busy,
    /// Missing or wrong credentials (the Partner and Platform APIs).
    Unauthorized,
    /// The store cannot take writes now (its disk is full, or a sync failed
    /// and it acknowledges nothing until a restart): nothing was done.
    Unavailable,
}

/// A user-facing error: what happened, to what, and what to do next.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub kind: Kind,
    pub message: String,
}

pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::NotFound,
        message: message.into(),
    }
    .into()
}

pub fn conflict(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Conflict,
        message: message.into(),
    }
    .into()
}

pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Invalid,
        message: message.into(),
    }
    .into()
}

pub fn unavailable(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Unavailable,
        message: message.into(),
    }
    .into()
}

pub fn unauthorized(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Unauthorized,
        message: message.into(),
    }
    .into()
}

pub fn addon(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Addon,
        message: message.into(),
    }
    .into()
}

/// A failed plugin call as the user's error: `Busy` when it was refused
/// before starting, `Addon` otherwise.
pub fn call(e: crate::runtime::CallError) -> anyhow::Error {
    UserError {
        kind: if e.is_busy() { Kind::Busy } else { Kind::Addon },
        message: e.to_string(),
    }
    .into()
}

/// The kind of `e`, if it is a [`UserError`].
pub fn kind_of(e: &anyhow::Error) -> Option<Kind> {
    if let Some(u) = e.downcast_ref::<UserError>() {
        return Some(u.kind);
    }
    let unavailable = e.downcast_ref::<addonhost_sqlite::StoreError>().is_some()
        || e.downcast_ref::<crate::store::Unavailable>().is_some();
    unavailable.then_some(Kind::Unavailable)
}
