//! Relay service floods: Sybil identities in this process ([`jantar_tests::sybil`])
//! asking a real `jantar-relay` on 127.0.0.1 for reservations and circuits, from one
//! address, from one /24, and from networks the relay's ACL refuses.
//!
//! The relays set `network.connection_limits.limit_private_sources`, so that `127.0.66.0/24`
//! stands for one public /24 and the honest peer's 127.0.0.1 for another. Their
//! connection limits and request rates are raised so that every Sybil connects and
//! its request reaches the caps per source: those are what is tested.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    harness::{LOOPBACK, Node, Role, diagnose_all, metric_sum, start_serving_relay},
    sybil::{Command, Sybil, Tally},
};
use libp2p::{Multiaddr, identity::Keypair};

use crate::{READY, memory_bounded};

/// How long a batch of Sybils may take to get its answers, and the honest peer its
/// reservation.
const ANSWERED: Duration = Duration::from_secs(30);

/// Sybils asking at once: below the raised handshake caps.
const BATCH: usize = 50;

/// Connection settings of the relays: per-source caps on loopback, and room for every
/// Sybil to connect.
const RELAY_NETWORK: &str = "  connection_limits: {limit_private_sources: true, max_peers: 2000, max_connections_per_ip: 2000, max_pending_per_ip: 64, max_pending_per_subnet: 256}\n";

/// Reservation and circuit rates high enough that no request is refused before the caps
/// see it.
const RELAY_RATES: &str = "  reservation_rate_per_ip: {limit: 10000, interval: 1m}\n  reservation_rate_per_peer: {limit: 100, interval: 1m}\n  circuit_rate_per_ip: {limit: 10000, interval: 1m}\n";

/// Starts a relay held to per-source caps on loopback, with room for every Sybil to
/// connect; `relay` goes under the `relay:` key.
async fn start_relay(root: &Path, name: &str, relay: &str) -> Result<Node> {
    start_serving_relay(
        root,
        name,
        LOOPBACK,
        RELAY_NETWORK,
        &format!("{RELAY_RATES}{relay}"),
    )
    .await
}

/// An honest peer on 127.0.0.1 (no DHT) that holds a reservation on each of `relays`
/// (none when there are none).
async fn honest_peer(root: &Path, name: &str, relays: &[&Node]) -> Result<Node> {
    let list: Vec<String> = relays.iter().map(|r| format!("\"{}\"", r.addr())).collect();
    let reserve = if list.is_empty() {
        String::new()
    } else {
        format!(
            "  relay_reservations: always\n  relay_nodes: [{}]\n",
            list.join(", ")
        )
    };
    let mut p = Node::start(
        root,
        name,
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{reserve}"
        ),
    )
    .await?;
    p.wait_ready(READY).await?;
    Ok(p)
}

/// Waits until `peer` holds an active reservation on `relay`.
async fn wait_reserved(peer: &mut Node, relay: &Node) -> Result<()> {
    let relay_id = relay.peer_id.clone();
    peer.wait_until(
        ANSWERED,
        &format!("a reservation on {}", relay.name),
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["reservations"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["state"] == "active" && r["relay"] == relay_id.as_str())
            }))
        },
    )
    .await
}

/// Answers the Sybils of `tally` have had: granted, refused, or failed otherwise.
fn answered(tally: &Tally) -> usize {
    Tally::get(&tally.reserved)
        + Tally::get(&tally.reservation_refused)
        + Tally::get(&tally.reservation_failed)
}

/// Starts one Sybil per entry of `keys_and_sources`, each asking every relay of `relays`
/// for a reservation, in batches of [`BATCH`]; waits until each batch has all its
/// answers. The Sybils granted a reservation are returned, so the test holds them (and
/// their reservations); the others are dropped, closing their connections as the relay
/// would once they idle (how many connections one address may hold is
/// `max_connections_per_ip`, raised here).
pub(crate) async fn ask_for_reservations(
    keys_and_sources: impl IntoIterator<Item = (Keypair, IpAddr)>,
    relays: &[Multiaddr],
    tally: &Arc<Tally>,
) -> Result<Vec<Sybil>> {
    let (mut held, mut batch) = (Vec::new(), Vec::new());
    let mut keys_and_sources = keys_and_sources.into_iter().peekable();
    while let Some((key, source)) = keys_and_sources.next() {
        let s = Sybil::spawn_with_key(key, source, &[], &[], tally.clone())?;
        for relay in relays {
            s.command(Command::Reserve(relay.clone()))?;
        }
        batch.push(s);
        if batch.len() == BATCH || keys_and_sources.peek().is_none() {
            let deadline = tokio::time::Instant::now() + ANSWERED;
            while batch.iter().any(|s| answered(&s.tally) < relays.len()) {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{} of {} Sybils still wait for an answer from {} relays: {tally:?}",
                    batch
                        .iter()
                        .filter(|s| answered(&s.tally) < relays.len())
                        .count(),
                    batch.len(),
                    relays.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            held.extend(
                batch
                    .drain(..)
                    .filter(|s| Tally::get(&s.tally.reserved) > 0),
            );
        }
    }
    Ok(held)
}

/// `n` fresh identities, spread round-robin over `sources`.
pub(crate) fn identities(
    n: usize,
    sources: &[IpAddr],
) -> impl Iterator<Item = (Keypair, IpAddr)> + '_ {
    (0..n).map(|i| (Keypair::generate_ed25519(), sources[i % sources.len()]))
}

/// The relay's reservations now, from its `/status`.
async fn reservations(relay: &Node) -> Result<u64> {
    let st = relay.status().await?;
    st["relay"]["reservations"]
        .as_u64()
        .with_context(|| format!("no relay.reservations in {st}"))
}

/// `jantar_relay_source_refused_total` of `kind` for `reason`.
async fn refused(relay: &Node, kind: &str, reason: &str) -> Result<f64> {
    let m = relay.metrics().await?;
    Ok(metric_sum(
        &m,
        "jantar_relay_source_refused_total",
        &[&format!("kind=\"{kind}\""), &format!("reason=\"{reason}\"")],
    ))
}

/// 1,000 identities from `127.0.66.1` ask the relay for a reservation: it grants 8 (the
/// per-IP cap) and refuses the rest for their address. 100 identities spread over ten
/// addresses of `127.0.67.0/24` take at most 32 (the per-subnet cap). An honest peer
/// from 127.0.0.1 still gets its reservation, and the relay's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_flood_from_one_ip_holds_its_share() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), "relay", "").await?;
    let mut honest = None;
    let result = reservation_flood(dir.path(), &relay, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&relay];
        nodes.extend(honest.as_ref());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn reservation_flood(root: &Path, relay: &Node, honest: &mut Option<Node>) -> Result<()> {
    let before = relay.memory()?;
    let target: Multiaddr = relay.addr().parse()?;
    let start = std::time::Instant::now();

    // One address.
    let one_ip = Arc::new(Tally::default());
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1));
    let flood = ask_for_reservations(
        identities(1000, &[source]),
        std::slice::from_ref(&target),
        &one_ip,
    )
    .await?;
    let held = reservations(relay).await?;
    ensure!(
        Tally::get(&one_ip.reserved) <= 8 && held <= 8,
        "1,000 identities from one address hold {} reservations ({held} on the relay): {one_ip:?}",
        Tally::get(&one_ip.reserved)
    );
    let per_ip = refused(relay, "reservation", "per_ip").await?;
    ensure!(
        per_ip as usize >= 1000 - 8 - Tally::get(&one_ip.reservation_failed),
        "only {per_ip} reservations refused for their address: {one_ip:?}"
    );
    eprintln!(
        "one address, after {:?}: {one_ip:?}, {held} held, {per_ip} refused per IP",
        start.elapsed()
    );

    // Ten addresses of one /24.
    let subnet = Arc::new(Tally::default());
    let sources: Vec<IpAddr> = (1..=10)
        .map(|host| IpAddr::V4(Ipv4Addr::new(127, 0, 67, host)))
        .collect();
    let spread = ask_for_reservations(
        identities(100, &sources),
        std::slice::from_ref(&target),
        &subnet,
    )
    .await?;
    let held_subnet = Tally::get(&subnet.reserved);
    let held = reservations(relay).await?;
    ensure!(
        held_subnet <= 32 && held <= 8 + 32,
        "identities from ten addresses of one /24 hold {held_subnet} reservations ({held} on the relay): {subnet:?}"
    );
    let per_subnet = refused(relay, "reservation", "per_subnet").await?;
    ensure!(
        per_subnet >= 1.0,
        "no reservation refused for its subnet: {subnet:?}"
    );
    eprintln!(
        "one /24, after {:?}: {subnet:?}, {held} held in all, {per_subnet} refused per subnet",
        start.elapsed()
    );

    // An honest peer from another /24.
    let p = honest.insert(honest_peer(root, "honest", &[relay]).await?);
    wait_reserved(p, relay).await?;
    let m = relay.metrics().await?;
    let gauge = metric_sum(&m, "jantar_relay_reservations", &[]);
    ensure!(
        gauge <= (8 + 32 + 1) as f64,
        "the relay counts {gauge} reservations"
    );
    let after = memory_bounded(relay, before)?;
    eprintln!("relay memory {before:?} -> {after:?}");
    drop((flood, spread));
    Ok(())
}

/// A relay that denies `127.0.66.0/24` and one peer id refuses them (`acl_denied_network`,
/// `acl_denied_peer`) and serves a Sybil of another /24; a relay that allows only
/// `127.0.0.0/24` refuses every Sybil (`acl_not_allowed`). An honest peer from
/// 127.0.0.1 holds a reservation on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_acl_refuses_denied_sources_and_serves_allowed_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let denied = Keypair::generate_ed25519();
    let denied_id = denied.public().to_peer_id();
    let deny = start_relay(
        dir.path(),
        "deny",
        &format!("  acl: {{deny_networks: [\"127.0.66.0/24\"], deny_peers: [\"{denied_id}\"]}}\n"),
    )
    .await?;
    let allow = start_relay(
        dir.path(),
        "allow",
        "  acl: {allow_networks: [\"127.0.0.0/24\"]}\n",
    )
    .await?;
    let mut honest = None;
    let result = acl(dir.path(), &deny, &allow, denied, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&deny, &allow];
        nodes.extend(honest.as_ref());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn acl(
    root: &Path,
    deny: &Node,
    allow: &Node,
    denied: Keypair,
    honest: &mut Option<Node>,
) -> Result<()> {
    let before = (deny.memory()?, allow.memory()?);
    let relays = [deny.addr().parse()?, allow.addr().parse()?];
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 67, 1));

    // 20 identities from the denied network, and the denied peer from another one.
    let tally = Arc::new(Tally::default());
    let mut sybils = ask_for_reservations(
        identities(20, &[IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1))]),
        &relays,
        &tally,
    )
    .await?;
    sybils.extend(ask_for_reservations([(denied, other)], &relays, &tally).await?);
    ensure!(
        Tally::get(&tally.reserved) == 0 && Tally::get(&tally.reservation_refused) == 42,
        "denied Sybils were not all refused by both relays: {tally:?}"
    );
    for (relay, reason, want) in [
        (deny, "acl_denied_network", 20.0),
        (deny, "acl_denied_peer", 1.0),
        (allow, "acl_not_allowed", 21.0),
    ] {
        let n = refused(relay, "reservation", reason).await?;
        ensure!(
            n == want,
            "{}: {n} reservations refused as {reason}, {want} expected",
            relay.name
        );
    }

    // A Sybil of another /24, not denied, is served by the denying relay only.
    let control = Arc::new(Tally::default());
    sybils.extend(
        ask_for_reservations(
            identities(1, &[IpAddr::V4(Ipv4Addr::new(127, 0, 67, 2))]),
            &relays,
            &control,
        )
        .await?,
    );
    ensure!(
        Tally::get(&control.reserved) == 1 && Tally::get(&control.reservation_refused) == 1,
        "a Sybil outside the denied network: {control:?}"
    );
    ensure!(
        refused(allow, "reservation", "acl_not_allowed").await? == 22.0,
        "the allow-listing relay did not refuse the Sybil outside its network"
    );
    for relay in [deny, allow] {
        let held = reservations(relay).await?;
        ensure!(
            held == u64::from(relay.name == "deny"),
            "{} holds {held} reservations",
            relay.name
        );
    }

    // The honest peer, from the allowed network, reserves on both.
    let p = honest.insert(honest_peer(root, "honest", &[deny, allow]).await?);
    wait_reserved(p, deny).await?;
    wait_reserved(p, allow).await?;
    memory_bounded(deny, before.0)?;
    memory_bounded(allow, before.1)?;
    drop(sybils);
    Ok(())
}

/// Opens one Sybil per entry of `sources`, each asking for a circuit through `circuit`
/// (`<relay>/p2p-circuit/p2p/<target>`), and waits until each has its answer: a circuit,
/// or a failed dial. All are returned, so the test holds the circuits open.
async fn ask_for_circuits(
    sources: impl IntoIterator<Item = IpAddr>,
    circuit: &Multiaddr,
    tally: &Arc<Tally>,
) -> Result<Vec<Sybil>> {
    let mut all = Vec::new();
    for source in sources {
        let s = Sybil::spawn(source, &[], &[], tally.clone())?;
        s.command(Command::Dial(circuit.clone()))?;
        all.push(s);
    }
    let answered = |s: &Sybil| Tally::get(&s.tally.circuits) + Tally::get(&s.tally.dial_failed);
    let deadline = tokio::time::Instant::now() + ANSWERED;
    while all.iter().any(|s| answered(s) == 0) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {} circuit requests unanswered: {tally:?}",
            all.iter().filter(|s| answered(s) == 0).count(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(all)
}

/// The relay's open circuits, from its `/status`.
async fn circuits(relay: &Node) -> Result<u64> {
    let st = relay.status().await?;
    st["relay"]["circuits"]
        .as_u64()
        .with_context(|| format!("no relay.circuits in {st}"))
}

/// 20 identities from `127.0.66.1` ask the relay for a circuit to an honest peer that
/// holds a reservation on it: the relay opens 4 (the per-IP cap) and refuses the rest
/// for their address; 20 identities over five addresses of `127.0.67.0/24` get at most
/// 8 (the per-subnet cap). Another honest peer from 127.0.0.1 still reaches the first
/// through the relay, and the relay's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_flood_from_one_ip_holds_its_share() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), "relay", "").await?;
    let mut honest = Vec::new();
    let result = circuit_flood(dir.path(), &relay, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&relay];
        nodes.extend(honest.iter());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn circuit_flood(root: &Path, relay: &Node, honest: &mut Vec<Node>) -> Result<()> {
    let before = relay.memory()?;
    let target = honest_peer(root, "target", &[relay]).await?;
    honest.push(target);
    wait_reserved(&mut honest[0], relay).await?;
    let circuit: Multiaddr =
        format!("{}/p2p-circuit/p2p/{}", relay.addr(), honest[0].peer_id).parse()?;

    // One address.
    let one_ip = Arc::new(Tally::default());
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1));
    let flood = ask_for_circuits([source; 20], &circuit, &one_ip).await?;
    let open = circuits(relay).await?;
    ensure!(
        Tally::get(&one_ip.circuits) <= 4 && open <= 4,
        "20 identities from one address opened {} circuits ({open} open on the relay): {one_ip:?}",
        Tally::get(&one_ip.circuits)
    );
    let per_ip = refused(relay, "circuit", "per_ip").await?;
    ensure!(
        per_ip >= 16.0,
        "only {per_ip} circuits refused for their address: {one_ip:?}"
    );
    eprintln!("one address: {one_ip:?}, {open} open, {per_ip} refused per IP");

    // Five addresses of one /24.
    let subnet = Arc::new(Tally::default());
    let sources = (0..20).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 67, 1 + i % 5)));
    let spread = ask_for_circuits(sources, &circuit, &subnet).await?;
    let open = circuits(relay).await?;
    ensure!(
        Tally::get(&subnet.circuits) <= 8 && open <= 4 + 8,
        "identities from five addresses of one /24 opened {} circuits ({open} open on the relay): {subnet:?}",
        Tally::get(&subnet.circuits)
    );
    let per_subnet = refused(relay, "circuit", "per_subnet").await?;
    ensure!(
        per_subnet >= 1.0,
        "no circuit refused for its subnet: {subnet:?}"
    );
    eprintln!("one /24: {subnet:?}, {open} open in all, {per_subnet} refused per subnet");

    // An honest visitor from another /24 reaches the target through the relay.
    let visitor = honest_peer(root, "visitor", &[]).await?;
    honest.push(visitor);
    let (code, conn) = honest[1]
        .post_json("/connect", &[("addr", &circuit.to_string())])
        .await?;
    ensure!(
        code == 200 && conn["kind"] == "relayed",
        "the visitor's circuit: HTTP {code} {conn}"
    );
    memory_bounded(relay, before)?;
    drop((flood, spread));
    Ok(())
}
