//! Golden files for the masquerade ruleset. Regenerate with `SLUICE_BLESS=1 cargo test`.

use std::path::PathBuf;

use sluice_overlay::masq::{MasqNets, render};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs; re-run with SLUICE_BLESS=1 to update.\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn ipv4_ruleset() {
    let nets = MasqNets {
        network: "10.244.0.0/16".parse().unwrap(),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
    };
    golden("masq-ipv4.nft", &render(&nets));
}

#[test]
fn ipv6_ruleset() {
    let nets = MasqNets {
        network: "fd00:1::/56".parse().unwrap(),
        pod_cidr: "fd00:1::/64".parse().unwrap(),
    };
    golden("masq-ipv6.nft", &render(&nets));
}
