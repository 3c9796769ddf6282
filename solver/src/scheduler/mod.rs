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
//! Schedulers of separate sessions (a daemon's clients, each with its own sources, secrets
//! and caches) share [`SharedWork`]: one exec bound for all of them, and the cache keys being
//! computed, so a step two concurrent builds both miss runs once — the second waits for the
//! first and takes its result from the cache, as it would have a moment later.
//!
//! The first error fails the solve and drops the futures of everything else in it; ops must
//! stop their work when dropped (the runner kills its processes). The error names the vertex.

mod error;
mod job;
mod keys;
mod op;
mod progress;
mod solved;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Semaphore;

pub use self::error::{OpError, SolveError};
use self::job::{ClearOnDrop, Job, WeakResult};
pub use self::op::{
    CacheDep, CacheMap, CacheStore, ContentDigestFn, Edge, Graph, NoCache, Op, ResourceClass,
    SourceContent, Vertex,
};
pub use self::progress::{Event, NoReporter, OpContext, Phase, Reporter};
pub use self::solved::{SolvedGraph, SolvedVertex};
use crate::cache_key::CacheKey;
use crate::history::History;

/// Configures a [`Scheduler`].
pub struct SchedulerBuilder<R> {
    cache: Arc<dyn CacheStore<R>>,
    max_parallel_exec: usize,
    max_parallel_io: usize,
    shared: Option<Arc<SharedWork>>,
}

/// What the schedulers of one process share (see [`SchedulerBuilder::shared`]): the bounds on
/// ops running at once, and the cache keys whose ops are running.
pub struct SharedWork {
    exec_permits: Arc<Semaphore>,
    io_permits: Arc<Semaphore>,
    /// A lock per cache key whose op runs now; held from the last cache lookup to the save.
    running: Mutex<HashMap<CacheKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl SharedWork {
    /// Bounds of `max_parallel_exec` exec ops (at least 1) and `max_parallel_io` I/O ops.
    pub fn new(max_parallel_exec: usize, max_parallel_io: usize) -> Arc<Self> {
        Arc::new(Self {
            exec_permits: Arc::new(Semaphore::new(max_parallel_exec.max(1))),
            io_permits: Arc::new(Semaphore::new(max_parallel_io.max(1))),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The defaults of [`Scheduler::builder`]: exec ops bounded by the number of cores.
    pub fn for_cores() -> Arc<Self> {
        let cores = cores();
        Self::new(cores, default_io(cores))
    }

    /// Waits until no other solve runs the op of `key`, and holds that until dropped.
    pub(crate) async fn claim(&self, key: &CacheKey) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = {
            let mut running = lock(&self.running);
            running.retain(|_, gate| gate.strong_count() > 0);
            match running.get(key).and_then(Weak::upgrade) {
                Some(gate) => gate,
                None => {
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    running.insert(*key, Arc::downgrade(&gate));
                    gate
                }
            }
        };
        gate.lock_owned().await
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The default bound of I/O ops: 8 per core, at least 16.
fn default_io(cores: usize) -> usize {
    (cores * 8).max(16)
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

    /// Shares the bounds and the running cache keys of `shared` with other schedulers (the
    /// bounds set on this builder are then unused).
    pub fn shared(mut self, shared: Arc<SharedWork>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The scheduler.
    pub fn build(self) -> Scheduler<R> {
        Scheduler {
            inner: Arc::new(Inner {
                cache: self.cache,
                shared: self.shared.unwrap_or_else(|| {
                    SharedWork::new(self.max_parallel_exec, self.max_parallel_io)
                }),
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
    shared: Arc<SharedWork>,
    /// Results being computed, by vertex digest, across all solves.
    in_flight: Mutex<HashMap<Arc<str>, WeakResult<R>>>,
    /// The key history, loaded from the cache at the first solve.
    history: Mutex<Option<History>>,
}

impl<R: Clone + Send + Sync + 'static> Scheduler<R> {
    /// A builder with the defaults.
    pub fn builder() -> SchedulerBuilder<R> {
        let cores = cores();
        SchedulerBuilder {
            cache: Arc::new(NoCache),
            max_parallel_exec: cores,
            max_parallel_io: default_io(cores),
            shared: None,
        }
    }

    /// Solves `target` in `graph` and returns its result.
    pub async fn solve(
        &self,
        graph: Arc<Graph<R>>,
        target: Edge,
        reporter: Arc<dyn Reporter>,
    ) -> Result<R, SolveError> {
        Ok(self.solve_inner(graph, target, reporter, false).await?.0)
    }

    /// Solves `target` in `graph` and returns its result with the [`SolvedGraph`] a cache
    /// export is made of (`None` in the unlikely case that a key went missing).
    pub async fn solve_keyed(
        &self,
        graph: Arc<Graph<R>>,
        target: Edge,
        reporter: Arc<dyn Reporter>,
    ) -> Result<(R, Option<SolvedGraph<R>>), SolveError> {
        self.solve_inner(graph, target, reporter, true).await
    }

    async fn solve_inner(
        &self,
        graph: Arc<Graph<R>>,
        target: Edge,
        reporter: Arc<dyn Reporter>,
        keyed: bool,
    ) -> Result<(R, Option<SolvedGraph<R>>), SolveError> {
        lock(&self.inner.history)
            .get_or_insert_with(|| self.inner.cache.load_history())
            .next_generation();
        // The graph's edges, for those who draw it (the build's record, a daemon's progress).
        for (digest, vertex) in &graph.vertices {
            let inputs: Vec<String> = vertex.inputs.iter().map(|e| e.vertex.to_string()).collect();
            reporter.inputs(digest, &inputs);
        }
        let job = Arc::new(Job {
            inner: self.inner.clone(),
            graph,
            reporter,
            keys: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            alts: Mutex::new(HashMap::new()),
            content_keys: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
            reported: Mutex::new(std::collections::HashSet::new()),
        });
        // The maps hold shared futures that hold the job: clear them when the solve ends, also
        // when its future is dropped, so that unfinished work is dropped (cancelled) with it.
        let _clear = ClearOnDrop(job.clone());
        let result = job.edge_result(&target).await;
        self.save_history();
        let result = result?;
        let solved = match keyed {
            true => job.solved_graph(&target).await,
            false => None,
        };
        Ok((result, solved))
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (insert-only), so poison is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
