//! Group commit through a small shared pool: every file's queued rows are committed in batches
//! by one of a few `audit-N` threads, however many files (vaults) the node serves.
//!
//! A file is always served by the same thread, so its rows commit in queue order; a thread
//! commits each file of a gathered batch in its own transaction. Before, every file had its own
//! thread, which on a hosted node with thousands of vaults meant thousands of threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::AuditEvent;
use crate::store::{AuditRecord, AuditStore, AuditSync, StoreError};

/// How many waiting rows one gathering takes at most; bounds the latency of a batch.
const MAX_BATCH: usize = 1024;
/// How many rows may wait for one pool thread before callers are made to wait for room.
const QUEUE: usize = 8192;

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
    /// Nobody is waiting to answer a request on it (see [`AuditWriter::commit_background`]).
    background: bool,
}

/// Handle to a file's audit writer (a connection served by one pool thread).
#[derive(Clone)]
pub struct AuditWriter {
    file: Arc<AuditFile>,
    queue: mpsc::Sender<Job>,
}

/// The pool's threads: at least 2, at most 8, one per core.
fn pool() -> &'static Result<Vec<mpsc::Sender<Job>>, String> {
    static POOL: OnceLock<Result<Vec<mpsc::Sender<Job>>, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Job>(QUEUE);
                std::thread::Builder::new()
                    .name(format!("audit-{i}"))
                    .spawn(move || serve(rx))
                    .map(|_| tx)
                    .map_err(|e| format!("cannot start audit writer: {e}"))
            })
            .collect()
    })
}

/// One pool thread: gathers queued rows, commits each file's in one transaction.
fn serve(mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    // Whether the last commit carried more than one row, i.e. requests are arriving
    // concurrently.
    let mut busy = false;
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        // Gather what is queued. Under concurrent load one yield lets requests that are about to
        // queue make it into this commit, so a busy server commits in larger, fewer batches. A
        // lone request is never made to wait for it: on a busy 2-core machine a yield can cost a
        // whole scheduler slice (1-2 ms seen).
        let mut yielded = !busy;
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) if !yielded => {
                    yielded = true;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        // Background rows do not count: one arriving beside a request's row is not concurrency,
        // and must not make the next lone request pay for a yield.
        busy = jobs.iter().filter(|j| !j.background).count() > 1;
        while !jobs.is_empty() {
            // The first file's rows, in queue order; the others wait for the next round.
            let file = jobs[0].file.clone();
            let (mine, rest): (Vec<Job>, Vec<Job>) = jobs.drain(..).partition(|j| Arc::ptr_eq(&j.file, &file));
            jobs = rest;
            commit(&file, mine);
        }
    }
}

fn commit(file: &AuditFile, jobs: Vec<Job>) {
    let result = {
        let mut store = file.store.lock().unwrap_or_else(|p| p.into_inner());
        store.append_batch(jobs.iter().map(|j| &j.record))
    };
    match result {
        Ok(ids) => {
            for (job, id) in jobs.into_iter().zip(ids) {
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
            for job in jobs {
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
        let threads = pool().as_ref().map_err(|e| StoreError::Conflict(e.clone()))?;
        let queue = threads[NEXT.fetch_add(1, Ordering::Relaxed) % threads.len()].clone();
        let store = AuditStore::open(path, sync)?;
        Ok(Self { file: Arc::new(AuditFile { store: Mutex::new(store), path: path.to_owned() }), queue })
    }

    /// Queues the event and waits until it is committed; returns the row id.
    pub async fn commit(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.send(event, false).await
    }

    /// Like [`commit`](Self::commit), for a row no request waits on (the proxy's `proxy.result`,
    /// written after the answer has gone): it is committed as promptly, but does not count as
    /// concurrent load in the writer's batching heuristic.
    pub async fn commit_background(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.send(event, true).await
    }

    async fn send(&self, event: AuditEvent, background: bool) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Job { file: self.file.clone(), record: event.into_record(), done, background })
            .await
            .map_err(|_| AuditError::Stopped)?;
        match wait.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(msg)) => Err(AuditError::Store(StoreError::Conflict(msg))),
            Err(_) => Err(AuditError::Stopped),
        }
    }
}
