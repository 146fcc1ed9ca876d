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
    /// The caller made more requests than its rate allows (a partner on the
    /// Platform API): nothing was done; retry later.
    RateLimited,
}

/// A user-facing error: what happened, to what, and what to do next.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    /// What kind of failure it is, for the exit code or HTTP status.
    pub kind: Kind,
    /// The message for the user: what happened, to what, and what to do next.
    pub message: String,
}

/// A [`Kind::NotFound`] error: an app, add-on, service or plan that does not
/// exist.
pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::NotFound,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::Conflict`] error: a name already taken, a var owned by someone
/// else.
pub fn conflict(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Conflict,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::Invalid`] error: malformed input.
pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Invalid,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::Unavailable`] error: the store cannot take writes now; nothing was
/// done.
pub fn unavailable(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Unavailable,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::Unauthorized`] error: missing or wrong credentials.
pub fn unauthorized(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Unauthorized,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::RateLimited`] error: the caller is over its rate; nothing was
/// done.
pub fn rate_limited(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::RateLimited,
        message: message.into(),
    }
    .into()
}

/// A [`Kind::Addon`] error: the add-on failed or answered something invalid.
pub fn addon(message: impl Into<String>) -> anyhow::Error {
    UserError {
        kind: Kind::Addon,
        message: message.into(),
    }
    .into()
}

/// A failed plugin call as the user's error: `Busy` when it was refused
/// before starting, `Unavailable` when the store could not answer it,
/// `Addon` otherwise.
pub fn call(e: crate::runtime::CallError) -> anyhow::Error {
    UserError {
        kind: if e.is_busy() {
            Kind::Busy
        } else if e.is_unavailable() {
            Kind::Unavailable
        } else {
            Kind::Addon
        },
        message: e.to_string(),
    }
    .into()
}

/// The kind of `e`, if it is a [`UserError`] or a typed [`Error`] with a
/// kind.
pub fn kind_of(e: &anyhow::Error) -> Option<Kind> {
    if let Some(u) = e.downcast_ref::<UserError>() {
        return Some(u.kind);
    }
    if let Some(typed) = e.downcast_ref::<Error>() {
        return typed.kind();
    }
    let unavailable = e.downcast_ref::<addonhost_sqlite::StoreError>().is_some()
        || e.downcast_ref::<crate::store::Unavailable>().is_some();
    unavailable.then_some(Kind::Unavailable)
}

/// What [`Host`](crate::Host)'s methods fail with: one variant per [`Kind`],
/// each carrying the message for the user (with its context, outermost
/// first), and [`Error::Internal`] for failures no user input explains (a
/// bug, an I/O error), kept whole with its chain of causes.
///
/// An embedder matches on the variant to answer its own users (the server
/// maps them to HTTP statuses, the command line to exit codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An app, add-on, service or plan that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name already taken, a var owned by someone else.
    #[error("{0}")]
    Conflict(String),
    /// Malformed input.
    #[error("{0}")]
    Invalid(String),
    /// The add-on failed or answered something invalid.
    #[error("{0}")]
    Addon(String),
    /// The add-on (or the host) is running as many calls as it may: nothing
    /// was done, and the same request may simply be retried.
    #[error("{0}")]
    Busy(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The store cannot take writes now: nothing was done.
    #[error("{0}")]
    Unavailable(String),
    /// Over the caller's rate: nothing was done; retry later.
    #[error("{0}")]
    RateLimited(String),
    /// Anything else: not the caller's doing.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// `Result` with [`Error`], what [`Host`](crate::Host)'s methods return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error's kind; `None` for [`Error::Internal`].
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::Conflict(_) => Kind::Conflict,
            Error::Invalid(_) => Kind::Invalid,
            Error::Addon(_) => Kind::Addon,
            Error::Busy(_) => Kind::Busy,
            Error::Unauthorized(_) => Kind::Unauthorized,
            Error::Unavailable(_) => Kind::Unavailable,
            Error::RateLimited(_) => Kind::RateLimited,
            Error::Internal(_) => return None,
        })
    }
}

impl From<anyhow::Error> for Error {
    /// Sorts a failure from inside the library by its kind, keeping the
    /// whole message (its context included) for the user.
    fn from(e: anyhow::Error) -> Self {
        let Some(kind) = kind_of(&e) else {
            return Error::Internal(e);
        };
        let message = format!("{e:#}");
        match kind {
            Kind::NotFound => Error::NotFound(message),
            Kind::Conflict => Error::Conflict(message),
            Kind::Invalid => Error::Invalid(message),
            Kind::Addon => Error::Addon(message),
            Kind::Busy => Error::Busy(message),
            Kind::Unauthorized => Error::Unauthorized(message),
            Kind::Unavailable => Error::Unavailable(message),
            Kind::RateLimited => Error::RateLimited(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_user_error_keeps_its_kind_and_context_at_the_boundary() {
        let e: Error = Err::<(), _>(not_found("no app named shop"))
            .context("destroying shop")
            .unwrap_err()
            .into();
        assert!(matches!(&e, Error::NotFound(m) if m == "destroying shop: no app named shop"));
        // Back inside anyhow (as the server and the CLI hold it), the kind is
        // still found.
        assert_eq!(kind_of(&anyhow::Error::from(e)), Some(Kind::NotFound));
    }

    #[test]
    fn an_unexplained_failure_is_internal_with_its_causes() {
        let io = std::io::Error::other("disk on fire");
        let e: Error = anyhow::Error::from(io).context("writing").into();
        assert!(matches!(e, Error::Internal(_)));
        assert_eq!(e.kind(), None);
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "writing: disk on fire"
        );
    }
}
