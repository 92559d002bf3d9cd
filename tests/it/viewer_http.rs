//! The station screen's HTTP surface, without a browser or the data set: only GET (and HEAD) on
//! its own paths, the security headers, the password when one is configured (401 without it,
//! never in the page), and the event stream's first events. In process against the real
//! router on a loopback socket, and once through the binary.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use crate::common::*;
use lesiond::config::ViewerConfig;
use lesiond::recorder::AssessmentFeed;
use lesiond::report::context::ExaminationContext;
use lesiond::viewer::{self, About, Feeds};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct-horse-42";

struct Screen {
    addr: String,
    states: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    assessments: Arc<AssessmentFeed>,
    _about: tokio::sync::watch::Sender<Option<About>>,
    context: tokio::sync::watch::Sender<Option<ExaminationContext>>,
    _dir: tempfile::TempDir,
}

/// A viewer on a free loopback port, with the password when `password` is set.
async fn screen(password: bool) -> Screen {
    screen_with(password, |_| {}).await
}

/// The same, with `[viewer]` keys changed by `adjust`.
async fn screen_with(password: bool, adjust: impl FnOnce(&mut ViewerConfig)) -> Screen {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = password.then(|| write_file(dir.path(), "viewer-token", &format!("{PASSWORD}\n")));
    let mut config = ViewerConfig { enabled: true, listen: "127.0.0.1:0".into(), token_file, ..ViewerConfig::default() };
    adjust(&mut config);
    let bound = viewer::bind(&config).await.expect("bind");
    let addr = bound.local_addr().expect("addr").to_string();
    let (states, states_rx) = tokio::sync::watch::channel(Some(br#"{"state":"idle"}"#.to_vec()));
    let (about, about_rx) = tokio::sync::watch::channel(None);
    let assessments = Arc::new(AssessmentFeed::default());
    let (context, context_rx) = tokio::sync::watch::channel(None);
    bound.serve(Feeds { states: states_rx, assessments: assessments.clone(), about: about_rx, context: context_rx, show_patient: config.show_patient });
    Screen { addr, states, assessments, _about: about, context, _dir: dir }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request on its own connection; reads until the server closes it, or for
/// `read_for` at most (an event stream never closes).
async fn request(addr: &str, method: &str, path: &str, auth: Option<&str>, read_for: Duration) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let length = if matches!(method, "POST" | "PUT") { "Content-Length: 0\r\n" } else { "" };
    let text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{length}Connection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.expect("send");
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(read_for, stream.read_to_end(&mut bytes)).await;
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// Raw bytes on a new connection from `from` (a loopback address), then what comes back until
/// the server closes or `read_for` passes.
async fn raw_from(from: &str, addr: &str, bytes: &[u8], read_for: Duration) -> Answer {
    let mut stream = connect_from(from, addr).await;
    stream.write_all(bytes).await.expect("send");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(read_for, stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// A connection from another loopback address (Linux routes all of 127/8 to lo): the screen
/// sees another client.
async fn connect_from(from: &str, addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("from")).expect("bind");
    socket.connect(addr.parse().expect("addr")).await.expect("connect")
}

fn get_request(host: &str, path: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

fn assert_security_headers(a: &Answer, what: &str) {
    assert!(a.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")), "{what}: {}", a.head);
    assert_eq!(a.header("x-content-type-options").as_deref(), Some("nosniff"), "{what}: {}", a.head);
    assert_eq!(a.header("x-frame-options").as_deref(), Some("DENY"), "{what}: {}", a.head);
    assert_eq!(a.header("referrer-policy").as_deref(), Some("no-referrer"), "{what}: {}", a.head);
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "{what}: {}", a.head);
}

async fn get(addr: &str, path: &str, auth: Option<&str>) -> Answer {
    request(addr, "GET", path, auth, Duration::from_secs(5)).await
}

fn basic(user_password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password))
}

#[tokio::test]
async fn only_get_on_its_own_paths_with_security_headers() {
    let s = screen(false).await;
    let page = get(&s.addr, "/", None).await;
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains(lesiond::report::DISCLAIMER), "{}", page.body);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.starts_with("default-src 'self'")), "{}", page.head);
    assert_eq!(page.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    for path in ["/viewer.js", "/viewer.css"] {
        assert_eq!(get(&s.addr, path, None).await.status, 200, "{path}");
    }
    assert_eq!(request(&s.addr, "HEAD", "/", None, Duration::from_secs(5)).await.status, 200);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/events", "/viewer.js"] {
            let a = request(&s.addr, method, path, None, Duration::from_secs(5)).await;
            assert_eq!(a.status, 405, "{method} {path}: {}", a.head);
        }
        assert_eq!(request(&s.addr, method, "/nope", None, Duration::from_secs(5)).await.status, 404, "{method} /nope");
    }
    for path in ["/nope", "/index.html", "/../etc/passwd", "/events/x", "/assets/viewer.js"] {
        let a = get(&s.addr, path, None).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.header("x-content-type-options").as_deref(), Some("nosniff"), "headers on a 404 too");
    }
}

#[tokio::test]
async fn with_a_password_a_request_without_it_gets_401_and_the_page_never_holds_it() {
    let s = screen(true).await;
    for path in ["/", "/events", "/viewer.js", "/nope"] {
        let a = get(&s.addr, path, None).await;
        assert_eq!(a.status, 401, "{path}: {}", a.head);
        assert!(a.header("www-authenticate").is_some_and(|w| w.starts_with("Basic")), "{}", a.head);
        assert!(!a.body.contains(PASSWORD));
    }
    for wrong in [basic("station:wrong"), basic(&format!("station:{PASSWORD}x")), "Bearer nope".to_string(), basic(PASSWORD)] {
        assert_eq!(get(&s.addr, "/", Some(&wrong)).await.status, 401, "{wrong}");
    }
    let right = basic(&format!("anyone:{PASSWORD}"));
    for path in ["/", "/viewer.js", "/viewer.css"] {
        let a = get(&s.addr, path, Some(&right)).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(!a.body.contains(PASSWORD) && !a.head.contains(PASSWORD), "{path} carries the password");
    }
    assert_eq!(get(&s.addr, "/", Some(&format!("Bearer {PASSWORD}"))).await.status, 200);
    let events = request(&s.addr, "GET", "/events", Some(&right), Duration::from_millis(800)).await;
    assert_eq!(events.status, 200, "{}", events.head);
    assert!(!events.body.contains(PASSWORD));
}

#[tokio::test]
async fn the_stream_sends_the_state_on_connect_then_every_change() {
    let s = screen(false).await;
    s.assessments.publish(br#"{"assessment_id":"earlier"}"#);
    let addr = s.addr.clone();
    let reader = tokio::spawn(async move { request(&addr, "GET", "/events", None, Duration::from_millis(1500)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.states.send_replace(Some(br#"{"state":"assessing"}"#.to_vec()));
    s.assessments.publish(br#"{"assessment_id":"live"}"#);
    let events = reader.await.expect("reader");
    assert_eq!(events.status, 200);
    assert!(events.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")), "{}", events.head);
    assert_eq!(events.header("cache-control").as_deref(), Some("no-store"));
    let order: Vec<&str> = ["\"earlier\"", "{\"state\":\"idle\"}", "{\"state\":\"assessing\"}", "\"live\""]
        .into_iter()
        .filter(|needle| events.body.contains(needle))
        .collect();
    assert_eq!(order.len(), 4, "missing events in: {}", events.body);
    let at = |needle: &str| events.body.find(needle).expect("found");
    assert!(at("{\"state\":\"idle\"}") < at("{\"state\":\"assessing\"}"), "{}", events.body);
    assert!(events.body.contains("event: state") && events.body.contains("event: assessment"), "{}", events.body);
}

/// The frame an assessment used, only once the daemon handed it over (mqtt.publish_frames),
/// and behind the password like everything else.
#[tokio::test]
async fn a_preview_is_served_only_for_an_assessment_that_has_one() {
    let s = screen(true).await;
    let right = basic(&format!("anyone:{PASSWORD}"));
    assert_eq!(get(&s.addr, "/frame/a1", Some(&right)).await.status, 404, "no preview handed over");
    let jpeg = [0xFFu8, 0xD8, 0xFF, 0xE0, 1, 2, 3];
    s.assessments.publish_preview("a1", &jpeg);
    assert_eq!(get(&s.addr, "/frame/a1", None).await.status, 401, "the preview needs the password");
    let a = get(&s.addr, "/frame/a1", Some(&right)).await;
    assert_eq!(a.status, 200, "{}", a.head);
    assert_eq!(a.header("content-type").as_deref(), Some("image/jpeg"));
    assert_eq!(a.header("content-length").as_deref(), Some("7"));
    assert_eq!(get(&s.addr, "/frame/a2", Some(&right)).await.status, 404);
    assert_eq!(request(&s.addr, "POST", "/frame/a1", Some(&right), Duration::from_secs(5)).await.status, 405);
}

/// Continuous mode clears the state with an empty message: the page gets `null` (and shows "No
/// examinations"), not an empty event it cannot parse.
#[tokio::test]
async fn a_cleared_state_reaches_the_page_as_null() {
    let s = screen(false).await;
    let addr = s.addr.clone();
    let reader = tokio::spawn(async move { request(&addr, "GET", "/events", None, Duration::from_millis(1200)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.states.send_replace(Some(Vec::new()));
    let events = reader.await.expect("reader");
    assert!(events.body.contains("event: state\ndata: null\n"), "{}", events.body);
    assert!(!events.body.contains("event: state\ndata: \n"), "an empty state event: {}", events.body);
}

/// Issue 25, attack 1: connections that never finish a request (nothing sent, or half a
/// request line), more than the caps, from several addresses. A real request still gets its
/// page at once; the screen holds no more than its cap at any time, and closes every such
/// connection by itself within the header timeout.
#[tokio::test]
async fn half_open_connections_neither_keep_a_request_out_nor_stay_open() {
    let s = screen_with(true, |c| c.header_timeout_secs = 2).await;
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    // 6 addresses x 20 = 120 connections: beyond 16 per client and beyond 64 in all.
    for client in 2..8 {
        for i in 0..20 {
            let mut c = connect_from(&format!("127.0.0.{client}"), &s.addr).await;
            if i % 2 == 1 {
                c.write_all(b"GET / HT").await.expect("partial request line");
            }
            held.push(c);
        }
    }
    let right = basic(&format!("x:{PASSWORD}"));
    let asked = std::time::Instant::now();
    let page = get(&s.addr, "/", Some(&right)).await;
    let took = asked.elapsed();
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(took < Duration::from_millis(1000), "the page took {took:?} behind {} half-open connections", held.len());
    // Still open a moment later: at most the cap (the others were refused or replaced).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = still_open(&mut held).await;
    assert!(open <= 64, "{open} of {} half-open connections still held after 300 ms", held.len());
    // All closed by the server once the header timeout (2 s) has passed.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(700)).await;
    let open = still_open(&mut held).await;
    assert_eq!(open, 0, "{open} half-open connections still held {:?} after they were opened", started.elapsed());
}

/// How many of `conns` the server has not closed (a read that would wait: still open).
async fn still_open(conns: &mut [tokio::net::TcpStream]) -> usize {
    let mut open = 0;
    for c in conns.iter_mut() {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(5), c.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(_)) => open += 1,
        }
    }
    open
}

/// The idle timeout closes a quiet keep-alive connection but never a stream the page reads:
/// the stream's keep-alives come well within it.
#[tokio::test]
async fn an_event_stream_outlives_the_idle_and_header_timeouts() {
    let s = screen_with(true, |c| {
        c.header_timeout_secs = 1;
        c.idle_timeout_secs = 1;
    })
    .await;
    let right = basic(&format!("x:{PASSWORD}"));
    let addr = s.addr.clone();
    let auth = right.clone();
    let stream = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        c.write_all(&get_request(&addr, "/events", Some(&auth))).await.expect("send");
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_millis(3500), c.read_to_end(&mut got)).await.is_ok();
        (ended, String::from_utf8_lossy(&got).to_string())
    });
    // A keep-alive connection that asks once, then says nothing: closed after the timeout.
    let mut quiet = tokio::net::TcpStream::connect(&s.addr).await.expect("connect");
    quiet.write_all(format!("GET /viewer.css HTTP/1.1\r\nHost: {}\r\nAuthorization: {right}\r\n\r\n", s.addr).as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), quiet.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "a quiet keep-alive connection was kept beyond the timeouts");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "it got its answer first");
    let (ended, text) = stream.await.expect("stream");
    assert!(!ended, "the event stream was closed within 3.5 s: {text}");
    assert!(text.contains("event: state") && text.matches("\n:\n").count() >= 3, "keep-alives every third of the idle timeout: {text}");
}

/// Issue 25, attack 6: a page on another site that points its own name at the station (DNS
/// rebinding) sends that name as Host: refused, on the page and the stream, password or not.
#[tokio::test]
async fn only_its_own_host_names_are_answered() {
    let s = screen_with(true, |c| c.allowed_hosts = vec!["station-3.clinic.lan".into()]).await;
    let right = basic(&format!("x:{PASSWORD}"));
    let port = s.addr.rsplit(':').next().expect("port").to_string();
    for path in ["/", "/events"] {
        for host in ["attacker.example".to_string(), format!("attacker.example:{port}"), "127.0.0.1:1".to_string()] {
            let a = raw_from("127.0.0.1", &s.addr, &get_request(&host, path, Some(&right)), Duration::from_secs(3)).await;
            assert_eq!(a.status, 421, "Host: {host} {path}: {}", a.head);
            assert!(!a.body.contains("event:"), "{}", a.body);
            assert_security_headers(&a, "421");
        }
    }
    for host in [s.addr.clone(), format!("localhost:{port}"), "127.0.0.1".to_string(), format!("station-3.clinic.lan:{port}")] {
        let a = raw_from("127.0.0.1", &s.addr, &get_request(&host, "/", Some(&right)), Duration::from_secs(3)).await;
        assert_eq!(a.status, 200, "Host: {host}: {}", a.head);
    }
    let absolute = format!("GET http://attacker.example/ HTTP/1.1\r\nHost: {}\r\nAuthorization: {right}\r\nConnection: close\r\n\r\n", s.addr);
    assert_eq!(raw_from("127.0.0.1", &s.addr, absolute.as_bytes(), Duration::from_secs(3)).await.status, 421, "the target's authority too");
}

/// Issue 25, attack 6: password guessing. After 5 wrong passwords within a minute an address
/// gets 429 with Retry-After, whatever it sends; another address is not affected.
#[tokio::test]
async fn wrong_passwords_are_limited_per_client_address() {
    let s = screen(true).await;
    let guess = |n: usize| basic(&format!("x:guess-{n}"));
    for n in 0..5 {
        let a = raw_from("127.0.0.3", &s.addr, &get_request(&s.addr, "/", Some(&guess(n))), Duration::from_secs(3)).await;
        assert_eq!(a.status, 401, "guess {n}: {}", a.head);
    }
    let right = basic(&format!("x:{PASSWORD}"));
    for auth in [guess(5), right.clone()] {
        let a = raw_from("127.0.0.3", &s.addr, &get_request(&s.addr, "/events", Some(&auth)), Duration::from_secs(3)).await;
        assert_eq!(a.status, 429, "{}", a.head);
        let wait: u64 = a.header("retry-after").and_then(|r| r.parse().ok()).expect("Retry-After in seconds");
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        assert_security_headers(&a, "429");
    }
    let other = raw_from("127.0.0.4", &s.addr, &get_request(&s.addr, "/", Some(&right)), Duration::from_secs(3)).await;
    assert_eq!(other.status, 200, "another address: {}", other.head);
    // A request without credentials (a browser's first) is not a guess.
    for _ in 0..6 {
        assert_eq!(raw_from("127.0.0.5", &s.addr, &get_request(&s.addr, "/", None), Duration::from_secs(3)).await.status, 401);
    }
    assert_eq!(raw_from("127.0.0.5", &s.addr, &get_request(&s.addr, "/", Some(&right)), Duration::from_secs(3)).await.status, 200);
}

/// Issue 25, attack 6: the answers hyper makes by itself for a request it cannot parse carry
/// the security headers like every other answer, and so do 401, 404, 405.
#[tokio::test]
async fn every_answer_carries_the_security_headers_the_servers_own_errors_included() {
    let s = screen(true).await;
    let read_for = Duration::from_secs(3);
    let malformed = raw_from("127.0.0.1", &s.addr, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", read_for).await;
    assert_eq!(malformed.status, 400, "{}", malformed.head);
    assert_security_headers(&malformed, "hyper's 400");
    let huge = format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\n\r\n", s.addr, "a".repeat(20 * 1024));
    let huge = raw_from("127.0.0.1", &s.addr, huge.as_bytes(), read_for).await;
    assert_eq!(huge.status, 431, "{}", huge.head);
    assert_security_headers(&huge, "hyper's 431");
    let right = basic(&format!("x:{PASSWORD}"));
    assert_security_headers(&get(&s.addr, "/", None).await, "401");
    assert_security_headers(&get(&s.addr, "/nope", Some(&right)).await, "404");
    assert_security_headers(&request(&s.addr, "POST", "/", Some(&right), read_for).await, "405");
    // After a good answer on the same connection, a malformed second request: still patched.
    let two = format!("GET /viewer.css HTTP/1.1\r\nHost: {}\r\nAuthorization: {right}\r\n\r\nGET / HTTP/1.1\r\nbad\r\n\r\n", s.addr);
    let both = raw_from("127.0.0.1", &s.addr, two.as_bytes(), read_for).await;
    let second = both.body.split("HTTP/1.1 400").nth(1).map(|rest| rest.split("\r\n\r\n").next().unwrap_or("").to_lowercase());
    assert!(second.is_some_and(|h| h.contains("x-content-type-options: nosniff")), "{}{}", both.head, both.body);
}

/// `lesiond check` (and the start) warn about a password shorter than 12 characters.
#[test]
fn a_short_password_gets_a_warning_from_check() {
    let work = tempfile::tempdir().expect("tempdir");
    let token = write_file(work.path(), "viewer-token", "short1\n");
    let config = write_file(work.path(), "lesiond.toml", &config_text("check", free_port(), "[source]\nkind = \"synthetic\"\n", work.path()));
    let out = lesiond().args(["check", "--config"]).arg(&config).env("LESIOND_VIEWER__TOKEN_FILE", &token).output().expect("lesiond check");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.lines().any(|l| l.contains("viewer") && l.contains("fewer than 12 characters")), "{text}");
    assert!(!text.contains("short1"), "the password is in the output: {text}");
}

/// Through the binary: the password file works end to end, and the password is never logged.
#[test]
fn the_daemon_serves_its_screen_behind_the_password_and_never_logs_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let token = write_file(work.path(), "viewer-token", &format!("{PASSWORD}\n"));
    let config = write_file(work.path(), "lesiond.toml", &config_text("screen", free_port(), "[source]\nkind = \"synthetic\"\n", work.path()));
    let token_path = token.to_str().expect("utf-8 path");
    let mut daemon = Daemon::start(&config, &[("LESIOND_VIEWER__TOKEN_FILE", token_path)], work.path());
    assert!(wait_until(Duration::from_secs(30), || viewer_addr(&daemon.log_text()).is_some()), "no viewer line: {}", daemon.log_text());
    let addr = viewer_addr(&daemon.log_text()).expect("addr");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (without, with, wrong) = runtime.block_on(async {
        (
            get(&addr, "/", None).await.status,
            get(&addr, "/", Some(&basic(&format!("x:{PASSWORD}")))).await.status,
            get(&addr, "/", Some(&basic("x:tried-this-guess"))).await.status,
        )
    });
    daemon.signal("-TERM");
    let status = daemon.wait(Duration::from_secs(30));
    let log = daemon.log_text();
    assert_eq!((without, with, wrong), (401, 200, 401), "{log}");
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(!log.contains(PASSWORD), "the password is in the log: {log}");
    assert!(log.lines().any(|l| l.contains("wrong password from 127.0.0.1") && l.contains("failures=1")), "the failed login is not logged: {log}");
    assert!(!log.contains("tried-this-guess"), "the guess is in the log: {log}");
}

fn a_context() -> ExaminationContext {
    ExaminationContext {
        context_id: "c-1".into(),
        set_at: "2026-12-05T10:00:00Z".into(),
        patient_id: "P-4711".into(),
        patient_name: Some("Doe^Jane".into()),
        birth_date: Some("19700131".into()),
        sex: Some("F".into()),
        accession_number: Some("ACC-1".into()),
        study_instance_uid: None,
        body_site: Some("left forearm".into()),
        body_site_snomed: Some("14975008".into()),
        lesion_id: Some("L1".into()),
    }
}

#[tokio::test]
async fn the_screen_gets_the_lesion_and_body_site_and_the_patient_only_when_allowed() {
    for show_patient in [false, true] {
        let s = screen_with(false, |c| c.show_patient = show_patient).await;
        let addr = s.addr.clone();
        let reader = tokio::spawn(async move { request(&addr, "GET", "/events", None, Duration::from_millis(1200)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.context.send_replace(Some(a_context()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.context.send_replace(None);
        let events = reader.await.expect("reader");
        // No context on connect, then the one set, then none again: "no patient selected".
        assert_eq!(events.body.matches("event: context\ndata: null\n").count(), 2, "{}", events.body);
        assert!(events.body.contains(r#""lesion_id":"L1""#) && events.body.contains(r#""body_site":"left forearm""#), "{}", events.body);
        assert_eq!(events.body.contains("P-4711"), show_patient, "patient id with show_patient = {show_patient}: {}", events.body);
        assert_eq!(events.body.contains("Doe^Jane"), show_patient, "{}", events.body);
        assert!(!events.body.contains("19700131") && !events.body.contains("ACC-1"), "the screen never needs these: {}", events.body);
    }
}
