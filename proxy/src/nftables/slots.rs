//! Stable endpoint-bucket slots: each Service port owns 2^16 buckets of the shared
//! `endpoint-buckets` map for as long as it exists, so a change to one Service never moves
//! another's buckets (which would turn a one-service change into a cluster-wide rewrite).

use std::collections::HashMap;

use sluice_model::service::ServicePortName;

/// Slot assignment; slot 0 is never used so a bucket key is never 0.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    by_port: HashMap<ServicePortName, u32>,
    free: Vec<u32>,
    next: u32,
}

impl Slots {
    /// The port's slot, assigning the lowest free one on first use.
    pub(crate) fn get_or_assign(&mut self, port: &ServicePortName) -> u32 {
        if let Some(s) = self.by_port.get(port) {
            return *s;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_port.insert(port.clone(), slot);
        slot
    }

    /// Frees the port's slot.
    pub(crate) fn release(&mut self, port: &ServicePortName) {
        if let Some(s) = self.by_port.remove(port) {
            self.free.push(s);
        }
    }
}
