//! Opens N connections to ADDR, sends each `GET PATH`, waits for every response head, prints
//! `held N`, then keeps them open for SECS seconds. Used by bench/tarpit.sh.
//!
//! `cargo run --release --example hold_connections -- 127.0.0.1:8080 1000 /nope 10`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, n, path, secs] = args.as_slice() else {
        anyhow::bail!("usage: hold_connections ADDR N PATH SECS");
    };
    let n: usize = n.parse()?;
    let secs: u64 = secs.parse()?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr.as_str())?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
        conns.push(s);
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                anyhow::bail!("connection closed before the response head");
            }
            head.push(byte[0]);
        }
    }
    println!("held {}", conns.len());
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}
