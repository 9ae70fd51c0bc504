//! A TCP proxy whose link can be cut, to partition a coordinator from a worker while
//! storage stays reachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from its own port to `target` until [`cut`](Proxy::cut): then every
/// connection through it is dropped at once and new ones are refused (closed on accept).
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    open: Arc<AtomicBool>,
    trip: Arc<Trip>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Cuts the link at the next byte the target sends, once armed.
#[derive(Debug)]
struct Trip {
    armed: AtomicBool,
    cut: watch::Sender<bool>,
    open: Arc<AtomicBool>,
}

impl Trip {
    fn fire(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }
}

/// Copies from the target to the client; an armed trip cuts the link at the
/// first byte instead of passing it on.
async fn copy_down(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    trip: &Trip,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if trip.armed.load(Ordering::SeqCst) {
            trip.fire();
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// A proxy on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let open = Arc::new(AtomicBool::new(true));
        let open2 = Arc::clone(&open);
        let trip: Arc<Trip> = Arc::new(Trip {
            armed: AtomicBool::new(false),
            cut: cut.clone(),
            open: Arc::clone(&open),
        });
        let trip2 = Arc::clone(&trip);
        let accepted = Arc::new(AtomicUsize::new(0));
        let accepted2 = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                if !open2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let trip = Arc::clone(&trip2);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let down = copy_down(&mut server_read, &mut client_write, &trip);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Self {
            address,
            cut,
            open,
            trip,
            accepted,
            task,
        })
    }

    /// Where to connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections made to the proxy so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts the link: connections through the proxy drop, new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }

    /// Arms a cut at the next byte the target sends: the link breaks in the middle of
    /// whatever the target answers next (a task's exchange, say), not before.
    pub fn cut_at_next_answer(&self) {
        self.trip.armed.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
