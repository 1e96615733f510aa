//! The clock of one connection between requests: a connection must send a
//! complete request head within the header timeout (counted from accept, and
//! on a kept-alive connection from the first byte of each later request),
//! and may wait idle for its next request for the idle timeout.
//!
//! hyper's own `header_read_timeout` starts as soon as a response is written,
//! so it would close idle kept-alive connections after the header timeout
//! too (10 s instead of 60 s, churning gateways' pools); this wrapper tells
//! the two apart by watching the socket. While a request is served (from the
//! moment hyper calls the service to the first byte of its response) no
//! deadline applies here: the body has its own ([`super::body`]) and a
//! handler bounds its own waits.
//!
//! Cost per request: an atomic load per read, an `Instant::now()` at each
//! transition; the timer is re-armed lazily (only once it fires, or when a
//! deadline moves earlier while a head is trickling in), never per request.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// Set by the service when hyper hands it a request; cleared by the socket
/// when the response starts.
pub(super) type Serving = Arc<AtomicBool>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// For the rest of a request head.
    Head,
    /// For the first byte of the next request.
    Idle,
}

/// A TCP stream that ends itself when its client is too slow between requests.
pub(super) struct Deadline {
    io: TcpStream,
    serving: Serving,
    wait: Wait,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    header: Duration,
    idle: Duration,
}

impl Deadline {
    pub(super) fn new(io: TcpStream, serving: Serving, header: Duration, idle: Duration) -> Self {
        let deadline = Instant::now() + header;
        Self {
            io,
            serving,
            wait: Wait::Head,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            header,
            idle,
        }
    }

    /// After a read found nothing: end the connection once its deadline has
    /// passed, else make sure the timer wakes us by then.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.serving.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        ready!(self.poll_timer(cx));
        Poll::Ready(match self.wait {
            // End of stream: hyper closes a connection idle between requests quietly.
            Wait::Idle => Ok(()),
            Wait::Head => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received within the header timeout",
            )),
        })
    }

    /// Ready once the deadline has passed; else the timer will wake the task.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.deadline {
                self.timer.as_mut().reset(self.deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline since moved later: wait again.
            self.timer.as_mut().reset(self.deadline);
        }
    }

    /// The idle wait starts with the response. hyper may not read again
    /// before the client sends something (its last read was already
    /// pending), so the timer is armed here, with the writer's waker: it
    /// wakes the connection, whose next read then ends it.
    fn response_started(&mut self, cx: &mut Context<'_>) {
        if self.serving.load(Ordering::Relaxed) {
            self.serving.store(false, Ordering::Relaxed);
            self.wait = Wait::Idle;
            self.deadline = Instant::now() + self.idle;
            let _ = self.poll_timer(cx);
        }
    }
}

impl AsyncRead for Deadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(Ok(())) => {
                if this.wait == Wait::Idle
                    && buf.filled().len() > before
                    && !this.serving.load(Ordering::Relaxed)
                {
                    this.wait = Wait::Head;
                    this.deadline = Instant::now() + this.header;
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.response_started(cx);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.response_started(cx);
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
