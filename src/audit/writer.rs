//! Group commit through a small shared pool: every file's queued rows are committed in batches
//! by one of a few `audit-N` threads, however many files (vaults) the node serves.
//!
//! A file is always served by the same thread, so its rows commit in queue order; a thread
//! commits each file of a gathered batch in its own transaction. Before, every file had its own
//! thread, which on a hosted node with thousands of vaults meant thousands of threads.
//!
//! Handing a row over costs a cross-thread wake, and on a shared 2-core machine every wake is a
//! context switch that may wait for a scheduler slice. A runtime worker therefore does not wake
//! the pool thread per row: it wakes it once, when it is about to go idle
//! ([`before_worker_park`]), so the rows of every request it served meanwhile go in one batch.
//! Must never: answer a caller before its row's transaction has committed, or drop a row.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use super::AuditEvent;
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
}

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
                }));
                tx.send(lane).map_err(|_| "audit writer thread exited".to_owned())?;
                Ok(lane)
            })
            .collect()
    })
}

/// The runtime's `on_thread_park` hook (`clavitor serve` installs it): a worker about to go idle
/// wakes the pool threads it queued rows for.
///
/// Requests on a busy worker thus hand their rows over in one wake per idle moment instead of
/// one per request, and the pool thread finds them gathered into one batch: fewer futex wakes
/// and context switches, larger commits. A lone request pays nothing extra: its worker goes idle
/// as soon as the request awaits its row.
pub fn before_worker_park() {
    HOOKED.with(|h| h.set(true));
    let owed = OWED.with(|o| o.replace(0));
    if owed != 0
        && let Ok(lanes) = pool()
    {
        for lane in lanes.iter().filter(|l| owed & l.bit != 0) {
            lane.thread.unpark();
        }
    }
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

/// One pool thread: gathers queued rows, commits each file's in one transaction.
fn serve(lane: &'static Lane) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut empty_rechecks = 0u32;
    loop {
        {
            let mut queued = lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let take = queued.len().min(MAX_BATCH);
            jobs.extend(queued.drain(..take));
        }
        if jobs.is_empty() {
            // Woken by a caller, by a worker's park hook, or after the recheck interval.
            empty_rechecks = empty_rechecks.saturating_add(1);
            std::thread::park_timeout(if empty_rechecks > QUIET_RECHECKS { QUIET_SLEEP } else { IDLE_RECHECK });
            continue;
        }
        empty_rechecks = 0;
        let taken = jobs.len();
        while !jobs.is_empty() {
            // The first file's rows, in queue order; the others wait for the next round. One
            // file is the common case, and needs no sorting out.
            let file = jobs[0].file.clone();
            if jobs.iter().all(|j| Arc::ptr_eq(&j.file, &file)) {
                commit(&file, &mut jobs);
            } else {
                let (mut mine, rest): (Vec<Job>, Vec<Job>) = jobs.drain(..).partition(|j| Arc::ptr_eq(&j.file, &file));
                jobs = rest;
                commit(&file, &mut mine);
            }
        }
        lane.room.add_permits(taken);
    }
}

/// Commits `jobs` (all of one file) and answers each; leaves `jobs` empty.
fn commit(file: &AuditFile, jobs: &mut Vec<Job>) {
    let result = {
        let mut store = file.store.lock().unwrap_or_else(|p| p.into_inner());
        store.append_batch(jobs.iter().map(|j| &j.record))
    };
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
        let store = AuditStore::open(path, sync)?;
        Ok(Self { file: Arc::new(AuditFile { store: Mutex::new(store), path: path.to_owned() }), lane })
    }

    /// Queues the event and waits until it is committed; returns the row id.
    pub async fn commit(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.send(event).await
    }

    /// Like [`commit`](Self::commit), for a row no request waits on (the proxy's `proxy.result`,
    /// written after the answer has gone). The same path since batching no longer guesses at
    /// concurrency from what a batch carried; kept so such callers say what they are.
    pub async fn commit_background(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.send(event).await
    }

    async fn send(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        // Returned by the pool thread once the row's batch is committed.
        self.lane.room.acquire().await.map_err(|_| AuditError::Stopped)?.forget();
        let job = Job { file: self.file.clone(), record: event.into_record(), done };
        let queued = {
            let mut jobs = self.lane.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.push(job);
            jobs.len()
        };
        if !defer_wake(self.lane, queued) {
            self.lane.thread.unpark();
        }
        match wait.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(msg)) => Err(AuditError::Store(StoreError::Conflict(msg))),
            Err(_) => Err(AuditError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::audit::{Action, Actor, Outcome};

    fn writer() -> (AuditWriter, PathBuf) {
        let dir = std::env::temp_dir().join(format!("clavitor-aw-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.db");
        drop(crate::store::vault_db::VaultDb::open(&path).unwrap());
        (AuditWriter::start(&path, AuditSync::Normal).unwrap(), dir)
    }

    fn event() -> AuditEvent {
        AuditEvent::new(Actor::Node, Action::EntryRead, Outcome::Ok)
    }

    /// On a worker that runs the park hook, queueing a row leaves the wake owed to the hook, and
    /// the hook pays it; the row then commits.
    #[test]
    fn a_hooked_worker_wakes_the_writer_when_it_goes_idle() {
        let (w, dir) = writer();
        std::thread::spawn(move || {
            before_worker_park();
            let mut cx = Context::from_waker(Waker::noop());
            let mut commit = Box::pin(w.commit(event()));
            assert!(commit.as_mut().poll(&mut cx).is_pending());
            assert_ne!(OWED.with(Cell::get) & w.lane.bit, 0, "the wake is left to the park hook");
            before_worker_park();
            assert_eq!(OWED.with(Cell::get), 0);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Poll::Ready(id) = commit.as_mut().poll(&mut cx) {
                    assert!(id.unwrap() > 0);
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the row was not committed");
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Anywhere else (no park hook ran on this thread) the caller wakes the writer itself.
    #[test]
    fn other_threads_wake_the_writer_at_once() {
        let (w, dir) = writer();
        std::thread::spawn(move || {
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
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A hooked worker that blocks instead of going idle (the hook never runs) still gets its
    /// row committed: every EAGER rows wake the writer, and the writer rechecks on its own.
    #[test]
    fn rows_of_a_worker_that_never_parks_still_commit() {
        let (w, dir) = writer();
        std::thread::spawn(move || {
            before_worker_park();
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let ids = rt.block_on(async {
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
            });
            assert_eq!(ids.expect("rows committed without the hook").len(), EAGER + 3);
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
