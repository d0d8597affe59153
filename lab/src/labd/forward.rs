//! The API server on the host's loopback. The server listens on the underlay (where the nodes
//! reach it); the lab never adds links or routes to the host, so the host reaches it through
//! this forwarder instead: a listener bound in the host namespace on 127.0.0.1, accepted by a
//! thread that lives in the underlay namespace, whose outgoing connections are therefore made
//! there. A socket keeps the namespace it was created in, so both ends are right.

use std::io::copy;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use sluice_testbed::NetNs;

/// Forwards every connection accepted on `listener` to `target` inside `underlay`.
pub(crate) fn spawn(
    underlay: &NetNs,
    listener: TcpListener,
    target: SocketAddr,
) -> anyhow::Result<()> {
    underlay.thread("api-forward", move || {
        for conn in listener.incoming() {
            match conn {
                Ok(client) => pipe(client, target),
                Err(e) => eprintln!("api forward: accept: {e}"),
            }
        }
    })?;
    Ok(())
}

/// Connects to `target` (from the calling thread's namespace) and copies both ways.
fn pipe(client: TcpStream, target: SocketAddr) {
    let server = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("api forward: connect {target}: {e}");
            return;
        }
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut client, mut server) = (client, server);
    std::thread::spawn(move || {
        let _ = copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
}
