//! The writer thread and its helpers: group commits in savepoints, the
//! sync thread that makes committed batches durable, the checkpoint thread,
//! and the rewinds that keep the WAL from growing under load.

use super::*;

/// What the writer thread is told.
pub(crate) enum Msg {
    Write(Job),
    /// The sync thread made this many committed batches durable.
    Synced(usize),
    /// The checkpoint thread copied the WAL back as far as it could.
    Checkpointed,
    /// The `Db` is dropped: finish what is queued and stop.
    Stop,
}

/// What the writer thread records of its commits.
pub(crate) struct Committed<'a> {
    pub(crate) count: &'a AtomicU64,
    pub(crate) last_failure: &'a Mutex<Option<(std::time::Instant, String)>>,
    pub(crate) path: &'a Path,
}

/// The sync thread, handed every committed batch by the writer.
pub(crate) struct Syncs {
    pub(crate) send: mpsc::Sender<Vec<Report>>,
    pub(crate) thread: JoinHandle<()>,
}

/// The sync thread: makes committed batches durable, then tells their
/// writers (and the writer thread, which commits its next batch then).
///
/// The writer commits with `synchronous=NORMAL`, which writes the WAL but
/// does not wait for the disk; this thread `fdatasync`s the WAL for every
/// batch committed meanwhile and only then reports them. So a write still
/// resolves only once it is on disk, but the write lock is never held
/// across a sync. A commit is visible to readers a moment before it is
/// durable; if the machine fails in that window, SQLite's recovery keeps a
/// prefix of the WAL, so that commit and all later ones are lost together,
/// and none of their writers was told they succeeded.
pub(crate) fn sync_batches(
    wal: &Path,
    committed: mpsc::Receiver<Vec<Report>>,
    writer: mpsc::Sender<Msg>,
    poisoned: &Poison,
) {
    // One descriptor for the life of the store: after a failed fsync the
    // kernel may have dropped the dirty pages, and a fresh descriptor's
    // fsync could then succeed over data that is gone. Reopened only if
    // SQLite replaced the file (another inode at the path).
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        let already = poisoned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let synced = match already {
            Some(why) => Err(Failure::Unavailable(why)),
            None => sync_file(wal, &mut file).map_err(|e| {
                let why: Arc<str> = format!(
                    "the store could not make its writes durable (syncing {} failed: {e}); it acknowledges no write until addonhost restarts",
                    wal.display()
                )
                .into();
                tracing::error!("{why}");
                *poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                Failure::Unavailable(why)
            }),
        };
        let n = batches.len();
        for report in batches.into_iter().flatten() {
            report(synced.clone());
        }
        let _ = writer.send(Msg::Synced(n));
    }
}

/// `fdatasync` of the file at `path` (the WAL, the database) through `file`,
/// opened once (and again only if the file at `path` is another one now).
pub(crate) fn sync_file(path: &Path, file: &mut Option<std::fs::File>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let current = std::fs::metadata(path)?.ino();
    if file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_none_or(|m| m.ino() != current)
    {
        *file = Some(std::fs::File::open(path)?);
    }
    file.as_ref().expect("opened above").sync_data()
}

/// The checkpoint thread, woken by the writer.
pub(crate) struct Checkpoints {
    pub(crate) wake: mpsc::SyncSender<()>,
    pub(crate) thread: JoinHandle<()>,
}

/// The open transaction of the writer thread.
#[derive(Default)]
pub(crate) struct Batch {
    /// Writers told once the batch is on disk.
    reports: Vec<Report>,
    /// Writes run in it, including those already answered.
    writes: usize,
    /// Set when a savepoint could not be released or undone: the writers'
    /// changes cannot be told apart any more, so the batch is rolled back
    /// as a whole.
    poisoned: Option<String>,
}

/// The writer thread, until the `Db` is dropped.
///
/// Writes run as they arrive, each in its own savepoint of the open
/// transaction. The transaction is committed as soon as no write is waiting
/// and the disk is free (no sync in progress): while a sync runs, arriving
/// writes join the open transaction, so the busier the store the larger
/// the batches, and an idle store commits every write at once.
pub(crate) fn write_batches(
    conn: Connection,
    queue: mpsc::Receiver<Msg>,
    commits: &Committed,
    checkpoints: Checkpoints,
    syncs: Syncs,
) {
    let mut open: Option<Batch> = None;
    // Committed batches handed to the sync thread and not yet durable.
    let mut syncing = 0usize;
    let mut rewind = Rewind::default();
    // Set here, after `Db::open` set `wal_autocheckpoint` (which replaces
    // the hook), and read on this thread, where the connection commits.
    conn.wal_hook(Some(|_, frames| {
        WAL_FRAMES.set(frames);
        Ok(())
    }));
    loop {
        let msg = match queue.try_recv() {
            Ok(msg) => msg,
            Err(mpsc::TryRecvError::Disconnected) => Msg::Stop,
            Err(mpsc::TryRecvError::Empty) => {
                if syncing == 0 {
                    if let Some(batch) = open.take() {
                        syncing += commit(&conn, batch, commits, &checkpoints, &syncs);
                        rewind.after_commit(&conn);
                        continue;
                    }
                }
                queue.recv().unwrap_or(Msg::Stop)
            }
        };
        match msg {
            Msg::Write(job) => {
                if open.is_none() {
                    if let Err(e) = begin_immediate(&conn) {
                        let why = format!("{e:#}");
                        (job(Err(why.clone())).report)(Err(why.into()));
                        continue;
                    }
                    open = Some(Batch::default());
                }
                let batch = open.as_mut().expect("a transaction is open");
                run_in_savepoint(&conn, job, batch);
                if batch.writes >= MAX_BATCH {
                    let full = open.take().expect("a transaction is open");
                    syncing += commit(&conn, full, commits, &checkpoints, &syncs);
                    rewind.after_commit(&conn);
                }
            }
            Msg::Synced(n) => syncing = syncing.saturating_sub(n),
            Msg::Checkpointed => rewind.checkpointed = true,
            Msg::Stop => {
                if let Some(batch) = open.take() {
                    commit(&conn, batch, commits, &checkpoints, &syncs);
                }
                break;
            }
        }
    }
    drop(syncs.send);
    let _ = syncs.thread.join();
    drop(checkpoints.wake);
    let _ = checkpoints.thread.join();
}

thread_local! {
    /// Frames in the WAL after the writer thread's last commit, as SQLite's
    /// WAL hook reports them (the writer's connection commits on its thread).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// When the writer next checkpoints so that the WAL starts over (see
/// [`REWIND_FRAMES`]).
#[derive(Default)]
pub(crate) struct Rewind {
    /// The checkpoint thread finished a round since the writer last tried:
    /// only the commits made during that round are left to copy, so the
    /// writer's own checkpoint is short.
    checkpointed: bool,
    /// The WAL's frames when the writer's checkpoint copied them all: the
    /// next commit should start the WAL over, which a reader that began
    /// before the checkpoint and is still reading prevents.
    copied_all_of: Option<i32>,
}

impl Rewind {
    /// Called between transactions: once due, and right after a round of
    /// the checkpoint thread, copies back what that round left (a reader
    /// still inside the WAL only puts it off to the next round).
    fn after_commit(&mut self, conn: &Connection) {
        if let Some(frames) = self.copied_all_of.take() {
            if WAL_FRAMES.get() < frames {
                return; // started over
            }
            // A reader kept the WAL from starting over: try again after
            // the checkpoint thread's next round.
        }
        if WAL_FRAMES.get() < REWIND_FRAMES || !std::mem::take(&mut self.checkpointed) {
            return;
        }
        let done = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map(|(busy, frames, copied)| (busy == 0 && frames == copied).then_some(frames));
        match done {
            Ok(Some(frames)) => self.copied_all_of = Some(frames as i32),
            Ok(None) => {}
            Err(e) => tracing::warn!("checkpointing the store: {e}"),
        }
    }
}

pub(crate) fn run_in_savepoint(conn: &Connection, job: Job, batch: &mut Batch) {
    batch.writes += 1;
    if let Err(e) = run(conn, "SAVEPOINT writer") {
        // The job reports this error whatever the commit's outcome.
        (job(Err(e.to_string())).report)(Ok(()));
        batch.poisoned = Some(e.to_string());
        return;
    }
    let ran = job(Ok(conn));
    let end = if ran.ok {
        run(conn, "RELEASE writer")
    } else {
        run(conn, "ROLLBACK TO writer").and_then(|()| run(conn, "RELEASE writer"))
    };
    if let Err(e) = end {
        batch.poisoned = Some(e.to_string());
    }
    match ran.answer {
        Answer::OnDisk => batch.reports.push(ran.report),
        Answer::Staged => (ran.report)(match &batch.poisoned {
            None => Ok(()),
            Some(e) => Err(poisoned(e).into()),
        }),
    }
}

/// Why a poisoned batch was not committed.
pub(crate) fn poisoned(e: &str) -> String {
    format!("a write in the same batch could not be undone ({e})")
}

/// Commits the open transaction and hands its writers to the sync thread
/// (or tells them why it failed); the number of batches handed over.
pub(crate) fn commit(
    conn: &Connection,
    batch: Batch,
    commits: &Committed,
    checkpoints: &Checkpoints,
    syncs: &Syncs,
) -> usize {
    let outcome = match batch.poisoned {
        None => run(conn, "COMMIT").map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Failure::DiskFull,
            _ => Failure::Other(e.to_string().into()),
        }),
        Some(e) => Err(Failure::Other(poisoned(&e).into())),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let failure = match &outcome {
        Ok(()) => None,
        Err(Failure::DiskFull) => Some(
            StoreError::DiskFull {
                path: commits.path.display().to_string(),
            }
            .to_string(),
        ),
        Err(Failure::Unavailable(e) | Failure::Other(e)) => Some(e.to_string()),
    };
    if let Some(why) = failure {
        *commits
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), why));
    }
    let done = commits.count.fetch_add(1, Ordering::SeqCst) + 1;
    if done.is_multiple_of(CHECKPOINT_EVERY) {
        // Already awake: this round is covered by the one in progress.
        let _ = checkpoints.wake.try_send(());
    }
    match outcome {
        Ok(()) if batch.reports.is_empty() => 0,
        Ok(()) => match syncs.send.send(batch.reports) {
            Ok(()) => 1,
            Err(mpsc::SendError(reports)) => {
                for report in reports {
                    report(Err(Failure::Other(
                        "the store's sync thread stopped".into(),
                    )));
                }
                0
            }
        },
        Err(e) => {
            for report in batch.reports {
                report(Err(e.clone()));
            }
            0
        }
    }
}
