//! One pass over the manifests directory: re-parse the files whose stamp
//! (inode, size, mtime) changed, then diff the wanted objects against the
//! applied ones and feed only the difference.
//!
//! The diff is global rather than per file so that an object moving from one
//! file to another in the same edit is neither deleted nor doubled. When two
//! files define the same object, the first file in name order wins and the
//! duplicate is reported. A file that turns bad keeps its last good objects
//! (a typo must not take Services down); a file that is removed takes its
//! objects with it.
//!
//! Reads are capped ([`MAX_FILE`], through the shared `bounded` reader): a 1 GiB file or
//! `/dev/zero` behind a symlink is refused after reading at most the limit. Entries that
//! cannot be manifests — directories, FIFOs (opening one would block the source forever),
//! sockets, devices, symlink loops, dangling symlinks — are skipped with a log line, once
//! per entry until it changes, rather than silently.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::parse::{ObjKey, Object, parse};
use crate::runner::Feed;

/// A file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped (or what in it was skipped).
    pub reason: String,
}

/// What one scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Manifest files in the directory.
    pub files: usize,
    /// Objects applied (new or changed) by this scan.
    pub applied: usize,
    /// Objects deleted by this scan.
    pub deleted: usize,
    /// Bad files and skipped documents, newly found by this scan.
    pub problems: Vec<FileProblem>,
}

/// The largest manifest file read (10,000 Services with their slices are about 8 MiB).
pub(super) const MAX_FILE: usize = 64 << 20;

/// Identity and version of a file's content as far as `stat` can tell.
type Stamp = (u64, u64, Option<SystemTime>);

#[derive(Debug)]
struct File {
    stamp: Stamp,
    objects: Vec<Object>,
}

/// The directory as last scanned.
#[derive(Debug, Default)]
pub(super) struct Scanner {
    files: BTreeMap<PathBuf, File>,
    /// Applied objects and the file each came from.
    applied: BTreeMap<ObjKey, PathBuf>,
    /// Entries skipped as no manifest file, with the reason already reported.
    skipped: BTreeMap<PathBuf, String>,
}

impl Scanner {
    /// Scans `dir` and feeds the differences; `node` is this node's name
    /// (only that Node object is used).
    pub(super) fn scan(
        &mut self,
        dir: &Path,
        node: &str,
        feed: &Feed,
    ) -> std::io::Result<ScanReport> {
        let mut report = ScanReport::default();
        let (present, skipped) = list(dir)?;
        for (path, reason) in &skipped {
            if self.skipped.get(path) != Some(reason) {
                report.problems.push(problem(path, reason.clone()));
            }
        }
        self.skipped = skipped;
        report.files = present.len();
        self.files.retain(|path, _| present.contains_key(path));
        let mut changed = BTreeSet::new();
        for (path, stamp) in present {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let previous = self.files.remove(&path).map(|f| f.objects);
            let objects = match read(&path) {
                Ok((objects, notes)) => {
                    report
                        .problems
                        .extend(notes.into_iter().map(|reason| problem(&path, reason)));
                    objects
                }
                Err(reason) => {
                    report.problems.push(problem(&path, reason));
                    previous.unwrap_or_default()
                }
            };
            changed.insert(path.clone());
            self.files.insert(path, File { stamp, objects });
        }
        self.apply(&changed, node, feed, &mut report);
        Ok(report)
    }

    /// Feeds objects that are new, changed, or moved to another file, and
    /// deletes those no file defines any more.
    fn apply(
        &mut self,
        changed: &BTreeSet<PathBuf>,
        node: &str,
        feed: &Feed,
        report: &mut ScanReport,
    ) {
        let mut wanted: BTreeMap<ObjKey, (&PathBuf, &Object)> = BTreeMap::new();
        for (path, file) in &self.files {
            for object in &file.objects {
                let key = object.key();
                if let Some((first, _)) = wanted.get(&key) {
                    let reason = format!(
                        "{} {}/{} is already defined in {}",
                        key.0,
                        key.1,
                        key.2,
                        first.display()
                    );
                    if changed.contains(path) {
                        report.problems.push(problem(path, reason));
                    }
                    continue;
                }
                wanted.insert(key, (path, object));
            }
        }
        for (key, _) in self
            .applied
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k))
        {
            report.deleted += 1;
            delete(feed, key);
        }
        let mut applied = BTreeMap::new();
        for (key, (path, object)) in wanted {
            if changed.contains(path) || self.applied.get(&key) != Some(path) {
                report.applied += 1;
                object.feed(feed, node);
            }
            applied.insert(key, path.clone());
        }
        self.applied = applied;
    }
}

fn problem(path: &Path, reason: String) -> FileProblem {
    FileProblem {
        path: path.to_owned(),
        reason,
    }
}

/// Manifest files: regular files (symlinks followed, as in a ConfigMap
/// volume) named `*.yaml`, `*.yml` or `*.json`, not hidden; and the entries so named that
/// are no regular file, with the reason.
fn list(dir: &Path) -> std::io::Result<(BTreeMap<PathBuf, Stamp>, BTreeMap<PathBuf, String>)> {
    let mut files = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if name.starts_with('.') || !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink (a file removed meanwhile is gone from the next listing).
                if std::fs::symlink_metadata(&path).is_ok() {
                    skipped.insert(path, "a symbolic link to nothing".to_owned());
                }
                continue;
            }
            Err(e) => {
                skipped.insert(path, format!("cannot stat: {e}"));
                continue;
            }
        };
        match sluice_model::bounded::regular(meta.file_type()) {
            Ok(()) => {
                files.insert(path, (meta.ino(), meta.len(), meta.modified().ok()));
            }
            Err(e) => {
                skipped.insert(path, e.to_string());
            }
        }
    }
    Ok((files, skipped))
}

fn read(path: &Path) -> Result<(Vec<Object>, Vec<String>), String> {
    let text = sluice_model::bounded::read_to_string(path, MAX_FILE).map_err(|e| e.to_string())?;
    let parsed = parse(&text)?;
    Ok((parsed.objects, parsed.notes))
}

fn delete(feed: &Feed, (kind, namespace, name): &ObjKey) {
    let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        namespace: Some(namespace.clone()),
        name: Some(name.clone()),
        ..Default::default()
    };
    match *kind {
        "Service" => feed.on_service_deleted(&k8s_openapi::api::core::v1::Service {
            metadata: meta,
            ..Default::default()
        }),
        "EndpointSlice" => feed.on_slice_deleted(&k8s_openapi::api::discovery::v1::EndpointSlice {
            metadata: meta,
            ..Default::default()
        }),
        _ => {}
    }
}
