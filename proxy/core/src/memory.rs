//! A hook for handing freed memory back to the kernel at once.
//!
//! The allocator is the binary's choice (`sluice-proxy` uses jemalloc, which returns freed
//! pages after a decay time); the libraries know when a burst of memory was just freed —
//! the parts of a large sync, a parsed batch of manifests — and call [`release`], which
//! does whatever the binary installed with [`set_release`] (nothing by default).

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Installs what [`release`] does; the first call wins.
pub fn set_release(f: fn()) {
    let _ = RELEASE.set(f);
}

/// Hands memory freed so far back to the kernel, if the binary said how.
pub fn release() {
    if let Some(f) = RELEASE.get() {
        f();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static FIRST: AtomicUsize = AtomicUsize::new(0);
    static SECOND: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn release_does_what_was_installed_first() {
        set_release(|| {
            FIRST.fetch_add(1, Ordering::SeqCst);
        });
        set_release(|| {
            SECOND.fetch_add(1, Ordering::SeqCst);
        });
        release();
        assert!(FIRST.load(Ordering::SeqCst) >= 1);
        assert_eq!(SECOND.load(Ordering::SeqCst), 0);
    }
}
