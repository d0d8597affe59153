//! The server over real sockets on loopback: queries built and parsed with hickory's
//! `Message`, over UDP and over TCP (two-byte length framing, RFC 1035 §4.2.2).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::zone;

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m.to_vec().unwrap()
}

fn udp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query(name, kind), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn tcp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query(name, kind);
    let len = u16::try_from(q.len()).unwrap().to_be_bytes();
    s.write_all(&[&len[..], &q].concat()).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn answers_a_srv_ptr_and_nxdomain_over_udp_and_tcp() {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.7", "ports": [{"name": "http", "port": 80}]}}))
    .unwrap();
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}))
    .unwrap();
    let zone = Arc::new(RwLock::new(zone::build(&[svc, ext], &[])));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let free = |_| {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (u, t) = (
        free(()),
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    );
    let _server = runtime.block_on(super::start(u, t, zone.clone())).unwrap();

    let a = udp(u, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(answers(&a), ["10.96.0.7"]);
    let srv = udp(
        u,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(answers(&srv), ["0 100 80 web.default.svc.cluster.local."]);
    let ptr = tcp(t, "7.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(answers(&ptr), ["web.default.svc.cluster.local."]);
    let aaaa = tcp(t, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        (aaaa.metadata.response_code, aaaa.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let cname = udp(u, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&cname),
        ["web.default.svc.cluster.local.", "10.96.0.7"],
        "the CNAME, then its target's address"
    );
    let gone = udp(u, "gone.default.svc.cluster.local.", RecordType::A);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(gone.authorities[0].record_type(), RecordType::SOA);
    let outside = udp(u, "example.org.", RecordType::A);
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    // A swapped zone answers at once.
    *zone.write().unwrap() = zone::build(&[], &[]);
    let deleted = udp(u, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(deleted.metadata.response_code, ResponseCode::NXDomain);
}
