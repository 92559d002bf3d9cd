//! The password gate in front of every path: 401 without the password, and per client address
//! a limit on wrong ones (`throttle.rs`): past it 429 with `Retry-After`, the password not
//! checked. Each wrong password is logged with the client's address and the count, never with
//! what was tried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Credential, Password};
use super::server::Client;
use super::throttle::{LoginThrottle, Verdict};

pub struct Login {
    pub password: Password,
    pub throttle: LoginThrottle,
}

pub async fn require_password(State(login): State<Arc<Login>>, request: Request, next: Next) -> Response {
    // Without the server's note of the peer (never, in practice), all such requests share one count.
    let ip = request.extensions().get::<Client>().map(|c| c.peer.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let now = Instant::now();
    if let Verdict::Refuse(wait) = login.throttle.verdict(ip, now) {
        return too_many(wait);
    }
    match login.password.judge(request.headers()) {
        Credential::Right => next.run(request).await,
        Credential::Missing => unauthorized(),
        Credential::Wrong => {
            let failure = login.throttle.failed(ip, now);
            match failure.blocked_for {
                Some(block) => tracing::warn!(
                    client = %ip,
                    failures = failure.failures,
                    "viewer: {} wrong passwords from {ip} within a minute: refusing it for {} s",
                    failure.failures,
                    block.as_secs()
                ),
                None => tracing::warn!(client = %ip, failures = failure.failures, "viewer: wrong password from {ip}"),
            }
            unauthorized()
        }
    }
}

fn unauthorized() -> Response {
    let challenge = HeaderValue::from_static("Basic realm=\"lesiond station\", charset=\"UTF-8\"");
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "the station screen needs its password\n").into_response()
}

fn too_many(wait: Duration) -> Response {
    // Whole seconds, rounded up: a client that waits this long is asked again.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after = HeaderValue::from(secs.max(1));
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, retry_after)], "too many wrong passwords from this address: try again later\n").into_response()
}
