//! Runs the test API server until stdin closes, writing a kubeconfig for it.
//!
//! `cargo run -p sluice-test-apiserver --example serve -- /tmp/kubeconfig` then point kubectl or
//! a daemon at `--kubeconfig /tmp/kubeconfig` for manual poking.

use std::io::Read;

use sluice_test_apiserver::TestApiServer;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kubeconfig".to_owned());
    let server = TestApiServer::start();
    server.write_kubeconfig(&path)?;
    println!(
        "serving {} (kubeconfig: {path}); close stdin to stop",
        server.url()
    );
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
