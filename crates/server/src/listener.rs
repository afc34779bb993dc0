//! The listener the server accepts connections on: each connection gets a
//! send timeout, as a web server's `send_timeout` does.
//!
//! A peer that stops reading (an SSE subscriber that went quiet without
//! closing) would otherwise keep its connection, its subscription and its
//! place among the open subscriptions until shutdown: the response body is
//! only polled when the socket has room, so nothing above the socket can
//! tell. A write that stays pending past the timeout fails instead, the
//! connection is closed, and the subscription with it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

/// A [`TcpListener`] whose connections time out writes.
#[derive(Debug)]
pub(crate) struct SendTimeoutListener {
    listener: TcpListener,
    send_timeout: Duration,
}

impl SendTimeoutListener {
    pub(crate) fn new(listener: TcpListener, send_timeout: Duration) -> Self {
        Self {
            listener,
            send_timeout,
        }
    }
}

impl axum::serve::Listener for SendTimeoutListener {
    type Io = Pin<Box<TimeoutStream<TcpStream>>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.listener).await;
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.send_timeout));
        (Box::pin(stream), address)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
