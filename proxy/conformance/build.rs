//! Embeds the scenario files, so every binary that runs the suite (the tests, `sluice-lab
//! conformance`) carries the same scenarios wherever it is copied.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the scenarios directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// The shipped scenario files: (file name, text).\npub(crate) const SHIPPED: &[(&str, &str)] = &[\n",
    );
    for n in names {
        println!("cargo:rerun-if-changed={}", dir.join(&n).display());
        let _ = writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            dir.join(&n).display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("set by cargo")).join("scenarios.rs");
    std::fs::write(dest, out).expect("write the scenario list");
}
