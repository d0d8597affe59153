//! A kubeconfig pointing at the test server.
//!
//! The daemons and kubectl take `--kubeconfig`, so tests hand them a real file rather than
//! special-casing the server URL. The server speaks plain HTTP; `insecure-skip-tls-verify` is
//! set anyway so that clients which insist on TLS settings do not refuse the file.

/// The kubeconfig YAML for a server at `url`.
#[must_use]
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sluice-test
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: sluice-test
  user: {{}}
contexts:
- name: sluice-test
  context:
    cluster: sluice-test
    user: sluice-test
    namespace: default
current-context: sluice-test
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_as_yaml_with_the_url() {
        let y: serde_yaml::Value =
            serde_yaml::from_str(&super::kubeconfig_yaml("http://127.0.0.1:1")).unwrap();
        assert_eq!(
            y["clusters"][0]["cluster"]["server"].as_str(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(y["current-context"].as_str(), Some("sluice-test"));
    }
}
