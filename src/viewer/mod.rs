//! The station screen: a read-only page served by the daemon itself, for a kiosk browser next
//! to the dermatoscope (docs/viewer.md). It shows the live state and the latest assessments
//! from what the daemon already has (`feed.rs`), pushed by Server-Sent Events (`events.rs`);
//! the page and its assets are in the binary (`assets/`), and a listen address beyond loopback
//! needs a password (`auth.rs`).
//!
//! It only reads: GET (and HEAD) on its own paths, 405 for other methods, 404 elsewhere. Its
//! work never touches the frame path: the inference thread hands over an assessment with a
//! non-blocking send, and states reach it through the watch channel the publisher reads.

pub mod auth;
pub mod events;
pub mod feed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use auth::{AuthError, Password};
pub use feed::{About, AssessmentFeed, Feeds, DISCLAIMER};

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

/// The page's own resources only; no inline script or style, no other origin.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The listening socket and the password, before anything is served: binding at start makes a
/// busy port a start-up error, not a surprise later.
pub struct Bound {
    listener: tokio::net::TcpListener,
    password: Option<Password>,
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the process ends. A failure is logged here and ends only the viewer; the
    /// frame path and MQTT go on.
    pub fn serve(self, feeds: Feeds) -> tokio::task::JoinHandle<()> {
        let app = router(feeds, self.password);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, app).await {
                tracing::error!("viewer stopped: {e}; the station goes on without its screen");
            }
        })
    }
}

/// Reads the password (if any) and binds `viewer.listen`.
pub async fn bind(config: &ViewerConfig) -> Result<Bound, ViewerError> {
    let addr = config.listen_addr().map_err(ViewerError::Config)?;
    let password = config.token_file.as_deref().map(Password::from_file).transpose()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ViewerError::Bind { addr, source })?;
    Ok(Bound { listener, password })
}

/// The viewer's routes with its guards: the password (when set) and the security headers on
/// every answer, 401 and 404 included.
pub fn router(feeds: Feeds, password: Option<Password>) -> Router {
    let routes = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/viewer.css", get(|| async { asset("text/css; charset=utf-8", VIEWER_CSS) }))
        .route("/viewer.js", get(|| async { asset("text/javascript; charset=utf-8", VIEWER_JS) }))
        .route("/events", get(event_stream))
        .route("/frame/{assessment_id}", get(frame_preview))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(feeds);
    let routes = match password {
        Some(password) => routes.layer(middleware::from_fn_with_state(Arc::new(password), require_password)),
        None => routes,
    };
    routes.layer(middleware::from_fn(security_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn event_stream(State(feeds): State<Feeds>) -> impl IntoResponse {
    // A comment every 10 s keeps proxies and the browser from closing an idle stream.
    Sse::new(events::stream(&feeds)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The sharpest frame of a recent assessment, when previews are on (404 otherwise).
async fn frame_preview(State(feeds): State<Feeds>, Path(assessment_id): Path<String>) -> Response {
    match feeds.assessments.preview(&assessment_id) {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], axum::body::Bytes::from(jpeg.to_vec())).into_response(),
        None => (StatusCode::NOT_FOUND, "no preview\n").into_response(),
    }
}

async fn require_password(State(password): State<Arc<Password>>, request: Request, next: Next) -> Response {
    if password.admits(request.headers()) {
        return next.run(request).await;
    }
    let challenge = HeaderValue::from_static("Basic realm=\"lesiond station\", charset=\"UTF-8\"");
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "the station screen needs its password\n").into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Live data and a page that changes with the binary: nothing is to be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
