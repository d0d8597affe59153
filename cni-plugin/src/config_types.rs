//! The loosely typed parts of the configuration (`dns`, `ipam`, `runtimeConfig`, `args`,
//! `prevResult`, paths), checked for the types the spec gives them.
//!
//! They are kept as JSON because the spec lets runtimes and other plugins add keys Sluice
//! does not know; but the keys Sluice does read must have their spec type, or the plugin
//! would act on a silent default: a `dns` of `123` copied into the result (which the
//! runtime then rejects), `"ipam": "host-local"` or `"dataDir": ""` falling back to another
//! store, `"ips": "10.0.0.5"` ignored instead of honoured.

use std::path::Path;

use serde_json::Value;

use crate::config::{NetConf, invalid};
use crate::error::CniError;

/// Checks every loosely typed key of `conf`.
pub(crate) fn check(conf: &NetConf) -> Result<(), CniError> {
    if let Some(dns) = &conf.dns {
        check_dns("dns", dns)?;
    }
    match &conf.ipam {
        Value::Null => {}
        Value::Object(ipam) => {
            if let Some(dir) = ipam.get("dataDir") {
                let text = dir
                    .as_str()
                    .ok_or_else(|| invalid("ipam.dataDir", "must be a string"))?;
                absolute("ipam.dataDir", Path::new(text))?;
            }
        }
        _ => return Err(invalid("ipam", "must be an object")),
    }
    for (key, path) in [
        ("subnetFile", &conf.subnet_file),
        ("dataDir", &conf.data_dir),
    ] {
        if let Some(path) = path {
            absolute(key, path)?;
        }
    }
    capabilities("runtimeConfig", &conf.runtime_config)?;
    object("args", &conf.args)?;
    capabilities("args.cni", &conf.args["cni"])?;
    if let Some(prev) = &conf.prev_result {
        check_prev_result(prev)?;
    }
    Ok(())
}

/// A previous plugin's result, whose lists ADD extends and whose `dns` it passes on.
fn check_prev_result(prev: &Value) -> Result<(), CniError> {
    if !prev.is_object() {
        return Err(invalid("prevResult", "must be an object"));
    }
    for key in ["interfaces", "ips", "routes"] {
        let ok = match &prev[key] {
            Value::Null => true,
            Value::Array(items) => items.iter().all(Value::is_object),
            _ => false,
        };
        if !ok {
            return Err(invalid(
                &format!("prevResult.{key}"),
                "must be a list of objects",
            ));
        }
    }
    if !prev["dns"].is_null() {
        check_dns("prevResult.dns", &prev["dns"])?;
    }
    Ok(())
}

/// The spec's DNS object at `key`: `nameservers`, `search`, `options` lists of strings,
/// `domain` a string (other keys pass through).
fn check_dns(key: &str, dns: &Value) -> Result<(), CniError> {
    object(key, dns)?;
    for list in ["nameservers", "search", "options"] {
        strings(&format!("{key}.{list}"), &dns[list])?;
    }
    if !(dns["domain"].is_null() || dns["domain"].is_string()) {
        return Err(invalid(&format!("{key}.domain"), "must be a string"));
    }
    Ok(())
}

/// `ips` (a list of strings) and `mac` (a string) in an object that may be absent.
fn capabilities(key: &str, value: &Value) -> Result<(), CniError> {
    object(key, value)?;
    strings(&format!("{key}.ips"), &value["ips"])?;
    if !(value["mac"].is_null() || value["mac"].is_string()) {
        return Err(invalid(&format!("{key}.mac"), "must be a string"));
    }
    Ok(())
}

/// Absent, or an object.
fn object(key: &str, value: &Value) -> Result<(), CniError> {
    match value {
        Value::Null | Value::Object(_) => Ok(()),
        _ => Err(invalid(key, "must be an object")),
    }
}

/// Absent, or a list of strings.
fn strings(key: &str, value: &Value) -> Result<(), CniError> {
    let ok = match value {
        Value::Null => true,
        Value::Array(items) => items.iter().all(Value::is_string),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(key, "must be a list of strings"))
    }
}

/// A non-empty absolute path: a relative one would depend on the runtime's working directory.
fn absolute(key: &str, path: &Path) -> Result<(), CniError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(invalid(
            key,
            &format!("{:?} is not an absolute path", path.display().to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NetConf;
    use crate::error::Code;

    fn error(extra: &str) -> String {
        let text = format!(r#"{{"name":"n","type":"sluice",{extra}}}"#);
        let e = NetConf::parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig, "{extra}");
        e.msg
    }

    #[test]
    fn wrong_types_name_their_key() {
        for (extra, key) in [
            (r#""dns":123"#, "dns:"),
            (r#""dns":{"domain":1}"#, "dns.domain"),
            (r#""dns":{"options":[1]}"#, "dns.options"),
            (r#""ipam":[]"#, "ipam:"),
            (r#""ipam":{"dataDir":""}"#, "ipam.dataDir"),
            (r#""subnetFile":"x/subnet.env""#, "subnetFile"),
            (r#""runtimeConfig":"x""#, "runtimeConfig:"),
            (
                r#""runtimeConfig":{"ips":["1.2.3.4", 5]}"#,
                "runtimeConfig.ips",
            ),
            (r#""args":{"cni":{"mac":["x"]}}"#, "args.cni.mac"),
            (r#""args":[]"#, "args:"),
            (r#""prevResult":{"dns":44}"#, "prevResult.dns:"),
            (r#""prevResult":{"routes":[1]}"#, "prevResult.routes"),
            (r#""prevResult":[]"#, "prevResult:"),
        ] {
            let msg = error(extra);
            assert!(msg.contains(key), "{extra}: {msg}");
        }
    }

    #[test]
    fn right_types_and_unknown_keys_pass() {
        let text = r#"{"name":"n","type":"sluice","dns":{"nameservers":["10.96.0.10"],"domain":"c","x":1},
            "ipam":{"type":"host-local","dataDir":"/var/lib/cni/networks"},
            "runtimeConfig":{"ips":["10.244.1.5/24"],"mac":"0a:00:00:00:00:01","portMappings":[]},
            "args":{"cni":{"ips":[]},"other":1},"subnetFile":"/run/flannel/subnet.env"}"#;
        NetConf::parse(text.as_bytes()).unwrap();
    }
}
