//! PATCH bodies by content type.
//!
//! kube's `Patch::Merge`, `Patch::Json` and `Patch::Strategic` map onto the three content types
//! handled here; server-side apply (`application/apply-patch+yaml`) needs field management this
//! server does not model, so it is refused with 415 instead of being half-done.

use serde_json::Value;

use crate::error::ApiError;
use crate::strategic;

/// Applies a PATCH body of the given `Content-Type` to `doc`.
pub(crate) fn apply(doc: &mut Value, content_type: &str, body: &[u8]) -> Result<(), ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" => {
            json_patch::merge(doc, &parse(body)?);
            Ok(())
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid json patch: {e}")))?;
            json_patch::patch(doc, &ops)
                .map_err(|e| ApiError::Invalid(format!("json patch failed: {e}")))
        }
        "application/strategic-merge-patch+json" => {
            strategic::merge(doc, &parse(body)?);
            Ok(())
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            Err(ApiError::UnsupportedMediaType(
                "server-side apply is not supported by the sluice test api server; use a merge, json or strategic merge patch".to_owned(),
            ))
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid patch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_json_and_refusals() {
        let mut doc = json!({"a": 1, "b": {"c": 2}});
        apply(
            &mut doc,
            "application/merge-patch+json",
            br#"{"b":{"c":null,"d":3}}"#,
        )
        .unwrap();
        assert_eq!(doc, json!({"a": 1, "b": {"d": 3}}));
        let ops = br#"[{"op":"replace","path":"/a","value":5}]"#;
        apply(&mut doc, "application/json-patch+json", ops).unwrap();
        assert_eq!(doc["a"], 5);
        let err = apply(&mut doc, "application/apply-patch+yaml", b"a: 1").unwrap_err();
        assert_eq!(err.code(), 415);
        let bad = br#"[{"op":"test","path":"/a","value":6}]"#;
        assert_eq!(
            apply(&mut doc, "application/json-patch+json", bad)
                .unwrap_err()
                .code(),
            422
        );
    }
}
