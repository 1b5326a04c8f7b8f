//! Listening and dialling. Addresses come in both Regatta forms
//! (`address.rs`); a listener is TCP or a Unix-domain socket, with or
//! without TLS; client channels (`dial.rs`) reach either.
//!
//! tonic applies `tcp_nodelay` only to listeners it binds itself; ours are
//! bound here (to report the address, to add TLS, to serve Unix sockets), so
//! every accepted TCP socket gets it here. Without it, small responses wait
//! out the peer's delayed ACK (~40 ms).

pub mod address;
pub mod dial;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, UdsConnectInfo};

pub use address::{Address, AddressError, Transport};

/// A bound listener: TCP, or a Unix-domain socket whose file is removed
/// when the listener is dropped.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A listener that holds at most so many connections open at once
/// (`--api.max-concurrent-connections`): the next is accepted when one
/// closes; until then it waits in the kernel's backlog.
pub struct Limited {
    pub listener: Listener,
    open: Option<Arc<Semaphore>>,
}

impl Limited {
    /// `max` connections at once; 0 is no limit.
    pub fn new(listener: Listener, max: usize) -> Limited {
        Limited {
            listener,
            open: (max > 0).then(|| Arc::new(Semaphore::new(max))),
        }
    }

    /// The next connection, once fewer than the limit are open.
    pub async fn accept(&self) -> io::Result<Conn> {
        let permit = match &self.open {
            // The semaphore is never closed, so this always yields a permit.
            Some(open) => open.clone().acquire_owned().await.ok(),
            None => None,
        };
        let mut conn = self.listener.accept().await?;
        conn.permit = permit;
        Ok(conn)
    }
}

impl From<Listener> for Limited {
    fn from(listener: Listener) -> Limited {
        Limited::new(listener, 0)
    }
}

impl Listener {
    /// Binds `address`. A stale socket file (nobody accepts on it) is
    /// replaced; a live one is an error, as a TCP port in use is.
    pub async fn bind(address: &Address) -> io::Result<Listener> {
        match &address.transport {
            Transport::Tcp(host_port) => Ok(Listener::Tcp(TcpListener::bind(host_port).await?)),
            Transport::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// What the listener is bound to, for logs: `127.0.0.1:8443` (the real
    /// port when 0 was asked) or `unix:///path`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(bound) => bound.to_string(),
                Err(err) => format!("<unknown: {err}>"),
            },
            Listener::Unix(_, path) => format!("unix://{}", path.display()),
        }
    }

    /// The next connection (Nagle's algorithm off on TCP).
    pub async fn accept(&self) -> io::Result<Conn> {
        let socket = match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
            Listener::Unix(listener, _) => Socket::Unix(listener.accept().await?.0),
        };
        Ok(Conn {
            socket,
            permit: None,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another process serves {}", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// The connections of `listener`, one at a time; an accept error is logged
/// and the loop goes on (a full file table must not stop the server).
pub fn incoming(listener: impl Into<Limited>) -> impl Stream<Item = io::Result<Conn>> {
    let listener = listener.into();
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok(conn) => return Some((Ok(conn), listener)),
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// An accepted connection over either transport; under a connection
/// limit it holds its place until dropped.
pub struct Conn {
    socket: Socket,
    permit: Option<OwnedSemaphorePermit>,
}

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// What tonic learns of a connection (`Request::extensions`).
#[derive(Debug, Clone)]
pub enum ConnInfo {
    Tcp(TcpConnectInfo),
    Unix(UdsConnectInfo),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match &self.socket {
            Socket::Tcp(stream) => ConnInfo::Tcp(stream.connect_info()),
            Socket::Unix(stream) => ConnInfo::Unix(stream.connect_info()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Socket::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Socket::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Socket::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.socket {
            Socket::Tcp(stream) => stream.is_write_vectored(),
            Socket::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Socket::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Socket::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
