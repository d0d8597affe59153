//! STATUS: ready to serve ADD only once the overlay has written subnet.env. Answering code 50
//! until then lets the runtime stop scheduling pods onto a node whose overlay is not up —
//! flannel's most reported failure is pods failing one by one with "open
//! /run/flannel/subnet.env: no such file or directory" instead.

use sluice_model::subnet_env::SubnetEnv;

use crate::config::NetConf;
use crate::error::{CniError, Code};

/// `Ok` when subnet.env is present and valid; code 50 naming the file and the problem.
pub(crate) fn status(conf: &NetConf) -> Result<(), CniError> {
    let path = conf.subnet_file();
    SubnetEnv::read(&path).map(drop).map_err(|e| {
        CniError::new(
            Code::NotAvailable,
            "the pod network is not ready on this node",
        )
        .with_details(format!("{e} (is the overlay daemon running?)"))
    })
}
