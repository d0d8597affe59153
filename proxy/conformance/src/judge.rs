//! Whether what a series of real requests met is what the scenario expects: the right
//! endpoints (pod and target port) and only those, each seeing the source it should; a
//! refusal; silence; or the packet left alone (answered by whatever really has the address,
//! or no route to it). Shared by every runner that sends real traffic: the lab's
//! (`sluice-lab conformance`) and the IPVS mode's single-node run in a User-Mode Linux guest.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use crate::plan;
use crate::{Expect, Masquerade};

/// What one request met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// An echo server answered.
    Answer {
        /// Its name: a pod, `underlay`, or a node's name.
        by: String,
        /// The source address it saw.
        seen: SocketAddr,
        /// The address it was reached at (the port is the target port).
        local: Option<SocketAddr>,
    },
    /// Refused at once: TCP reset or ICMP port unreachable.
    Refused,
    /// No answer in time.
    Timeout,
    /// No route: ICMP host or network unreachable, or none here.
    Unreachable,
    /// Anything else.
    Error(String),
}

impl Seen {
    /// What a failed request's error means.
    pub fn of_error(e: &std::io::Error) -> Self {
        match e.kind() {
            ErrorKind::ConnectionRefused => Self::Refused,
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Self::Timeout,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Self::Unreachable,
            _ => Self::Error(e.to_string()),
        }
    }
}

/// How many requests a packet's check sends: enough that every endpoint of a random choice
/// answers with near certainty (missing one of n in 12·n tries: < n·(1-1/n)^(12n) ≤ 2e-6 for
/// n ≤ 4), one where a single answer decides.
pub fn requests(expect: &Expect) -> usize {
    match expect {
        Expect::Dnat { sticky: true, .. } => 10,
        Expect::Dnat { endpoints, .. } => 12 * endpoints.len().max(1),
        _ => 1,
    }
}

/// What a client can observe of `expect` for a packet from `src` that met `node`'s rules. A
/// DNAT that keeps the source makes the endpoint answer that source directly; from an
/// endpoint on another node the answer comes back through `node` (which reverses the DNAT)
/// only when the source is one of `node`'s addresses or pods — otherwise it reaches the client
/// from the endpoint's own address, or goes nowhere, and the client sees silence (kube-proxy's
/// IPVS mode sending an outside client's Local-policy traffic to remote endpoints,
/// kubernetes/kubernetes#97081). When no endpoint's answer can come back, that is
/// [`Expect::Drop`]; otherwise `expect` as it is.
pub fn observable(expect: &Expect, src: IpAddr, node: &plan::NodePlan) -> Expect {
    let Expect::Dnat {
        endpoints,
        masquerade: Masquerade::No | Masquerade::Hairpin,
        ..
    } = expect
    else {
        return expect.clone();
    };
    let returns_here = node.addresses().contains(&src)
        || node.pod_cidr().contains(&src)
        || node.pod_cidr6().contains(&src);
    let remote = |ep: &SocketAddr| plan::pod_at(ep.ip()).is_some_and(|p| p.node != node.name);
    match !returns_here && endpoints.iter().all(remote) {
        true => Expect::Drop,
        false => expect.clone(),
    }
}

/// `Ok(words)` when `seen` is what `expect` says for a packet from `src`, else `Err(words)`.
pub fn judge(expect: &Expect, src: IpAddr, seen: &[Seen]) -> Result<String, String> {
    match expect {
        Expect::Dnat {
            endpoints,
            masquerade,
            sticky,
        } => dnat(endpoints, *masquerade, *sticky, src, seen),
        Expect::Reject => all(seen, "refused", |s| *s == Seen::Refused),
        Expect::Drop => all(seen, "no answer", |s| *s == Seen::Timeout),
        Expect::Untouched => all(seen, "left alone", |s| match s {
            Seen::Answer { by, .. } => plan::pod(by).is_none(),
            Seen::Unreachable => true,
            _ => false,
        }),
    }
}

fn all(seen: &[Seen], what: &str, ok: impl Fn(&Seen) -> bool) -> Result<String, String> {
    match seen.iter().find(|s| !ok(s)) {
        None => Ok(format!("{what} ({})", describe(&seen[0]))),
        Some(bad) => Err(describe(bad)),
    }
}

fn dnat(
    endpoints: &[SocketAddr],
    masquerade: Masquerade,
    sticky: bool,
    src: IpAddr,
    seen: &[Seen],
) -> Result<String, String> {
    let mut answered = BTreeSet::new();
    let mut sources = BTreeSet::new();
    for s in seen {
        let Seen::Answer { by, seen, local } = s else {
            return Err(describe(s));
        };
        let Some(pod) = plan::pod(by) else {
            return Err(format!("answered by {by}, not a pod"));
        };
        let port = local.map_or(0, |l| l.port());
        let endpoint = SocketAddr::new(pod.ip.into(), port);
        if !endpoints.contains(&endpoint) {
            return Err(format!("answered by {by} on port {port}"));
        }
        let kept = seen.ip() == src;
        let want_kept = match masquerade {
            Masquerade::No => true,
            Masquerade::Yes => false,
            Masquerade::Hairpin => IpAddr::from(pod.ip) != src,
        };
        if kept != want_kept {
            let did = if kept { "kept" } else { "masqueraded to" };
            return Err(format!("{by} saw {} ({did} source)", seen.ip()));
        }
        answered.insert(endpoint);
        sources.insert(seen.ip());
    }
    let n = seen.len();
    let summary = format!("{n}/{n} by {}; saw {}", list(&answered), list(&sources));
    match sticky {
        true if answered.len() == 1 => Ok(summary),
        true => Err(format!("not sticky: {summary}")),
        false if answered.len() == endpoints.len() => Ok(summary),
        false => Err(format!("not every endpoint answered: {summary}")),
    }
}

fn list<T: ToString>(items: &BTreeSet<T>) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    v.join(" ")
}

/// One observation in a few words.
pub fn describe(s: &Seen) -> String {
    match s {
        Seen::Answer { by, seen, .. } => format!("answered by {by}, saw {}", seen.ip()),
        Seen::Refused => "refused".into(),
        Seen::Timeout => "no answer".into(),
        Seen::Unreachable => "unreachable".into(),
        Seen::Error(e) => format!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(by: &str, seen: &str, port: u16) -> Seen {
        Seen::Answer {
            by: by.into(),
            seen: format!("{seen}:40000").parse().unwrap(),
            local: Some(SocketAddr::new("0.0.0.0".parse().unwrap(), port)),
        }
    }

    #[test]
    fn dnat_needs_every_endpoint_the_right_port_and_source() {
        let eps: Vec<SocketAddr> = vec![
            "10.244.1.2:8080".parse().unwrap(),
            "10.244.2.2:8080".parse().unwrap(),
        ];
        let want = Expect::Dnat {
            endpoints: eps,
            masquerade: Masquerade::No,
            sticky: false,
        };
        let src: IpAddr = "10.244.1.3".parse().unwrap();
        let good = [
            answer("web-1", "10.244.1.3", 8080),
            answer("web-3", "10.244.1.3", 8080),
        ];
        assert!(judge(&want, src, &good).is_ok());
        assert!(
            judge(&want, src, &good[..1]).is_err(),
            "web-3 never answered"
        );
        let masqueraded = [
            answer("web-1", "10.244.1.1", 8080),
            answer("web-3", "10.244.1.3", 8080),
        ];
        assert!(judge(&want, src, &masqueraded).is_err());
        let wrong_port = [
            answer("web-1", "10.244.1.3", 8081),
            answer("web-3", "10.244.1.3", 8080),
        ];
        assert!(judge(&want, src, &wrong_port).is_err());
        assert!(judge(&want, src, &[answer("underlay", "10.244.1.3", 8080)]).is_err());
        assert!(judge(&want, src, &[Seen::Timeout]).is_err());
    }

    #[test]
    fn an_unmasqueraded_answer_from_another_node_reaches_only_sources_behind_this_node() {
        let node1 = plan::node("node1").unwrap();
        let remote = Expect::Dnat {
            endpoints: vec!["10.244.2.2:8080".parse().unwrap()],
            masquerade: Masquerade::No,
            sticky: false,
        };
        let client: IpAddr = plan::CLIENT.into();
        assert_eq!(observable(&remote, client, node1), Expect::Drop);
        let vip: IpAddr = "203.0.113.60".parse().unwrap();
        assert_eq!(observable(&remote, vip, node1), Expect::Drop);
        for here in ["10.244.1.2", "192.168.0.11"] {
            let src: IpAddr = here.parse().unwrap();
            assert_eq!(observable(&remote, src, node1), remote);
        }
        let local = Expect::Dnat {
            endpoints: vec!["10.244.1.2:8080".parse().unwrap()],
            masquerade: Masquerade::No,
            sticky: false,
        };
        assert_eq!(observable(&local, client, node1), local);
        let masqueraded = Expect::Dnat {
            endpoints: vec!["10.244.2.2:8080".parse().unwrap()],
            masquerade: Masquerade::Yes,
            sticky: false,
        };
        assert_eq!(observable(&masqueraded, client, node1), masqueraded);
    }

    #[test]
    fn refusals_silence_and_untouched_are_told_apart() {
        let src: IpAddr = "10.244.1.3".parse().unwrap();
        assert!(judge(&Expect::Reject, src, &[Seen::Refused]).is_ok());
        assert!(judge(&Expect::Reject, src, &[Seen::Timeout]).is_err());
        assert!(judge(&Expect::Drop, src, &[Seen::Timeout]).is_ok());
        assert!(judge(&Expect::Drop, src, &[Seen::Refused]).is_err());
        let sink = answer("underlay", "10.244.1.3", 81);
        assert!(judge(&Expect::Untouched, src, &[sink]).is_ok());
        assert!(judge(&Expect::Untouched, src, &[Seen::Unreachable]).is_ok());
        assert!(
            judge(
                &Expect::Untouched,
                src,
                &[answer("web-1", "10.244.1.3", 8080)]
            )
            .is_err()
        );
        assert!(judge(&Expect::Untouched, src, &[Seen::Refused]).is_err());
    }
}
