//! The lab's client for its own API server, over plain HTTP: `up` registers Nodes and Pods
//! and the demo flips a pod's readiness, all from processes other than the lab daemon that
//! holds the store. Paths are the real Kubernetes ones, so this is what any client does.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use sluice_testbed::http;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The API server at one address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Api {
    addr: SocketAddr,
}

impl Api {
    /// From a URL `http://IP:PORT`.
    pub(crate) fn from_url(url: &str) -> anyhow::Result<Self> {
        let host = url
            .strip_prefix("http://")
            .with_context(|| format!("API URL {url} is not http://"))?;
        let addr = host
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("API URL {url}"))?;
        Ok(Self { addr })
    }

    /// POSTs `obj` to the collection at `path`.
    pub(crate) fn create(&self, path: &str, obj: &Value) -> anyhow::Result<Value> {
        self.call("POST", path, Some(obj))
    }

    /// GETs `path`.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, None)
    }

    /// PUTs `obj` to `path` (an object or its `/status`).
    pub(crate) fn put(&self, path: &str, obj: &Value) -> anyhow::Result<Value> {
        self.call("PUT", path, Some(obj))
    }

    /// DELETEs the object at `path`.
    pub(crate) fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &str, path: &str, obj: Option<&Value>) -> anyhow::Result<Value> {
        let body = obj.map(Value::to_string);
        let resp = http::request(self.addr, method, path, body.as_deref(), TIMEOUT)?;
        if !(200..300).contains(&resp.status) {
            let msg = serde_json::from_str::<Value>(&resp.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(resp.body);
            bail!("{method} {path}: {} {msg}", resp.status);
        }
        serde_json::from_str(&resp.body).with_context(|| format!("{method} {path}: body"))
    }
}

/// Now, as the API's timestamps are written (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
