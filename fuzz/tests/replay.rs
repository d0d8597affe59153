//! Every seed of every target's corpus, and every input that once crashed one
//! (`fuzz/regressions/<target>/`), run through the targets on stable: the fuzzers' findings
//! stay fixed without a nightly toolchain.

use std::path::Path;

#[test]
fn corpora_and_past_crashes_pass_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, target) in sluice_fuzz::TARGETS {
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                continue;
            };
            for entry in dir.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} panics", entry.path().display());
                ran += 1;
            }
        }
    }
    assert!(ran >= sluice_fuzz::TARGETS.len(), "seeds present: {ran}");
}
