//! `sluice install`: what the DaemonSet's init container runs to put the plugin and its
//! conflist on the node. Every file is written to a temporary name in the target directory,
//! synced and renamed over the old one, so a runtime exec'ing the plugin or reading the
//! conflist at that moment sees the old file or the new one — never a half-written file and
//! never "text file busy" (checklist #41). Runtimes exec plugins without arguments, so an
//! argument selects this mode safely.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What to install where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The plugin binary to copy (default: this executable).
    pub binary: PathBuf,
    /// `/opt/cni/bin`.
    pub bin_dir: PathBuf,
    /// The names to install the binary under (`sluice`, and `flannel` as a drop-in).
    pub names: Vec<String>,
    /// A conflist to install, and its file name in `conf_dir`.
    pub conflist: Option<(PathBuf, String)>,
    /// `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
#[error("install {}: {action}: {source}", path.display())]
pub struct InstallError {
    path: PathBuf,
    action: &'static str,
    #[source]
    source: std::io::Error,
}

const USAGE: &str = "usage: sluice install [--bin-dir DIR] [--name NAME]... [--conflist FILE --conf-dir DIR --conf-name NAME]";

impl Install {
    /// Parses `install`'s arguments (after the word `install`).
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut out = Self {
            binary: std::env::current_exe().map_err(|e| e.to_string())?,
            bin_dir: "/opt/cni/bin".into(),
            names: Vec::new(),
            conflist: None,
            conf_dir: "/etc/cni/net.d".into(),
        };
        let mut conf_src = None;
        let mut conf_name = "10-sluice.conflist".to_owned();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--bin-dir" => out.bin_dir = value()?.into(),
                "--binary" => out.binary = value()?.into(),
                "--name" => out.names.push(value()?),
                "--conflist" => conf_src = Some(PathBuf::from(value()?)),
                "--conf-dir" => out.conf_dir = value()?.into(),
                "--conf-name" => conf_name = value()?,
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        if out.names.is_empty() {
            out.names = vec!["sluice".into(), "flannel".into()];
        }
        out.conflist = conf_src.map(|src| (src, conf_name));
        Ok(out)
    }

    /// Installs everything; returns the paths written.
    pub fn run(&self) -> Result<Vec<PathBuf>, InstallError> {
        let binary = read(&self.binary)?;
        let mut written = Vec::new();
        for name in &self.names {
            let path = self.bin_dir.join(name);
            replace(&path, &binary, 0o755)?;
            written.push(path);
        }
        if let Some((src, name)) = &self.conflist {
            let path = self.conf_dir.join(name);
            replace(&path, &read(src)?, 0o644)?;
            written.push(path);
        }
        Ok(written)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    fs::read(path).map_err(|source| InstallError {
        path: path.to_owned(),
        action: "read",
        source,
    })
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let err = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| InstallError {
            path: p,
            action,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(err("create directory", dir))?;
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err("create", &tmp))?;
    f.write_all(bytes).map_err(err("write", &tmp))?;
    f.sync_all().map_err(err("sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        InstallError {
            path: path.to_owned(),
            action: "rename",
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_binary_under_both_names_and_the_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plugin");
        fs::write(&src, b"#!/bin/sh\n").unwrap();
        let conf = dir.path().join("c.json");
        fs::write(&conf, b"{}").unwrap();
        let args: Vec<String> = [
            "--binary",
            src.to_str().unwrap(),
            "--bin-dir",
            dir.path().join("bin").to_str().unwrap(),
            "--conflist",
            conf.to_str().unwrap(),
            "--conf-dir",
            dir.path().join("net.d").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let install = Install::from_args(&args).unwrap();
        let written = install.run().unwrap();
        assert_eq!(written.len(), 3);
        for name in ["bin/sluice", "bin/flannel", "net.d/10-sluice.conflist"] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        assert!(
            Install::from_args(&["--bogus".into()])
                .unwrap_err()
                .contains("usage")
        );
    }
}
