//! The CNI plugin's inputs: the network configuration on stdin and the `CNI_*` environment.
//! Only the pure parsers are driven — never `run`, which would act on the kernel or append
//! to whatever `logFile` the input names.

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_cni::config::NetConf;
use sluice_cni::env::Env;
use sluice_cni::plan::Plan;
use sluice_cni::result::{Attachment, Interface};
use sluice_model::subnet_env::SubnetEnv;

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

/// A configuration that parses is one the plugin can act on: absolute store paths, a DNS
/// object the result may carry, a plan for a node's subnet.env, a result that is JSON.
pub fn cni_config(data: &[u8]) {
    let Ok(conf) = NetConf::parse(data) else {
        return;
    };
    assert!(conf.ipam_dir().is_absolute(), "{:?}", conf.ipam_dir());
    assert!(conf.subnet_file().is_absolute(), "{:?}", conf.subnet_file());
    assert!(conf.dns.as_ref().is_none_or(Value::is_object));
    let _ = conf.gc_keep();
    let env = SubnetEnv::parse(SUBNET_ENV).expect("fixed subnet.env parses");
    if let Ok(plan) = Plan::new(&conf, &env) {
        assert!(!plan.ranges.is_empty());
        let iface = |name: &str| Interface {
            name: name.to_owned(),
            mac: "0a:00:00:00:00:01".to_owned(),
            sandbox: None,
        };
        let result = Attachment {
            interfaces: vec![iface("cni0"), iface("veth0"), iface("eth0")],
            ips: Vec::new(),
            routes: plan.routes.clone(),
            dns: conf.dns.clone(),
        }
        .render(&conf.cni_version, conf.prev_result.as_ref());
        let back: Value = serde_json::from_str(&result).expect("the result is JSON");
        assert!(back["dns"].is_object(), "{result}");
    }
}

/// `KEY=VALUE` lines as the environment; a valid one names what its command needs.
pub fn cni_env(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(env) = Env::from_map(&vars) else {
        return;
    };
    if let Some(id) = &env.container_id {
        assert!(!id.is_empty() && id.len() <= sluice_cni::env::MAX_CONTAINER_ID);
    }
    if let Some(ifname) = &env.ifname {
        assert!(!ifname.is_empty() && ifname.len() <= 15 && !ifname.contains('/'));
    }
}
