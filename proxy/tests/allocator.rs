//! sluice-proxy's jemalloc is built with the settings `.cargo/config.toml` gives it (one
//! arena, a background thread returning freed pages): a build that lost them would still
//! run, with twice the memory (issue 14), so they are read back from the allocator here.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn jemalloc_runs_with_the_workspace_settings() {
    assert_eq!(tikv_jemalloc_ctl::opt::narenas::read().unwrap(), 1);
    assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `memory::trim` hands freed pages back there and then, not after the decay time: 40 MiB
/// of small blocks freed at once leave RSS until trimmed.
#[test]
fn trim_returns_freed_memory_at_once() {
    let before = rss_kib();
    let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 200]).collect();
    let grown = rss_kib();
    assert!(grown > before + 30_000, "{before} → {grown} KiB");
    drop(blocks);
    sluice_proxy::memory::trim();
    let trimmed = rss_kib();
    assert!(
        trimmed < grown - 30_000,
        "{grown} → {trimmed} KiB after trim"
    );
}
