//! Loads the YAML fixtures under `tests/fixtures/` into k8s-openapi types.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

pub(crate) fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
