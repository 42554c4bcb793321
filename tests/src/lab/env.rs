//! Checks that decide whether the lab can run on this machine at all.

use std::{fmt, path::PathBuf};

/// Why the lab cannot run here. Tests print this and skip.
#[derive(Debug, Clone)]
pub struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Checks the two preconditions that make the lab impossible rather than
/// broken: the privileges to manage network namespaces, and kernel support for
/// creating one.
///
/// Missing `nft`, `tc` or `ip` binaries are not reported here: those are a
/// setup error, and [`Lab::new`](super::Lab::new) fails loudly for them.
pub fn check_environment() -> Result<(), Unavailable> {
    if !cfg!(target_os = "linux") {
        return Err(Unavailable(
            "the NAT lab needs Linux network namespaces".into(),
        ));
    }
    if let Err(e) = patchbay::check_caps() {
        return Err(Unavailable(format!(
            "not running as root ({e}); run the lab as root, e.g. `sudo -E cargo test -p jantar-tests --test lab_nat`"
        )));
    }
    // Create and immediately drop a network namespace on a throwaway thread,
    // so the calling thread keeps its own namespace.
    let probe = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET));
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => Err(Unavailable(format!(
            "cannot create a network namespace: unshare(CLONE_NEWNET) failed with {errno}"
        ))),
        Err(_) => Err(Unavailable(
            "network namespace probe thread panicked".into(),
        )),
    }
}

/// The command-line tools the lab shells out to, with the Debian package that
/// provides each.
const TOOLS: &[(&str, &str)] = &[("nft", "nftables"), ("tc", "iproute2"), ("ip", "iproute2")];

/// Returns an error naming every missing tool and the package to install.
pub(crate) fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| find_tool(tool).is_none())
        .map(|(tool, pkg)| format!("`{tool}` (package {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the NAT lab needs {}; install with `apt-get install -y nftables iproute2`",
            missing.join(", ")
        )
    }
}

/// Finds `tool` on `PATH` or in the sbin directories, which a non-login root
/// shell does not always have on `PATH`.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Program to run for `tool`: the resolved path when found, else the bare name.
pub(crate) fn tool_path(tool: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| PathBuf::from(tool))
}
