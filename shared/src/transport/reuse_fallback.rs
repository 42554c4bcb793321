//! TCP dials that fall back to a fresh port when reusing the listen port clashes.
//!
//! A dial with [`PortUse::Reuse`] binds its socket to the node's listen port, so that
//! the remote side sees the address it could dial back (and so hole punching works).
//! The four-tuple (listen port, remote address) can then already be taken: by a
//! connection the remote side opened to us, by a closed one still in `TIME_WAIT`, or,
//! when the listen port was picked by the kernel, by another program's connection that
//! happened to get the same port. The kernel refuses such a dial with `EADDRINUSE` or
//! `EADDRNOTAVAIL`, and it keeps refusing for as long as the clash lasts (a `TIME_WAIT`
//! lasts 60 s), so without a fallback a node cannot reach a peer it just disconnected
//! from. `libp2p-tcp` retries with a new port on `EADDRNOTAVAIL` from `connect` only;
//! this wrapper retries once with [`PortUse::New`] on either error from bind or connect.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr,
    core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent},
};
use tracing::debug;

/// Wraps a TCP transport; see the module documentation.
#[derive(Debug)]
pub(super) struct ReuseFallback<T>(pub(super) T);

/// Whether `error` is the kernel saying the reused local port cannot make this
/// connection.
fn is_port_clash(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
    )
}

impl<T> Transport for ReuseFallback<T>
where
    T: Transport<Error = io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<T::Output, io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if opts.port_use != PortUse::Reuse {
            return Ok(self.0.dial(addr, opts)?.boxed());
        }
        let first = self.0.dial(addr.clone(), opts)?;
        // The fallback's socket is opened now (one more descriptor while the first dial
        // is under way) but bound and connected only if it is polled; it is dropped
        // unpolled when the first dial succeeds or fails for another reason.
        let fallback = self.0.dial(
            addr.clone(),
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        );
        Ok(async move {
            match first.await {
                Err(e) if is_port_clash(&e) => match fallback {
                    Ok(fallback) => {
                        debug!(address = %addr, error = %e, "the listen port cannot reach this address; dialing from a new port");
                        fallback.await
                    }
                    Err(_) => Err(e),
                },
                other => other,
            }
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use libp2p::{core::Endpoint, tcp};

    use super::*;

    /// A TCP transport whose port-reusing dials fail the way the kernel fails them when
    /// the four-tuple is taken (the clash itself cannot be produced on demand: it needs
    /// another program's socket on the listen port).
    struct Clashing {
        tcp: tcp::tokio::Transport,
        error: io::ErrorKind,
        reuse_dials: usize,
    }

    impl Transport for Clashing {
        type Output = tcp::tokio::TcpStream;
        type Error = io::Error;
        type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
        type Dial = BoxFuture<'static, io::Result<Self::Output>>;

        fn listen_on(
            &mut self,
            id: ListenerId,
            addr: Multiaddr,
        ) -> Result<(), TransportError<io::Error>> {
            self.tcp.listen_on(id, addr)
        }
        fn remove_listener(&mut self, id: ListenerId) -> bool {
            self.tcp.remove_listener(id)
        }
        fn dial(
            &mut self,
            addr: Multiaddr,
            opts: DialOpts,
        ) -> Result<Self::Dial, TransportError<io::Error>> {
            let dial = self.tcp.dial(addr, opts)?;
            if opts.port_use == PortUse::Reuse {
                self.reuse_dials += 1;
                let error = self.error;
                return Ok(async move { Err(io::Error::from(error)) }.boxed());
            }
            Ok(dial.boxed())
        }
        fn poll(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
            Pin::new(&mut self.get_mut().tcp).poll(cx)
        }
    }

    fn clashing(error: io::ErrorKind) -> ReuseFallback<Clashing> {
        ReuseFallback(Clashing {
            tcp: tcp::tokio::Transport::new(tcp::Config::default()),
            error,
            reuse_dials: 0,
        })
    }

    const REUSE: DialOpts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    };

    fn remote() -> (TcpListener, Multiaddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        (
            listener,
            format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_port_clash_is_dialed_again_from_a_new_port() {
        for error in [io::ErrorKind::AddrInUse, io::ErrorKind::AddrNotAvailable] {
            let (listener, addr) = remote();
            let mut transport = clashing(error);
            let stream = transport.dial(addr, REUSE).unwrap().await;
            assert!(
                stream.is_ok(),
                "{error:?} was not retried: {:?}",
                stream.err()
            );
            listener.accept().expect("the retry reached the remote");
            assert_eq!(transport.0.reuse_dials, 1);
        }
    }

    #[tokio::test]
    async fn other_errors_are_not_dialed_again() {
        let (listener, addr) = remote();
        let mut transport = clashing(io::ErrorKind::ConnectionRefused);
        let error = transport.dial(addr, REUSE).unwrap().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "no second dial was made");
    }

    #[tokio::test]
    async fn a_new_port_dial_is_passed_through() {
        let (listener, addr) = remote();
        let mut transport = clashing(io::ErrorKind::AddrInUse);
        let new = DialOpts {
            port_use: PortUse::New,
            ..REUSE
        };
        transport.dial(addr, new).unwrap().await.expect("connects");
        listener.accept().unwrap();
        assert_eq!(transport.0.reuse_dials, 0);
    }
}
