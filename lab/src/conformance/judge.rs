//! Whether what a series of real requests met is what the scenario expects: the right
//! endpoints (pod and target port) and only those, each seeing the source it should; a
//! refusal; silence; or the packet left alone (answered by whatever really has the address,
//! or no route to it).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use sluice_conformance::plan;
use sluice_conformance::{Expect, Masquerade};

use super::probe::Seen;

/// How many requests a packet's check sends: enough that every endpoint of a random choice
/// answers with near certainty (missing one of n in 12·n tries: < n·(1-1/n)^(12n) ≤ 2e-6 for
/// n ≤ 4), one where a single answer decides.
pub(crate) fn requests(expect: &Expect) -> usize {
    match expect {
        Expect::Dnat { sticky: true, .. } => 10,
        Expect::Dnat { endpoints, .. } => 12 * endpoints.len().max(1),
        _ => 1,
    }
}

/// `Ok(words)` when `seen` is what `expect` says for a packet from `src`, else `Err(words)`.
pub(crate) fn judge(expect: &Expect, src: IpAddr, seen: &[Seen]) -> Result<String, String> {
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
pub(crate) fn describe(s: &Seen) -> String {
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
