//! The etcd subnet manager against a real etcd (Debian's etcd-server, started by the test bed).

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{Stream, StreamExt};
use sluice_model::net_conf::SubnetRange;
use sluice_overlay::allocate::{Origin, Ranges};
use sluice_overlay::etcd_mgr::{EtcdSubnetManager, lease_key};
use sluice_overlay::{Lease, LeaseAttrs};
use sluice_testbed::etcd::Etcd;

const PREFIX: &str = "/coreos.com/network";

fn ranges() -> Ranges {
    Ranges {
        ipv4: Some(SubnetRange {
            subnet_len: 24,
            min: Ipv4Addr::new(10, 244, 1, 0),
            max: Ipv4Addr::new(10, 244, 20, 0),
        }),
        ipv6: None,
    }
}

fn attrs(i: u8) -> LeaseAttrs {
    let value = format!(
        r#"{{"PublicIP":"192.168.0.{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:{i:02x}"}}}}"#,
        10 + i
    );
    Lease::from_etcd("10.0.0.0-24", &value).unwrap().attrs
}

async fn manager(etcd: &Etcd, ttl: Duration) -> EtcdSubnetManager {
    EtcdSubnetManager::connect(&[etcd.client_url().to_owned()], PREFIX, ttl)
        .await
        .unwrap()
}

/// Waits (bounded) for a peer set that satisfies `want`.
async fn until<S: Stream<Item = Vec<Lease>> + Unpin>(
    peers: &mut S,
    want: impl Fn(&[Lease]) -> bool,
) -> Vec<Lease> {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let set = peers.next().await.expect("peer stream goes on");
            if want(&set) {
                return set;
            }
        }
    })
    .await
    .expect("expected peer set within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_subnets_written_as_flannel_writes_them() {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .unwrap()
        .unwrap();
    let day = Duration::from_secs(86_400);
    etcd.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();
    let m = manager(&etcd, day).await;
    let conf = m.config().await.unwrap();
    assert_eq!(conf.network.unwrap().to_string(), "10.244.0.0/16");

    let mut held = Vec::new();
    for i in 1..=3 {
        held.push(
            manager(&etcd, day)
                .await
                .acquire(&ranges(), &attrs(i), (None, None), |_| 0)
                .await
                .unwrap(),
        );
    }
    let subnets: std::collections::BTreeSet<_> =
        held.iter().map(|h| h.lease.subnet.unwrap()).collect();
    assert_eq!(subnets.len(), 3, "distinct subnets: {subnets:?}");
    let key = lease_key(PREFIX, held[0].lease.subnet.unwrap());
    let stored = etcd.get(&key).unwrap().unwrap();
    assert_eq!(
        stored,
        r#"{"PublicIP":"192.168.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}}"#
    );
    let ttl = etcd
        .etcdctl(["lease", "timetolive", &format!("{:x}", held[0].etcd_lease)])
        .unwrap();
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");

    // A restarted node (same public IP) gets its own lease back.
    let again = manager(&etcd, day)
        .await
        .acquire(&ranges(), &attrs(1), (None, None), |_| 5)
        .await
        .unwrap();
    assert_eq!(
        (again.lease.subnet, again.origin),
        (held[0].lease.subnet, Origin::OwnLease)
    );

    // With no lease left, the previous subnet.env's subnet is reused.
    etcd.etcdctl(["del", &key]).unwrap();
    let prev = held[0].lease.subnet;
    let back = manager(&etcd, day)
        .await
        .acquire(&ranges(), &attrs(1), (prev, None), |_| 5)
        .await
        .unwrap();
    assert_eq!((back.lease.subnet, back.origin), (prev, Origin::Previous));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_follow_leases_and_expired_leases_disappear() {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .unwrap()
        .unwrap();
    let me = manager(&etcd, Duration::from_secs(3600)).await;
    let mine = me
        .acquire(&ranges(), &attrs(1), (None, None), |_| 0)
        .await
        .unwrap();
    let mut peers = Box::pin(me.peers(mine.lease.label()));
    until(&mut peers, |s| s.is_empty()).await;

    let short = manager(&etcd, Duration::from_secs(2)).await;
    let peer = short
        .acquire(&ranges(), &attrs(2), (None, None), |_| 0)
        .await
        .unwrap();
    let set = until(&mut peers, |s| s.len() == 1).await;
    assert_eq!(set[0].subnet, peer.lease.subnet);

    // Renewal keeps it past its TTL...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        short.renew(&peer).await.unwrap();
    }
    let key = lease_key(PREFIX, peer.lease.subnet.unwrap());
    assert!(
        etcd.get(&key).unwrap().is_some(),
        "renewed lease outlives its TTL"
    );
    // ...and without it the lease expires and the peer is gone.
    until(&mut peers, |s| s.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error() {
    // A port nobody listens on (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let result = async {
        let m =
            EtcdSubnetManager::connect(std::slice::from_ref(&url), PREFIX, Duration::from_secs(60))
                .await?;
        m.leases().await
    };
    let e = tokio::time::timeout(Duration::from_secs(20), result)
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().starts_with("etcd "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_leases_use_flannels_combined_key() {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .unwrap()
        .unwrap();
    let m = manager(&etcd, Duration::from_secs(3600)).await;
    let dual = Ranges {
        ipv6: Some(SubnetRange {
            subnet_len: 64,
            min: "fd00:10:244:1::".parse().unwrap(),
            max: "fd00:10:244:ff::".parse().unwrap(),
        }),
        ..ranges()
    };
    let mut a = attrs(1);
    a.public_ipv6 = Some("fd00:192:168::11".parse().unwrap());
    let held = m.acquire(&dual, &a, (None, None), |_| 0).await.unwrap();
    assert_eq!(held.lease.label(), "10.244.1.0-24&fd00:10:244:1::-64");
    let stored = etcd
        .get(&format!("{PREFIX}/subnets/{}", held.lease.label()))
        .unwrap()
        .unwrap();
    assert!(
        stored.contains(r#""PublicIPv6":"fd00:192:168::11""#),
        "{stored}"
    );
    let again = m.acquire(&dual, &a, (None, None), |_| 3).await.unwrap();
    assert_eq!(
        (again.lease.label(), again.origin),
        (held.lease.label(), Origin::OwnLease)
    );
}

/// Issue 15 bug 2: a key whose value is garbage used to count as free, so acquiring it lost
/// the create-if-absent race every time ("lost the race" forever). Garbage is taken, except
/// by the node whose previous subnet.env names it (its own lease, overwritten): that node
/// takes it back. A key that names no subnet at all is simply ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_keys_are_neither_free_nor_fatal() {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .unwrap()
        .unwrap();
    let three = Ranges {
        ipv4: Some(SubnetRange {
            subnet_len: 24,
            min: Ipv4Addr::new(10, 244, 1, 0),
            max: Ipv4Addr::new(10, 244, 3, 0),
        }),
        ipv6: None,
    };
    let subnets = format!("{PREFIX}/subnets");
    etcd.put(&format!("{subnets}/10.244.1.0-24"), "garbage")
        .unwrap();
    etcd.put(&format!("{subnets}/banana"), "{}").unwrap();
    let host_bits = r#"{"PublicIP":"192.168.0.99","BackendType":"vxlan"}"#;
    etcd.put(&format!("{subnets}/10.244.2.7-24"), host_bits)
        .unwrap();
    let m = manager(&etcd, Duration::from_secs(3600)).await;
    let attempt = |i: u8, prev: Option<&str>| {
        let m = m.clone();
        let prev = prev.map(|p| p.parse().unwrap());
        async move {
            let a = attrs(i);
            let fut = m.acquire(&three, &a, (prev, None), |_| 0);
            tokio::time::timeout(Duration::from_secs(20), fut)
                .await
                .expect("acquire finishes")
        }
    };
    let fresh = attempt(3, None).await.unwrap();
    assert_eq!(
        (fresh.lease.label(), fresh.origin),
        ("10.244.3.0-24".into(), Origin::Free),
        "the only subnet no key claims"
    );
    let back = attempt(1, Some("10.244.1.0/24")).await.unwrap();
    assert_eq!(
        (back.lease.label(), back.origin),
        ("10.244.1.0-24".into(), Origin::Previous),
        "a node takes its own overwritten lease back"
    );
    let stored = etcd.get(&format!("{subnets}/10.244.1.0-24")).unwrap();
    assert!(stored.unwrap().contains("192.168.0.11"));
    let e = attempt(4, None).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "no free subnet of length 24 between 10.244.1.0 and 10.244.3.0"
    );
}
