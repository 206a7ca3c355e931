//! The audit pool: a few `audit-N` threads, however many files (vaults) the node serves, each
//! serving the files of its lane. For a file with a spool ([`super::spool`], the default), the
//! thread moves the spooled rows into SQLite every few milliseconds, and a request never waits
//! for it (only the audit view waits, for its rows to be moved: [`AuditWriter::commit_settled`]).
//! For a file without one (`--audit-sync full`, or a spool another process holds), requests
//! wait for their row's group commit, below.
//!
//! A file is always served by the same thread, so its rows commit in queue order; a thread
//! commits each file of a gathered batch in its own transaction. Before, every file had its own
//! thread, which on a hosted node with thousands of vaults meant thousands of threads.
//!
//! Handing a row over costs a cross-thread wake, and on a shared 2-core machine every wake is a
//! context switch that may wait for a scheduler slice. A runtime worker therefore does not wake
//! the pool thread per row. The first request to queue a row on a lane becomes its committer
//! ([`Commit`]): it steps aside until its worker has run everything else it has, then commits
//! every row queued meanwhile in one batch itself, if that cannot block (no other committer on
//! the lane, the file's write lock free, no sync to disk), which saves the pool thread's wake
//! and its context switches; otherwise it wakes the pool thread once. A worker about to go idle
//! ([`before_worker_park`]) does the same for rows no committer took. Either way a lane has one
//! committer at a time, so its rows commit in queue order.
//! Must never: answer a caller before its row is durable (spooled, or its transaction committed),
//! drop a row, or make a runtime worker wait for SQLite (a lock another connection holds, or a
//! sync to disk).

use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, oneshot};

use super::AuditEvent;
use super::spool::{Appended, Refusal, Spool, Taken};
use crate::store::{AuditRecord, AuditStore, AuditSync, StoreError};

/// How many waiting rows one gathering takes at most; bounds the latency of a batch.
const MAX_BATCH: usize = 1024;
/// How many rows may wait for one pool thread before callers are made to wait for room.
const QUEUE: usize = 8192;
/// A worker that stays busy wakes the writer itself once this many rows wait, rather than only
/// when it goes idle.
const EAGER: usize = 64;
/// The longest a pool thread sleeps without being woken while rows have been arriving; only a
/// safety net (see [`defer_wake`]). After [`QUIET_RECHECKS`] empty rechecks it sleeps for
/// [`QUIET_SLEEP`] instead, so an idle node's pool threads wake about once a second.
const IDLE_RECHECK: Duration = Duration::from_millis(5);
const QUIET_RECHECKS: u32 = 200;
const QUIET_SLEEP: Duration = Duration::from_secs(1);

/// How long a pool thread lets spooled rows gather before it moves them (while rows keep
/// coming): short, so that copiers and `clavitor audit list` lag by little. Once a move finds
/// [`BUSY_MOVE`] rows or more, the next waits [`MOVE_EVERY_BUSY`]: each move pays a transaction,
/// a few WAL pages rewritten and the settled mark, a quarter of a move's cost at 80,000 reads/s
/// and 5 ms, and bigger batches spread it thinner. A reader of the audit view, a half-full
/// spool and a running-low reservation wake the thread sooner either way.
const MOVE_EVERY: Duration = Duration::from_millis(5);
const MOVE_EVERY_BUSY: Duration = Duration::from_millis(20);
const BUSY_MOVE: usize = 256;
/// How often a pool thread looks at its quiet spools for rows written by others (the CLI, a
/// passkey-approved write), whose ids the spool's reservation must then jump past.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a row waits for room in a full spool, or a reader for its rows to be moved, before
/// it gives up (a pool thread that cannot write to the file: its alert says why).
const SPOOL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("audit writer has stopped")]
    Stopped,
}

/// One file's audit connection. Only its pool thread locks it; it closes when the last writer
/// handle and the last queued row for it are gone.
struct AuditFile {
    store: Mutex<AuditStore>,
    path: PathBuf,
    /// Where its rows go first, if it has one (see [`super::spool`]).
    spool: Option<Spool>,
    /// The pool thread's side of the spool: a batch to write again after a failed move, and
    /// the file's `data_version` at the last sweep.
    mover: Mutex<Mover>,
    /// The file is on its lane's `dirty` list: rows wait in its spool.
    dirty: AtomicBool,
    /// Every spooled id below this is in SQLite ([`AuditWriter::commit_settled`] waits on it).
    moved_below: AtomicI64,
    /// Told after every move, and when a move failed.
    moved: Notify,
}

#[derive(Default)]
struct Mover {
    retry: Option<Taken>,
    data_version: i64,
    failing: bool,
}

struct Job {
    file: Arc<AuditFile>,
    record: AuditRecord,
    done: oneshot::Sender<Result<i64, String>>,
}

/// One pool thread's queue.
struct Lane {
    jobs: Mutex<Vec<Job>>,
    /// Room in `jobs`: a caller takes a permit before queueing, the thread returns them after
    /// the commit.
    room: Semaphore,
    thread: Thread,
    /// This lane's bit in a worker's [`OWED`] mask.
    bit: u8,
    /// Held by whoever drains and commits the lane's rows: its pool thread, or a runtime worker
    /// about to go idle (which only ever tries it).
    committing: Mutex<()>,
    /// Set by a worker that found `committing` taken while its rows wait: whoever holds it looks
    /// again once it lets go, so those rows need no wake of the pool thread (see [`commit_here`]).
    wanted: AtomicBool,
    /// A request on a runtime worker has taken on committing the lane's rows once that worker
    /// runs out of other work (see [`Commit`]); later rows leave it to that request.
    armed: AtomicBool,
    /// Files whose spools hold rows to move.
    dirty: Mutex<Vec<Arc<AuditFile>>>,
    /// Every file with a spool on this lane, for the sweeps.
    spooled: Mutex<Vec<Weak<AuditFile>>>,
    /// The pool thread sleeps for long (nothing happened for a while): a first spooled row
    /// wakes it.
    quiet: AtomicBool,
}

/// Handle to a file's audit writer (a connection served by one pool thread).
#[derive(Clone)]
pub struct AuditWriter {
    file: Arc<AuditFile>,
    lane: &'static Lane,
}

thread_local! {
    /// Set on a runtime worker the first time it runs [`before_worker_park`]: from then on its
    /// requests leave waking the pool thread to that hook.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
    /// The lanes (bit per lane) this worker queued rows on without waking their thread.
    static OWED: Cell<u8> = const { Cell::new(0) };
    /// Whether this worker is counted in [`RUNNING_WORKERS`].
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Rows [`commit_queued`] committed on this thread: how a test tells a worker's own commit
    /// from the pool thread's.
    static COMMITTED_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Runtime workers between tokio's unpark and park hooks: serving requests, so about to queue
/// more rows.
static RUNNING_WORKERS: AtomicUsize = AtomicUsize::new(0);
/// Lanes whose rows a worker going idle left for the last running worker to commit.
static DEFERRED: AtomicU8 = AtomicU8::new(0);

/// The pool's threads: at least 2, at most 8, one per core.
fn pool() -> &'static Result<Vec<&'static Lane>, String> {
    static POOL: OnceLock<Result<Vec<&'static Lane>, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        (0..n)
            .map(|i| {
                // The thread needs its lane and the lane its thread's handle: the thread waits for
                // the lane to be published before it serves.
                let (tx, rx) = std::sync::mpsc::sync_channel::<&'static Lane>(1);
                let handle = std::thread::Builder::new()
                    .name(format!("audit-{i}"))
                    .spawn(move || {
                        if let Ok(lane) = rx.recv() {
                            serve(lane);
                        }
                    })
                    .map_err(|e| format!("cannot start audit writer: {e}"))?;
                // Lives as long as the process, like its thread.
                let lane: &'static Lane = Box::leak(Box::new(Lane {
                    jobs: Mutex::new(Vec::with_capacity(MAX_BATCH)),
                    room: Semaphore::new(QUEUE),
                    thread: handle.thread().clone(),
                    bit: 1 << i,
                    committing: Mutex::new(()),
                    wanted: AtomicBool::new(false),
                    armed: AtomicBool::new(false),
                    dirty: Mutex::new(Vec::new()),
                    spooled: Mutex::new(Vec::new()),
                    quiet: AtomicBool::new(false),
                }));
                tx.send(lane).map_err(|_| "audit writer thread exited".to_owned())?;
                Ok(lane)
            })
            .collect()
    })
}

/// The runtime's `on_thread_park` hook (`clavitor serve` installs it): a worker about to go idle
/// commits the rows it queued ([`commit_here`]), or wakes the pool threads that will.
///
/// Requests on a busy worker thus hand their rows over once per idle moment instead of once per
/// request, gathered into one batch: fewer futex wakes and context switches, larger commits. A
/// lone request pays nothing extra: its worker goes idle as soon as the request awaits its row.
///
/// While another worker is still running, its requests are about to queue rows too: the worker
/// going idle leaves its lanes to the last one to go idle ([`DEFERRED`]), so both workers' rows
/// go in one transaction (group commit: half the commits under load, same answer at low load,
/// where no other worker is running). A worker that stays busy still hands rows over every
/// [`EAGER`] rows, and a pool thread rechecks its queue every [`IDLE_RECHECK`].
pub fn before_worker_park() {
    HOOKED.with(|h| h.set(true));
    let running = if COUNTED.with(|c| c.replace(false)) {
        RUNNING_WORKERS.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
    } else {
        RUNNING_WORKERS.load(Ordering::SeqCst)
    };
    let mut owed = OWED.with(|o| o.replace(0));
    if running > 0 {
        if owed != 0 {
            DEFERRED.fetch_or(owed, Ordering::SeqCst);
        }
        // The last running worker may have gone idle before it could see these lanes: then
        // this one commits them after all (whichever takes `DEFERRED` first does).
        if RUNNING_WORKERS.load(Ordering::SeqCst) > 0 {
            return;
        }
        owed = 0;
    }
    owed |= DEFERRED.swap(0, Ordering::SeqCst);
    if owed != 0
        && let Ok(lanes) = pool()
    {
        for lane in lanes.iter().filter(|l| owed & l.bit != 0) {
            if !commit_here(lane) {
                lane.thread.unpark();
            }
        }
    }
}

/// For a worker about to call `tokio::task::block_in_place`, which hands its core to another
/// thread: from here it no longer counts as running (a deferred batch must not wait for a thread
/// that may never park as a worker again), and its owed rows go as at a park. Every
/// `block_in_place` in the server goes through `vault::live::off_the_runtime`, which calls this.
pub fn before_worker_blocks() {
    // Only on a worker of a runtime with the park hook (elsewhere nothing was counted or owed).
    if HOOKED.with(Cell::get) {
        before_worker_park();
    }
}

/// The runtime's `on_thread_unpark` hook (`clavitor serve` installs it): counts the worker as
/// running until its next [`before_worker_park`].
pub fn after_worker_unpark() {
    if !COUNTED.with(|c| c.replace(true)) {
        RUNNING_WORKERS.fetch_add(1, Ordering::SeqCst);
    }
}

/// Commits `lane`'s queued rows on the calling thread (a runtime worker about to go idle, which
/// has nothing else to do) if that cannot block: the lane has no committer at the moment, and
/// each file's write lock is free ([`AuditStore::try_append_batch`]). False if rows are left
/// for the pool thread, back at the front of the queue in their order.
fn commit_here(lane: &Lane) -> bool {
    for _ in 0..HANDOVER_ROUNDS {
        // Announced before trying, so that a holder that lets go after our try sees it (the
        // fences pair with the holder's: of the two, at least one sees the other's write).
        lane.wanted.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let Ok(committing) = lane.committing.try_lock() else {
            // The lane's committer (a worker or the pool thread) is busy: it looks at the queue
            // again when it lets go, and our rows were queued before we tried.
            return true;
        };
        lane.wanted.store(false, Ordering::SeqCst);
        if !commit_queued(lane) {
            return false;
        }
        if !let_go(lane, committing) {
            return true;
        }
    }
    false
}

/// Releases the lane's `committing` lock; true if a worker found it taken meanwhile and left
/// its rows to the holder ([`Lane::wanted`], cleared here), which must then look again.
fn let_go(lane: &Lane, committing: std::sync::MutexGuard<'_, ()>) -> bool {
    drop(committing);
    fence(Ordering::SeqCst);
    lane.wanted.swap(false, Ordering::SeqCst)
}

/// How many times one idle worker takes over rows that others left it ([`commit_here`]) before
/// it hands the rest to the pool thread.
const HANDOVER_ROUNDS: usize = 8;

/// The body of [`commit_here`], with the lane's `committing` lock held.
fn commit_queued(lane: &Lane) -> bool {
    let mut jobs: Vec<Job> = {
        let mut queued = lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let take = queued.len().min(MAX_BATCH);
        queued.drain(..take).collect()
    };
    let taken = jobs.len();
    let mut committed = 0;
    while !jobs.is_empty() {
        let mut mine = take_first_file(&mut jobs);
        let rows = mine.len();
        let result = {
            let file = &mine[0].file;
            let mut store = file.store.lock().unwrap_or_else(|p| p.into_inner());
            store.try_append_batch(mine.iter().map(|j| &j.record))
        };
        match result {
            Ok(Some(ids)) => {
                #[cfg(test)]
                COMMITTED_HERE.with(|c| c.set(c.get() + rows));
                answer(&mut mine, Ok(ids));
            }
            Ok(None) => {
                // Left in queue order: this file's rows, then the others' (each file's own
                // order is what counts), ahead of anything queued meanwhile.
                mine.append(&mut jobs);
                let mut queued = lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
                queued.splice(0..0, mine);
                lane.room.add_permits(committed);
                return false;
            }
            Err(e) => answer(&mut mine, Err(e)),
        }
        committed += rows;
    }
    lane.room.add_permits(taken);
    true
}

/// Takes the first job's file's jobs out of `jobs`, in order. One file is the common case, and
/// needs no sorting out.
fn take_first_file(jobs: &mut Vec<Job>) -> Vec<Job> {
    let file = jobs[0].file.clone();
    if jobs.iter().all(|j| Arc::ptr_eq(&j.file, &file)) {
        return std::mem::take(jobs);
    }
    let (mine, rest): (Vec<Job>, Vec<Job>) = jobs.drain(..).partition(|j| Arc::ptr_eq(&j.file, &file));
    *jobs = rest;
    mine
}

/// Whether the caller may leave the wake to [`before_worker_park`]: only on a worker that runs
/// the hook, and only while few rows wait (a worker that never goes idle still hands over every
/// [`EAGER`] rows). Anything else (blocking threads, other runtimes, tests) wakes at once. Should
/// a hooked worker block in place instead of parking, the pool thread's [`IDLE_RECHECK`] still
/// finds the row.
fn defer_wake(lane: &Lane, queued: usize) -> bool {
    if queued >= EAGER || !HOOKED.with(Cell::get) {
        return false;
    }
    OWED.with(|o| o.set(o.get() | lane.bit));
    true
}

/// One pool thread: gathers queued rows, commits each file's in one transaction, and moves the
/// rows of its files' spools into SQLite.
fn serve(lane: &'static Lane) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut empty_rechecks = 0u32;
    let mut last_sweep = std::time::Instant::now();
    loop {
        let moved = move_dirty(lane);
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            sweep(lane);
        }
        let committing = lane.committing.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut queued = lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let take = queued.len().min(MAX_BATCH);
            jobs.extend(queued.drain(..take));
        }
        if jobs.is_empty() {
            // A worker found the lane busy meanwhile and left its rows to us.
            if let_go(lane, committing) {
                continue;
            }
            if let Some(rows) = moved {
                // Spooled rows are coming in: let the next ones gather (a reader waiting for
                // its rows, or a filling spool, wakes this thread sooner).
                empty_rechecks = 0;
                std::thread::park_timeout(if rows >= BUSY_MOVE { MOVE_EVERY_BUSY } else { MOVE_EVERY });
                continue;
            }
            // Woken by a caller, by a worker's park hook, or after the recheck interval.
            empty_rechecks = empty_rechecks.saturating_add(1);
            let quiet = empty_rechecks > QUIET_RECHECKS;
            if quiet {
                lane.quiet.store(true, Ordering::SeqCst);
                // A row spooled before the flag was up did not wake us: look once more.
                if !lane.dirty.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                    lane.quiet.store(false, Ordering::SeqCst);
                    continue;
                }
            }
            std::thread::park_timeout(if quiet { QUIET_SLEEP } else { IDLE_RECHECK });
            lane.quiet.store(false, Ordering::SeqCst);
            continue;
        }
        empty_rechecks = 0;
        let taken = jobs.len();
        while !jobs.is_empty() {
            // The first file's rows, in queue order; the others' follow.
            let mut mine = take_first_file(&mut jobs);
            let result = {
                let mut store = mine[0].file.store.lock().unwrap_or_else(|p| p.into_inner());
                store.append_batch(mine.iter().map(|j| &j.record))
            };
            answer(&mut mine, result);
        }
        drop(committing);
        lane.room.add_permits(taken);
    }
}

/// Moves the rows of every spool on `lane`'s dirty list; how many, or `None` if no spool was
/// on it.
fn move_dirty(lane: &Lane) -> Option<usize> {
    let files = std::mem::take(&mut *lane.dirty.lock().unwrap_or_else(|p| p.into_inner()));
    if files.is_empty() {
        return None;
    }
    let mut rows = 0;
    for file in files {
        // Down before the take: a row spooled after it puts the file on the list again.
        file.dirty.store(false, Ordering::SeqCst);
        rows += move_rows(lane, &file, true);
    }
    Some(rows)
}

/// Looks at every spooled file of `lane` that another connection wrote to since the last
/// sweep: a row written there took an id above the spool's range, which the spool must jump
/// past before that row can count as final for the copiers (feed, replication).
fn sweep(lane: &Lane) {
    let files: Vec<Arc<AuditFile>> = {
        let mut list = lane.spooled.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|f| f.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for file in files {
        // The store's lock is let go before the mover's is taken ([`move_rows`] takes them in
        // the other order).
        let version = file.store.lock().unwrap_or_else(|p| p.into_inner()).data_version();
        let changed = {
            let mut mover = file.mover.lock().unwrap_or_else(|p| p.into_inner());
            match version {
                Ok(v) if v != mover.data_version => {
                    mover.data_version = v;
                    true
                }
                _ => false,
            }
        };
        if changed {
            move_rows(lane, &file, true);
        }
    }
}

/// Moves `file`'s spooled rows into SQLite (first any batch a failed move left); with `always`,
/// also when none wait, to keep the reservation ahead and record which rows are final. Returns
/// how many rows it moved.
fn move_rows(lane: &Lane, file: &Arc<AuditFile>, mut always: bool) -> usize {
    let Some(spool) = &file.spool else { return 0 };
    let mut mover = file.mover.lock().unwrap_or_else(|p| p.into_inner());
    let mut moved = 0;
    loop {
        let Some(taken) = mover.retry.take().or_else(|| spool.take(always)) else { return moved };
        let result = {
            let mut store = file.store.lock().unwrap_or_else(|p| p.into_inner());
            store.move_spooled(&taken.rows, taken.settled_below, taken.held)
        };
        match result {
            Ok(now) => {
                moved += taken.rows.len();
                let jumped = spool.moved(&taken, now);
                let before = file.moved_below.fetch_max(taken.settled_below, Ordering::SeqCst);
                file.moved.notify_waiters();
                if mover.failing {
                    mover.failing = false;
                    tracing::warn!(file = %file.path.display(), "audit rows are written again");
                }
                // Also when only the final mark moved: rows written outside the spool have
                // become final, and the feed may copy them now.
                if !taken.rows.is_empty() || taken.settled_below > before {
                    crate::edition::current().audit_committed(&file.path);
                }
                if !jumped {
                    return moved;
                }
                // The ids jumped past a row written outside the spool: one more move records
                // that row as final (it cannot jump again: the new range starts above it).
                always = true;
            }
            Err(e) => {
                if !mover.failing {
                    mover.failing = true;
                    crate::edition::alert(
                        "audit_write_failed",
                        "spooled audit rows cannot be written to the vault file (they stay in its spool)",
                        &[("error", e.to_string()), ("rows", taken.rows.len().to_string())],
                    );
                }
                mover.retry = Some(taken);
                drop(mover);
                mark_dirty(lane, file);
                file.moved.notify_waiters();
                return moved;
            }
        }
    }
}

/// Puts `file` on `lane`'s list of spools to move (once), waking the pool thread if it sleeps
/// for long.
fn mark_dirty(lane: &Lane, file: &Arc<AuditFile>) {
    if file.dirty.load(Ordering::SeqCst) || file.dirty.swap(true, Ordering::SeqCst) {
        return;
    }
    lane.dirty.lock().unwrap_or_else(|p| p.into_inner()).push(file.clone());
    if lane.quiet.load(Ordering::SeqCst) {
        lane.thread.unpark();
    }
}

/// Moves every spool's rows into SQLite and gives back the ids reserved but not used; for a
/// node that stops (after its last request). A row spooled later waits for room that never
/// comes, and fails.
pub fn settle_all() {
    let Ok(lanes) = pool() else { return };
    for lane in lanes {
        let files: Vec<Arc<AuditFile>> =
            lane.spooled.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
        for file in files {
            settle(lane, &file);
        }
    }
}

/// [`settle_all`] for one file.
fn settle(lane: &Lane, file: &Arc<AuditFile>) {
    let Some(spool) = &file.spool else { return };
    let next = spool.close();
    move_rows(lane, file, true);
    let mover = file.mover.lock().unwrap_or_else(|p| p.into_inner());
    if mover.retry.is_none()
        && let Err(e) = file.store.lock().unwrap_or_else(|p| p.into_inner()).release(next)
    {
        tracing::warn!(file = %file.path.display(), error = %e, "audit id reservation not released");
    }
}

/// Answers `jobs` (all of one file, non-empty) with their batch's outcome; leaves `jobs` empty.
fn answer(jobs: &mut Vec<Job>, result: Result<Vec<i64>, StoreError>) {
    let Some(file) = jobs.first().map(|j| j.file.clone()) else { return };
    match result {
        Ok(ids) => {
            for (job, id) in jobs.drain(..).zip(ids) {
                let _ = job.done.send(Ok(id));
            }
            crate::edition::current().audit_committed(&file.path);
        }
        Err(e) => {
            crate::edition::alert(
                "audit_write_failed",
                "an audit batch failed to commit",
                &[("error", e.to_string()), ("rows", jobs.len().to_string())],
            );
            for job in jobs.drain(..) {
                let _ = job.done.send(Err(e.to_string()));
            }
        }
    }
}

impl AuditWriter {
    /// Opens the audit connection of an already-migrated node.db or vault file and assigns it
    /// to a pool thread (round robin).
    pub fn start(path: &Path, sync: AuditSync) -> Result<Self, StoreError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let lanes = pool().as_ref().map_err(|e| StoreError::Conflict(e.clone()))?;
        let lane = lanes[NEXT.fetch_add(1, Ordering::Relaxed) % lanes.len()];
        let mut store = AuditStore::open(path, sync)?;
        let spool = match sync {
            AuditSync::Full => None,
            AuditSync::Normal => match Spool::open(path, &mut store) {
                Ok(Some(spool)) => Some(spool),
                Ok(None) => {
                    // Another process serves this file, or this one still moves the rows of a
                    // handle that just closed: the group commit is as safe, only slower.
                    tracing::info!(file = %path.display(), "audit spool in use elsewhere; committing rows directly");
                    None
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "audit spool unavailable; committing rows directly");
                    None
                }
            },
        };
        let moved_below = spool.as_ref().map_or(0, Spool::next_id);
        let file = Arc::new(AuditFile {
            store: Mutex::new(store),
            path: path.to_owned(),
            spool,
            mover: Mutex::new(Mover::default()),
            dirty: AtomicBool::new(false),
            moved_below: AtomicI64::new(moved_below),
            moved: Notify::new(),
        });
        if file.spool.is_some() {
            lane.spooled.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&file));
            // Opening it moved what an earlier run left and made every row below its range final.
            crate::edition::current().audit_committed(path);
        }
        Ok(Self { file, lane })
    }

    /// Queues the event and returns the wait for its commit, which resolves to the row id.
    ///
    /// The row is queued here, not at the first poll: the common case then needs no future of
    /// its own but the commit's receiver, so a handler's future stays small (an `async fn`
    /// around the queueing held the event twice over and took a kilobyte per read, past the
    /// allocator's fast bins). Only when the lane's queue is full does the wait for room run as
    /// a boxed future that queues once room is made.
    pub fn commit(&self, event: AuditEvent) -> Commit {
        let record = event.into_record();
        let record = match &self.file.spool {
            None => record,
            Some(spool) => match spool.append(record) {
                Appended::Spooled { id, wake } => return Commit(Wait::Ready(self.spooled(id, wake))),
                Appended::Refused(record, Refusal::Full) => {
                    let writer = self.clone();
                    return Commit(Wait::ForRoom(Box::pin(async move { writer.spool_when_room(record).await })));
                }
                Appended::Refused(record, Refusal::TooBig) => record,
            },
        };
        self.commit_record(record)
    }

    /// The group commit ([`commit`](Self::commit) without a spool).
    fn commit_record(&self, record: AuditRecord) -> Commit {
        match self.lane.room.try_acquire() {
            Ok(permit) => {
                // Returned by whoever commits the row's batch.
                permit.forget();
                let receipt = self.queue(record);
                if HOOKED.with(Cell::get) && !self.lane.armed.swap(true, Ordering::SeqCst) {
                    Commit(Wait::Committer { receipt, lane: self.lane, turn: Turn::Armed })
                } else {
                    Commit(Wait::Queued(receipt))
                }
            }
            Err(_) => {
                let writer = self.clone();
                Commit(Wait::ForRoom(Box::pin(async move {
                    writer.lane.room.acquire().await.map_err(|_| AuditError::Stopped)?.forget();
                    wait_for(writer.queue(record)).await
                })))
            }
        }
    }

    /// A row the spool had no room (or no ids) for: waits until the pool thread has moved rows,
    /// at most [`SPOOL_WAIT`].
    async fn spool_when_room(self, mut record: AuditRecord) -> Result<i64, AuditError> {
        let Some(spool) = &self.file.spool else { return self.commit_record(record).await };
        let deadline = tokio::time::Instant::now() + SPOOL_WAIT;
        loop {
            let notified = self.file.moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match spool.append(record) {
                Appended::Spooled { id, wake } => return Ok(self.spooled(id, wake)),
                Appended::Refused(r, Refusal::TooBig) => return self.commit_record(r).await,
                Appended::Refused(r, Refusal::Full) => record = r,
            }
            self.await_move(
                notified,
                deadline,
                "the audit spool is full and its rows cannot be written to the vault file",
            )
            .await?;
        }
    }

    /// A row the spool took: its file goes on the mover's list, and the mover wakes now if the
    /// row asked for it (see [`Appended::Spooled`]).
    fn spooled(&self, id: i64, wake: bool) -> i64 {
        mark_dirty(self.lane, &self.file);
        if wake {
            self.lane.thread.unpark();
        }
        id
    }

    /// Asks the pool thread for a move of this file's spool and waits for one (`notified`, armed
    /// by the caller before it looked) until `deadline`; past it, fails with `why`.
    async fn await_move(
        &self,
        notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        deadline: tokio::time::Instant,
        why: &str,
    ) -> Result<(), AuditError> {
        mark_dirty(self.lane, &self.file);
        self.lane.thread.unpark();
        tokio::time::timeout_at(deadline, notified)
            .await
            .map_err(|_| AuditError::Store(StoreError::Conflict(why.into())))
    }

    /// Commits `event` and waits until its row (and every row acknowledged before it) is in the
    /// `audit` table, where readers look: for the audit view.
    pub async fn commit_settled(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let id = self.commit(event).await?;
        if self.file.spool.is_none() {
            return Ok(id);
        }
        let deadline = tokio::time::Instant::now() + SPOOL_WAIT;
        loop {
            let notified = self.file.moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.file.moved_below.load(Ordering::SeqCst) > id {
                return Ok(id);
            }
            self.await_move(notified, deadline, "audit rows cannot be written to the vault file yet").await?;
        }
    }

    /// Like [`commit`](Self::commit), for a row no request waits on (the proxy's `proxy.result`,
    /// written after the answer has gone). The same path since batching no longer guesses at
    /// concurrency from what a batch carried; kept so such callers say what they are.
    pub fn commit_background(&self, event: AuditEvent) -> Commit {
        self.commit(event)
    }

    /// Queues a row whose room in the queue is taken; the receiver gets its batch's outcome.
    fn queue(&self, record: AuditRecord) -> Receipt {
        let (done, wait) = oneshot::channel();
        let job = Job { file: self.file.clone(), record, done };
        let queued = {
            let mut jobs = self.lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.push(job);
            jobs.len()
        };
        if !defer_wake(self.lane, queued) {
            self.lane.thread.unpark();
        }
        wait
    }
}

/// What a queued row's committer sends back: its id, or why its batch failed.
type Receipt = oneshot::Receiver<Result<i64, String>>;

fn outcome(received: Result<Result<i64, String>, oneshot::error::RecvError>) -> Result<i64, AuditError> {
    match received {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(msg)) => Err(AuditError::Store(StoreError::Conflict(msg))),
        Err(_) => Err(AuditError::Stopped),
    }
}

async fn wait_for(receipt: Receipt) -> Result<i64, AuditError> {
    outcome(receipt.await)
}

/// The wait for one audit row's commit ([`AuditWriter::commit`]): resolves to the row id once
/// the row's transaction has committed. Dropping it does not withdraw the row.
///
/// On a runtime worker, the first request to queue a row on a lane with no committer armed
/// becomes that lane's committer: it steps aside with `tokio::task::yield_now`, whose wake
/// tokio defers until the worker has run everything else it has and polled its sockets for more
/// (or, on a worker that never runs dry, until its next maintenance tick, every few dozen
/// tasks). Then, still inside its task, it commits every row queued on the lane meanwhile
/// ([`commit_here`]). Committing in a task rather than in the park hook means the answered
/// requests go onto this worker's own run queue, where the park hook's wakes went through the
/// shared queue and woke the other worker, and the worker does not park and unpark in between:
/// at 64 connections the machine's idle time per request fell from about 2.6 to 1.7 µs.
#[must_use = "the row is committed only when this resolves; a caller must not answer before"]
pub struct Commit(Wait);

enum Wait {
    /// Spooled: durable already.
    Ready(i64),
    Queued(Receipt),
    Committer {
        receipt: Receipt,
        lane: &'static Lane,
        turn: Turn,
    },
    ForRoom(Pin<Box<dyn Future<Output = Result<i64, AuditError>> + Send>>),
}

/// Where a committer ([`Wait::Committer`]) stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    Armed,
    Yielded,
    Done,
}

impl Future for Commit {
    type Output = Result<i64, AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Wait::Queued(receipt) => Pin::new(receipt).poll(cx).map(outcome),
            Wait::Committer { receipt, lane, turn } => {
                if *turn == Turn::Armed {
                    *turn = Turn::Yielded;
                    // Its first poll registers the deferred wake; the future itself holds
                    // nothing else, so it need not outlive this poll.
                    let mut later = std::pin::pin!(tokio::task::yield_now());
                    if later.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                if *turn == Turn::Yielded {
                    *turn = Turn::Done;
                    // Disarmed first: a row queued from here on arms a new committer.
                    lane.armed.store(false, Ordering::SeqCst);
                    if !commit_here(lane) {
                        lane.thread.unpark();
                    }
                }
                Pin::new(receipt).poll(cx).map(outcome)
            }
            Wait::ForRoom(wait) => wait.as_mut().poll(cx),
            Wait::Ready(id) => Poll::Ready(Ok(*id)),
        }
    }
}

impl Drop for Commit {
    /// A committer dropped before its turn (its request was cancelled) hands the rows it was to
    /// commit to the pool thread.
    fn drop(&mut self) {
        if let Wait::Committer { lane, turn, .. } = &self.0
            && *turn != Turn::Done
        {
            lane.armed.store(false, Ordering::SeqCst);
            lane.thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::audit::{Action, Actor, Outcome};

    /// A writer on the group commit: the file's spool is held elsewhere (as by another process),
    /// for the life of the test process.
    fn writer() -> (AuditWriter, PathBuf) {
        let (dir, path) = crate::audit::temp_vault_file();
        let holder = Spool::open(&path, &mut AuditStore::open(&path, AuditSync::Normal).unwrap()).unwrap().unwrap();
        std::mem::forget(holder);
        let w = AuditWriter::start(&path, AuditSync::Normal).unwrap();
        assert!(w.file.spool.is_none());
        (w, dir)
    }

    #[test]
    fn a_spooled_row_is_answered_at_once_and_moved_soon_after() {
        let (dir, path) = crate::audit::temp_vault_file();
        let w = AuditWriter::start(&path, AuditSync::Normal).unwrap();
        assert!(w.file.spool.is_some());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut commit = std::pin::pin!(w.commit(event()));
            // Durable in the spool: no wait for SQLite.
            match commit.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(id)) => ids.push(id),
                other => panic!("a spooled row is answered at its first poll: {other:?}"),
            }
        }
        assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
        // The audit view's read waits until its row and every one before it is in the table.
        let settled = rt.block_on(w.commit_settled(event())).unwrap();
        assert_eq!(settled, ids[2] + 1);
        let db = crate::store::vault_db::VaultDb::open(&path).unwrap();
        let stored: Vec<i64> = db.audit(None, 10).unwrap().into_iter().map(|r| r.id).rev().collect();
        assert_eq!(stored, [ids.clone(), vec![settled]].concat());
        // A node that stops moves what is left and gives back the ids it did not use: a row
        // written afterwards follows on.
        let mut last = std::pin::pin!(w.commit(event()));
        let Poll::Ready(Ok(last)) = last.as_mut().poll(&mut cx) else { panic!("spooled") };
        // (`settle_all` for this file alone: other tests' spools live in this process too.)
        settle(w.lane, &w.file);
        assert_eq!(db.audit(None, 1).unwrap()[0].id, last);
        let after = db.append_audit(&event().into_record()).unwrap();
        assert_eq!(after, last + 1);
        assert_eq!(db.meta("audit_settled").unwrap(), None, "no bound once the node has stopped");
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `test` on a thread of its own (the thread-local hook state starts fresh) with a new
    /// file's writer, then removes the file.
    fn on_a_thread(test: impl FnOnce(AuditWriter) + Send + 'static) {
        let (w, dir) = writer();
        std::thread::spawn(move || test(w)).join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn event() -> AuditEvent {
        AuditEvent::new(Actor::Node, Action::EntryRead, Outcome::Ok)
    }

    /// Makes the calling thread a hooked worker and queues a row from it while another request
    /// is the lane's committer: the commit (the wake or commit is left to the park hook), and a
    /// context to poll it with.
    ///
    /// The row is not asserted pending here: the shared pool thread's recheck may take and
    /// commit it should this thread be preempted right after queueing it. Each test checks
    /// what its point needs.
    fn queued_on_a_hooked_worker(
        w: &AuditWriter,
    ) -> (std::pin::Pin<Box<impl Future<Output = Result<i64, AuditError>> + '_>>, Context<'static>) {
        before_worker_park();
        let commit = Box::pin(with_a_committer_elsewhere(w, || w.commit(event())));
        assert!(matches!(commit.0, Wait::Queued(_)));
        (commit, Context::from_waker(Waker::noop()))
    }

    /// Runs `f` while the lane counts as having a committer armed (some other request), so that
    /// what `f` queues is left to the park hook and the pool thread.
    fn with_a_committer_elsewhere<T>(w: &AuditWriter, f: impl FnOnce() -> T) -> T {
        assert!(!w.lane.armed.swap(true, Ordering::SeqCst), "a committer was left armed");
        let out = f();
        w.lane.armed.store(false, Ordering::SeqCst);
        out
    }

    /// Polls `commit` until its row is committed (its id), for at most `secs` seconds.
    fn committed_within(
        mut commit: std::pin::Pin<&mut impl Future<Output = Result<i64, AuditError>>>,
        secs: u64,
    ) -> i64 {
        let mut cx = Context::from_waker(Waker::noop());
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Poll::Ready(id) = commit.as_mut().poll(&mut cx) {
                return id.unwrap();
            }
            if std::time::Instant::now() >= deadline {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A hooked worker thread that queues a row and goes idle. It sends whether the row was
    /// still pending when the park hook returned, then, once told to go on, asserts that the row
    /// commits within `secs` (`unsettled` says what failed otherwise).
    fn idle_with_a_queued_row(
        w: AuditWriter,
        secs: u64,
        unsettled: &'static str,
    ) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<bool>, std::sync::mpsc::Sender<()>) {
        let (pending_tx, pending_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let (mut commit, mut cx) = queued_on_a_hooked_worker(&w);
            before_worker_park();
            pending_tx.send(commit.as_mut().poll(&mut cx).is_pending()).unwrap();
            go_rx.recv().unwrap();
            assert!(committed_within(commit.as_mut(), secs) > 0, "{unsettled}");
        });
        (worker, pending_rx, go_tx)
    }

    /// The park hooks share process-wide counts ([`RUNNING_WORKERS`], [`DEFERRED`]): tests that
    /// run them take turns.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker that leaves for `block_in_place` stops counting as running; otherwise every
    /// deferred batch would wait for it (the pool thread's recheck) for the rest of the process.
    #[test]
    fn a_worker_that_blocks_in_place_no_longer_counts_as_running() {
        let _serial = serial();
        std::thread::spawn(|| {
            before_worker_park();
            after_worker_unpark();
            assert_eq!(RUNNING_WORKERS.load(Ordering::SeqCst), 1);
            before_worker_blocks();
            assert_eq!(RUNNING_WORKERS.load(Ordering::SeqCst), 0);
            // Back as a worker: counted from its next unpark only, once.
            before_worker_park();
            assert_eq!(RUNNING_WORKERS.load(Ordering::SeqCst), 0);
        })
        .join()
        .unwrap();
    }

    /// While another worker runs, a worker going idle leaves its rows to it; the last running
    /// worker to go idle commits them.
    #[test]
    fn the_last_worker_to_go_idle_commits_the_others_rows() {
        let _serial = serial();
        let (w, dir) = writer();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (idle_tx, idle_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            after_worker_unpark();
            ready_tx.send(()).unwrap();
            idle_rx.recv().unwrap();
            before_worker_park();
        });
        ready_rx.recv().unwrap();
        let bit = w.lane.bit;
        std::thread::spawn(move || {
            let (mut commit, _) = queued_on_a_hooked_worker(&w);
            before_worker_park();
            assert_ne!(DEFERRED.load(Ordering::SeqCst) & bit, 0, "left for the running worker");
            idle_tx.send(()).unwrap();
            other.join().unwrap();
            assert_eq!(DEFERRED.load(Ordering::SeqCst), 0, "taken by the last worker to go idle");
            assert!(committed_within(commit.as_mut(), 10) > 0, "the row was not committed");
        })
        .join()
        .unwrap();
        assert_eq!(RUNNING_WORKERS.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// On a worker that runs the park hook, queueing a row leaves the wake owed to the hook, and
    /// the hook pays it; the row then commits.
    #[test]
    fn a_hooked_worker_wakes_the_writer_when_it_goes_idle() {
        let _serial = serial();
        on_a_thread(|w| {
            let (mut commit, _) = queued_on_a_hooked_worker(&w);
            assert_ne!(OWED.with(Cell::get) & w.lane.bit, 0, "the wake is left to the park hook");
            before_worker_park();
            assert_eq!(OWED.with(Cell::get), 0);
            assert!(committed_within(commit.as_mut(), 10) > 0, "the row was not committed");
        });
    }

    /// A worker going idle commits its own rows before it parks: the row is committed when the
    /// hook returns, with no pool thread involved.
    #[test]
    fn an_idle_worker_commits_its_rows_itself() {
        let _serial = serial();
        on_a_thread(|w| {
            in_some_attempt("the idle worker did not commit its row itself", || {
                let (mut commit, mut cx) = queued_on_a_hooked_worker(&w);
                let before = COMMITTED_HERE.with(Cell::get);
                before_worker_park();
                let here = COMMITTED_HERE.with(Cell::get) > before;
                match commit.as_mut().poll(&mut cx) {
                    Poll::Ready(result) => here && result.expect("the row failed") > 0,
                    Poll::Pending => {
                        // Left to the lane's busy committer: it must still commit the row.
                        assert!(committed_within(commit.as_mut(), 10) > 0, "the row left to the pool was lost");
                        false
                    }
                }
            });
        });
    }

    /// Runs `attempt` until it returns true, at most [`ATTEMPTS`] times; panics with `never` if
    /// it never does.
    ///
    /// For tests of what a worker commits itself ([`COMMITTED_HERE`] tells). The lane's pool
    /// thread is shared with every other test in this process and takes the lane's `committing`
    /// lock for a moment at each of its rechecks (every few milliseconds while other tests'
    /// spools are moved), and may take queued rows then; a worker that finds the lock taken
    /// rightly leaves its rows to that holder. Such an attempt returns false (after checking
    /// that its rows still commit) and the next one is made.
    fn in_some_attempt(never: &str, mut attempt: impl FnMut() -> bool) {
        const ATTEMPTS: usize = 50;
        for _ in 0..ATTEMPTS {
            if attempt() {
                return;
            }
        }
        panic!("{never} in any of {ATTEMPTS} attempts");
    }

    /// While another connection holds the file's write lock, the idle worker does not wait for
    /// it (its row is neither committed nor failed when the hook returns): the pool thread
    /// commits the row once the lock is free.
    #[test]
    fn an_idle_worker_never_waits_for_a_locked_file() {
        let _serial = serial();
        let (w, dir) = writer();
        let holder = rusqlite::Connection::open(dir.join("v.db")).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (worker, locked_rx, release_tx) = idle_with_a_queued_row(w, 20, "the pool thread did not commit the row");
        assert!(locked_rx.recv().unwrap(), "the row was settled while another connection held the lock");
        holder.execute_batch("COMMIT").unwrap();
        release_tx.send(()).unwrap();
        worker.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A worker going idle while the lane's committer is busy leaves its rows to that committer
    /// (no wake of the pool thread): the committer finds the lane wanted when it lets go, and
    /// the rows are committed by its next look at the queue.
    #[test]
    fn a_busy_committer_is_told_to_look_again_when_it_lets_go() {
        let _serial = serial();
        let (w, dir) = writer();
        let lane = w.lane;
        // This thread is the busy committer.
        let committing = lane.committing.lock().unwrap();
        let (worker, left_rx, done_tx) =
            idle_with_a_queued_row(w, 10, "the row left to the committer was not committed");
        assert!(left_rx.recv().unwrap(), "the worker committed although the lane was busy");
        assert!(let_go(lane, committing), "the committer was not told to look again");
        assert!(!lane.wanted.load(Ordering::SeqCst), "the request was not cleared");
        // The committer's next look (the pool thread may have taken it already).
        if let Ok(_committing) = lane.committing.try_lock() {
            assert!(commit_queued(lane));
        }
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Anywhere else (no park hook ran on this thread) the caller wakes the writer itself.
    #[test]
    fn other_threads_wake_the_writer_at_once() {
        on_a_thread(|w| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let ids: Vec<i64> = rt.block_on(async {
                let mut ids = Vec::new();
                for _ in 0..3 {
                    ids.push(w.commit(event()).await.unwrap());
                }
                ids
            });
            assert_eq!(OWED.with(Cell::get), 0);
            assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
        });
    }

    /// A hooked worker that blocks instead of going idle (the hook never runs) still gets its
    /// row committed: every EAGER rows wake the writer, and the writer rechecks on its own.
    #[test]
    fn rows_of_a_worker_that_never_parks_still_commit() {
        let _serial = serial();
        on_a_thread(|w| {
            before_worker_park();
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let ids = with_a_committer_elsewhere(&w, || {
                rt.block_on(async {
                    let commits: Vec<_> = (0..EAGER + 3)
                        .map(|_| {
                            let w = w.clone();
                            tokio::spawn(async move { w.commit(event()).await })
                        })
                        .collect();
                    let all = async {
                        let mut ids = Vec::new();
                        for c in commits {
                            ids.push(c.await.unwrap().unwrap());
                        }
                        ids
                    };
                    tokio::time::timeout(Duration::from_secs(10), all).await
                })
            });
            assert_eq!(ids.expect("rows committed without the hook").len(), EAGER + 3);
        });
    }

    /// On a worker, the first row queued on a lane makes its request the committer: it steps
    /// aside once, and when polled again commits every row queued meanwhile itself, so the
    /// others are settled with no pool thread and no park hook involved.
    #[test]
    fn the_first_request_on_a_worker_commits_the_rows_queued_after_it() {
        let _serial = serial();
        on_a_thread(|w| {
            before_worker_park();
            in_some_attempt("the committer did not commit the rows itself on its second poll", || {
                let mut cx = Context::from_waker(Waker::noop());
                let mut first = Box::pin(w.commit(event()));
                assert!(matches!(first.0, Wait::Committer { .. }), "the first row did not arm a committer");
                assert!(first.as_mut().poll(&mut cx).is_pending(), "the committer did not step aside");
                let mut later: Vec<_> = (0..3).map(|_| Box::pin(w.commit(event()))).collect();
                assert!(later.iter().all(|c| matches!(c.0, Wait::Queued(_))), "a second committer was armed");
                let before = COMMITTED_HERE.with(Cell::get);
                let second_poll = first.as_mut().poll(&mut cx);
                let here = COMMITTED_HERE.with(Cell::get) - before;
                assert!(!w.lane.armed.load(Ordering::SeqCst), "the lane stayed armed");
                let id = match second_poll {
                    Poll::Ready(result) => result.expect("the committer's row failed"),
                    Poll::Pending => {
                        // Left to the lane's busy committer: every row must still commit.
                        assert!(committed_within(first.as_mut(), 10) > 0, "the committer's row was lost");
                        0
                    }
                };
                // Whoever committed them, the rows follow the committer's in queue order.
                let mut at_once = true;
                let ids: Vec<i64> = later
                    .iter_mut()
                    .map(|c| match c.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => result.expect("a later row failed"),
                        Poll::Pending => {
                            at_once = false;
                            committed_within(c.as_mut(), 10)
                        }
                    })
                    .collect();
                if id > 0 {
                    assert_eq!(ids, [id + 1, id + 2, id + 3], "the later rows were not committed in order");
                }
                // Done here only if the committer committed the rows (the pool thread may have
                // taken some at a recheck) and all were answered when its poll returned.
                id > 0 && at_once && here >= 4
            });
        });
    }

    /// A committer whose request is dropped before its turn disarms the lane and leaves the
    /// rows to the pool thread: they still commit, and the next row arms a new committer.
    #[test]
    fn a_dropped_committer_leaves_its_rows_to_the_pool_thread() {
        let _serial = serial();
        on_a_thread(|w| {
            before_worker_park();
            let mut cx = Context::from_waker(Waker::noop());
            let mut first = Box::pin(w.commit(event()));
            assert!(first.as_mut().poll(&mut cx).is_pending());
            let mut second = Box::pin(w.commit(event()));
            assert!(matches!(second.0, Wait::Queued(_)));
            drop(first);
            assert!(!w.lane.armed.load(Ordering::SeqCst), "the dropped committer left the lane armed");
            assert!(committed_within(second.as_mut(), 10) > 0, "the pool thread did not commit the row");
            // Committed by itself, not left behind for a later test's pool thread to find.
            let mut third = Box::pin(w.commit(event()));
            assert!(matches!(third.0, Wait::Committer { .. }), "no new committer was armed");
            assert!(committed_within(third.as_mut(), 10) > 0, "the new committer did not commit");
        });
    }
}
