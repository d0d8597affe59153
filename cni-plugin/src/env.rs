//! The `CNI_*` environment, validated as the reference `skel` validates it, read from a map
//! so tests need no real environment.

use std::collections::BTreeMap;

use crate::error::{CniError, Code};

/// The operation the runtime asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create the attachment.
    Add,
    /// Remove it (idempotent).
    Del,
    /// Verify it.
    Check,
    /// Report supported versions.
    Version,
    /// Release everything not in the valid attachments.
    Gc,
    /// Can ADD be served now?
    Status,
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: Option<String>,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL).
    pub netns: Option<String>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
    /// `CNI_NETNS_OVERRIDE`: allow `CNI_NETNS` to be the plugin's own namespace.
    pub netns_override: bool,
}

impl Env {
    /// Reads and validates the environment; the error names every missing variable.
    pub fn from_map(vars: &BTreeMap<String, String>) -> Result<Self, CniError> {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some(other) => {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    format!("unknown CNI_COMMAND: {other}"),
                ));
            }
            None => return Err(missing(&["CNI_COMMAND"])),
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Gc | Command::Status => &[],
        };
        let absent: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        if !absent.is_empty() {
            return Err(missing(&absent));
        }
        let env = Self {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: parse_args(vars.get("CNI_ARGS").map(String::as_str).unwrap_or(""))?,
            netns_override: get("CNI_NETNS_OVERRIDE").is_some_and(|v| v != "0" && v != "false"),
        };
        if let Some(id) = &env.container_id {
            valid_container_id(id)?;
        }
        if let Some(name) = &env.ifname {
            valid_ifname(name)?;
        }
        Ok(env)
    }
}

fn missing(vars: &[&str]) -> CniError {
    CniError::new(
        Code::InvalidEnv,
        format!("required env variables [{}] missing", vars.join(",")),
    )
}

/// The longest `CNI_CONTAINERID` accepted (runtimes use 64 hex digits; the spec sets no
/// limit, but the ID is written into a reservation file that is read with a cap).
pub const MAX_CONTAINER_ID: usize = 4096;

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_CONTAINER_ID`] bytes.
fn valid_container_id(id: &str) -> Result<(), CniError> {
    if id.len() > MAX_CONTAINER_ID {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!(
                "CNI_CONTAINERID is {} bytes long; at most {MAX_CONTAINER_ID} are accepted",
                id.len()
            ),
        ));
    }
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnv,
            format!("invalid CNI_CONTAINERID {id:?}"),
        ))
    }
}

/// What the kernel accepts as an interface name.
fn valid_ifname(name: &str) -> Result<(), CniError> {
    check_ifname("CNI_IFNAME", name).map_err(|m| CniError::new(Code::InvalidEnv, m))
}

/// Checks an interface name (`what` names it in the message).
pub(crate) fn check_ifname(what: &str, name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(format!("invalid {what} {name:?}"))
    } else {
        Ok(())
    }
}

/// `K=V;K2=V2`.
fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    text.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(CniError::new(
                Code::InvalidEnv,
                format!("invalid CNI_ARGS pair {pair:?}"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn add_needs_id_netns_and_ifname_and_names_the_missing_ones() {
        let e =
            Env::from_map(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                Code::InvalidEnv,
                "required env variables [CNI_NETNS,CNI_IFNAME] missing"
            )
        );
        let ok = Env::from_map(&vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ]))
        .unwrap();
        assert_eq!(ok.command, Command::Add);
        assert_eq!(ok.args["K8S_POD_NAME"], "web");
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let del = Env::from_map(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        assert_eq!(
            Env::from_map(&vars(&[("CNI_COMMAND", "VERSION")]))
                .unwrap()
                .command,
            Command::Version
        );
    }

    #[test]
    fn bad_values_are_code_4_naming_the_variable() {
        let base = [("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/run/netns/p")];
        for (k, v) in [
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "a-very-long-ifname"),
            ("CNI_IFNAME", "a/b"),
        ] {
            let mut m = vars(&base);
            m.insert("CNI_CONTAINERID".into(), "c1".into());
            m.insert("CNI_IFNAME".into(), "eth0".into());
            m.insert(k.into(), v.into());
            let e = Env::from_map(&m).unwrap_err();
            assert!(
                e.code == Code::InvalidEnv && e.msg.contains(k),
                "{k}={v}: {e}"
            );
        }
        let e = Env::from_map(&vars(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert!(e.msg.contains("FROB"));
        assert_eq!(
            Env::from_map(&BTreeMap::new()).unwrap_err().code,
            Code::InvalidEnv
        );
    }
}
