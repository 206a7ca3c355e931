//! Load generator for bench/proxy.sh (issue 18): an HTTPS upstream on loopback, and a client
//! that measures request latency to it directly and through the vault's proxy (one reused
//! connection / tunnel each), then holds many open tunnels while reading the server's RSS.
//!
//!   proxy_bench upstream DIR
//!       serves https on 127.0.0.1 for api.example.test under a fresh CA; writes DIR/ca.pem
//!       and prints the port, then serves until killed.
//!   proxy_bench client PROXY TOKEN VAULT_CA UPSTREAM_CA PORT SERVER_PID REQUESTS TUNNELS
//!       prints `key value` lines: direct/injected/passthrough p50/p99 (µs), RSS before and
//!       with TUNNELS open tunnels, then with each of them also holding its upstream connection (kB).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;

const HOST: &str = "api.example.test";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("upstream") => upstream(Path::new(&args[2])),
        Some("client") => client(&args[2..]),
        _ => {
            eprintln!("usage: proxy_bench upstream DIR | client PROXY TOKEN VAULT_CA UPSTREAM_CA PORT PID N TUNNELS");
            std::process::exit(2);
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn upstream(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "bench upstream CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![HOST.to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(r#"{"ok":true,"items":[1,2,3]}"#.to_owned())
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

fn tls_config(ca_file: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_over(tcp: TcpStream, config: &Arc<rustls::ClientConfig>) -> Tls {
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(config.clone(), name).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn tunnel(proxy: &str, token: &str, port: u16, config: &Arc<rustls::ClientConfig>) -> Tls {
    let mut tcp = TcpStream::connect(proxy).unwrap();
    tcp.set_nodelay(true).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
    write!(tcp, "CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    tls_over(tcp, config)
}

/// One GET on a kept connection; returns the status.
fn get(tls: &mut Tls, port: u16, path: &str) -> u16 {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    status
}

/// p50 and p99 in µs.
fn percentiles(mut times: Vec<u128>) -> (u128, u128) {
    times.sort_unstable();
    let n = times.len();
    (times[n / 2], times[(n * 99 / 100).min(n - 1)])
}

fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn client(a: &[String]) {
    let (proxy, token, vault_ca, upstream_ca) = (&a[0], &a[1], &a[2], &a[3]);
    let port: u16 = a[4].parse().unwrap();
    let pid = &a[5];
    let n: usize = a[6].parse().unwrap();
    let tunnels: usize = a[7].parse().unwrap();
    let direct_cfg = tls_config(upstream_ca);
    let vault_cfg = tls_config(vault_ca);
    let mut direct = {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tls_over(tcp, &direct_cfg)
    };
    let mut proxied = tunnel(proxy, token, port, &vault_cfg);
    // Interleaved request by request, so drift on a shared machine hits every path alike.
    let paths = [("direct", "/v1/items", 0), ("injected", "/v1/items", 1), ("passthrough", "/pass/items", 1)];
    let mut times: Vec<Vec<u128>> = vec![Vec::with_capacity(n); paths.len()];
    for round in 0..n + 20 {
        for (i, (_, path, conn)) in paths.iter().enumerate() {
            let tls = if *conn == 0 { &mut direct } else { &mut proxied };
            let t = Instant::now();
            assert_eq!(get(tls, port, path), 200);
            if round >= 20 {
                times[i].push(t.elapsed().as_micros());
            }
        }
    }
    for ((label, _, _), t) in paths.iter().zip(times) {
        let (p50, p99) = percentiles(t);
        println!("{label}_p50_us {p50}");
        println!("{label}_p99_us {p99}");
    }
    let before = rss_kb(pid);
    println!("rss_before_tunnels_kb {before}");
    let started = Instant::now();
    let mut open: Vec<Tls> = (0..tunnels).map(|_| tunnel(proxy, token, port, &vault_cfg)).collect();
    println!("tunnels_opened {}", open.len());
    println!("tunnels_open_secs {:.1}", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(1));
    println!("rss_with_tunnels_kb {}", rss_kb(pid));
    // One request each: every tunnel then also holds its upstream connection.
    for t in &mut open {
        assert_eq!(get(t, port, "/pass/x"), 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    println!("rss_with_tunnels_and_upstreams_kb {}", rss_kb(pid));
    // The server runs with --proxy-upstream-idle-secs 2: quiet tunnels let their upstreams go.
    std::thread::sleep(Duration::from_secs(5));
    println!("rss_after_upstream_idle_kb {}", rss_kb(pid));
    // Still usable: one more request through the first tunnel.
    assert_eq!(get(&mut open[0], port, "/v1/items"), 200);
}
