//! The optional log file (`logFile` in the config): one line per invocation with what was
//! asked, the outcome and how long it took, appended — the runtime keeps only the last error,
//! and a node's history of slow or failed attachments is what an operator needs when pods
//! start slowly. Logging never fails an invocation, nor blocks it (a FIFO or a device named
//! as the log file is not written).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::CniError;

/// Appends the invocation's line to `logFile`, if the config names one.
pub(crate) fn record(
    vars: &BTreeMap<String, String>,
    stdin: &[u8],
    result: &Result<String, CniError>,
    took: Duration,
) {
    // Cheap pre-check: most configs have no log file, and parsing is not free.
    if !stdin.windows(7).any(|w| w == b"logFile") {
        return;
    }
    let Some(path) = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v["logFile"].as_str().map(str::to_owned))
    else {
        return;
    };
    // Only a regular file, or none yet: opening a FIFO nobody reads would block every
    // invocation forever, and a device is nobody's log.
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => {
            eprintln!("sluice: logFile {path} is not a regular file; not logging");
            return;
        }
        _ => {}
    }
    let line = line(vars, result, took);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn line(
    vars: &BTreeMap<String, String>,
    result: &Result<String, CniError>,
    took: Duration,
) -> String {
    let var = |k: &str| vars.get(k).map_or("-", String::as_str);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error code={} {e}", e.code as u32),
    };
    format!(
        "{now:.3} {} container={} ifname={} netns={} took={:.2}ms {outcome}\n",
        var("CNI_COMMAND"),
        var("CNI_CONTAINERID"),
        var("CNI_IFNAME"),
        var("CNI_NETNS"),
        took.as_secs_f64() * 1e3,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn appends_one_line_per_invocation_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.log");
        let stdin = format!(
            r#"{{"name":"n","type":"sluice","logFile":"{}"}}"#,
            path.display()
        );
        let vars: BTreeMap<String, String> = [("CNI_COMMAND".to_owned(), "DEL".to_owned())].into();
        record(
            &vars,
            stdin.as_bytes(),
            &Ok(String::new()),
            Duration::from_micros(1500),
        );
        let err = Err(CniError::new(Code::TryAgainLater, "not yet"));
        record(&vars, stdin.as_bytes(), &err, Duration::ZERO);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("DEL container=- ifname=- netns=- took=1.50ms ok"),
            "{text}"
        );
        assert!(lines[1].ends_with("error code=11 not yet"), "{text}");
        record(
            &vars,
            br#"{"name":"n"}"#,
            &Ok(String::new()),
            Duration::ZERO,
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "no logFile, no line"
        );
    }
}
