include!("../build/revision.rs");
