//! One solve: the shared futures of each vertex's keys and result, and running a vertex's op
//! when the cache has nothing for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared, try_join_all};

use super::keys::Keys;
use super::{
    Edge, Event, Graph, Inner, OpContext, OpError, Reporter, ResourceClass, SolveError, Vertex,
    lock,
};
use crate::cache_key::CacheKey;
use crate::history::MissReason;

pub(super) type SharedKey<R> = Shared<BoxFuture<'static, Result<Arc<Keys<R>>, SolveError>>>;
pub(super) type SharedLookup<R> =
    Shared<BoxFuture<'static, Result<Option<Arc<Vec<R>>>, SolveError>>>;
pub(super) type SharedAlt = Shared<BoxFuture<'static, Result<Option<CacheKey>, SolveError>>>;
pub(super) type SharedResult<R> = Shared<BoxFuture<'static, Result<Arc<Vec<R>>, SolveError>>>;
pub(super) type WeakResult<R> = WeakShared<BoxFuture<'static, Result<Arc<Vec<R>>, SolveError>>>;

pub(super) struct ClearOnDrop<R>(pub(super) Arc<Job<R>>);

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
pub(super) struct Job<R> {
    pub(super) inner: Arc<Inner<R>>,
    pub(super) graph: Arc<Graph<R>>,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) keys: Mutex<HashMap<Arc<str>, SharedKey<R>>>,
    pub(super) lookups: Mutex<HashMap<Arc<str>, SharedLookup<R>>>,
    pub(super) alts: Mutex<HashMap<Arc<str>, SharedAlt>>,
    pub(super) content_keys: Mutex<HashMap<Arc<str>, SharedAlt>>,
    pub(super) results: Mutex<HashMap<Arc<str>, SharedResult<R>>>,
    /// Vertices reported cached because a vertex above them was.
    pub(super) reported: Mutex<HashSet<Arc<str>>>,
}

impl<R: Clone + Send + Sync + 'static> Job<R> {
    pub(super) fn vertex(&self, digest: &Arc<str>) -> Result<&Vertex<R>, SolveError> {
        self.graph
            .get(digest)
            .ok_or_else(|| SolveError::MissingVertex {
                vertex: digest.clone(),
            })
    }

    /// The name of vertex `digest` for messages and progress (empty for one not in the graph).
    fn vertex_name(&self, digest: &Arc<str>) -> String {
        self.graph
            .get(digest)
            .map(|v| v.name.clone())
            .unwrap_or_default()
    }

    pub(super) fn context(&self, digest: &Arc<str>) -> OpContext {
        OpContext {
            vertex: digest.clone(),
            reporter: self.reporter.clone(),
        }
    }

    pub(super) async fn edge_result(self: &Arc<Self>, edge: &Edge) -> Result<R, SolveError> {
        let outputs = self.result(edge.vertex.clone()).await?;
        outputs
            .get(edge.output)
            .cloned()
            .ok_or_else(|| SolveError::MissingOutput {
                vertex: edge.vertex.clone(),
                name: self.vertex_name(&edge.vertex),
                output: edge.output,
                outputs: outputs.len(),
            })
    }

    /// The result `edge` names, ready for an op to read ([`super::CacheStore::realize`]).
    pub(super) async fn input_result(self: &Arc<Self>, edge: &Edge) -> Result<R, SolveError> {
        let result = self.edge_result(edge).await?;
        self.inner
            .cache
            .realize(&result, self.context(&edge.vertex))
            .await
            .map_err(|source| SolveError::Cache {
                vertex: edge.vertex.clone(),
                name: self.vertex_name(&edge.vertex),
                source: Arc::new(source),
            })?;
        Ok(result)
    }

    /// The shared future of a vertex's outputs, shared with other solves running it now.
    pub(super) fn result(self: &Arc<Self>, digest: Arc<str>) -> SharedResult<R> {
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

    /// Reports the vertices below a cache hit as cached too, inputs first, as BuildKit lists
    /// every step of a cached build: nothing below a hit runs. Vertices this solve asks for
    /// by another path report themselves.
    fn report_cached_below(&self, digest: &Arc<str>) {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![(digest.clone(), false)];
        while let Some((vertex, expanded)) = stack.pop() {
            if expanded {
                if vertex != *digest {
                    order.push(vertex);
                }
                continue;
            }
            if !seen.insert(vertex.clone())
                || (vertex != *digest && lock(&self.results).contains_key(&vertex))
            {
                continue;
            }
            let Some(found) = self.graph.get(&vertex) else {
                continue;
            };
            stack.push((vertex.clone(), true));
            for edge in found.inputs.iter().rev() {
                stack.push((edge.vertex.clone(), false));
            }
        }
        let mut reported = lock(&self.reported);
        for vertex in order {
            if reported.insert(vertex.clone()) {
                let name = self.vertex_name(&vertex);
                self.reporter.event(Event::Cached { vertex, name });
            }
        }
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
        let reason = if self.graph.ignores_cache(&digest) {
            MissReason::Ignored
        } else {
            if let Some(outputs) = self.lookup(digest.clone()).await? {
                tracing::debug!(vertex = %digest, key = %keys.definition, "cache hit");
                self.report_cached_below(&digest);
                let alt = self.alt_key(digest.clone()).await?;
                let inputs_alt = keys.previous.as_ref().and_then(|p| p.inputs_alt);
                self.record(&digest, &keys, alt, inputs_alt, None);
                return cached(outputs.to_vec());
            }
            // The other keys, cheapest first: by the inputs' content-based keys, then by the
            // content the op reads (which needs its inputs).
            let reads_content = keys.deps.iter().any(|d| d.content.is_some());
            let (inputs_alt, early_content) = if keys.previous.is_none() && reads_content {
                // Nothing recorded of this op: its content key is likely needed, so it is
                // computed (its inputs solved) while the inputs' keys are, not after them.
                let (inputs_alt, content) = futures::future::try_join(
                    self.inputs_alt_key(&digest, &keys),
                    self.content_key(digest.clone()),
                )
                .await?;
                (inputs_alt, Some(content))
            } else {
                (self.inputs_alt_key(&digest, &keys).await?, None)
            };
            let mut found = None;
            if let Some(key) = inputs_alt {
                found = self.inner.cache.load(&key).await.map_err(cache_error)?;
            }
            if found.is_none() {
                let content = match early_content {
                    Some(content) => content,
                    None => self.content_key(digest.clone()).await?,
                };
                if let Some(key) = content {
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
        self.reporter.event(Event::Missed {
            vertex: digest.clone(),
            reason: reason.clone(),
        });
        let inputs = try_join_all(vertex.inputs.iter().map(|edge| {
            let job = self.clone();
            let edge = edge.clone();
            async move { job.input_result(&edge).await }
        }))
        .await?;
        // Another solve (another session's build) may be running the same op: its result
        // is waited for and taken from the cache instead of running the op twice.
        let _running = self.inner.shared.claim(&keys.definition).await;
        if !matches!(reason, MissReason::Ignored)
            && let Some(outputs) = self
                .inner
                .cache
                .load(&keys.definition)
                .await
                .map_err(cache_error)?
        {
            tracing::debug!(vertex = %digest, "made by a concurrent solve");
            let alt = self.alt_key(digest.clone()).await?;
            let inputs_alt = self.inputs_alt_key(&digest, &keys).await?;
            self.record(&digest, &keys, alt, inputs_alt, None);
            return cached(outputs);
        }
        let permits = match vertex.op.resource_class() {
            ResourceClass::Exec => &self.inner.shared.exec_permits,
            ResourceClass::Io => &self.inner.shared.io_permits,
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
