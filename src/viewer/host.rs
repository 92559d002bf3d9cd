//! The `Host` check: the screen answers only a request addressed to it, by the IP address the
//! connection reached (with its port, or none), `localhost` when that address is loopback, or
//! a name from `viewer.allowed_hosts`. Anything else gets 421: a page on another site that
//! points its own name at the station (DNS rebinding) is refused, because the browser sends
//! that name, not the station's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::server::Client;

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// From `viewer.allowed_hosts`: lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new(names: &[String]) -> AllowedHosts {
        AllowedHosts { names: names.iter().map(|n| normalize(n)).collect() }
    }

    /// Whether `host` (a `Host` header or a request target's authority) names this screen,
    /// reached at `local`.
    pub fn admits(&self, host: &str, local: SocketAddr) -> bool {
        let Some((name, port)) = split_host_port(host.trim()) else { return false };
        if port.is_some_and(|p| p != local.port()) {
            return false;
        }
        let name = normalize(name);
        let local_ip = local.ip().to_canonical();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.to_canonical() == local_ip || (local_ip.is_loopback() && ip.is_loopback());
        }
        (local_ip.is_loopback() && name == "localhost") || self.names.contains(&name)
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name`, `name:port`, `[v6]` or `[v6]:port`; the IPv6 literal comes back without brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip, port));
    }
    match s.rsplit_once(':') {
        Some((name, port)) => Some((name, Some(port.parse().ok()?))),
        None if s.is_empty() => None,
        None => Some((s, None)),
    }
}

pub async fn check_host(State(hosts): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    let Some(local) = request.extensions().get::<Client>().map(|c| c.local) else {
        // Only the screen's own server runs this router, and it always says where it was reached.
        return (StatusCode::MISDIRECTED_REQUEST, "this screen cannot tell where it was reached\n").into_response();
    };
    let header = request.headers().get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    let authority = request.uri().authority().map(|a| a.as_str());
    if header.is_none() && authority.is_none() {
        return (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response();
    }
    if header.into_iter().chain(authority).all(|h| hosts.admits(h, local)) {
        return next.run(request).await;
    }
    (StatusCode::MISDIRECTED_REQUEST, "this screen does not answer to that host name\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_reached_localhost_on_loopback_and_configured_names() {
        let hosts = AllowedHosts::new(&["Station-3.clinic.lan".to_string()]);
        let lo: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        for ok in ["127.0.0.1:8080", "127.0.0.1", "localhost:8080", "LOCALHOST", "[::1]:8080", "station-3.clinic.lan", "station-3.clinic.lan.:8080"] {
            assert!(hosts.admits(ok, lo), "{ok}");
        }
        for bad in ["attacker.example", "attacker.example:8080", "127.0.0.1:9090", "localhost.attacker.example", "", "10.0.0.5:8080", "[::1", "127.0.0.1:x"] {
            assert!(!hosts.admits(bad, lo), "{bad}");
        }
        let lan: SocketAddr = "10.0.0.5:8080".parse().expect("addr");
        assert!(hosts.admits("10.0.0.5:8080", lan));
        assert!(!hosts.admits("localhost:8080", lan), "localhost is not this screen on the network");
        assert!(!hosts.admits("127.0.0.1:8080", lan));
        let dual: SocketAddr = "[::ffff:10.0.0.5]:8080".parse().expect("addr");
        assert!(hosts.admits("10.0.0.5:8080", dual), "a dual-stack socket reached over IPv4");
    }
}
