//! The screen's HTTP/1.1 server: our own accept loop around hyper, because `axum::serve` can
//! neither bound connections nor time out a client that never finishes its request. An
//! attacker holding connections open would otherwise take the daemon's file descriptors, and
//! with them the spool's (issue 25).
//!
//! - Every connection passes the gate (`gate.rs`) before anything is spawned for it: beyond a
//!   cap it replaces an idle one or is closed at once.
//! - A client has `header_timeout` to send a request head, from its connect or from the end of
//!   its previous answer (hyper's header read timeout, which also ends idle keep-alive), and a
//!   connection on which no byte moved for `idle_timeout` is closed. An event stream writes a
//!   keep-alive well within that, so a page that reads its stream is never cut.
//! - The router sees the peer and the address it was reached on (`Client`), for the Host check
//!   and the login limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::gate::{Answering, Caps, Gate, Refusal, Ticket};
use super::wire::Wire;

/// A request head (request line and headers) larger than this gets 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// hyper's read and write buffer per connection (its default is ~400 kB): with the caps, what
/// the screen's connections can hold in memory at most.
const MAX_BUF_BYTES: usize = 64 * 1024;
/// How often refused or replaced connections are reported in the log (a flood must not flood it).
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// After a failed accept (out of descriptors): the pending connection stays in the backlog, so
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who asked, and where: in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub caps: Caps,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts and serves until the listener fails for good (it does not: errors are retried).
pub async fn run(listener: TcpListener, app: Router, limits: Limits) {
    let gate = Gate::new(limits.caps);
    let service = TowerToHyperService::new(app);
    let (total, per_client) = (limits.caps.total, limits.caps.per_client);
    let mut refused = Reporter::default();
    let mut made_room = Reporter::default();
    let mut accept_errors = Reporter::default();
    // Reports what a flood left unreported once it stops.
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tick.tick() => {
                if let Some(n) = refused.flush() {
                    tracing::warn!("viewer: refused {n} more connection(s) (every place taken by an answer in progress)");
                }
                if let Some(n) = made_room.flush() {
                    tracing::warn!("viewer: closed {n} more idle connection(s) to make room (at most {total} held, {per_client} per client)");
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(n) = accept_errors.note() {
                    tracing::warn!("viewer: cannot accept connections ({n} failure(s) since the last report): {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Ok(ticket) => {
                if ticket.made_room {
                    if let Some(n) = made_room.note() {
                        tracing::warn!(
                            client = %peer.ip(),
                            "viewer: closed {n} idle connection(s) to make room (at most {total} held, {per_client} per client): a client holds connections without asking"
                        );
                    }
                }
                tokio::spawn(serve_connection(stream, peer, ticket, service.clone(), limits));
            }
            Err(refusal) => {
                // Closed before anything is read or allocated for it.
                drop(stream);
                if let Some(n) = refused.note() {
                    let why = match refusal {
                        Refusal::ClientFull => format!("{per_client} connections from {} are all being answered", peer.ip()),
                        Refusal::Full => format!("all {total} connections are being answered"),
                    };
                    tracing::warn!(client = %peer.ip(), "viewer: refused {n} connection(s): {why}");
                }
            }
        }
    }
}

/// Counts events for the log: the first is reported at once, the rest at most once per
/// `REPORT_EVERY` (by the next event, or by `flush` on the accept loop's tick).
#[derive(Default)]
struct Reporter {
    unreported: u64,
    last_report: Option<Instant>,
}

impl Reporter {
    /// One more event: the count to report now, if it is time.
    fn note(&mut self) -> Option<u64> {
        self.unreported += 1;
        self.due()
    }

    /// What is left unreported, if it is time.
    fn flush(&mut self) -> Option<u64> {
        if self.unreported == 0 {
            return None;
        }
        self.due()
    }

    fn due(&mut self) -> Option<u64> {
        if self.last_report.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return None;
        }
        self.last_report = Some(Instant::now());
        Some(std::mem::take(&mut self.unreported))
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, ticket: Ticket, service: TowerToHyperService<Router>, limits: Limits) {
    let Ok(local) = stream.local_addr() else { return };
    let conn = ticket.conn.clone();
    let client = Client { peer, local };
    let answering_conn = conn.clone();
    let handler = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(client);
        let answering = Answering::start(&answering_conn);
        let answer = hyper::service::Service::call(&service, request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _answering: answering }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_BUF_BYTES)
        // One flat buffer per write: `wire.rs` relies on it to find hyper's own error answers.
        .writev(false);
    let connection = builder.serve_connection(TokioIo::new(Wire::new(stream, conn.clone())), handler);
    tokio::pin!(connection);
    loop {
        let quiet_left = limits.idle_timeout.saturating_sub(conn.idle_for());
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(client = %peer, "viewer: connection ended: {e}");
                }
                break;
            }
            _ = conn.evicted.notified() => {
                tracing::debug!(client = %peer, "viewer: idle connection closed for a newcomer");
                break;
            }
            _ = tokio::time::sleep(quiet_left) => {
                if conn.idle_for() >= limits.idle_timeout {
                    tracing::debug!(client = %peer, "viewer: connection idle for {} s: closed", limits.idle_timeout.as_secs());
                    break;
                }
            }
        }
    }
    // Leaving drops `connection` (closing the socket), then `ticket` (freeing the place).
}

/// A response body that keeps its connection counted as answering until hyper is done with it.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
