//! What `up` prints once the lab runs: where everything is and the commands to use it.

use crate::labdir::{LabDir, State};

/// An example Service a user can create right away (written into the lab directory).
pub(crate) const EXAMPLE_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, protocol: TCP}
  - {name: udp, port: 53, targetPort: udp, protocol: UDP}
";

/// Prints the lab's pods and how to reach everything.
pub(crate) fn print(dir: &LabDir, state: &State) {
    let url = state.host_url.as_deref().unwrap_or("?");
    let example = dir.path("web-service.yaml");
    let _ = std::fs::write(&example, EXAMPLE_SERVICE);
    // As the user ran it (often target/debug/sluice-lab, not on PATH).
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "sluice-lab".into());
    let lab = if dir.root() == std::path::Path::new(crate::labdir::DEFAULT_DIR) {
        exe
    } else {
        format!("{exe} --lab-dir {}", dir.root().display())
    };
    println!(
        "\nSluice lab is up: {} nodes running sluice-overlay ({} subnets) and sluice-proxy ({}), \
         {} pods wired by the sluice CNI plugin.",
        state.nodes,
        state.subnet_manager,
        state.proxy_mode,
        state.pods.len()
    );
    println!("Lab directory {} (logs in logs/).\n", dir.root().display());
    println!("  pods (label app=web, HTTP and UDP echo on port 8080):");
    for p in &state.pods {
        println!("    {:<8} {:<12} on {}", p.name, p.ip, p.node);
    }
    if let Some(dns) = &state.dns {
        println!(
            "  cluster DNS: pod kube-system/{} {} on {}, Service kube-system/kube-dns {}:53",
            dns.name,
            dns.ip,
            dns.node,
            crate::dns::CLUSTER_IP
        );
    }
    println!(
        "\n  The API server (Services with a selector get EndpointSlices from the lab's pods):"
    );
    println!(
        "    export KUBECONFIG={}   # {url}",
        dir.path("kubeconfig").display()
    );
    println!("    kubectl get nodes,pods -o wide; kubectl get svc,endpointslices -A");
    println!("    kubectl create service clusterip web --tcp=80:8080   # selects app=web");
    println!(
        "    kubectl create --validate=false -f {}",
        example.display()
    );
    println!("\n  Inside the lab (pods, node1.., client, underlay):");
    println!("    {lab} curl web-1 http://<ClusterIP>/");
    println!(
        "    {lab} exec web-1 -- curl -s http://web/    # cluster DNS: kube-dns at 10.96.0.10"
    );
    println!("    {lab} exec web-1 -- ip addr");
    println!("    {lab} dig web-1 _http._tcp.web.default.svc.cluster.local SRV");
    println!("    {lab} exec node1 -- nft list table ip sluice");
    println!("    {lab} curl client http://192.168.0.11:<NodePort>/");
    println!("\n  Remove everything: {lab} down");
}
