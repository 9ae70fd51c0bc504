//! A node's Flight port: the handshake, and one `DoExchange` per task pushed to it. Every
//! call must carry a proof of the swarm's key (see [`crate::auth`]); nothing is served
//! without one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use apiary_shuffle::TaskSpec;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{FlightKey, KEY_PATH, PROOF_HEADER};
use crate::client::{CONNECTION_WINDOW, HANDSHAKE_REPLY, STREAM_WINDOW};
use crate::wire::{MAX_MESSAGE_BYTES, ToCoordinator, ToWorker, message, parse};
use crate::worker::{Inbox, Outgoing, Session};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Messages a task's exchange holds before its worker waits for room (with the HTTP/2
/// windows, this bounds a result's bytes in flight).
const OUTGOING: usize = 8;

/// The service behind a node's Flight port.
pub(crate) struct Service {
    pub(crate) key: FlightKey,
    pub(crate) inbox: Arc<Inbox>,
}

impl Service {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let proof = request.metadata().get(PROOF_HEADER).ok_or_else(|| {
            Status::unauthenticated(format!(
                "this Apiary node's Flight port serves only processes that can read its \
                 storage, and this call carried no proof of the swarm's key (`{KEY_PATH}`): \
                 connect with Apiary's Flight transport"
            ))
        })?;
        let proof = proof
            .to_str()
            .map_err(|_| Status::unauthenticated("the Flight proof header is not text"))?;
        self.key.verify(proof).map_err(|why| {
            Status::unauthenticated(format!(
                "this Apiary node refuses the call: {why} (the key is `{KEY_PATH}` in the \
                 node's storage)"
            ))
        })
    }
}

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "an Apiary node's Flight port serves only its shuffle (handshake and exchange), not \
         {what}; query Apiary with SQL instead"
    )))
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.check(&request)?;
        let reply = HandshakeResponse {
            protocol_version: 1,
            payload: Bytes::from_static(HANDSHAKE_REPLY),
        };
        Ok(Response::new(futures::stream::iter([Ok(reply)]).boxed()))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.check(&request)?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the exchange carried no task"))?;
        let (claims_here, lz4) = match parse::<ToWorker>(&first) {
            Ok(ToWorker::Task { claims_here, lz4 }) => (claims_here, lz4),
            Ok(other) => {
                return Err(Status::invalid_argument(format!(
                    "an exchange starts with its task, not {other:?}"
                )));
            }
            Err(e) => return Err(Status::invalid_argument(e.to_string())),
        };
        let task = TaskSpec::decode("a task pushed over Flight", &first.data_body)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Outgoing>(OUTGOING);
        let session = Arc::new(Session::new(task.key(), tx.clone(), claims_here, lz4));
        // Queued before the answer, so the coordinator's publish returns once the task is
        // visible to its node.
        let _ = tx.try_send(Ok(message(&ToCoordinator::Accepted, Bytes::new())));
        self.inbox.deliver(task, Arc::clone(&session));
        let inbox = Arc::clone(&self.inbox);
        tokio::spawn(async move {
            let why = loop {
                match incoming.message().await {
                    Ok(Some(data)) => match parse::<ToWorker>(&data) {
                        Ok(ToWorker::Claimed { id, held }) => session.claimed(id, held),
                        Ok(ToWorker::Received { writer }) => session.received(writer),
                        Ok(ToWorker::Task { .. }) => {
                            break "a second task on one exchange".to_string();
                        }
                        Err(e) => break e.to_string(),
                    },
                    Ok(None) => break "the coordinator ended the exchange".to_string(),
                    Err(status) => break format!("the exchange broke: {}", status.message()),
                }
            };
            tracing::debug!(task = %session.key, %why, "a Flight exchange ended");
            // The coordinator let go of the task: it is no longer wanted.
            inbox.close(&session);
        });
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        unsupported("DoGet")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("DoPut")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("DoAction")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }
}

/// A running Flight port; it stops when dropped or [`shut down`](FlightServer::shutdown).
#[derive(Debug)]
pub struct FlightServer {
    address: SocketAddr,
    secure: bool,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FlightServer {
    /// Serves `service` on `listener`.
    pub(crate) fn spawn(
        listener: tokio::net::TcpListener,
        service: Service,
        tls: Option<ServerTlsConfig>,
    ) -> Result<Self, String> {
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let secure = tls.is_some();
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| {
                format!(
                    "its TLS certificate or key is not usable: {}",
                    crate::client::source_chain(&e)
                )
            })?;
        }
        let (stop, mut stopped) = watch::channel(false);
        let server = FlightServiceServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let served = builder
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the Flight port stopped");
            }
        });
        Ok(Self {
            address,
            secure,
            stop,
            task: Some(task),
        })
    }

    /// The address the port listens on (with the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Whether the port serves TLS (peers then reach it at `https://`).
    pub fn tls(&self) -> bool {
        self.secure
    }

    /// The address to advertise for a port reachable at `host_port`: with `https://` when
    /// it serves TLS.
    pub fn advertised(&self, host_port: &str) -> String {
        match (self.secure, host_port.contains("://")) {
            (true, false) => format!("https://{host_port}"),
            _ => host_port.to_string(),
        }
    }

    /// Stops serving: exchanges under way end, and their coordinators fall back to storage.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
