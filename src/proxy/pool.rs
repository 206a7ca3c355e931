//! Upstream connections kept between requests: one agent's tunnels to one host share them.
//!
//! A tunnel used to keep its own upstream connection for its life, so 1,000 tunnels that had
//! each carried a request held 1,000 upstream TLS sessions (two TLS states and their buffers per
//! tunnel, most of the proxy's memory). Now a connection is taken for one request and handed
//! back when its answer has been read to the end; quiet ones are closed after
//! `--proxy-upstream-idle-secs`, and at most [`MAX_IDLE_PER_KEY`] per (agent, host) and
//! [`MAX_IDLE`] in all are kept.
//!
//! Must never: give a connection that carried one agent's credentials to another agent (the key
//! holds the agent's token hash); hand back a connection whose answer was not read to its end
//! (hyper closes it, and a half-read answer would reach the next request).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::ProxyBody;
use crate::auth::TokenHash;

/// Idle connections kept per (agent, host, port).
pub const MAX_IDLE_PER_KEY: usize = 8;
/// Idle connections kept in all; past it a finished connection is closed instead.
pub const MAX_IDLE: usize = 256;
/// How long a taken connection may take to be ready for the next request before a new one is
/// opened instead (it is ready at once unless it is closing).
const READY_WAIT: Duration = Duration::from_secs(1);

pub type Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// Whose connection it is, and to where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub agent: TokenHash,
    pub host: String,
    pub port: u16,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    idle_for: Duration,
}

impl Pool {
    pub fn new(idle_for: Duration) -> Arc<Self> {
        Arc::new(Self { idle: Mutex::new(HashMap::new()), idle_for })
    }

    /// A kept connection for `key` that is ready for a request, if there is one.
    pub async fn take(&self, key: &Key) -> Option<Sender> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let list = idle.get_mut(key)?;
                let found = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
                found?
            };
            if candidate.since.elapsed() >= self.idle_for || candidate.sender.is_closed() {
                continue;
            }
            let mut sender = candidate.sender;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender` for the next request of the same key, within the caps.
    pub fn put(&self, key: Key, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(key).or_default();
        if total < MAX_IDLE && list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle { sender, since: Instant::now() });
        }
    }

    /// Closes connections quiet for longer than `idle_for` (dropping the last sender ends the
    /// connection's task). Runs until the proxy's runtime ends.
    pub async fn sweep(self: Arc<Self>) {
        let every = (self.idle_for / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(every).await;
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for list in idle.values_mut() {
                list.retain(|c| c.since.elapsed() < self.idle_for && !c.sender.is_closed());
            }
            idle.retain(|_, list| !list.is_empty());
        }
    }
}

/// An upstream answer's body that hands its connection back to the pool once it was read to
/// the end (or had nothing to read). Dropped before that, the connection goes with it.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Arc<Pool>, Key, Sender)>,
}

impl PooledBody {
    pub fn new(inner: Incoming, pool: Arc<Pool>, key: Key, sender: Sender) -> Self {
        Self { inner, back: Some((pool, key, sender)) }
    }

    fn give_back(&mut self) {
        if let Some((pool, key, sender)) = self.back.take() {
            pool.put(key, sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty answer (204, HEAD) may never be polled: it is complete all the same.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
