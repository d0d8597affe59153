//! One proxy per network namespace (issue 15 bug 7).
//!
//! Two proxies in one network namespace both own the `sluice` tables: each full sync of one
//! "repairs" what the other programmed, so they rewrite each other's rules every sync
//! without a word, and the Services the two were given fight. The kernel offers no owner
//! that outlives a netlink socket across restarts (`NFT_TABLE_F_OWNER` would delete the
//! tables when the proxy exits, which breaks restarts that adopt the rules), and a pid file
//! under `/run` is shared by every namespace of the host. An *abstract* Unix socket is what
//! fits: its name lives in the network namespace, only one process can bind it, and the
//! kernel releases it when that process dies, however it dies. The owner answers a
//! connection with its pid, so the refusal can name it.

use std::io::{self, Read as _, Write as _};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// The abstract socket name claimed in the namespace.
const NAME: &[u8] = b"sluice-proxy/dataplane-owner";
/// How often a start waiting for a previous owner to exit tries again.
const RETRY: Duration = Duration::from_millis(200);

/// Why this proxy may not program the namespace.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Another proxy owns it.
    #[error(
        "another sluice-proxy ({owner}) already programs this network namespace's rules; two \
         would rewrite each other's on every sync. Stop it first, or run this one in its own \
         network namespace"
    )]
    Taken {
        /// `pid N`, or `pid unknown` when it did not answer.
        owner: String,
    },
    /// The socket could not be made.
    #[error("cannot claim the network namespace's proxy lock: {0}")]
    Io(#[from] io::Error),
}

/// Held while this proxy owns the namespace's dataplane; released when the process exits.
#[derive(Debug)]
pub struct Owner {
    _thread: std::thread::JoinHandle<()>,
}

/// Claims the namespace, waiting up to `wait` for a previous owner to exit (a restart).
pub fn claim(wait: Duration) -> Result<Owner, OwnerError> {
    let addr = SocketAddr::from_abstract_name(NAME)?;
    let start = Instant::now();
    let listener = loop {
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => break listener,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < wait => {
                std::thread::sleep(RETRY);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let owner = match owner_pid(&addr) {
                    Some(pid) => format!("pid {pid}"),
                    None => "pid unknown".to_owned(),
                };
                return Err(OwnerError::Taken { owner });
            }
            Err(e) => return Err(e.into()),
        }
    };
    let thread = std::thread::Builder::new()
        .name("owner".to_owned())
        .spawn(move || answer(&listener))?;
    Ok(Owner { _thread: thread })
}

/// Tells whoever connects this process's pid; never returns (the listener is the claim).
fn answer(listener: &UnixListener) {
    for stream in listener.incoming() {
        match stream {
            Ok(mut stream) => {
                let _ = writeln!(stream, "{}", std::process::id());
            }
            // Out of descriptors or the like: keep the claim, try again later.
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// The owner's pid, as it answers.
fn owner_pid(addr: &SocketAddr) -> Option<u32> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut text = String::new();
    stream.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_the_owner() {
        let e = OwnerError::Taken {
            owner: "pid 7".to_owned(),
        };
        assert!(
            e.to_string()
                .starts_with("another sluice-proxy (pid 7) already")
        );
    }
}
