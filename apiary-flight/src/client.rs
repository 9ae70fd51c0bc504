//! Links from this process to other nodes' Flight ports: one HTTP/2 connection per address,
//! opened with a handshake that proves the swarm's key, and a memory of links that failed
//! so that tasks for those nodes go through storage until a retry is due.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_storage::Clock;
use arrow_flight::HandshakeRequest;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::auth::{FlightKey, PROOF_HEADER};
use crate::config::FlightTls;
use crate::wire::MAX_MESSAGE_BYTES;
use crate::worker::lock;

/// What a node's handshake answers with.
pub(crate) const HANDSHAKE_REPLY: &[u8] = b"apiary-flight-v1";

/// HTTP/2 windows: large enough that one exchange can move a gigabyte a second on a LAN.
pub(crate) const STREAM_WINDOW: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 32 << 20;

/// A connected client.
pub(crate) type Client = FlightServiceClient<Channel>;

/// A link by address: connected once, by whichever caller comes first (others wait for it).
type Slot = Arc<tokio::sync::OnceCell<Client>>;

/// Links by address, and the nodes whose link failed (until when they are left alone).
pub(crate) struct Links {
    clients: Mutex<HashMap<String, Slot>>,
    failed: Mutex<HashMap<String, Duration>>,
    clock: Arc<dyn Clock>,
    connect_timeout: Duration,
    retry_after: Duration,
    tls: Option<FlightTls>,
    /// This process's proof of the key (one nonce per process).
    proof: Mutex<Option<String>>,
}

impl Links {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        connect_timeout: Duration,
        retry_after: Duration,
        tls: Option<FlightTls>,
    ) -> Self {
        Self {
            clients: Mutex::default(),
            failed: Mutex::default(),
            clock,
            connect_timeout,
            retry_after,
            tls,
            proof: Mutex::default(),
        }
    }

    /// The proof this process sends.
    pub(crate) fn proof(&self, key: &FlightKey) -> String {
        lock(&self.proof)
            .get_or_insert_with(|| key.proof(&apiary_storage::Random::process().id()))
            .clone()
    }

    /// Whether `node`'s link failed recently (its tasks then go through storage).
    pub(crate) fn failed_recently(&self, node: &str) -> bool {
        let now = self.clock.monotonic();
        let mut failed = lock(&self.failed);
        match failed.get(node) {
            Some(&until) if now < until => true,
            Some(_) => {
                failed.remove(node);
                false
            }
            None => false,
        }
    }

    /// Notes that `node`'s link failed; its address's connection is dropped.
    pub(crate) fn mark_failed(&self, node: &str) {
        let until = self.clock.monotonic() + self.retry_after;
        lock(&self.failed).insert(node.to_string(), until);
    }

    /// A client for `address`, connecting (with the handshake) if none is open. Callers
    /// asking at once for the same address share one connection attempt.
    pub(crate) async fn client(&self, address: &str, key: &FlightKey) -> Result<Client, String> {
        let slot = Arc::clone(lock(&self.clients).entry(address.to_string()).or_default());
        let client = slot
            .get_or_try_init(|| async {
                let endpoint = endpoint(address, self.tls.as_ref())?;
                let proof = self.proof(key);
                let connecting = connect(endpoint, address, &proof);
                apiary_storage::time::timeout(self.clock.as_ref(), self.connect_timeout, connecting)
                    .await
                    .map_err(|_| {
                        format!(
                            "no Flight handshake with {address} within {:?}",
                            self.connect_timeout
                        )
                    })?
            })
            .await;
        if client.is_err() {
            self.forget_slot(address, &slot);
        }
        client.cloned()
    }

    /// Whether `node`'s link at `address` opens (or is open). One that does not is logged
    /// and marked failed, so that its tasks go through storage until a retry is due.
    pub(crate) async fn reach(&self, node: &str, address: &str, key: &FlightKey) -> bool {
        match self.client(address, key).await {
            Ok(_) => true,
            Err(why) => {
                tracing::info!(node, %why, "no Flight link; its tasks go through storage");
                self.mark_failed(node);
                false
            }
        }
    }

    /// Whether a link to `address` is open (or opening).
    pub(crate) fn has(&self, address: &str) -> bool {
        lock(&self.clients).contains_key(address)
    }

    /// Forgets the connection to `address` (the next use reconnects).
    pub(crate) fn forget(&self, address: &str) {
        lock(&self.clients).remove(address);
    }

    /// Forgets `slot` if it is still the one held for `address`.
    fn forget_slot(&self, address: &str, slot: &Slot) {
        let mut clients = lock(&self.clients);
        if clients.get(address).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            clients.remove(address);
        }
    }
}

/// How to reach a node's advertised `address`: `https://host:port` over TLS, `host:port`
/// (or `http://host:port`) in plain HTTP/2. A process with TLS configured refuses plain
/// addresses, so that turning TLS on never sends rows in the clear.
fn endpoint(address: &str, tls: Option<&FlightTls>) -> Result<Endpoint, String> {
    let (secure, rest) = match address.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "`{address}` is not a Flight address: the scheme `{scheme}` is neither http nor https"
            ));
        }
        None => (false, address),
    };
    let endpoint = Endpoint::from_shared(format!(
        "{}://{rest}",
        if secure { "https" } else { "http" }
    ))
    .map_err(|e| format!("`{address}` is not a Flight address: {e}"))?
    .tcp_nodelay(true)
    .initial_stream_window_size(STREAM_WINDOW)
    .initial_connection_window_size(CONNECTION_WINDOW);
    if !secure {
        return match tls {
            Some(_) => Err(format!(
                "this process uses TLS for Flight and the node at {address} serves it without \
                 TLS, so its tasks go through storage (give that node --flight-tls-cert)"
            )),
            None => Ok(endpoint),
        };
    }
    let mut config = ClientTlsConfig::new();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => config = config.ca_certificate(Certificate::from_pem(ca)),
        None => config = config.with_native_roots(),
    }
    if let Some(domain) = tls.and_then(|t| t.domain.as_ref()) {
        config = config.domain_name(domain.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| format!("cannot set up TLS for {address}: {}", source_chain(&e)))
}

/// Connects to `address` through `endpoint` and proves the key in a handshake.
async fn connect(endpoint: Endpoint, address: &str, proof: &str) -> Result<Client, String> {
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "cannot connect to the Flight port at {address}: {}",
            source_chain(&e)
        )
    })?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hello = HandshakeRequest {
        protocol_version: 1,
        payload: Bytes::from_static(HANDSHAKE_REPLY),
    };
    let mut request = tonic::Request::new(futures::stream::iter([hello]));
    insert_proof(&mut request, proof)?;
    let mut replies = client
        .handshake(request)
        .await
        .map_err(|s| {
            format!(
                "the Flight handshake with {address} was refused: {}",
                s.message()
            )
        })?
        .into_inner();
    match replies.next().await {
        Some(Ok(reply)) if reply.payload.as_ref() == HANDSHAKE_REPLY => Ok(client),
        Some(Ok(_)) => Err(format!(
            "{address} is a Flight port, but not an Apiary node's"
        )),
        Some(Err(s)) => Err(format!(
            "the Flight handshake with {address} failed: {}",
            s.message()
        )),
        None => Err(format!("the Flight handshake with {address} got no answer")),
    }
}

/// Adds this process's proof of the key to a request.
pub(crate) fn insert_proof<T>(request: &mut tonic::Request<T>, proof: &str) -> Result<(), String> {
    let value = proof
        .parse()
        .map_err(|_| "the Flight proof is not a valid header value".to_string())?;
    request.metadata_mut().insert(PROOF_HEADER, value);
    Ok(())
}

/// An error with its sources, on one line.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
