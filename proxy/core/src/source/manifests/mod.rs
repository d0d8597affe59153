//! `--manifests-dir DIR`: Services and EndpointSlices (and optionally this
//! node's Node, for its zone) from YAML/JSON files instead of the API, for
//! benchmarks, tests, and operators who want a VIP dataplane without a
//! cluster.
//!
//! Changes are followed with inotify (the `notify` crate): any event in the
//! directory that can change a file (not a mere open, read or close after reading)
//! triggers a rescan after a 100 ms quiet period, so an editor's write-rename-delete
//! dance costs one scan. Access events must be ignored: the scan itself opens the
//! directory and reads files, and counting that as a change kept the source rescanning
//! five times a second forever (issue 14). If inotify cannot be set up
//! (instance limits, an unsupported filesystem) the source falls back to
//! polling the files' stamps every second. A scan re-reads only the files
//! whose inode, size or mtime changed (see [`scan`]). Bad files are logged
//! with their name and reason and skipped; the rest still programs.
//!
//! Services need an explicit `clusterIP` here: nothing allocates one.

mod parse;
mod scan;

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

use super::SourceError;
use crate::runner::Feed;

pub use parse::{Object, Parsed, parse};
use scan::Scanner;
pub use scan::{FileProblem, ScanReport};

/// Quiet time after a change before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Polling period when inotify is unavailable.
const POLL: Duration = Duration::from_secs(1);

/// How the source follows the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify events, falling back to polling if they cannot be set up.
    Inotify,
    /// Stamp polling every second.
    Poll,
}

/// Reads and follows a manifests directory.
#[derive(Debug)]
pub struct ManifestsSource {
    dir: PathBuf,
    node_name: String,
    mode: WatchMode,
    scanner: Scanner,
}

impl ManifestsSource {
    /// A source for `dir` on node `node_name`, following with inotify.
    pub fn new(dir: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            node_name: node_name.into(),
            mode: WatchMode::Inotify,
            scanner: Scanner::default(),
        }
    }

    /// Chooses how to follow changes (tests use both).
    pub fn with_mode(mut self, mode: WatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// Scans once and feeds what changed since the previous scan; logs and
    /// returns the problems found.
    pub fn scan(&mut self, feed: &Feed) -> Result<ScanReport, SourceError> {
        let report = (self.scanner.scan(&self.dir, &self.node_name, feed)).map_err(|source| {
            SourceError::ManifestsDir {
                path: self.dir.clone(),
                source,
            }
        })?;
        for p in &report.problems {
            tracing::warn!(file = %p.path.display(), "skipping manifest: {}", p.reason);
        }
        tracing::debug!(
            files = report.files,
            parsed = report.parsed,
            examined = report.examined,
            applied = report.applied,
            deleted = report.deleted,
            "scanned manifests"
        );
        Ok(report)
    }

    /// The first scan, marking both initial lists complete (so the runner
    /// may sync), then follows the directory until it becomes unreadable.
    pub async fn run(mut self, feed: Feed) -> Result<(), SourceError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = match self.mode {
            WatchMode::Inotify => inotify(&self.dir, tx),
            WatchMode::Poll => None,
        };
        self.scan(&feed)?;
        feed.services_listed();
        feed.slices_listed();
        match _watcher {
            Some(_) => loop {
                if rx.recv().await.is_none() {
                    return Ok(());
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                self.scan(&feed)?;
            },
            None => loop {
                tokio::time::sleep(POLL).await;
                self.scan(&feed)?;
            },
        }
    }
}

/// Whether an event can mean a changed file: everything but opening, reading, and
/// closing a file that was not written.
fn may_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// An inotify watch on `dir` that sends a unit per event; `None` (with a
/// warning) when it cannot be set up.
fn inotify(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        match event {
            Ok(e) if !may_change(&e.kind) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!("manifests directory watch: {e}"),
        }
        let _ = tx.send(());
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch with inotify, polling every second: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};

    /// The scan opens the directory and reads files: those events must not trigger the next
    /// scan (they did, and the source rescanned forever).
    #[test]
    fn reading_is_no_change() {
        let access = |a| EventKind::Access(a);
        assert!(!super::may_change(&access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!super::may_change(&access(AccessKind::Read)));
        assert!(!super::may_change(&access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(super::may_change(&access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(super::may_change(&EventKind::Create(CreateKind::File)));
        assert!(super::may_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(super::may_change(&EventKind::Remove(RemoveKind::File)));
    }
}
