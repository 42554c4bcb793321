//! In-process behaviour tests: several nodes in one process, on the memory transport
//! or on loopback TCP, driven through the same event loop the binaries run.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use jantar_net::{
    config::{Config, Overrides, Role},
    node::{self, NodeClient, NodeHandle},
    status::Status,
    transport::build_memory_swarm,
};
use libp2p::identity::Keypair;

const WAIT: Duration = Duration::from_secs(30);
const FAST: &str =
    "  autonat: {only_global_ips: false, boot_delay: 1s}\n  dht: {discovery_interval: 500ms}\n";

fn config(role: Role, yaml: &str, dir: &std::path::Path) -> Arc<Config> {
    let env = HashMap::from([("HOME", dir.to_str().unwrap())]);
    let text = format!("admin: {{listen: \"off\"}}\n{yaml}");
    Arc::new(
        Config::parse(role, &text, None, &Overrides::default(), &env)
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
            .config,
    )
}

fn memory_addr() -> String {
    format!("/memory/{}", rand::random::<u64>())
}

async fn start_memory(role: Role, yaml: &str, dir: &std::path::Path) -> NodeHandle {
    let cfg = config(role, yaml, dir);
    let swarm = build_memory_swarm(&cfg, Keypair::generate_ed25519()).unwrap();
    node::start_with_swarm(cfg, swarm).await.unwrap()
}

async fn start_tcp(role: Role, yaml: &str, dir: &std::path::Path) -> NodeHandle {
    let cfg = config(role, yaml, dir);
    node::start(cfg, Keypair::generate_ed25519()).await.unwrap()
}

/// Polls `check` on the node's status until it holds; on timeout panics with the status.
async fn wait_status<F: Fn(&Status) -> bool>(c: &NodeClient, what: &str, check: F) -> Status {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = c.status().await.unwrap();
        if check(&st) {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; status: {}",
                serde_json::to_string_pretty(&st).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn full(h: &NodeHandle) -> String {
    format!("{}/p2p/{}", h.listen_addrs()[0], h.peer_id())
}

#[tokio::test]
async fn bootstrap_routes_but_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start_memory(
        Role::Bootstrap,
        &format!(
            "network:\n  listen_addresses: [\"{}\"]\n{FAST}",
            memory_addr()
        ),
        dir.path(),
    )
    .await;
    let peers_yaml = format!(
        "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"{}\"]\n  bootstrap_nodes: [\"{}\"]\n{FAST}",
        memory_addr(),
        full(&boot)
    );
    let a = start_memory(Role::Peer, &peers_yaml, dir.path()).await;
    let b = start_memory(
        Role::Peer,
        &peers_yaml.replace(&a.listen_addrs()[0].to_string(), &memory_addr()),
        dir.path(),
    )
    .await;
    within(a.client().wait_ready()).await.unwrap();
    within(b.client().wait_ready()).await.unwrap();

    // The peers publish provider records; the bootstrap node is asked to store them.
    let bc = boot.client();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = bc.dht_stats().await.unwrap();
        if stats
            .queries_served
            .get("add_provider")
            .copied()
            .unwrap_or(0)
            >= 2
        {
            assert_eq!(stats.records_stored, 0);
            assert_eq!(stats.provided_keys, 0);
            // The peers are DHT clients (not confirmed public), so they are not routed to.
            assert_eq!(stats.routing_table_size, 0, "{stats:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ADD_PROVIDER reached the bootstrap node: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = bc.status().await.unwrap();
    assert_eq!(st.dht_mode.as_deref(), Some("server"));
    for h in [a, b, boot] {
        h.shutdown();
        assert!(within(h.join()).await, "clean shutdown");
    }
}

#[tokio::test]
async fn peers_find_each_other_and_connect_through_relay() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start_memory(
        Role::Bootstrap,
        &format!(
            "network:\n  listen_addresses: [\"{}\"]\n{FAST}",
            memory_addr()
        ),
        dir.path(),
    )
    .await;
    let relay_addr = memory_addr();
    let relay = start_memory(
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"{relay_addr}\"]\n  external_addresses: [\"{relay_addr}\"]\n  bootstrap_nodes: [\"{}\"]\n{FAST}",
            full(&boot)
        ),
        dir.path(),
    )
    .await;
    within(relay.client().wait_ready()).await.unwrap();
    let peer = |mode: &str| {
        format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  relay_reservations: {mode}\n  listen_addresses: [\"{}\"]\n  bootstrap_nodes: [\"{}\"]\n{FAST}",
            memory_addr(),
            full(&boot)
        )
    };
    let a = start_memory(Role::Peer, &peer("never"), dir.path()).await;
    // b finds the relay through the DHT (no relay_nodes configured) and reserves there.
    let b = start_memory(Role::Peer, &peer("always"), dir.path()).await;
    let b_id = b.peer_id().to_string();
    let st = wait_status(
        &b.client(),
        "an active reservation found through the DHT",
        |s| s.reservations.iter().any(|r| r.state == "active"),
    )
    .await;
    assert_eq!(st.reservations[0].relay, relay.peer_id().to_string());
    let circuit = st.reservations[0].address.clone().unwrap();
    wait_status(&a.client(), "discovery of b", |s| {
        s.discovered_peers.contains(&b_id)
    })
    .await;

    let conn = within(a.client().connect(circuit.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.kind, jantar_net::status::ConnectionKind::Relayed);
    assert_eq!(conn.peer_id, b_id);
    let rs = wait_status(&relay.client(), "a circuit on the relay", |s| {
        s.relay.as_ref().is_some_and(|r| r.reservations >= 1)
    })
    .await;
    assert!(rs.relay.unwrap().serving);
    for h in [a, b, relay, boot] {
        h.shutdown();
        assert!(within(h.join()).await);
    }
}

#[tokio::test]
async fn max_peers_refuses_the_next_peer() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start_tcp(
        Role::Bootstrap,
        &format!("network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {{max_peers: 1, connection_grace_period: 5m}}\n{FAST}"),
        dir.path(),
    )
    .await;
    // A long idle timeout, so only the limit can close b's connection.
    let peer = format!(
        "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {{connection_grace_period: 5m}}\n  bootstrap_nodes: [\"{}\"]\n{FAST}",
        full(&boot)
    );
    let a = start_tcp(Role::Peer, &peer, dir.path()).await;
    within(a.client().wait_ready()).await.unwrap();
    let b = start_tcp(Role::Peer, &peer, dir.path()).await;
    let boot_id = boot.peer_id().to_string();
    // The bootstrap node already has its one peer: b's connection is closed as soon as
    // its peer id is known (after the handshake), and stays closed.
    let _ = within(b.client().connect(full(&boot).parse().unwrap()))
        .await
        .unwrap();
    wait_status(&b.client(), "refusal by the full bootstrap node", |s| {
        !s.connections.iter().any(|c| c.peer_id == boot_id)
    })
    .await;
    let st = boot.client().status().await.unwrap();
    assert_eq!(st.connected_peers, 1, "{st:?}");
    assert_eq!(st.connections[0].peer_id, a.peer_id().to_string());
    for h in [a, b, boot] {
        h.shutdown();
        within(h.join()).await;
    }
}

#[tokio::test]
async fn relay_rate_limits_reservations_per_ip() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_tcp(
        Role::Relay,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  external_addresses: [\"/ip4/127.0.0.1/tcp/1\"]\n  enable_dht: true\nrelay:\n  reservation_rate_per_ip: {limit: 1, interval: 1h}\n",
        dir.path(),
    )
    .await;
    let peer = format!(
        "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  relay_reservations: always\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  relay_nodes: [\"{}\"]\n",
        full(&relay)
    );
    let a = start_tcp(Role::Peer, &peer, dir.path()).await;
    wait_status(&a.client(), "first reservation", |s| {
        s.reservations.iter().any(|r| r.state == "active")
    })
    .await;
    let b = start_tcp(Role::Peer, &peer, dir.path()).await;
    // The second peer comes from the same IP: refused by the per-IP rate limit.
    let rs = wait_status(&relay.client(), "a denied reservation", |s| {
        s.relay.as_ref().is_some_and(|r| r.reservations_denied >= 1)
    })
    .await;
    assert_eq!(rs.relay.unwrap().reservations, 1);
    let st = b.client().status().await.unwrap();
    assert!(
        !st.reservations.iter().any(|r| r.state == "active"),
        "{st:?}"
    );
    for h in [a, b, relay] {
        h.shutdown();
        within(h.join()).await;
    }
}

/// QUIC v1 and TCP over IPv6, and a `/dns4/` bootstrap address, all join.
#[tokio::test]
async fn quic_ipv6_and_dns_addresses_connect() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start_tcp(
        Role::Bootstrap,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\", \"/ip6/::1/tcp/0\", \"/ip6/::1/udp/0/quic-v1\"]\n{FAST}"
        ),
        dir.path(),
    )
    .await;
    let addrs: Vec<String> = boot.listen_addrs().iter().map(|a| a.to_string()).collect();
    let id = boot.peer_id();
    let pick = |prefix: &str, proto: &str| {
        addrs
            .iter()
            .find(|a| a.starts_with(prefix) && a.contains(proto))
            .unwrap_or_else(|| panic!("no {prefix} {proto} listener in {addrs:?}"))
            .clone()
    };
    let tcp4 = pick("/ip4/", "/tcp/");
    let port = tcp4.rsplit('/').next().unwrap();
    let cases = [
        (
            "QUIC over IPv4",
            format!("{}/p2p/{id}", pick("/ip4/", "quic-v1")),
            "/quic-v1",
        ),
        (
            "TCP over IPv6",
            format!("{}/p2p/{id}", pick("/ip6/", "/tcp/")),
            "/ip6/",
        ),
        (
            "QUIC over IPv6",
            format!("{}/p2p/{id}", pick("/ip6/", "quic-v1")),
            "/ip6/",
        ),
        (
            "DNS name",
            format!("/dns4/localhost/tcp/{port}/p2p/{id}"),
            "/tcp/",
        ),
    ];
    for (what, bootstrap, expect) in cases {
        let peer = start_tcp(
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\", \"/ip6/::1/udp/0/quic-v1\"]\n  bootstrap_nodes: [\"{bootstrap}\"]\n{FAST}"
            ),
            dir.path(),
        )
        .await;
        let st = wait_status(&peer.client(), what, |s| {
            s.connections
                .iter()
                .any(|c| c.peer_id == id.to_string() && c.direction == "outbound")
        })
        .await;
        let conn = st
            .connections
            .iter()
            .find(|c| c.peer_id == id.to_string())
            .unwrap();
        assert!(
            conn.address.contains(expect),
            "{what}: connected over {}",
            conn.address
        );
        peer.shutdown();
        within(peer.join()).await;
    }
    boot.shutdown();
    within(boot.join()).await;
}

/// A relay serves secure WebSocket with a self-signed certificate it generates and
/// keeps; a peer that trusts that certificate reserves over WSS, one that does not is
/// refused by TLS.
#[tokio::test]
async fn relay_over_secure_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay_yaml = format!(
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/{port}/tls/ws\"]\n  external_addresses: [\"/ip4/127.0.0.1/tcp/{port}/tls/ws\"]\n"
    );
    let relay = start_tcp(Role::Relay, &relay_yaml, dir.path()).await;
    let wss = full(&relay);
    assert!(wss.contains("/tls/ws/p2p/"), "{wss}");
    let cert = dir.path().join(".local/share/jantar/relay/tls/cert.pem");
    let key = dir.path().join(".local/share/jantar/relay/tls/key.pem");
    assert!(
        cert.exists(),
        "self-signed certificate kept in the data dir"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let peer = |trust: &str| {
        format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  relay_reservations: always\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  relay_nodes: [\"{wss}\"]\n{trust}"
        )
    };
    let trusting = start_tcp(
        Role::Peer,
        &peer(&format!(
            "  tls:\n    trusted_certificates: [\"{}\"]\n",
            cert.display()
        )),
        dir.path(),
    )
    .await;
    let st = wait_status(&trusting.client(), "a reservation over WSS", |s| {
        s.reservations.iter().any(|r| r.state == "active")
    })
    .await;
    let addr = st.reservations[0].address.clone().unwrap();
    assert!(addr.contains("/tls/ws/p2p/"), "{addr}");

    let untrusting = start_tcp(Role::Peer, &peer(""), dir.path()).await;
    let err = within(untrusting.client().connect(wss.parse().unwrap()))
        .await
        .unwrap()
        .expect_err("an untrusted self-signed certificate must be refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A restart serves the same certificate.
    let before = std::fs::read(&cert).unwrap();
    relay.shutdown();
    within(relay.join()).await;
    let relay = start_tcp(Role::Relay, &relay_yaml, dir.path()).await;
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    for h in [trusting, untrusting, relay] {
        h.shutdown();
        within(h.join()).await;
    }
}

/// A peer whose only bootstrap node is down keeps retrying (with backoff) and joins as
/// soon as the bootstrap node comes up.
#[tokio::test]
async fn peer_joins_when_bootstrap_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let boot_key = Keypair::generate_ed25519();
    let boot_addr = memory_addr();
    let boot_full = format!("{boot_addr}/p2p/{}", boot_key.public().to_peer_id());
    let peer = start_memory(
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"{}\"]\n  bootstrap_nodes: [\"{boot_full}\"]\n{FAST}",
            memory_addr()
        ),
        dir.path(),
    )
    .await;
    let mut client = peer.client();
    // Let a few retries fail first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !client.is_ready(),
        "cannot be ready without its bootstrap node"
    );

    let cfg = config(
        Role::Bootstrap,
        &format!("network:\n  listen_addresses: [\"{boot_addr}\"]\n{FAST}"),
        dir.path(),
    );
    let swarm = build_memory_swarm(&cfg, boot_key).unwrap();
    let boot = node::start_with_swarm(cfg, swarm).await.unwrap();
    let started = tokio::time::Instant::now();
    within(client.wait_ready()).await.unwrap();
    // Retries started at 1s and double: after ~3s down the next one is due within 4s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "joined after {:?}",
        started.elapsed()
    );
    for h in [peer, boot] {
        h.shutdown();
        within(h.join()).await;
    }
}
