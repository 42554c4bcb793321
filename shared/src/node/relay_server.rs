//! What a relay carries: whether it serves (it has a confirmed external address to
//! advertise), the reservations and circuits it holds, what it refused, and their
//! metrics. The limits themselves are enforced by `relay::Behaviour` (see
//! [`crate::behaviour`]) and, per source, by its [`RelayGate`], which learns here when a
//! circuit it let through has ended.

use std::collections::HashMap;

use libp2p::{PeerId, relay};
use tracing::{debug, info};

use crate::{limits::RelayGate, metrics as m, status::RelayServerStatus};

pub(super) struct RelayServer {
    gate: Option<RelayGate>,
    serving: bool,
    reservations: HashMap<PeerId, usize>,
    circuits: usize,
    reservations_denied: u64,
    circuits_denied: u64,
}

impl RelayServer {
    pub(super) fn new(gate: Option<RelayGate>) -> Self {
        let r = RelayServer {
            gate,
            serving: false,
            reservations: HashMap::new(),
            circuits: 0,
            reservations_denied: 0,
            circuits_denied: 0,
        };
        r.update_gauges();
        r
    }

    /// A circuit the gate let through ended (closed, or refused further on: no
    /// reservation, the destination said no). A refusal for a limit was refused before
    /// or by the gate and holds no slot.
    fn circuit_ended(&self, src: &PeerId, refused_for_limit: bool) {
        if let Some(g) = &self.gate
            && !refused_for_limit
        {
            g.circuit_ended(src);
        }
    }

    /// Peers holding a reservation.
    pub(super) fn reservation_holders(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.reservations.keys().copied()
    }

    pub(super) fn serving(&self) -> bool {
        self.serving
    }

    /// Returns true when the relay started or stopped serving (its advertised
    /// addresses changed).
    pub(super) fn on_event(&mut self, e: relay::Event) -> bool {
        let mut status_changed = false;
        match e {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let result = if renewed { "renewed" } else { "accepted" };
                metrics::counter!(m::RELAY_RESERVATION_REQUESTS, "result" => result, "reason" => "ok").increment(1);
                if !renewed {
                    *self.reservations.entry(src_peer_id).or_default() += 1;
                    info!(peer = %src_peer_id, "relay reservation accepted");
                }
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                let reason = status_reason(status);
                self.reservations_denied += 1;
                metrics::counter!(m::RELAY_RESERVATION_REQUESTS, "result" => "denied", "reason" => reason).increment(1);
                info!(peer = %src_peer_id, reason, "relay reservation denied");
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                if let Some(n) = self.reservations.get_mut(&src_peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.reservations.remove(&src_peer_id);
                    }
                }
                debug!(peer = %src_peer_id, "relay reservation ended");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                self.circuits += 1;
                metrics::counter!(m::RELAY_CIRCUIT_REQUESTS, "result" => "accepted", "reason" => "ok").increment(1);
                info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                let for_limit = matches!(status, relay::StatusCode::ResourceLimitExceeded);
                let reason = status_reason(status);
                self.circuit_ended(&src_peer_id, for_limit);
                self.circuits_denied += 1;
                metrics::counter!(m::RELAY_CIRCUIT_REQUESTS, "result" => "denied", "reason" => reason).increment(1);
                info!(src = %src_peer_id, dst = %dst_peer_id, reason, "circuit denied");
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                self.circuits = self.circuits.saturating_sub(1);
                self.circuit_ended(&src_peer_id, false);
                debug!(src = %src_peer_id, dst = %dst_peer_id, error = ?error.map(|e| e.to_string()), "circuit closed");
            }
            relay::Event::StatusChanged { status } => {
                self.serving = status == relay::Status::Enable;
                info!(serving = self.serving, "relay service status changed");
                status_changed = true;
            }
            _ => {}
        }
        self.update_gauges();
        status_changed
    }

    pub(super) fn status(&self) -> RelayServerStatus {
        RelayServerStatus {
            serving: self.serving,
            reservations: self.reservations.values().sum(),
            circuits: self.circuits,
            reservations_denied: self.reservations_denied,
            circuits_denied: self.circuits_denied,
        }
    }

    fn update_gauges(&self) {
        metrics::gauge!(m::RELAY_RESERVATIONS)
            .set(self.reservations.values().sum::<usize>() as f64);
        metrics::gauge!(m::RELAY_CIRCUITS).set(self.circuits as f64);
    }
}

fn status_reason(s: relay::StatusCode) -> &'static str {
    match s {
        relay::StatusCode::OK => "ok",
        relay::StatusCode::ReservationRefused => "reservation_refused",
        relay::StatusCode::ResourceLimitExceeded => "resource_limit_exceeded",
        relay::StatusCode::PermissionDenied => "permission_denied",
        relay::StatusCode::ConnectionFailed => "connection_failed",
        relay::StatusCode::NoReservation => "no_reservation",
        relay::StatusCode::MalformedMessage => "malformed_message",
        relay::StatusCode::UnexpectedMessage => "unexpected_message",
    }
}
