//! The injected faults as a client meets them on the wire, switched from the handle and over
//! the control path: 500s, 410 on versioned lists and watches (and not on lists at 0), cut
//! watches, and requests a hang holds until it ends.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sluice_test_apiserver::{FAULT_CONTROL_PATH, Fault, TestApiServer};

/// One HTTP/1.1 request; `(status, body)`. The server closes the connection after answering
/// (`Connection: close`), so reading to the end is the whole answer.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

const SERVICES: &str = "/api/v1/services";

#[test]
fn server_error_answers_500_to_everything_but_the_control_path() {
    let server = TestApiServer::start();
    let addr = server.addr();
    server.set_fault(Fault::ServerError);
    let (code, body) = request(addr, "GET", SERVICES);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("InternalError"), "{body}");
    let (code, body) = request(addr, "GET", FAULT_CONTROL_PATH);
    assert_eq!((code, body.contains("server-error")), (200, true), "{body}");
    let (code, _) = request(addr, "DELETE", FAULT_CONTROL_PATH);
    assert_eq!(code, 200);
    assert_eq!(server.fault(), None);
    assert_eq!(request(addr, "GET", SERVICES).0, 200);
}

#[test]
fn gone_refuses_versioned_lists_and_watches_but_not_a_fresh_list() {
    let server = TestApiServer::start();
    let addr = server.addr();
    let (code, _) = request(addr, "PUT", &format!("{FAULT_CONTROL_PATH}?fault=gone"));
    assert_eq!(code, 200);
    assert_eq!(server.fault(), Some(Fault::Gone));
    let rv = server.resource_version();
    let (code, body) = request(addr, "GET", &format!("{SERVICES}?resourceVersion={rv}"));
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("Expired"), "{body}");
    assert_eq!(
        request(addr, "GET", &format!("{SERVICES}?resourceVersion=0")).0,
        200
    );
    assert_eq!(request(addr, "GET", SERVICES).0, 200);
    // A watch is a 200 whose one event is the 410, as the real server sends it.
    let (code, body) = request(
        addr,
        "GET",
        &format!("{SERVICES}?watch=true&resourceVersion={rv}"),
    );
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""type":"ERROR""#) && body.contains("410"),
        "{body}"
    );
    assert_eq!(
        request(addr, "PUT", &format!("{FAULT_CONTROL_PATH}?fault=nope")).0,
        400
    );
}

#[test]
fn dropped_watches_end_soon_after_they_start() {
    let server = TestApiServer::start();
    server.set_fault(Fault::DropWatches);
    let start = Instant::now();
    let (code, _) = request(
        server.addr(),
        "GET",
        &format!("{SERVICES}?watch=true&allowWatchBookmarks=true"),
    );
    assert_eq!(code, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the watch was cut"
    );
    assert_eq!(request(server.addr(), "GET", SERVICES).0, 200);
}

#[test]
fn a_hang_holds_requests_until_it_ends() {
    let server = TestApiServer::start();
    server.set_fault(Fault::Hang);
    let addr = server.addr();
    let waiting = std::thread::spawn(move || request(addr, "GET", SERVICES));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "answered during the hang");
    server.clear_fault();
    assert_eq!(waiting.join().unwrap().0, 200);
}
