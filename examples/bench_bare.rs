//! The ceiling for `bench/run.sh`: an axum server whose only route,
//! `GET /v1/auth`, answers `200` with an empty body and reads nothing.
//!
//! Same stack as revokd's API (axum 0.8 over hyper HTTP/1.1, tokio's
//! multi-threaded runtime with one worker per core, mimalloc), so the difference
//! between this and `revokd serve --roles api` under the same `wrk` load is
//! what revokd's check itself costs: routing and middleware, token
//! verification, the deny-list lookup, the response headers.
//!
//! ```text
//! cargo run --release --features bench --example bench_bare -- 127.0.0.1:18080
//! BENCH_BARE_LISTEN=127.0.0.1:18080 cargo run --release --features bench --example bench_bare
//! ```
//!
//! The address is the first argument, else `BENCH_BARE_LISTEN`, else
//! `127.0.0.1:8089`; a bare port number means `127.0.0.1:<port>`. It serves
//! until SIGINT or SIGTERM.

use anyhow::Context;
use axum::{Router, http::StatusCode, routing::get};
use tokio::net::TcpListener;

/// The allocator `revokd` runs with, so the ceiling is the same stack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BENCH_BARE_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let addr = if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else {
        addr
    };
    let app = Router::new().route("/v1/auth", get(|| async { StatusCode::OK }));
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("bench_bare listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("server failed")
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
