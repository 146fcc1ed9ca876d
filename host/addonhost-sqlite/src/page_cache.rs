//! SQLite's own page cache, with one of its costs taken out.
//!
//! When SQLite rebalances a b-tree it may swap two pages' numbers, parking
//! one of them for a moment under the number of the "pending byte" page
//! (at 1 GiB: page 262,145 with 4 KiB pages), a number no real page ever
//! has. SQLite's page cache remembers the largest number it has seen until
//! the next truncation, and at the end of every write transaction it
//! truncates to the database's size. With that stale maximum far above the
//! database size, the truncation walks the whole hash table and every page
//! in it instead of a few slots — per commit, in proportion to the cache:
//! with the writer's 64 MiB cache warm, a tenth of the writer thread's time
//! under provisioning load.
//!
//! This cache is SQLite's default one (`pcache1`) behind a shim that parks
//! such a page under the first number above every page in the cache
//! instead, so the cache's maximum stays next to the database's size. The
//! pages, their contents and every other call are SQLite's own.
//!
//! SQLite's page cache is process-wide and can only be chosen before
//! SQLite initializes: [`install`] runs before the store opens its first
//! connection. If something else in the process initialized SQLite first,
//! the default cache stays (and everything works as before).

use std::ffi::{c_int, c_uint};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// SQLite's own page cache, which this one wraps.
struct Inner(ffi::sqlite3_pcache_methods2);
// SAFETY: a table of function pointers plus SQLite's own `pArg`, which
// SQLite itself shares between threads.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`: SQLite itself shares the table and `pArg` between
// threads.
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the page cache, if SQLite is not initialized yet (once per
/// process); whether it is in use.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        // SAFETY: `sqlite3_config` fails with `SQLITE_MISUSE` (changing
        // nothing) once SQLite is initialized; SQLite copies both structs.
        unsafe {
            let mut inner: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            if ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_GETPCACHE2,
                &mut inner as *mut ffi::sqlite3_pcache_methods2,
            ) != ffi::SQLITE_OK
                || inner.xCreate.is_none()
            {
                return false;
            }
            let _ = INNER.set(Inner(inner));
            let ours = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: inner.pArg,
                xInit: inner.xInit,
                xShutdown: inner.xShutdown,
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PCACHE2,
                &ours as *const ffi::sqlite3_pcache_methods2,
            ) == ffi::SQLITE_OK
        }
    })
}

/// Page swaps parked away from the pending-byte page (for the tests).
#[cfg(test)]
pub static PARKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One cache (one per connection and database).
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The number SQLite parks pages under while it swaps two.
    pending: c_uint,
    /// Where the page SQLite thinks is at `pending` really is, if any.
    parked: Option<(c_uint, *mut ffi::sqlite3_pcache_page)>,
    /// No page in the inner cache has a larger number.
    max: c_uint,
}

fn methods() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER.get().expect("the page cache is installed").0
}

/// The `Cache` behind `p`.
///
/// # Safety
///
/// `p` is a cache [`create`] made that [`destroy`] has not freed, and nothing
/// else uses it while the reference lives.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: `p` is a live `Cache`, not in use elsewhere (the caller's
    // guarantee).
    unsafe { &mut *p.cast::<Cache>() }
}

/// SQLite's `PENDING_BYTE` (its lock byte, at 1 GiB; fixed outside its own
/// tests).
const PENDING_BYTE: u32 = 0x4000_0000;

/// `xCreate`: a cache of SQLite's own, wrapped.
///
/// # Safety
///
/// Only SQLite calls it, as the `xCreate` of the page cache [`install`]
/// configured, with the page cache initialized.
unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    // SAFETY: SQLite's own `xCreate`, called as SQLite called ours.
    let inner =
        unsafe { (methods().xCreate.expect("checked at install"))(page_size, extra, purgeable) };
    if inner.is_null() {
        return ptr::null_mut();
    }
    let pending = PENDING_BYTE / page_size.max(1) as u32 + 1;
    Box::into_raw(Box::new(Cache {
        inner,
        pending,
        parked: None,
        max: 0,
    }))
    .cast()
}

/// `xCachesize`: passed on.
///
/// # Safety
///
/// Only SQLite calls it, as the `xCachesize` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile.
unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    if let Some(f) = methods().xCachesize {
        // SAFETY: `p` is a live cache of ours (the caller's guarantee); SQLite's
        // own method, given its own cache.
        unsafe { f(cache(p).inner, n) }
    }
}

/// `xPagecount`: passed on.
///
/// # Safety
///
/// Only SQLite calls it, as the `xPagecount` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile.
unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: `p` is a live cache of ours (the caller's guarantee); SQLite's
    // own method, given its own cache.
    unsafe { methods().xPagecount.map_or(0, |f| f(cache(p).inner)) }
}

/// `xFetch`: passed on, with a parked page found where it really is.
///
/// # Safety
///
/// Only SQLite calls it, as the `xFetch` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile.
unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: `p` is a live cache of ours, not in use elsewhere (the
    // caller's guarantee).
    let c = unsafe { cache(p) };
    let key = match c.parked {
        Some((at, _)) if key == c.pending => at,
        _ => key,
    };
    // SAFETY: SQLite's own `xFetch`, given its own cache.
    let page = unsafe { (methods().xFetch.expect("a page cache fetches"))(c.inner, key, create) };
    if !page.is_null() && key > c.max {
        c.max = key;
    }
    page
}

/// `xUnpin`: passed on; a parked page discarded is parked no more.
///
/// # Safety
///
/// Only SQLite calls it, as the `xUnpin` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile, and `page` is
/// a page this cache's [`fetch`] returned.
unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: `p` is a live cache of ours, not in use elsewhere (the
    // caller's guarantee).
    let c = unsafe { cache(p) };
    if discard != 0 && matches!(c.parked, Some((_, parked)) if parked == page) {
        c.parked = None;
    }
    if let Some(f) = methods().xUnpin {
        // SAFETY: SQLite's own method, given its own cache and one of its
        // pages (`fetch` returns the inner cache's pages unchanged).
        unsafe { f(c.inner, page, discard) }
    }
}

/// `xRekey`: passed on, parking a page SQLite parks under the pending
/// number just above every page in the cache instead.
///
/// # Safety
///
/// Only SQLite calls it, as the `xRekey` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile, and `page` is
/// a page this cache's [`fetch`] returned.
unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: `p` is a live cache of ours, not in use elsewhere (the
    // caller's guarantee).
    let c = unsafe { cache(p) };
    let Some(f) = methods().xRekey else { return };
    if new == c.pending && c.parked.is_none() && c.max < c.pending {
        // Parked just above every page in the cache: the inner cache's
        // maximum stays next to the database's size.
        let at = c.max + 1;
        c.parked = Some((at, page));
        c.max = at;
        // SAFETY: SQLite's own method, given its own cache and one of its
        // pages (`fetch` returns the inner cache's pages unchanged).
        return unsafe { f(c.inner, page, old, at) };
    }
    let old = match c.parked {
        Some((at, parked)) if old == c.pending && parked == page => {
            c.parked = None;
            #[cfg(test)]
            PARKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            at
        }
        _ => old,
    };
    c.max = c.max.max(new);
    // SAFETY: as above.
    unsafe { f(c.inner, page, old, new) }
}

/// `xTruncate`: passed on, with a parked page dropped from where it
/// really is.
///
/// # Safety
///
/// Only SQLite calls it, as the `xTruncate` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile.
unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: `p` is a live cache of ours, not in use elsewhere (the
    // caller's guarantee).
    let c = unsafe { cache(p) };
    let Some(f) = methods().xTruncate else { return };
    if let Some((at, page)) = c.parked {
        if limit <= c.pending && at < limit {
            // SQLite drops the page it parked, which the inner cache would
            // keep where it really is: moved back under the pending number
            // first. (SQLite never truncates mid-swap; this keeps it exact.)
            if let Some(rekey) = methods().xRekey {
                // SAFETY: SQLite's own method, given its own cache and the
                // page SQLite parked, which it got from this cache and has
                // not discarded (`unpin` forgets a parked page discarded).
                unsafe { rekey(c.inner, page, at, c.pending) };
            }
        }
        if limit <= c.pending {
            c.parked = None;
        }
    }
    // SAFETY: SQLite's own method, given its own cache.
    unsafe { f(c.inner, limit) };
    c.max = c.max.min(limit.saturating_sub(1));
}

/// `xDestroy`: passed on, and the cache freed.
///
/// # Safety
///
/// Only SQLite calls it, as the `xDestroy` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made, not yet destroyed, with no
/// other call on it running, and SQLite uses it no more.
unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `create` and is destroyed
    // once, with nothing using it after (the caller's guarantee).
    let c = unsafe { Box::from_raw(p.cast::<Cache>()) };
    if let Some(f) = methods().xDestroy {
        // SAFETY: SQLite's own method, given its own cache, which nothing
        // uses after.
        unsafe { f(c.inner) }
    }
}

/// `xShrink`: passed on.
///
/// # Safety
///
/// Only SQLite calls it, as the `xShrink` of the page cache [`install`]
/// configured: `p` is a cache [`create`] made that [`destroy`] has not
/// freed, with no other call on that cache running meanwhile.
unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().xShrink {
        // SAFETY: `p` is a live cache of ours (the caller's guarantee);
        // SQLite's own method, given its own cache.
        unsafe { f(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};
    use std::sync::atomic::Ordering;

    /// Random-keyed index inserts make SQLite rebalance with page swaps;
    /// through this cache — with a cache small enough to evict, and with
    /// transactions rolled back mid-way — the database stays intact and
    /// holds exactly what was committed, as a fresh connection sees it.
    #[test]
    fn pages_swapped_through_the_cache_stay_intact() {
        crate::prepare_sqlite().unwrap();
        assert!(install(), "SQLite was initialized before the page cache");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let parked = PARKED.load(Ordering::Relaxed);
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "cache_size", 64).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, v BLOB NOT NULL)",
        )
        .unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut committed = 0i64;
        for round in 0..40 {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..100 {
                let key = format!("{:016x}{:016x}", next(), next());
                let v = vec![(next() % 256) as u8; 200 + (next() % 300) as usize];
                tx.execute("INSERT INTO t (key, v) VALUES (?1, ?2)", params![key, v])
                    .unwrap();
            }
            if round % 4 == 3 {
                tx.rollback().unwrap();
            } else {
                tx.commit().unwrap();
                committed += 100;
            }
        }
        assert!(
            PARKED.load(Ordering::Relaxed) > parked,
            "no page swap went through the cache"
        );
        let fresh = Connection::open(&path).unwrap();
        for c in [&conn, &fresh] {
            let check: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            let n: i64 = c
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, committed);
        }
    }
}
