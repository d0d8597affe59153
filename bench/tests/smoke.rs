//! Each kernel benchmark of one proxy mode, at a small size, runs to its report. The
//! benchmarks are not part of the test run otherwise, and `sluice-bench nftables` once stayed
//! broken unnoticed by a change it measures (it refused any cold sync sent in parts). Nothing
//! about timings is asserted: only that the run succeeds and reports the rows people read.
//! Root (network namespaces, a private bpffs).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-bench");

/// Runs `sluice-bench <bench>` at 300 and 30 Services with `args` and returns its report
/// (standard output).
fn run(bench: &str, args: &[&str]) -> String {
    sluice_testbed::require_root();
    let args = [&[bench, "--services", "300", "--small", "30"], args].concat();
    let out = Command::new(BIN).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sluice-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_rows(report: &str, rows: &[&str]) {
    for row in rows {
        assert!(report.contains(row), "no {row:?} in:\n{report}");
    }
}

#[test]
fn the_nftables_benchmark_runs_to_its_report() {
    let report = run(
        "nftables",
        &["--changes", "2", "--resyncs", "1", "--connections", "20"],
    );
    assert_rows(
        &report,
        &[
            "cold full sync into an empty table, ms",
            "one endpoint added to one Service, p50 ms",
            "periodic full resync, another table changed, ms",
            "TCP connections/s through the ClusterIP",
        ],
    );
}

/// `bench/layouts/commit-cost.sh` at small sizes: nft accepts every table and change it
/// describes (it stops at the first refusal), and every layout gets a measured time.
#[test]
fn the_layout_commit_costs_run_to_their_table() {
    sluice_testbed::require_root();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/layouts/commit-cost.sh");
    let out = Command::new("bash")
        .args([script, "10", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layouts = [
        "rules",
        "element",
        "chains-only",
        "flat",
        "interval",
        "ctmark-each",
        "ctmark-one",
        "data",
    ];
    for layout in layouts {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(layout))
            .unwrap_or_else(|| panic!("no row for {layout} in:\n{stdout}"));
        let times: Vec<u64> = row
            .split_whitespace()
            .skip(1)
            .take(2)
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(times.iter().all(|&t| t > 0), "{row}");
    }
}

#[test]
fn the_iptables_benchmark_runs_to_its_report() {
    let report = run(
        "iptables",
        &["--changes", "2", "--connections", "20", "--rounds", "1"],
    );
    assert_rows(
        &report,
        &[
            "cold full sync of 300 Services, ms",
            "periodic full resync, nothing changed, ms",
            "TCP connections/s through the ClusterIP",
        ],
    );
}

#[test]
fn the_ebpf_benchmark_runs_to_its_report() {
    sluice_testbed::require_root();
    if !sluice_proxy_ebpf::KernelMaps::built_for_tests() {
        return;
    }
    let report = run(
        "ebpf",
        &["--changes", "20", "--rounds", "2", "--resyncs", "1"],
    );
    assert_rows(
        &report,
        &["one change at 300 vs 30 Services", "cold sync at 300"],
    );
}
