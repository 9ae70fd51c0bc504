//! Apiary's Arrow Flight shuffle transport.
//!
//! [`FlightShuffle`] implements [`apiary_shuffle::ShuffleTransport`] over Arrow Flight
//! (`arrow-flight` on tonic's HTTP/2) between nodes that can reach each other, and over the
//! storage shuffle between those that cannot, choosing per (coordinator, worker) pair:
//!
//! * **Tasks are pushed.** A node started with a Flight port ([`FlightShuffle::serve`])
//!   advertises its address in its heartbeat ([`FLIGHT_ATTRIBUTE`]). A coordinator opens one
//!   `DoExchange` per task attempt to the task's node; the node queues the task and wakes its
//!   worker at once, with no poll interval.
//! * **Results stream back** on the same exchange as Arrow IPC, cut into chunks that the
//!   coordinator keeps in memory up to a budget and in temporary files beyond it
//!   ([`FlightConfig`]); optional LZ4. A bounded queue per exchange and HTTP/2 flow control
//!   bound the bytes in flight: a worker that produces faster than the link waits.
//! * **Cancellation** is the exchange's end: a finished or cancelled query drops its
//!   exchanges, and a worker asking whether its task is still wanted hears "no" at once.
//! * **Fallback.** A node with no address, a refused or timed-out handshake, or a link that
//!   broke gets its tasks through storage; a link that breaks mid-query fails that attempt
//!   (retryable), and the next attempt goes through storage. The coordinator's rule that a
//!   result counts only if none of its cells was read already keeps the answer exact.
//! * **Claims** of shared cells are arbitrated by the coordinator, in memory, when every task
//!   of the round is reachable over Flight, and through storage otherwise; never mixed
//!   within a round.
//! * **Security with no configuration.** Only processes that can read the storage can talk to
//!   a Flight port: the swarm's key is kept in storage ([`KEY_PATH`]) and every call carries
//!   an HMAC proof of it ([`auth`]). A client without it is refused and served nothing.
//!   TLS is optional on top ([`FlightTls`]): a node serving it advertises `https://`, and a
//!   process using it never pushes rows to a peer in the clear.
//!
//! ```no_run
//! # async fn demo() -> apiary_shuffle::Result<()> {
//! use std::sync::Arc;
//! use apiary_flight::{FlightShuffle, StaticPeers};
//! let backend = apiary_storage::memory();
//! let peers = StaticPeers::default();
//! peers.set("node-b", Some("10.0.0.12:50051"));
//! let shuffle = FlightShuffle::new(backend, Arc::new(peers));
//! let port = shuffle.serve("0.0.0.0:50051".parse().unwrap()).await?;
//! println!("serving Flight on {}", port.local_addr());
//! # Ok(()) }
//! ```

pub mod auth;
mod client;
mod config;
mod coordinator;
mod server;
mod shuffle;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;
mod worker;
mod writer;

pub use auth::{FlightKey, KEY_PATH, PROOF_HEADER};
pub use config::{FLIGHT_ATTRIBUTE, FlightConfig, FlightTls, Peers, StaticPeers};
pub use server::FlightServer;
pub use shuffle::FlightShuffle;
