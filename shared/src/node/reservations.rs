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

/// A reservation accepted at least this long ago whose connection then closed was
/// working: it is requested again at once (the link went down, the relay restarted).
/// One that ends sooner waits out [`RELAY_BACKOFF`], so a relay that keeps closing
/// the connection is asked at most once per backoff.
const STABLE_RESERVATION: Duration = RELAY_BACKOFF;

/// A reservation this peer holds or is working towards.
#[derive(Debug, Clone)]
struct Reservation {
    /// `None` while the relay is being dialed.
    listener: Option<ListenerId>,
    /// When the relay accepted it.
    accepted: Option<Instant>,
    addr: Option<Multiaddr>,
    /// When the dial or the request started.
    since: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Reservations {
    held: HashMap<PeerId, Reservation>,
    /// Reservations given up while their request was unanswered, by relay: their
    /// listener is removed once the relay answers. libp2p's relay client (0.22) forgets
    /// a connection's reservation when its listener is removed and panics when the
    /// answer then arrives.
    unanswered: HashMap<PeerId, ListenerId>,
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

    /// Relays held or being requested.
    pub(super) fn relays(&self) -> impl Iterator<Item = &PeerId> {
        self.held.keys()
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
                accepted: None,
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

    pub(super) fn accepted(&mut self, relay: &PeerId, now: Instant) {
        if let Some(r) = self.held.get_mut(relay) {
            r.accepted.get_or_insert(now);
        }
        self.backoff.remove(relay);
        self.update_gauge();
    }

    /// Drops the reservation on `relay` without holding it against the relay.
    pub(super) fn forget(&mut self, relay: &PeerId) {
        self.held.remove(relay);
    }

    /// The connection holding the reservation on `relay` closed. A reservation that had
    /// been working for [`STABLE_RESERVATION`] is dropped without a backoff, so it is
    /// requested again at once; returns whether it was.
    pub(super) fn connection_lost(&mut self, relay: PeerId, now: Instant) -> bool {
        let stable = self
            .held
            .get(&relay)
            .and_then(|r| r.accepted)
            .is_some_and(|at| now.saturating_duration_since(at) >= STABLE_RESERVATION);
        if stable {
            self.held.remove(&relay);
            self.update_gauge();
        } else {
            self.failed(relay, now);
        }
        stable
    }

    /// Drops the reservation on `relay`, which is left alone for [`RELAY_BACKOFF`].
    pub(super) fn failed(&mut self, relay: PeerId, now: Instant) {
        self.held.remove(&relay);
        self.backoff.insert(relay, now + RELAY_BACKOFF);
        self.update_gauge();
    }

    /// Ends every reservation; returns the listeners to remove now. A request still
    /// unanswered keeps its listener until the answer ([`Reservations::answered`]).
    pub(super) fn clear(&mut self) -> Vec<ListenerId> {
        let mut now = Vec::new();
        for (relay, r) in self.held.drain() {
            match r.listener {
                Some(l) if r.accepted.is_none() => {
                    self.unanswered.insert(relay, l);
                }
                Some(l) => now.push(l),
                None => {}
            }
        }
        self.update_gauge();
        now
    }

    /// The relay answered a request given up meanwhile: its listener, to remove now.
    pub(super) fn answered(&mut self, relay: &PeerId) -> Option<ListenerId> {
        self.unanswered.remove(relay)
    }

    /// A listener closed: a given-up request needs nothing more.
    pub(super) fn listener_gone(&mut self, listener: ListenerId) {
        self.unanswered.retain(|_, l| *l != listener);
    }

    pub(super) fn statuses(&self) -> Vec<ReservationStatus> {
        let mut v: Vec<ReservationStatus> = self
            .held
            .iter()
            .map(|(relay, r)| ReservationStatus {
                relay: relay.to_string(),
                state: if r.accepted.is_some() {
                    "active"
                } else {
                    "pending"
                }
                .into(),
                address: r.addr.as_ref().map(|a| a.to_string()),
            })
            .collect();
        v.sort_by(|a, b| a.relay.cmp(&b.relay));
        v
    }

    /// `jantar_relay_client_reservations`: the ones the relays accepted.
    fn update_gauge(&self) {
        let active = self.held.values().filter(|r| r.accepted.is_some()).count();
        metrics::gauge!(m::RELAY_CLIENT_RESERVATIONS).set(active as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_request_keeps_its_listener_until_the_answer() {
        let mut r = Reservations::new();
        let now = Instant::now();
        let (answered, pending, dialing) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (l1, l2) = (ListenerId::next(), ListenerId::next());
        for relay in [answered, pending, dialing] {
            r.begin(relay, now);
        }
        r.requested(&answered, l1, now);
        r.accepted(&answered, now);
        r.requested(&pending, l2, now);

        // Given up: the accepted one's listener goes now, the unanswered one's later.
        assert_eq!(r.clear(), vec![l1]);
        assert!(r.is_empty());
        assert_eq!(r.answered(&pending), Some(l2));
        assert_eq!(r.answered(&pending), None);

        // A refusal closes the listener itself: nothing is left to remove.
        r.begin(pending, now);
        r.requested(&pending, l2, now);
        assert!(r.clear().is_empty());
        r.listener_gone(l2);
        assert_eq!(r.answered(&pending), None);
    }

    #[test]
    fn a_working_reservation_whose_connection_closed_is_requested_again_at_once() {
        let mut r = Reservations::new();
        let t0 = Instant::now();
        let (stable, young, refused) = (PeerId::random(), PeerId::random(), PeerId::random());
        for relay in [stable, young] {
            r.begin(relay, t0);
            r.requested(&relay, ListenerId::next(), t0);
        }
        r.accepted(&stable, t0);
        let later = t0 + STABLE_RESERVATION;
        r.accepted(&young, later - Duration::from_secs(1));

        assert!(r.connection_lost(stable, later));
        assert!(
            r.available(&stable),
            "no backoff after a working reservation"
        );

        // Accepted a moment ago and gone again: the relay is left alone for a while.
        assert!(!r.connection_lost(young, later));
        assert!(!r.available(&young));
        r.expire_backoff(later + RELAY_BACKOFF);
        assert!(r.available(&young));

        // Never accepted: a refusal or a relay that drops requests, backed off too.
        r.begin(refused, later);
        assert!(!r.connection_lost(refused, later));
        assert!(!r.available(&refused));
    }
}
