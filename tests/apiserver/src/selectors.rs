//! Label and field selectors, as `?labelSelector=` / `?fieldSelector=` carry them.
//!
//! Daemons narrow their watches with selectors (EndpointSlices by `kubernetes.io/service-name`,
//! Pods by `spec.nodeName`) and kubectl uses `metadata.name` field selectors to wait for deletes,
//! so both grammars are implemented in full for equality and set-based label requirements.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::meta::dotted;

/// A selector that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement {0:?}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    /// `key=value` / `key==value`.
    Eq(String, String),
    /// `key!=value` (also true when the key is absent).
    NotEq(String, String),
    /// `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelReq>);

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0_i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str, raw: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(raw.to_owned()))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label_req(raw: &str) -> Result<LabelReq, SelectorError> {
    let err = || SelectorError(raw.to_owned());
    if let Some(key) = raw.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key.trim().to_owned()));
    }
    if let Some((k, v)) = raw.split_once("!=") {
        return Ok(LabelReq::NotEq(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
        return Ok(LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, rest)) = raw.split_once(" notin ") {
        return Ok(LabelReq::NotIn(k.trim().to_owned(), parse_set(rest, raw)?));
    }
    if let Some((k, rest)) = raw.split_once(" in ") {
        return Ok(LabelReq::In(k.trim().to_owned(), parse_set(rest, raw)?));
    }
    if raw.contains([' ', '(', ')']) {
        return Err(err());
    }
    Ok(LabelReq::Exists(raw.to_owned()))
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_top(s)
            .into_iter()
            .map(parse_label_req)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v),
            LabelReq::NotEq(k, v) => label(k) != Some(v),
            LabelReq::In(k, set) => label(k).is_some_and(|l| set.contains(l)),
            LabelReq::NotIn(k, set) => !label(k).is_some_and(|l| set.contains(l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=y`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_top(s)
            .into_iter()
            .map(|raw| {
                let (k, eq, v) = if let Some((k, v)) = raw.split_once("!=") {
                    (k, false, v)
                } else if let Some((k, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
                    (k, true, v)
                } else {
                    return Err(SelectorError(raw.to_owned()));
                };
                Ok((k.trim().to_owned(), eq, v.trim().to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether the object's fields satisfy every term; missing fields read as "".
    #[must_use]
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let have = match dotted(obj, path) {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selectors {
    /// `labelSelector`.
    pub(crate) labels: LabelSelector,
    /// `fieldSelector`.
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    /// Whether an object passes both.
    #[must_use]
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "web", "namespace": "prod",
            "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "n1", "unschedulable": false}})
    }

    fn labels(s: &str) -> bool {
        LabelSelector::parse(s).unwrap().matches(&obj())
    }

    fn fields(s: &str) -> bool {
        FieldSelector::parse(s).unwrap().matches(&obj())
    }

    #[test]
    fn parses_every_label_operator() {
        let sel = LabelSelector::parse("a=b, c==d,e!=f,g,!h,i in (j, k),l notin (m)").unwrap();
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            sel.0,
            vec![
                LabelReq::Eq("a".into(), "b".into()),
                LabelReq::Eq("c".into(), "d".into()),
                LabelReq::NotEq("e".into(), "f".into()),
                LabelReq::Exists("g".into()),
                LabelReq::NotExists("h".into()),
                LabelReq::In("i".into(), set(&["j", "k"])),
                LabelReq::NotIn("l".into(), set(&["m"])),
            ]
        );
        assert!(LabelSelector::parse("a in b").is_err());
        assert_eq!(LabelSelector::parse("").unwrap(), LabelSelector::default());
    }

    #[test]
    fn label_matching() {
        assert!(labels("app=web,tier"));
        assert!(labels("app==web,!missing"));
        assert!(!labels("app!=web"));
        assert!(labels("missing!=x"));
        assert!(labels("tier in (back,front)"));
        assert!(!labels("tier notin (front)"));
        assert!(labels("missing notin (front)"));
        assert!(!labels("missing in (front)"));
        assert!(labels(""));
    }

    #[test]
    fn field_matching() {
        assert!(fields("metadata.name=web,metadata.namespace==prod"));
        assert!(!fields("metadata.name!=web"));
        assert!(fields("spec.nodeName=n1,spec.unschedulable=false"));
        assert!(fields("spec.missing="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
