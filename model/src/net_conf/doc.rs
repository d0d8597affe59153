//! A JSON object read with every value's position kept, so that a type error in
//! a value, or a later validation error, can name the file, line, column and
//! key. `serde_json` alone reports a position but not the key; reading values
//! as borrowed `RawValue`s and decoding each one separately gives both.
//!
//! Keys are matched ASCII-case-insensitively and a later duplicate wins, as Go's
//! `encoding/json` (which flannel uses) does.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::NetConfError;
use crate::location::Location;

/// The text being read and its file, for positions.
pub(super) struct Doc<'a> {
    pub(super) text: &'a str,
    pub(super) file: Option<PathBuf>,
}

/// An object's entries in document order.
pub(super) type Entries<'a> = Vec<(String, &'a RawValue)>;

impl<'a> Doc<'a> {
    /// The top-level object.
    pub(super) fn root(&self) -> Result<Entries<'a>, NetConfError> {
        serde_json::from_str::<Ordered<'a>>(self.text)
            .map(|o| o.0)
            .map_err(|e| NetConfError::Syntax {
                location: self.location(0, &e),
                message: message(&e),
            })
    }

    /// A nested object held by `key`.
    pub(super) fn object(&self, key: &str, raw: &'a RawValue) -> Result<Entries<'a>, NetConfError> {
        self.decode::<Ordered<'a>>(key, raw).map(|o| o.0)
    }

    /// Decodes one value, naming `key` and the value's position on error.
    pub(super) fn decode<T: Deserialize<'a>>(
        &self,
        key: &str,
        raw: &'a RawValue,
    ) -> Result<T, NetConfError> {
        serde_json::from_str::<T>(raw.get()).map_err(|e| {
            // Inside an object or array, serde_json's position is the precise
            // one; for a scalar it points past the value, so use its start.
            let nested = raw.get().starts_with(['{', '[']);
            NetConfError::Value {
                location: match nested {
                    true => self.location(self.offset(raw), &e),
                    false => self.position(raw),
                },
                key: key.to_owned(),
                problem: message(&e),
            }
        })
    }

    /// The position of a value.
    pub(super) fn position(&self, raw: &RawValue) -> Location {
        self.at_offset(self.offset(raw))
    }

    fn offset(&self, raw: &RawValue) -> usize {
        raw.get()
            .as_ptr()
            .addr()
            .saturating_sub(self.text.as_ptr().addr())
    }

    fn at_offset(&self, offset: usize) -> Location {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.clone(),
            line: Some(before.matches('\n').count() + 1),
            column: Some(offset - line_start + 1),
        }
    }

    /// The position of error `e` raised while decoding text starting at `offset`.
    fn location(&self, offset: usize, e: &serde_json::Error) -> Location {
        let base = self.at_offset(offset);
        match (e.line(), base.line, base.column) {
            (0, ..) => base,
            (1, line, Some(column)) => Location {
                line,
                column: Some(column + e.column().saturating_sub(1)),
                ..base
            },
            (n, line, _) => Location {
                line: line.map(|l| l + n - 1),
                column: Some(e.column()),
                ..base
            },
        }
    }
}

/// serde_json's message without its ` at line L column C` suffix.
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// An object's entries in document order, values left unparsed.
struct Ordered<'a>(Entries<'a>);

impl<'de> Deserialize<'de> for Ordered<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

struct OrderedVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for OrderedVisitor<'de> {
    type Value = Ordered<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
            entries.push(entry);
        }
        Ok(Ordered(entries))
    }
}
