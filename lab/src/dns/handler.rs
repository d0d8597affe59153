//! Answering queries from the current [`Zone`]: hickory-server does the protocol (UDP and
//! TCP listeners, message parsing and encoding); this handler only picks the records. Names in
//! the cluster domain or the reverse zones get authoritative answers (NXDOMAIN with the SOA
//! when absent; a CNAME to a name in the zone followed once); anything else is REFUSED — the lab has no upstream to forward to.

use std::sync::{Arc, RwLock};

use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::CNAME;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::zone::Zone;

/// The zone, swapped whole by the watcher.
pub(crate) type Shared = Arc<RwLock<Zone>>;

/// The lab's DNS request handler.
pub(crate) struct Handler {
    pub(crate) zone: Shared,
}

/// What to answer for `name`/`kind`: the response code and the answer records.
pub(crate) fn answer(zone: &Zone, name: &str, kind: RecordType) -> (ResponseCode, Vec<Record>) {
    if !Zone::authoritative_for(name) {
        return (ResponseCode::Refused, Vec::new());
    }
    match zone.lookup(name) {
        None => (ResponseCode::NXDomain, Vec::new()),
        Some(records) => {
            let mut picked: Vec<Record> = records
                .iter()
                .filter(|r| {
                    r.record_type() == kind
                        || kind == RecordType::ANY
                        || r.record_type() == RecordType::CNAME
                })
                .cloned()
                .collect();
            // A CNAME into the zone (an ExternalName naming a Service) is followed once, as
            // CoreDNS does, so the client gets the address in the same answer.
            if kind != RecordType::CNAME {
                let targets: Vec<String> = (picked.iter())
                    .filter_map(|r| match &r.data {
                        RData::CNAME(CNAME(target)) => Some(target.to_ascii()),
                        _ => None,
                    })
                    .collect();
                for target in targets {
                    let found = zone.lookup(&target).unwrap_or_default();
                    picked.extend(found.iter().filter(|r| r.record_type() == kind).cloned());
                }
            }
            (ResponseCode::NoError, picked)
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, msg, &request.metadata).await;
        };
        let qname = Name::from(info.query.name().clone()).to_ascii();
        let (code, answers) = {
            let zone = self
                .zone
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            answer(&zone, &qname, info.query.query_type())
        };
        if code == ResponseCode::Refused {
            let msg = builder.error_msg(&request.metadata, code);
            return send(&mut response, msg, &request.metadata).await;
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.response_code = code;
        let soa = if answers.is_empty() {
            vec![Zone::soa()]
        } else {
            Vec::new()
        };
        let msg = builder.build(meta, answers.iter(), [].iter(), soa.iter(), [].iter());
        send(&mut response, msg, &request.metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            eprintln!("dns: sending a response failed: {e}");
            let mut meta = Metadata::response_from_request(request);
            meta.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        }
    }
}
