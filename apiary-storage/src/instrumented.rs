//! [`InstrumentedStore`]: an `ObjectStore` wrapper that counts requests and, for tests,
//! injects seeded faults.
//!
//! It sits *below* [`ObjectStoreBackend`](crate::ObjectStoreBackend), where network faults
//! really happen, so the backend's own resolution of lost responses is what gets tested.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use crate::counts::RequestCounts;
pub use crate::hold::{Hold, RequestKind};
use crate::request_log::{Operation, Outcome, RequestLog, RequestStats, Timed};
pub use crate::trace::RequestTrace;
use crate::{Clock, SystemClock};

/// Which faults to inject, and how often. All rates are probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Seed of the random choices, so that a failing history can be replayed.
    pub seed: u64,
    /// A request fails before reaching the store (nothing applied).
    pub error_rate: f64,
    /// A write is applied, then its response is lost (the caller sees an error).
    pub lost_response_rate: f64,
    /// A create-if-absent is answered `409 ConditionalRequestConflict` without being applied,
    /// as S3 does when conditional writes to one key race.
    pub conflict_rate: f64,
    /// Each request is delayed by a random duration up to this.
    pub max_latency: Duration,
    /// Each listing is delayed by a random duration up to this, on top of `max_latency`
    /// (a slow LIST: a large prefix, a busy server).
    pub max_list_latency: Duration,
    /// Conditional writes are silently applied as plain overwrites (a store that ignores
    /// `If-None-Match` / `If-Match`).
    pub ignore_preconditions: bool,
    /// Each object is left out of a listing with this probability, as a listing that is not
    /// a snapshot (a local folder's readdir racing creates) or an eventually consistent
    /// store may do.
    pub list_omission_rate: f64,
}

impl FaultConfig {
    /// No faults: the wrapper only counts.
    pub fn none() -> Self {
        Self::default()
    }
}

#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    conditional_put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    cell_get: AtomicU64,
    /// The same requests by outcome, with their durations.
    log: Arc<RequestLog>,
}

/// Counts requests to an inner store and optionally injects faults.
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    faults: FaultConfig,
    rng: Arc<Mutex<StdRng>>,
    counters: Arc<Counters>,
    hold: Option<Hold>,
    /// Only counts: no draw, no lock, no yield per request (a production node's counters).
    counting_only: bool,
    /// Times requests.
    clock: Arc<dyn Clock>,
    /// Where each request and the fault it drew are written down, when asked.
    trace: Option<RequestTrace>,
    /// This store's name in the trace.
    label: String,
}

/// A cheap handle to read an [`InstrumentedStore`]'s counts after it was moved into a backend.
#[derive(Debug, Clone)]
pub struct CountsHandle(Arc<Counters>);

impl CountsHandle {
    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        let c = &self.0;
        RequestCounts {
            get: c.get.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            put: c.put.load(Ordering::Relaxed),
            conditional_put: c.conditional_put.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            cell_get: c.cell_get.load(Ordering::Relaxed),
        }
    }

    /// The requests so far by operation and outcome, with their durations.
    pub fn stats(&self) -> RequestStats {
        self.0.log.snapshot()
    }
}

enum Fault {
    None,
    FailBefore,
    LoseResponse,
    Conflict,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::None => "ok",
            Fault::FailBefore => "failed",
            Fault::LoseResponse => "response-lost",
            Fault::Conflict => "conflict",
        })
    }
}

/// The default backend over the store `uri` names, its requests counted below it (no
/// faults): what benchmarks and request-count tests measure through.
pub fn counted_backend(
    uri: &crate::StorageUri,
) -> crate::Result<(Arc<dyn crate::StorageBackend>, CountsHandle)> {
    let (store, caps) = crate::object_store_for(uri)?;
    let store = InstrumentedStore::new(store, FaultConfig::none());
    let counts = store.counts();
    let backend = crate::ObjectStoreBackend::new(Arc::new(store), caps, uri.to_string());
    Ok((Arc::new(backend), counts))
}

impl InstrumentedStore {
    /// Wraps `inner` with the given faults.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: FaultConfig) -> Self {
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(faults.seed)));
        Self {
            inner,
            faults,
            rng,
            counters: Arc::default(),
            hold: None,
            counting_only: false,
            clock: SystemClock::shared(),
            trace: None,
            label: String::new(),
        }
    }

    /// Writes every request down in `trace` (shared with other stores, if they are given
    /// the same one).
    pub fn with_trace(mut self, label: &str, trace: RequestTrace) -> Self {
        self.trace = Some(trace);
        self.label = label.to_string();
        self
    }

    /// Notes one request in the trace, if there is one.
    fn note(&self, op: &str, location: &dyn fmt::Display, outcome: &dyn fmt::Display) {
        if let Some(trace) = &self.trace {
            let ms = self.clock.monotonic().as_millis();
            trace.push(format!("{ms} {} {op} {location} {outcome}", self.label));
        }
    }

    /// Times requests on `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts timing `n` requests of `op`.
    fn timed(&self, op: Operation, n: u64) -> Timed {
        Timed::start(&self.counters.log, &self.clock, op, n)
    }

    /// Wraps `inner` to count its requests and nothing else: what a running node uses to
    /// report its request rate and cost (no faults, no pause, no lock per request).
    pub fn counting(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            counting_only: true,
            ..Self::new(inner, FaultConfig::none())
        }
    }

    /// Pauses requests at `hold` while it is closed.
    pub fn with_hold(mut self, hold: Hold) -> Self {
        self.hold = Some(hold);
        self
    }

    async fn pass(&self, kind: RequestKind) {
        if let Some(hold) = &self.hold {
            hold.pass(kind).await;
        }
    }

    /// `stream`, started only once the hold lets a LIST through.
    fn held_list(
        &self,
        prefix: Option<&Path>,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let slow = self.list_delay();
        self.note("list", &Listed(prefix), &format_args!("slow {slow:?}"));
        match self.hold.clone() {
            None if slow.is_zero() => stream,
            hold => futures::stream::once(async move {
                if let Some(hold) = hold {
                    hold.pass(RequestKind::List).await;
                }
                if !slow.is_zero() {
                    crate::time::sleep(slow).await;
                }
                stream
            })
            .flatten()
            .boxed(),
        }
    }

    /// Draws the extra delay of one listing (see [`FaultConfig::max_list_latency`]).
    fn list_delay(&self) -> Duration {
        let max = self.faults.max_list_latency;
        if self.counting_only || max.is_zero() {
            return Duration::ZERO;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        max.mul_f64(rng.random::<f64>())
    }

    /// A handle to the request counts.
    pub fn counts(&self) -> CountsHandle {
        CountsHandle(Arc::clone(&self.counters))
    }

    /// Draws the fault for one request, and sleeps the injected latency.
    async fn draw(&self, write: bool, create: bool) -> Fault {
        if self.counting_only {
            return Fault::None;
        }
        let (delay, fault) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let f = &self.faults;
            let delay = if f.max_latency.is_zero() {
                Duration::ZERO
            } else {
                f.max_latency.mul_f64(rng.random::<f64>())
            };
            let roll: f64 = rng.random();
            let fault = if roll < f.error_rate {
                Fault::FailBefore
            } else if write && roll < f.error_rate + f.lost_response_rate {
                Fault::LoseResponse
            } else if create && roll < f.error_rate + f.lost_response_rate + f.conflict_rate {
                Fault::Conflict
            } else {
                Fault::None
            };
            (delay, fault)
        };
        if delay.is_zero() {
            // Still give other tasks a chance to run here, as a network round trip would.
            tokio::task::yield_now().await;
        } else {
            crate::time::sleep(delay).await;
        }
        fault
    }
}

/// Keys per listing page, as S3 pages them.
const LIST_PAGE: u64 = 1000;

impl InstrumentedStore {
    /// Counts one LIST request per page of the listing.
    fn count_pages(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        bump(&self.counters.list);
        let timer = self.timed(Operation::List, 1);
        let counters = Arc::clone(&self.counters);
        // The listing is timed until its stream ends (or is dropped: cancelled).
        futures::stream::unfold(
            (stream, timer, 0u64, counters),
            |(mut stream, mut timer, mut seen, counters)| async move {
                let Some(item) = stream.next().await else {
                    timer.answered();
                    return None;
                };
                if item.is_err() {
                    timer.failed();
                }
                seen += 1;
                if seen > LIST_PAGE && (seen - 1).is_multiple_of(LIST_PAGE) {
                    bump(&counters.list);
                    counters.log.count(Operation::List, Outcome::Ok, 1);
                }
                Some((item, (stream, timer, seen, counters)))
            },
        )
        .boxed()
    }

    /// Drops listing items at the configured omission rate.
    fn omit_some(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let rate = self.faults.list_omission_rate;
        if rate <= 0.0 {
            return stream;
        }
        let rng = Arc::clone(&self.rng);
        stream
            .filter(move |_| {
                let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
                futures::future::ready(rng.random::<f64>() >= rate)
            })
            .boxed()
    }
}

/// A listing's prefix, as the trace shows it.
struct Listed<'a>(Option<&'a Path>);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(prefix) => write!(f, "{prefix}/"),
            None => f.write_str("/"),
        }
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: format!("injected fault: {what}").into(),
    }
}

impl fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstrumentedStore")
            .field("inner", &self.inner.to_string())
            .field("faults", &self.faults)
            .finish()
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let conditional = !matches!(opts.mode, PutMode::Overwrite);
        let create = matches!(opts.mode, PutMode::Create);
        self.pass(if conditional {
            RequestKind::ConditionalPut
        } else {
            RequestKind::Put
        })
        .await;
        bump(if conditional {
            &self.counters.conditional_put
        } else {
            &self.counters.put
        });
        if self.faults.ignore_preconditions {
            opts.mode = PutMode::Overwrite;
        }
        let timer = self.timed(
            if conditional {
                Operation::ConditionalPut
            } else {
                Operation::Put
            },
            1,
        );
        let fault = self.draw(true, create).await;
        let op = match opts.mode {
            PutMode::Overwrite => "put",
            PutMode::Create => "create",
            PutMode::Update(_) => "update",
        };
        if self.trace.is_some() {
            // The body's checksum too: a replay must write the same bytes, not only the
            // same keys.
            let crc = payload
                .iter()
                .fold(0, |crc, b| crc32c::crc32c_append(crc, b));
            self.note(op, location, &format_args!("{fault} body {crc:08x}"));
        }
        let result = match fault {
            Fault::FailBefore => Err(injected("request failed before reaching the store")),
            Fault::Conflict => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "injected fault: 409 ConditionalRequestConflict".into(),
            }),
            Fault::LoseResponse => {
                // Whatever the store answered, the caller never hears it.
                let _ = self.inner.put_opts(location, payload, opts).await;
                Err(injected("response lost after the write was applied"))
            }
            Fault::None => self.inner.put_opts(location, payload, opts).await,
        };
        timer.finish(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        bump(&self.counters.put);
        let timer = self.timed(Operation::Put, 1);
        timer.finish(self.inner.put_multipart_opts(location, opts).await)
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.pass(if options.head {
            RequestKind::Head
        } else {
            RequestKind::Get
        })
        .await;
        bump(if options.head {
            &self.counters.head
        } else {
            &self.counters.get
        });
        if !options.head && location.as_ref().ends_with(".parquet") {
            bump(&self.counters.cell_get);
        }
        let timer = self.timed(
            if options.head {
                Operation::Head
            } else {
                Operation::Get
            },
            1,
        );
        let fault = self.draw(false, false).await;
        self.note(if options.head { "head" } else { "get" }, location, &fault);
        timer.finish(match fault {
            Fault::None => self.inner.get_opts(location, options).await,
            _ => Err(injected("read failed")),
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.pass(RequestKind::Get).await;
        self.counters
            .get
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        if location.as_ref().ends_with(".parquet") {
            self.counters
                .cell_get
                .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        }
        let timer = self.timed(Operation::Get, ranges.len() as u64);
        let fault = self.draw(false, false).await;
        self.note("get-ranges", location, &fault);
        timer.finish(match fault {
            Fault::None => self.inner.get_ranges(location, ranges).await,
            _ => Err(injected("ranged read failed")),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counters = Arc::clone(&self.counters);
        let trace = self
            .trace
            .clone()
            .map(|t| (t, self.label.clone(), Arc::clone(&self.clock)));
        let counted = locations
            .inspect(move |location| {
                bump(&counters.delete);
                if let (Some((trace, label, clock)), Ok(location)) = (&trace, location) {
                    let ms = clock.monotonic().as_millis();
                    trace.push(format!("{ms} {label} delete {location} ok"));
                }
            })
            .boxed();
        // Deletes may be batched by the store: each is counted by its outcome, untimed.
        let log = Arc::clone(&self.counters.log);
        self.inner
            .delete_stream(counted)
            .inspect(move |result| log.count(Operation::Delete, Outcome::of(result), 1))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.held_list(
            prefix,
            self.omit_some(self.count_pages(self.inner.list(prefix))),
        )
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.held_list(
            prefix,
            self.omit_some(self.count_pages(self.inner.list_with_offset(prefix, offset))),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.pass(RequestKind::List).await;
        bump(&self.counters.list);
        let timer = self.timed(Operation::List, 1);
        let slow = self.list_delay();
        if !slow.is_zero() {
            crate::time::sleep(slow).await;
        }
        let fault = self.draw(false, false).await;
        self.note(
            "list-delimited",
            &Listed(prefix),
            &format_args!("{fault} slow {slow:?}"),
        );
        let result = match fault {
            Fault::None => self.inner.list_with_delimiter(prefix).await,
            _ => Err(injected("listing failed")),
        };
        match timer.finish(result) {
            Ok(mut result) => {
                let keys = (result.objects.len() + result.common_prefixes.len()) as u64;
                let pages = keys.saturating_sub(1) / LIST_PAGE;
                self.counters.list.fetch_add(pages, Ordering::Relaxed);
                self.counters.log.count(Operation::List, Outcome::Ok, pages);
                let rate = self.faults.list_omission_rate;
                if rate > 0.0 {
                    let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                    result.objects.retain(|_| rng.random::<f64>() >= rate);
                }
                Ok(result)
            }
            Err(e) => Err(e),
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        bump(&self.counters.put);
        self.note("copy", &format_args!("{from} -> {to}"), &"ok");
        let timer = self.timed(Operation::Put, 1);
        timer.finish(self.inner.copy_opts(from, to, options).await)
    }
}
