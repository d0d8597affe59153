//! The table of served resource kinds.
//!
//! Everything kind-specific that the router, discovery and the store need (URL segments, whether
//! objects live in a namespace, short names for kubectl, verbs, subresources) is data here, so a
//! new kind (ConfigMaps, DaemonSets, RBAC…) is one more line in [`RESOURCES`].

/// Verbs of a normal read/write resource, as discovery advertises them.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core (`/api/v1`) group.
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// Plural name used in URLs (`services`).
    pub plural: &'static str,
    /// Singular name for discovery (`service`).
    pub singular: &'static str,
    /// Object kind (`Service`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts (`svc`).
    pub short_names: &'static [&'static str],
    /// Verbs advertised by discovery.
    pub verbs: &'static [&'static str],
    /// Whether a `/status` subresource exists.
    pub has_status: bool,
    /// Discovery categories (`all` makes `kubectl get all` include the kind).
    pub categories: &'static [&'static str],
}

/// Every kind this server serves: group, version, plural, singular, kind, namespaced, short
/// names, has `/status`.
#[rustfmt::skip]
pub const RESOURCES: &[Resource] = &[
    res("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], true),
    res("", "v1", "nodes", "node", "Node", false, &["no"], true),
    res("", "v1", "services", "service", "Service", true, &["svc"], true).in_all(),
    res("", "v1", "pods", "pod", "Pod", true, &["po"], true).in_all(),
    res("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], false),
    res("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false),
    res("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], false),
    res("", "v1", "events", "event", "Event", true, &["ev"], false),
    res("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, &[], false),
    res("events.k8s.io", "v1", "events", "event", "Event", true, &["ev"], false),
    res("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], true).in_all(),
    res("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, &[], false),
    res("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, &[], false),
];

#[expect(
    clippy::too_many_arguments,
    reason = "a positional constructor keeps each table row on one line"
)]
const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        verbs: ALL_VERBS,
        has_status,
        categories: &[],
    }
}

impl Resource {
    /// Puts the kind in the `all` category.
    const fn in_all(mut self) -> Self {
        self.categories = &["all"];
        self
    }

    /// `apiVersion` of objects of this kind (`v1`, `discovery.k8s.io/v1`).
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Looks a kind up by its URL coordinates.
    #[must_use]
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Looks a kind up by `apiVersion` and `kind`, as found in an object.
    #[must_use]
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// Looks a kind up by plural name (`services`, core group first) or by plural and group
    /// (`events.events.k8s.io`), as kubectl spells resources.
    #[must_use]
    pub fn by_plural(plural: &str) -> Option<&'static Resource> {
        if let Some(found) = RESOURCES.iter().find(|r| r.plural == plural) {
            return Some(found);
        }
        let (plural, group) = plural.split_once('.')?;
        RESOURCES
            .iter()
            .find(|r| r.plural == plural && r.group == group)
    }
}

/// The distinct groups (other than core) with their versions, in table order.
#[must_use]
pub(crate) fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(Resource::by_plural("events").map(|r| r.group), Some(""));
        let ev = Resource::by_plural("events.events.k8s.io").unwrap();
        assert_eq!(ev.api_version(), "events.k8s.io/v1");
        assert_eq!(
            Resource::by_kind("discovery.k8s.io/v1", "EndpointSlice").map(|r| r.plural),
            Some("endpointslices")
        );
        assert!(Resource::find("", "v1", "endpointslices").is_none());
        assert_eq!(
            groups(),
            vec![
                ("discovery.k8s.io", vec!["v1"]),
                ("events.k8s.io", vec!["v1"]),
                ("apps", vec!["v1"]),
                ("rbac.authorization.k8s.io", vec!["v1"])
            ]
        );
    }
}
