//! What a solve leaves for a cache export: every vertex it reached, inputs first, with its
//! definition-based key, the edges it reads and, where the solve has them, its outputs.

use std::collections::HashMap;
use std::sync::Arc;

use kiln_cache::{KeyEdge, KeyInput};

use super::job::Job;
use super::{Edge, lock};
use crate::cache_key::CacheKey;

/// The vertices of one solve, each after the vertices it reads.
pub struct SolvedGraph<R> {
    /// The vertices.
    pub vertices: Vec<SolvedVertex<R>>,
    /// The solve's result.
    pub target: KeyEdge,
}

/// One vertex of a [`SolvedGraph`].
pub struct SolvedVertex<R> {
    /// The vertex's digest.
    pub digest: Arc<str>,
    /// Its definition-based cache key.
    pub key: CacheKey,
    /// The other keys its outputs are saved under (by its inputs' content-based keys, by the
    /// content it reads), where this solve knows them.
    pub alternatives: Vec<CacheKey>,
    /// Its inputs: indexes into [`SolvedGraph::vertices`], with their selectors.
    pub inputs: Vec<KeyInput>,
    /// Its outputs, when the solve produced them or the cache has them.
    pub outputs: Option<Vec<R>>,
}

impl<R: Clone + Send + Sync + 'static> Job<R> {
    /// The graph below `target` as solved; the outputs of vertices the solve did not need
    /// (below a cache hit) are looked up in the cache. `None` when a vertex has no key (the
    /// solve did not get that far).
    pub(super) async fn solved_graph(&self, target: &Edge) -> Option<SolvedGraph<R>> {
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        let mut vertices: Vec<SolvedVertex<R>> = Vec::new();
        // Depth first, post-order: a vertex is emitted once all its inputs are.
        let mut stack: Vec<(Arc<str>, bool)> = vec![(target.vertex.clone(), false)];
        while let Some((digest, expanded)) = stack.pop() {
            if index.contains_key(&digest) {
                continue;
            }
            let vertex = self.graph.get(&digest)?;
            if !expanded {
                stack.push((digest.clone(), true));
                for edge in vertex.inputs.iter().rev() {
                    if !index.contains_key(&edge.vertex) {
                        stack.push((edge.vertex.clone(), false));
                    }
                }
                continue;
            }
            let keys = {
                let keys = lock(&self.keys);
                keys.get(&digest)?.peek()?.as_ref().ok()?.clone()
            };
            let inputs = vertex
                .inputs
                .iter()
                .zip(&keys.deps)
                .map(|(edge, dep)| {
                    Some(KeyInput {
                        edge: KeyEdge {
                            node: *index.get(&edge.vertex)?,
                            output: edge.output,
                        },
                        selector: dep.selector.clone(),
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            let produced = {
                let results = lock(&self.results);
                results
                    .get(&digest)
                    .and_then(|r| r.peek())
                    .and_then(|r| r.as_ref().ok())
                    .map(|outputs| outputs.to_vec())
            };
            let outputs = match produced {
                Some(outputs) => Some(outputs),
                None => self.inner.cache.load(&keys.definition).await.ok().flatten(),
            };
            // From the key history, which keeps them across builds: the same graph exports
            // the same keys whether this solve ran its vertices or found them cached. A
            // source's own content key is only a part of its dependents' keys.
            let mut alternatives: Vec<CacheKey> = Vec::new();
            if !vertex.inputs.is_empty() {
                let history = lock(&self.inner.history);
                let record = history
                    .as_ref()
                    .and_then(|h| h.op(&keys.op))
                    .filter(|record| record.key == keys.definition);
                if let Some(record) = record {
                    for key in [record.inputs_alt, record.alt].into_iter().flatten() {
                        if key != keys.definition && !alternatives.contains(&key) {
                            alternatives.push(key);
                        }
                    }
                }
            }
            index.insert(digest.clone(), vertices.len());
            vertices.push(SolvedVertex {
                digest,
                key: keys.definition,
                alternatives,
                inputs,
                outputs,
            });
        }
        let target = KeyEdge {
            node: *index.get(&target.vertex)?,
            output: target.output,
        };
        Some(SolvedGraph { vertices, target })
    }
}
