//! `sluice-bench cni`: sequential ADD+DEL cycles of the `sluice` binary and of Debian's
//! reference `bridge` + `host-local` with the equivalent config (flannel's delegate: gateway,
//! default route, hairpin, MTU 1450), interleaved in one run in the same namespaces, timed
//! from fork to exit as a runtime sees them. Prints p50/p90/p99 and the ratios. Between
//! cycles the bench waits (untimed) for the kernel to finish tearing down the veth pair, so
//! sluice's detached teardown never slows the reference's next measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_testbed::{NetNs, cni};

/// Flags of `sluice-bench cni`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// ADD+DEL cycles per plugin.
    #[arg(long, default_value_t = 200)]
    cycles: usize,
    /// The `sluice` binary (default: next to this one; build it with the same profile).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Where Debian's reference plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
}

const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// One plugin under test: binary, config, `CNI_PATH`.
struct Plugin {
    name: &'static str,
    bin: PathBuf,
    conf: Value,
    cni_path: String,
}

/// Timings of one plugin.
#[derive(Default)]
struct Times {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let sluice = match &args.sluice {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("sluice"),
    };
    if !sluice.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p sluice-cni) or pass --sluice",
            sluice.display()
        );
    }
    let bridge = args.reference_dir.join("bridge");
    if !bridge.exists() {
        bail!(
            "{} not found: install containernetworking-plugins",
            bridge.display()
        );
    }
    let node = NetNs::new("bench-cni-node")?;
    let pod = NetNs::new("bench-cni-pod")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("subnet.env"), SUBNET_ENV)?;
    let plugins = [
        sluice_plugin(&sluice, dir.path()),
        reference_plugin(&args.reference_dir, dir.path()),
    ];
    println!(
        "sluice-bench cni: {} sequential ADD+DEL cycles per plugin, interleaved, in one node and one pod namespace\n",
        args.cycles
    );
    let netns = pod.path().display().to_string();
    let (floor, times) = node
        .run(|| measure(&plugins, &netns, args.cycles))
        .context("enter the node namespace")??;
    report(&plugins, &times, &floor);
    Ok(())
}

fn sluice_plugin(bin: &Path, dir: &Path) -> Plugin {
    Plugin {
        name: "sluice",
        bin: bin.to_owned(),
        conf: json!({
            "cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "subnetFile": dir.join("subnet.env"),
            "ipam": {"dataDir": dir.join("sluice")},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        }),
        cni_path: "/opt/cni/bin".into(),
    }
}

/// What flannel's plugin hands its delegate for this subnet.env.
fn reference_plugin(ref_dir: &Path, dir: &Path) -> Plugin {
    Plugin {
        name: "bridge + host-local",
        bin: ref_dir.join("bridge"),
        conf: json!({
            "cniVersion": "1.0.0", "name": "cbr0", "type": "bridge",
            "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
            "ipMasq": false, "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]],
                     "routes": [{"dst": "10.244.0.0/16"}], "dataDir": dir.join("reference")},
        }),
        cni_path: ref_dir.display().to_string(),
    }
}

fn measure(
    plugins: &[Plugin],
    netns: &str,
    cycles: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Times>)> {
    let mut floor = Vec::new();
    let mut times: Vec<Times> = plugins.iter().map(|_| Times::default()).collect();
    // One warm-up cycle each (creates the bridge), not counted.
    for p in plugins {
        cycle(p, netns, "warmup")?;
    }
    for i in 0..cycles {
        let start = Instant::now();
        Command::new("/bin/true").status()?;
        floor.push(start.elapsed());
        for (p, t) in plugins.iter().zip(&mut times) {
            let (add, del) = cycle(p, netns, &format!("c{i}"))?;
            t.add.push(add);
            t.del.push(del);
            settle()?;
        }
    }
    Ok((floor, times))
}

/// Waits (untimed) until no veth is left on the node: sluice's DEL returns before the
/// kernel's teardown of the pair ends, and that work must not land in the next plugin's
/// timings.
fn settle() -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "type", "veth"])
            .output()?;
        if out.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn cycle(p: &Plugin, netns: &str, id: &str) -> anyhow::Result<(Duration, Duration)> {
    let add = invoke(p, "ADD", netns, id, &p.conf)?;
    let mut del_conf = p.conf.clone();
    del_conf["prevResult"] = add.1;
    let del = invoke(p, "DEL", netns, id, &del_conf)?;
    Ok((add.0, del.0))
}

fn invoke(
    p: &Plugin,
    command: &str,
    netns: &str,
    id: &str,
    conf: &Value,
) -> anyhow::Result<(Duration, Value)> {
    let stdin = conf.to_string();
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", &p.cni_path),
    ];
    let start = Instant::now();
    let out = cni::exec(Command::new(&p.bin), &env, &stdin)?;
    let took = start.elapsed();
    if !out.ok {
        bail!("{} {command} failed: {}{}", p.name, out.stdout, out.stderr);
    }
    let result = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    Ok((took, result))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn stats(v: &[Duration]) -> [Duration; 3] {
    let mut s = v.to_vec();
    s.sort();
    [
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        percentile(&s, 0.99),
    ]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn report(plugins: &[Plugin], times: &[Times], floor: &[Duration]) {
    println!(
        "{:<22} {:<4} {:>8} {:>8} {:>8}",
        "plugin", "op", "p50 ms", "p90 ms", "p99 ms"
    );
    let row = |name: &str, op: &str, v: &[Duration]| {
        let [p50, p90, p99] = stats(v);
        println!(
            "{name:<22} {op:<4} {:>8} {:>8} {:>8}",
            ms(p50),
            ms(p90),
            ms(p99)
        );
    };
    row("fork+exec /bin/true", "", floor);
    for (p, t) in plugins.iter().zip(times) {
        row(p.name, "ADD", &t.add);
        row(p.name, "DEL", &t.del);
    }
    let p50 = |v: &[Duration]| stats(v)[0].as_secs_f64();
    let (s, r) = (&times[0], &times[1]);
    println!(
        "\nsluice / reference at p50: ADD {:.2}x (target <= 0.40), DEL {:.2}x (target <= 0.25)",
        p50(&s.add) / p50(&r.add),
        p50(&s.del) / p50(&r.del)
    );
}
