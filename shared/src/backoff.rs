//! Exponential backoff for retrying contact with the network.

use std::time::{Duration, Instant};

/// Retries at `initial`, then twice as long each time, up to `max`; `reset` starts over.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    next: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            delay: initial,
            next: None,
        }
    }

    /// True when an attempt is due at `now`; schedules the one after.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(next) if now < next => false,
            _ => {
                self.next = Some(now + self.delay);
                self.delay = (self.delay * 2).min(self.max);
                true
            }
        }
    }

    /// Success: the next failure starts again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.delay = self.initial;
        self.next = None;
    }

    /// The wait before the attempt after the next one.
    pub(crate) fn current_delay(&self) -> Duration {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let t = Instant::now();
        assert!(b.due(t));
        assert!(!b.due(t + Duration::from_millis(999)));
        assert!(b.due(t + Duration::from_secs(1)));
        // 2s after the second attempt
        assert!(!b.due(t + Duration::from_millis(2999)));
        assert!(b.due(t + Duration::from_secs(3)));
        // 4s, then capped at 5s
        assert!(b.due(t + Duration::from_secs(7)));
        assert_eq!(b.current_delay(), Duration::from_secs(5));
        assert!(!b.due(t + Duration::from_secs(11)));
        assert!(b.due(t + Duration::from_secs(12)));
        b.reset();
        assert!(b.due(t + Duration::from_secs(12)));
        assert_eq!(b.current_delay(), Duration::from_secs(2));
    }
}
