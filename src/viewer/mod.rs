//! The station screen: a read-only page served by the daemon itself, for a kiosk browser next
//! to the dermatoscope (docs/viewer.md). It shows the live state and the latest assessments
//! from what the daemon already has (`feed.rs`), pushed by Server-Sent Events (`events.rs`);
//! the page and its assets are in the binary (`assets/`), and a listen address beyond loopback
//! needs a password (`auth.rs`).
//!
//! It only reads: GET (and HEAD) on its own paths, 405 for other methods, 404 elsewhere. Its
//! work never touches the frame path: the inference thread hands over an assessment with a
//! non-blocking send, and states reach it through the watch channel the publisher reads.
//!
//! What guards it (docs/viewer.md, "Security model"): its own server (`server.rs`) with
//! connection caps (`gate.rs`) and timeouts; the Host check (`host.rs`); the password with a
//! limit on wrong ones (`login.rs`, `throttle.rs`); the security headers on every answer
//! (`headers.rs`), hyper's own error answers included (`wire.rs`).

pub mod auth;
pub mod events;
pub mod feed;
mod gate;
mod headers;
mod host;
mod login;
mod server;
mod throttle;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use auth::{AuthError, Password};
pub use feed::{About, Feeds};

use crate::config::ViewerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("viewer: {0}")]
    Config(String),
    #[error("viewer: {0}")]
    Auth(#[from] AuthError),
    #[error("viewer: cannot listen on {addr}: {source} (another program uses it? set viewer.listen to a free port, or viewer.enabled = false)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const VIEWER_CSS: &str = include_str!("assets/viewer.css");
const VIEWER_JS: &str = include_str!("assets/viewer.js");

/// The longest an event stream stays silent: a browser or proxy may close a quiet stream.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The listening socket and the password, before anything is served: binding at start makes a
/// busy port a start-up error, not a surprise later.
pub struct Bound {
    listener: tokio::net::TcpListener,
    password: Option<Password>,
    config: ViewerConfig,
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the process ends. The server retries its own errors; the frame path and
    /// MQTT never wait on it.
    pub fn serve(self, feeds: Feeds) -> tokio::task::JoinHandle<()> {
        let limits = server::Limits {
            caps: gate::Caps { total: self.config.max_connections, per_client: self.config.max_connections_per_client },
            header_timeout: Duration::from_secs(self.config.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.config.idle_timeout_secs),
        };
        let app = router(feeds, self.password, &self.config);
        tokio::spawn(server::run(self.listener, app, limits))
    }
}

/// Reads the password (if any) and binds `viewer.listen`. A short password is logged as a
/// warning (`lesiond check` says the same through `check_password`).
pub async fn bind(config: &ViewerConfig) -> Result<Bound, ViewerError> {
    let addr = config.listen_addr().map_err(ViewerError::Config)?;
    let password = config.token_file.as_deref().map(Password::from_file).transpose()?;
    if let Some(weakness) = password.as_ref().and_then(Password::weakness) {
        tracing::warn!("viewer: {weakness}");
    }
    warn_if_descriptors_are_short(config);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ViewerError::Bind { addr, source })?;
    Ok(Bound { listener, password, config: config.clone() })
}

/// For `lesiond check`: `None` without a password file, else whether the daemon could read it
/// and what to say about it (a short password is a warning, not a failure).
pub fn check_password(config: &ViewerConfig) -> Option<(bool, String)> {
    let path = config.token_file.as_deref().filter(|_| config.enabled)?;
    Some(match Password::from_file(path) {
        Ok(password) => match password.weakness() {
            Some(weakness) => (true, format!("warning: {weakness}")),
            None => (true, format!("password from {}", path.display())),
        },
        Err(e) => (false, e.to_string()),
    })
}

/// The screen's connections must fit well under the process's descriptor limit, or a full
/// screen would starve the spool and the broker connection (issue 25).
fn warn_if_descriptors_are_short(config: &ViewerConfig) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = config.max_connections as u64 + 256;
    // rlim_t is 32 bits on armv7.
    #[allow(clippy::unnecessary_cast)]
    if limit.rlim_cur != libc::RLIM_INFINITY && (limit.rlim_cur as u64) < needed {
        tracing::warn!(
            "viewer: viewer.max_connections = {} leaves too few of this process's {} file descriptors for the spool, the broker and the camera: raise LimitNOFILE (the systemd unit sets 4096) or lower viewer.max_connections",
            config.max_connections,
            limit.rlim_cur
        );
    }
}

/// The viewer's routes with its guards, outermost first: the security headers on every answer,
/// the Host check, then the password (when set) with its limit on wrong ones.
fn router(feeds: Feeds, password: Option<Password>, config: &ViewerConfig) -> Router {
    // A third of the idle timeout at most, so a stream the page reads is never idle.
    let keep_alive = STREAM_KEEP_ALIVE.min(Duration::from_secs(config.idle_timeout_secs) / 3);
    let routes = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/viewer.css", get(|| async { asset("text/css; charset=utf-8", VIEWER_CSS) }))
        .route("/viewer.js", get(|| async { asset("text/javascript; charset=utf-8", VIEWER_JS) }))
        .route("/events", get(move |state: State<Feeds>| event_stream(state, keep_alive)))
        .route("/frame/{assessment_id}", get(frame_preview))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(feeds);
    let routes = match password {
        Some(password) => {
            let throttle = throttle::LoginThrottle::new(config.max_failed_logins, Duration::from_secs(config.login_block_secs));
            routes.layer(middleware::from_fn_with_state(Arc::new(login::Login { password, throttle }), login::require_password))
        }
        None => routes,
    };
    routes
        .layer(middleware::from_fn_with_state(Arc::new(host::AllowedHosts::new(&config.allowed_hosts)), host::check_host))
        .layer(middleware::from_fn(headers::add_security_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn event_stream(State(feeds): State<Feeds>, keep_alive: Duration) -> impl IntoResponse {
    Sse::new(events::stream(&feeds)).keep_alive(KeepAlive::new().interval(keep_alive))
}

/// The sharpest frame of a recent assessment, when previews are on (404 otherwise).
async fn frame_preview(State(feeds): State<Feeds>, Path(assessment_id): Path<String>) -> Response {
    match feeds.assessments.preview(&assessment_id) {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], axum::body::Bytes::from(jpeg.to_vec())).into_response(),
        None => (StatusCode::NOT_FOUND, "no preview\n").into_response(),
    }
}
