//! Sluice's kernel-side eBPF programs.
//!
//! Built only for `bpfel-unknown-none` (nightly `-Z build-std=core` + bpf-linker, see
//! `ebpf/README.md`), by `proxy/ebpf`'s build script through aya-build. For the host target
//! this crate compiles to a tiny binary that says so, which keeps `cargo clippy --workspace`
//! working on machines without the eBPF toolchain.
//!
//! The programs ([`sock`]) are the socket-level load balancer: `cgroup/connect4` and
//! `sendmsg4` translate a Service address to a backend before the socket ever sends a packet,
//! `recvmsg4` and `getpeername4` give the Service address back. What a Service address means
//! (which endpoints, reject or drop, affinity) is decided in userspace and written into the
//! maps; the programs only look up and pick. [`sock6`] does the same for IPv6; [`tc`] is the
//! per-packet path for traffic from outside the node (TCX), and [`tc6`] its IPv6 half.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod sock6;
#[cfg(target_arch = "bpf")]
mod tc;
#[cfg(target_arch = "bpf")]
mod tc6;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    let key_size = core::mem::size_of::<sluice_ebpf_common::ServiceKey>();
    eprintln!(
        "sluice-ebpf holds eBPF programs for target bpfel-unknown-none (service key: {key_size} bytes); \
         build it with the eBPF toolchain, not for the host"
    );
    std::process::exit(2);
}
