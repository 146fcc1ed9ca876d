//! The single sign-on token rules of the add-on contract (CONTRACT §SSO), in
//! one place.
//!
//! The platform signs a login with
//! `token = hex(sha1("<id>:<sso_salt>:<timestamp>"))` over the partner's id
//! and `resource_token`, the same over the platform's resource uuid; an add-on
//! refuses the login when either token is wrong, or when the timestamp is
//! older than five minutes or more than one minute ahead of its clock.
//!
//! The host (which signs logins, and whose `plugins:check` probes add-ons with
//! forged ones) and the Rust SDK (which add-ons check logins with) both use
//! this crate, so the two sides cannot drift apart. It is pure: no clock, no
//! I/O; the caller passes `now`.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Oldest accepted timestamp, in seconds before now: a login exactly this old
/// is accepted, one a second older is refused.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;

/// Furthest accepted timestamp, in seconds after now (clock skew between the
/// platform and the add-on): a login exactly this far ahead is accepted, one
/// a second further is refused.
pub const MAX_SKEW_SECONDS: i64 = 60;

/// The token of `id` at `timestamp`: lowercase hex of
/// `sha1("<id>:<salt>:<timestamp>")`, the timestamp in decimal.
pub fn token(id: &str, salt: &str, timestamp: i64) -> String {
    let mut h = Sha1::new();
    h.update(id.as_bytes());
    h.update(b":");
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(timestamp.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths
/// (the length of a token or secret is not secret; its bytes are).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Why a login was refused. Displays as a sentence naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// `token` is not the token of `id` at `timestamp`.
    BadToken,
    /// `resource_token` is not the token of `resource_id` at `timestamp`.
    BadResourceToken,
    /// The timestamp is more than [`MAX_AGE_SECONDS`] in the past.
    Stale {
        /// How old the timestamp is, in seconds.
        age_seconds: i64,
    },
    /// The timestamp is more than [`MAX_SKEW_SECONDS`] in the future.
    Future {
        /// How far ahead the timestamp is, in seconds.
        ahead_seconds: i64,
    },
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

impl std::error::Error for Denied {}

/// Accepts `timestamp` when it is at most [`MAX_AGE_SECONDS`] before `now`
/// and at most [`MAX_SKEW_SECONDS`] after it (both bounds inclusive). Any
/// pair of values is handled without overflow.
pub fn check_fresh(timestamp: i64, now: i64) -> Result<(), Denied> {
    if timestamp < now.saturating_sub(MAX_AGE_SECONDS) {
        return Err(Denied::Stale {
            age_seconds: now.saturating_sub(timestamp),
        });
    }
    if timestamp > now.saturating_add(MAX_SKEW_SECONDS) {
        return Err(Denied::Future {
            ahead_seconds: timestamp.saturating_sub(now),
        });
    }
    Ok(())
}

/// Whether `candidate` (hex, either case) is the token of `id` at
/// `timestamp`, compared in constant time.
fn token_matches(id: &str, salt: &str, timestamp: i64, candidate: &str) -> bool {
    ct_eq(
        token(id, salt, timestamp).as_bytes(),
        candidate.to_ascii_lowercase().as_bytes(),
    )
}

/// Accepts one signed value: `timestamp` is fresh at `now` and `token_hex`
/// (either case) is the token of `id`. Freshness is checked first, so a stale
/// login is reported as stale whatever its token.
pub fn check_token(
    id: &str,
    salt: &str,
    timestamp: i64,
    token_hex: &str,
    now: i64,
) -> Result<(), Denied> {
    check_fresh(timestamp, now)?;
    if !token_matches(id, salt, timestamp, token_hex) {
        return Err(Denied::BadToken);
    }
    Ok(())
}

/// Accepts a login only when all three rules hold: `timestamp` is fresh at
/// `now`, `token` is the token of `id` and `resource_token` the token of
/// `resource_id`, both at `timestamp` (hex of either case, compared in
/// constant time). The first rule broken, in that order, is the error.
pub fn check(
    id: &str,
    resource_id: &str,
    token: &str,
    resource_token: &str,
    timestamp: i64,
    salt: &str,
    now: i64,
) -> Result<(), Denied> {
    check_token(id, salt, timestamp, token, now)?;
    if !token_matches(resource_id, salt, timestamp, resource_token) {
        return Err(Denied::BadResourceToken);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "salty";
    const NOW: i64 = 1_700_000_000;

    /// A login of ("kv-1", "uuid-1") signed at `ts`, checked at `now`.
    fn signed_at(ts: i64, now: i64) -> Result<(), Denied> {
        check(
            "kv-1",
            "uuid-1",
            &token("kv-1", SALT, ts),
            &token("uuid-1", SALT, ts),
            ts,
            SALT,
            now,
        )
    }

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
    fn check_accepts_a_login_signed_now_in_either_case() {
        assert_eq!(signed_at(NOW, NOW), Ok(()));
        assert_eq!(
            check(
                "kv-1",
                "uuid-1",
                &token("kv-1", SALT, NOW).to_uppercase(),
                &token("uuid-1", SALT, NOW).to_uppercase(),
                NOW,
                SALT,
                NOW,
            ),
            Ok(())
        );
    }

    #[test]
    fn check_accepts_exactly_300_seconds_old_and_refuses_301() {
        assert_eq!(signed_at(NOW - 300, NOW), Ok(()));
        assert_eq!(
            signed_at(NOW - 301, NOW),
            Err(Denied::Stale { age_seconds: 301 })
        );
    }

    #[test]
    fn check_accepts_exactly_60_seconds_ahead_and_refuses_61() {
        assert_eq!(signed_at(NOW + 60, NOW), Ok(()));
        assert_eq!(
            signed_at(NOW + 61, NOW),
            Err(Denied::Future { ahead_seconds: 61 })
        );
    }

    #[test]
    fn check_refuses_a_wrong_token() {
        for wrong in [
            "0".repeat(40),
            String::new(),
            token("kv-2", SALT, NOW),
            token("kv-1", "other-salt", NOW),
            token("kv-1", SALT, NOW - 1),
            format!("{} ", token("kv-1", SALT, NOW)),
        ] {
            assert_eq!(
                check(
                    "kv-1",
                    "uuid-1",
                    &wrong,
                    &token("uuid-1", SALT, NOW),
                    NOW,
                    SALT,
                    NOW
                ),
                Err(Denied::BadToken),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn check_refuses_a_valid_token_with_a_wrong_resource_token() {
        for wrong in [
            "0".repeat(40),
            String::new(),
            // The id's token where the resource's belongs.
            token("kv-1", SALT, NOW),
            token("uuid-2", SALT, NOW),
            token("uuid-1", "other-salt", NOW),
        ] {
            assert_eq!(
                check(
                    "kv-1",
                    "uuid-1",
                    &token("kv-1", SALT, NOW),
                    &wrong,
                    NOW,
                    SALT,
                    NOW
                ),
                Err(Denied::BadResourceToken),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn check_reports_staleness_before_a_wrong_token() {
        assert_eq!(
            check("kv-1", "uuid-1", "", "", NOW - 1000, SALT, NOW),
            Err(Denied::Stale { age_seconds: 1000 })
        );
    }

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        for (ts, now) in [
            (i64::MIN, NOW),
            (i64::MAX, NOW),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
        ] {
            assert!(signed_at(ts, now).is_err(), "{ts} at {now}");
        }
        assert_eq!(signed_at(i64::MAX, i64::MAX), Ok(()));
        assert_eq!(signed_at(i64::MIN, i64::MIN), Ok(()));
    }

    #[test]
    fn ct_eq_is_byte_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
    }

    #[test]
    fn denials_read_as_reasons() {
        assert_eq!(Denied::BadToken.to_string(), "token does not match");
        assert_eq!(
            Denied::BadResourceToken.to_string(),
            "resource_token does not match"
        );
        assert_eq!(
            Denied::Stale { age_seconds: 301 }.to_string(),
            "timestamp is 301 s old (at most 300 s accepted)"
        );
        assert_eq!(
            Denied::Future { ahead_seconds: 61 }.to_string(),
            "timestamp is 61 s in the future (at most 60 s accepted)"
        );
    }
}
