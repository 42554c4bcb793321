use std::collections::HashMap;

use super::*;

const BOOT1: &str = "12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe";
const BOOT2: &str = "12D3KooWGzaoJRnbmBpsZkkzu6dbgtoeRZVYNNaWR9k3fPGJAa5o";
const BOOT3: &str = "12D3KooWQTe2j9nwBGR7QzqfDhzAMoJZMLs1jsWaXbVKc4Gvjo4k";
const RELAY1: &str = "12D3KooWHkVoVgWUGUiBr5ExVjVeVTKmYwuHBUTfzqLQmwpAk6tb";

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("HOME", "/home/u")])
}

fn parse(role: Role, text: &str) -> Result<Loaded, ConfigError> {
    Config::parse(
        role,
        text,
        Some(Path::new("/etc/jantar/test.cfg")),
        &Overrides::default(),
        &env(),
    )
}

/// The design document's `jantar.cfg`, with its placeholder peer ids replaced.
fn seed_jantar_cfg() -> String {
    format!(
        r#"# Enhanced jantar.cfg
network:
  # Enable DHT for internet-scale discovery
  enable_dht: true

  # Bootstrap nodes (global)
  bootstrap_nodes:
    - "/ip4/165.232.45.78/tcp/4001/p2p/{BOOT1}"
    - "/ip4/134.209.23.45/tcp/4001/p2p/{BOOT2}"
    - "/ip6/2001:db8::1/tcp/4001/p2p/{BOOT3}"

  # Relay nodes for NAT traversal
  relay_nodes:
    - "/p2p-circuit/p2p/{RELAY1}"
    - "/p2p-circuit/p2p/{BOOT3}"

  # Network behavior
  connection_limits:
    max_peers: 50
    max_pending_connections: 10
    connection_grace_period: 20s
"#
    )
}

const SEED_BOOTSTRAP_NODE_CFG: &str = r#"# bootstrap-node.cfg
name: "Bootstrap-US-East"
port: 4001
auto_update: false
enable_dht: true
bootstrap_mode: true  # New flag
"#;

const SEED_BOOTSTRAP_CFG: &str = r#"# bootstrap.cfg
name: "Bootstrap-Region-1"
port: 4001
download_dir: "/tmp/jantar"  # Minimal storage
auto_update: false
enable_dht: true
max_storage_size: 104857600  # 100MB limit

# Don't participate in file storage
min_file_size: 999999999  # Effectively disable
"#;

#[test]
fn seed_jantar_cfg_loads_for_peer() {
    let loaded = parse(Role::Peer, &seed_jantar_cfg()).unwrap();
    let c = loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(c.network.bootstrap_nodes.len(), 3);
    assert_eq!(c.network.bootstrap_nodes[2].peer_id.to_string(), BOOT3);
    assert_eq!(
        c.network.bootstrap_nodes[2].addr.to_string(),
        "/ip6/2001:db8::1/tcp/4001"
    );
    assert_eq!(c.network.relay_nodes[0].peer_id.to_string(), RELAY1);
    assert!(c.network.relay_nodes[0].addr.is_empty());
    assert_eq!(c.network.limits.max_peers, 50);
    assert_eq!(c.network.limits.max_pending_connections, 10);
    assert_eq!(c.network.limits.idle_timeout, Duration::from_secs(20));
    assert!(c.network.dht.enabled);
    assert!(c.network.enable_mdns);
    assert_eq!(c.port, 0);
    assert_eq!(
        c.data_dir,
        PathBuf::from("/home/u/.local/share/jantar/peer")
    );
    assert_eq!(c.key_file, c.data_dir.join("identity.key"));
}

#[test]
fn seed_bootstrap_configs_load_for_bootstrap() {
    let c = parse(Role::Bootstrap, SEED_BOOTSTRAP_NODE_CFG).unwrap();
    assert_eq!(c.config.name, "Bootstrap-US-East");
    assert_eq!(c.config.port, 4001);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = parse(Role::Bootstrap, SEED_BOOTSTRAP_CFG).unwrap();
    assert_eq!(c.config.max_storage_size, 104_857_600);
    assert_eq!(c.config.min_file_size, 999_999_999);
    // Storage keys mean nothing on a bootstrap node: loaded, with a warning each.
    let w: Vec<String> = c.warnings.iter().map(|w| w.0.clone()).collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].contains("line 4, key `download_dir`: has no effect on jantar-bootstrap"),
        "{w:?}"
    );
}

#[test]
fn embedded_defaults_load() {
    for role in [Role::Bootstrap, Role::Relay, Role::Peer] {
        let l = Config::load(role, None, &Overrides::default(), &env()).unwrap();
        assert!(l.warnings.is_empty(), "{role}: {:?}", l.warnings);
        assert_eq!(
            l.config.admin_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(l.config.network.dht.enabled);
        assert!(l.config.network.bootstrap_nodes.is_empty());
    }
    let peer = Config::load(Role::Peer, None, &Overrides::default(), &env()).unwrap();
    assert!(peer.config.network.enable_mdns);
    let relay = Config::load(Role::Relay, None, &Overrides::default(), &env()).unwrap();
    assert_eq!(relay.config.port, 4001);
    assert!(!relay.config.network.enable_mdns);
    assert_eq!(relay.config.relay.max_circuit_bytes, 16 * 1024 * 1024);
}

#[test]
fn a_relay_too_small_for_files_is_a_warning() {
    let small = Config::parse(
        Role::Relay,
        "relay:\n  max_circuit_bytes: 128KiB\n",
        None,
        &Overrides::default(),
        &env(),
    )
    .unwrap();
    assert!(
        small
            .warnings
            .iter()
            .any(|w| w.to_string().contains("relay.max_circuit_bytes")
                && w.to_string().contains("files cannot cross this relay")),
        "{:?}",
        small.warnings
    );
    let enough = Config::parse(
        Role::Relay,
        "relay:\n  max_circuit_bytes: 2MiB\n",
        None,
        &Overrides::default(),
        &env(),
    )
    .unwrap();
    assert!(enough.warnings.is_empty(), "{:?}", enough.warnings);
}

#[test]
fn sizes_and_durations() {
    let c = parse(
        Role::Peer,
        "max_storage_size: 100MiB\nmin_file_size: 1 KB\nshutdown_grace_period: 1m 30s\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.max_storage_size, 100 * 1024 * 1024);
    assert_eq!(c.min_file_size, 1000);
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(90));
    let c = parse(
        Role::Relay,
        "relay:\n  max_circuit_bytes: 1MiB\n  reservation_rate_per_ip: {limit: 5, interval: 10s}\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.relay.max_circuit_bytes, 1 << 20);
    assert_eq!(c.relay.reservation_rate_per_ip.limit.get(), 5);
}

fn err(role: Role, text: &str) -> ConfigError {
    parse(role, text).expect_err("config should be refused")
}

#[test]
fn misspelled_key_suggests_the_right_one() {
    let e = err(
        Role::Peer,
        "name: a\nnetwork:\n  enable_dht: true\n  bootstrap_node: []\n",
    );
    assert_eq!(e.key(), Some("network.bootstrap_node"));
    assert_eq!(e.line(), Some(4));
    let msg = e.to_string();
    assert!(msg.starts_with("/etc/jantar/test.cfg line 4"), "{msg}");
    assert!(msg.contains("did you mean `bootstrap_nodes`?"), "{msg}");

    let e = err(Role::Peer, "prot: 4001\n");
    assert!(e.to_string().contains("did you mean `port`?"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let e = err(Role::Peer, "name: a\nport: lots\n");
    assert_eq!(e.key(), Some("port"));
    assert_eq!(e.line(), Some(2));
    let e = err(
        Role::Peer,
        "network:\n  connection_limits:\n    connection_grace_period: soon\n",
    );
    assert_eq!(
        e.key(),
        Some("network.connection_limits.connection_grace_period")
    );
    assert!(e.to_string().contains("invalid duration"), "{e}");
}

#[test]
fn seed_placeholder_address_is_refused() {
    let e = err(
        Role::Peer,
        "network:\n  bootstrap_nodes:\n    - \"/ip4/165.232.45.78/tcp/4001/p2p/12D3KooWBootstrap1...\"\n",
    );
    assert_eq!(e.key(), Some("network.bootstrap_nodes[0]"));
    assert_eq!(e.line(), Some(3));
    assert!(e.to_string().contains("not a valid multiaddr"), "{e}");
}

#[test]
fn bootstrap_address_without_peer_id_is_refused() {
    let e = err(
        Role::Peer,
        "network:\n  bootstrap_nodes:\n    - /ip4/1.2.3.4/tcp/4001\n",
    );
    assert_eq!(e.key(), Some("network.bootstrap_nodes[0]"));
    assert!(e.to_string().contains("/p2p/<peer id>"), "{e}");
    let e = err(
        Role::Peer,
        &format!("network:\n  bootstrap_nodes: [\"/p2p/{BOOT1}\"]\n"),
    );
    assert!(e.to_string().contains("has no transport address"), "{e}");
}

#[test]
fn contradictions_are_refused() {
    let e = err(
        Role::Peer,
        "enable_dht: true\nnetwork:\n  enable_dht: false\n",
    );
    assert_eq!(e.key(), Some("network.enable_dht"));
    assert_eq!(e.line(), Some(3));
    let e = err(Role::Peer, "bootstrap_mode: true\n");
    assert!(
        e.to_string()
            .contains("run this config with jantar-bootstrap"),
        "{e}"
    );
    let e = err(Role::Bootstrap, "enable_dht: false\n");
    assert_eq!(e.key(), Some("enable_dht"));
    let e = err(
        Role::Relay,
        "relay:\n  max_reservations: 2\n  max_reservations_per_peer: 4\n",
    );
    assert_eq!(e.key(), Some("relay.max_reservations_per_peer"));
    assert_eq!(e.line(), Some(3));
    let e = err(
        Role::Peer,
        "network:\n  enable_dht: false\n  relay_reservations: always\n",
    );
    assert_eq!(e.key(), Some("network.relay_reservations"));
}

#[test]
fn role_irrelevant_keys_warn() {
    let l = parse(
        Role::Relay,
        "download_dir: /x\nnetwork:\n  enable_mdns: true\n",
    )
    .unwrap();
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(l.warnings[1].0.contains("network.enable_mdns"));
    assert!(!l.config.network.enable_mdns);
    let l = parse(Role::Peer, "relay:\n  max_circuits: 3\n").unwrap();
    assert!(l.warnings[0].0.contains("relay limits have no effect"));
}

#[test]
fn the_data_dir_of_a_refused_config_is_still_found() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("peer.cfg");
    std::fs::write(
        &path,
        "data_dir: /srv/p\nkey_from_a_newer_release: 1\nport: not-a-port\n",
    )
    .unwrap();
    let none = Overrides::default();
    assert!(Config::load(Role::Peer, Some(&path), &none, &env()).is_err());
    assert_eq!(
        Config::data_dir_only(Role::Peer, Some(&path), &none, &env()),
        Some(PathBuf::from("/srv/p"))
    );
    let o = Overrides {
        data_dir: Some("/srv/o".into()),
        ..Overrides::default()
    };
    assert_eq!(
        Config::data_dir_only(Role::Peer, Some(&path), &o, &env()),
        Some(PathBuf::from("/srv/o"))
    );
    // No data_dir in the file: the environment's default, as a start would use.
    std::fs::write(&path, "unknown: [1, 2]\n").unwrap();
    let sd = HashMap::from([("STATE_DIRECTORY", "/var/lib/jantar-peer")]);
    assert_eq!(
        Config::data_dir_only(Role::Peer, Some(&path), &none, &sd),
        Some(PathBuf::from("/var/lib/jantar-peer"))
    );
    // Not YAML at all, or no file: nothing to go by.
    std::fs::write(&path, "data_dir: [unclosed\n").unwrap();
    assert_eq!(
        Config::data_dir_only(Role::Peer, Some(&path), &none, &sd),
        None
    );
    assert_eq!(
        Config::data_dir_only(Role::Peer, Some(&d.path().join("missing")), &none, &sd),
        None
    );
}

#[test]
fn overrides_and_environment() {
    let o = Overrides {
        port: Some(5000),
        data_dir: Some("/srv/j".into()),
        admin_listen: Some("off".into()),
        log_level: Some("debug".into()),
        log_format: Some("json".into()),
    };
    let c = Config::parse(Role::Relay, "port: 4001\n", None, &o, &env())
        .unwrap()
        .config;
    assert_eq!(c.port, 5000);
    assert_eq!(c.data_dir, PathBuf::from("/srv/j"));
    assert_eq!(c.admin_listen, None);
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(
        c.network.listen_addresses[0]
            .to_string()
            .ends_with("/tcp/5000")
    );

    let sd = HashMap::from([("STATE_DIRECTORY", "/var/lib/jantar-relay"), ("HOME", "/h")]);
    let c = Config::parse(Role::Relay, "", None, &Overrides::default(), &sd)
        .unwrap()
        .config;
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/jantar-relay"));
    let none: HashMap<&str, &str> = HashMap::new();
    let e = Config::parse(Role::Relay, "", None, &Overrides::default(), &none).unwrap_err();
    assert_eq!(e.key(), Some("data_dir"));
}

#[test]
fn bad_admin_and_log_values() {
    let e = err(Role::Peer, "admin:\n  listen: localhost\n");
    assert_eq!(e.key(), Some("admin.listen"));
    assert_eq!(e.line(), Some(2));
    let e = err(Role::Peer, "log:\n  format: xml\n");
    assert_eq!(e.key(), Some("log.format"));
    let e = err(
        Role::Peer,
        "network:\n  listen_addresses: [\"/ip4/1.2.3.4/tcp/1/p2p-circuit\"]\n",
    );
    assert_eq!(e.key(), Some("network.listen_addresses"));
}

#[test]
fn invalid_yaml_names_line() {
    let e = err(Role::Peer, "name: a\nnetwork: [\n");
    assert!(e.line().is_some(), "{e}");
    assert!(
        e.to_string().starts_with("/etc/jantar/test.cfg line"),
        "{e}"
    );
}

#[test]
fn tls_certificate_needs_its_key() {
    let e = err(
        Role::Relay,
        "network:\n  tls:\n    certificate: /etc/jantar/cert.pem\n",
    );
    assert_eq!(e.key(), Some("network.tls.certificate"));
    assert_eq!(e.line(), Some(3));
    let c = parse(
        Role::Peer,
        "network:\n  tls:\n    trusted_certificates: [/etc/jantar/relay.pem]\n",
    )
    .unwrap()
    .config;
    assert_eq!(
        c.network.tls.trusted_certificates,
        vec![PathBuf::from("/etc/jantar/relay.pem")]
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let e = err(Role::Relay, "admin:\n  listen: \"0.0.0.0:9090\"\n");
    assert_eq!(e.key(), Some("admin.listen"));
    assert!(e.to_string().contains("admin.token"), "{e}");
    let e = err(
        Role::Relay,
        "admin:\n  listen: \"0.0.0.0:9090\"\n  token: short\n",
    );
    assert_eq!(e.key(), Some("admin.token"));
    let c = parse(
        Role::Relay,
        "admin:\n  listen: \"0.0.0.0:9090\"\n  token: \"0123456789abcdef\"\n",
    )
    .unwrap();
    assert_eq!(c.config.admin_token.as_deref(), Some("0123456789abcdef"));
}

#[test]
fn gossip_rates_and_memory_limit() {
    let c = parse(
        Role::Peer,
        "network:\n  gossip:\n    message_rate_per_sender: {limit: 5, interval: 10s}\n  connection_limits:\n    max_memory: 512MiB\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.network.gossip.message_rate_per_sender.limit.get(), 5);
    assert_eq!(
        c.network.gossip.announcement_rate_per_sender.limit.get(),
        60
    );
    assert_eq!(c.network.limits.max_memory, 512 << 20);
    let boot = parse(Role::Bootstrap, "").unwrap().config;
    assert_eq!(boot.network.limits.max_memory, 2 << 30);

    let e = err(
        Role::Peer,
        "network:\n  gossip:\n    announcement_rate_per_sender: {limit: 0, interval: 1m}\n",
    );
    assert_eq!(
        e.key(),
        Some("network.gossip.announcement_rate_per_sender.limit")
    );
    let e = err(
        Role::Peer,
        "network:\n  connection_limits:\n    max_memory: 10MiB\n",
    );
    assert_eq!(e.key(), Some("network.connection_limits.max_memory"));
    assert!(e.to_string().contains("below 64MiB"), "{e}");
    // Off is allowed; gossip rates mean nothing to a relay.
    assert_eq!(
        parse(
            Role::Peer,
            "network:\n  connection_limits:\n    max_memory: 0\n"
        )
        .unwrap()
        .config
        .network
        .limits
        .max_memory,
        0
    );
    let w = parse(
        Role::Relay,
        "network:\n  gossip:\n    message_rate_per_sender: {limit: 5, interval: 10s}\n",
    )
    .unwrap()
    .warnings;
    assert!(w.iter().any(|w| w.0.contains("network.gossip")), "{w:?}");
}

#[test]
fn replication_and_serving_bounds() {
    let c = parse(Role::Peer, "").unwrap().config;
    assert_eq!(c.replication.max_concurrent_fetches, 4);
    assert_eq!(c.replication.fetch_deadline, Duration::from_secs(1800));
    assert_eq!(c.replication.max_share_per_publisher, 0.25);
    assert_eq!(c.serving.max_concurrent_per_peer, 8);
    assert_eq!(c.serving.max_queued, 64);
    let c = parse(
        Role::Peer,
        "replication:\n  max_concurrent_fetches: 0\n  fetch_deadline: 2m\n  max_share_per_publisher: 1\nserving:\n  max_concurrent_per_peer: 100\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.replication.max_concurrent_fetches, 0);
    assert_eq!(c.replication.fetch_deadline, Duration::from_secs(120));
    assert_eq!(c.replication.max_share_per_publisher, 1.0);
    // max_queued follows a larger per-peer bound.
    assert_eq!(c.serving.max_queued, 100);
    for (text, key, line) in [
        (
            "replication:\n  max_share_per_publisher: 0\n",
            "replication.max_share_per_publisher",
            2,
        ),
        (
            "replication:\n  max_share_per_publisher: 1.5\n",
            "replication.max_share_per_publisher",
            2,
        ),
        (
            "replication:\n  fetch_deadline: 0s\n",
            "replication.fetch_deadline",
            2,
        ),
        (
            "serving:\n  max_concurrent_per_peer: 0\n",
            "serving.max_concurrent_per_peer",
            2,
        ),
        (
            "serving:\n  max_concurrent_per_peer: 8\n  max_queued: 4\n",
            "serving.max_queued",
            3,
        ),
    ] {
        let e = err(Role::Peer, text);
        assert_eq!(e.key(), Some(key), "{text}: {e}");
        assert_eq!(e.line(), Some(line), "{text}: {e}");
    }
    let w = parse(Role::Relay, "serving:\n  max_queued: 10\n")
        .unwrap()
        .warnings;
    assert!(w.iter().any(|w| w.0.contains("serving")), "{w:?}");
}

#[test]
fn dht_parallelism() {
    let dht = |yaml: &str| parse(Role::Peer, yaml).unwrap().config.network.dht;
    assert_eq!(dht("").parallelism.get(), 3);
    assert_eq!(
        dht("network:\n  dht:\n    parallelism: 10\n")
            .parallelism
            .get(),
        10
    );
    for bad in ["0", "33"] {
        let e = err(
            Role::Peer,
            &format!("network:\n  dht:\n    parallelism: {bad}\n"),
        );
        assert_eq!(e.key(), Some("network.dht.parallelism"), "{e}");
        assert!(e.to_string().contains("1 to 32"), "{e}");
    }
}

#[test]
fn dht_diversity_limits() {
    let c = parse(
        Role::Relay,
        "network:\n  dht:\n    max_peers_per_subnet_per_bucket: 3\n    limit_private_subnets: true\n",
    )
    .unwrap()
    .config;
    assert_eq!(c.network.dht.max_peers_per_subnet_per_bucket, 3);
    assert_eq!(c.network.dht.max_peers_per_subnet, 8);
    assert!(c.network.dht.limit_private_subnets);
    assert!(
        !parse(Role::Peer, "")
            .unwrap()
            .config
            .network
            .dht
            .limit_private_subnets
    );

    let e = err(
        Role::Peer,
        "network:\n  dht:\n    max_peers_per_subnet_per_bucket: 0\n",
    );
    assert_eq!(e.key(), Some("network.dht.max_peers_per_subnet_per_bucket"));
    let e = err(
        Role::Peer,
        "network:\n  dht:\n    max_peers_per_subnet_per_bucket: 4\n    max_peers_per_subnet: 3\n",
    );
    assert_eq!(e.key(), Some("network.dht.max_peers_per_subnet"));
    assert!(
        e.to_string().contains("cannot be below the bucket limit"),
        "{e}"
    );

    // Nodes store no records: the old key still loads, and says it does nothing.
    let w = parse(Role::Relay, "network:\n  dht:\n    max_records: 100\n")
        .unwrap()
        .warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].0.contains("network.dht.max_records"), "{w:?}");
    assert!(w[0].0.contains("PUT_VALUE is refused"), "{w:?}");
}

#[test]
fn per_source_caps_acl_budget_and_address_votes() {
    let relay = parse(Role::Relay, "").unwrap().config;
    assert_eq!(relay.relay.max_reservations_per_ip, 8);
    assert_eq!(relay.relay.max_reservations_per_subnet, 32);
    assert_eq!(relay.relay.max_bytes_per_second, 32 << 20);
    assert_eq!(relay.relay.circuit_bytes_per_second, 1 << 20);
    assert!(relay.relay.acl.is_open());
    assert_eq!(relay.network.limits.max_pending_per_ip, 8);
    assert!(!relay.network.limits.limit_private_sources);
    assert_eq!(relay.network.autonat.address_confirmations, 2);
    let peer = parse(Role::Peer, "").unwrap().config;
    assert_eq!(peer.network.limits.max_pending_per_subnet, 8);

    let c = parse(
        Role::Relay,
        "relay:\n  acl:\n    allow_networks: [\"192.0.2.7/24\", \"2001:db8::/32\"]\n    deny_peers: [\"12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe\"]\n  max_bytes_per_second: 0\n",
    )
    .unwrap()
    .config;
    // A network written with host bits is taken as its network.
    assert_eq!(c.relay.acl.allow_networks[0].to_string(), "192.0.2.0/24");
    assert_eq!(c.relay.acl.deny_peers.len(), 1);
    assert_eq!(c.relay.max_bytes_per_second, 0);

    for (text, key, says) in [
        (
            "relay:\n  acl:\n    deny_networks: [\"10.0.0.0/33\"]\n",
            "relay.acl.deny_networks",
            "`10.0.0.0/33` is not a network",
        ),
        (
            "relay:\n  acl:\n    allow_peers: [\"not-a-peer\"]\n",
            "relay.acl.allow_peers",
            "`not-a-peer` is not a peer id",
        ),
        (
            "relay:\n  max_circuits_per_subnet: 0\n",
            "relay.max_circuits_per_subnet",
            "is 0",
        ),
        (
            "network:\n  autonat:\n    address_confirmations: 0\n",
            "network.autonat.address_confirmations",
            "is 0",
        ),
        (
            "network:\n  connection_limits:\n    max_pending_per_ip: 0\n",
            "network.connection_limits.max_pending_per_ip",
            "is 0",
        ),
    ] {
        let e = err(Role::Relay, text);
        assert_eq!(e.key(), Some(key), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    let many: Vec<String> = (1..=13)
        .map(|i| format!("\"/ip4/192.0.2.{i}/tcp/4001\""))
        .collect();
    let e = err(
        Role::Relay,
        &format!("network:\n  external_addresses: [{}]\n", many.join(", ")),
    );
    assert_eq!(e.key(), Some("network.external_addresses"));
    assert!(e.to_string().contains("at most 12"), "{e}");
}

#[test]
fn watermarks_peer_store_and_geoip() {
    let peer = parse(Role::Peer, "").unwrap().config;
    let l = &peer.network.limits;
    assert_eq!((l.max_peers, l.high_water, l.low_water), (200, 50, 38));
    assert!(l.protected_peers.is_empty());
    assert!(peer.network.peer_store.persist);
    assert_eq!(peer.network.peer_store.capacity, 1000);
    assert!(peer.network.geoip_databases.is_empty());
    // A bootstrap node keeps its store in memory, whatever the file says.
    let boot = parse(Role::Bootstrap, "network:\n  peer_store: {persist: true}\n")
        .unwrap()
        .config;
    assert!(!boot.network.peer_store.persist);
    assert_eq!(
        (
            boot.network.limits.high_water,
            boot.network.limits.low_water
        ),
        (900, 700)
    );

    // Watermarks follow max_peers unless set: a peer keeps a quarter of it.
    let c = parse(
        Role::Peer,
        "network:\n  connection_limits: {max_peers: 10, protected_peers: [\"12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe\"]}\n",
    )
    .unwrap()
    .config;
    assert_eq!(
        (c.network.limits.high_water, c.network.limits.low_water),
        (2, 1)
    );
    assert_eq!(c.network.limits.protected_peers.len(), 1);
    let tiny = parse(
        Role::Peer,
        "network:\n  connection_limits: {max_peers: 1}\n",
    )
    .unwrap()
    .config;
    assert_eq!(
        (
            tiny.network.limits.high_water,
            tiny.network.limits.low_water
        ),
        (1, 0)
    );

    for (text, key, says) in [
        (
            "network:\n  connection_limits: {max_peers: 10, high_water: 11}\n",
            "network.connection_limits.high_water",
            "above max_peers",
        ),
        (
            "network:\n  connection_limits: {high_water: 8, low_water: 8}\n",
            "network.connection_limits.low_water",
            "not below high_water",
        ),
        (
            "network:\n  connection_limits: {protected_peers: [\"nope\"]}\n",
            "network.connection_limits.protected_peers",
            "`nope` is not a peer id",
        ),
        (
            "network:\n  peer_store: {capacity: 0}\n",
            "network.peer_store.capacity",
            "between 1 and",
        ),
        (
            "network:\n  geoip_databases: [\"/nonexistent/GeoLite2-ASN.mmdb\"]\n",
            "network.geoip_databases",
            "/nonexistent/GeoLite2-ASN.mmdb is not a file",
        ),
    ] {
        let e = err(Role::Peer, text);
        assert_eq!(e.key(), Some(key), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn auto_update_modes_trusted_keys_and_their_refusals() {
    let k1 = crate::release::SigningKey::generate().public().to_string();
    let k2 = crate::release::SigningKey::generate().public().to_string();
    let k3 = crate::release::SigningKey::generate().public().to_string();
    // Off by default; the design document's `false` and `true` keep working.
    let c = parse(Role::Peer, "name: a\n").unwrap().config;
    assert_eq!(c.update.mode, AutoUpdate::Off);
    assert!(c.update.trust.keys.is_empty());
    let keys = format!("update:\n  trusted_keys: [\"{k1}\", \"{k2}\", \"{k3}\"]\n");
    for (written, mode) in [
        ("false", AutoUpdate::Off),
        ("true", AutoUpdate::Apply),
        ("notify", AutoUpdate::Notify),
        ("apply", AutoUpdate::Apply),
    ] {
        let c = parse(Role::Peer, &format!("auto_update: {written}\n{keys}"))
            .unwrap()
            .config;
        assert_eq!(c.update.mode, mode, "{written}");
        // A majority of three by default.
        assert_eq!(c.update.trust.threshold, 2);
        assert_eq!(c.update.channel, "stable");
        assert_eq!(c.update.method, UpdateMethod::Auto);
    }
    // Keys from a file, merged with those in the config, each once.
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("release-keys");
    std::fs::write(&file, format!("# release keys\n{k1}\n\n{k3} # carol\n")).unwrap();
    let c = parse(
        Role::Peer,
        &format!(
            "auto_update: apply\nupdate:\n  trusted_keys: [\"{k1}\"]\n  trusted_keys_file: {}\n  threshold: 1\n  method: stage\n  ready_timeout: 2m\n",
            file.display()
        ),
    )
    .unwrap()
    .config;
    assert_eq!(c.update.trust.keys.len(), 2);
    assert_eq!(c.update.trust.threshold, 1);
    assert_eq!(c.update.method, UpdateMethod::Stage);
    assert_eq!(c.update.ready_timeout, Duration::from_secs(120));

    // Refusals, each naming its key.
    let cases = [
        (
            Role::Peer,
            "auto_update: notify\n".to_string(),
            "auto_update",
            "no release keys are trusted",
        ),
        (
            Role::Peer,
            "auto_update: sometimes\n".into(),
            "auto_update",
            "is not `false`, `notify` or `apply`",
        ),
        (
            Role::Bootstrap,
            format!("auto_update: true\n{keys}"),
            "auto_update",
            "only jantar-peer follows releases",
        ),
        (
            Role::Relay,
            "auto_update: apply\n".into(),
            "auto_update",
            "only jantar-peer follows releases",
        ),
        (
            Role::Peer,
            "update:\n  trusted_keys: [\"ed25519:00\"]\n".into(),
            "update.trusted_keys[0]",
            "is not a release key",
        ),
        (
            Role::Peer,
            format!("{keys}  threshold: 4\n"),
            "update.threshold",
            "only 3 trusted key(s)",
        ),
        (
            Role::Peer,
            format!("{keys}  threshold: 0\n"),
            "update.threshold",
            "at least 1",
        ),
        (
            Role::Peer,
            format!("{keys}  method: copy\n"),
            "update.method",
            "not `auto`, `replace` or `stage`",
        ),
        (
            Role::Peer,
            format!("{keys}  channel: \"../x\"\n"),
            "update.channel",
            "not a channel name",
        ),
        (
            Role::Peer,
            format!("{keys}  ready_timeout: 0s\n"),
            "update.ready_timeout",
            "at least 1s",
        ),
    ];
    for (role, text, key, says) in cases {
        let e = err(role, &text);
        assert_eq!(e.key(), Some(key), "{text}: {e}");
        assert!(e.to_string().contains(says), "{text}: {e}");
    }
    std::fs::write(&file, format!("{k1}\nnot-a-key\n")).unwrap();
    let e = err(
        Role::Peer,
        &format!("update:\n  trusted_keys_file: {}\n", file.display()),
    );
    assert_eq!(e.key(), Some("update.trusted_keys_file"));
    assert!(e.to_string().contains("release-keys line 2"), "{e}");
}
