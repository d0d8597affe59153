//! Which Services and EndpointSlices a proxy watches at all. kube-proxy filters
//! in the informers' label selector, so objects owned by another proxy
//! implementation (`service.kubernetes.io/service-proxy-name`) or headless ones
//! never reach it; Sluice must ignore exactly the same objects or two proxies
//! would fight over one Service.

use std::collections::BTreeMap;

/// Set on Services (and their slices) served by another proxy implementation.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Set by the EndpointSlice controller on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The label selector for the Service and EndpointSlice informers: no
/// proxy-name label (or, with `proxy_name`, exactly that one) and not headless.
pub fn proxy_label_selector(proxy_name: Option<&str>) -> String {
    match proxy_name.filter(|name| !name.is_empty()) {
        Some(name) => format!("{SERVICE_PROXY_NAME_LABEL}={name},!{HEADLESS_LABEL}"),
        None => format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"),
    }
}

/// Whether an object with `labels` matches [`proxy_label_selector`].
pub fn is_proxied(labels: Option<&BTreeMap<String, String>>, proxy_name: Option<&str>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let owner_ok = match proxy_name.filter(|name| !name.is_empty()) {
        Some(name) => get(SERVICE_PROXY_NAME_LABEL) == Some(name),
        None => get(SERVICE_PROXY_NAME_LABEL).is_none(),
    };
    owner_ok && get(HEADLESS_LABEL).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selector_text() {
        assert_eq!(
            proxy_label_selector(None),
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        );
        assert_eq!(
            proxy_label_selector(Some("sluice")),
            "service.kubernetes.io/service-proxy-name=sluice,!service.kubernetes.io/headless"
        );
    }

    #[test]
    fn matching() {
        assert!(is_proxied(None, None));
        assert!(is_proxied(Some(&labels(&[("app", "x")])), None));
        let other = labels(&[(SERVICE_PROXY_NAME_LABEL, "cilium")]);
        assert!(!is_proxied(Some(&other), None));
        assert!(!is_proxied(Some(&other), Some("sluice")));
        assert!(is_proxied(
            Some(&labels(&[(SERVICE_PROXY_NAME_LABEL, "sluice")])),
            Some("sluice")
        ));
        assert!(!is_proxied(Some(&labels(&[(HEADLESS_LABEL, "")])), None));
    }
}
