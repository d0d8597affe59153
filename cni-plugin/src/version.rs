//! Version negotiation: which spec versions this plugin speaks, what each command requires,
//! and the VERSION answer (echoing the input's `cniVersion`, as the spec says).

use crate::env::Command;
use crate::error::{CniError, Code};

/// Every spec version this plugin can answer in.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest version, used when the input names none.
pub const LATEST: &str = "1.1.0";

/// `(major, minor, patch)` of a version string.
fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// Checks that `version` is supported and allows `command` (CHECK needs ≥ 0.4.0, GC and
/// STATUS ≥ 1.1.0); code 1 with the supported list in the details otherwise.
pub fn check(version: &str, command: Command) -> Result<(), CniError> {
    let supported = format!("plugin supports {SUPPORTED:?}");
    if !SUPPORTED.contains(&version) {
        return Err(
            CniError::new(Code::IncompatibleVersion, "incompatible CNI versions")
                .with_details(format!("config is {version:?}, {supported}")),
        );
    }
    let v = parse(version).unwrap_or_default();
    let needs = match command {
        Command::Check => Some(((0, 4, 0), "CHECK")),
        Command::Gc | Command::Status => Some(((1, 1, 0), "GC and STATUS")),
        _ => None,
    };
    match needs {
        Some((min, what)) if v < min => Err(CniError::new(
            Code::IncompatibleVersion,
            format!("config version {version} does not allow {what}"),
        )),
        _ => Ok(()),
    }
}

/// The VERSION result.
pub fn version_result(input_version: &str) -> String {
    serde_json::json!({"cniVersion": input_version, "supportedVersions": SUPPORTED}).to_string()
}

/// True for the 0.3.x/0.4.0 result shape (with `ips[].version`).
pub fn is_legacy_result(version: &str) -> bool {
    parse(version).is_some_and(|v| v < (1, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_versions_list_the_supported_ones() {
        let e = check("9.9.9", Command::Add).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert!(e.details.unwrap().contains(r#""1.1.0""#));
        assert!(check("0.3.1", Command::Add).is_ok());
    }

    #[test]
    fn commands_need_their_minimum_versions() {
        assert!(
            check("0.3.1", Command::Check)
                .unwrap_err()
                .msg
                .contains("CHECK")
        );
        assert!(check("0.4.0", Command::Check).is_ok());
        assert!(check("1.0.0", Command::Gc).is_err() && check("1.0.0", Command::Status).is_err());
        assert!(check("1.1.0", Command::Gc).is_ok());
    }

    #[test]
    fn version_echoes_the_input_and_result_shapes_split_at_1_0() {
        assert_eq!(
            version_result("0.4.0"),
            r#"{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
        assert!(is_legacy_result("0.4.0") && !is_legacy_result("1.0.0"));
    }
}
