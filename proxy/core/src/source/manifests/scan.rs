//! One pass over the manifests directory: re-parse the files whose stamp
//! (inode, size, mtime) changed, then re-decide only the objects those files defined or
//! define now, and feed only the difference. A scan where no stamp changed reads no file,
//! parses nothing and looks at no object: with nothing changing, the source costs a
//! `readdir` and a `stat` per file, whatever the number of objects.
//!
//! The scanner keeps no parsed object, only each file's object keys and, per key, the
//! files defining it (an object moving from one file to another in the same edit is
//! neither deleted nor doubled). When two files define the same object, the first file in
//! name order wins and the duplicate is reported; when the winner goes away, the next
//! file's object is read again from disk (rare: duplicates are a mistake). A file that
//! turns bad keeps its last good objects (a typo must not take Services down); a file
//! that is removed takes its objects with it.
//!
//! Reads are capped ([`MAX_FILE`], through the shared `bounded` reader): a 1 GiB file or
//! `/dev/zero` behind a symlink is refused after reading at most the limit. Entries that
//! cannot be manifests — directories, FIFOs (opening one would block the source forever),
//! sockets, devices, symlink loops, dangling symlinks — are skipped with a log line, once
//! per entry until it changes, rather than silently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::parse::{ObjKey, Object, parse_with};
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
    /// Files read and parsed by this scan (new or changed stamps, and files holding an
    /// object that another file's removal uncovered).
    pub parsed: usize,
    /// Objects whose winner this scan decided again.
    pub examined: usize,
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

/// A file as last read: its stamp and the keys of the objects it defined (the objects
/// themselves live in the model, not here).
#[derive(Debug)]
struct File {
    path: Arc<Path>,
    stamp: Stamp,
    keys: Vec<ObjKey>,
}

/// An object some file defines: the files defining it, in name order (the first wins),
/// and the file whose version was fed.
#[derive(Debug, Default)]
struct Definition {
    files: Vec<Arc<Path>>,
    applied: Option<Arc<Path>>,
}

/// The directory as last scanned.
#[derive(Debug, Default)]
pub(super) struct Scanner {
    files: BTreeMap<PathBuf, File>,
    objects: HashMap<ObjKey, Definition>,
    /// Entries skipped as no manifest file, with the reason already reported.
    skipped: BTreeMap<PathBuf, String>,
}

/// What this scan has done so far: the files it read, the objects it fed.
struct Pass<'a> {
    feed: &'a Feed,
    node: &'a str,
    read: BTreeSet<Arc<Path>>,
    fed: BTreeSet<ObjKey>,
    affected: BTreeSet<ObjKey>,
    report: ScanReport,
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
        let mut pass = Pass {
            feed,
            node,
            read: BTreeSet::new(),
            fed: BTreeSet::new(),
            affected: BTreeSet::new(),
            report: ScanReport::default(),
        };
        let (present, skipped) = list(dir)?;
        for (path, reason) in &skipped {
            if self.skipped.get(path) != Some(reason) {
                pass.report.problems.push(problem(path, reason.clone()));
            }
        }
        self.skipped = skipped;
        pass.report.files = present.len();
        let gone: Vec<PathBuf> = (self.files.keys())
            .filter(|p| !present.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(file) = self.files.remove(&path) {
                self.forget(&file, &mut pass.affected);
            }
        }
        // In name order: when a file is read, the claims of the files before it are final,
        // so an object it defines first can be fed at once (no file's objects are held).
        for (path, stamp) in present {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            pass.report.parsed += 1;
            let file = match read(&path) {
                Ok((text, notes)) => {
                    (pass.report.problems)
                        .extend(notes.into_iter().map(|reason| problem(&path, reason)));
                    self.reread(path.clone(), stamp, &text, &mut pass)
                }
                Err(reason) => {
                    // Bad now: keep the last good objects (their keys stay defined).
                    pass.report.problems.push(problem(&path, reason));
                    let keys = (self.files.remove(&path)).map_or_else(Vec::new, |f| f.keys);
                    File {
                        path: Arc::from(path.as_path()),
                        stamp,
                        keys,
                    }
                }
            };
            self.files.insert(path, file);
        }
        self.settle(&mut pass);
        if pass.report.parsed > 0 {
            // The files' text and parsed objects are gone: hand their memory back now
            // rather than let it overlap the sync they trigger.
            crate::memory::release();
        }
        Ok(pass.report)
    }

    /// Drops `file`'s claims on its objects, marking them to be decided again.
    fn forget(&mut self, file: &File, affected: &mut BTreeSet<ObjKey>) {
        for key in &file.keys {
            if let Some(def) = self.objects.get_mut(key) {
                def.files.retain(|p| *p != file.path);
            }
            affected.insert(key.clone());
        }
    }

    /// Records the objects a good read of `path` found in `text` (checked by [`read`]): the
    /// old keys are forgotten, the new ones claimed in name order (and fed when this file
    /// wins), duplicates inside the file reported.
    fn reread(&mut self, path: PathBuf, stamp: Stamp, text: &str, pass: &mut Pass<'_>) -> File {
        let shared: Arc<Path> = match self.files.remove(&path) {
            Some(old) => {
                self.forget(&old, &mut pass.affected);
                old.path
            }
            None => Arc::from(path.as_path()),
        };
        pass.read.insert(shared.clone());
        let mut keys: Vec<ObjKey> = Vec::new();
        let mut mine = BTreeSet::new();
        let mut claim = |object: Object| {
            let key = object.key();
            if !mine.insert(key.clone()) {
                pass.report
                    .problems
                    .push(problem(&path, already(&key, &path)));
                return;
            }
            let def = self.objects.entry(key.clone()).or_default();
            let at = def.files.partition_point(|p| **p < *shared);
            def.files.insert(at, shared.clone());
            if at == 0 {
                def.applied = Some(shared.clone());
                pass.feed(&object);
                pass.fed.insert(key.clone());
            }
            pass.affected.insert(key.clone());
            keys.push(key);
        };
        // The text parsed whole before ([`read`]), so this pass cannot fail half-way.
        if let Err(e) = parse_with(text, &mut claim) {
            tracing::error!(path = %path.display(), "a checked manifest failed its second parse: {e}");
        }
        keys.shrink_to_fit();
        File {
            path: shared,
            stamp,
            keys,
        }
    }

    /// Decides each affected object not fed yet: deletes those no file defines any more,
    /// feeds those whose winner changed to a file not read in this scan (reading it again),
    /// reports duplicates in the files read.
    fn settle(&mut self, pass: &mut Pass<'_>) {
        pass.report.examined = pass.affected.len();
        let mut uncovered: BTreeMap<Arc<Path>, BTreeSet<ObjKey>> = BTreeMap::new();
        for key in std::mem::take(&mut pass.affected) {
            let Some(def) = self.objects.get_mut(&key) else {
                continue;
            };
            let Some(winner) = def.files.first().cloned() else {
                if def.applied.is_some() {
                    pass.report.deleted += 1;
                    pass.delete(&key);
                }
                self.objects.remove(&key);
                continue;
            };
            for dup in def.files.iter().skip(1).filter(|p| pass.read.contains(*p)) {
                pass.report
                    .problems
                    .push(problem(dup, already(&key, &winner)));
            }
            if !pass.fed.contains(&key) && def.applied.as_ref() != Some(&winner) {
                def.applied = Some(winner.clone());
                uncovered.entry(winner).or_default().insert(key);
            }
        }
        for (path, keys) in uncovered {
            // Uncovered by another file's removal or change: read its winner again.
            pass.report.parsed += 1;
            let Ok((text, _)) = read(&path) else {
                continue;
            };
            let mut uncover = |object: Object| {
                if keys.contains(&object.key()) {
                    pass.feed(&object);
                }
            };
            let _ = parse_with(&text, &mut uncover);
        }
    }
}

impl Pass<'_> {
    fn feed(&mut self, object: &Object) {
        self.report.applied += 1;
        object.feed(self.feed, self.node);
    }

    fn delete(&self, key: &ObjKey) {
        delete(self.feed, key);
    }
}

fn already(key: &ObjKey, first: &Path) -> String {
    format!(
        "{} {}/{} is already defined in {}",
        key.0,
        key.1,
        key.2,
        first.display()
    )
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

/// A manifest file's text once every document in it parsed (all or nothing: half a file
/// is more surprising than none), with the notes on skipped documents. The objects are not
/// kept: they are parsed again, one at a time, as they are fed — twice the parsing of a
/// changed file, against holding every parsed object of it at once (~29 MiB for 10,000
/// Services and their slices, the daemon's peak: issue 14).
fn read(path: &Path) -> Result<(String, Vec<String>), String> {
    let text = sluice_model::bounded::read_to_string(path, MAX_FILE).map_err(|e| e.to_string())?;
    let notes = parse_with(&text, &mut drop)?;
    Ok((text, notes))
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
