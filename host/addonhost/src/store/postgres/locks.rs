//! The locks that make concurrent writes on several servers come out as
//! some serial order would, under `READ COMMITTED`.
//!
//! SQLite runs one writer; PostgreSQL runs many at once. Rather than
//! `SERIALIZABLE` — whose predicate locks on small, hot tables report
//! conflicts between writes that touch different apps and roll them back —
//! each write transaction takes PostgreSQL's transaction-scoped advisory
//! locks on what it reads to decide, before it reads it:
//!
//! - **an app**: its row, config vars, releases and attachments, and the
//!   resources it owns (their state, reservation, rotation) with their
//!   attachments to any app. Taken by the first read or write of any of
//!   these in the transaction; a resource read by uuid, name, id or partner
//!   id locks its owner's app first. So the release counter, the attachment
//!   names, the vars' owners and a reservation's holder are read and
//!   changed by one transaction at a time per app, and writes on different
//!   apps never wait for each other.
//! - **a KV key** of an add-on, exclusive, and its add-on's **listing**,
//!   shared by every writer: a call's writes commit only if the keys it
//!   read still hold (the platform checks, under these locks), and a call
//!   that listed or counted keys holds the listing exclusively.
//! - **a named row** (a setting, an add-on's accepted components or
//!   folders, a broker instance): read-then-write on it is one at a time.
//!
//! Locks are taken in the order the transaction meets them; two
//! transactions that meet the same two apps in opposite orders (an add-on
//! attached to another app) deadlock, PostgreSQL breaks it, and the loser
//! runs again. Transaction-scoped locks hold through a transaction-pooling
//! PgBouncer, and none outlives its transaction.

/// Key spaces, in the advisory key's top byte (the rest is the id or a
/// hash of the name).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Space {
    App = 0x41,
    KvKey = 0x42,
    KvListing = 0x43,
    Setting = 0x44,
    Components = 0x45,
    PluginDirs = 0x46,
    OsbInstance = 0x47,
}

/// Statements that find the app a row belongs to and lock it (the key as
/// [`app`] computes it: the app space's base plus the id).
pub const APP_BY_NAME: &str =
    "SELECT pg_advisory_xact_lock(4683743612465315840 + id) FROM apps WHERE name = $1";
pub const APP_OF_RESOURCE: &str =
    "SELECT pg_advisory_xact_lock(4683743612465315840 + app_id) FROM resources WHERE id = $1";
pub const APP_OF_PARTNER_ID: &str = "SELECT pg_advisory_xact_lock(4683743612465315840 + app_id) \
     FROM resources WHERE service = $1 AND partner_id = $2";
pub const APP_OF_ATTACHMENT: &str =
    "SELECT pg_advisory_xact_lock(4683743612465315840 + app_id) FROM attachments WHERE id = $1";
pub const RESOURCE_APP_OF_ATTACHMENT: &str =
    "SELECT pg_advisory_xact_lock(4683743612465315840 + r.app_id) \
     FROM attachments t JOIN resources r ON r.id = t.resource_id WHERE t.id = $1";

/// The advisory lock key of an app.
pub fn app(app_id: i64) -> i64 {
    ((Space::App as i64) << 56) | (app_id & 0x00ff_ffff_ffff_ffff)
}

/// The advisory lock key of a name in `space` (two names may share one:
/// then their writers wait for each other, nothing worse).
pub fn named(space: Space, parts: &[&str]) -> i64 {
    // FNV-1a: stable across processes and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((space as i64) << 56) | (h & 0x00ff_ffff_ffff_ffff) as i64
}

/// Which app each resource and attachment belongs to, as this process has
/// seen them: facts that never change (a row's app is set when it is made,
/// and ids are never reused), so a lock on a row's app can be taken by its
/// key, without a statement to find the app first. Per store (ids are per
/// database); forgotten past a bound, then found again as needed.
#[derive(Default)]
pub struct Owners {
    resources: std::sync::Mutex<std::collections::HashMap<i64, i64>>,
    attachments: std::sync::Mutex<std::collections::HashMap<i64, (i64, i64)>>,
}

/// Rows remembered of each kind before the map starts over.
const OWNERS_KEPT: usize = 100_000;

impl Owners {
    /// The app of resource `id`, if seen.
    pub fn resource(&self, id: i64) -> Option<i64> {
        self.resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Records that resource `id` belongs to app `app_id`.
    pub fn saw_resource(&self, id: i64, app_id: i64) {
        let mut m = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= OWNERS_KEPT {
            m.clear();
        }
        m.insert(id, app_id);
    }

    /// The app and the resource of attachment `id`, if seen.
    pub fn attachment(&self, id: i64) -> Option<(i64, i64)> {
        self.attachments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Records that attachment `id` is on app `app_id`, of resource
    /// `resource_id`.
    pub fn saw_attachment(&self, id: i64, app_id: i64, resource_id: i64) {
        let mut m = self.attachments.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= OWNERS_KEPT {
            m.clear();
        }
        m.insert(id, (app_id, resource_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_and_the_rust_app_keys_agree() {
        for sql in [
            APP_BY_NAME,
            APP_OF_RESOURCE,
            APP_OF_PARTNER_ID,
            APP_OF_ATTACHMENT,
            RESOURCE_APP_OF_ATTACHMENT,
        ] {
            let base: i64 = sql["SELECT pg_advisory_xact_lock(".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(base + 12345, app(12345), "{sql}");
        }
    }

    #[test]
    fn names_in_different_spaces_or_parts_get_different_keys() {
        assert_ne!(
            named(Space::KvKey, &["kv", "a"]),
            named(Space::KvListing, &["kv", "a"])
        );
        assert_ne!(
            named(Space::KvKey, &["kv", "ab"]),
            named(Space::KvKey, &["kva", "b"])
        );
        assert_eq!(named(Space::Setting, &["x"]), named(Space::Setting, &["x"]));
    }
}
