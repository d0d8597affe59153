//! `sluice`: the CNI plugin the container runtime execs from `/opt/cni/bin` for every pod.
//!
//! Small and fast by design: no tokio, no Kubernetes client. Its behaviour (CNI 1.1 ADD, DEL,
//! CHECK, VERSION, GC, STATUS; bridge + veth + host-local-compatible IPAM) is built in its own
//! issue. Until then it answers every command with a spec error (code 4 is not right for
//! that; 11 "try again later" is what a runtime handles best), so no runtime believes a pod
//! was wired.

use std::process::ExitCode;

fn main() -> ExitCode {
    println!(
        r#"{{"cniVersion":"1.1.0","code":11,"msg":"sluice CNI plugin is not built yet in this version"}}"#
    );
    ExitCode::from(1)
}
