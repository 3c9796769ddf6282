//! The scheduler: solves a graph of vertices in parallel, once per vertex, from the cache when it can.
//!
//! # Overview
//!
//! The scheduler knows nothing of LLB op kinds. A [`Vertex`] is an [`Op`] with a digest, a name
//! and input [`Edge`]s; an op says how it is cached ([`Op::cache_map`]) and how it runs
//! ([`Op::exec`]). Results are an opaque type `R` chosen by the caller (for LLB: a snapshot
//! reference), one per output of a vertex.
//!
//! Solving an edge is, for each vertex reached from it:
//!
//! 1. Compute the vertex's definition-based key: its op's [`CacheMap`] digest, a source's own
//!    content digest ([`Op::content_key`], e.g. a checksum of a local directory's selected
//!    files), and each input's definition-based key with the selector it is read through.
//!    Keys are computed top-down, so a cached result at the top of the graph means nothing
//!    below it runs at all.
//! 2. Look the key up in the [`CacheStore`]; a hit is reported as cached and returned. On a
//!    miss, try the content-based keys, cheapest first (BuildKit keeps both kinds per input
//!    too): by the inputs' own content-based keys (a source's content digest, alone: the same
//!    files under another name or definition), then by the content the op reads from its
//!    inputs ([`CacheDep::content`]: for a copy, a checksum of exactly the paths copied, so a
//!    change to another file of the same source still hits). Only the last one needs inputs
//!    solved, and none is computed below a vertex that hits.
//! 3. On a miss, solve every input edge concurrently, then run the op. Ops of
//!    [`ResourceClass::Exec`] take a permit from a semaphore sized by
//!    [`SchedulerBuilder::max_parallel_exec`]; I/O-bound ops are not bounded by it, only by a
//!    much larger [`SchedulerBuilder::max_parallel_io`].
//! 4. Save the outputs under every key, and record in the [`History`] how the op was keyed
//!    and, for a miss, why ([`MissReason`]: no record, content changed, which input changed,
//!    pruned), for `kiln explain`.
//!
//! Each vertex's key and result are shared futures, so a vertex that several others depend on
//! runs once. The scheduler also remembers which vertices are in flight across all solves it
//! serves: two builds that ask for the same digest at the same time share one execution.
//!
//! The first error fails the solve and drops the futures of everything else in it; ops must
//! stop their work when dropped (the runner kills its processes). The error names the vertex.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared, try_join_all};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::history::{History, KeyRecord, MissReason};

/// The error an op returns. Ops are implemented outside the scheduler, so their errors are boxed.
pub type OpError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A cache key: sha256 over an op's cache digest and its inputs' keys or content digests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key's raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from raw bytes (as stored by a [`CacheStore`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What an op's result depends on, besides the op itself.
pub struct CacheMap<R> {
    /// A digest of everything about the op that affects its result (for LLB: the op digest,
    /// with resolved values such as an image's manifest digest in place of a tag).
    pub digest: String,
    /// One entry per input edge, in order.
    pub deps: Vec<CacheDep<R>>,
}

/// How one input contributes to a cache key.
pub struct CacheDep<R> {
    /// A part of the input that matters (for a copy: the source path); mixed into the key.
    pub selector: Option<String>,
    /// When set, the vertex also has a content-based key that uses this digest of the input's
    /// result in place of the input's key (BuildKit's content-based cache for copies): the
    /// input must then be solved before that key is known, so it is tried only after the
    /// other keys miss.
    pub content: Option<ContentDigestFn<R>>,
}

impl<R> CacheDep<R> {
    /// A dependency keyed by the input's own cache key.
    pub fn definition() -> Self {
        Self {
            selector: None,
            content: None,
        }
    }
}

/// What a source knows of its result's content before producing it (a local directory: a
/// checksum of exactly the files it selects). Two sources with equal content digests produce
/// equal results, whatever their definitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContent {
    /// The content digest.
    pub digest: String,
    /// A file that changed since the source was last keyed, when the source can tell (for
    /// [`MissReason::ContentChanged`]).
    pub changed: Option<String>,
}

/// Computes a digest of an input's result for a content-based key.
pub type ContentDigestFn<R> =
    Arc<dyn Fn(R, Option<String>) -> BoxFuture<'static, Result<String, OpError>> + Send + Sync>;

/// Which resource pool an op's execution draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceClass {
    /// Runs processes or burns CPU: bounded by the exec parallelism.
    Exec,
    /// Waits on disks or the network: not bounded by the exec parallelism.
    Io,
}

/// What runs for a vertex.
pub trait Op<R>: Send + Sync + 'static {
    /// How the op's result is cached. Called once per vertex per solve, before anything runs.
    fn cache_map(&self, ctx: OpContext) -> BoxFuture<'static, Result<CacheMap<R>, OpError>>;
    /// Produces the op's outputs from its inputs' results (one per input edge, in order).
    fn exec(&self, ctx: OpContext, inputs: Vec<R>) -> BoxFuture<'static, Result<Vec<R>, OpError>>;
    /// The pool the op's execution draws from.
    fn resource_class(&self) -> ResourceClass {
        ResourceClass::Io
    }
    /// The content of the op's result, for sources that know it before running (see
    /// [`SourceContent`]). Mixed into the definition-based key and, alone, it is the op's
    /// content-based key. Called once per vertex per solve, after [`Op::cache_map`].
    fn content_key(
        &self,
        _ctx: OpContext,
    ) -> BoxFuture<'static, Result<Option<SourceContent>, OpError>> {
        futures::future::ready(Ok(None)).boxed()
    }
}

/// A reference to output `output` of the vertex with digest `vertex`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The digest of the vertex.
    pub vertex: Arc<str>,
    /// The index of the output.
    pub output: usize,
}

/// One node of the graph.
pub struct Vertex<R> {
    /// The vertex's identity (for LLB: the op digest). Equal digests mean equal work.
    pub digest: Arc<str>,
    /// A human-readable name for progress and errors.
    pub name: String,
    /// The inputs, in the order the op expects them.
    pub inputs: Vec<Edge>,
    /// What runs.
    pub op: Arc<dyn Op<R>>,
    /// Run even when the cache has a result (`--no-cache`).
    pub ignore_cache: bool,
}

/// A graph of vertices by digest.
pub struct Graph<R> {
    vertices: HashMap<Arc<str>, Vertex<R>>,
}

impl<R> Default for Graph<R> {
    fn default() -> Self {
        Self {
            vertices: HashMap::new(),
        }
    }
}

impl<R> Graph<R> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex; a vertex with the same digest is replaced.
    pub fn add(&mut self, vertex: Vertex<R>) {
        self.vertices.insert(vertex.digest.clone(), vertex);
    }

    /// The vertex with this digest.
    pub fn get(&self, digest: &str) -> Option<&Vertex<R>> {
        self.vertices.get(digest)
    }

    /// The number of vertices.
    pub fn len(&self) -> usize {
        self.vertices.len()
    }

    /// Whether the graph has no vertex.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }
}

/// Where results are kept between solves.
pub trait CacheStore<R>: Send + Sync + 'static {
    /// The outputs saved under `key`, if any.
    fn load(&self, key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<R>>, OpError>>;
    /// Saves outputs under `key`.
    fn save(&self, key: &CacheKey, outputs: &[R]) -> BoxFuture<'static, Result<(), OpError>>;
    /// The key history saved last (see [`History`]); empty by default.
    fn load_history(&self) -> History {
        History::default()
    }
    /// Keeps the key history, beside the cache; by default it is not kept.
    /// The implementation may merge what others saved meanwhile into `history`.
    fn save_history(&self, _history: &mut History) {}
}

/// A cache that keeps nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl<R: Send + 'static> CacheStore<R> for NoCache {
    fn load(&self, _key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<R>>, OpError>> {
        futures::future::ready(Ok(None)).boxed()
    }
    fn save(&self, _key: &CacheKey, _outputs: &[R]) -> BoxFuture<'static, Result<(), OpError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// What a solve reports as it goes. Progress is data: the CLI renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The op started running.
    Started {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
    },
    /// The result came from the cache; the op did not run.
    Cached {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
    },
    /// The op finished.
    Completed {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// How long it ran.
        duration: Duration,
    },
    /// The op failed.
    Failed {
        /// The vertex digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// The error, as text.
        error: String,
    },
    /// Output of a running op (for exec: its stdout or stderr).
    Log {
        /// The vertex digest.
        vertex: Arc<str>,
        /// 1 for stdout, 2 for stderr.
        stream: u8,
        /// The bytes, as they came.
        data: Vec<u8>,
    },
}

/// Receives progress events.
pub trait Reporter: Send + Sync + 'static {
    /// Called for every event, from any thread.
    fn event(&self, event: Event);
}

/// A reporter that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {
    fn event(&self, _event: Event) {}
}

/// What an op gets to know about the vertex it runs for.
#[derive(Clone)]
pub struct OpContext {
    vertex: Arc<str>,
    reporter: Arc<dyn Reporter>,
}

impl OpContext {
    /// The digest of the vertex.
    pub fn vertex(&self) -> &Arc<str> {
        &self.vertex
    }

    /// Reports a chunk of the op's output (1 = stdout, 2 = stderr).
    pub fn log(&self, stream: u8, data: &[u8]) {
        self.reporter.event(Event::Log {
            vertex: self.vertex.clone(),
            stream,
            data: data.to_vec(),
        });
    }
}

/// Why a solve failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SolveError {
    /// The graph names a vertex it does not hold.
    #[error("vertex {vertex} is not in the graph")]
    MissingVertex {
        /// The digest.
        vertex: Arc<str>,
    },
    /// An edge names an output the vertex does not have.
    #[error("vertex {vertex} ({name}) has {outputs} outputs, not {output}")]
    MissingOutput {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// The index asked for.
        output: usize,
        /// How many the op produced.
        outputs: usize,
    },
    /// Computing the cache key failed.
    #[error("computing the cache key of {name} ({vertex})")]
    CacheKey {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
    /// Reading or writing the cache failed.
    #[error("cache of {name} ({vertex})")]
    Cache {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
    /// The op failed.
    #[error("{name}")]
    Exec {
        /// The digest.
        vertex: Arc<str>,
        /// The vertex name.
        name: String,
        /// What failed.
        #[source]
        source: Arc<OpError>,
    },
}

impl SolveError {
    /// The digest of the vertex that failed.
    pub fn vertex(&self) -> &Arc<str> {
        match self {
            Self::MissingVertex { vertex }
            | Self::MissingOutput { vertex, .. }
            | Self::CacheKey { vertex, .. }
            | Self::Cache { vertex, .. }
            | Self::Exec { vertex, .. } => vertex,
        }
    }
}

type SharedKey<R> = Shared<BoxFuture<'static, Result<Arc<Keys<R>>, SolveError>>>;
type SharedLookup<R> = Shared<BoxFuture<'static, Result<Option<Arc<Vec<R>>>, SolveError>>>;
type SharedAlt = Shared<BoxFuture<'static, Result<Option<CacheKey>, SolveError>>>;
type SharedResult<R> = Shared<BoxFuture<'static, Result<Arc<Vec<R>>, SolveError>>>;
type WeakResult<R> = WeakShared<BoxFuture<'static, Result<Arc<Vec<R>>, SolveError>>>;

/// Configures a [`Scheduler`].
pub struct SchedulerBuilder<R> {
    cache: Arc<dyn CacheStore<R>>,
    max_parallel_exec: usize,
    max_parallel_io: usize,
}

impl<R: Clone + Send + Sync + 'static> SchedulerBuilder<R> {
    /// How many [`ResourceClass::Exec`] ops run at once (default: the number of cores).
    pub fn max_parallel_exec(mut self, n: usize) -> Self {
        self.max_parallel_exec = n.max(1);
        self
    }

    /// How many [`ResourceClass::Io`] ops run at once (default: 8 per core, at least 16).
    /// Far above the exec bound, so waiting on the network or disks is overlapped; bounded so
    /// that thousands of ready file ops do not each take a thread and contend for the same
    /// directories.
    pub fn max_parallel_io(mut self, n: usize) -> Self {
        self.max_parallel_io = n.max(1);
        self
    }

    /// Where results are cached (default: nowhere).
    pub fn cache(mut self, cache: Arc<dyn CacheStore<R>>) -> Self {
        self.cache = cache;
        self
    }

    /// The scheduler.
    pub fn build(self) -> Scheduler<R> {
        Scheduler {
            inner: Arc::new(Inner {
                cache: self.cache,
                exec_permits: Arc::new(Semaphore::new(self.max_parallel_exec)),
                io_permits: Arc::new(Semaphore::new(self.max_parallel_io)),
                in_flight: Mutex::new(HashMap::new()),
                history: Mutex::new(None),
            }),
        }
    }
}

/// Solves graphs; one scheduler serves every build of a process so equal work is shared.
pub struct Scheduler<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Scheduler<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R> {
    cache: Arc<dyn CacheStore<R>>,
    exec_permits: Arc<Semaphore>,
    io_permits: Arc<Semaphore>,
    /// Results being computed, by vertex digest, across all solves.
    in_flight: Mutex<HashMap<Arc<str>, WeakResult<R>>>,
    /// The key history, loaded from the cache at the first solve.
    history: Mutex<Option<History>>,
}

impl<R: Clone + Send + Sync + 'static> Scheduler<R> {
    /// A builder with the defaults.
    pub fn builder() -> SchedulerBuilder<R> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SchedulerBuilder {
            cache: Arc::new(NoCache),
            max_parallel_exec: cores,
            max_parallel_io: (cores * 8).max(16),
        }
    }

    /// Solves `target` in `graph` and returns its result.
    pub async fn solve(
        &self,
        graph: Arc<Graph<R>>,
        target: Edge,
        reporter: Arc<dyn Reporter>,
    ) -> Result<R, SolveError> {
        lock(&self.inner.history)
            .get_or_insert_with(|| self.inner.cache.load_history())
            .next_generation();
        let job = Arc::new(Job {
            inner: self.inner.clone(),
            graph,
            reporter,
            keys: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            alts: Mutex::new(HashMap::new()),
            content_keys: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
        });
        // The maps hold shared futures that hold the job: clear them when the solve ends, also
        // when its future is dropped, so that unfinished work is dropped (cancelled) with it.
        let _clear = ClearOnDrop(job.clone());
        let result = job.edge_result(&target).await;
        self.save_history();
        result
    }

    /// The key history: how ops were keyed and why vertices missed.
    pub fn history(&self) -> History {
        lock(&self.inner.history)
            .get_or_insert_with(|| self.inner.cache.load_history())
            .clone()
    }

    fn save_history(&self) {
        let mut history = lock(&self.inner.history);
        if let Some(history) = history.as_mut() {
            history.trim();
            self.inner.cache.save_history(history);
        }
    }
}

struct ClearOnDrop<R>(Arc<Job<R>>);

impl<R> Drop for ClearOnDrop<R> {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut *lock(&self.0.keys));
        let lookups = std::mem::take(&mut *lock(&self.0.lookups));
        let alts = std::mem::take(&mut *lock(&self.0.alts));
        let content_keys = std::mem::take(&mut *lock(&self.0.content_keys));
        let results = std::mem::take(&mut *lock(&self.0.results));
        drop((keys, lookups, alts, content_keys, results));
    }
}

/// The state of one solve.
struct Job<R> {
    inner: Arc<Inner<R>>,
    graph: Arc<Graph<R>>,
    reporter: Arc<dyn Reporter>,
    keys: Mutex<HashMap<Arc<str>, SharedKey<R>>>,
    lookups: Mutex<HashMap<Arc<str>, SharedLookup<R>>>,
    alts: Mutex<HashMap<Arc<str>, SharedAlt>>,
    content_keys: Mutex<HashMap<Arc<str>, SharedAlt>>,
    results: Mutex<HashMap<Arc<str>, SharedResult<R>>>,
}

/// A vertex's definition-based key and what went into it.
struct Keys<R> {
    definition: CacheKey,
    /// The op's cache digest.
    op: String,
    content: Option<SourceContent>,
    /// Each input's key part, as hashed.
    inputs: Vec<String>,
    deps: Vec<CacheDep<R>>,
    /// How the op was keyed before this solve, from the history.
    previous: Option<KeyRecord>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (insert-only), so poison is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<R: Clone + Send + Sync + 'static> Job<R> {
    fn vertex(&self, digest: &Arc<str>) -> Result<&Vertex<R>, SolveError> {
        self.graph
            .get(digest)
            .ok_or_else(|| SolveError::MissingVertex {
                vertex: digest.clone(),
            })
    }

    fn context(&self, digest: &Arc<str>) -> OpContext {
        OpContext {
            vertex: digest.clone(),
            reporter: self.reporter.clone(),
        }
    }

    async fn edge_result(self: &Arc<Self>, edge: &Edge) -> Result<R, SolveError> {
        let outputs = self.result(edge.vertex.clone()).await?;
        outputs
            .get(edge.output)
            .cloned()
            .ok_or_else(|| SolveError::MissingOutput {
                vertex: edge.vertex.clone(),
                name: self
                    .graph
                    .get(&edge.vertex)
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
                output: edge.output,
                outputs: outputs.len(),
            })
    }

    /// The shared future of a vertex's definition-based key.
    fn key(self: &Arc<Self>, digest: Arc<str>) -> SharedKey<R> {
        let mut keys = lock(&self.keys);
        if let Some(existing) = keys.get(&digest) {
            return existing.clone();
        }
        let job = self.clone();
        let d = digest.clone();
        let fut = async move { job.compute_key(d).await.map(Arc::new) }
            .boxed()
            .shared();
        keys.insert(digest, fut.clone());
        fut
    }

    /// The definition-based key: the op's digest and content, and each input's own
    /// definition-based key and selector. Nothing needs to run to know it, except for
    /// sources that read their content.
    async fn compute_key(self: Arc<Self>, digest: Arc<str>) -> Result<Keys<R>, SolveError> {
        let vertex = self.vertex(&digest)?;
        let key_error = |source: OpError| SolveError::CacheKey {
            vertex: digest.clone(),
            name: vertex.name.clone(),
            source: Arc::new(source),
        };
        let map = vertex
            .op
            .cache_map(self.context(&digest))
            .await
            .map_err(key_error)?;
        if map.deps.len() != vertex.inputs.len() {
            return Err(key_error(
                format!(
                    "the op's cache map has {} inputs, the vertex {}",
                    map.deps.len(),
                    vertex.inputs.len()
                )
                .into(),
            ));
        }
        let content = vertex
            .op
            .content_key(self.context(&digest))
            .await
            .map_err(key_error)?;
        let inputs = try_join_all(vertex.inputs.iter().map(|edge| {
            let job = self.clone();
            let edge = edge.clone();
            async move {
                let key = job.key(edge.vertex.clone()).await?;
                Ok::<_, SolveError>(format!("key:{}:{}", key.definition, edge.output))
            }
        }))
        .await?;
        let mut hasher = Sha256::new();
        hash_field(&mut hasher, map.digest.as_bytes());
        if let Some(content) = &content {
            hash_field(
                &mut hasher,
                format!("content:{}", content.digest).as_bytes(),
            );
        }
        for (part, dep) in inputs.iter().zip(&map.deps) {
            hash_field(&mut hasher, part.as_bytes());
            hash_field(
                &mut hasher,
                dep.selector.as_deref().unwrap_or("").as_bytes(),
            );
        }
        let previous = lock(&self.inner.history)
            .as_ref()
            .and_then(|h| h.op(&map.digest).cloned());
        Ok(Keys {
            previous,
            definition: CacheKey(hasher.finalize().into()),
            op: map.digest,
            content,
            inputs,
            deps: map.deps,
        })
    }

    /// The shared lookup of a vertex's definition-based key in the cache.
    fn lookup(self: &Arc<Self>, digest: Arc<str>) -> SharedLookup<R> {
        let mut lookups = lock(&self.lookups);
        if let Some(existing) = lookups.get(&digest) {
            return existing.clone();
        }
        let job = self.clone();
        let d = digest.clone();
        let fut = async move {
            let vertex = job.vertex(&d)?;
            let keys = job.key(d.clone()).await?;
            let loaded = job.inner.cache.load(&keys.definition).await;
            let outputs = loaded.map_err(|source| SolveError::Cache {
                vertex: d.clone(),
                name: vertex.name.clone(),
                source: Arc::new(source),
            })?;
            Ok(outputs.map(Arc::new))
        }
        .boxed()
        .shared();
        lookups.insert(digest, fut.clone());
        fut
    }

    /// The shared future of the content-based key a vertex's dependents build on (see
    /// [`Job::compute_alt_key`]); `None` when the vertex is known by its definition alone.
    fn alt_key(self: &Arc<Self>, digest: Arc<str>) -> SharedAlt {
        let mut alts = lock(&self.alts);
        if let Some(existing) = alts.get(&digest) {
            return existing.clone();
        }
        let job = self.clone();
        let d = digest.clone();
        let fut = async move { job.compute_alt_key(d).await }.boxed().shared();
        alts.insert(digest, fut.clone());
        fut
    }

    /// The content-based key dependents build on, computed as cheaply as possible:
    ///
    /// 1. a source's own content digest, alone;
    /// 2. the key recorded for the vertex when it had the same definition-based key before;
    /// 3. none when the vertex is in the cache by its definition-based key, so that nothing
    ///    below a hit is hashed or pulled;
    /// 4. the key recorded for the vertex when it had the same [`Job::inputs_alt_key`];
    /// 5. for ops that read their inputs' content ([`CacheDep::content`]), the
    ///    [`Job::content_key`]; for the others, the [`Job::inputs_alt_key`].
    async fn compute_alt_key(
        self: Arc<Self>,
        digest: Arc<str>,
    ) -> Result<Option<CacheKey>, SolveError> {
        let vertex = self.vertex(&digest)?;
        let keys = self.key(digest.clone()).await?;
        if let Some(content) = &keys.content {
            let mut hasher = Sha256::new();
            hash_field(&mut hasher, b"source-content");
            hash_field(&mut hasher, content.digest.as_bytes());
            let alt = CacheKey(hasher.finalize().into());
            // Kept even when the source itself is not solved (a vertex above it hit by
            // content), so that its next change is explained against this keying.
            self.record(&digest, &keys, Some(alt), None, None);
            return Ok(Some(alt));
        }
        if vertex.inputs.is_empty() {
            return Ok(None);
        }
        if let Some(previous) = keys.previous.as_ref().filter(|p| p.key == keys.definition) {
            return Ok(previous.alt);
        }
        if !vertex.ignore_cache && self.lookup(digest.clone()).await?.is_some() {
            return Ok(None);
        }
        let inputs_alt = self.inputs_alt_key(&digest, &keys).await?;
        if let Some(previous) = &keys.previous {
            if inputs_alt.is_some() && previous.inputs_alt == inputs_alt {
                return Ok(previous.alt);
            }
        }
        if keys.deps.iter().any(|d| d.content.is_some()) {
            return self.content_key(digest).await;
        }
        Ok(inputs_alt)
    }

    /// A key by the inputs' content-based keys (their definition-based ones where they have
    /// none): the same inputs reached by other definitions. `None` when no input has one.
    /// Nothing needs to run to know it.
    async fn inputs_alt_key(
        self: &Arc<Self>,
        digest: &Arc<str>,
        keys: &Keys<R>,
    ) -> Result<Option<CacheKey>, SolveError> {
        let vertex = self.vertex(digest)?;
        let alts = try_join_all(
            vertex
                .inputs
                .iter()
                .map(|edge| self.alt_key(edge.vertex.clone())),
        )
        .await?;
        if alts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        hash_field(&mut hasher, b"inputs-content");
        hash_field(&mut hasher, keys.op.as_bytes());
        for (((alt, edge), definition), dep) in alts
            .iter()
            .zip(&vertex.inputs)
            .zip(&keys.inputs)
            .zip(&keys.deps)
        {
            let part = alt.map(|key| format!("key:{key}:{}", edge.output));
            hash_field(&mut hasher, part.as_ref().unwrap_or(definition).as_bytes());
            hash_field(
                &mut hasher,
                dep.selector.as_deref().unwrap_or("").as_bytes(),
            );
        }
        Ok(Some(CacheKey(hasher.finalize().into())))
    }

    /// The shared future of a vertex's key by the content its op reads from its inputs
    /// (a digest of exactly the paths a copy reads), `None` for ops that read none. This
    /// needs those inputs solved.
    fn content_key(self: &Arc<Self>, digest: Arc<str>) -> SharedAlt {
        let mut content_keys = lock(&self.content_keys);
        if let Some(existing) = content_keys.get(&digest) {
            return existing.clone();
        }
        let job = self.clone();
        let d = digest.clone();
        let fut = async move { job.compute_content_key(d).await }
            .boxed()
            .shared();
        content_keys.insert(digest, fut.clone());
        fut
    }

    async fn compute_content_key(
        self: Arc<Self>,
        digest: Arc<str>,
    ) -> Result<Option<CacheKey>, SolveError> {
        let vertex = self.vertex(&digest)?;
        let keys = self.key(digest.clone()).await?;
        if keys.deps.iter().all(|d| d.content.is_none()) {
            return Ok(None);
        }
        let parts = try_join_all(vertex.inputs.iter().zip(&keys.deps).zip(&keys.inputs).map(
            |((edge, dep), definition)| {
                let job = self.clone();
                let edge = edge.clone();
                let content = dep.content.clone();
                let selector = dep.selector.clone();
                let definition = definition.clone();
                async move {
                    if let Some(content) = content {
                        let input = job.edge_result(&edge).await?;
                        let name = job.vertex(&edge.vertex)?.name.clone();
                        let digest =
                            content(input, selector)
                                .await
                                .map_err(|e| SolveError::CacheKey {
                                    vertex: edge.vertex.clone(),
                                    name,
                                    source: Arc::new(e),
                                })?;
                        return Ok::<_, SolveError>(format!("content:{digest}"));
                    }
                    let alt = job.alt_key(edge.vertex.clone()).await?;
                    Ok(alt.map_or(definition, |key| format!("key:{key}:{}", edge.output)))
                }
            },
        ))
        .await?;
        let mut hasher = Sha256::new();
        hash_field(&mut hasher, b"content-based");
        hash_field(&mut hasher, keys.op.as_bytes());
        for (part, dep) in parts.iter().zip(&keys.deps) {
            hash_field(&mut hasher, part.as_bytes());
            hash_field(
                &mut hasher,
                dep.selector.as_deref().unwrap_or("").as_bytes(),
            );
        }
        Ok(Some(CacheKey(hasher.finalize().into())))
    }

    /// Why a vertex with these keys is not in the cache, from the history.
    fn miss_reason(&self, keys: &Keys<R>, vertex: &Vertex<R>) -> MissReason {
        let Some(record) = &keys.previous else {
            return MissReason::NoRecord;
        };
        let content = keys.content.as_ref().map(|c| c.digest.clone());
        if record.content != content {
            return MissReason::ContentChanged {
                old: record.content.clone().unwrap_or_default(),
                new: content.unwrap_or_default(),
                file: keys.content.as_ref().and_then(|c| c.changed.clone()),
            };
        }
        for (input, new) in keys.inputs.iter().enumerate() {
            let old = record.inputs.get(input).cloned().unwrap_or_default();
            if &old != new {
                let vertex = vertex
                    .inputs
                    .get(input)
                    .map(|e| e.vertex.to_string())
                    .unwrap_or_default();
                return MissReason::InputChanged {
                    input,
                    vertex,
                    old,
                    new: new.clone(),
                };
            }
        }
        if record.key == keys.definition {
            MissReason::Pruned
        } else {
            MissReason::NoRecord
        }
    }

    /// Remembers how a vertex was keyed, and why it missed.
    fn record(
        &self,
        digest: &str,
        keys: &Keys<R>,
        alt: Option<CacheKey>,
        inputs_alt: Option<CacheKey>,
        miss: Option<MissReason>,
    ) {
        let mut history = lock(&self.inner.history);
        let history = history.get_or_insert_with(History::default);
        history.record_op(
            &keys.op,
            KeyRecord {
                key: keys.definition,
                alt,
                inputs_alt,
                content: keys.content.as_ref().map(|c| c.digest.clone()),
                inputs: keys.inputs.clone(),
                used: 0,
            },
        );
        if let Some(reason) = miss {
            history.record_miss(digest, reason);
        }
    }

    /// The shared future of a vertex's outputs, shared with other solves running it now.
    fn result(self: &Arc<Self>, digest: Arc<str>) -> SharedResult<R> {
        let mut results = lock(&self.results);
        if let Some(existing) = results.get(&digest) {
            return existing.clone();
        }
        let mut in_flight = lock(&self.inner.in_flight);
        in_flight.retain(|_, weak| weak.upgrade().is_some());
        let fut = match in_flight.get(&digest).and_then(WeakShared::upgrade) {
            Some(shared) => shared,
            None => {
                let job = self.clone();
                let d = digest.clone();
                let fut = async move { job.compute_result(d).await.map(Arc::new) }
                    .boxed()
                    .shared();
                if let Some(weak) = fut.downgrade() {
                    in_flight.insert(digest.clone(), weak);
                }
                fut
            }
        };
        results.insert(digest, fut.clone());
        fut
    }

    async fn compute_result(self: Arc<Self>, digest: Arc<str>) -> Result<Vec<R>, SolveError> {
        let vertex = self.vertex(&digest)?;
        let name = vertex.name.clone();
        let keys = self.key(digest.clone()).await?;
        let cache_error = |source: OpError| SolveError::Cache {
            vertex: digest.clone(),
            name: name.clone(),
            source: Arc::new(source),
        };
        let cached = |outputs: Vec<R>| {
            self.reporter.event(Event::Cached {
                vertex: digest.clone(),
                name: name.clone(),
            });
            Ok(outputs)
        };
        let reason = if vertex.ignore_cache {
            MissReason::Ignored
        } else {
            if let Some(outputs) = self.lookup(digest.clone()).await? {
                tracing::debug!(vertex = %digest, key = %keys.definition, "cache hit");
                let alt = self.alt_key(digest.clone()).await?;
                let inputs_alt = keys.previous.as_ref().and_then(|p| p.inputs_alt);
                self.record(&digest, &keys, alt, inputs_alt, None);
                return cached(outputs.to_vec());
            }
            // The other keys, cheapest first: by the inputs' content-based keys, then by the
            // content the op reads (which needs its inputs).
            let inputs_alt = self.inputs_alt_key(&digest, &keys).await?;
            let mut found = None;
            if let Some(key) = inputs_alt {
                found = self.inner.cache.load(&key).await.map_err(cache_error)?;
            }
            if found.is_none() {
                if let Some(key) = self.content_key(digest.clone()).await? {
                    found = self.inner.cache.load(&key).await.map_err(cache_error)?;
                }
            }
            if let Some(outputs) = found {
                tracing::debug!(vertex = %digest, "cache hit by content");
                // Also under the definition-based key: the next build finds it at once.
                self.inner
                    .cache
                    .save(&keys.definition, &outputs)
                    .await
                    .map_err(cache_error)?;
                let alt = self.alt_key(digest.clone()).await?;
                self.record(&digest, &keys, alt, inputs_alt, None);
                return cached(outputs);
            }
            self.miss_reason(&keys, vertex)
        };
        tracing::debug!(vertex = %digest, ?reason, "cache miss");
        let inputs = try_join_all(vertex.inputs.iter().map(|edge| {
            let job = self.clone();
            let edge = edge.clone();
            async move { job.edge_result(&edge).await }
        }))
        .await?;
        let permits = match vertex.op.resource_class() {
            ResourceClass::Exec => &self.inner.exec_permits,
            ResourceClass::Io => &self.inner.io_permits,
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphores are never closed");
        self.reporter.event(Event::Started {
            vertex: digest.clone(),
            name: name.clone(),
        });
        let started = Instant::now();
        let outputs = match vertex.op.exec(self.context(&digest), inputs).await {
            Ok(outputs) => outputs,
            Err(error) => {
                self.reporter.event(Event::Failed {
                    vertex: digest.clone(),
                    name: name.clone(),
                    error: error.to_string(),
                });
                self.record(&digest, &keys, None, None, Some(reason));
                return Err(SolveError::Exec {
                    vertex: digest.clone(),
                    name,
                    source: Arc::new(error),
                });
            }
        };
        self.reporter.event(Event::Completed {
            vertex: digest.clone(),
            name: name.clone(),
            duration: started.elapsed(),
        });
        drop(permit);
        self.inner
            .cache
            .save(&keys.definition, &outputs)
            .await
            .map_err(cache_error)?;
        let inputs_alt = self.inputs_alt_key(&digest, &keys).await?;
        let content = self.content_key(digest.clone()).await?;
        for key in [inputs_alt, content].into_iter().flatten() {
            self.inner
                .cache
                .save(&key, &outputs)
                .await
                .map_err(cache_error)?;
        }
        let alt = self.alt_key(digest.clone()).await?;
        self.record(&digest, &keys, alt, inputs_alt, Some(reason));
        Ok(outputs)
    }
}

/// Length-prefixes each field so that no two different field lists hash alike.
fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    //! The scheduler with synthetic ops: constants, sums and ops that sleep, fail or count.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counters {
        execs: Mutex<HashMap<String, usize>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        content_digests: AtomicUsize,
    }

    impl Counters {
        fn execs(&self, name: &str) -> usize {
            lock(&self.execs).get(name).copied().unwrap_or(0)
        }
    }

    /// Adds `add` to the sum of its inputs; optionally sleeps, fails, or keys inputs by content.
    struct Sum {
        name: String,
        add: u64,
        inputs: usize,
        sleep: Duration,
        fail: bool,
        content_inputs: bool,
        class: ResourceClass,
        counters: Arc<Counters>,
        dropped: Option<Arc<AtomicBool>>,
        source_content: Option<String>,
    }

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Op<u64> for Sum {
        fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<u64>, OpError>> {
            let map = CacheMap {
                digest: format!("sum:{}:{}", self.add, self.fail),
                deps: (0..self.inputs)
                    .map(|_| dep(self.content_inputs, &self.counters))
                    .collect(),
            };
            async move { Ok(map) }.boxed()
        }

        fn exec(
            &self,
            ctx: OpContext,
            inputs: Vec<u64>,
        ) -> BoxFuture<'static, Result<Vec<u64>, OpError>> {
            let counters = self.counters.clone();
            let (name, add, sleep, fail) = (self.name.clone(), self.add, self.sleep, self.fail);
            let guard = self.dropped.clone().map(SetOnDrop);
            async move {
                let _guard = guard;
                *lock(&counters.execs).entry(name.clone()).or_default() += 1;
                let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
                counters.max_running.fetch_max(now, Ordering::SeqCst);
                ctx.log(1, name.as_bytes());
                tokio::time::sleep(sleep).await;
                counters.running.fetch_sub(1, Ordering::SeqCst);
                if fail {
                    return Err(format!("{name} exited with code 1").into());
                }
                Ok(vec![add + inputs.iter().sum::<u64>()])
            }
            .boxed()
        }

        fn resource_class(&self) -> ResourceClass {
            self.class
        }

        fn content_key(
            &self,
            _: OpContext,
        ) -> BoxFuture<'static, Result<Option<SourceContent>, OpError>> {
            let content = self.source_content.clone().map(|digest| SourceContent {
                changed: Some(format!("file-of-{digest}")),
                digest,
            });
            async move { Ok(content) }.boxed()
        }
    }

    fn dep(content: bool, counters: &Arc<Counters>) -> CacheDep<u64> {
        let counters = counters.clone();
        CacheDep {
            selector: None,
            content: content.then(|| {
                Arc::new(move |value: u64, _selector: Option<String>| {
                    counters.content_digests.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(format!("value:{value}")) }.boxed()
                }) as ContentDigestFn<u64>
            }),
        }
    }

    /// A test graph builder.
    struct TestGraph {
        graph: Graph<u64>,
        counters: Arc<Counters>,
    }

    impl TestGraph {
        fn new() -> Self {
            Self {
                graph: Graph::new(),
                counters: Arc::new(Counters::default()),
            }
        }

        fn sum(&mut self, name: &str, add: u64, inputs: &[&str]) -> &mut Self {
            self.add(name, add, inputs, |_| {})
        }

        fn add(
            &mut self,
            name: &str,
            add: u64,
            inputs: &[&str],
            tweak: impl FnOnce(&mut Sum),
        ) -> &mut Self {
            let mut op = Sum {
                name: name.to_owned(),
                add,
                inputs: inputs.len(),
                sleep: Duration::ZERO,
                fail: false,
                content_inputs: false,
                class: ResourceClass::Exec,
                counters: self.counters.clone(),
                dropped: None,
                source_content: None,
            };
            tweak(&mut op);
            self.graph.add(Vertex {
                digest: name.into(),
                name: name.to_owned(),
                inputs: inputs
                    .iter()
                    .map(|i| Edge {
                        vertex: (*i).into(),
                        output: 0,
                    })
                    .collect(),
                op: Arc::new(op),
                ignore_cache: false,
            });
            self
        }
    }

    #[derive(Default)]
    struct MemCache(Mutex<HashMap<CacheKey, Vec<u64>>>);

    impl CacheStore<u64> for MemCache {
        fn load(&self, key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<u64>>, OpError>> {
            let hit = lock(&self.0).get(key).cloned();
            async move { Ok(hit) }.boxed()
        }
        fn save(&self, key: &CacheKey, outputs: &[u64]) -> BoxFuture<'static, Result<(), OpError>> {
            lock(&self.0).insert(*key, outputs.to_vec());
            async { Ok(()) }.boxed()
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl Reporter for Recorder {
        fn event(&self, event: Event) {
            lock(&self.0).push(event);
        }
    }

    impl Recorder {
        fn cached(&self) -> Vec<String> {
            lock(&self.0)
                .iter()
                .filter_map(|e| match e {
                    Event::Cached { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn target(name: &str) -> Edge {
        Edge {
            vertex: name.into(),
            output: 0,
        }
    }

    async fn solve(
        scheduler: &Scheduler<u64>,
        graph: Arc<Graph<u64>>,
        name: &str,
    ) -> Result<u64, SolveError> {
        scheduler
            .solve(graph, target(name), Arc::new(NoReporter))
            .await
    }

    #[tokio::test]
    async fn diamond_runs_each_vertex_once() {
        let mut t = TestGraph::new();
        t.sum("a", 2, &[])
            .sum("b", 10, &["a"])
            .sum("c", 100, &["a"])
            .sum("d", 1000, &["b", "c"]);
        let counters = t.counters.clone();
        let scheduler = Scheduler::builder().build();
        let result = solve(&scheduler, Arc::new(t.graph), "d").await.unwrap();
        assert_eq!(result, 1000 + (10 + 2) + (100 + 2));
        for name in ["a", "b", "c", "d"] {
            assert_eq!(counters.execs(name), 1, "{name}");
        }
    }

    #[tokio::test]
    async fn exec_parallelism_is_bounded_and_io_only_by_its_own_larger_bound() {
        for (limit, io_limit, class, expected) in [
            (1, 16, ResourceClass::Exec, 1),
            (2, 16, ResourceClass::Exec, 2),
            (1, 16, ResourceClass::Io, 3),
            (3, 2, ResourceClass::Io, 2),
        ] {
            let mut t = TestGraph::new();
            for leaf in ["x", "y", "z"] {
                t.add(leaf, 1, &[], |op| {
                    op.sleep = Duration::from_millis(100);
                    op.class = class;
                });
            }
            t.sum("top", 0, &["x", "y", "z"]);
            let counters = t.counters.clone();
            let scheduler = Scheduler::builder()
                .max_parallel_exec(limit)
                .max_parallel_io(io_limit)
                .build();
            assert_eq!(
                solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
                3
            );
            assert_eq!(
                counters.max_running.load(Ordering::SeqCst),
                expected,
                "limit {limit}, io limit {io_limit}, {class:?}"
            );
        }
    }

    #[tokio::test]
    async fn cached_top_runs_nothing_below() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache).build();
        let build = || {
            let mut t = TestGraph::new();
            t.sum("base", 1, &[])
                .sum("mid", 2, &["base"])
                .sum("top", 3, &["mid"]);
            t
        };
        let first = build();
        assert_eq!(
            solve(&scheduler, Arc::new(first.graph), "top")
                .await
                .unwrap(),
            6
        );

        let second = build();
        let counters = second.counters.clone();
        let recorder = Arc::new(Recorder::default());
        let result = scheduler
            .solve(Arc::new(second.graph), target("top"), recorder.clone())
            .await
            .unwrap();
        assert_eq!(result, 6);
        assert_eq!(
            counters.execs("base") + counters.execs("mid") + counters.execs("top"),
            0
        );
        assert_eq!(recorder.cached(), ["top"]);
    }

    #[tokio::test]
    async fn changed_input_misses_the_cache_downstream_only() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache).build();
        let mut t = TestGraph::new();
        t.sum("other", 5, &[])
            .sum("base", 1, &[])
            .sum("top", 3, &["base", "other"]);
        solve(&scheduler, Arc::new(t.graph), "top").await.unwrap();

        let mut t = TestGraph::new();
        t.sum("other", 5, &[])
            .sum("base", 7, &[])
            .sum("top", 3, &["base", "other"]);
        let counters = t.counters.clone();
        assert_eq!(
            solve(&scheduler, Arc::new(t.graph), "top").await.unwrap(),
            15
        );
        assert_eq!(counters.execs("base"), 1);
        assert_eq!(counters.execs("top"), 1);
        assert_eq!(
            counters.execs("other"),
            0,
            "an unchanged input comes from the cache"
        );
    }

    #[tokio::test]
    async fn ignore_cache_runs_again() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache).build();
        let mut t = TestGraph::new();
        t.sum("a", 1, &[]);
        solve(&scheduler, Arc::new(t.graph), "a").await.unwrap();
        let mut t = TestGraph::new();
        t.sum("a", 1, &[]);
        let counters = t.counters.clone();
        let mut graph = t.graph;
        graph.vertices.get_mut("a").unwrap().ignore_cache = true;
        solve(&scheduler, Arc::new(graph), "a").await.unwrap();
        assert_eq!(counters.execs("a"), 1);
    }

    #[tokio::test]
    async fn content_based_key_hits_when_content_is_equal() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache).build();
        let mut t = TestGraph::new();
        t.sum("src", 5, &[])
            .add("copy", 1, &["src"], |op| op.content_inputs = true);
        assert_eq!(
            solve(&scheduler, Arc::new(t.graph), "copy").await.unwrap(),
            6
        );

        // A different source op whose result has the same content: the copy is not run again.
        let mut t = TestGraph::new();
        t.add("src", 2, &[], |op| op.sleep = Duration::ZERO)
            .add("plus3", 3, &["src"], |_| {})
            .add("copy", 1, &["plus3"], |op| op.content_inputs = true);
        let counters = t.counters.clone();
        assert_eq!(
            solve(&scheduler, Arc::new(t.graph), "copy").await.unwrap(),
            6
        );
        assert_eq!(
            counters.execs("plus3"),
            1,
            "content keys need the input's result"
        );
        assert_eq!(counters.execs("copy"), 0);
    }

    #[tokio::test]
    async fn a_definition_hit_hashes_and_runs_nothing_below_and_a_content_hit_carries_downstream() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache).build();
        let build = |src_add: u64, extra: bool| {
            let mut t = TestGraph::new();
            t.sum("src", src_add, &[]);
            let below = if extra {
                t.sum("plus", 5 - src_add, &["src"]);
                "plus"
            } else {
                "src"
            };
            t.add("copy", 1, &[below], |op| op.content_inputs = true)
                .sum("run", 10, &["copy"]);
            t
        };
        let first = build(5, false);
        let counters = first.counters.clone();
        assert_eq!(
            solve(&scheduler, Arc::new(first.graph), "run")
                .await
                .unwrap(),
            16
        );
        assert_eq!(counters.content_digests.load(Ordering::SeqCst), 1);

        // The same definition: found by its definition-based key, nothing hashed or run.
        let same = build(5, false);
        let counters = same.counters.clone();
        assert_eq!(
            solve(&scheduler, Arc::new(same.graph), "run")
                .await
                .unwrap(),
            16
        );
        assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
        assert_eq!(counters.execs("src") + counters.execs("copy"), 0);

        // A different definition of the same content below the copy: the copy hits by its
        // content-based key, and so does the run on top of it.
        let other = build(2, true);
        let counters = other.counters.clone();
        let recorder = Arc::new(Recorder::default());
        let result = scheduler
            .solve(Arc::new(other.graph), target("run"), recorder.clone())
            .await
            .unwrap();
        assert_eq!(result, 16);
        assert_eq!(counters.execs("plus"), 1, "content keys need the input");
        assert_eq!(counters.execs("copy") + counters.execs("run"), 0);
        assert_eq!(recorder.cached(), ["run"]);

        // And now the new definition is known by its definition-based key too.
        let again = build(2, true);
        let counters = again.counters.clone();
        solve(&scheduler, Arc::new(again.graph), "run")
            .await
            .unwrap();
        assert_eq!(counters.execs("plus") + counters.execs("src"), 0);
        assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_definition_hit_without_history_still_hashes_and_pulls_nothing() {
        let cache = Arc::new(MemCache::default());
        let build = || {
            let mut t = TestGraph::new();
            t.sum("src", 5, &[])
                .add("copy", 1, &["src"], |op| op.content_inputs = true)
                .sum("run", 10, &["copy"]);
            t
        };
        let first = Scheduler::builder().cache(cache.clone()).build();
        solve(&first, Arc::new(build().graph), "run").await.unwrap();
        // Only the top's record is left, and a new scheduler knows no history.
        lock(&cache.0).retain(|_, v| v == &vec![16]);
        let second = Scheduler::builder().cache(cache).build();
        let t = build();
        let counters = t.counters.clone();
        assert_eq!(solve(&second, Arc::new(t.graph), "run").await.unwrap(), 16);
        assert_eq!(counters.content_digests.load(Ordering::SeqCst), 0);
        assert_eq!(counters.execs("src") + counters.execs("copy"), 0);
    }

    #[tokio::test]
    async fn every_miss_has_a_reason() {
        let cache = Arc::new(MemCache::default());
        let scheduler = Scheduler::builder().cache(cache.clone()).build();
        let build = |base: u64, content: &str| {
            let mut t = TestGraph::new();
            let content = content.to_owned();
            t.add("files", 0, &[], |op| op.source_content = Some(content))
                .sum("base", base, &[])
                .sum("top", 3, &["base", "files"]);
            t.graph
        };
        let reason = |vertex: &str| scheduler.history().miss(vertex).map(|m| m.reason.clone());

        solve(&scheduler, Arc::new(build(1, "c1")), "top")
            .await
            .unwrap();
        assert_eq!(reason("top"), Some(MissReason::NoRecord));
        assert_eq!(reason("files"), Some(MissReason::NoRecord));

        // The source's content changes: it says so, with the file its op named.
        solve(&scheduler, Arc::new(build(1, "c2")), "top")
            .await
            .unwrap();
        assert_eq!(
            reason("files"),
            Some(MissReason::ContentChanged {
                old: "c1".into(),
                new: "c2".into(),
                file: Some("file-of-c2".into()),
            })
        );
        let Some(MissReason::InputChanged {
            input,
            vertex,
            old,
            new,
        }) = reason("top")
        else {
            panic!("{:?}", reason("top"));
        };
        assert_eq!((input, vertex.as_str()), (1, "files"));
        assert_ne!(old, new);
        let history = scheduler.history();
        let misses = history.misses();
        assert_eq!(
            misses.keys().copied().collect::<Vec<_>>(),
            ["files", "top"],
            "base was cached"
        );

        // Another input changes.
        solve(&scheduler, Arc::new(build(7, "c2")), "top")
            .await
            .unwrap();
        assert!(matches!(
            reason("top"),
            Some(MissReason::InputChanged { input: 0, ref vertex, .. }) if vertex == "base"
        ));

        // The result was pruned: same key, nothing there.
        lock(&cache.0).clear();
        solve(&scheduler, Arc::new(build(7, "c2")), "top")
            .await
            .unwrap();
        assert_eq!(reason("top"), Some(MissReason::Pruned));

        // Ignored.
        let mut graph = build(7, "c2");
        graph.vertices.get_mut("top").unwrap().ignore_cache = true;
        solve(&scheduler, Arc::new(graph), "top").await.unwrap();
        assert_eq!(reason("top"), Some(MissReason::Ignored));
    }

    #[tokio::test]
    async fn the_history_is_loaded_from_and_saved_to_the_cache() {
        #[derive(Default)]
        struct Saved(Mutex<Vec<u8>>);
        impl CacheStore<u64> for Saved {
            fn load(&self, _: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<u64>>, OpError>> {
                async { Ok(None) }.boxed()
            }
            fn save(&self, _: &CacheKey, _: &[u64]) -> BoxFuture<'static, Result<(), OpError>> {
                async { Ok(()) }.boxed()
            }
            fn load_history(&self) -> History {
                History::from_json(&lock(&self.0))
            }
            fn save_history(&self, history: &mut History) {
                *lock(&self.0) = history.to_json();
            }
        }
        let saved = Arc::new(Saved::default());
        let mut t = TestGraph::new();
        t.sum("a", 1, &[]);
        let first = Scheduler::builder().cache(saved.clone()).build();
        solve(&first, Arc::new(t.graph), "a").await.unwrap();
        // A new scheduler (a new process) reads what the first one kept.
        let second = Scheduler::builder().cache(saved).build();
        assert_eq!(
            second.history().miss("a").map(|m| &m.reason),
            Some(&MissReason::NoRecord)
        );
    }

    #[tokio::test]
    async fn first_failure_cancels_the_rest_and_names_the_vertex() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut t = TestGraph::new();
        t.add("slow", 1, &[], |op| {
            op.sleep = Duration::from_secs(30);
            op.dropped = Some(dropped.clone());
        })
        .add("bad", 1, &[], |op| {
            op.sleep = Duration::from_millis(20);
            op.fail = true;
        })
        .sum("top", 0, &["slow", "bad"]);
        let scheduler = Scheduler::builder().max_parallel_exec(4).build();
        let started = Instant::now();
        let err = solve(&scheduler, Arc::new(t.graph), "top")
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(&**err.vertex(), "bad");
        assert_eq!(err.to_string(), "bad");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "bad exited with code 1");
        assert!(dropped.load(Ordering::SeqCst), "the slow op was dropped");
    }

    #[tokio::test]
    async fn concurrent_solves_share_equal_vertices() {
        let mut t1 = TestGraph::new();
        t1.add("shared", 1, &[], |op| op.sleep = Duration::from_millis(200))
            .sum("one", 10, &["shared"]);
        let mut t2 = TestGraph::new();
        t2.counters = t1.counters.clone();
        t2.add("shared", 1, &[], |op| op.sleep = Duration::from_millis(200))
            .sum("two", 20, &["shared"]);
        let counters = t1.counters.clone();
        let scheduler = Scheduler::builder().build();
        let (a, b) = tokio::join!(
            solve(&scheduler, Arc::new(t1.graph), "one"),
            solve(&scheduler, Arc::new(t2.graph), "two"),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (11, 21));
        assert_eq!(counters.execs("shared"), 1);
    }

    #[tokio::test]
    async fn missing_vertex_and_output_are_errors() {
        let mut t = TestGraph::new();
        t.sum("top", 0, &["nowhere"]);
        let scheduler = Scheduler::builder().build();
        let graph = Arc::new(t.graph);
        let err = solve(&scheduler, graph.clone(), "top").await.unwrap_err();
        assert!(matches!(err, SolveError::MissingVertex { ref vertex } if &**vertex == "nowhere"));

        let mut t = TestGraph::new();
        t.sum("a", 0, &[]);
        let edge = Edge {
            vertex: "a".into(),
            output: 3,
        };
        let err = scheduler
            .solve(Arc::new(t.graph), edge, Arc::new(NoReporter))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "vertex a (a) has 1 outputs, not 3");
    }

    #[tokio::test]
    async fn logs_and_lifecycle_are_reported() {
        let mut t = TestGraph::new();
        t.sum("a", 1, &[]);
        let recorder = Arc::new(Recorder::default());
        Scheduler::builder()
            .build()
            .solve(Arc::new(t.graph), target("a"), recorder.clone())
            .await
            .unwrap();
        let events = lock(&recorder.0);
        assert!(matches!(&events[0], Event::Started { name, .. } if name == "a"));
        assert!(matches!(&events[1], Event::Log { stream: 1, data, .. } if data == b"a"));
        assert!(matches!(&events[2], Event::Completed { name, .. } if name == "a"));
        assert_eq!(events.len(), 3);
    }
}
