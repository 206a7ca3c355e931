//! Group commit: one thread owns the audit connection and commits whatever has queued up.

use std::path::Path;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::AuditEvent;
use crate::store::{AuditRecord, AuditStore, AuditSync, StoreError};

/// How many waiting rows one transaction takes at most; bounds the latency of a batch.
const MAX_BATCH: usize = 1024;
/// How many rows may wait for the writer before callers are made to wait for room.
const QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("audit writer has stopped")]
    Stopped,
}

struct Job {
    record: AuditRecord,
    done: oneshot::Sender<Result<i64, String>>,
    /// Nobody is waiting to answer a request on it (see [`AuditWriter::commit_background`]).
    background: bool,
}

/// Handle to a file's audit writer thread. Dropping every handle lets the thread drain and stop.
#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Job>,
}

impl AuditWriter {
    /// Starts the writer for an already-migrated node.db or vault file.
    pub fn start(path: &Path, sync: AuditSync) -> Result<(Self, JoinHandle<()>), StoreError> {
        let mut store = AuditStore::open(path, sync)?;
        let (queue, mut rx) = mpsc::channel::<Job>(QUEUE);
        let name = format!("audit-{}", path.file_stem().and_then(|s| s.to_str()).unwrap_or("db"));
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut jobs = Vec::with_capacity(MAX_BATCH);
                // Whether the last commit carried more than one row, i.e. requests are arriving
                // concurrently.
                let mut busy = false;
                while let Some(first) = rx.blocking_recv() {
                    jobs.push(first);
                    // Gather what is queued. Under concurrent load one yield lets requests that
                    // are about to queue make it into this commit, so a busy server commits in
                    // larger, fewer batches. A lone request is never made to wait for it: on a
                    // busy 2-core machine a yield can cost a whole scheduler slice (1-2 ms seen).
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
                    // Background rows do not count: one arriving beside a request's row is not
                    // concurrency, and must not make the next lone request pay for a yield.
                    busy = jobs.iter().filter(|j| !j.background).count() > 1;
                    match store.append_batch(jobs.iter().map(|j| &j.record)) {
                        Ok(ids) => {
                            for (job, id) in jobs.drain(..).zip(ids) {
                                let _ = job.done.send(Ok(id));
                            }
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
            })
            .map_err(|e| StoreError::Conflict(format!("cannot start audit writer: {e}")))?;
        Ok((Self { queue }, handle))
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
            .send(Job { record: event.into_record(), done, background })
            .await
            .map_err(|_| AuditError::Stopped)?;
        match wait.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(msg)) => Err(AuditError::Store(StoreError::Conflict(msg))),
            Err(_) => Err(AuditError::Stopped),
        }
    }
}
