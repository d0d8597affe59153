//! Reading and atomically replacing the file. The CNI plugin may read it at any
//! moment while the overlay rewrites it, so a write goes to a temporary file in
//! the same directory and is renamed over the old one (flannel does the same):
//! readers see the old or the new file, never half of one. A rename replaces
//! whatever has the name, so a path pointed at a device node, a FIFO or a
//! symbolic link is refused rather than replaced; reads are capped at
//! [`MAX_BYTES`](super::MAX_BYTES).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{SubnetEnv, SubnetEnvError, parse};

/// Distinguishes concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl SubnetEnv {
    /// Reads and parses the file at `path`; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SubnetEnvError> {
        let path = path.as_ref();
        let text = crate::bounded::read_to_string(path, super::MAX_BYTES)
            .map_err(io_error(path, "read"))?;
        parse::parse(&text, Some(path.to_path_buf()))
    }

    /// Writes the file atomically: parent directories created (0755), a
    /// temporary file in the same directory written, synced, made 0644, then
    /// renamed over `path`.
    pub fn write_atomic(&self, path: impl AsRef<Path>) -> Result<(), SubnetEnvError> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_error(&dir, "create directory"))?;
        replaceable(path)?;
        let temp = temp_path(&dir, path);
        let result = self
            .write_temp(&temp)
            .and_then(|()| fs::rename(&temp, path).map_err(io_error(path, "rename")));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn write_temp(&self, temp: &Path) -> Result<(), SubnetEnvError> {
        let mut file = fs::File::create(temp).map_err(io_error(temp, "create"))?;
        file.write_all(self.to_string().as_bytes())
            .map_err(io_error(temp, "write"))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_error(temp, "chmod"))?;
        file.sync_all().map_err(io_error(temp, "sync"))
    }
}

/// Only a regular file (or nothing) may be renamed over: anything else at the path was put
/// there by someone else, and replacing a device node or a link would break what uses it.
fn replaceable(path: &Path) -> Result<(), SubnetEnvError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => crate::bounded::regular(meta.file_type()).map_err(|e| SubnetEnvError::Io {
            path: path.to_path_buf(),
            action: "replace",
            source: std::io::Error::new(e.kind(), format!("{e}; refusing to replace it")),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "inspect")(e)),
    }
}

/// `.<name>.<pid>.<n>.tmp` beside the target.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "subnet.env".into(), |n| n.to_string_lossy());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> SubnetEnvError {
    let path = path.to_path_buf();
    move |source| SubnetEnvError::Io {
        path,
        action,
        source,
    }
}
