//! The SSO token check every add-on must do (CONTRACT §SSO).
//!
//! `token` = lowercase hex SHA-1 of `"<id>:<sso_salt>:<timestamp>"`, and the
//! same for `resource_token` over the platform's resource uuid. A login is
//! refused when a token is wrong, or its timestamp is older than five minutes
//! or more than one minute in the future. Tokens are compared in constant time.

use sha1::{Digest, Sha1};

use crate::credentials::ct_eq;
use crate::Login;

/// Oldest accepted timestamp, in seconds before now.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;
/// Furthest accepted timestamp, in seconds after now (clock skew).
pub const MAX_SKEW_SECONDS: i64 = 60;

/// `hex(sha1("<id>:<salt>:<timestamp>"))`.
pub fn token(id: &str, salt: &str, timestamp: i64) -> String {
    let mut h = Sha1::new();
    h.update(format!("{id}:{salt}:{timestamp}").as_bytes());
    hex::encode(h.finalize())
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    BadToken,
    BadResourceToken,
    Stale { age_seconds: i64 },
    Future { ahead_seconds: i64 },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::BadToken => write!(f, "token does not match"),
            Denied::BadResourceToken => write!(f, "resource_token does not match"),
            Denied::Stale { age_seconds } => write!(
                f,
                "timestamp is {age_seconds} s old (at most {MAX_AGE_SECONDS} s accepted)"
            ),
            Denied::Future { ahead_seconds } => write!(
                f,
                "timestamp is {ahead_seconds} s in the future (at most {MAX_SKEW_SECONDS} s accepted)"
            ),
        }
    }
}

/// Checks a token and its freshness at `now` (Unix seconds).
pub fn check_token(
    id: &str,
    salt: &str,
    timestamp: i64,
    token_hex: &str,
    now: i64,
) -> Result<(), Denied> {
    check_fresh(timestamp, now)?;
    if !ct_eq(&token(id, salt, timestamp), &token_hex.to_ascii_lowercase()) {
        return Err(Denied::BadToken);
    }
    Ok(())
}

fn check_fresh(timestamp: i64, now: i64) -> Result<(), Denied> {
    if timestamp < now - MAX_AGE_SECONDS {
        return Err(Denied::Stale {
            age_seconds: now - timestamp,
        });
    }
    if timestamp > now + MAX_SKEW_SECONDS {
        return Err(Denied::Future {
            ahead_seconds: timestamp - now,
        });
    }
    Ok(())
}

/// Checks a whole login form: both tokens and freshness, at `now`.
pub fn check_login(login: &Login, salt: &str, now: i64) -> Result<(), Denied> {
    check_token(&login.id, salt, login.timestamp, &login.token, now)?;
    if !ct_eq(
        &token(&login.resource_id, salt, login.timestamp),
        &login.resource_token.to_ascii_lowercase(),
    ) {
        return Err(Denied::BadResourceToken);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
    fn check_accepts_vector_at_its_own_time() {
        let t = 1267597772;
        let salt = "2f97bfa52ca102f8874716e2eb1d3b4920ad0be4";
        assert_eq!(
            check_token(
                "123",
                salt,
                t,
                "bb466eb1d6bc345d11072c3cd25c311f21be130d",
                t
            ),
            Ok(())
        );
        assert_eq!(
            check_token(
                "123",
                salt,
                t,
                "BB466EB1D6BC345D11072C3CD25C311F21BE130D",
                t + 299
            ),
            Ok(())
        );
    }

    #[test]
    fn check_denies_wrong_token() {
        assert_eq!(
            check_token(
                "123",
                "salty",
                567,
                "8bcafa70e186a8f9b85a1c93f3b6b0507748ec7b",
                567
            ),
            Err(Denied::BadToken)
        );
        assert_eq!(
            check_token("123", "salty", 567, "", 567),
            Err(Denied::BadToken)
        );
    }

    #[test]
    fn check_denies_six_minute_old_timestamp() {
        let tok = token("123", "salty", 1000);
        assert_eq!(
            check_token("123", "salty", 1000, &tok, 1000 + 360),
            Err(Denied::Stale { age_seconds: 360 })
        );
    }

    #[test]
    fn check_denies_two_minute_future_timestamp() {
        let tok = token("123", "salty", 1120);
        assert_eq!(
            check_token("123", "salty", 1120, &tok, 1000),
            Err(Denied::Future { ahead_seconds: 120 })
        );
    }
}
