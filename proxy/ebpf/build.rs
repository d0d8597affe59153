//! Builds the kernel-side programs (`ebpf/programs`, crate `sluice-ebpf`) for
//! `bpfel-unknown-none` with aya-build, so a plain `cargo build` produces them; the object
//! lands in `OUT_DIR/sluice-ebpf` and is embedded by `src/kernel/load.rs`.
//!
//! `AYA_BUILD_SKIP=1` skips that build (host-only checks such as clippy, machines without the
//! eBPF toolchain): an empty placeholder is written instead, and loading then fails with a
//! clear error. `AYA_EBPF_TOOLCHAIN` picks the toolchain (default: nightly).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=AYA_EBPF_TOOLCHAIN");
    let tc = std::env::var("AYA_EBPF_TOOLCHAIN").ok();
    let toolchain = match tc.as_deref() {
        Some(t) => aya_build::Toolchain::Custom(t),
        None => aya_build::Toolchain::Nightly,
    };
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../ebpf/programs");
    let root = root.to_str().ok_or("non-UTF-8 path")?.to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sluice-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        toolchain,
    )
    .map_err(|e| {
        format!("building the eBPF programs (see ebpf/README.md; AYA_BUILD_SKIP=1 skips): {e:#}")
    })?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR")?).join("sluice-ebpf");
    if !out.exists() {
        std::fs::write(&out, b"")?;
    }
    Ok(())
}
