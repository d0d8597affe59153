//! Traffic for kernel tests: echo servers that say who they are and whom they saw, and clients
//! that count the answers.
//!
//! Every answer is one line `sluice-echo <backend> <peer-ip:port>`, so a test can assert load
//! balancing (which backend answered), session affinity (the same one again) and source
//! addresses (the peer the backend saw: the pod's own IP without NAT, a node IP after SNAT).
//! All waits are bounded; nothing retries forever.

mod client;
mod server;

use std::net::SocketAddr;

pub use client::{Tally, request, request_here, tally, tcp_request, tcp_request_from, udp_request};
pub use server::EchoServer;

use crate::error::{Error, Result};

/// First word of every answer.
const MAGIC: &str = "sluice-echo";

/// Transport protocol of a server or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: one connection per request.
    Tcp,
    /// UDP: one datagram per request, from a fresh socket (so a fresh source port).
    Udp,
}

/// What an echo server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The answering server's backend name (usually its pod's name).
    pub backend: String,
    /// The source address the server saw for the request.
    pub seen_source: SocketAddr,
}

impl Reply {
    /// The answer line a server sends.
    pub(crate) fn encode(backend: &str, peer: SocketAddr) -> String {
        format!("{MAGIC} {backend} {peer}\n")
    }

    /// Parses an answer line.
    /// A fourth word (the lab's echo adds the address the server was reached at) is allowed
    /// and ignored.
    pub(crate) fn parse(op: &str, text: &str) -> Result<Self> {
        let mut words = text.split_whitespace();
        let (Some(MAGIC), Some(backend), Some(peer), _, None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return Err(Error::protocol(op, format!("{text:?}")));
        };
        let seen_source = peer
            .parse()
            .map_err(|_| Error::protocol(op, format!("bad peer address in {text:?}")))?;
        Ok(Self {
            backend: backend.to_owned(),
            seen_source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let peer: SocketAddr = "10.244.1.2:40000".parse().unwrap();
        let line = Reply::encode("web-1", peer);
        let reply = Reply::parse("test", &line).unwrap();
        let with_local = format!("{} 10.244.1.2:8080", line.trim_end());
        assert_eq!(Reply::parse("test", &with_local).unwrap(), reply);
        assert!(Reply::parse("test", &format!("{with_local} extra")).is_err());
        assert_eq!(reply.backend, "web-1");
        assert_eq!(reply.seen_source, peer);
    }

    #[test]
    fn garbage_is_rejected() {
        for text in [
            "",
            "hello",
            "sluice-echo a",
            "sluice-echo a b",
            "x a 1.2.3.4:5",
        ] {
            assert!(Reply::parse("test", text).is_err(), "{text:?}");
        }
    }
}
