//! Single sign-on tokens (CONTRACT §SSO), as pure functions.
//!
//! The platform signs a login for an add-on's SSO route with
//! `token = hex(sha1("<id>:<sso_salt>:<timestamp>"))` and the same over the
//! resource uuid; add-ons check them. The host needs both halves: it makes
//! tokens, and `plugins:check` checks that add-ons verify them correctly.
//!
//! The rules are the `addonhost-sso` crate's, the very code the Rust SDK
//! checks logins with, so what the platform signs and what an add-on accepts
//! cannot drift apart. The server compares its own secrets with [`ct_eq`] too.

pub use addonhost_sso::{
    check, check_fresh, check_token, ct_eq, token, Denied, MAX_AGE_SECONDS, MAX_SKEW_SECONDS,
};

#[cfg(test)]
mod tests {
    //! The rules are tested in depth in their crate; these pin the contract
    //! where the host's own test suite runs.
    use super::*;

    #[test]
    fn token_matches_published_test_vectors() {
        assert_eq!(
            token(
                "123",
                "2f97bfa52ca102f8874716e2eb1d3b4920ad0be4",
                1267597772
            ),
            "bb466eb1d6bc345d11072c3cd25c311f21be130d"
        );
        assert_eq!(
            token("1", "SSO_SALT", 1262304000),
            "b6010f6fbb850887a396c2bc0ab23974003008f6"
        );
        assert_eq!(
            token("123", "salty", 567),
            "8bcafa70e186a8f9b85a1c93f3b6b0507748ec7a"
        );
    }

    #[test]
    fn check_keeps_the_window_and_both_tokens() {
        let now = 1_700_000_000;
        let signed = |ts: i64| {
            check(
                "kv-1",
                "uuid-1",
                &token("kv-1", "salt", ts),
                &token("uuid-1", "salt", ts),
                ts,
                "salt",
                now,
            )
        };
        assert_eq!(signed(now - MAX_AGE_SECONDS), Ok(()));
        assert_eq!(
            signed(now - MAX_AGE_SECONDS - 1),
            Err(Denied::Stale { age_seconds: 301 })
        );
        assert_eq!(signed(now + MAX_SKEW_SECONDS), Ok(()));
        assert_eq!(
            signed(now + MAX_SKEW_SECONDS + 1),
            Err(Denied::Future { ahead_seconds: 61 })
        );
        let wrong_resource = check(
            "kv-1",
            "uuid-1",
            &token("kv-1", "salt", now),
            &token("uuid-2", "salt", now),
            now,
            "salt",
            now,
        );
        assert_eq!(wrong_resource, Err(Denied::BadResourceToken));
    }
}
