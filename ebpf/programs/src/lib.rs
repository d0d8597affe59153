#![no_std]
//! The programs live in the `sluice-ebpf` binary (src/main.rs); this lib only exists so the
//! userspace loader can build-depend on the crate (cargo then reruns its build script when
//! the programs change).
