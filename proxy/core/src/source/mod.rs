//! Where Services, EndpointSlices and this node's Node come from: the
//! Kubernetes API ([`KubeSource`]) or a directory of manifests
//! ([`ManifestsSource`], `--manifests-dir`). Both only feed a
//! [`Feed`](crate::runner::Feed); the model, the sync loop and the backends
//! cannot tell them apart, which is what lets tests and benchmarks run the
//! real pipeline without a cluster.
//!
//! Both sources mark the initial Service and EndpointSlice lists complete
//! only once they are ([`Feed::services_listed`](crate::runner::Feed::services_listed),
//! [`Feed::slices_listed`](crate::runner::Feed::slices_listed)); the runner
//! programs nothing before.

mod kube;
mod manifests;
mod reflect;

use std::path::PathBuf;

pub use self::kube::{KubeSource, client, fetch_node};
pub use manifests::{FileProblem, ManifestsSource, Object, Parsed, ScanReport, WatchMode, parse};

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file, or `<default>` for the inferred configuration.
        path: String,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API client could not be built.
    #[error("kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
    /// The manifests directory cannot be read.
    #[error("manifests directory {path}: {source}")]
    ManifestsDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}
