//! A TCP proxy on one link between two nodes that can let requests through
//! while holding back every answer, then drop its connections: to the
//! caller, a peer that took a request and vanished before replying. It can
//! also cut the link both ways while keeping its connections open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct ReplyProxy {
    pub address: String,
    swallow: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl ReplyProxy {
    /// Listens on a free loopback port and forwards to `target`. Must be
    /// called inside a tokio runtime.
    pub fn start(target: &str) -> ReplyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("bound").to_string();
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let swallow = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_string();
        let accept = {
            let (swallow, cut) = (swallow.clone(), cut.clone());
            let links = links.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let link = tokio::spawn(forward(
                        inbound,
                        target.clone(),
                        swallow.clone(),
                        cut.clone(),
                    ));
                    let mut links = links.lock().unwrap_or_else(|p| p.into_inner());
                    links.retain(|link| !link.is_finished());
                    links.push(link);
                }
            })
        };
        ReplyProxy {
            address,
            swallow,
            cut,
            links,
            accept,
        }
    }

    /// While on, bytes from the target are read and thrown away.
    pub fn swallow_replies(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    /// While on, the link is cut both ways: bytes from either side are
    /// thrown away, but connections stay open, as across a partition.
    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }

    /// Closes every connection through the proxy; new ones are accepted.
    pub fn drop_connections(&self) {
        for link in self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            link.abort();
        }
    }
}

impl Drop for ReplyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn forward(
    inbound: TcpStream,
    target: String,
    swallow: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut from_caller, mut to_caller) = inbound.into_split();
    let (mut from_target, mut to_target) = outbound.into_split();
    let requests = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_caller.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            if to_target.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let replies = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from_target.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if swallow.load(Ordering::SeqCst) || cut.load(Ordering::SeqCst) {
                continue;
            }
            if to_caller.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = replies => {}
    }
}
