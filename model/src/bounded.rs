//! Reading what comes from outside the process with a size cap that fits its purpose.
//!
//! Every file Sluice reads (net-conf.json, subnet.env, a kubeconfig, an IPAM reservation) and
//! the CNI plugin's stdin are small by nature, but a path can be pointed at `/dev/zero`, a
//! FIFO nobody writes, or a 1 GiB file by mistake or on purpose. Reading those whole would
//! fill memory or block a daemon forever, so reads here stop one byte past the cap and refuse
//! anything that is not a regular file before opening it. Errors are plain [`io::Error`]s, so
//! each caller's error type (which already names the file) carries them unchanged.

use std::fs::{self, File, FileType};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Reads the regular file at `path` as UTF-8, refusing more than `limit` bytes.
pub fn read_to_string(path: &Path, limit: usize) -> io::Result<String> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Reads the regular file at `path`, refusing more than `limit` bytes.
pub fn read(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    // Checked before opening: opening a FIFO for reading blocks until someone writes.
    regular(fs::metadata(path)?.file_type())?;
    let file = File::open(path)?;
    regular(file.metadata()?.file_type())?;
    read_to_end(file, limit)
}

/// Reads `reader` to its end, refusing more than `limit` bytes.
pub fn read_to_end(reader: impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader.take(cap).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

/// The error for input over `limit` bytes.
pub fn too_large(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} (the limit for this input)", bytes(limit)),
    )
}

/// An error unless `kind` is a regular file, naming what it is instead.
pub fn regular(kind: FileType) -> io::Result<()> {
    if kind.is_file() {
        return Ok(());
    }
    let what = match () {
        () if kind.is_dir() => "a directory",
        () if kind.is_fifo() => "a FIFO",
        () if kind.is_socket() => "a socket",
        () if kind.is_char_device() => "a character device",
        () if kind.is_block_device() => "a block device",
        () if kind.is_symlink() => "a symbolic link",
        () => "not a plain file",
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file (it is {what})"),
    ))
}

/// `65536` → `64 KiB`, for messages.
fn bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "abcd").unwrap();
        assert_eq!(read_to_string(&path, 4).unwrap(), "abcd");
        let e = read_to_string(&path, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "larger than 3 bytes (the limit for this input)"
        );
        assert_eq!(
            too_large(64 << 10).to_string(),
            "larger than 64 KiB (the limit for this input)"
        );
        assert_eq!(
            too_large(4 << 20).to_string(),
            "larger than 4 MiB (the limit for this input)"
        );
    }

    #[test]
    fn refuses_directories_devices_and_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let bin = dir.path().join("bin");
        fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_to_string(&bin, 10).unwrap_err().to_string(),
            "not UTF-8"
        );
    }
}
