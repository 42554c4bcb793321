//! The bookkeeping of a peer's relay reservations: each one from the dial that precedes
//! it to the relay's answer, the circuit address it gives, and the relays left alone
//! for a while after one failed. [`super::relay_client`] decides which to hold.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, core::transport::ListenerId};

use crate::{metrics as m, status::ReservationStatus};

/// How long a relay that refused or dropped a reservation is left alone.
const RELAY_BACKOFF: Duration = Duration::from_secs(30);

/// A reservation this peer holds or is working towards.
#[derive(Debug, Clone)]
struct Reservation {
    /// `None` while the relay is being dialed.
    listener: Option<ListenerId>,
    accepted: bool,
    addr: Option<Multiaddr>,
    /// When the dial or the request started.
    since: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Reservations {
    held: HashMap<PeerId, Reservation>,
    /// Relays to leave alone until the given time after a failed reservation.
    backoff: HashMap<PeerId, Instant>,
}

impl Reservations {
    pub(super) fn new() -> Self {
        let r = Reservations::default();
        r.update_gauge();
        r
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Neither held (or being set up) nor backing off.
    pub(super) fn available(&self, relay: &PeerId) -> bool {
        !self.held.contains_key(relay) && !self.backoff.contains_key(relay)
    }

    /// Forgets backoffs that ran out.
    pub(super) fn expire_backoff(&mut self, now: Instant) {
        self.backoff.retain(|_, until| *until > now);
    }

    /// A reservation on `relay` begins: its relay is being dialed.
    pub(super) fn begin(&mut self, relay: PeerId, now: Instant) {
        self.held.insert(
            relay,
            Reservation {
                listener: None,
                accepted: false,
                addr: None,
                since: now,
            },
        );
    }

    /// Whether the reservation on `relay` waits for its relay's connection.
    pub(super) fn is_dialing(&self, relay: &PeerId) -> bool {
        self.held.get(relay).is_some_and(|r| r.listener.is_none())
    }

    /// The reservations waiting for their relay's connection, with when they began.
    pub(super) fn dialing(&self) -> Vec<(PeerId, Instant)> {
        self.held
            .iter()
            .filter(|(_, r)| r.listener.is_none())
            .map(|(p, r)| (*p, r.since))
            .collect()
    }

    /// The relay is connected and the reservation requested through `listener`.
    pub(super) fn requested(&mut self, relay: &PeerId, listener: ListenerId, now: Instant) {
        if let Some(r) = self.held.get_mut(relay) {
            r.listener = Some(listener);
            r.since = now;
        }
    }

    pub(super) fn of_listener(&self, listener: ListenerId) -> Option<PeerId> {
        self.held
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
            .map(|(p, _)| *p)
    }

    /// The circuit address others reach this peer at through `relay`.
    pub(super) fn reachable_at(&mut self, relay: &PeerId, addr: Multiaddr) {
        if let Some(r) = self.held.get_mut(relay) {
            r.addr = Some(addr);
        }
    }

    pub(super) fn accepted(&mut self, relay: &PeerId) {
        if let Some(r) = self.held.get_mut(relay) {
            r.accepted = true;
        }
        self.backoff.remove(relay);
        self.update_gauge();
    }

    /// Drops the reservation on `relay` without holding it against the relay.
    pub(super) fn forget(&mut self, relay: &PeerId) {
        self.held.remove(relay);
    }

    /// Drops the reservation on `relay`, which is left alone for [`RELAY_BACKOFF`].
    pub(super) fn failed(&mut self, relay: PeerId, now: Instant) {
        self.held.remove(&relay);
        self.backoff.insert(relay, now + RELAY_BACKOFF);
        self.update_gauge();
    }

    /// Ends every reservation; returns the listeners to remove.
    pub(super) fn clear(&mut self) -> Vec<ListenerId> {
        let listeners = self.held.drain().filter_map(|(_, r)| r.listener).collect();
        self.update_gauge();
        listeners
    }

    pub(super) fn statuses(&self) -> Vec<ReservationStatus> {
        let mut v: Vec<ReservationStatus> = self
            .held
            .iter()
            .map(|(relay, r)| ReservationStatus {
                relay: relay.to_string(),
                state: if r.accepted { "active" } else { "pending" }.into(),
                address: r.addr.as_ref().map(|a| a.to_string()),
            })
            .collect();
        v.sort_by(|a, b| a.relay.cmp(&b.relay));
        v
    }

    /// `jantar_relay_client_reservations`: the ones the relays accepted.
    fn update_gauge(&self) {
        let active = self.held.values().filter(|r| r.accepted).count();
        metrics::gauge!(m::RELAY_CLIENT_RESERVATIONS).set(active as f64);
    }
}
