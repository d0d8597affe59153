//! State shared by the HTTP handlers, the watch tasks and the test-facing handle.
//!
//! Writers bump a `tokio::sync::watch` with the new resource version after releasing the store
//! lock; watch tasks wake on it and read the history from their own position, so a slow watch
//! never blocks writers and never misses an event (it gets 410 instead if it fell too far behind).

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::Config;
use crate::faults::Fault;
use crate::store::Store;

/// Everything the server tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// The latest resource version, signalled after every write.
    pub(crate) changed: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    pub(crate) closer: watch::Sender<u64>,
    /// While true, watch streams hold back events and bookmarks.
    pub(crate) paused: watch::Sender<bool>,
    /// The fault switched on, if any ([`crate::faults`]).
    pub(crate) fault: watch::Sender<Option<Fault>>,
    /// The server's configuration.
    pub(crate) config: Config,
    /// The listening address.
    pub(crate) addr: SocketAddr,
}

impl Shared {
    /// Shared state around a store.
    #[must_use]
    pub(crate) fn new(store: Store, config: Config, addr: SocketAddr) -> Self {
        let rv = store.resource_version();
        Self {
            store: Mutex::new(store),
            changed: watch::Sender::new(rv),
            closer: watch::Sender::new(0),
            paused: watch::Sender::new(false),
            fault: watch::Sender::new(None),
            config,
            addr,
        }
    }

    /// Read access to the store.
    pub(crate) fn read(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("store mutex poisoned")
    }

    /// Runs a write against the store and wakes the watches.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = self.read();
            let out = f(&mut store);
            (out, store.resource_version())
        };
        self.changed.send_replace(rv);
        out
    }

    /// Ends every open watch stream (clients reconnect from their last version).
    pub(crate) fn close_watches(&self) {
        self.closer.send_modify(|g| *g += 1);
    }
}
