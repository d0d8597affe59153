//! The ADD result: built once, printed in exactly the version asked for (0.3.x/0.4.0 results
//! carry `ips[].version`, 1.0.0+ do not), appended to the previous plugin's result in a chain.
//! CHECK reads the same shape back.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::version::is_legacy_result;

/// One interface of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    pub mac: String,
    /// The container's namespace, for the container end.
    pub sandbox: Option<String>,
}

/// What one ADD created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Bridge, host veth, container interface — in that order.
    pub interfaces: Vec<Interface>,
    /// The pod's addresses with their gateways; they sit on the last interface.
    pub ips: Vec<(IpNet, IpAddr)>,
    /// The pod's routes.
    pub routes: Vec<(IpNet, IpAddr)>,
    /// DNS settings from the config.
    pub dns: Option<Value>,
}

impl Attachment {
    /// The result JSON in `version`, after `prev`'s interfaces, addresses and routes.
    pub fn render(&self, version: &str, prev: Option<&Value>) -> String {
        let list = |key: &str| -> Vec<Value> {
            prev.and_then(|p| p[key].as_array().cloned())
                .unwrap_or_default()
        };
        let mut interfaces = list("interfaces");
        let container = interfaces.len() + self.interfaces.len() - 1;
        interfaces.extend(self.interfaces.iter().map(|i| {
            let mut v = json!({"name": i.name, "mac": i.mac});
            if let Some(s) = &i.sandbox {
                v["sandbox"] = json!(s);
            }
            v
        }));
        let mut ips = list("ips");
        ips.extend(self.ips.iter().map(|(addr, gw)| {
            json!({"address": addr.to_string(), "gateway": gw.to_string(), "interface": container})
        }));
        for ip in &mut ips {
            shape_ip(ip, is_legacy_result(version));
        }
        let mut routes = list("routes");
        routes.extend(
            self.routes
                .iter()
                .map(|(dst, gw)| json!({"dst": dst.to_string(), "gw": gw.to_string()})),
        );
        let dns = self
            .dns
            .clone()
            .or_else(|| prev.map(|p| p["dns"].clone()).filter(|d| !d.is_null()))
            .unwrap_or_else(|| json!({}));
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
        .to_string()
    }
}

/// Adds or removes `version` ("4"/"6") as the result version requires.
fn shape_ip(ip: &mut Value, legacy: bool) {
    let Some(obj) = ip.as_object_mut() else {
        return;
    };
    if legacy {
        let v6 = obj
            .get("address")
            .and_then(Value::as_str)
            .is_some_and(|a| a.contains(':'));
        obj.insert("version".into(), json!(if v6 { "6" } else { "4" }));
    } else {
        obj.remove("version");
    }
}

/// What a previous result says about one attachment, for CHECK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The addresses on the container interface.
    pub ips: Vec<IpNet>,
    /// The routes (destination, next hop when given).
    pub routes: Vec<(IpNet, Option<IpAddr>)>,
}

impl Expected {
    /// Reads the parts of `prev` that belong to `ifname` in `sandbox`; `None` when the result
    /// names no such interface.
    pub fn of(prev: &Value, ifname: &str, sandbox: &str) -> Option<Self> {
        let index = prev["interfaces"].as_array()?.iter().position(|i| {
            i["name"].as_str() == Some(ifname) && i["sandbox"].as_str() == Some(sandbox)
        })?;
        let ips = prev["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ip| ip["interface"].as_u64() == Some(index as u64))
            .filter_map(|ip| ip["address"].as_str()?.parse().ok())
            .collect();
        let routes = prev["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let dst = r["dst"].as_str()?.parse().ok()?;
                Some((dst, r["gw"].as_str().and_then(|g| g.parse().ok())))
            })
            .collect();
        Some(Self { ips, routes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        let iface = |name: &str, sandbox: Option<&str>| Interface {
            name: name.into(),
            mac: "0a:00:00:00:00:01".into(),
            sandbox: sandbox.map(str::to_owned),
        };
        Attachment {
            interfaces: vec![
                iface("cni0", None),
                iface("veth1", None),
                iface("eth0", Some("/run/netns/p")),
            ],
            ips: vec![(
                "10.244.1.2/24".parse().unwrap(),
                "10.244.1.1".parse().unwrap(),
            )],
            routes: vec![("0.0.0.0/0".parse().unwrap(), "10.244.1.1".parse().unwrap())],
            dns: None,
        }
    }

    #[test]
    fn legacy_versions_carry_ips_version_and_new_ones_do_not() {
        for (version, has) in [
            ("0.3.1", true),
            ("0.4.0", true),
            ("1.0.0", false),
            ("1.1.0", false),
        ] {
            let v: Value = serde_json::from_str(&attachment().render(version, None)).unwrap();
            assert_eq!(v["cniVersion"], version);
            assert_eq!(v["ips"][0].get("version").is_some(), has, "{version}");
            assert_eq!(v["ips"][0]["interface"], 2);
        }
    }

    #[test]
    fn a_previous_result_is_kept_and_extended() {
        let prev = json!({"cniVersion":"0.4.0","interfaces":[{"name":"lo","sandbox":"/run/netns/p"}],
            "ips":[{"version":"4","address":"127.0.0.1/8","interface":0}],
            "routes":[{"dst":"192.0.2.0/24"}],"dns":{"nameservers":["10.96.0.10"]}});
        let v: Value = serde_json::from_str(&attachment().render("1.0.0", Some(&prev))).unwrap();
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 4);
        assert_eq!(v["ips"][0], json!({"address":"127.0.0.1/8","interface":0}));
        assert_eq!(v["ips"][1]["interface"], 3);
        assert_eq!(v["routes"].as_array().unwrap().len(), 2);
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
        let expected = Expected::of(&v, "eth0", "/run/netns/p").unwrap();
        assert_eq!(
            expected.ips,
            vec!["10.244.1.2/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(expected.routes.len(), 2);
        assert!(Expected::of(&v, "eth1", "/run/netns/p").is_none());
    }
}
