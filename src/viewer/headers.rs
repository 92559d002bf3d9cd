//! The security headers every answer of the screen carries: added by a middleware to what the
//! router answers, and written into the few answers hyper makes by itself (400, 414, 431 for a
//! request it cannot parse), which never reach the router (`wire.rs` calls `patch_bare_head`).

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The page's own resources only; no inline script or style, no other origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Name and value of each; `no-store` because the data is live and the page changes with the
/// binary: nothing is to be cached.
pub const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

pub async fn add_security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The statuses hyper answers by itself, for a request line or head it cannot parse.
const BARE_STATUS_LINES: [&[u8]; 3] = [b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 431 "];

/// When `bytes` start with a response head that hyper wrote by itself (one of its parse-error
/// statuses, without the headers every router answer has), the same bytes with the security
/// headers inserted before the head's end; `None` for anything else, to be written unchanged.
pub fn patch_bare_head(bytes: &[u8]) -> Option<Vec<u8>> {
    if !BARE_STATUS_LINES.iter().any(|line| bytes.starts_with(line)) {
        return None;
    }
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &bytes[..end];
    // Every router answer carries the policy (the middleware above): then it is not a bare one.
    let marker = CONTENT_SECURITY_POLICY.as_bytes();
    if head.windows(marker.len()).any(|w| w == marker) {
        return None;
    }
    let mut patched = Vec::with_capacity(bytes.len() + 256);
    patched.extend_from_slice(head);
    for (name, value) in SECURITY_HEADERS {
        patched.extend_from_slice(b"\r\n");
        patched.extend_from_slice(name.as_str().as_bytes());
        patched.extend_from_slice(b": ");
        patched.extend_from_slice(value.as_bytes());
    }
    patched.extend_from_slice(&bytes[end..]);
    Some(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_error_heads_are_patched() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let patched = String::from_utf8(patch_bare_head(bare).expect("patched")).expect("utf-8");
        assert!(patched.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n"), "{patched}");
        assert!(patched.contains("\r\nx-content-type-options: nosniff\r\n"), "{patched}");
        assert!(patched.ends_with("cache-control: no-store\r\n\r\n"), "{patched}");
        let ours = format!("HTTP/1.1 400 Bad Request\r\ncontent-security-policy: {CONTENT_SECURITY_POLICY}\r\n\r\nbody");
        assert!(patch_bare_head(ours.as_bytes()).is_none(), "a router answer already has them");
        assert!(patch_bare_head(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(patch_bare_head(b"HTTP/1.1 431 no end").is_none(), "only a whole head");
        assert!(patch_bare_head(b"data: HTTP/1.1 400 \r\n\r\n").is_none(), "only at the start");
    }
}
