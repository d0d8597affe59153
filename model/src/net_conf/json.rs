//! Writing a [`NetConf`] back as JSON: only keys that were set (or differ from
//! flannel's defaults) are written, so parse → write → parse is the identity and
//! the output stays as small as what an operator would write by hand.

use std::fmt;

use serde_json::{Map, Value, json};

use super::{Backend, NetConf};

impl NetConf {
    /// The configuration as a JSON value (keys sorted).
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = self.extra.clone().into_iter().collect();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        put("Network", self.network.map(|n| json!(n.to_string())));
        put(
            "IPv6Network",
            self.ipv6_network.map(|n| json!(n.to_string())),
        );
        put("EnableIPv4", (!self.enable_ipv4).then_some(json!(false)));
        put("EnableIPv6", self.enable_ipv6.then_some(json!(true)));
        put("SubnetLen", self.subnet_len.map(|v| json!(v)));
        put("SubnetMin", self.subnet_min.map(|a| json!(a.to_string())));
        put("SubnetMax", self.subnet_max.map(|a| json!(a.to_string())));
        put("IPv6SubnetLen", self.ipv6_subnet_len.map(|v| json!(v)));
        put(
            "IPv6SubnetMin",
            self.ipv6_subnet_min.map(|a| json!(a.to_string())),
        );
        put(
            "IPv6SubnetMax",
            self.ipv6_subnet_max.map(|a| json!(a.to_string())),
        );
        put(
            "EnableNFTables",
            self.enable_nftables.then_some(json!(true)),
        );
        put("Backend", Some(backend_json(&self.backend)));
        Value::Object(map)
    }
}

fn backend_json(backend: &Backend) -> Value {
    let mut map: Map<String, Value> = backend.extra.clone().into_iter().collect();
    map.insert("Type".to_owned(), json!(backend.backend_type.as_str()));
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    };
    put("VNI", backend.vni.map(|v| json!(v)));
    put("Port", backend.port.map(|v| json!(v)));
    put("MTU", backend.mtu.map(|v| json!(v)));
    put("DirectRouting", backend.direct_routing.map(|v| json!(v)));
    Value::Object(map)
}

/// Pretty-printed JSON, as an operator would keep it in a ConfigMap.
impl fmt::Display for NetConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}
