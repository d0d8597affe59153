//! `--kubeconfig-file`, read with a size cap.
//!
//! kube's own `Kubeconfig::read_from` reads the whole file, whatever it is; pointed at a FIFO
//! it blocks the daemon forever, at a huge file it fills memory. So the file is read here
//! through the shared capped reader and parsed from text, and the relative paths in it are
//! made absolute against its directory exactly as `read_from` does (and client-go: exec
//! commands only when they contain a path separator).

use std::path::Path;

use anyhow::Context;
use kube::config::Kubeconfig;

/// Well above a kubeconfig with embedded certificates for several clusters.
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// Reads and parses the kubeconfig at `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<Kubeconfig> {
    let text = sluice_model::bounded::read_to_string(path, MAX_BYTES)
        .with_context(|| format!("read kubeconfig {}", path.display()))?;
    let mut config = Kubeconfig::from_yaml(&text)
        .with_context(|| format!("parse kubeconfig {}", path.display()))?;
    if let Some(dir) = path.parent() {
        absolutize(&mut config, dir);
    }
    Ok(config)
}

fn absolutize(config: &mut Kubeconfig, dir: &Path) {
    let fix = |field: &mut Option<String>| {
        if let Some(p) = field.as_deref()
            && Path::new(p).is_relative()
            && let Some(abs) = dir.join(p).to_str()
        {
            *field = Some(abs.to_owned());
        }
    };
    for cluster in config
        .clusters
        .iter_mut()
        .filter_map(|n| n.cluster.as_mut())
    {
        fix(&mut cluster.certificate_authority);
    }
    for auth in config
        .auth_infos
        .iter_mut()
        .filter_map(|n| n.auth_info.as_mut())
    {
        fix(&mut auth.client_certificate);
        fix(&mut auth.client_key);
        fix(&mut auth.token_file);
        if let Some(exec) = auth.exec.as_mut()
            && exec
                .command
                .as_deref()
                .is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
        {
            fix(&mut exec.command);
        }
    }
}
