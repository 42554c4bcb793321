//! The admin endpoint against a web page in the user's browser: cross-site requests,
//! DNS rebinding, guessed tokens and oversized bodies.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use jantar_tests::harness::{LoopbackNet, Node};
use reqwest::{Method, header};

use crate::{READY, memory_bounded};

/// One request a web page (or a rebound name) can make the user's browser send.
struct Forged {
    what: &'static str,
    host: Option<String>,
    origin: Option<&'static str>,
    fetch_site: Option<&'static str>,
    token: Option<&'static str>,
    expect: u16,
}

fn forgeries(port: &str) -> Vec<Forged> {
    let evil_host = format!("evil.example:{port}");
    vec![
        Forged {
            what: "DNS rebinding: evil.example resolves to 127.0.0.1",
            host: Some(evil_host.clone()),
            origin: Some("http://evil.example"),
            fetch_site: Some("same-origin"),
            token: None,
            expect: 403,
        },
        Forged {
            what: "rebinding, without Origin",
            host: Some(evil_host),
            origin: None,
            fetch_site: None,
            token: None,
            expect: 403,
        },
        Forged {
            what: "cross-site form post to 127.0.0.1",
            host: None,
            origin: Some("http://evil.example"),
            fetch_site: Some("cross-site"),
            token: None,
            expect: 403,
        },
        Forged {
            what: "cross-site, Origin stripped (Sec-Fetch-Site only)",
            host: None,
            origin: None,
            fetch_site: Some("cross-site"),
            token: None,
            expect: 403,
        },
        Forged {
            what: "no browser headers, no token (a local process without the token)",
            host: None,
            origin: None,
            fetch_site: None,
            token: None,
            expect: 401,
        },
        Forged {
            what: "a guessed token",
            host: None,
            origin: None,
            fetch_site: None,
            token: Some("0000000000000000000000000000000000000000000000000000000000000000"),
            expect: 401,
        },
    ]
}

async fn send(
    http: &reqwest::Client,
    node: &Node,
    method: Method,
    path_and_query: &str,
    f: &Forged,
) -> Result<(u16, String)> {
    let mut req = http.request(method, format!("http://{}{path_and_query}", node.admin));
    if let Some(h) = &f.host {
        req = req.header(header::HOST, h);
    }
    if let Some(o) = f.origin {
        req = req.header(header::ORIGIN, o);
    }
    if let Some(s) = f.fetch_site {
        req = req.header("sec-fetch-site", s);
    }
    if let Some(t) = f.token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

fn refused_total(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("jantar_admin_requests_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The request, and every variant a web page can send: nothing is shared,
/// nothing is written, and the `jantar-peer` commands still work.
#[tokio::test]
async fn a_web_page_cannot_share_files_or_write_downloads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let net = LoopbackNet::start(root, "", READY).await?;
    let alice = net.peer("alice", "").await?;
    let bob = net.peer("bob", "").await?;
    let result = web_page_attack(root, &alice, &bob).await;
    if result.is_err() {
        eprintln!(
            "{}",
            jantar_tests::harness::diagnose_all(&[&alice, &bob]).await
        );
    }
    result
}

async fn web_page_attack(root: &Path, alice: &Node, bob: &Node) -> Result<()> {
    let secret = root.join("secret.txt");
    std::fs::write(&secret, "alice's private notes\n")?;
    let public = root.join("public.bin");
    std::fs::write(&public, vec![7u8; 64 * 1024])?;
    let id = bob.share(&public)?;
    let planted = root.join("planted");
    let before = alice.memory()?;

    let port = alice.admin.rsplit(':').next().context("admin address")?;
    let http = reqwest::Client::new();
    let share = format!("/files?path={}", secret.display());
    let write = format!("/files/{id}/get?out={}", planted.display());
    let mut forged = 0;
    for f in forgeries(port) {
        for (method, path) in [(Method::POST, &share), (Method::POST, &write)] {
            let (code, body) = send(&http, alice, method.clone(), path, &f).await?;
            ensure!(
                code == f.expect,
                "{}: {method} {path} answered {code}, expected {}: {body}",
                f.what,
                f.expect
            );
            forged += 1;
        }
        // A rebound page cannot read the node's state either.
        if f.expect == 403 {
            let (code, body) = send(&http, alice, Method::GET, "/status", &f).await?;
            ensure!(
                code == 403,
                "{}: GET /status answered {code}: {body}",
                f.what
            );
        }
    }

    // Nothing shared, nothing fetched, nothing written.
    let files = alice.get_json("/files").await?;
    ensure!(
        files["files"].as_array().is_some_and(Vec::is_empty)
            && files["fetching"].as_array().is_some_and(Vec::is_empty),
        "alice holds or fetches something after the attack: {files}"
    );
    ensure!(!planted.exists(), "{} was written", planted.display());
    let metrics = alice.metrics().await?;
    ensure!(
        refused_total(&metrics, "browser") >= 4 * 3
            && refused_total(&metrics, "token") >= forged / 3,
        "refusals not counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("admin_requests_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The honest client, with the token the node made, is served.
    let token = alice.admin_token().context("alice made no admin.token")?;
    ensure!(
        token.len() == 64,
        "token {token:?} is not 32 random bytes in hex"
    );
    let (status, out, err) = alice.cli(&["get", &id, "-o", planted.to_str().unwrap()])?;
    ensure!(status.success(), "honest get failed: {out}\n{err}");
    ensure!(
        std::fs::read(&planted)? == std::fs::read(&public)?,
        "the honest get wrote something else"
    );
    alice.share(&secret)?;
    memory_bounded(alice, before)?;
    Ok(())
}

/// A body larger than the cap is refused before it is read; the endpoint keeps serving.
#[tokio::test]
async fn admin_bodies_are_capped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let alice = net.peer("alice", "").await?;
    let bob = net.peer("bob", "").await?;
    let before = alice.memory()?;
    let token = alice.admin_token().context("no admin.token")?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/messages", alice.admin);
    // A request announcing a large body is answered 413 before any of it is sent.
    for len in [16 * 1024 + 1, 64 * 1024 * 1024] {
        let status = status_for_announced_body(&alice.admin, &token, len).await?;
        ensure!(
            status.starts_with("HTTP/1.1 413"),
            "a request announcing {len} bytes answered {status:?}"
        );
    }
    // A large body actually sent: refused unread, the client may see a reset.
    for _ in 0..5 {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(vec![b' '; 64 * 1024 * 1024])
            .send()
            .await;
        if let Ok(r) = r {
            ensure!(
                r.status().as_u16() == 413,
                "a 64 MiB body answered {}",
                r.status()
            );
        }
    }
    // A message needs a gossip mesh; wait for bob's subscription to reach alice.
    let mut sent = Err(anyhow::anyhow!("not tried"));
    for _ in 0..50 {
        let (status, out, err) = alice.cli(&["send", "still here"])?;
        if status.success() {
            sent = Ok(());
            break;
        }
        sent = Err(anyhow::anyhow!("honest send failed: {out}\n{err}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sent?;
    drop(bob);
    memory_bounded(&alice, before)?;
    Ok(())
}

/// Sends only the head of a `POST /messages` announcing `len` body bytes and returns
/// the status line of the answer.
async fn status_for_announced_body(admin: &str, token: &str, len: usize) -> Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(
        format!(
            "POST /messages HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(s).read_line(&mut line),
    )
    .await
    .context("no answer within 10 s to a request whose body was never sent")??;
    Ok(line.trim_end().to_string())
}
