//! Why a configuration was refused. Every variant names the file or flag and
//! the field, because the binary prints the error and exits 1: the operator
//! must be able to fix the value from the message alone.

use std::fmt;
use std::path::PathBuf;

/// One invalid value, named by its config-file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// E.g. `iptables.syncPeriod`.
    pub field: String,
    /// The offending value as written.
    pub value: String,
    /// What a valid value looks like.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: invalid value {:?}: {}",
            self.field, self.value, self.reason
        )
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not a well-formed `KubeProxyConfiguration`
    /// (syntax, unknown field, wrong type).
    #[error("cannot parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Values that parse but are not allowed.
    #[error("invalid configuration{}:\n  {}", origin_suffix(.origin), join(.errors))]
    Invalid {
        /// The file, or `None` for command-line flags.
        origin: Option<PathBuf>,
        errors: Vec<FieldError>,
    },
    /// `--write-config-to` failed.
    #[error("cannot write config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn origin_suffix(origin: &Option<PathBuf>) -> String {
    match origin {
        Some(path) => format!(" in {}", path.display()),
        None => " from flags".to_owned(),
    }
}

fn join(errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n  ")
}
