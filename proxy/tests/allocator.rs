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
