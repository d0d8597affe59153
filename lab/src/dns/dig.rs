//! `sluice-lab dig POD NAME [TYPE]`: one DNS query from inside a lab pod to the cluster DNS,
//! printing the response code and the answers — the lab's stand-in for `dig` (not installed
//! on the lab's machines), for the record types `getent` cannot ask for (SRV, CNAME, TXT).
//! The message is hickory's; the query goes to `10.96.0.10:53` over UDP from the pod's own
//! namespace (in ebpf mode, from the node's cgroup), so through the proxy like any client.

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use sluice_testbed::NetNs;

/// The response code and answers (`TYPE DATA`) for `name`/`kind`, asked from inside `netns`.
pub(crate) fn query(
    netns: &str,
    name: &str,
    kind: &str,
) -> anyhow::Result<(ResponseCode, Vec<String>)> {
    let kind = RecordType::from_str(&kind.to_ascii_uppercase())
        .with_context(|| format!("record type {kind}"))?;
    let mut qname = Name::from_ascii(name).with_context(|| format!("name {name}"))?;
    qname.set_fqdn(true);
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, kind));
    let bytes = msg.to_vec()?;
    let server = SocketAddr::from((super::CLUSTER_IP, super::PORT));
    let ns = NetNs::open(netns)?;
    let _cgroup = crate::cgroups::join(netns);
    let reply = ns.run(|| -> anyhow::Result<Vec<u8>> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(&bytes, server)?;
        let mut buf = vec![0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .context("no answer from the cluster DNS")?;
        buf.truncate(n);
        Ok(buf)
    })??;
    let answer = Message::from_vec(&reply)?;
    let lines = (answer.answers.iter())
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    Ok((answer.metadata.response_code, lines))
}
