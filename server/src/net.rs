//! Accepting connections for our own listeners. tonic applies
//! `tcp_nodelay` only to listeners it binds itself; ours are bound here (to
//! report the address, to add TLS), so every accepted socket gets it here.
//! Without it, small responses wait out the peer's delayed ACK (~40 ms).

use std::io;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// The connections of `listener`, with Nagle's algorithm off.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
