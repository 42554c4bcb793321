//! Every Jantar metric, recorded through the `metrics` facade and rendered by one
//! Prometheus exporter, so `/metrics` is a single consistent exposition.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub(crate) const PEERS: &str = "jantar_peers";
pub(crate) const CONNECTIONS: &str = "jantar_connections";
pub(crate) const CONNECTIONS_OPENED: &str = "jantar_connections_opened_total";
pub(crate) const CONNECTIONS_CLOSED: &str = "jantar_connections_closed_total";
pub(crate) const CONNECTIONS_DENIED: &str = "jantar_connections_denied_total";
pub(crate) const DHT_ROUTING_TABLE_PEERS: &str = "jantar_dht_routing_table_peers";
pub(crate) const DHT_BUCKETS: &str = "jantar_dht_buckets";
pub(crate) const DHT_QUERIES_SERVED: &str = "jantar_dht_queries_served_total";
pub(crate) const DHT_QUERIES_STARTED: &str = "jantar_dht_queries_started_total";
pub(crate) const DHT_QUERIES_FINISHED: &str = "jantar_dht_queries_finished_total";
pub(crate) const DHT_INSERTS_REFUSED: &str = "jantar_dht_inserts_refused_total";
pub(crate) const DHT_ROUTING_REFUSED: &str = "jantar_dht_routing_refused_total";
pub(crate) const RELAY_RESERVATIONS: &str = "jantar_relay_reservations";
pub(crate) const RELAY_RESERVATION_REQUESTS: &str = "jantar_relay_reservation_requests_total";
pub(crate) const RELAY_CIRCUITS: &str = "jantar_relay_circuits";
pub(crate) const RELAY_CIRCUIT_REQUESTS: &str = "jantar_relay_circuit_requests_total";
pub(crate) const RELAY_SOURCE_REFUSED: &str = "jantar_relay_source_refused_total";
pub(crate) const RELAY_RECEIVED_BYTES: &str = "jantar_relay_received_bytes_total";
pub(crate) const RELAY_BUDGET_WAITS: &str = "jantar_relay_budget_waits_total";
pub(crate) const RELAY_BUDGET: &str = "jantar_relay_budget_bytes_per_second";
pub(crate) const AUTONAT_GATED: &str = "jantar_autonat_gated_connections_total";
pub(crate) const AUTONAT_ADDRESS_REPORTS: &str = "jantar_autonat_address_reports_total";
pub(crate) const RELAY_CLIENT_RESERVATIONS: &str = "jantar_relay_client_reservations";
pub(crate) const NAT_STATUS: &str = "jantar_nat_status";
pub(crate) const AUTONAT_PROBES_SERVED: &str = "jantar_autonat_probes_served_total";
pub(crate) const HOLEPUNCH: &str = "jantar_holepunch_total";
pub(crate) const GOSSIP_RECONNECTS: &str = "jantar_gossip_reconnects_total";
pub(crate) const DISCOVERED_PEERS: &str = "jantar_discovered_peers_total";
pub(crate) const PEER_STORE_PEERS: &str = "jantar_peer_store_peers";
pub(crate) const PEERS_TRIMMED: &str = "jantar_peers_trimmed_total";
pub(crate) const PEERS_PROTECTED: &str = "jantar_peers_protected";
pub(crate) const PEER_GROUPS: &str = "jantar_peer_network_groups";
pub(crate) const PEER_SCORE: &str = "jantar_peer_score";
pub(crate) const PEER_RTT: &str = "jantar_peer_rtt_seconds";
pub(crate) const BUILD_INFO: &str = "jantar_build_info";
pub(crate) const FILE_BYTES: &str = "jantar_file_bytes_total";
pub(crate) const FILE_BAD_DATA: &str = "jantar_file_bad_data_total";
pub(crate) const FILE_UPLOADS_REFUSED: &str = "jantar_file_uploads_refused_total";
pub(crate) const FILE_UPLOADS_ACCEPTED: &str = "jantar_file_uploads_accepted";
pub(crate) const FILE_UPLOAD_QUEUED_BYTES: &str = "jantar_file_upload_queued_bytes";
pub(crate) const FILE_INBOUND_FAILURES: &str = "jantar_file_inbound_failures_total";
pub(crate) const FILE_REPLICATION_REFUSED: &str = "jantar_file_replication_refused_total";
pub(crate) const FILE_REPLICATION_FETCHES: &str = "jantar_file_replication_fetches";
pub(crate) const FILE_STORAGE: &str = "jantar_file_storage_bytes";
pub(crate) const GOSSIP_MESSAGES: &str = "jantar_gossip_messages_total";
pub(crate) const ADMIN_REFUSED: &str = "jantar_admin_requests_refused_total";
pub(crate) const UPDATE_MANIFESTS: &str = "jantar_update_manifests_total";
pub(crate) const UPDATE_NEWEST: &str = "jantar_update_newest_sequence";
pub(crate) const UPDATE_APPLIED: &str = "jantar_update_applied_sequence";
pub(crate) const UPDATE_STATE: &str = "jantar_update_state";

/// Installs the process-wide recorder once and returns the handle `/metrics` renders.
pub(crate) fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several nodes);
            // then this handle still renders ours, which is empty, and that is fine.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(PEERS, Unit::Count, "Distinct peers currently connected.");
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open connections by kind (direct, relayed) and direction."
    );
    describe_counter!(
        CONNECTIONS_OPENED,
        "Connections established, by kind and direction."
    );
    describe_counter!(CONNECTIONS_CLOSED, "Connections closed, by kind.");
    describe_counter!(
        CONNECTIONS_DENIED,
        "Connections refused or failed before establishment, by reason."
    );
    describe_gauge!(
        DHT_ROUTING_TABLE_PEERS,
        Unit::Count,
        "Peers in the Kademlia routing table."
    );
    describe_gauge!(DHT_BUCKETS, Unit::Count, "Non-empty Kademlia buckets.");
    describe_counter!(
        DHT_QUERIES_SERVED,
        "Inbound Kademlia requests served, by kind."
    );
    describe_counter!(
        DHT_QUERIES_STARTED,
        "Kademlia queries this node started, by kind."
    );
    describe_counter!(
        DHT_QUERIES_FINISHED,
        "Kademlia queries this node finished, by kind and result."
    );
    describe_counter!(
        DHT_INSERTS_REFUSED,
        "Records or provider records from others that this node did not store, by kind and reason."
    );
    describe_counter!(
        DHT_ROUTING_REFUSED,
        "DHT servers kept out of the routing table, by reason (no_address, subnet_bucket, subnet_table)."
    );
    describe_gauge!(
        RELAY_RESERVATIONS,
        Unit::Count,
        "Active reservations on this relay."
    );
    describe_counter!(
        RELAY_RESERVATION_REQUESTS,
        "Reservation requests on this relay, by result (accepted, renewed, denied) and reason."
    );
    describe_gauge!(
        RELAY_CIRCUITS,
        Unit::Count,
        "Circuits this relay is carrying."
    );
    describe_counter!(
        RELAY_CIRCUIT_REQUESTS,
        "Circuit requests on this relay, by result (accepted, denied) and reason."
    );
    describe_counter!(
        RELAY_SOURCE_REFUSED,
        "Reservation and circuit requests this relay refused for their source: its IP or subnet held its share (per_ip, per_subnet) or the ACL refused it (acl_denied_peer, acl_denied_network, acl_not_allowed); by kind and reason."
    );
    describe_counter!(
        RELAY_RECEIVED_BYTES,
        Unit::Bytes,
        "Bytes this relay received on its streams (circuits and its own protocols), counted by its bandwidth budget."
    );
    describe_counter!(
        RELAY_BUDGET_WAITS,
        "Reads a relay stream deferred because of the bandwidth budget, by limit (total, stream)."
    );
    describe_gauge!(
        RELAY_BUDGET,
        Unit::Bytes,
        "The relay's configured bandwidth budget in bytes per second, by scope (total, stream); 0: none."
    );
    describe_counter!(
        AUTONAT_ADDRESS_REPORTS,
        "Addresses AutoNAT servers reported reaching this node at, by result: pending (too few subnets agree yet) or agreed (confirmed)."
    );
    describe_counter!(
        AUTONAT_GATED,
        "Inbound connections that got no AutoNAT service because their source IP or subnet had its share served, by reason."
    );
    describe_gauge!(
        RELAY_CLIENT_RESERVATIONS,
        Unit::Count,
        "Reservations this peer holds on relays."
    );
    describe_gauge!(
        NAT_STATUS,
        "1 for the NAT status this node believes it is in (unknown, public, private)."
    );
    describe_counter!(
        AUTONAT_PROBES_SERVED,
        "AutoNAT dial-back requests served, by result."
    );
    describe_counter!(HOLEPUNCH, "DCUtR hole-punch attempts, by result.");
    describe_counter!(
        GOSSIP_RECONNECTS,
        "Peers reconnected because their gossip subscriptions never arrived."
    );
    describe_counter!(DISCOVERED_PEERS, "Peers discovered, by source (dht, mdns).");
    describe_gauge!(
        PEER_STORE_PEERS,
        Unit::Count,
        "Peers in the peer store (known, connected or not)."
    );
    describe_counter!(
        PEERS_TRIMMED,
        "Peers closed because the node was above its high watermark."
    );
    describe_gauge!(
        PEERS_PROTECTED,
        Unit::Count,
        "Connected peers that trimming never closes (infrastructure, named, transfers, reservations)."
    );
    describe_gauge!(
        PEER_GROUPS,
        Unit::Count,
        "Distinct network groups (AS number, IPv4 /16, IPv6 /32, relay) among connected peers."
    );
    describe_gauge!(
        PEER_SCORE,
        "Mean score of connected peers, by component (total, rtt, uptime, availability, diversity), 0 to 1."
    );
    metrics::describe_histogram!(PEER_RTT, Unit::Seconds, "Ping round trips to peers.");
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the version and role.");
    describe_counter!(
        FILE_BYTES,
        Unit::Bytes,
        "File chunk bytes sent and received, by direction."
    );
    describe_counter!(
        FILE_BAD_DATA,
        "Manifests or chunks from providers that failed verification."
    );
    describe_counter!(
        FILE_UPLOADS_REFUSED,
        "File requests from other peers refused or dropped, by reason (per_peer: over serving.max_concurrent_per_peer; queue_full: over serving.max_queued; expired: waited past the request timeout)."
    );
    describe_gauge!(
        FILE_UPLOADS_ACCEPTED,
        Unit::Count,
        "File requests from other peers accepted and not yet answered (waiting, being read or being sent)."
    );
    describe_gauge!(
        FILE_UPLOAD_QUEUED_BYTES,
        Unit::Bytes,
        "Bytes of the chunk requests waiting for the upload budget (no data is held for them)."
    );
    describe_counter!(
        FILE_INBOUND_FAILURES,
        "File requests from other peers that failed, by reason (malformed, timeout, connection_closed, omitted, unsupported)."
    );
    describe_counter!(
        FILE_REPLICATION_REFUSED,
        "Announced files not replicated or replication fetches stopped, by reason (concurrency, quota, publisher_share, manifest, deadline)."
    );
    describe_gauge!(
        FILE_REPLICATION_FETCHES,
        Unit::Count,
        "Replication fetches running."
    );
    describe_gauge!(
        FILE_STORAGE,
        Unit::Bytes,
        "Quota in use, by kind (held: fetched files and replicas; reserved: for fetches running)."
    );
    describe_counter!(
        ADMIN_REFUSED,
        "Admin requests refused, by reason (browser: a web page or a rebound host name; token)."
    );
    describe_counter!(
        UPDATE_MANIFESTS,
        "Release manifests received or published, by result (accepted; duplicate: the newest again; refused, by reason)."
    );
    describe_gauge!(
        UPDATE_NEWEST,
        Unit::Count,
        "Sequence of the newest release this node verified (0: none)."
    );
    describe_gauge!(
        UPDATE_APPLIED,
        Unit::Count,
        "Highest release sequence applied, confirmed or rolled back (0: none)."
    );
    describe_gauge!(
        UPDATE_STATE,
        Unit::Count,
        "1 for the update state the node is in (label state), 0 for the others."
    );
    describe_counter!(
        GOSSIP_MESSAGES,
        "Gossip messages received, by topic and result (accepted; rejected: invalid; over_rate: over the sender's rate, dropped unforwarded)."
    );
}
