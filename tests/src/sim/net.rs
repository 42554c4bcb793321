//! The simulated internet's wires: a byte transport on `/memory/<port>` addresses whose
//! links deliver each write one way-latency later (half the round trip between the two
//! ends' regions), and cut links between partitioned regions and to nodes that left.
//!
//! Time is tokio's: under a paused clock (the simulator runs on one) a latency costs no
//! wall time, and CPU work costs no simulated time, so latencies come out as the region
//! model makes them however loaded the machine is.
//!
//! Noise and Yamux run on top as on TCP; a dial costs one round trip (the TCP handshake)
//! before the first byte; a SYN that goes unanswered (the node is gone, or the link is
//! cut) is sent again as TCP does, and the dial fails after [`DEAD_DIAL_TIMEOUT`]. A node
//! that leaves resets its open connections (as when its process stops) rather than
//! leaving them silent: libp2p's own request and ping timeouts run on the wall clock,
//! not the simulated one, so silence would be timed in the wrong clock.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, future::BoxFuture, task::AtomicWaker};
use libp2p::{
    Multiaddr,
    core::{
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent},
    },
};
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};

use super::regions::{Region, rtt};

/// How long a dial to a node that is gone (or across a cut) waits before it fails.
pub const DEAD_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// When a dial sends its SYN, counted from the dial: first at once, then again each
/// time the last went unanswered for Linux's initial retransmission timeout (1 s,
/// doubling). A dial that starts during a cut connects once it heals, as over TCP,
/// rather than failing a lookup that runs after the heal.
const SYN_SENT_AT: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(7),
];

const OPEN: u8 = 0;
const CUT: u8 = 1;

/// The network every simulated node's transport is attached to.
#[derive(Clone, Default)]
pub struct SimNet {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Where each port is, whether anyone listens there, and whether its node is up.
    hosts: HashMap<u64, Host>,
    /// Region pairs (smaller first) whose links are cut.
    cut: HashSet<(Region, Region)>,
    links: Vec<Weak<Link>>,
    /// Live links when the list was last pruned.
    pruned_at: usize,
}

struct Host {
    region: Region,
    up: bool,
    listener: Option<mpsc::UnboundedSender<(Conn, u64)>>,
}

impl Inner {
    fn is_cut(&self, a: Region, b: Region) -> bool {
        a != b && self.cut.contains(&(a.min(b), a.max(b)))
    }
}

/// Both directions of one connection: its state, and the readers to wake when it
/// changes.
struct Link {
    ends: [(u64, Region); 2],
    state: AtomicU8,
    readers: [AtomicWaker; 2],
}

impl Link {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
        for r in &self.readers {
            r.wake();
        }
    }
}

impl SimNet {
    pub fn new() -> Self {
        SimNet::default()
    }

    /// Places a host at `port` in `region`, up (before its node starts listening there,
    /// and again when it restarts at the same address).
    pub fn place(&self, port: u64, region: Region) {
        let mut inner = self.inner.lock().expect("sim net lock");
        inner.hosts.insert(
            port,
            Host {
                region,
                up: true,
                listener: None,
            },
        );
    }

    /// The transport of the node at `port`.
    pub fn transport(&self, port: u64) -> SimTransport {
        SimTransport {
            net: self.clone(),
            port,
            listeners: VecDeque::new(),
        }
    }

    /// The node at `port` is gone: its links are reset and dials to it time out. Its own
    /// task should be stopped next.
    pub fn vanish(&self, port: u64) {
        let mut inner = self.inner.lock().expect("sim net lock");
        if let Some(h) = inner.hosts.get_mut(&port) {
            h.up = false;
            h.listener = None;
        }
        for link in inner.links.iter().filter_map(Weak::upgrade) {
            if link.ends.iter().any(|(p, _)| *p == port) {
                link.set(CUT);
            }
        }
    }

    /// Cuts every link between regions `a` and `b`: open connections fail (as after a
    /// reset) and new dials time out, until [`SimNet::heal`].
    pub fn partition(&self, a: Region, b: Region) {
        let mut inner = self.inner.lock().expect("sim net lock");
        inner.cut.insert((a.min(b), a.max(b)));
        for link in inner.links.iter().filter_map(Weak::upgrade) {
            let [(_, x), (_, y)] = link.ends;
            if inner.is_cut(x, y) {
                link.set(CUT);
            }
        }
    }

    pub fn heal(&self, a: Region, b: Region) {
        let mut inner = self.inner.lock().expect("sim net lock");
        inner.cut.remove(&(a.min(b), a.max(b)));
    }

    /// Open links (both ends alive), for the figures.
    pub fn open_links(&self) -> usize {
        let inner = self.inner.lock().expect("sim net lock");
        inner
            .links
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|l| l.state.load(Ordering::SeqCst) == OPEN)
            .count()
    }

    /// Whether an open link joins the nodes at ports `a` and `b`.
    pub fn linked(&self, a: u64, b: u64) -> bool {
        let inner = self.inner.lock().expect("sim net lock");
        inner.links.iter().filter_map(Weak::upgrade).any(|l| {
            let [(x, _), (y, _)] = l.ends;
            l.state.load(Ordering::SeqCst) == OPEN && ((x, y) == (a, b) || (x, y) == (b, a))
        })
    }

    fn region(&self, port: u64) -> Option<Region> {
        let inner = self.inner.lock().expect("sim net lock");
        inner.hosts.get(&port).map(|h| h.region)
    }

    /// Connects `from` to `to` if `to` is up, listening and not cut off: hands the
    /// listener its end and returns the dialer's.
    fn connect(&self, from: u64, to: u64) -> Option<Conn> {
        let mut inner = self.inner.lock().expect("sim net lock");
        let a = inner.hosts.get(&from)?.region;
        let host = inner.hosts.get(&to)?;
        let b = host.region;
        if !host.up || inner.is_cut(a, b) {
            return None;
        }
        let listener = host.listener.clone()?;
        let one_way = rtt(a, b) / 2;
        let link = Arc::new(Link {
            ends: [(from, a), (to, b)],
            state: AtomicU8::new(OPEN),
            readers: [AtomicWaker::new(), AtomicWaker::new()],
        });
        let (to_listener, listener_reads) = mpsc::unbounded_channel();
        let (to_dialer, dialer_reads) = mpsc::unbounded_channel();
        let dialer = Conn::new(link.clone(), 0, to_listener, dialer_reads, one_way);
        let accepted = Conn::new(link.clone(), 1, to_dialer, listener_reads, one_way);
        listener.send((accepted, from)).ok()?;
        inner.links.push(Arc::downgrade(&link));
        if inner.links.len() > 2 * inner.pruned_at.max(1024) {
            inner.links.retain(|l| l.strong_count() > 0);
            inner.pruned_at = inner.links.len();
        }
        Some(dialer)
    }
}

/// Errors of the simulated transport.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no simulated host at {0}")]
    NoHost(Multiaddr),
    #[error("port {0} is taken or not placed")]
    Taken(u64),
    #[error("dial to {0} timed out (host gone or link cut)")]
    TimedOut(u64),
}

type Incoming = mpsc::UnboundedReceiver<(Conn, u64)>;

/// One node's view of the [`SimNet`]: listens on its own port, dials others.
pub struct SimTransport {
    net: SimNet,
    port: u64,
    listeners: VecDeque<(ListenerId, u64, Option<Incoming>, bool)>,
}

fn memory_port(addr: &Multiaddr) -> Option<u64> {
    let mut it = addr.iter();
    match (it.next(), it.next()) {
        (Some(Protocol::Memory(p)), None | Some(Protocol::P2p(_))) => Some(p),
        _ => None,
    }
}

impl Transport for SimTransport {
    type Output = Conn;
    type Error = SimError;
    type ListenerUpgrade = futures::future::Ready<Result<Conn, SimError>>;
    type Dial = BoxFuture<'static, Result<Conn, SimError>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<SimError>> {
        let port = memory_port(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let mut inner = self.net.inner.lock().expect("sim net lock");
        let host = inner
            .hosts
            .get_mut(&port)
            .filter(|h| h.listener.is_none())
            .ok_or(TransportError::Other(SimError::Taken(port)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        host.listener = Some(tx);
        self.listeners.push_back((id, port, Some(rx), true));
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.listeners.iter_mut().find(|l| l.0 == id) else {
            return false;
        };
        if let Some(h) = self
            .net
            .inner
            .lock()
            .expect("sim net lock")
            .hosts
            .get_mut(&l.1)
        {
            h.listener = None;
        }
        if let Some(rx) = l.2.as_mut() {
            rx.close();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<SimError>> {
        let to = memory_port(&addr)
            .ok_or_else(|| TransportError::MultiaddrNotSupported(addr.clone()))?;
        let from = self.port;
        let net = self.net.clone();
        let (Some(a), Some(b)) = (net.region(from), net.region(to)) else {
            return Err(TransportError::Other(SimError::NoHost(addr)));
        };
        Ok(Box::pin(async move {
            let started = Instant::now();
            for syn in SYN_SENT_AT {
                tokio::time::sleep_until(started + syn).await;
                // SYN and SYN-ACK.
                tokio::time::sleep(rtt(a, b)).await;
                if let Some(conn) = net.connect(from, to) {
                    return Ok(conn);
                }
            }
            tokio::time::sleep_until(started + DEAD_DIAL_TIMEOUT).await;
            Err(SimError::TimedOut(to))
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, SimError>> {
        for l in self.listeners.iter_mut() {
            let (listener_id, port) = (l.0, l.1);
            let local_addr = Multiaddr::empty().with(Protocol::Memory(port));
            if std::mem::take(&mut l.3) {
                return Poll::Ready(TransportEvent::NewAddress {
                    listener_id,
                    listen_addr: local_addr,
                });
            }
            let Some(rx) = l.2.as_mut() else { continue };
            match rx.poll_recv(cx) {
                Poll::Ready(Some((conn, from))) => {
                    return Poll::Ready(TransportEvent::Incoming {
                        listener_id,
                        upgrade: futures::future::ready(Ok(conn)),
                        local_addr,
                        send_back_addr: Multiaddr::empty().with(Protocol::Memory(from)),
                    });
                }
                Poll::Ready(None) => {
                    l.2 = None;
                    return Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id,
                        reason: Ok(()),
                    });
                }
                Poll::Pending => {}
            }
        }
        self.listeners.retain(|l| l.2.is_some() || l.3);
        Poll::Pending
    }
}

/// One end of a simulated connection.
pub struct Conn {
    link: Arc<Link>,
    side: usize,
    tx: Option<mpsc::UnboundedSender<(Instant, Vec<u8>)>>,
    rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    one_way: Duration,
    /// A chunk received, due at its instant, and how much of it was read.
    pending: Option<(Instant, Vec<u8>, usize)>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn new(
        link: Arc<Link>,
        side: usize,
        tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
        rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
        one_way: Duration,
    ) -> Self {
        Conn {
            link,
            side,
            tx: Some(tx),
            rx,
            one_way,
            pending: None,
            timer: None,
        }
    }

    fn state(&self) -> u8 {
        self.link.state.load(Ordering::SeqCst)
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut")
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.link.readers[this.side].register(cx.waker());
        loop {
            if this.state() == CUT {
                return Poll::Ready(Err(reset()));
            }
            if let Some((due, chunk, read)) = this.pending.as_mut() {
                if Instant::now() < *due {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*due)));
                    timer.as_mut().reset(*due);
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                let n = buf.len().min(chunk.len() - *read);
                buf[..n].copy_from_slice(&chunk[*read..*read + n]);
                *read += n;
                if *read == chunk.len() {
                    this.pending = None;
                }
                return Poll::Ready(Ok(n));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some((due, chunk))) => this.pending = Some((due, chunk, 0)),
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state() == CUT {
            return Poll::Ready(Err(reset()));
        }
        let Some(tx) = self.tx.as_ref() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        // The peer's end may be gone already (its node stopped): the bytes are lost,
        // as on a socket whose peer closed.
        let _ = tx.send((Instant::now() + self.one_way, buf.to_vec()));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}
