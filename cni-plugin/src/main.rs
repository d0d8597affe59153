//! `sluice`: the CNI plugin binary. All behaviour is in the library's `run`; this reads the
//! environment and stdin (at most 1 MiB: a config is a few KiB), prints the result or the
//! spec error JSON on stdout, and exits 1 on errors, as the reference plugins do. `sluice install …` is the init container's installer.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("install") => return install(&args[1..]),
        // Runtimes never pass arguments; a person asking which build this is does.
        Some("--version") => {
            println!(
                "sluice {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("SLUICE_REVISION")
            );
            return ExitCode::SUCCESS;
        }
        // The detached half of DEL (runtimes never pass arguments).
        Some("reap-link") => {
            let index = args.get(1).and_then(|i| i.parse().ok());
            return match index.map(sluice_cni::reap_link) {
                Some(Ok(())) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            };
        }
        _ => {}
    }
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_"))
        .collect();
    let read = sluice_model::bounded::read_to_end(std::io::stdin(), sluice_cni::config::MAX_BYTES);
    let outcome = match read {
        Ok(stdin) => sluice_cni::run_with(&vars, &stdin, &teardown()),
        Err(e) => sluice_cni::Outcome {
            stdout: sluice_cni::error::CniError::new(
                sluice_cni::error::Code::Io,
                "cannot read stdin",
            )
            .with_details(e.to_string())
            .to_json(sluice_cni::version::LATEST),
            failed: true,
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    if outcome.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `sluice install …`: the init container's atomic install (runtimes never pass arguments).
fn install(args: &[String]) -> ExitCode {
    let result = sluice_cni::install::Install::from_args(args)
        .and_then(|i| i.run().map_err(|e| e.to_string()));
    match result {
        Ok(paths) => {
            for p in paths {
                println!("installed {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice install: {e}");
            ExitCode::FAILURE
        }
    }
}

/// DEL hands the kernel's slow device teardown to a detached copy of this binary.
fn teardown() -> sluice_cni::Teardown {
    match std::env::current_exe() {
        Ok(exe) => sluice_cni::Teardown::Detached(exe),
        Err(_) => sluice_cni::Teardown::Wait,
    }
}
