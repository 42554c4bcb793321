//! A relay's bandwidth budget: how fast it takes in bytes, on every stream of every
//! connection together and on each stream alone.
//!
//! `relay::Behaviour` copies a circuit's bytes between two streams inside its handler
//! and offers no hook on that copy, so the budget sits below it: every connection's
//! muxer is wrapped ([`ThrottledMuxer`]) and every stream it opens or accepts reads
//! through [`Throttled`]. A circuit is two streams (one from its source, one to its
//! destination), so the per-stream rate is the rate of one direction of one circuit.
//! Only reads are held back: what the relay does not read it does not forward, and the
//! sender's flow-control window fills and slows the sender.
//!
//! Fairness: when the total budget runs short, streams that want more wait in a queue
//! and take one quantum each in turn (round robin), so a circuit that pumps as fast as
//! it can gets the same share as one that merely keeps up. The first in line is woken
//! when its turn comes; if it does not come for it within [`TURN_TIMEOUT`] (its
//! circuit's other end stopped reading, so nobody polls it), the next goes ahead. A
//! stream that waits holds no buffer: the bytes stay in the sender's window.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use tokio::time::{Instant, Sleep};

use crate::metrics as m;

/// The smallest and largest read a stream makes in its turn.
const MIN_QUANTUM: u64 = 16 * 1024;
const MAX_QUANTUM: u64 = 256 * 1024;

/// A token bucket of bytes: `rate` per second, holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(bytes_per_second: u64, now: Instant) -> Self {
        let rate = bytes_per_second as f64;
        // A quarter second of traffic, and at least one quantum.
        let burst = (rate / 4.0).max(MIN_QUANTUM as f64);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until `n` tokens are there.
    fn time_for(&self, n: f64) -> Duration {
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate)
        }
    }
}

/// How long the first stream in line may take to come for its turn before the next
/// one goes ahead of it (its owner may have stopped reading: a circuit whose other end
/// does not read is not polled), and how often a waiting stream looks again.
const TURN_TIMEOUT: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Waiting {
    ticket: u64,
    waker: Waker,
}

#[derive(Debug)]
struct Total {
    bucket: Bucket,
    quantum: u64,
    /// Streams waiting for their turn, first in line first.
    queue: VecDeque<Waiting>,
    next_ticket: u64,
    /// Since when the first in line has had its turn.
    front_since: Instant,
}

impl Total {
    /// The first in line leaves (it read, or it was dropped); the next is told.
    fn pass_turn(&mut self, now: Instant) {
        self.queue.pop_front();
        self.front_since = now;
        if let Some(next) = self.queue.front() {
            next.waker.wake_by_ref();
        }
    }
}

/// The budget every stream of the node reads through; see the module documentation.
#[derive(Debug)]
pub struct Budget {
    total: Option<Mutex<Total>>,
    per_stream: Option<u64>,
}

impl Budget {
    /// `total` bytes per second over all streams, `per_stream` for each; `0` for no
    /// limit. `None` when neither limits anything.
    pub fn new(total: u64, per_stream: u64) -> Option<Arc<Budget>> {
        if total == 0 && per_stream == 0 {
            return None;
        }
        let now = Instant::now();
        let total = (total > 0).then(|| {
            Mutex::new(Total {
                bucket: Bucket::new(total, now),
                quantum: (total / 64).clamp(MIN_QUANTUM, MAX_QUANTUM),
                queue: VecDeque::new(),
                next_ticket: 0,
                front_since: now,
            })
        });
        Some(Arc::new(Budget {
            total,
            per_stream: (per_stream > 0).then_some(per_stream),
        }))
    }

    fn total(&self) -> Option<MutexGuard<'_, Total>> {
        // The state is counters only; a panic elsewhere leaves it usable.
        self.total
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What a stream may do now.
enum Turn {
    /// Read at most this many bytes.
    Read(usize),
    /// Try again after this long.
    Wait(Duration),
}

/// A stream that reads through a [`Budget`].
pub struct Throttled<S> {
    inner: S,
    budget: Arc<Budget>,
    own: Option<Bucket>,
    ticket: Option<u64>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, budget: Arc<Budget>) -> Self {
        let own = budget
            .per_stream
            .map(|rate| Bucket::new(rate, Instant::now()));
        Throttled {
            inner,
            budget,
            own,
            ticket: None,
            sleep: None,
        }
    }

    fn turn(&mut self, want: usize, now: Instant, waker: &Waker) -> Turn {
        let mut allowed = want as f64;
        if let Some(own) = &mut self.own {
            own.refill(now);
            if own.tokens < 1.0 {
                metrics::counter!(m::RELAY_BUDGET_WAITS, "limit" => "stream").increment(1);
                return Turn::Wait(own.time_for(MIN_QUANTUM.min(want as u64) as f64));
            }
            allowed = allowed.min(own.tokens);
        }
        let Some(mut total) = self.budget.total() else {
            return Turn::Read(allowed as usize);
        };
        total.bucket.refill(now);
        let quantum = total.quantum as f64;
        let read = |tokens: f64| Turn::Read(allowed.min(quantum).min(tokens) as usize);
        let Some(ticket) = self.ticket else {
            if total.queue.is_empty() && total.bucket.tokens >= 1.0 {
                return read(total.bucket.tokens);
            }
            // Get in line.
            let ticket = total.next_ticket;
            total.next_ticket += 1;
            if total.queue.is_empty() {
                total.front_since = now;
            }
            total.queue.push_back(Waiting {
                ticket,
                waker: waker.clone(),
            });
            self.ticket = Some(ticket);
            metrics::counter!(m::RELAY_BUDGET_WAITS, "limit" => "total").increment(1);
            return self.wait_in_line(&mut total, want as f64, now);
        };
        let Some(position) = total.queue.iter().position(|w| w.ticket == ticket) else {
            // Passed over while it did not come for its turn: in line again, at the end.
            self.ticket = None;
            drop(total);
            return self.turn(want, now, waker);
        };
        // The first in line waits for a whole quantum (or what it asks for, if less):
        // every turn is worth the same.
        if position == 0 && total.bucket.tokens >= quantum.min(want as f64) {
            let tokens = total.bucket.tokens;
            total.pass_turn(now);
            self.ticket = None;
            return read(tokens);
        }
        total.queue[position].waker.clone_from(waker);
        self.wait_in_line(&mut total, want as f64, now)
    }

    /// How long this stream, in line, waits before it looks again: the first in line
    /// until a quantum is there; the others until they are told or the first has
    /// overstayed its turn, which then passes on.
    fn wait_in_line(&self, total: &mut Total, want: f64, now: Instant) -> Turn {
        let first = total.queue.front().map(|w| w.ticket);
        if first == self.ticket {
            let quantum = total.quantum as f64;
            return Turn::Wait(
                total
                    .bucket
                    .time_for(quantum.min(want))
                    .max(Duration::from_millis(1)),
            );
        }
        if now.saturating_duration_since(total.front_since) >= TURN_TIMEOUT
            && let Some(stale) = total.queue.pop_front()
        {
            // It keeps no place: when it reads again it gets back in line.
            total.front_since = now;
            if let Some(next) = total.queue.front() {
                next.waker.wake_by_ref();
            }
            drop(stale);
        }
        Turn::Wait(TURN_TIMEOUT)
    }

    fn charge(&mut self, n: usize) {
        if let Some(own) = &mut self.own {
            own.tokens -= n as f64;
        }
        if let Some(mut total) = self.budget.total() {
            total.bucket.tokens -= n as f64;
        }
        metrics::counter!(m::RELAY_RECEIVED_BYTES).increment(n as u64);
    }
}

impl<S> Drop for Throttled<S> {
    fn drop(&mut self) {
        if let (Some(ticket), Some(mut total)) = (self.ticket, self.budget.total()) {
            match total.queue.iter().position(|w| w.ticket == ticket) {
                Some(0) => total.pass_turn(Instant::now()),
                Some(i) => {
                    total.queue.remove(i);
                }
                None => {}
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            // The turn is looked at on every poll: a stream in line is woken when its
            // turn comes, before its timer runs out.
            let now = Instant::now();
            match this.turn(buf.len(), now, cx.waker()) {
                Turn::Read(n) => {
                    let n = n.clamp(1, buf.len());
                    let read = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf[..n]))?;
                    this.charge(read);
                    return Poll::Ready(Ok(read));
                }
                Turn::Wait(d) => {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                    sleep.as_mut().reset(now + d);
                    ready!(sleep.as_mut().poll(cx));
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A connection's muxer whose streams read through a [`Budget`].
pub struct ThrottledMuxer {
    inner: StreamMuxerBox,
    budget: Arc<Budget>,
}

impl ThrottledMuxer {
    pub fn wrap(inner: StreamMuxerBox, budget: Arc<Budget>) -> StreamMuxerBox {
        StreamMuxerBox::new(ThrottledMuxer { inner, budget })
    }
}

impl StreamMuxer for ThrottledMuxer {
    type Substream = Throttled<SubstreamBox>;
    type Error = io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let s = ready!(Pin::new(&mut this.inner).poll_inbound(cx))?;
        Poll::Ready(Ok(Throttled::new(s, this.budget.clone())))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let s = ready!(Pin::new(&mut this.inner).poll_outbound(cx))?;
        Poll::Ready(Ok(Throttled::new(s, this.budget.clone())))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::AsyncReadExt;

    use super::*;

    /// A sender that always has data: what a circuit pumping as fast as it can looks
    /// like to the relay.
    struct Endless;

    impl AsyncRead for Endless {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            buf.fill(7);
            Poll::Ready(Ok(buf.len()))
        }
    }

    /// Reads from `stream` for `secs` seconds of (paused) time; returns the bytes read.
    fn pump(
        mut stream: Throttled<Endless>,
        secs: u64,
        counter: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(secs);
            let mut buf = vec![0u8; 64 * 1024];
            while Instant::now() < end {
                let n = stream.read(&mut buf).await.unwrap();
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    }

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn one_stream_is_held_to_its_rate() {
        let budget = Budget::new(0, MIB).unwrap();
        let read = Arc::new(AtomicU64::new(0));
        pump(Throttled::new(Endless, budget), 10, read.clone())
            .await
            .unwrap();
        let got = read.load(Ordering::Relaxed);
        // 10 s at 1 MiB/s, plus the burst (a quarter second) and one read.
        assert!((9 * MIB..=11 * MIB).contains(&got), "read {got} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_is_shared_evenly_among_greedy_streams() {
        let budget = Budget::new(4 * MIB, 0).unwrap();
        let counters: Vec<_> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let tasks: Vec<_> = counters
            .iter()
            .map(|c| pump(Throttled::new(Endless, budget.clone()), 10, c.clone()))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let got: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let sum: u64 = got.iter().sum();
        assert!(
            (38 * MIB..=42 * MIB).contains(&sum),
            "total {sum} bytes: {got:?}"
        );
        let (min, max) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(
            (*max as f64) / (*min as f64) < 1.2,
            "unfair shares: {got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_stream_keeps_its_rate_beside_greedy_ones() {
        // Total 4 MiB/s; a stream limited to 512 KiB/s by its own rate still gets it
        // while three greedy streams share the rest.
        let budget = Budget::new(4 * MIB, 0).unwrap();
        let greedy: Vec<_> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let tasks: Vec<_> = greedy
            .iter()
            .map(|c| pump(Throttled::new(Endless, budget.clone()), 10, c.clone()))
            .collect();
        let honest = Arc::new(AtomicU64::new(0));
        let mut stream = Throttled::new(Endless, budget.clone());
        let h = honest.clone();
        let slow = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            for _ in 0..80 {
                let n = stream.read(&mut buf).await.unwrap();
                h.fetch_add(n as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(125)).await;
            }
        });
        slow.await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let honest = honest.load(Ordering::Relaxed);
        // It asks for 64 KiB every 125 ms: 512 KiB/s, 5 MiB in 10 s; it gets at least
        // one quantum (64 KiB at this total) per turn.
        assert!(honest >= 4 * MIB, "the slow stream got {honest} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stops_reading_does_not_stall_the_line() {
        let budget = Budget::new(MIB, 0).unwrap();
        budget.total().unwrap().bucket.tokens = 0.0;
        // `stuck` gets in line first and is never polled again.
        let mut stuck = Throttled::new(Endless, budget.clone());
        assert!(matches!(
            stuck.turn(1024, Instant::now(), Waker::noop()),
            Turn::Wait(_)
        ));
        let read = Arc::new(AtomicU64::new(0));
        pump(Throttled::new(Endless, budget.clone()), 2, read.clone())
            .await
            .unwrap();
        let got = read.load(Ordering::Relaxed);
        assert!(
            got >= MIB,
            "the line stalled behind a stream that stopped reading: {got} bytes"
        );
        drop(stuck);
        assert!(budget.total().unwrap().queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_leaves_the_queue() {
        let budget = Budget::new(MIB, 0).unwrap();
        // The burst spent: `b` has to queue; then it is dropped.
        budget.total().unwrap().bucket.tokens = 0.0;
        {
            let mut b = Throttled::new(Endless, budget.clone());
            let now = Instant::now();
            assert!(matches!(b.turn(1024, now, Waker::noop()), Turn::Wait(_)));
            assert_eq!(budget.total().unwrap().queue.len(), 1);
        }
        assert!(budget.total().unwrap().queue.is_empty());
    }
}
