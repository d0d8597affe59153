//! The User-Mode Linux runner: a guest boots, runs a script or a test of this binary with
//! the host's binaries, and hands back the exit status and output; the guest kernel has what
//! the host's lacks (IPVS, dummy links).

use sluice_testbed::require_root;
use sluice_testbed::uml::{self, Uml};

#[test]
fn a_guest_runs_a_script_with_ipvs_and_dummy_links_and_returns_its_status() {
    require_root();
    let out = Uml::find()
        .unwrap()
        .env("GREETING", "it's here")
        .run_script(
            "set -e\n\
             echo \"$GREETING\"\n\
             ip link add kube-ipvs0 type dummy\n\
             ip addr add 10.96.0.10/32 dev kube-ipvs0\n\
             ipvsadm -A -t 10.96.0.10:80 -s rr\n\
             ipvsadm -Ln | grep -c 10.96.0.10:80\n\
             exit 7",
        )
        .unwrap();
    assert_eq!(out.status, 7, "{}", out.output);
    assert!(out.output.starts_with("it's here\n1\n"), "{}", out.output);
}

#[test]
fn a_test_of_this_binary_runs_inside_the_guest() {
    if uml::in_guest() {
        // Inside: the guest's own kernel, which has IPVS (the host's has not).
        let names = std::fs::read_to_string("/proc/net/ip_vs").unwrap();
        assert!(names.contains("IP Virtual Server"));
        println!("guest part ran");
        return;
    }
    require_root();
    let out = Uml::find()
        .unwrap()
        .run_test("a_test_of_this_binary_runs_inside_the_guest")
        .unwrap();
    out.assert_success();
    assert!(out.output.contains("guest part ran"), "{}", out.output);
    assert!(out.output.contains("1 passed"), "{}", out.output);
}

#[test]
fn a_guest_that_overruns_its_time_is_killed_and_reported() {
    require_root();
    let err = Uml::find()
        .unwrap()
        .timeout(std::time::Duration::from_secs(8))
        .run_script("echo started; sleep 600")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not finish in time"), "{text}");
}
