//! Kernel tests need root (namespaces, links, sysctls); say so clearly instead of failing with
//! "Operation not permitted" somewhere deep inside.

/// True when running with effective UID 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics with a clear message unless running as root. Call it first in every kernel test.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root: it creates network namespaces, links and sysctls \
         (run the kernel tests as root, e.g. in CI or with sudo)"
    );
}
