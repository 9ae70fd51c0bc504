//! An HTTP/1.1 proxy in front of the S3 test server that counts the requests passing
//! through, by S3 request kind: the server's side of what a node costs, independent of the
//! node's own counters. It can also damage uploads on their way (one flipped bit in the
//! body of a cell's PUT), as a faulty network or disk controller would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apiary_storage::RequestCounts;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Counts the requests it forwards to `target`; stops when dropped.
pub struct CountingProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    counts: Arc<Mutex<RequestCounts>>,
    /// Cell uploads still to damage, and how many were.
    damage: Arc<Damage>,
    task: tokio::task::JoinHandle<()>,
}

/// Uploads of cells (`.parquet` PUTs) to damage.
#[derive(Debug, Default)]
struct Damage {
    left: AtomicU64,
    done: AtomicU64,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    /// A proxy on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let counts = Arc::new(Mutex::new(RequestCounts::default()));
        let damage = Arc::new(Damage::default());
        let (shared, harm) = (Arc::clone(&counts), Arc::clone(&damage));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (counts, harm) = (Arc::clone(&shared), Arc::clone(&harm));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        forward(client, server, counts, harm).await;
                    }
                });
            }
        });
        Self {
            address,
            counts,
            damage,
            task,
        }
    }

    /// Flips one bit in the body of each of the next `uploads` cell uploads (PUTs of
    /// `.parquet` objects), leaving their headers as the client sent them.
    #[allow(dead_code)] // each test file compiles its own copy of this module
    pub fn damage_cell_uploads(&self, uploads: u64) {
        self.damage.left.store(uploads, Ordering::SeqCst);
    }

    /// Cell uploads damaged so far.
    #[allow(dead_code)]
    pub fn damaged(&self) -> u64 {
        self.damage.done.load(Ordering::SeqCst)
    }

    /// The requests forwarded so far.
    pub fn counts(&self) -> RequestCounts {
        *self.counts.lock().unwrap()
    }
}

/// Copies responses back as they come, and requests forward one at a time, counting each by
/// its request line and headers.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    counts: Arc<Mutex<RequestCounts>>,
    damage: Arc<Damage>,
) {
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut head = Vec::new();
        // The request line and headers, up to the blank line.
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => {
                    down.abort();
                    return;
                }
                Ok(_) => {}
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        count(&text, &counts);
        if server_write.write_all(&head).await.is_err() {
            return;
        }
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            // Chunks until the last, empty one, then the trailer's blank line.
            loop {
                let mut size_line = Vec::new();
                if reader.read_until(b'\n', &mut size_line).await.unwrap_or(0) == 0 {
                    return;
                }
                let size_text = String::from_utf8_lossy(&size_line);
                let size =
                    usize::from_str_radix(size_text.trim().split(';').next().unwrap_or("0"), 16)
                        .unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                if reader.read_exact(&mut chunk).await.is_err() {
                    return;
                }
                if server_write.write_all(&size_line).await.is_err()
                    || server_write.write_all(&chunk).await.is_err()
                {
                    return;
                }
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            let mut body = Vec::with_capacity(length as usize);
            if (&mut reader)
                .take(length)
                .read_to_end(&mut body)
                .await
                .is_err()
            {
                return;
            }
            let request_line = text.lines().next().unwrap_or_default();
            let cell_upload = request_line.starts_with("PUT ")
                && request_line.split_whitespace().nth(1).is_some_and(|t| {
                    t.split('?')
                        .next()
                        .unwrap_or_default()
                        .ends_with(".parquet")
                });
            let take = |left: u64| left.checked_sub(1);
            if cell_upload
                && !body.is_empty()
                && damage
                    .left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                    .is_ok()
            {
                let middle = body.len() / 2;
                body[middle] ^= 0x10;
                damage.done.fetch_add(1, Ordering::SeqCst);
            }
            if server_write.write_all(&body).await.is_err() {
                return;
            }
        }
    }
}

/// Counts one request by its kind, as S3 bills it.
fn count(head: &str, counts: &Mutex<RequestCounts>) {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let conditional = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("if-none-match:") || l.starts_with("if-match:")
    });
    let mut c = counts.lock().unwrap();
    match method {
        "GET" if query.split('&').any(|p| p.starts_with("list-type=")) => c.list += 1,
        "GET" => c.get += 1,
        "HEAD" => c.head += 1,
        "PUT" if conditional => c.conditional_put += 1,
        "PUT" | "POST" if !query.starts_with("delete") => c.put += 1,
        _ => c.delete += 1,
    }
}

/// The S3 test server's address, from the rig's `AWS_ENDPOINT_URL`.
pub fn s3_server() -> SocketAddr {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh");
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    host.parse()
        .unwrap_or_else(|e| panic!("AWS_ENDPOINT_URL {endpoint}: {e}"))
}
