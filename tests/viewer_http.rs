//! The station screen's HTTP surface, without a browser or the data set: only GET (and HEAD) on
//! its own paths, the security headers, the password when one is configured (401 without it,
//! never in the page), and the event stream's first events. In process against the real
//! router on a loopback socket, and once through the binary.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use lesiond::config::ViewerConfig;
use lesiond::viewer::{self, About, AssessmentFeed, Feeds};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct-horse-42";

struct Screen {
    addr: String,
    states: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    assessments: Arc<AssessmentFeed>,
    _about: tokio::sync::watch::Sender<Option<About>>,
    _dir: tempfile::TempDir,
}

/// A viewer on a free loopback port, with the password when `password` is set.
async fn screen(password: bool) -> Screen {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = password.then(|| write_file(dir.path(), "viewer-token", &format!("{PASSWORD}\n")));
    let config = ViewerConfig { enabled: true, listen: "127.0.0.1:0".into(), token_file };
    let bound = viewer::bind(&config).await.expect("bind");
    let addr = bound.local_addr().expect("addr").to_string();
    let (states, states_rx) = tokio::sync::watch::channel(Some(br#"{"state":"idle"}"#.to_vec()));
    let (about, about_rx) = tokio::sync::watch::channel(None);
    let assessments = Arc::new(AssessmentFeed::default());
    bound.serve(Feeds { states: states_rx, assessments: assessments.clone(), about: about_rx });
    Screen { addr, states, assessments, _about: about, _dir: dir }
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
    assert!(page.body.contains("Decision support, not a diagnosis"), "{}", page.body);
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
    let (without, with) = runtime.block_on(async {
        (get(&addr, "/", None).await.status, get(&addr, "/", Some(&basic(&format!("x:{PASSWORD}")))).await.status)
    });
    daemon.signal("-TERM");
    let status = daemon.wait(Duration::from_secs(30));
    let log = daemon.log_text();
    assert_eq!((without, with), (401, 200), "{log}");
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(!log.contains(PASSWORD), "the password is in the log: {log}");
}
