//! A node whose task dies ends its process: exit status 1 and an error line naming the
//! task and the cause, so that systemd (`Restart=on-failure`) and container health
//! checks act. The tasks are made to die with the binaries' fail points
//! (`FAILPOINTS=...`, compiled into the workspace's test builds).

use std::time::Duration;

use anyhow::{Result, ensure};
use jantar_tests::harness::{Node, Role};
use serde_json::Value;

const PEER: &str = "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n";

/// The error line the supervisor writes when a task dies.
fn task_failure(node: &Node) -> Option<Value> {
    node.log_lines()
        .into_iter()
        .find(|v| v["message"] == "a node task failed; stopped the others")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_event_loop_ends_the_process_with_status_1() -> Result<()> {
    let d = tempfile::tempdir()?;
    // The event loop panics on the first command it handles.
    let mut node = Node::start_with_env(
        d.path(),
        "p",
        Role::Peer,
        PEER,
        &[("FAILPOINTS", "node::command=panic(injected fault)")],
    )
    .await?;
    node.wait_ready(Duration::from_secs(30)).await?;
    // `/status` is a command: the loop dies handling it, and the request is not answered.
    let (code, body) = node.get("/status").await.unwrap_or((0, String::new()));
    ensure!(code != 200, "status answered by a dead event loop: {body}");
    let status = node.wait_exit(Duration::from_secs(15)).await?;
    ensure!(
        status.code() == Some(1),
        "exit status {status}, expected 1\n{}",
        node.log_tail(30)
    );
    let line = task_failure(&node);
    ensure!(
        line.as_ref().is_some_and(|v| v["task"] == "event loop"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("panicked: injected fault"))),
        "no error line naming the event loop and the panic: {line:?}\n{}",
        node.log_tail(30)
    );
    let tail = node.log_tail(10);
    ensure!(
        tail.contains(
            "jantar-peer: the node's event loop task failed: it panicked: injected fault"
        ),
        "no error on stderr naming the task:\n{tail}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_admin_endpoint_ends_the_process_with_status_1() -> Result<()> {
    let d = tempfile::tempdir()?;
    // The admin endpoint's task returns an error as soon as it starts serving.
    let mut node = Node::start_with_env(
        d.path(),
        "p",
        Role::Peer,
        PEER,
        &[("FAILPOINTS", "admin::serve=return")],
    )
    .await?;
    let status = node.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.code() == Some(1),
        "exit status {status}, expected 1\n{}",
        node.log_tail(30)
    );
    let line = task_failure(&node);
    ensure!(
        line.as_ref().is_some_and(|v| v["task"] == "admin endpoint"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("injected fault"))),
        "no error line naming the admin endpoint: {line:?}\n{}",
        node.log_tail(30)
    );
    // The event loop was shut down cleanly, not left running.
    ensure!(
        node.log_lines()
            .iter()
            .any(|v| v["message"] == "shutting down"),
        "the event loop was not shut down:\n{}",
        node.log_tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_points_a_node_runs_and_stops_cleanly() -> Result<()> {
    // The same start-up without FAILPOINTS: the test above proves the fault, not the
    // harness.
    let d = tempfile::tempdir()?;
    let mut node = Node::start(d.path(), "p", Role::Peer, PEER).await?;
    node.wait_ready(Duration::from_secs(30)).await?;
    ensure!(node.get("/status").await?.0 == 200);
    let (status, _) = node.terminate(Duration::from_secs(12)).await?;
    ensure!(status.success(), "{status}\n{}", node.log_tail(20));
    ensure!(task_failure(&node).is_none());
    Ok(())
}
