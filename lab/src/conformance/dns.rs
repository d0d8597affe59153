//! Name-based rows of the lab runner: upstream's `[Conformance]` "DNS for Services"
//! behaviours (test/e2e/network/dns.go), checked from a pod through the lab's cluster DNS —
//! which the proxy under test serves as the Service `kube-system/kube-dns` — so every row is
//! also a UDP or TCP flow through that proxy mode. Only the lab runs them: the pure model and
//! the tracer runners have no DNS. Upstream's rows this lab cannot have: "DNS for the cluster"
//! (no `kubernetes` Service), "/etc/hosts entries" (no kubelet-managed hosts file) and pod
//! hostname/subdomain records (the lab's pods set neither).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::Totals;
use crate::dns::dig;
use crate::up::{Lab, eventually};

/// The name `--scenario` selects these rows by.
pub(crate) const NAME: &str = "dns-for-services";

/// A row: what it checks, the name it asks for, and the check (true: passed).
type Check<'a> = (
    &'static str,
    String,
    Box<dyn Fn() -> anyhow::Result<bool> + 'a>,
);

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// Creates the Services, checks each behaviour (a row each), deletes them.
pub(crate) fn run(lab: &Lab, totals: &mut Totals) -> anyhow::Result<()> {
    let api = lab.api()?;
    let base = "/api/v1/namespaces/default/services";
    let port = json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]);
    api.create(
        base,
        &service(
            "dns-test-service",
            json!({"clusterIP": "None",
        "selector": {"app": "web"}, "ports": port}),
        ),
    )?;
    let svc2 = api.create(
        base,
        &service(
            "test-service-2",
            json!({
        "selector": {"app": "web"}, "ports": port}),
        ),
    )?;
    api.create(
        base,
        &service(
            "dns-externalname",
            json!({"type": "ExternalName",
        "externalName": "test-service-2.default.svc.cluster.local"}),
        ),
    )?;
    let ip = svc2["spec"]["clusterIP"]
        .as_str()
        .context("no clusterIP")?
        .to_owned();
    let pods: Vec<String> = lab.state.pods.iter().map(|p| p.ip.to_string()).collect();
    let from = lab.state.pods.first().context("no pod")?.netns.clone();
    let reverse = {
        let o: Vec<&str> = ip.split('.').rev().collect();
        format!("{}.in-addr.arpa", o.join("."))
    };
    let fqdn = "test-service-2.default.svc.cluster.local";
    let headless = "dns-test-service.default.svc.cluster.local";
    let mut rows: Vec<Check<'_>> = vec![
        (
            "headless A: every ready endpoint (UDP)",
            headless.into(),
            Box::new(|| {
                let (_, a) = dig::query(&from, headless, "A")?;
                Ok(a.len() == pods.len() && pods.iter().all(|p| a.iter().any(|l| l.ends_with(p))))
            }),
        ),
        (
            "headless A over TCP (getent, use-vc)",
            headless.into(),
            Box::new(|| Ok(getent(&from, headless, true)?.is_some_and(|a| pods.contains(&a)))),
        ),
        (
            "SRV for a named port (headless)",
            format!("_http._tcp.{headless}"),
            Box::new(|| {
                let (_, a) = dig::query(&from, &format!("_http._tcp.{headless}"), "SRV")?;
                Ok(a.len() == pods.len() && a.iter().all(|l| l.contains(" SRV 0 100 80 ")))
            }),
        ),
        (
            "SRV for a named port (ClusterIP)",
            format!("_http._tcp.{fqdn}"),
            Box::new(|| {
                let (_, a) = dig::query(&from, &format!("_http._tcp.{fqdn}"), "SRV")?;
                Ok(a.len() == 1 && a[0].ends_with(&format!(" 80 {fqdn}.")))
            }),
        ),
        (
            "PTR for the ClusterIP",
            reverse.clone(),
            Box::new(|| {
                let (_, a) = dig::query(&from, &reverse, "PTR")?;
                Ok(a.len() == 1 && a[0].ends_with(&format!("PTR {fqdn}.")))
            }),
        ),
        (
            "partial names via the search path",
            "test-service-2[.default[.svc]]".into(),
            Box::new(|| {
                let mut ok = true;
                for n in [
                    "test-service-2",
                    "test-service-2.default",
                    "test-service-2.default.svc",
                ] {
                    ok &= getent(&from, n, false)?.as_deref() == Some(ip.as_str());
                }
                Ok(ok)
            }),
        ),
        (
            "ExternalName: CNAME",
            "dns-externalname.default.svc.cluster.local".into(),
            Box::new(|| {
                let (_, a) = dig::query(&from, "dns-externalname.default.svc.cluster.local", "A")?;
                Ok(a.iter().any(|l| l.contains(&format!("CNAME {fqdn}.")))
                    && a.iter().any(|l| l.ends_with(&ip)))
            }),
        ),
    ];
    rows.push((
        "deleted Service: NXDOMAIN",
        fqdn.into(),
        Box::new(|| {
            let _ = api.delete(&format!("{base}/test-service-2"));
            let (code, _) = dig::query(&from, fqdn, "A")?;
            Ok(code == hickory_server::proto::op::ResponseCode::NXDomain)
        }),
    ));
    for (what, name, check) in &rows {
        let start = Instant::now();
        let result = eventually(what, Duration::from_secs(5), || Ok(check()?.then_some(())));
        let (word, detail) = match &result {
            Ok(()) => {
                totals.passed += 1;
                ("pass", String::new())
            }
            Err(e) => {
                totals.failed += 1;
                ("FAIL", format!("{e:#}"))
            }
        };
        println!(
            "{NAME:<30} {name:<42} {what:<44} {:>6.0}  {word} {detail}",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    for name in ["dns-test-service", "dns-externalname", "test-service-2"] {
        let _ = api.delete(&format!("{base}/{name}"));
    }
    Ok(())
}

/// The first address `getent ahostsv4` gives in `netns`; over TCP with `tcp` (`use-vc`).
fn getent(netns: &str, name: &str, tcp: bool) -> anyhow::Result<Option<String>> {
    let opts = if tcp {
        "use-vc timeout:1 attempts:1"
    } else {
        "timeout:1 attempts:1"
    };
    let out = crate::exec::in_pod(netns, "getent")
        .env("RES_OPTIONS", opts)
        .args(["ahostsv4", name])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().map(str::to_owned))
}
