//! A minimal HTTP/1.0 client: for the API server (from `up`, which runs in another process
//! than the server) and for the pods' echo servers (from a thread inside a lab namespace).
//! HTTP/1.0 with `Connection: close` lets the server end the body by closing, so no chunked
//! decoding is needed and no HTTP stack joins the lab's dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Sends one request to `addr` from the calling thread's namespace, each step bounded by
/// `timeout`.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let raw = exchange(addr, method, path, body, timeout)
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    parse(&raw).with_context(|| format!("{method} http://{addr}{path}"))
}

fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<String> {
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
}

/// Splits a raw response into status code and body.
pub(crate) fn parse(raw: &str) -> anyhow::Result<Response> {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("no end of headers in {raw:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
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
        let r = parse("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{}"));
        assert!(parse("garbage").is_err());
        assert!(parse("HTTP/1.1 x\r\n\r\n").is_err());
    }
}
