//! [`ApiaryBuilder`]: a node composed from parts. `Apiary::open` and the `apiary` binary use
//! the defaults (object_store storage, storage heartbeats, the storage shuffle); a custom
//! node binary plugs in its own storage backend, membership or shuffle transport.
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiary::ApiaryError> {
//! use std::sync::Arc;
//! use apiary::{Apiary, ApiaryOptions};
//! use apiary::apiary_query::distributed::StorageShuffle;
//! use apiary::apiary_storage::StorageUri;
//! let options = ApiaryOptions::new(StorageUri::parse("./apiary-data")?);
//! let backend = apiary::apiary_storage::open(&options.storage).await?;
//! let ap = Apiary::builder(options)
//!     .backend(Arc::clone(&backend))
//!     .transport(Arc::new(StorageShuffle::new(backend)))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use apiary_query::distributed::ShuffleTransport;
use apiary_storage::StorageBackend;
use apiary_swarm::{Membership, NodeId, SwarmConfig};

use crate::{Apiary, ApiaryOptions, NodeOptions, Result};

/// What a membership is made for.
#[derive(Debug, Clone, Copy)]
pub enum MembershipRole<'a> {
    /// A node joining the swarm (at `start`, once its id is known).
    Node {
        /// The node's id.
        id: &'a NodeId,
        /// Its options (clock, intervals, thresholds).
        options: &'a NodeOptions,
    },
    /// A process that only reads the swarm and asks nodes to drain (`apiary swarm`,
    /// `apiary drain`, a coordinator that is not a node). It never joins.
    Observer {
        /// Thresholds to judge the swarm by.
        swarm: &'a SwarmConfig,
    },
}

/// Makes this process's membership for a role. Every swarm operation of [`Apiary`] goes
/// through a membership made here, so a custom one replaces storage heartbeats entirely.
pub type MembershipFactory = Arc<dyn Fn(MembershipRole<'_>) -> Arc<dyn Membership> + Send + Sync>;

/// Composes an [`Apiary`] from parts; anything not given is the default.
pub struct ApiaryBuilder {
    options: ApiaryOptions,
    backend: Option<Arc<dyn StorageBackend>>,
    membership: Option<MembershipFactory>,
    transport: Option<Transport>,
}

/// The transport given to the builder: made already, or made from the opened backend.
enum Transport {
    Given(Arc<dyn ShuffleTransport>),
    Made(TransportFactory),
}

/// Makes a shuffle transport from the node's opened storage backend.
type TransportFactory =
    Box<dyn FnOnce(&Arc<dyn StorageBackend>) -> Arc<dyn ShuffleTransport> + Send>;

impl std::fmt::Debug for ApiaryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiaryBuilder")
            .field("storage", &self.options.storage.to_string())
            .field("backend", &self.backend.as_ref().map(|b| b.to_string()))
            .field("membership", &self.membership.is_some())
            .field(
                "transport",
                &match &self.transport {
                    Some(Transport::Given(t)) => format!("{t:?}"),
                    Some(Transport::Made(_)) => "made from the backend".into(),
                    None => "the storage shuffle".into(),
                },
            )
            .finish()
    }
}

impl ApiaryBuilder {
    /// A builder over `options` (the storage URI names the root; it is opened unless a
    /// backend is given).
    pub fn new(options: ApiaryOptions) -> Self {
        Self {
            options,
            backend: None,
            membership: None,
            transport: None,
        }
    }

    /// Uses `backend` instead of opening the storage URI (the preflight is the caller's).
    pub fn backend(mut self, backend: Arc<dyn StorageBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Uses this membership instead of storage heartbeats.
    pub fn membership(mut self, factory: MembershipFactory) -> Self {
        self.membership = Some(factory);
        self
    }

    /// Uses this shuffle transport instead of the storage shuffle.
    pub fn transport(mut self, transport: Arc<dyn ShuffleTransport>) -> Self {
        self.transport = Some(Transport::Given(transport));
        self
    }

    /// Uses the shuffle transport `make` builds from the node's storage backend once it is
    /// open (for a transport that keeps, or falls back to, the shared storage).
    pub fn transport_with(
        mut self,
        make: impl FnOnce(&Arc<dyn StorageBackend>) -> Arc<dyn ShuffleTransport> + Send + 'static,
    ) -> Self {
        self.transport = Some(Transport::Made(Box::new(make)));
        self
    }

    /// Opens the storage (with its preflight) unless a backend was given, and composes the
    /// node.
    pub async fn build(self) -> Result<Apiary> {
        self.options.distribute.validate()?;
        let backend = match self.backend {
            Some(b) => b,
            None => apiary_storage::open(&self.options.storage).await?,
        };
        let transport = self.transport.map(|t| match t {
            Transport::Given(t) => t,
            Transport::Made(make) => make(&backend),
        });
        Ok(Apiary::from_parts(
            self.options,
            backend,
            self.membership,
            transport,
        ))
    }
}
