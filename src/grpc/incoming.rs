//! The connections tonic serves: admitted under the gRPC listener's cap ([`crate::accept`]),
//! each with a deadline for the HTTP/2 connection preface, which neither hyper nor h2 bounds (a
//! client that connects and sends nothing would otherwise hold its connection for good). After
//! the preface, HTTP/2 keepalive pings (set on the server) drop dead peers.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::accept::{Admission, Slot};

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: usize = 24;

/// Admitted connections, forever; dropping the stream closes the listening socket.
pub fn incoming(
    admission: Admission,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<Connection, Infallible>> {
    futures_util::stream::unfold(admission, move |mut admission| async move {
        let (stream, _peer, slot) = admission.accept().await;
        let connection = Connection {
            io: stream,
            _slot: slot,
            received: 0,
            handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
        };
        Some((Ok(connection), admission))
    })
}

/// An accepted TCP connection that fails its reads once the handshake deadline passes before
/// the client has sent the preface's 24 bytes (with TLS: the first 24 bytes of its handshake,
/// which tonic's own TLS timeout then bounds).
pub struct Connection {
    io: TcpStream,
    _slot: Slot,
    /// Bytes read so far, counted until the preface is in.
    received: usize,
    /// Running until the preface is in.
    handshake: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                let expired = this
                    .handshake
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 connection preface within the handshake timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            Poll::Ready(Ok(())) => {
                if this.handshake.is_some() {
                    this.received += buf.filled().len() - before;
                    if this.received >= PREFACE_LEN {
                        this.handshake = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
