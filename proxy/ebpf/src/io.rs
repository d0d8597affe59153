//! The one chokepoint every map write goes through: [`MapIo`], implemented by the kernel maps
//! ([`crate::kernel::KernelMaps`]) and by [`FakeMaps`] (unit tests, no root needed).

use std::sync::{Arc, Mutex, MutexGuard};

use sluice_model::service::IpFamily;

use crate::diff::{Op, apply_to};
use crate::error::EbpfError;
use crate::render::MapSet;

/// Reading and writing the service and slot maps.
pub trait MapIo: Send {
    /// Everything in `family`'s service and slot maps now (the other family's may be left
    /// out).
    fn dump(&mut self, family: IpFamily) -> Result<MapSet, EbpfError>;

    /// Applies `ops` in order; stops at the first failure.
    fn apply(&mut self, ops: &[Op]) -> Result<(), EbpfError>;

    /// Makes sure the programs are attached (re-attaching what was detached behind our back);
    /// returns how many were re-attached.
    fn ensure_attached(&mut self) -> Result<usize, EbpfError> {
        Ok(0)
    }

    /// Per-mode counters (`stats` index → sum over CPUs), when the maps are loaded.
    fn counters(&mut self) -> Vec<u64> {
        Vec::new()
    }

    /// Removes everything (detach, unpin).
    fn cleanup(&mut self) -> Result<(), EbpfError>;
}

#[derive(Debug, Default)]
struct FakeInner {
    maps: MapSet,
    writes: usize,
    fail_next: usize,
    cleanups: usize,
}

/// Maps in memory; clones share them, so a test keeps a handle while the backend owns one.
#[derive(Clone, Debug, Default)]
pub struct FakeMaps(Arc<Mutex<FakeInner>>);

impl FakeMaps {
    fn lock(&self) -> MutexGuard<'_, FakeInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the maps hold.
    pub fn maps(&self) -> MapSet {
        self.lock().maps.clone()
    }

    /// Changes the maps behind the backend's back (drift).
    pub fn tamper(&self, f: impl FnOnce(&mut MapSet)) {
        f(&mut self.lock().maps);
    }

    /// How many single-entry writes so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Makes the next `n` applies fail before writing anything.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// How many cleanups ran.
    pub fn cleanups(&self) -> usize {
        self.lock().cleanups
    }
}

impl MapIo for FakeMaps {
    fn dump(&mut self, family: IpFamily) -> Result<MapSet, EbpfError> {
        Ok(self.lock().maps.of_family(family))
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), EbpfError> {
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(EbpfError::Injected);
        }
        apply_to(&mut inner.maps, ops);
        inner.writes += ops.len();
        Ok(())
    }

    fn cleanup(&mut self) -> Result<(), EbpfError> {
        let mut inner = self.lock();
        inner.maps = MapSet::default();
        inner.cleanups += 1;
        Ok(())
    }
}
