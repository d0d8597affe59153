//! IPAM compatible with the reference `host-local` plugin's on-disk store, so a node can move
//! between Sluice and bridge + host-local without double-allocating an address:
//! `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, `last_reserved_ip.0` the last
//! address handed out, and `lock` is flock'ed around every operation; `attachment-lock.<n>`
//! serialise the invocations of one attachment ([`AttachmentLock`]). Allocation is
//! round-robin from the last reserved address, skipping the network, gateway and broadcast
//! addresses, so a crash-looping pod does not get the same address back at once.

mod attachment;
mod range;
mod store;

pub use attachment::AttachmentLock;
pub use range::Range;
pub use store::{IpamError, Store};
