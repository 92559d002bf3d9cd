//! The screen's socket as hyper sees it: the TCP stream, plus two things hyper does not do.
//! Every byte read or written is stamped on the connection (`Conn::touch`), for the idle
//! timeout; and a response head hyper writes by itself (400, 414, 431 for a request it cannot
//! parse) gets the security headers the router adds to every other answer (`headers.rs`).
//!
//! hyper is told this socket does not take vectored writes, so it writes one flat buffer per
//! flush, and it starts a response only once the previous one is wholly written: a response
//! head is then always at the start of what it hands to `poll_write`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::gate::Conn;
use super::headers::patch_bare_head;

pub struct Wire {
    stream: TcpStream,
    conn: Arc<Conn>,
    /// A patched head (and what followed it in the same buffer) not yet all on the socket.
    pending: Vec<u8>,
    pending_at: usize,
}

impl Wire {
    pub fn new(stream: TcpStream, conn: Arc<Conn>) -> Wire {
        Wire { stream, conn, pending: Vec::new(), pending_at: 0 }
    }

    /// Writes out the patched bytes before anything else.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.pending[self.pending_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_at += n;
            self.conn.touch();
        }
        self.pending.clear();
        self.pending_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Wire {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            this.conn.touch();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(patched) = patch_bare_head(buf) {
            // All of `buf` is taken now: hyper must not see a count that mixes its bytes with
            // the inserted ones. The patched bytes go out before any later write or flush.
            this.pending = patched;
            this.pending_at = 0;
            // A first try now; what the socket does not take waits in `pending`.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        if n > 0 {
            this.conn.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
