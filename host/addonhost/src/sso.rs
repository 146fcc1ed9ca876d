//! Single sign-on tokens (CONTRACT §SSO), as pure functions.
//!
//! The platform signs a login for an add-on's SSO route with
//! `token = hex(sha1("<id>:<sso_salt>:<timestamp>"))` and the same over the
//! resource uuid; add-ons check them. The host needs both halves: it makes
//! tokens, and `plugins:check` checks that add-ons verify them correctly.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Oldest accepted login, in seconds before now.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;
/// Furthest accepted login, in seconds after now.
pub const MAX_SKEW_SECONDS: i64 = 60;

/// `hex(sha1("<id>:<salt>:<timestamp>"))`, lowercase.
pub fn token(id: &str, salt: &str, timestamp: i64) -> String {
    let mut h = Sha1::new();
    h.update(id.as_bytes());
    h.update(b":");
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(timestamp.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Whether two byte strings are equal, in time that depends only on their
/// lengths (for tokens and secrets).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Whether `candidate` is the token for (id, salt, timestamp), compared in
/// constant time, and the timestamp is fresh at `now`.
pub fn verify(id: &str, salt: &str, timestamp: i64, candidate: &str, now: i64) -> bool {
    let fresh = timestamp >= now - MAX_AGE_SECONDS && timestamp <= now + MAX_SKEW_SECONDS;
    let expected = token(id, salt, timestamp);
    let same = expected.len() == candidate.len()
        && bool::from(
            expected
                .as_bytes()
                .ct_eq(candidate.to_ascii_lowercase().as_bytes()),
        );
    fresh & same
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
    fn verify_accepts_fresh_token_and_refuses_wrong_stale_or_future() {
        let now = 1_700_000_000;
        let t = token("kv-1", "salt", now);
        assert!(verify("kv-1", "salt", now, &t, now));
        assert!(verify("kv-1", "salt", now, &t.to_uppercase(), now));
        assert!(!verify("kv-1", "salt", now, &t, now + 6 * 60));
        assert!(!verify("kv-1", "salt", now, &t, now - 2 * 60));
        assert!(!verify("kv-2", "salt", now, &t, now));
        assert!(!verify("kv-1", "salt", now, "", now));
    }
}
