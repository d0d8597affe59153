//! Where in which file a configuration problem is, so that every error an
//! operator sees points at the exact line to fix (`file:line:column`).

use std::fmt;
use std::path::PathBuf;

/// A position in a configuration file or in in-memory text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The file, when the text was read from one.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl Location {
    /// A location in `file` (if any) at `line`.
    pub fn at_line(file: Option<PathBuf>, line: usize) -> Self {
        Self {
            file,
            line: Some(line),
            column: None,
        }
    }
}

/// `file:line:column`, degrading to `file`, `line N` or `input`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}", file.display())?,
            (Some(file), None) => return write!(f, "{}", file.display()),
            (None, Some(line)) => write!(f, "line {line}")?,
            (None, None) => return f.write_str("input"),
        }
        match (self.file.is_some(), self.column) {
            (true, Some(column)) => write!(f, ":{column}"),
            (false, Some(column)) => write!(f, ", column {column}"),
            (_, None) => Ok(()),
        }
    }
}
