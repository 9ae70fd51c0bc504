//! Test rigs (feature `testing`): a TCP proxy whose link can be cut, to partition a
//! coordinator from a worker while storage stays reachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from its own port to `target` until [`cut`](Proxy::cut): then every
/// connection through it is dropped at once and new ones are refused (closed on accept).
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    open: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let open = Arc::new(AtomicBool::new(true));
        let bytes = Arc::new(AtomicU64::new(0));
        let (open2, bytes2) = (Arc::clone(&open), Arc::clone(&bytes));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !open2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let bytes = Arc::clone(&bytes2);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        moved = tokio::io::copy_bidirectional(&mut client, &mut server) => {
                            if let Ok((a, b)) = moved {
                                bytes.fetch_add(a + b, Ordering::Relaxed);
                            }
                        }
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Self {
            address,
            cut,
            open,
            bytes,
            task,
        })
    }

    /// Where to connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Cuts the link: connections through the proxy drop, new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }

    /// Bytes moved by connections that ended normally.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
