//! The bounded event history that watches resume from.
//!
//! A watch that names a `resourceVersion` must receive every change after it, or — when that
//! version is older than what the server remembers — a 410 `Expired` so the client re-lists.
//! Both the size bound and [`History::compact`] move the "oldest remembered" mark forward,
//! which is how tests provoke the re-list path.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::Resource;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`…).
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the history.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The resource version this change created.
    pub(crate) rv: u64,
    /// The kind of the object.
    pub(crate) resource: &'static Resource,
    /// What happened.
    pub(crate) kind: EventType,
    /// The object after the change (for deletes: the last state, with the deletion's version).
    pub(crate) object: Value,
    /// The object before a modification, so filtered watches can turn it into ADDED/DELETED.
    pub(crate) previous: Option<Value>,
}

/// Recent events, oldest first.
#[derive(Debug)]
pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every event with a version above this is still in `events`.
    compacted: u64,
}

impl History {
    /// An empty history keeping at most `capacity` events.
    #[must_use]
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            compacted: 0,
        }
    }

    /// Records an event, dropping the oldest when full.
    pub(crate) fn push(&mut self, event: Event) {
        if self.events.len() >= self.capacity
            && let Some(old) = self.events.pop_front()
        {
            self.compacted = old.rv;
        }
        self.events.push_back(Arc::new(event));
    }

    /// Forgets everything up to and including `rv`.
    pub(crate) fn compact(&mut self, rv: u64) {
        self.events.retain(|e| e.rv > rv);
        self.compacted = self.compacted.max(rv);
    }

    /// The oldest version a watch may still resume from.
    #[must_use]
    pub(crate) fn oldest(&self) -> u64 {
        self.compacted
    }

    /// Every event after `rv`, or `Expired` when some of them were forgotten.
    pub(crate) fn since(&self, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::Expired {
                requested: rv,
                oldest: self.compacted,
            });
        }
        Ok(self.events.iter().filter(|e| e.rv > rv).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    fn ev(rv: u64) -> Event {
        Event {
            rv,
            resource: &RESOURCES[0],
            kind: EventType::Added,
            object: Value::Null,
            previous: None,
        }
    }

    #[test]
    fn bounded_and_compacted() {
        let mut h = History::new(2);
        for rv in 1..=3 {
            h.push(ev(rv));
        }
        assert_eq!(h.oldest(), 1);
        assert_eq!(h.since(1).unwrap().len(), 2);
        assert!(h.since(0).is_err());
        h.compact(3);
        assert_eq!(h.since(3).unwrap().len(), 0);
        assert_eq!(h.since(2).unwrap_err().code(), 410);
    }
}
