//! systemd integration: `READY=1` once listeners are bound, `WATCHDOG=1` from the event
//! loop, `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` these do nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half of `WatchdogSec`, when systemd set one.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify systemd");
    }
}
