//! A minimal HTTP/1.0 client for the test bed's daemons (etcd's health and JSON gateway) and
//! the lab's (the API server, pods' echo servers, proxies' health), from the calling
//! thread's namespace.
//!
//! HTTP/1.0 with `Connection: close` means the server ends the body by closing, so no chunked
//! decoding is needed; this keeps an HTTP stack out of the test bed's dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Error, Result};

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// Sends one request and returns status code and body, all within `timeout` per step.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response> {
    let op = format!("{method} http://{addr}{path}");
    let exchange = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        Ok(raw)
    };
    let raw = exchange().map_err(|e| Error::io(op.clone(), e))?;
    parse(&op, &raw)
}

/// Splits a raw response into status code and body.
fn parse(op: &str, raw: &str) -> Result<Response> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::protocol(op, "no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::protocol(op, format!("bad status line in {head:?}")))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let r = parse("t", raw).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        assert!(parse("t", "garbage").is_err());
    }
}
