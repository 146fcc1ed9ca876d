//! A SQLite VFS that writes each commit's WAL frames with one `pwrite`.
//!
//! SQLite appends a commit to the WAL frame by frame, and each frame as two
//! writes: its 24-byte header, then the page. Under provisioning load a
//! commit carries ~100 frames, so the writer thread made ~200 `pwrite`s per
//! commit, and because a frame (4 KiB + 24 bytes) straddles two pages of the
//! kernel's page cache, each of them locked and dirtied one or two folios:
//! a quarter of the writer's time, all of it inside the commit, which is
//! the part of the commit → sync cycle no other thread can overlap. With
//! this VFS: 12,000 provisionings made 302k write calls before, ~45k now.
//!
//! This VFS is SQLite's default one with one change: the WAL file it opens
//! holds a run of appended frames in memory and writes it in one call when
//! the run ends with a commit frame's page (or when anything else touches
//! the file: a read, a sync, a lock, a truncate, a write elsewhere). The
//! WAL's on-disk format is SQLite's own and unchanged.
//!
//! Why this is safe: other connections learn of new frames only from the
//! WAL index (shared memory), which SQLite updates after the commit's last
//! frame is written — by then the run is in the file. The one write of a
//! commit header that no page follows (SQLite rewriting frame checksums in
//! place) is written through at once, and so is everything not appended to
//! a run. What the kernel holds for the file is what SQLite's own writes
//! would have left there; durability still comes from the sync thread's
//! `fdatasync` after the commit returns.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &CStr = c"addonhost-wal";

/// Most bytes held before a run is written anyway: the default VFS writes
/// at most 128 KiB - 1 bytes per call (it masks larger amounts, and would
/// report a full disk).
const MAX_HELD: usize = 0x1ffff;
/// A WAL frame header (SQLite's file format).
const FRAME_HEADER: usize = 24;
/// The WAL file header, written at offset 0 when the WAL starts over.
const WAL_HEADER: usize = 32;

/// The default VFS this one wraps.
static BASE: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the VFS (once per process; not as the default).
pub fn register() -> Result<(), String> {
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` initializes SQLite if needed and
            // returns a VFS that lives as long as the process; ours is
            // leaked for the same reason, as SQLite keeps a pointer to it.
            unsafe {
                let base = ffi::sqlite3_vfs_find(ptr::null());
                if base.is_null() {
                    return Err("SQLite has no default VFS".to_string());
                }
                BASE.store(base, Ordering::Release);
                let mut vfs = *base;
                vfs.pNext = ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.szOsFile = c_int::try_from(REAL_AT + (*base).szOsFile as usize)
                    .map_err(|_| "the default VFS's file is too large".to_string())?;
                vfs.xOpen = Some(open);
                let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("registering the {NAME:?} VFS: SQLite error {rc}"));
                }
                Ok(())
            }
        })
        .clone()
}

/// A WAL file: SQLite sees the leading `sqlite3_file`; the default VFS's
/// own file follows this struct in the same allocation.
#[repr(C)]
struct Gather {
    file: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes appended since the run began, not yet written.
    held: Vec<u8>,
    /// Where `held` goes in the file.
    at: i64,
    /// The last held write was a commit frame's header: the write of its
    /// page completes the commit, and the run is written with it.
    commit_next: bool,
    /// A run that could not be written where SQLite cannot be told (its
    /// shared-memory barrier returns nothing): every later call on the file
    /// fails with this code, so no frames are ever dropped silently.
    failed: c_int,
}

/// Where the default VFS's file starts inside ours.
const REAL_AT: usize = std::mem::size_of::<Gather>().next_multiple_of(16);

fn base() -> *mut ffi::sqlite3_vfs {
    BASE.load(Ordering::Acquire)
}

/// `xOpen`: the default VFS's file, wrapped in a [`Gather`] for the WAL.
///
/// # Safety
///
/// Only SQLite calls it, as the `xOpen` of the VFS [`register`] registered
/// (so after the default VFS is stored), with the arguments `xOpen` takes:
/// `file` points to this VFS's `szOsFile` bytes, aligned as SQLite's
/// allocations are (8 bytes), and the rest are what the default VFS's
/// `xOpen` takes.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base();
    // SAFETY: `register` stored the default VFS before registering this one,
    // and the default VFS lives as long as the process.
    let Some(base_open) = (unsafe { (*base).xOpen }) else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Everything but the WAL is the default VFS's file, unwrapped.
        // SAFETY: SQLite's arguments, passed on unchanged; `file` has room
        // for the default VFS's file (this VFS's `szOsFile` is larger).
        return unsafe { base_open(base, name, file, flags, out_flags) };
    }
    // SAFETY: `file` has this VFS's `szOsFile` bytes: `REAL_AT` and then
    // the default VFS's `szOsFile`, so `real` is inside it, and aligned as
    // `file` is (`REAL_AT` is a multiple of 16).
    let real = unsafe { file.cast::<u8>().add(REAL_AT).cast::<ffi::sqlite3_file>() };
    // SAFETY: `real` points to the default VFS's `szOsFile` bytes (above).
    unsafe { (*real).pMethods = ptr::null() };
    // SAFETY: SQLite's arguments, passed on with `real` as the file (above).
    let rc = unsafe { base_open(base, name, real, flags, out_flags) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: a file whose open failed is closed if the default VFS set
        // its `pMethods` (else it is null, as set above); then neither
        // SQLite nor this VFS uses it, and `file` is in SQLite's memory.
        unsafe {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            (*file).pMethods = ptr::null();
        }
        return rc;
    }
    // SAFETY: `file` has room for a `Gather` (`REAL_AT` is past its end),
    // aligned as SQLite's allocations are; nothing there needs dropping.
    unsafe {
        file.cast::<Gather>().write(Gather {
            file: ffi::sqlite3_file { pMethods: &METHODS },
            real,
            held: Vec::new(),
            at: 0,
            commit_next: false,
            failed: ffi::SQLITE_OK,
        })
    };
    ffi::SQLITE_OK
}

/// A frame header whose "database size after commit" field is set.
fn is_commit_header(bytes: &[u8]) -> bool {
    bytes.len() == FRAME_HEADER && bytes[4..8] != [0; 4]
}

/// The [`Gather`] behind `file`.
///
/// # Safety
///
/// `file` is a WAL file [`open`] made that [`close`] has not closed, and
/// nothing else uses it while the reference lives.
unsafe fn gather<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Gather {
    // SAFETY: `open` wrote a `Gather` at `file`, still live and not in use
    // elsewhere (the caller's guarantee).
    unsafe { &mut *file.cast::<Gather>() }
}

/// The methods of the default VFS's file under `g`.
///
/// # Safety
///
/// `g` is open (its default VFS's file was opened and not yet closed), and
/// the default VFS's methods outlive `'a`.
unsafe fn methods<'a>(g: &Gather) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: an open file of the default VFS has its `pMethods` set, to
    // methods that outlive `'a` (the caller's guarantee).
    unsafe { &*(*g.real).pMethods }
}

/// Writes `bytes` at `at` in the default VFS's file, now.
///
/// # Safety
///
/// `g` is open (its default VFS's file was opened and not yet closed).
unsafe fn write_through(g: &Gather, bytes: &[u8], at: i64) -> c_int {
    let Ok(len) = c_int::try_from(bytes.len()) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: `g` is open (the caller's guarantee); the default VFS's own
    // `xWrite`, given its own file and `len` bytes at `bytes`.
    unsafe {
        match methods(g).xWrite {
            Some(write) => write(g.real, bytes.as_ptr().cast(), len, at),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

/// Runs of more than one write written (for the tests: the VFS is in use
/// and gathers).
#[cfg(test)]
static GATHERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes the held run, if any.
///
/// # Safety
///
/// `g` is open (its default VFS's file was opened and not yet closed).
unsafe fn flush(g: &mut Gather) -> c_int {
    if g.failed != ffi::SQLITE_OK {
        return g.failed;
    }
    g.commit_next = false;
    if g.held.is_empty() {
        return ffi::SQLITE_OK;
    }
    #[cfg(test)]
    if g.held.len() > WAL_HEADER {
        GATHERED.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: `g` is open (the caller's guarantee).
    let rc = unsafe { write_through(g, &g.held, g.at) };
    g.held.clear();
    rc
}

/// `xWrite`: held if it extends a run (or may start one), else written
/// through after the run.
///
/// # Safety
///
/// Only SQLite calls it, as the `xWrite` of a WAL file [`open`] made that
/// [`close`] has not closed, with no other call on that file running
/// meanwhile, and `amount` bytes to read at `data`.
unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `file` is an open WAL file of ours, not in use elsewhere (the
    // caller's guarantee).
    let g = unsafe { gather(file) };
    // SAFETY: SQLite gives `amount` bytes at `data` for this call (the
    // caller's guarantee); they are SQLite's, not `g`'s.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize) };
    let appends = !g.held.is_empty() && offset == g.at + g.held.len() as i64;
    if appends && g.held.len() + bytes.len() <= MAX_HELD {
        g.held.extend_from_slice(bytes);
        if g.commit_next {
            // SAFETY: `g` is open (the caller's guarantee).
            return unsafe { flush(g) };
        }
        g.commit_next = is_commit_header(bytes);
        return ffi::SQLITE_OK;
    }
    // SAFETY: `g` is open (the caller's guarantee).
    let rc = unsafe { flush(g) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // A run starts at the WAL header or at a frame header that is not a
    // commit's; a commit header written with no run before it may be an
    // in-place rewrite that no page follows, so it goes through.
    let starts_run = (bytes.len() == WAL_HEADER && offset == 0)
        || (bytes.len() == FRAME_HEADER && !is_commit_header(bytes));
    if starts_run {
        g.held.extend_from_slice(bytes);
        g.at = offset;
        return ffi::SQLITE_OK;
    }
    // SAFETY: `g` is open (the caller's guarantee).
    unsafe { write_through(g, bytes, offset) }
}

/// `xClose`: the held run written, the default VFS's file closed, and the
/// [`Gather`] dropped.
///
/// # Safety
///
/// Only SQLite calls it, as the `xClose` of a WAL file [`open`] made that
/// is not closed yet, with no other call on that file running meanwhile,
/// and SQLite uses the file no more (but to free it).
unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let g = file.cast::<Gather>();
    // SAFETY: `g` is an open WAL file of ours, not in use elsewhere (the
    // caller's guarantee).
    let flushed = unsafe { flush(&mut *g) };
    // SAFETY: as above.
    let real = unsafe { (*g).real };
    // SAFETY: as above; the default VFS's own `xClose`, given its own file,
    // which nothing uses after.
    let closed = unsafe {
        match methods(&*g).xClose {
            Some(close) => close(real),
            None => ffi::SQLITE_OK,
        }
    };
    // SAFETY: `open` wrote the `Gather`, dropped here once: SQLite closes a
    // file once and uses it no more, and its `pMethods` is cleared.
    unsafe {
        ptr::drop_in_place(g);
        (*file).pMethods = ptr::null();
    }
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

/// Delegates a method to the default VFS's file, writing the held run
/// first so the file is as SQLite left it.
macro_rules! delegate {
    ($name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        #[doc = concat!("`", stringify!($method), "`: passed on, after the held run.")]
        ///
        /// # Safety
        ///
        /// Only SQLite calls it, as this method of a WAL file [`open`] made
        /// that [`close`] has not closed, with no other call on that file
        /// running meanwhile, and the other arguments as the method takes
        /// them (they go to the default VFS's file unchanged).
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: `file` is an open WAL file of ours, not in use
            // elsewhere (the caller's guarantee).
            let g = unsafe { gather(file) };
            // SAFETY: `g` is open (as above).
            let rc = unsafe { flush(g) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            // SAFETY: `g` is open (as above); the default VFS's own method,
            // given its own file and SQLite's arguments unchanged (or, if it
            // has none, `$missing` with those arguments).
            unsafe {
                match methods(g).$method {
                    Some(f) => f(g.real $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

delegate!(read, xRead, ffi::SQLITE_IOERR_READ, (buf: *mut c_void, amount: c_int, offset: ffi::sqlite3_int64));
delegate!(truncate, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, (size: ffi::sqlite3_int64));
delegate!(sync, xSync, ffi::SQLITE_IOERR_FSYNC, (flags: c_int));
delegate!(file_size, xFileSize, ffi::SQLITE_IOERR_FSTAT, (size: *mut ffi::sqlite3_int64));
delegate!(lock, xLock, ffi::SQLITE_IOERR_LOCK, (level: c_int));
delegate!(unlock, xUnlock, ffi::SQLITE_IOERR_UNLOCK, (level: c_int));
delegate!(check_reserved_lock, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, (out: *mut c_int));
delegate!(file_control, xFileControl, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void));
delegate!(shm_map, xShmMap, ffi::SQLITE_IOERR_SHMMAP, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
delegate!(shm_lock, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, (offset: c_int, n: c_int, flags: c_int));
delegate!(shm_unmap, xShmUnmap, ffi::SQLITE_OK, (delete: c_int));
delegate!(fetch, xFetch, { *out = ptr::null_mut(); ffi::SQLITE_OK }, (offset: ffi::sqlite3_int64, amount: c_int, out: *mut *mut c_void));
delegate!(unfetch, xUnfetch, ffi::SQLITE_OK, (offset: ffi::sqlite3_int64, p: *mut c_void));

/// `xSectorSize`: passed on.
///
/// # Safety
///
/// Only SQLite calls it, as the `xSectorSize` of a WAL file [`open`]
/// made that [`close`] has not closed, with no other call on that file
/// running meanwhile.
unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is an open WAL file of ours, not in use elsewhere (the
    // caller's guarantee); the default VFS's own method, given its own file.
    unsafe {
        let g = gather(file);
        methods(g).xSectorSize.map_or(4096, |f| f(g.real))
    }
}

/// `xDeviceCharacteristics`: passed on.
///
/// # Safety
///
/// Only SQLite calls it, as the `xDeviceCharacteristics` of a WAL file [`open`]
/// made that [`close`] has not closed, with no other call on that file
/// running meanwhile.
unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is an open WAL file of ours, not in use elsewhere (the
    // caller's guarantee); the default VFS's own method, given its own file.
    unsafe {
        let g = gather(file);
        methods(g).xDeviceCharacteristics.map_or(0, |f| f(g.real))
    }
}

/// `xShmBarrier`: passed on, after the held run.
///
/// # Safety
///
/// Only SQLite calls it, as the `xShmBarrier` of a WAL file [`open`]
/// made that [`close`] has not closed, with no other call on that file
/// running meanwhile.
unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: `file` is an open WAL file of ours, not in use elsewhere (the
    // caller's guarantee); the default VFS's own method, given its own file.
    unsafe {
        let g = gather(file);
        let rc = flush(g);
        if rc != ffi::SQLITE_OK {
            g.failed = rc;
        }
        if let Some(f) = methods(g).xShmBarrier {
            f(g.real)
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::Path;

    fn writer(path: &Path, cache_pages: i64) -> Connection {
        crate::prepare_sqlite().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.pragma_update(None, "cache_size", cache_pages).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        conn
    }

    /// The database and its WAL as the files are now, with the writer still
    /// open (what a crash would leave), opened afresh: SQLite recovers the
    /// WAL, checking every frame's checksum.
    fn crash_copy(dir: &Path) -> (tempfile::TempDir, Connection) {
        let copy = tempfile::tempdir().unwrap();
        for name in ["t.db", "t.db-wal"] {
            std::fs::copy(dir.join(name), copy.path().join(name)).unwrap();
        }
        let recovered = Connection::open(copy.path().join("t.db")).unwrap();
        (copy, recovered)
    }

    /// Rows and a digest of their contents, as another connection (SQLite's
    /// default VFS) sees them.
    fn seen(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(k * length(v) + unicode(hex(v))), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// Commits through the VFS — small ones, big ones that spill pages
    /// into the WAL before their commit and rewrite them (so SQLite
    /// rewrites frame checksums in place), and ones that restart the WAL
    /// after a checkpoint — are visible to another connection as soon as
    /// they commit, and whole in a copy of the files taken without closing
    /// the writer (what a crash would leave), which SQLite recovers by
    /// checking every frame's checksum.
    #[test]
    fn commits_are_visible_at_once_and_whole_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let before = GATHERED.load(Ordering::Relaxed);
        // 8 pages of cache: a transaction of a few hundred KiB spills.
        let w = writer(&path, 8);
        let reader = Connection::open(&path).unwrap();
        let mut rows = 0i64;
        for round in 0..60i64 {
            let tx = w.unchecked_transaction().unwrap();
            let n = if round % 10 == 9 { 120 } else { 3 };
            for _ in 0..n {
                rows += 1;
                let v = vec![(rows % 251) as u8; 700 + (rows % 900) as usize];
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![rows, v],
                )
                .unwrap();
            }
            if n > 3 {
                // Pages spilled above are changed again before the commit.
                tx.execute("UPDATE t SET v = v || x'00' WHERE k > ?1", [rows - n])
                    .unwrap();
            }
            tx.commit().unwrap();
            assert_eq!(seen(&reader), seen(&w), "after commit {round}");
            assert_eq!(seen(&reader).0, rows);
            if round == 30 {
                // Copied back: the next commit starts the WAL over.
                let (busy, frames, copied): (i64, i64, i64) = w
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .unwrap();
                assert_eq!((busy, frames), (0, copied));
            }
        }
        assert!(
            GATHERED.load(Ordering::Relaxed) > before,
            "no run of frames was gathered: the VFS is not in use"
        );
        let expected = seen(&w);

        let (_copy, recovered) = crash_copy(dir.path());
        let check: String = recovered
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        assert_eq!(seen(&recovered), expected);
        drop((w, reader));
    }

    /// A transaction that is rolled back after spilling leaves nothing
    /// behind, and the writer goes on committing.
    #[test]
    fn a_rolled_back_spill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = writer(&path, 8);
        w.execute("INSERT INTO t (k, v) VALUES (1, x'01')", [])
            .unwrap();
        {
            let tx = w.unchecked_transaction().unwrap();
            for k in 2..200i64 {
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![k, vec![7u8; 900]],
                )
                .unwrap();
            }
            tx.rollback().unwrap();
        }
        w.execute("INSERT INTO t (k, v) VALUES (2, x'02')", [])
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        assert_eq!(seen(&reader), seen(&w));
        assert_eq!(seen(&reader).0, 2);
        let (_copy, recovered) = crash_copy(dir.path());
        assert_eq!(seen(&recovered), seen(&w));
    }
}
