//! The Service conformance suite: what "this proxy mode works" means.
//!
//! Scenarios are data (`scenarios/*.yaml`, see [`scenario`]): API objects, the proxy's
//! settings, and packets with what must happen to them — kube-proxy's behaviour, taken from
//! the upstream `[Conformance]` Service e2e tests and kube-proxy's own packet-flow tests, with
//! each deliberate difference of a mode written next to the packet with its reason. They are
//! written for one cluster ([`plan`]), the lab's, so every address in them is real there.
//!
//! Three runners read the same files:
//! 1. the model ([`pure::NodeWorld::model`], `explain`),
//! 2. each mode's tracer over the rules it renders ([`pure::NodeWorld::tracer`]),
//! 3. real traffic in the lab (`sluice-lab conformance --proxy-mode MODE`) — and for the IPVS
//!    mode, which the lab cannot run, in the plan's cluster built inside a User-Mode Linux
//!    guest (`tests/ipvs_uml.rs`); both judge what answered with [`judge`].
//!
//! Runners 1 and 2 need no kernel and run in `cargo test` for every mode this version
//! builds; runner 3 runs in CI for every mode the machine can run.

pub mod judge;
pub mod plan;
pub mod pure;
pub mod scenario;

pub use scenario::{Dest, Expect, Masquerade, ModeOverride, PacketSpec, Scenario, Source};
