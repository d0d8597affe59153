use sluice_model::service::{IpFamily, Protocol, ServiceName, ServicePortName};

use super::*;
use crate::fixture::{slice, svc};
use crate::{ProxyState, TrackerConfig};

#[test]
fn modes_parse() {
    assert_eq!("nftables".parse(), Ok(ProxyMode::Nftables));
    assert_eq!(
        "".parse(),
        Ok(ProxyMode::Nftables),
        "empty is Sluice's default"
    );
    assert!("NFTables".parse::<ProxyMode>().is_err());
    for mode in ProxyMode::ALL {
        assert_eq!(mode.as_str().parse(), Ok(mode));
    }
}

#[test]
fn fake_records_full_partial_and_failures() {
    let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "n1"));
    let mut fake = FakeBackend::new();
    let log = fake.log();
    state.update_service(&ServiceName::new("ns", "a"), &[svc("a", "10.0.0.1")]);
    state.update_service(&ServiceName::new("ns", "b"), &[svc("b", "10.0.0.2")]);
    state.update_slice(slice("a", "10.1.0.1"));
    let (snap, changes) = state.sync();
    fake.apply(&snap, &changes).unwrap();
    drop(snap);
    let b = ServiceName::new("ns", "b");
    let b80 = ServicePortName::new(&b, "p80", Protocol::Tcp);
    log.fail_next(1);
    state.delete_service(&b);
    let (snap, changes) = state.sync();
    assert!(fake.apply(&snap, &changes).is_err());
    assert_eq!(
        log.programmed(IpFamily::V4).len(),
        2,
        "failed apply changes nothing"
    );
    fake.apply(&snap, &changes).unwrap();
    let applies = log.take_applies();
    assert_eq!(applies.len(), 3);
    assert!(applies[0].full && applies[0].ok && applies[0].ports.len() == 2);
    assert!(!applies[1].ok && !applies[1].full);
    assert_eq!(applies[2].ports, [b80].into());
    let programmed = log.programmed(IpFamily::V4);
    assert_eq!(programmed.len(), 1);
    let a = programmed.values().next().unwrap();
    assert_eq!(a.reachable, vec!["10.1.0.1:8080".parse().unwrap()]);
    let text = fake.render(&snap).unwrap();
    assert!(
        text.contains("ns/a:p80") && !text.contains("ns/b:p80"),
        "{text}"
    );
    fake.cleanup().unwrap();
    assert!(log.programmed(IpFamily::V4).is_empty());
    assert_eq!(log.cleanups(), 1);
}
