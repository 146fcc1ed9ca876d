//! What a call read of its add-on's KV, so that its writes apply only if
//! everything it read is still so when they commit.
//!
//! Calls of one add-on run concurrently (HTTP requests, a rotation, the
//! dashboard's roll button), each reading its KV, deciding, then writing.
//! Without a check, two calls that read the same record both succeed on
//! what was stale for one of them: a quota passed, a grace window left on
//! the wrong credential. So a call's writes commit only if the keys it read
//! hold the same values and the listings and counts it made come out the
//! same; otherwise the platform runs the call again (a few times), or fails
//! it saying why.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::store::Tx;

/// How many times a call is run when what it read keeps changing: each
/// round of contenders lets at least one commit, so this many calls racing
/// on the same records all get through.
pub const ATTEMPTS: usize = 8;

/// A random pause before attempt `attempt` (from 1) runs again, growing with
/// the attempts: contenders that lost together do not start over in step.
pub async fn back_off(attempt: usize) {
    use rand::Rng;
    let most_ms = 1u64 << attempt.min(6);
    let ms = rand::rng().random_range(0..=most_ms);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

type Hash = [u8; 32];

fn hash_value(value: Option<&[u8]>) -> Option<Hash> {
    value.map(|v| Sha256::digest(v).into())
}

fn hash_keys(keys: &[String]) -> Hash {
    let mut h = Sha256::new();
    for k in keys {
        h.update(k.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// One listing or count a call made of the store.
#[derive(Debug)]
enum Scan {
    Keys {
        prefix: String,
        after: Option<String>,
        limit: usize,
        keys: Hash,
    },
    Count {
        prefix: String,
        count: u64,
    },
}

/// Everything a call read of the store's KV (not of its own writes).
#[derive(Debug, Default)]
pub struct ReadSet {
    keys: BTreeMap<String, Option<Hash>>,
    scans: Vec<Scan>,
}

/// A call's writes were refused because something it read changed since.
#[derive(Debug, thiserror::Error)]
#[error("what this call read changed before its writes could apply")]
pub struct StaleReads;

/// Whether `e` is a commit refused for [`StaleReads`] (the call may run
/// again).
pub fn is_stale(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StaleReads>().is_some()
}

impl ReadSet {
    /// Records the value read of `key` (the first read is the one the call
    /// decided on).
    pub fn key(&mut self, key: &str, value: Option<&[u8]>) {
        self.keys
            .entry(key.to_string())
            .or_insert_with(|| hash_value(value));
    }

    /// Records a page of keys read from the store.
    pub fn keys(&mut self, prefix: &str, after: Option<&str>, limit: usize, keys: &[String]) {
        self.scans.push(Scan::Keys {
            prefix: prefix.to_string(),
            after: after.map(str::to_string),
            limit,
            keys: hash_keys(keys),
        });
    }

    /// Records a count of keys read from the store.
    pub fn count(&mut self, prefix: &str, count: u64) {
        self.scans.push(Scan::Count {
            prefix: prefix.to_string(),
            count,
        });
    }

    /// The keys read.
    pub fn read_keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether a listing or a count of keys was read.
    pub fn has_scans(&self) -> bool {
        !self.scans.is_empty()
    }

    /// Whether everything recorded still reads the same in `tx`.
    pub fn still_holds(&self, tx: &dyn Tx, service: &str) -> anyhow::Result<bool> {
        for (key, seen) in &self.keys {
            if hash_value(tx.kv_get(service, key)?.as_deref()) != *seen {
                return Ok(false);
            }
        }
        for scan in &self.scans {
            let same = match scan {
                Scan::Keys {
                    prefix,
                    after,
                    limit,
                    keys,
                } => hash_keys(&tx.kv_keys(service, prefix, after.as_deref(), *limit)?) == *keys,
                Scan::Count { prefix, count } => tx.kv_count(service, prefix)? == *count,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
