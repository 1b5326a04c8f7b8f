//! A userspace TCP proxy for one direction of one link between two nodes.
//!
//! The processes backend gives node A the address of a proxy to reach node
//! B, so cutting the link A->B is a matter of this process: while cut, the
//! proxy accepts connections but moves no bytes, and bytes in flight stay
//! where they are, the way a network partition looks to TCP (timeouts, not
//! refusals). On heal the bytes flow again.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One listening proxy; dropping it stops accepting and closes its links.
pub struct LinkProxy {
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let cut_rx = Arc::new(cut_rx);
        let accept = tokio::spawn(async move {
            let mut links = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = (*cut_rx).clone();
                links.push(AbortOnDrop(tokio::spawn(forward(inbound, target, cut))));
                links.retain(|link: &AbortOnDrop| !link.0.is_finished());
            }
        });
        Ok(LinkProxy {
            address,
            cut,
            accept,
        })
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if wait_open(&mut cut).await.is_err() {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let upstream = pump(inbound_read, outbound_write, cut.clone());
    let downstream = pump(outbound_read, inbound_write, cut);
    // Either side closing ends the link.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if wait_open(&mut cut).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if wait_open(&mut cut).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Waits while the link is cut.
async fn wait_open(cut: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    cut.wait_for(|cut| !*cut).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn forwards_and_holds_bytes_while_cut() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = server.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            loop {
                if socket.read_exact(&mut buffer).await.is_err() {
                    return;
                }
                socket.write_all(&buffer).await.unwrap();
            }
        });
        let proxy = LinkProxy::start(target).await.unwrap();
        let mut client = TcpStream::connect(proxy.address).await.unwrap();
        let mut echo = [0u8; 5];
        client.write_all(b"hello").await.unwrap();
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");

        proxy.set_cut(true);
        client.write_all(b"again").await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut echo));
        assert!(held.await.is_err(), "bytes crossed a cut link");

        proxy.set_cut(false);
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echo))
            .await
            .expect("bytes flow again after the heal")
            .unwrap();
        assert_eq!(&echo, b"again");
    }
}
