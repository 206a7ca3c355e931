//! A TCP proxy on 127.0.0.1 that a test puts between two real processes and switches at run
//! time: pass bytes through, drop connections, delay them, or reset them part-way through what
//! the client sends (SO_LINGER 0, so the peer sees an RST, not a clean end). It forwards bytes
//! only, so TLS passes through it end to end and the client still verifies the server.
//! Include with `#[path = "common/fault_proxy.rs"] mod fault_proxy;` next to `mod common;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes go through untouched.
    Pass,
    /// New connections are reset on accept; open ones are reset at the next byte the client sends.
    Drop,
    /// Every chunk, either way, is held this long before it is forwarded.
    Delay(Duration),
    /// Every chunk the client sends is held this long; once the client has given up (closed),
    /// what it sent is still delivered, then the server's side is closed too: a request that
    /// arrives after its sender stopped waiting for the answer.
    DelayRequests(Duration),
    /// Each connection forwards this many more bytes of what the client sends (counted from the
    /// switch to this mode), then both sides are reset: a request cut off mid-body.
    ResetAfter(usize),
}

struct Shared {
    /// The mode and how many switches happened so far (a connection notices a new mode by it).
    mode: Mutex<(Mode, u64)>,
    dropped: AtomicUsize,
    resets: AtomicUsize,
    connections: AtomicUsize,
}

impl Shared {
    fn mode(&self) -> (Mode, u64) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped with the proxy: its tasks and sockets go with it.
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port (held from bind to drop) and forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("proxy runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            mode: Mutex::new((Mode::Pass, 0)),
            dropped: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let s = shared.clone();
        rt.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("tokio listener");
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                s.connections.fetch_add(1, Ordering::Relaxed);
                if s.mode().0 == Mode::Drop {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                    continue;
                }
                tokio::spawn(pipe(client, target, s.clone()));
            }
        });
        FaultProxy { addr, shared, _rt: rt }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        let mut m = self.shared.mode.lock().unwrap_or_else(|p| p.into_inner());
        *m = (mode, m.1 + 1);
    }

    /// Connections refused or cut in `Drop` mode so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Connections reset part-way through the client's bytes in `ResetAfter` mode so far.
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

/// Closes with an RST: SO_LINGER 0, then drop.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn pipe(mut client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        reset(client);
        return;
    };
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    // Client bytes forwarded since this connection last saw the mode change.
    let (mut generation, mut sent) = (shared.mode().1, 0usize);
    let mut cut = None;
    loop {
        tokio::select! {
            r = client.read(&mut a) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                let (mode, g) = shared.mode();
                if g != generation {
                    (generation, sent) = (g, 0);
                }
                let forward = match mode {
                    Mode::Pass => n,
                    Mode::Delay(d) | Mode::DelayRequests(d) => {
                        tokio::time::sleep(d).await;
                        n
                    }
                    Mode::Drop => {
                        cut = Some(&shared.dropped);
                        break;
                    }
                    Mode::ResetAfter(limit) => n.min(limit.saturating_sub(sent)),
                };
                if upstream.write_all(&a[..forward]).await.is_err() {
                    break;
                }
                sent += forward;
                if forward < n {
                    cut = Some(&shared.resets);
                    break;
                }
            }
            r = upstream.read(&mut b) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                if let Mode::Delay(d) = shared.mode().0 {
                    tokio::time::sleep(d).await;
                }
                if client.write_all(&b[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(counter) = cut {
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = upstream.flush().await;
        reset(upstream);
        reset(client);
    }
}
