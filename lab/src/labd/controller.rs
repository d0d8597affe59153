//! The lab's EndpointSlice controller loop: whenever the store's resource version moves, it
//! recomputes every selector Service's slice ([`super::slices::desired`]) and creates, updates
//! or deletes the slices it manages so the store matches. Level-triggered and idempotent, so a
//! missed change is repaired by the next one and its own writes settle after one extra pass.
//! It holds the store in-process, so it needs no watch machinery.

use std::time::Duration;

use sluice_testbed::apiserver::TestApiServer;

use super::slices::{self, CONTROLLER, MANAGED_BY};

const POLL: Duration = Duration::from_millis(50);

/// Runs forever.
pub(crate) fn run(server: &TestApiServer) -> ! {
    let mut seen = u64::MAX;
    loop {
        let now = server.resource_version();
        if now != seen {
            if let Err(e) = reconcile(server) {
                eprintln!("endpointslice controller: {e:#}");
            }
            seen = now;
        }
        std::thread::sleep(POLL);
    }
}

/// One pass: makes the managed slices equal to the desired ones.
pub(crate) fn reconcile(server: &TestApiServer) -> anyhow::Result<()> {
    let services = server.list("services")?;
    let pods = server.list("pods")?;
    let mut want = slices::desired(&services, &pods);
    for have in server.list("endpointslices")? {
        if have["metadata"]["labels"][MANAGED_BY] != CONTROLLER {
            continue;
        }
        let key = slices::key(&have);
        match want.remove(&key) {
            None => drop(server.delete("endpointslices", &key.0, &key.1)?),
            Some(w) if slices::same(&have, &w) => {}
            Some(mut w) => {
                w["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"].clone();
                server.update(w)?;
            }
        }
    }
    for (_, slice) in want {
        server.create(slice)?;
    }
    Ok(())
}
