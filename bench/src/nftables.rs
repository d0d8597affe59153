//! `sluice-bench nftables`: the nftables backend against the real kernel, in network
//! namespaces this run creates (never the host's ruleset), in one run:
//!
//! 1. a cold full sync of 10,000 Services × 3 endpoints into an empty table through the real
//!    backend (`NftablesBackend` over netlink), split into the model's snapshot, the proxy's
//!    render + plan, and the kernel apply (itself split into user CPU — encoding — and system
//!    CPU — the kernel's validation and commit); peak RSS;
//! 2. one Service change (one endpoint added to one Service, and one new Service) at 10,000
//!    and at 100 Services: the whole partial sync (feed, snapshot, plan, apply), median;
//! 3. a periodic full resync at 10,000 with nothing changed: read back, diff, send nothing;
//! 4. TCP connection set-up rate from a client pod through a ClusterIP (10,000 Services
//!    programmed on the node) vs straight to the pod IP, through the same node either way.
//!
//! The kernel is wrapped in [`Timed`], so the figures come from the production code path and
//! only the clock reads are added. Nothing is asserted about timings: the table shows the
//! goals next to the figures.

use std::iter;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::{IpNet, Ipv4Net};
use nix::sys::resource::{UsageWho, getrusage};
use sluice_conntrack::Conntrack;
use sluice_model::service::IpFamily;
use sluice_nft::{Family, Netlink, NftError, NftKernel, TableSink, TableState, Transaction};
use sluice_proxy_core::backend::{Backend as _, BackendOptions, LocalDetect};
use sluice_proxy_core::{ProxyState, TrackerConfig};
use sluice_proxy_nftables::{NftConfig, NftablesBackend};
use sluice_testbed::NetNs;
use sluice_testbed::link::{Address, Route, Veth};
use sluice_testbed::traffic::{EchoServer, Proto, request_here};

use crate::sync::{Scale, endpoint_ip, ms, peak_rss_kib, service, slice, slice_of};

/// Flags of `sluice-bench nftables`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    scale: Scale,
    /// Single-Service changes measured per run, of each kind.
    #[arg(long, default_value_t = 20)]
    changes: u32,
    /// Periodic full resyncs (nothing changed) measured in the large run.
    #[arg(long, default_value_t = 3)]
    resyncs: u32,
    /// Sequential TCP connections (connect, read the answer, close) per destination.
    #[arg(long, default_value_t = 2_000)]
    connections: u32,
}

impl Args {
    /// The flags' defaults with other sizes (`sluice-bench sync --backend nftables`).
    pub(crate) fn sized(scale: Scale) -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: Args,
        }
        let args = <Defaults as clap::Parser>::parse_from(["nftables"]).args;
        Self { scale, ..args }
    }
}

/// `--cluster-cidr`: the pods' addresses (their traffic to a ClusterIP is not masqueraded).
pub(crate) const CLUSTER_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16);
/// The service CIDR (unallocated ClusterIPs are dropped), holding the generator's 10.96.0.0 + i.
const SERVICE_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12);
/// The client pod and its gateway on the node.
const CLIENT: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1));
/// The server pod and its gateway on the node.
pub(crate) const SERVER: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 2, 1));
/// The server pod's port (the generator's target port).
pub(crate) const TARGET_PORT: u16 = 8080;
/// The server pod's port for direct connections: another port than the VIP's target, so a
/// direct connection's 4-tuple never equals a DNATed one (the client reuses source ports
/// across destinations; a clash with a TIME_WAIT entry costs a slow path in conntrack).
pub(crate) const DIRECT_PORT: u16 = 8081;
/// Bound on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds the connections are split into, alternating VIP and pod IP against drift.
const ROUNDS: u32 = 20;

/// Time spent inside the kernel handle since the last [`Timed::take`].
#[derive(Clone, Copy, Debug, Default)]
struct KernelTime {
    /// Transactions sent.
    applies: u32,
    /// Their operations.
    ops: usize,
    /// Elements added or deleted by them.
    elements: usize,
    /// Wall time of the applies (encode, send, the kernel's commit, the answers).
    apply: Duration,
    /// CPU in user space during the applies (encoding, reading the answers).
    user: Duration,
    /// CPU in the kernel during the applies (the batch: validation and commit).
    system: Duration,
    /// Wall time of reading the table back.
    read: Duration,
}

/// An [`NftKernel`] that clocks the one it wraps.
struct Timed<K> {
    inner: K,
    time: KernelTime,
}

impl<K> Timed<K> {
    fn new(inner: K) -> Self {
        Self {
            inner,
            time: KernelTime::default(),
        }
    }

    /// The time since the last call.
    fn take(&mut self) -> KernelTime {
        std::mem::take(&mut self.time)
    }
}

/// This thread's user and system CPU time.
fn thread_cpu() -> (Duration, Duration) {
    let to = |t: nix::sys::time::TimeVal| {
        let micros = t.tv_sec() * 1_000_000 + t.tv_usec();
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    };
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => (to(u.user_time()), to(u.system_time())),
        Err(_) => (Duration::ZERO, Duration::ZERO),
    }
}

impl<K: NftKernel> Timed<K> {
    fn timed(
        &mut self,
        tx: &Transaction,
        f: impl FnOnce(&mut K) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        let (user, system) = thread_cpu();
        let start = Instant::now();
        let result = f(&mut self.inner);
        self.time.apply += start.elapsed();
        let (user2, system2) = thread_cpu();
        self.time.user += user2.saturating_sub(user);
        self.time.system += system2.saturating_sub(system);
        self.time.applies += 1;
        self.time.ops += tx.ops.len();
        self.time.elements += sluice_proxy_nftables::summary(tx)
            .get("elements")
            .copied()
            .unwrap_or(0);
        result
    }
}

impl<K: NftKernel> NftKernel for Timed<K> {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        self.timed(tx, |k| k.apply(tx))
    }

    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError> {
        let start = Instant::now();
        let table = self.inner.read_table(family, name);
        self.time.read += start.elapsed();
        table
    }

    /// The backend's read-back (it streams the dumps into the diff's "before" side, so
    /// this includes building that).
    fn read_table_into(
        &mut self,
        family: Family,
        name: &str,
        sink: &mut dyn TableSink,
    ) -> Result<bool, NftError> {
        let start = Instant::now();
        let found = self.inner.read_table_into(family, name, sink);
        self.time.read += start.elapsed();
        found
    }

    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        self.inner.generation()
    }

    fn apply_at(&mut self, tx: &Transaction, generation: u32) -> Result<(), NftError> {
        self.timed(tx, |k| k.apply_at(tx, generation))
    }
}

/// The production backend with a clocked kernel handle.
type Backend = NftablesBackend<Timed<Netlink>, Conntrack>;

/// The backend with its netlink and ctnetlink sockets opened inside `ns` (they stay bound to
/// it, so the backend can run on this thread).
fn open_backend(ns: &NetNs) -> anyhow::Result<Backend> {
    let opts = BackendOptions {
        local: LocalDetect::Cidrs(vec![IpNet::V4(CLUSTER_CIDR)]),
        service_cidrs: vec![IpNet::V4(SERVICE_CIDR)],
        ..BackendOptions::default()
    };
    let (kernel, conntrack) = ns
        .run(|| -> anyhow::Result<_> { Ok((Netlink::open()?, Conntrack::open()?)) })?
        .context("open netlink in the node namespace")?;
    Ok(NftablesBackend::new(
        Timed::new(kernel),
        conntrack,
        [NftConfig::of(&opts, IpFamily::V4)],
    ))
}

/// A cold full sync.
struct Cold {
    /// `ProxyState::sync`: the model's snapshot of everything fed.
    snapshot: Duration,
    /// The backend's apply, end to end.
    total: Duration,
    kernel: KernelTime,
}

impl Cold {
    /// The proxy's own part of the apply: render, diff, plan, record.
    fn plan(&self) -> Duration {
        self.total
            .saturating_sub(self.kernel.apply)
            .saturating_sub(self.kernel.read)
    }
}

/// Medians of one kind of single-Service change.
#[derive(Clone, Copy)]
struct Change {
    /// Feed, snapshot, plan and apply.
    total: Duration,
    /// The kernel apply alone.
    kernel: Duration,
}

/// The figures of one cluster size.
struct Size {
    services: u32,
    cold: Cold,
    endpoint_added: Change,
    new_service: Change,
}

/// The periodic full resync with nothing changed.
struct Resync {
    total: Duration,
    read: Duration,
    ops_sent: usize,
}

/// Connection set-up rates.
pub(crate) struct Rates {
    pub(crate) vip: f64,
    pub(crate) pod: f64,
    /// Median over the rounds of (VIP rate / pod IP rate).
    pub(crate) ratio: f64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scale.services > 0
            && args.scale.small > 0
            && args.scale.endpoints > 0
            && args.changes > 0,
        "sizes must be positive"
    );
    // Every connection leaves a TIME_WAIT socket on the server for 60 s: past ~28,000 the
    // client reuses ports of those 4-tuples and connections stall for a retransmit.
    anyhow::ensure!(
        (1..=10_000).contains(&args.connections),
        "--connections must be 1..=10000 (TIME_WAIT 4-tuples would be reused)"
    );
    println!(
        "sluice-bench nftables: {} and {} Services x {} endpoints through NftablesBackend over \
         netlink, in fresh network namespaces; {} single-Service changes of each kind per size, \
         {} sequential TCP connections per destination\n",
        args.scale.services, args.scale.small, args.scale.endpoints, args.changes, args.connections
    );
    let small_ns = NetNs::new("nft-small")?;
    let (small, _, _) = measure(args, &small_ns, args.scale.small, None)?;
    drop(small_ns);

    let bed = Bed::new()?;
    // The Service the traffic goes through: one in the middle, its one endpoint the server pod.
    let traffic = args.scale.services / 2;
    let (large, mut state, mut backend) = measure(
        args,
        &bed.node,
        args.scale.services,
        Some((traffic, SERVER.0)),
    )?;
    let peak_kib = peak_rss_kib()?;
    let resync = [
        resync(args, &mut state, &mut backend, true)?,
        resync(args, &mut state, &mut backend, false)?,
    ];
    let vip = SocketAddr::new(Ipv4Addr::from(0x0a60_0000 + traffic).into(), 80);
    let rates = bed.rates(args.connections, vip)?;
    drop((state, backend, bed));
    // The reference: the same bed with nothing but one hand-written DNAT rule.
    let bed = Bed::new()?;
    bed.node.exec([
        "nft",
        &format!(
            "add table ip reference; \
             add chain ip reference prerouting {{ type nat hook prerouting priority -100; }}; \
             add rule ip reference prerouting ip daddr {} tcp dport {} dnat to {}:{TARGET_PORT}",
            vip.ip(),
            vip.port(),
            SERVER.0
        ),
    ])?;
    let reference = bed.rates(args.connections, vip)?;
    drop(bed);
    print(
        args,
        &[large, small],
        &resync,
        &[rates, reference],
        peak_kib,
    );
    Ok(())
}

/// Feeds `services` Services (the `traffic` one with a single endpoint), syncs them cold into
/// an empty table in `ns`, then times single-Service changes.
fn measure(
    args: &Args,
    ns: &NetNs,
    services: u32,
    traffic: Option<(u32, Ipv4Addr)>,
) -> anyhow::Result<(Size, ProxyState, Backend)> {
    let mut backend = open_backend(ns)?;
    let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
    let n = args.scale.endpoints;
    for i in 0..services {
        state.on_service(&service(i, 80))?;
        let slice = match traffic {
            Some((t, ip)) if t == i => slice_of(i, iter::once(ip)),
            _ => slice(i, n, 0),
        };
        state.on_slice(&slice)?;
    }
    let start = Instant::now();
    let (snapshot, changes) = state.sync();
    let snapshot_time = start.elapsed();
    anyhow::ensure!(changes.full, "the first sync is not a full one");
    backend.kernel().take();
    let start = Instant::now();
    backend.apply(&snapshot, &changes)?;
    let total = start.elapsed();
    let kernel = backend.kernel().take();
    anyhow::ensure!(kernel.applies >= 1, "the cold sync sent nothing");
    drop(snapshot);
    let cold = Cold {
        snapshot: snapshot_time,
        total,
        kernel,
    };

    // Distinct Services, never the traffic one.
    let picks: Vec<u32> = (0..)
        .map(|k: u32| k.wrapping_mul(7919).wrapping_add(1) % services)
        .filter(|i| traffic.is_none_or(|(t, _)| t != *i))
        .scan(std::collections::BTreeSet::new(), |seen, i| {
            Some(seen.insert(i).then_some(i))
        })
        .flatten()
        .take(args.changes.min(services.saturating_sub(1)) as usize)
        .collect();
    let mut added = Vec::new();
    for (k, &i) in picks.iter().enumerate() {
        let extra = Ipv4Addr::from(0x0ac8_0000 + k as u32);
        let addrs = (0..n)
            .map(|j| endpoint_ip(i, n, j))
            .chain(iter::once(extra));
        let slice = slice_of(i, addrs);
        added.push(change(&mut state, &mut backend, |s| {
            s.on_slice(&slice)?;
            Ok(())
        })?);
    }
    let mut created = Vec::new();
    for k in 0..args.changes {
        let i = services + k;
        let (svc, slice) = (service(i, 80), slice(i, n, 0));
        created.push(change(&mut state, &mut backend, |s| {
            s.on_service(&svc)?;
            s.on_slice(&slice)?;
            Ok(())
        })?);
    }
    let size = Size {
        services,
        cold,
        endpoint_added: median(&mut added),
        new_service: median(&mut created),
    };
    Ok((size, state, backend))
}

/// One single-Service change fed by `feed`, synced and applied partially.
fn change(
    state: &mut ProxyState,
    backend: &mut Backend,
    feed: impl FnOnce(&mut ProxyState) -> anyhow::Result<()>,
) -> anyhow::Result<Change> {
    backend.kernel().take();
    let start = Instant::now();
    feed(state)?;
    let (snapshot, changes) = state.sync();
    backend.apply(&snapshot, &changes)?;
    let total = start.elapsed();
    drop(snapshot);
    let kernel = backend.kernel().take();
    anyhow::ensure!(
        !changes.full && changes.ports.len() == 1 && kernel.applies == 1,
        "one change: full {}, ports {:?}, {} transactions",
        changes.full,
        changes.ports,
        kernel.applies
    );
    Ok(Change {
        total,
        kernel: kernel.apply,
    })
}

fn median(changes: &mut [Change]) -> Change {
    changes.sort_by_key(|c| c.total);
    changes[changes.len() / 2]
}

/// Periodic full resyncs with nothing changed: no transaction at all. With `foreign`, another
/// table in the namespace is changed before each (as another program would), so the ruleset
/// generation moved and the resync reads the table back and diffs it; without, nobody
/// committed since the proxy's last sync and it plans against its own record.
fn resync(
    args: &Args,
    state: &mut ProxyState,
    backend: &mut Backend,
    foreign: bool,
) -> anyhow::Result<Resync> {
    let mut runs = Vec::new();
    for _ in 0..args.resyncs.max(1) {
        if foreign {
            // Created and deleted in one transaction: a commit every time (re-adding a table
            // that exists is no change, and the kernel does not count it).
            let mut tx = Transaction::new(Family::Ip, "bench-someone-else");
            tx.push(sluice_nft::Op::AddTable { comment: None });
            tx.push(sluice_nft::Op::DeleteTable);
            backend.kernel().inner.apply(&tx)?;
        }
        state.request_periodic_sync();
        backend.kernel().take();
        let start = Instant::now();
        let (snapshot, changes) = state.sync();
        backend.apply(&snapshot, &changes)?;
        let total = start.elapsed();
        drop(snapshot);
        let kernel = backend.kernel().take();
        anyhow::ensure!(changes.full, "a requested full sync was partial");
        runs.push(Resync {
            total,
            read: kernel.read,
            ops_sent: kernel.ops,
        });
    }
    runs.sort_by_key(|r| r.total);
    let mid = runs.len() / 2;
    Ok(runs.swap_remove(mid))
}

/// A node namespace holding the rules between a client pod and a server pod, each on its own
/// veth and /24 (so both directions of every connection cross the node's netfilter hooks);
/// [`Bed::with_outside`] adds a host outside the node, on a third veth.
pub(crate) struct Bed {
    _links: Vec<(Veth, Address, Address, Route)>,
    pub(crate) client: NetNs,
    pub(crate) server: NetNs,
    pub(crate) node: NetNs,
    pub(crate) outside: Option<NetNs>,
}

/// The outside host and the node's address on its link (the node IP NodePorts are reached at).
pub(crate) const OUTSIDE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 1));

impl Bed {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Self::build(false)
    }

    pub(crate) fn with_outside() -> anyhow::Result<Self> {
        Self::build(true)
    }

    fn build(outside: bool) -> anyhow::Result<Self> {
        let node = NetNs::new("nft-node")?;
        node.set_ip_forward(true)?;
        let client = NetNs::new("nft-client")?;
        let server = NetNs::new("nft-server")?;
        let outside = outside.then(|| NetNs::new("nft-out")).transpose()?;
        let mut links = Vec::new();
        let pods = [(&client, CLIENT, "vclient"), (&server, SERVER, "vserver")];
        let hosts = pods
            .into_iter()
            .chain(outside.iter().map(|o| (o, OUTSIDE, "vext")));
        for (pod, (ip, gw), ifname) in hosts {
            let veth = Veth::new(&node, ifname, pod, "eth0")?;
            let node_addr = Address::new(&node, ifname, Ipv4Net::new(gw, 24)?)?;
            let pod_addr = Address::new(pod, "eth0", Ipv4Net::new(ip, 24)?)?;
            let route = Route::via(pod, "default", gw, Some("eth0"))?;
            links.push((veth, node_addr, pod_addr, route));
        }
        Ok(Self {
            _links: links,
            client,
            server,
            node,
            outside,
        })
    }

    /// Echo servers on the server pod's target port and direct port, while held.
    pub(crate) fn servers(&self) -> anyhow::Result<Vec<EchoServer>> {
        [TARGET_PORT, DIRECT_PORT]
            .map(|port| {
                let any = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
                EchoServer::tcp(&self.server, "server", any)
            })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    }

    /// Sequential connections to the VIP and to the pod IP, in alternating rounds.
    pub(crate) fn rates(&self, connections: u32, vip: SocketAddr) -> anyhow::Result<Rates> {
        let pod = SocketAddr::new(SERVER.0.into(), DIRECT_PORT);
        let _servers = self.servers()?;
        let per_round = (connections / ROUNDS).max(1);
        let rounds = self.client.run(|| -> anyhow::Result<Vec<[Duration; 2]>> {
            // Warm up both paths (neighbour entries, the echo thread).
            burst(vip, 50)?;
            burst(pod, 50)?;
            (0..ROUNDS)
                .map(|round| {
                    let mut times = [Duration::ZERO; 2];
                    for k in 0..2 {
                        let which = (k + round as usize) % 2;
                        times[which] = burst([vip, pod][which], per_round)?;
                    }
                    Ok(times)
                })
                .collect()
        })??;
        let total = |i: usize| rounds.iter().map(|r| r[i]).sum::<Duration>().as_secs_f64();
        let connections = f64::from(per_round * ROUNDS);
        // Per-round ratios: a burst of load from elsewhere hits one round, not the median.
        let mut ratios: Vec<f64> = rounds
            .iter()
            .map(|[v, p]| p.as_secs_f64() / v.as_secs_f64().max(1e-9))
            .collect();
        ratios.sort_by(f64::total_cmp);
        Ok(Rates {
            vip: connections / total(0),
            pod: connections / total(1),
            ratio: ratios[ratios.len() / 2],
        })
    }
}

/// `n` sequential TCP connections (connect, read the server's answer, close) to `addr` from
/// this thread's namespace.
pub(crate) fn burst(addr: SocketAddr, n: u32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..n {
        let reply = request_here(Proto::Tcp, addr, REQUEST_TIMEOUT)
            .with_context(|| format!("connection to {addr}"))?;
        anyhow::ensure!(reply.backend == "server", "answered by {}", reply.backend);
    }
    Ok(start.elapsed())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print(args: &Args, sizes: &[Size; 2], resyncs: &[Resync; 2], rates: &[Rates; 2], peak_kib: u64) {
    let [resync, trusted] = resyncs;
    let [large, small] = sizes;
    let [rates, reference] = rates;
    let ms_f = |d: Duration| d.as_secs_f64() * 1000.0;
    let row = |what: &str, large: String, small: String, goal: &str| {
        println!("{what:<52} {large:>12} {small:>10}   {goal}");
    };
    row(
        "",
        format!("{} svc", large.services),
        format!("{} svc", small.services),
        "goal (at the large size)",
    );
    let cold_goal = format!("<= 1500 ms: {}", verdict(ms_f(large.cold.total) <= 1500.0));
    let both = |f: &dyn Fn(&Size) -> String| (f(large), f(small));
    let (l, s) = both(&|z| ms(z.cold.total));
    row("cold full sync into an empty table, ms", l, s, &cold_goal);
    let (l, s) = both(&|z| ms(z.cold.snapshot));
    row(
        "  before it: model snapshot (ProxyState::sync), ms",
        l,
        s,
        "",
    );
    let (l, s) = both(&|z| ms(z.cold.plan()));
    row("  render + diff + plan (proxy), ms", l, s, "");
    let (l, s) = both(&|z| ms(z.cold.kernel.apply));
    row("  kernel apply (netlink transaction), ms", l, s, "");
    let (l, s) = both(&|z| ms(z.cold.kernel.user));
    row("    of which user CPU (encode, answers), ms", l, s, "");
    let (l, s) = both(&|z| ms(z.cold.kernel.system));
    row("    of which kernel CPU (validate, commit), ms", l, s, "");
    let (l, s) = both(&|z| {
        let k = &z.cold.kernel;
        format!("{}/{} in {}", k.ops, k.elements, k.applies)
    });
    row("  ops / elements in transactions (parts)", l, s, "");
    let ratio = large.endpoint_added.total.as_secs_f64()
        / small.endpoint_added.total.as_secs_f64().max(1e-9);
    let change_goal = format!(
        "<= 15 ms: {}",
        verdict(ms_f(large.endpoint_added.total) <= 15.0)
    );
    let (l, s) = both(&|z| ms(z.endpoint_added.total));
    row(
        "one endpoint added to one Service, p50 ms",
        l,
        s,
        &change_goal,
    );
    let (l, s) = both(&|z| ms(z.endpoint_added.kernel));
    row("  of which kernel apply, ms", l, s, "");
    let (l, s) = both(&|z| ms(z.new_service.total));
    row(
        "one new Service, p50 ms",
        l,
        s,
        "kube-proxy nftables: ~141 ms at 10k",
    );
    let (l, s) = both(&|z| ms(z.new_service.kernel));
    row("  of which kernel apply, ms", l, s, "");
    row(
        "endpoint change, large / small (p50)",
        format!("{ratio:.2}x"),
        String::new(),
        &format!("<= 2: {}", verdict(ratio <= 2.0)),
    );
    row(
        "periodic full resync, another table changed, ms",
        ms(resync.total),
        String::new(),
        "",
    );
    row(
        "  of which reading the table back, ms",
        ms(resync.read),
        String::new(),
        "",
    );
    row(
        "  operations sent",
        resync.ops_sent.to_string(),
        String::new(),
        &format!("0: {}", verdict(resync.ops_sent == 0)),
    );
    row(
        "periodic full resync, nobody else committed, ms",
        ms(trusted.total),
        String::new(),
        "",
    );
    row(
        "  of which reading the table back, ms",
        ms(trusted.read),
        String::new(),
        "0 (the generation vouches)",
    );
    let conn_ratio = rates.ratio;
    row(
        "TCP connections/s through the ClusterIP",
        format!("{:.0}", rates.vip),
        String::new(),
        "",
    );
    row(
        "TCP connections/s straight to the pod IP",
        format!("{:.0}", rates.pod),
        String::new(),
        "",
    );
    row(
        "  ClusterIP / pod IP (median of the rounds)",
        format!("{conn_ratio:.3}"),
        String::new(),
        &format!(">= 0.95: {}", verdict(conn_ratio >= 0.95)),
    );
    row(
        "  reference: one hand-written DNAT rule, conn/s",
        format!("{:.0}", reference.vip),
        format!("{:.0}", reference.pod),
        "(VIP, pod IP)",
    );
    row(
        "  reference: ClusterIP / pod IP",
        format!("{:.3}", reference.ratio),
        String::new(),
        "",
    );
    row(
        "peak RSS (VmHWM) of this process, MiB",
        format!("{:.1}", peak_kib as f64 / 1024.0),
        String::new(),
        "",
    );
    println!(
        "\n(changes: medians of {}; a change is feed + snapshot + plan + one partial transaction; \
         connections: {} per destination in {ROUNDS} alternating rounds, client pod -> node -> \
         server pod)",
        args.changes,
        (args.connections / ROUNDS).max(1) * ROUNDS
    );
}
