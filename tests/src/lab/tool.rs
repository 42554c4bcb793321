//! Running short command-line tools (`nft`, `tc`, `ip`) inside a namespace.

use std::{process::Output, time::Duration};

use anyhow::{Context, Result, bail};

/// Time allowed for one tool invocation.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The namespace to run a tool in.
#[derive(Clone, Copy)]
pub(crate) enum Ns<'a> {
    Device(&'a patchbay::Device),
    Router(&'a patchbay::Router),
    Ix(&'a patchbay::Ix),
}

impl Ns<'_> {
    fn label(&self) -> String {
        match self {
            Ns::Device(d) => d.name().to_string(),
            Ns::Router(r) => r.name().to_string(),
            Ns::Ix(_) => "exchange".to_string(),
        }
    }
}

/// Runs `tool args...` inside `ns` and returns its output, whatever its exit
/// status. The child is forked on the namespace's own runtime thread, so it
/// lives in that namespace, and is killed if it outlasts [`TOOL_TIMEOUT`].
pub(crate) async fn run(ns: Ns<'_>, tool: &str, args: &[&str]) -> Result<Output> {
    let what = format!("`{tool} {}` in {}", args.join(" "), ns.label());
    let mut cmd = tokio::process::Command::new(super::env::tool_path(tool));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let fut = async move { cmd.output().await };
    let handle = match ns {
        Ns::Device(d) => d.spawn(move |_| fut)?,
        Ns::Router(r) => r.spawn(move |_| fut)?,
        Ns::Ix(ix) => ix.spawn(move |_| fut),
    };
    let abort = handle.abort_handle();
    match tokio::time::timeout(TOOL_TIMEOUT, handle).await {
        Ok(joined) => joined
            .with_context(|| format!("{what}: task failed"))?
            .with_context(|| format!("{what}: could not run")),
        Err(_) => {
            abort.abort();
            bail!("{what}: no result within {TOOL_TIMEOUT:?}")
        }
    }
}

/// Like [`run`], but fails when the tool exits non-zero; returns stdout.
pub(crate) async fn run_ok(ns: Ns<'_>, tool: &str, args: &[&str]) -> Result<String> {
    let out = run(ns, tool, args).await?;
    if !out.status.success() {
        bail!(
            "`{tool} {}` in {} exited with {}: {}",
            args.join(" "),
            ns.label(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
