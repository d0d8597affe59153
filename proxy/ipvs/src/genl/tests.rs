use std::net::{IpAddr, Ipv4Addr};

use sluice_netlink::{Attrs, Writer};

use super::*;

fn key() -> VsKey {
    VsKey {
        addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        protocol: crate::types::TCP,
        port: 80,
    }
}

#[test]
fn a_service_is_named_by_family_protocol_address_and_port_in_kernel_byte_orders() {
    let mut w = Writer::new();
    service_id(&mut w, &key());
    #[rustfmt::skip]
    let want: Vec<u8> = [
        [0x24, 0, 0x01, 0x80],          // nested IPVS_CMD_ATTR_SERVICE, 36 bytes
        [6, 0, 1, 0], [2, 0, 0, 0],     // AF = AF_INET (native u16, padded)
        [6, 0, 2, 0], [6, 0, 0, 0],     // PROTOCOL = TCP
        [8, 0, 3, 0], [10, 96, 0, 10],  // ADDR, 4 raw bytes
        [6, 0, 4, 0], [0, 80, 0, 0],    // PORT 80, network order
    ]
    .concat();
    assert_eq!(w.into_inner(), want);
}

#[test]
fn a_full_service_carries_scheduler_flags_with_mask_timeout_and_netmask() {
    let vs = VirtualServer {
        key: key(),
        scheduler: "rr".into(),
        flags: crate::types::F_PERSISTENT,
        timeout: 10800,
    };
    let mut w = Writer::new();
    service(&mut w, &vs);
    let bytes = w.into_inner();
    let nest = Attrs::new(&bytes).nested(1).unwrap();
    assert_eq!(nest.str(6).as_deref(), Some("rr"));
    assert_eq!(
        nest.get(7).unwrap(),
        &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]
    );
    assert_eq!(nest.get(8).unwrap(), &10800u32.to_ne_bytes()[..]);
    assert_eq!(nest.get(9).unwrap(), &[0xff; 4][..]);
    assert_eq!(parse_service(Attrs::new(&bytes)).unwrap(), vs);
}

#[test]
fn the_kernels_hashed_flag_is_not_a_difference() {
    let mut w = Writer::new();
    w.nest(1, |w| {
        w.u16_ne(1, 2);
        w.u16_ne(2, 6);
        let mut addr = vec![10, 96, 0, 10];
        addr.resize(16, 0);
        w.bytes(3, &addr);
        w.u16_be(4, 80);
        w.str(6, "rr");
        w.bytes(7, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        w.u32_ne(8, 0);
    });
    let vs = parse_service(Attrs::new(&w.into_inner())).unwrap();
    assert_eq!((vs.key, vs.flags), (key(), 0));
}

#[test]
fn a_destination_is_nat_with_its_weight_and_reads_back_from_a_16_byte_address() {
    let rs = RealServer::new("10.244.1.5".parse().unwrap(), 8080, 1);
    let mut w = Writer::new();
    destination(&mut w, &rs);
    let bytes = w.into_inner();
    let nest = Attrs::new(&bytes).nested(2).unwrap();
    assert_eq!(nest.get(1).unwrap(), &[10, 244, 1, 5][..]);
    assert_eq!(nest.get(2).unwrap(), &[0x1f, 0x90][..]);
    assert_eq!(nest.get(3).unwrap(), &[0; 4][..]);
    assert_eq!(nest.get(4).unwrap(), &1u32.to_ne_bytes()[..]);
    assert_eq!(nest.get(11).unwrap(), &2u16.to_ne_bytes()[..]);

    // The kernel's answer: a 16-byte nf_inet_addr, connection counters.
    let mut w = Writer::new();
    w.nest(2, |w| {
        let mut addr = vec![10, 244, 1, 5];
        addr.resize(16, 0);
        w.bytes(1, &addr);
        w.u16_be(2, 8080);
        w.u32_ne(4, 0);
        w.u32_ne(7, 3);
        w.u32_ne(8, 4);
    });
    let back = parse_destination(Attrs::new(&w.into_inner()), &key().addr).unwrap();
    assert_eq!(back.key, rs.key);
    assert_eq!((back.weight, back.active, back.inactive), (0, 3, 4));
}

#[test]
fn ipv6_services_use_af_inet6_and_a_128_bit_netmask() {
    let vs = VirtualServer {
        key: VsKey {
            addr: "fd00::10".parse().unwrap(),
            protocol: crate::types::UDP,
            port: 53,
        },
        scheduler: "rr".into(),
        flags: 0,
        timeout: 0,
    };
    let mut w = Writer::new();
    service(&mut w, &vs);
    let bytes = w.into_inner();
    let nest = Attrs::new(&bytes).nested(1).unwrap();
    assert_eq!(nest.get(1).unwrap(), &10u16.to_ne_bytes()[..]);
    assert_eq!(nest.get(3).unwrap().len(), 16);
    assert_eq!(nest.get(9).unwrap(), &128u32.to_ne_bytes()[..]);
    assert_eq!(parse_service(Attrs::new(&bytes)).unwrap(), vs);
}

#[test]
fn garbage_answers_are_skipped_not_panicked_on() {
    assert_eq!(parse_service(Attrs::new(&[1, 2, 3])), None);
    let mut w = Writer::new();
    w.nest(1, |w| w.u16_ne(1, 99));
    assert_eq!(parse_service(Attrs::new(&w.into_inner())), None);
}

#[test]
fn timeouts_are_three_native_u32_attributes() {
    let mut w = Writer::new();
    timeouts(&mut w, 900, 120, 300);
    let bytes = w.into_inner();
    let a = Attrs::new(&bytes);
    assert_eq!(a.get(4).unwrap(), &900u32.to_ne_bytes()[..]);
    assert_eq!(a.get(5).unwrap(), &120u32.to_ne_bytes()[..]);
    assert_eq!(a.get(6).unwrap(), &300u32.to_ne_bytes()[..]);
}
