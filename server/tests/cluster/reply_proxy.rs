//! A TCP proxy on one link between two nodes that can let requests through
//! while holding back every answer, then drop its connections: to the
//! caller, a peer that took a request and vanished before replying. It can
//! also cut the link both ways while keeping its connections open, or hold
//! either direction's bytes and deliver them, in order, on release (a peer
//! or a caller that was paused).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct ReplyProxy {
    pub address: String,
    swallow: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    hold_requests: watch::Sender<bool>,
    hold_replies: watch::Sender<bool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

/// One link's switches, shared by its connections.
#[derive(Clone)]
struct Switches {
    swallow: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    hold_requests: watch::Receiver<bool>,
    hold_replies: watch::Receiver<bool>,
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
        let (hold_requests, hold_requests_rx) = watch::channel(false);
        let (hold_replies, hold_replies_rx) = watch::channel(false);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_string();
        let accept = {
            let switches = Switches {
                swallow: swallow.clone(),
                cut: cut.clone(),
                hold_requests: hold_requests_rx,
                hold_replies: hold_replies_rx,
            };
            let links = links.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let link = tokio::spawn(forward(inbound, target.clone(), switches.clone()));
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
            hold_requests,
            hold_replies,
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

    /// While on, bytes towards the target are kept; on release they go on
    /// in order.
    pub fn hold_requests(&self, on: bool) {
        self.hold_requests.send_replace(on);
    }

    /// While on, bytes from the target are kept; on release they go on in
    /// order.
    pub fn hold_replies(&self, on: bool) {
        self.hold_replies.send_replace(on);
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

async fn forward(inbound: TcpStream, target: String, switches: Switches) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (from_caller, to_caller) = inbound.into_split();
    let (from_target, to_target) = outbound.into_split();
    let requests = pass(
        from_caller,
        to_target,
        switches.hold_requests.clone(),
        |_| false,
        &switches,
    );
    let replies = pass(
        from_target,
        to_caller,
        switches.hold_replies.clone(),
        |switches| switches.swallow.load(Ordering::SeqCst),
        &switches,
    );
    tokio::select! {
        () = requests => {}
        () = replies => {}
    }
}

/// One direction of a connection: bytes are thrown away while the link is
/// cut (or `discard` says so), kept while held, passed on otherwise.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: watch::Receiver<bool>,
    discard: fn(&Switches) -> bool,
    switches: &Switches,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buffer) => {
                let read = match read {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                if switches.cut.load(Ordering::SeqCst) || discard(switches) {
                    continue;
                }
                held.extend_from_slice(&buffer[..read]);
            }
            changed = hold.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if !*hold.borrow_and_update() && !held.is_empty() {
            if to.write_all(&held).await.is_err() {
                return;
            }
            held.clear();
        }
    }
}
