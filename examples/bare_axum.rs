//! The benchmark's baseline: a bare axum server answering every GET with a constant JSON body.
//!
//! `cargo run --release --example bare_axum -- 127.0.0.1:0 BODY_BYTES` prints
//! `listening on http://ADDR` and serves until killed. bench/read.sh compares the vault's
//! authenticated, audited entry reads against it in the same run.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse()?;
    let size: usize = args.next().unwrap_or_else(|| "512".into()).parse()?;
    // A JSON string padded to exactly `size` bytes.
    let body: &'static str = Box::leak(format!("\"{}\"", "x".repeat(size.saturating_sub(2))).into_boxed_str());
    let app = Router::new().fallback(get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
