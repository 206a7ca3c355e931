//! Load generator for bench/strangers.sh (issue 12 §1): strangers try to make the node hold
//! memory, while one agent keeps reading.
//!
//! - `--stalled N` connections (from 127.0.0.2 onwards, `--per-address` each) that send a partial
//!   request head or a partial body trickling below the floor rate, and start again whenever
//!   the server closes them;
//! - `--uploads N` concurrent 64 KiB `POST /api/setup/start` bodies, sent at full speed, again
//!   and again (from 127.0.1.x);
//! - one agent on a keep-alive connection from 127.0.0.1, opened before the strangers arrive,
//!   reading `GET /api/entries` every 10 ms.
//!
//! The server's RSS (from /proc/PID/status) is sampled every 50 ms. Prints the figures as
//! `key value` lines. Loopback only.
//!
//! `strangers ADDR PID TOKEN SECS [--stalled 5000] [--uploads 500] [--per-address 50]`
//! (`STRANGERS_UPLOAD_PATH` sends the uploads elsewhere, e.g. `/healthz`, to tell the listener's
//! cost from the handler's).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Default)]
struct Counts {
    /// Closed before a byte of response, within a second of connecting: the caps.
    refused: AtomicU64,
    /// Closed later without a response (hyper's head timeout).
    closed: AtomicU64,
    r408: AtomicU64,
    r413: AtomicU64,
    r431: AtomicU64,
    /// Any other status (the uploads: the handler's own answer).
    answered: AtomicU64,
    connect_failed: AtomicU64,
    /// Connections open right now.
    open: AtomicUsize,
    peak_open: AtomicUsize,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: strangers ADDR PID TOKEN SECS [--stalled N] [--uploads N] [--per-address N]");
    }
    let addr: SocketAddr = args[0].parse().context("ADDR")?;
    let pid: u32 = args[1].parse().context("PID")?;
    let token = args[2].clone();
    let secs: u64 = args[3].parse().context("SECS")?;
    let opt = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context("option value")?.parse()?),
            None => Ok(default),
        }
    };
    let stalled = opt("--stalled", 5000)?;
    let uploads = opt("--uploads", 500)?;
    let per_address = opt("--per-address", 50)?.max(1);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(run(addr, pid, token, Duration::from_secs(secs), stalled, uploads, per_address))
}

async fn run(
    addr: SocketAddr,
    pid: u32,
    token: String,
    length: Duration,
    stalled: usize,
    uploads: usize,
    per_address: usize,
) -> anyhow::Result<()> {
    let idle = rss_kb(pid)?;
    // The agent connects first, as an agent already working when strangers arrive would.
    let mut agent = connect(Ipv4Addr::LOCALHOST, addr).await.context("agent connect")?;
    let request = format!("GET /api/entries HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n");
    let status = exchange(&mut agent, request.as_bytes()).await.context("first agent read")?;
    anyhow::ensure!(status == 200, "the agent's first read answered {status}");

    let counts = Arc::new(Counts::default());
    let end = Instant::now() + length;
    let peak = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                if let Ok(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..stalled {
        let source = Ipv4Addr::new(127, 0, (2 + i / per_address / 250) as u8, (2 + i / per_address % 250) as u8);
        tasks.push(tokio::spawn(stranger(addr, source, i % 2 == 0, end, counts.clone())));
    }
    let body = Arc::new(upload_body());
    for i in 0..uploads {
        let source = Ipv4Addr::new(127, 1, (i / 250) as u8, (2 + i % 250) as u8);
        tasks.push(tokio::spawn(uploader(addr, source, body.clone(), end, counts.clone())));
    }

    // The agent reads every 10 ms, on its one connection, for the whole run.
    let mut latencies = Vec::new();
    let mut agent_errors = 0u64;
    while Instant::now() < end {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), exchange(&mut agent, request.as_bytes())).await {
            Ok(Ok(200)) => latencies.push(started.elapsed()),
            _ => {
                agent_errors += 1;
                if let Ok(c) = connect(Ipv4Addr::LOCALHOST, addr).await {
                    agent = c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        t.abort();
    }
    let _ = sampler.await;
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let c = &counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!("rss_idle_kb {idle}");
    println!("rss_peak_kb {}", peak.load(Ordering::Relaxed));
    println!("agent_reads {}", latencies.len());
    println!("agent_errors {agent_errors}");
    println!("agent_p50_ms {:.2}", pct(0.50));
    println!("agent_p99_ms {:.2}", pct(0.99));
    println!("agent_max_ms {:.2}", pct(1.0));
    println!("stranger_peak_open {}", c.peak_open.load(Ordering::Relaxed));
    println!("refused_at_once {}", get(&c.refused));
    println!("closed_without_answer {}", get(&c.closed));
    println!("answered_408 {}", get(&c.r408));
    println!("answered_413 {}", get(&c.r413));
    println!("answered_431 {}", get(&c.r431));
    println!("answered_other {}", get(&c.answered));
    println!("connect_failed {}", get(&c.connect_failed));
    Ok(())
}

fn upload_body() -> Vec<u8> {
    let code = "a".repeat(64 * 1024 - 12);
    format!("{{\"code\":\"{code}\"}}").into_bytes()
}

async fn connect(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    socket.connect(to).await
}

/// Writes a request, reads one response (head + Content-Length body); returns its status.
async fn exchange(c: &mut TcpStream, request: &[u8]) -> anyhow::Result<u16> {
    c.write_all(request).await?;
    let (status, _) = read_response(c).await?.context("closed")?;
    Ok(status)
}

/// One response, or None if the connection closed before a byte of it.
async fn read_response(c: &mut TcpStream) -> anyhow::Result<Option<(u16, usize)>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_lowercase();
            let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0);
            let mut have = head.len() - end - 4;
            while have < len {
                let n = c.read(&mut buf).await?;
                if n == 0 {
                    bail!("closed in a body");
                }
                have += n;
            }
            return Ok(Some((status, len)));
        }
        let n = match c.read(&mut buf).await {
            Ok(n) => n,
            Err(_) if head.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("closed in a head");
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn record(counts: &Counts, outcome: Option<u16>, opened: Instant) {
    let n = match outcome {
        None if opened.elapsed() < Duration::from_secs(1) => &counts.refused,
        None => &counts.closed,
        Some(408) => &counts.r408,
        Some(413) => &counts.r413,
        Some(431) => &counts.r431,
        Some(_) => &counts.answered,
    };
    n.fetch_add(1, Ordering::Relaxed);
}

struct Open<'a>(&'a Counts);

impl<'a> Open<'a> {
    fn new(c: &'a Counts) -> Self {
        let now = c.open.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak_open.fetch_max(now, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A partial head that never ends, or a 64 KiB body trickling at 10 bytes a second; again
/// whenever the server lets go.
async fn stranger(addr: SocketAddr, source: Ipv4Addr, head_only: bool, end: Instant, counts: Arc<Counts>) {
    while Instant::now() < end {
        let Ok(mut c) = connect(source, addr).await else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let _open = Open::new(&counts);
        let opened = Instant::now();
        let start: &[u8] = if head_only {
            b"GET /api/entries HTTP/1.1\r\nHost: bench\r\nX-Slow: "
        } else {
            b"POST /api/setup/start HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{\"code\":\""
        };
        let outcome = async {
            c.write_all(start).await.ok()?;
            let (mut rd, mut wr) = c.split();
            let trickle = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if wr.write_all(if head_only { b"a" } else { b"aaaaaaaaaa" }).await.is_err() {
                        return;
                    }
                }
            };
            let mut first = [0u8; 1];
            tokio::select! {
                () = trickle => None,
                n = rd.read(&mut first) => match n {
                    Ok(1) => Some(()),
                    _ => None,
                },
            }
        };
        let got = tokio::select! {
            got = outcome => got,
            () = tokio::time::sleep_until(end.into()) => return,
        };
        let status = match got {
            None => None,
            Some(()) => {
                // Read the rest of the status line (the first byte was 'H').
                let mut rest = [0u8; 11];
                match c.read_exact(&mut rest).await {
                    Ok(_) => String::from_utf8_lossy(&rest[8..11]).parse().ok(),
                    Err(_) => None,
                }
            }
        };
        record(&counts, status, opened);
        if status.is_none() && opened.elapsed() < Duration::from_secs(1) {
            // Refused: a real attacker would hammer; this one waits a little so the figures
            // measure the server, not this process's loop.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// 64 KiB setup bodies at full speed, one after another on fresh connections.
async fn uploader(addr: SocketAddr, source: Ipv4Addr, body: Arc<Vec<u8>>, end: Instant, counts: Arc<Counts>) {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        std::env::var("STRANGERS_UPLOAD_PATH").unwrap_or_else(|_| "/api/setup/start".into()),
        body.len()
    );
    while Instant::now() < end {
        let Ok(mut c) = connect(source, addr).await else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let _open = Open::new(&counts);
        let opened = Instant::now();
        let sent = async {
            c.write_all(head.as_bytes()).await?;
            c.write_all(&body).await?;
            read_response(&mut c).await
        };
        let got = tokio::select! {
            got = sent => got,
            () = tokio::time::sleep_until(end.into()) => return,
        };
        let status = got.ok().flatten().map(|(s, _)| s);
        record(&counts, status, opened);
        if status.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}
