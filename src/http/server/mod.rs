//! The HTTP/1.1 server under the router: hyper with a timer instead of bare
//! `axum::serve`, so a slow or silent client costs a bounded time and a
//! bounded share of the process.
//!
//! - Accept takes a permit of a semaphore of `REVOKD_MAX_CONNECTIONS`: at
//!   the cap, new connections wait in the kernel's listen backlog (not
//!   accepted, not refused) and are served as soon as another closes, so a
//!   new client reaches `/healthz` once the crowd thins.
//! - An accept error other than a connection's own (EMFILE, ENFILE, ENOBUFS)
//!   is retried after a pause doubling from 10 ms to 1 s: the connection
//!   that caused it stays in the backlog, so retrying at once would spin.
//! - Per connection: [`deadline`] (header and idle timeouts), [`body`] (the
//!   body timeout), [`service`] (refusals judged from the head). Buffers
//!   hold a head of at most [`HEAD_LIMIT`] and a 16 KiB body.
//! - On shutdown the listener closes, each connection finishes the request
//!   it is serving and closes (hyper's graceful shutdown), and `serve`
//!   returns once all are gone (every permit back).

pub mod body;
mod deadline;
mod service;

use std::{
    io,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    retry::{self, Backoff},
};

pub use body::{BodyTimeout, is_body_timeout};
pub use service::{FIELDS_LIMIT, URI_LIMIT};

/// Largest request head hyper reads (request line and header fields); over
/// it, hyper answers 431 itself, with an empty body.
pub const HEAD_LIMIT: usize = 24 * 1024;

/// A connection's read buffer: a whole head and a 16 KiB body.
const BUFFER_LIMIT: usize = HEAD_LIMIT + crate::http::extract::BODY_LIMIT;

/// File descriptors kept for everything but client connections (Redis and
/// Postgres connections, the spool, logs).
const RESERVED_FDS: u64 = 256;

/// The first pause after an accept error; it doubles up to 1 s.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The edge's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `REVOKD_HEADER_TIMEOUT`.
    pub header_timeout: Duration,
    /// `REVOKD_BODY_TIMEOUT`.
    pub body_timeout: Duration,
    /// `REVOKD_IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
    /// `REVOKD_MAX_CONNECTIONS`.
    pub max_connections: u32,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `stop` fires, then drains.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    raise_fd_limit(limits.max_connections);
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // The deadline wrapper times heads, telling them from idle waits.
        .header_read_timeout(None)
        .max_buf_size(BUFFER_LIMIT)
        .max_header_size(HEAD_LIMIT);
    while let Some((stream, permit)) = accept(&listener, &permits, &stop).await {
        let serving = Arc::new(AtomicBool::new(false));
        let io = deadline::Deadline::new(
            stream,
            Arc::clone(&serving),
            limits.header_timeout,
            limits.idle_timeout,
        );
        let connection = service::Connection {
            router: router.clone(),
            serving,
            body_timeout: limits.body_timeout,
        };
        let conn = http.serve_connection(TokioIo::new(io), connection);
        tokio::spawn(run_connection(conn, stop.clone(), permit));
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let _drained = permits.acquire_many(limits.max_connections).await;
}

/// The next connection and its permit; `None` once `stop` fires.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        () = stop.cancelled() => return None,
        permit = Arc::clone(permits).acquire_owned() => permit.ok()?,
    };
    let mut backoff = None;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => return Some((stream, permit)),
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Once per streak: at the fd limit this would repeat every second.
                let backoff = backoff.get_or_insert_with(|| {
                    tracing::warn!(%error, "accept failed; retrying with backoff up to 1 s");
                    Backoff::new(FIRST_PAUSE, Duration::from_secs(1))
                });
                let pause = backoff.next_delay();
                tracing::debug!(%error, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
                retry::pause(pause, stop).await;
                if stop.is_cancelled() {
                    return None;
                }
            }
        }
    }
}

/// Errors of the one connection being accepted, not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn run_connection(
    conn: http1::Connection<TokioIo<deadline::Deadline>, service::Connection>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended");
    }
}

/// Lets the process open a descriptor per connection: raises the soft
/// `RLIMIT_NOFILE` up to the hard one, and warns when even that is short
/// of the cap (accept then waits on EMFILE instead).
fn raise_fd_limit(max_connections: u32) {
    let wanted = u64::from(max_connections) + RESERVED_FDS;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below REVOKD_MAX_CONNECTIONS plus {RESERVED_FDS}; \
             raise it (ulimit -n) or lower the cap"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}
