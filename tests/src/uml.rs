//! A kernel with IPVS and `dummy` links for tests, on a machine whose own kernel has neither:
//! Debian's User-Mode Linux kernel (a Linux kernel running as an ordinary host process, about
//! 2–4 s per boot), prepared by `scripts/setup` (see `tests/README-uml.md`).
//!
//! A [`Uml`] boots the guest, runs one bash script in it with the host's `/usr` and the
//! directories the test names mounted read-only at their host paths, and returns the script's
//! exit status and output. The guest has only its own loopback (plus the links the script
//! makes): nothing it does reaches the host's network. The guest's processes run in their own
//! process group, killed when the run ends, times out, or the test panics.
//!
//! [`Uml::run_test`] re-runs one test of the calling test binary inside the guest, so a
//! kernel test is ordinary Rust on both sides: `if uml::in_guest() { guest part } else {
//! boot and check the result }`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Where `scripts/setup` prepares the kernel and initramfs (`SLUICE_UML_DIR` overrides).
pub const DEFAULT_DIR: &str = "/var/cache/sluice/uml";

/// The environment variable set inside the guest by [`Uml::run_test`].
pub const IN_GUEST: &str = "SLUICE_IN_UML";

/// Whether this process runs inside the guest (started by [`Uml::run_test`]).
pub fn in_guest() -> bool {
    std::env::var_os(IN_GUEST).is_some_and(|v| v == "1")
}

/// How a guest run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The script's exit status.
    pub status: i32,
    /// What the script printed (stdout and stderr).
    pub output: String,
    /// How long the boot, the script and the power-off took.
    pub elapsed: Duration,
}

impl Outcome {
    /// Panics with the guest's output unless the script exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.status == 0,
            "guest script exited {}; its output:\n{}",
            self.status,
            self.output
        );
    }
}

/// A User-Mode Linux guest to run scripts in.
#[derive(Clone, Debug)]
pub struct Uml {
    kernel: PathBuf,
    initrd: PathBuf,
    mem: String,
    timeout: Duration,
    ro: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Uml {
    /// The kernel and initramfs `scripts/setup` prepared; an error saying to run it when
    /// they are missing.
    pub fn find() -> Result<Self> {
        let dir = std::env::var_os("SLUICE_UML_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        let (kernel, initrd) = (dir.join("linux"), dir.join("initrd.gz"));
        if !kernel.exists() || !initrd.exists() {
            return Err(Error::Invalid {
                op: "find the User-Mode Linux kernel".into(),
                detail: format!(
                    "{} or {} missing: run scripts/setup (as root)",
                    kernel.display(),
                    initrd.display()
                ),
            });
        }
        let mut uml = Self {
            kernel,
            initrd,
            mem: "384M".into(),
            timeout: Duration::from_secs(120),
            ro: Vec::new(),
            env: Vec::new(),
        };
        if let Some(ws) = workspace_root() {
            uml.ro.push(ws);
        }
        Ok(uml)
    }

    /// Also mounts host directory `dir` (read-only, at the same path) in the guest.
    pub fn expose(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ro.push(dir.into());
        self
    }

    /// Sets `key=value` in the guest script's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The longest a run may take (boot included) before the guest is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The guest's memory (`mem=`, e.g. `384M`).
    pub fn mem(mut self, mem: &str) -> Self {
        self.mem = mem.into();
        self
    }

    /// Runs `script` with the host's bash inside a fresh guest.
    pub fn run_script(&self, script: &str) -> Result<Outcome> {
        let out = tempfile::Builder::new()
            .prefix("sl-uml-")
            .tempdir()
            .map_err(|e| Error::io("create the guest's output dir", e))?;
        let dir = out.path();
        let mut text = String::from("cd /\n");
        for (k, v) in &self.env {
            text.push_str(&format!("export {k}={}\n", quote(v)));
        }
        text.push_str(script);
        text.push('\n');
        write(&dir.join("run.sh"), &text)?;
        let mut ro: Vec<String> = (self.ro.iter())
            .filter(|d| d.is_dir())
            .map(|d| d.display().to_string())
            .collect();
        ro.dedup();
        for path in ro.iter().chain([&dir.display().to_string()]) {
            if path.contains([',', ' ', '"', '\'']) {
                return Err(Error::Invalid {
                    op: "boot the User-Mode Linux guest".into(),
                    detail: format!("path {path:?} cannot be passed on the kernel command line"),
                });
            }
        }
        let umid = format!(
            "sl{}x{}",
            std::process::id(),
            dir.file_name().map_or_else(String::new, |n| n
                .to_string_lossy()
                .trim_start_matches("sl-uml-")
                .to_owned())
        );
        let console = std::fs::File::create(dir.join("console"))
            .map_err(|e| Error::io("create the guest's console log", e))?;
        let console_err = console
            .try_clone()
            .map_err(|e| Error::io("clone the guest's console log", e))?;
        let mut cmd = Command::new(&self.kernel);
        cmd.arg(format!("mem={}", self.mem))
            .arg(format!("initrd={}", self.initrd.display()))
            .args(["con=null", "con0=fd:0,fd:1", "panic=-1", "quiet"])
            .arg(format!("umid={umid}"))
            .arg(format!("uml_dir={}", dir.display()))
            .arg(format!("sluice_out={}", dir.display()))
            .arg(format!("sluice_ro={}", ro.join(",")))
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("start {}", self.kernel.display()), e))?;
        let mut guard = Guest { child: Some(child) };
        let exited = guard.wait(self.timeout)?;
        let elapsed = start.elapsed();
        let output = std::fs::read_to_string(dir.join("output")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match (exited, status) {
            (true, Some(status)) => Ok(Outcome {
                status,
                output,
                elapsed,
            }),
            (exited, _) => {
                let console = std::fs::read_to_string(dir.join("console")).unwrap_or_default();
                let why = match exited {
                    true => "the guest stopped without the script's exit status",
                    false => "the guest did not finish in time (killed)",
                };
                Err(Error::Protocol {
                    op: "run a script in User-Mode Linux".into(),
                    detail: format!(
                        "{why} after {} ms\n--- script output ---\n{output}\n--- console ---\n{}",
                        elapsed.as_millis(),
                        tail(&console, 40)
                    ),
                })
            }
        }
    }

    /// Runs `program args…` inside a fresh guest.
    pub fn run(&self, program: &Path, args: &[&str]) -> Result<Outcome> {
        let mut line = quote(&program.display().to_string());
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        self.run_script(&line)
    }

    /// Runs the test `name` (its full path in the calling test binary, e.g.
    /// `ipvs::clusterip`) of the current test binary inside a fresh guest, with
    /// [`IN_GUEST`] set; the test's guest part runs there, single-threaded.
    pub fn run_test(&self, name: &str) -> Result<Outcome> {
        let exe = std::env::current_exe().map_err(|e| Error::io("find the test binary", e))?;
        let mut uml = self.clone().env(IN_GUEST, "1").env("RUST_BACKTRACE", "1");
        if let Some(dir) = exe.parent() {
            uml = uml.expose(dir);
        }
        uml.run(
            &exe,
            &[
                "--exact",
                name,
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ],
        )
    }
}

/// The running guest: its process group is killed and reaped on drop.
struct Guest {
    child: Option<Child>,
}

impl Guest {
    /// Waits at most `timeout` for the guest to power off; `false` when it was killed.
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Ok(true);
        };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.kill();
                    return Ok(true);
                }
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    return Ok(false);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io("wait for the guest", e)),
            }
        }
    }

    /// Kills what is left of the guest's process group and reaps the kernel process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            // The guest's other host processes (one per guest process) die with the group;
            // wait, bounded, until none is left so the test ends with nothing running.
            let deadline = Instant::now() + Duration::from_secs(5);
            while killpg(pgid, None).is_ok() && Instant::now() < deadline {
                let _ = killpg(pgid, Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workspace root of the test bed (the guest sees the sources and the built binaries).
fn workspace_root() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// `s` single-quoted for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_bash() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
