//! flannel's files: `subnet.env` (written by the overlay, read by the plugin and by tools)
//! and `net-conf.json` (the ConfigMap or etcd's `<prefix>/config`).

use sluice_model::net_conf::NetConf;
use sluice_model::subnet_env::SubnetEnv;

/// What parses is written back byte-compatibly: parsing the written text gives it again.
pub fn subnet_env(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let Ok(env) = SubnetEnv::parse(text) else {
        return;
    };
    let written = env.to_string();
    let again = SubnetEnv::parse(&written).expect("what was written parses");
    assert_eq!(again, env, "{written}");
    let _ = (env.subnet_network(), env.ipv6_subnet_network());
}

/// What parses is checked without panicking, and written back as JSON that parses to the
/// same configuration (and checks the same way).
pub fn net_conf(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let Ok(conf) = NetConf::parse(text) else {
        return;
    };
    let checked = conf.check().map_err(|e| e.to_string());
    let written = conf.to_string();
    let again = NetConf::parse(&written).expect("what was written parses");
    assert_eq!(again, conf, "{written}");
    let rechecked = again.check().map_err(|e| e.to_string());
    assert_eq!(rechecked.is_ok(), checked.is_ok(), "{written}");
    if let Ok(ranges) = checked.as_ref() {
        for r in ranges.ipv4.iter() {
            assert!(r.min <= r.max, "{written}");
        }
        for r in ranges.ipv6.iter() {
            assert!(r.min <= r.max, "{written}");
        }
    }
}
