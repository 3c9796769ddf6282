//! What the scheduler schedules: ops, the vertices and edges of a graph, how an op is cached,
//! and where results are kept.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use super::{OpContext, OpError};
use crate::cache_key::CacheKey;
use crate::history::{FileChange, History, Lineage, Outline};

/// What an op's result depends on, besides the op itself.
pub struct CacheMap<R> {
    /// A digest of everything about the op that affects its result (for LLB: the op digest,
    /// with resolved values such as an image's manifest digest in place of a tag).
    pub digest: String,
    /// One entry per input edge, in order.
    pub deps: Vec<CacheDep<R>>,
    /// What identifies the op across builds when its variable parts change (see
    /// [`Lineage`]), so that a miss can say which of those changed; `None`: nothing does.
    pub lineage: Option<Lineage>,
    /// The op's parts as a user names them, so that a miss of a changed op that has no
    /// lineage record can say which part changed (see [`Outline`]); `None`: no such parts.
    pub outline: Option<Outline>,
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
    /// [`MissReason::ContentChanged`](crate::MissReason::ContentChanged)).
    pub changed: Option<String>,
    /// How that file changed, when the source can tell.
    pub change: Option<FileChange>,
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
    pub(super) vertices: HashMap<Arc<str>, Vertex<R>>,
    /// The vertices that ignore the cache or are built on one that does, found once.
    ignoring: std::sync::OnceLock<std::collections::HashSet<Arc<str>>>,
}

impl<R> Default for Graph<R> {
    fn default() -> Self {
        Self {
            vertices: HashMap::new(),
            ignoring: std::sync::OnceLock::new(),
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
        self.ignoring = std::sync::OnceLock::new();
    }

    /// The vertex with this digest.
    pub fn get(&self, digest: &str) -> Option<&Vertex<R>> {
        self.vertices.get(digest)
    }

    /// Whether `digest` or a vertex below it ignores the cache: a vertex above one that runs
    /// again runs again too, as in BuildKit (whose re-run vertex does not hand its cache keys
    /// to the vertices above), since its cached result was made from an older input.
    pub(super) fn ignores_cache(&self, digest: &str) -> bool {
        self.ignoring
            .get_or_init(|| self.find_ignoring())
            .contains(digest)
    }

    /// Every vertex that ignores the cache or has one below it: one depth-first pass over the
    /// graph (iterative, as chains are thousands of vertices deep), each vertex decided once.
    fn find_ignoring(&self) -> std::collections::HashSet<Arc<str>> {
        use std::collections::{HashMap as Map, HashSet};
        let mut decided: Map<&str, bool> = Map::new();
        // Expanded, not yet decided: never expanded twice, so even a cyclic graph ends.
        let mut open: HashSet<&str> = HashSet::new();
        for start in self.vertices.keys() {
            // (vertex, whether its inputs were pushed)
            let mut stack = vec![(start.as_ref(), false)];
            while let Some((digest, expanded)) = stack.pop() {
                if decided.contains_key(digest) || (!expanded && open.contains(digest)) {
                    continue;
                }
                let Some(vertex) = self.vertices.get(digest) else {
                    decided.insert(digest, false);
                    continue;
                };
                if expanded {
                    let ignoring = vertex.ignore_cache
                        || vertex
                            .inputs
                            .iter()
                            .any(|e| decided.get(e.vertex.as_ref()).copied().unwrap_or(false));
                    decided.insert(digest, ignoring);
                    open.remove(digest);
                } else {
                    open.insert(digest);
                    stack.push((digest, true));
                    for edge in &vertex.inputs {
                        let input = edge.vertex.as_ref();
                        if !decided.contains_key(input) && !open.contains(input) {
                            stack.push((&edge.vertex, false));
                        }
                    }
                }
            }
        }
        decided
            .into_iter()
            .filter(|(_, ignoring)| *ignoring)
            .filter_map(|(digest, _)| self.vertices.get_key_value(digest).map(|(k, _)| k.clone()))
            .collect::<HashSet<_>>()
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
    /// Makes a result ready to be read by an op that runs or hashes it: a cache whose
    /// [`CacheStore::load`] hands out results it has not fetched yet (lazy) fetches this one
    /// now, reporting its phases through `ctx` (the vertex that made the result). By default
    /// every result is ready.
    fn realize(&self, _result: &R, _ctx: OpContext) -> BoxFuture<'static, Result<(), OpError>> {
        futures::future::ready(Ok(())).boxed()
    }
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
