//! The SSO token check every add-on must do (CONTRACT §SSO).
//!
//! `token` = lowercase hex SHA-1 of `"<id>:<sso_salt>:<timestamp>"`, and the
//! same for `resource_token` over the platform's resource uuid. A login is
//! refused when a token is wrong, or its timestamp is older than five minutes
//! or more than one minute in the future. Tokens are compared in constant time.
//!
//! The rules themselves live in the `addonhost-sso` crate, which the host
//! signs logins with too: this module applies them to the WIT [`Login`].

pub use addonhost_sso::{check_token, token, Denied, MAX_AGE_SECONDS, MAX_SKEW_SECONDS};

use crate::Login;

/// Checks a whole login form at `now` (Unix seconds): freshness, `token` and
/// `resource_token`, the first rule broken being the error.
pub fn check_login(login: &Login, salt: &str, now: i64) -> Result<(), Denied> {
    addonhost_sso::check(
        &login.id,
        &login.resource_id,
        &login.token,
        &login.resource_token,
        login.timestamp,
        salt,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "2f97bfa52ca102f8874716e2eb1d3b4920ad0be4";
    const NOW: i64 = 1_700_000_000;

    /// The login the platform would post for partner id "123" and resource
    /// "uuid-1" at `ts`.
    fn login(ts: i64) -> Login {
        Login {
            id: "123".into(),
            token: token("123", SALT, ts),
            resource_id: "uuid-1".into(),
            resource_token: token("uuid-1", SALT, ts),
            timestamp: ts,
            email: "owner@example.com".into(),
            app: "shop".into(),
            context_app: "shop".into(),
            nav_data: "{}".into(),
            params: Vec::new(),
        }
    }

    #[test]
    fn token_matches_published_test_vector() {
        assert_eq!(
            token("123", SALT, 1267597772),
            "bb466eb1d6bc345d11072c3cd25c311f21be130d"
        );
    }

    #[test]
    fn check_login_accepts_the_published_vector_at_its_own_time() {
        let mut l = login(1267597772);
        l.token = "BB466EB1D6BC345D11072C3CD25C311F21BE130D".into();
        assert_eq!(check_login(&l, SALT, 1267597772), Ok(()));
    }

    #[test]
    fn check_login_accepts_300_seconds_old_and_refuses_301() {
        assert_eq!(check_login(&login(NOW - 300), SALT, NOW), Ok(()));
        assert_eq!(
            check_login(&login(NOW - 301), SALT, NOW),
            Err(Denied::Stale { age_seconds: 301 })
        );
    }

    #[test]
    fn check_login_accepts_60_seconds_ahead_and_refuses_61() {
        assert_eq!(check_login(&login(NOW + 60), SALT, NOW), Ok(()));
        assert_eq!(
            check_login(&login(NOW + 61), SALT, NOW),
            Err(Denied::Future { ahead_seconds: 61 })
        );
    }

    #[test]
    fn check_login_refuses_a_wrong_token() {
        let mut l = login(NOW);
        l.token = "0".repeat(40);
        assert_eq!(check_login(&l, SALT, NOW), Err(Denied::BadToken));
        l.token = String::new();
        assert_eq!(check_login(&l, SALT, NOW), Err(Denied::BadToken));
    }

    #[test]
    fn check_login_refuses_a_valid_token_with_a_wrong_resource_token() {
        let mut l = login(NOW);
        l.resource_token = token("uuid-2", SALT, NOW);
        assert_eq!(check_login(&l, SALT, NOW), Err(Denied::BadResourceToken));
        // The id's own (valid) token offered as the resource's.
        l.resource_token = l.token.clone();
        assert_eq!(check_login(&l, SALT, NOW), Err(Denied::BadResourceToken));
        l.resource_token = String::new();
        assert_eq!(check_login(&l, SALT, NOW), Err(Denied::BadResourceToken));
    }

    #[test]
    fn check_login_refuses_a_login_signed_with_another_salt() {
        assert_eq!(
            check_login(&login(NOW), "another salt", NOW),
            Err(Denied::BadToken)
        );
    }
}
