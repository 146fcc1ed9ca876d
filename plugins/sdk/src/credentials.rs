//! Credential generation and the grace window of rotated credentials.

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A random secret of `len` characters from `[A-Za-z0-9]`, drawn from WASI's
/// cryptographically secure random source without modulo bias.
pub fn secret(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("WASI random is always available");
        for &b in &buf {
            // 62 * 4 = 248: rejecting bytes >= 248 keeps every symbol equally likely.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// A random lowercase hex id of `bytes` random bytes.
pub fn hex_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("WASI random is always available");
    hex::encode(buf)
}

/// A secret with the one it replaced, which stays valid until
/// `previous_expires_at` so processes started before a rotation keep working
/// until they restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rotating {
    pub current: String,
    pub previous: Option<String>,
    /// Unix seconds after which `previous` is refused.
    pub previous_expires_at: Option<i64>,
    /// Unix seconds of the last rotation.
    pub rotated_at: Option<i64>,
}

impl Rotating {
    pub fn new(current: String) -> Self {
        Rotating {
            current,
            ..Default::default()
        }
    }

    /// Replaces the current secret with `next`; the old one stays valid for
    /// `grace_seconds` from `now`.
    pub fn rotate(&mut self, next: String, now: i64, grace_seconds: i64) {
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some(old);
        self.previous_expires_at = Some(now + grace_seconds);
        self.rotated_at = Some(now);
    }

    /// Whether `candidate` is the current secret, or the previous one within
    /// its grace window. Comparisons take constant time.
    pub fn accepts(&self, candidate: &str, now: i64) -> bool {
        if ct_eq(&self.current, candidate) {
            return true;
        }
        match (&self.previous, self.previous_expires_at) {
            (Some(prev), Some(until)) => now <= until && ct_eq(prev, candidate),
            _ => false,
        }
    }
}

/// The grace window a provisioning request asks for with
/// `-- --grace_seconds N` (0 to 7 days), or `default`.
pub fn grace_from_options(
    options: &[(String, String)],
    default: i64,
) -> Result<i64, crate::AddonError> {
    match options
        .iter()
        .find(|(k, _)| k == "grace_seconds" || k == "grace-seconds")
    {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=7 * 86400).contains(n))
            .ok_or_else(|| {
                crate::AddonError::new(format!("--grace_seconds {v:?} must be 0 to 604800"))
            }),
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths
/// (the length of a secret is not secret). The same comparison the SSO check
/// and the host use (`addonhost_sso::ct_eq`).
pub fn ct_eq(a: &str, b: &str) -> bool {
    addonhost_sso::ct_eq(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_secret_accepted_only_inside_grace_window() {
        let mut r = Rotating::new("old".into());
        r.rotate("new".into(), 1000, 60);
        assert!(r.accepts("new", 1000));
        assert!(r.accepts("old", 1060));
        assert!(!r.accepts("old", 1061));
        assert!(!r.accepts("other", 1000));
    }
}
