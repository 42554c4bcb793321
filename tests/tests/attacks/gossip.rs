//! Gossip floods: valid, signed messages from one sender as fast as it can publish.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use jantar_tests::harness::{LoopbackNet, Node};

use crate::{READY, memory_bounded};

/// `from`'s messages that `node` has received.
async fn messages_from(node: &Node, from: &str) -> Result<Vec<String>> {
    let v = node.get_json("/messages").await?;
    Ok(v.as_array()
        .context("/messages is not a list")?
        .iter()
        .filter(|m| m["from"] == from)
        .filter_map(|m| m["text"].as_str().map(str::to_string))
        .collect())
}

/// A peer that publishes valid, signed messages as fast as it can: its receivers take no
/// more than its rate, do not forward the rest, and still hear an honest peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_flood_is_held_to_the_senders_rate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let mut alice = net.peer("alice", "").await?;
    let bob = net.peer("bob", "").await?;
    let mallory = net.peer("mallory", "").await?;
    let result = gossip_flood(&mut alice, &bob, &mallory).await;
    if result.is_err() {
        eprintln!(
            "{}",
            jantar_tests::harness::diagnose_all(&[&alice, &bob, &mallory]).await
        );
    }
    result
}

async fn gossip_flood(alice: &mut Node, bob: &Node, mallory: &Node) -> Result<()> {
    // The mesh is up once alice hears both of them.
    for (who, text) in [(mallory, "hello from mallory"), (bob, "hello from bob")] {
        alice
            .wait_until(
                READY,
                &format!("{}'s first message", who.name),
                async |a: &Node| {
                    let _ = who
                        .post_json_body("/messages", &serde_json::json!({"text": text}))
                        .await;
                    Ok(!messages_from(a, &who.peer_id).await?.is_empty())
                },
            )
            .await?;
    }
    let before = alice.memory()?;
    // 400 messages from mallory, as fast as its admin endpoint takes them (the
    // default rate is 30 per minute per sender).
    for i in 0..400 {
        let (code, body) = mallory
            .post_json_body(
                "/messages",
                &serde_json::json!({"text": format!("spam {i}")}),
            )
            .await?;
        ensure!(code == 200, "mallory's send {i}: {code} {body}");
    }
    let honest = "bob, after the flood";
    bob.post_json_body("/messages", &serde_json::json!({"text": honest}))
        .await?;
    alice
        .wait_until(READY, "bob's message after the flood", async |a: &Node| {
            Ok(messages_from(a, &bob.peer_id)
                .await?
                .iter()
                .any(|t| t == honest))
        })
        .await?;
    // Let whatever mallory's flood still has in flight arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in [&*alice, bob] {
        let spam = messages_from(node, &mallory.peer_id).await?.len();
        // 30 at once, refilled at one per 2 s while the test runs, plus the greeting.
        ensure!(
            spam <= 30 + 20,
            "{} took {spam} of mallory's 400 messages",
            node.name
        );
        let metrics = node.metrics().await?;
        let over = metrics
            .lines()
            .find(|l| l.starts_with("jantar_gossip_messages_total") && l.contains("over_rate"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        ensure!(over > 0.0, "{} counted no over-rate messages", node.name);
        eprintln!(
            "{}: took {spam} of mallory's 401 messages, {over} over rate",
            node.name
        );
    }
    memory_bounded(alice, before)?;
    Ok(())
}
