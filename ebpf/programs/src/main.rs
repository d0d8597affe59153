//! Sluice's kernel-side eBPF programs.
//!
//! Built only for `bpfel-unknown-none` (nightly `-Z build-std=core` + bpf-linker, see
//! `ebpf/README.md`); that is why this crate is outside the workspace's
//! `default-members`. For the host target it compiles to a tiny binary that says so, which
//! keeps `cargo clippy --workspace` working on machines without the eBPF toolchain.
//! The programs themselves (socket-LB `cgroup/connect4`, tc NodePort) arrive with the eBPF
//! dataplane; they share their map types with userspace through `sluice-ebpf-common`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

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
