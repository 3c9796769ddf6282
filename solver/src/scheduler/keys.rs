//! The keys of a vertex: definition-based, by its inputs' content-based keys, and by the
//! content its op reads; and what the history records of them.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared, try_join_all};
use sha2::{Digest as _, Sha256};

use super::job::{Job, SharedAlt, SharedKey, SharedLookup};
use super::{CacheDep, OpError, SolveError, SourceContent, Vertex, lock};
use crate::cache_key::CacheKey;
use crate::history::{
    DefinitionChange, History, KeyRecord, Lineage, LineageRecord, MissReason, Outline, PlaceRecord,
    diff_facts, diff_fields,
};

/// A vertex's definition-based key and what went into it.
pub(super) struct Keys<R> {
    pub(super) definition: CacheKey,
    /// The op's cache digest.
    pub(super) op: String,
    pub(super) content: Option<SourceContent>,
    /// Each input's key part, as hashed.
    pub(super) inputs: Vec<String>,
    pub(super) deps: Vec<CacheDep<R>>,
    /// How the op was keyed before this solve, from the history.
    pub(super) previous: Option<KeyRecord>,
    /// The op's lineage, if it has one.
    pub(super) lineage: Option<Lineage>,
    /// The last op of that lineage before this solve, when it was another op.
    pub(super) lineage_before: Option<LineageRecord>,
    /// The op's parts and place, if it names its parts.
    pub(super) place: Option<Place>,
    /// Other ops keyed at that place before this solve.
    pub(super) place_before: Vec<PlaceRecord>,
}

/// Where an op is in a graph, and what it is there.
pub(super) struct Place {
    /// The place: the op's kind on its inputs (see [`place`]).
    id: String,
    /// The op's parts.
    outline: Outline,
    /// The vertex's name, which tells apart ops at one place that differ alike.
    name: String,
}

impl<R: Clone + Send + Sync + 'static> Job<R> {
    /// The shared future of a vertex's definition-based key.
    pub(super) fn key(self: &Arc<Self>, digest: Arc<str>) -> SharedKey<R> {
        self.shared_once(&self.keys, digest, |job, d| {
            async move { job.compute_key(d).await.map(Arc::new) }.boxed()
        })
    }

    /// The future of `digest` in `table`, made by `make` (from the job and the digest) the
    /// first time this solve asks for it and shared by every later ask.
    fn shared_once<T: Clone>(
        self: &Arc<Self>,
        table: &Mutex<HashMap<Arc<str>, Shared<BoxFuture<'static, T>>>>,
        digest: Arc<str>,
        make: impl FnOnce(Arc<Self>, Arc<str>) -> BoxFuture<'static, T>,
    ) -> Shared<BoxFuture<'static, T>> {
        let mut table = lock(table);
        if let Some(existing) = table.get(&digest) {
            return existing.clone();
        }
        let fut = make(self.clone(), digest.clone()).shared();
        table.insert(digest, fut.clone());
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
        let place = map.outline.map(|outline| Place {
            id: place(outline.kind, &inputs),
            outline,
            name: vertex.name.clone(),
        });
        let (previous, lineage_before, place_before) = {
            let history = lock(&self.inner.history);
            let history = history.as_ref();
            let previous = history.and_then(|h| h.op(&map.digest).cloned());
            let lineage_before = map
                .lineage
                .as_ref()
                .and_then(|l| history.and_then(|h| h.lineage(&l.id).cloned()))
                .filter(|l| l.op != map.digest);
            let place_before = match (history, &place) {
                (Some(history), Some(place)) => history.place(&place.id, &map.digest),
                _ => Vec::new(),
            };
            (previous, lineage_before, place_before)
        };
        Ok(Keys {
            previous,
            lineage: map.lineage,
            lineage_before,
            place,
            place_before,
            definition: CacheKey::from_bytes(hasher.finalize().into()),
            op: map.digest,
            content,
            inputs,
            deps: map.deps,
        })
    }

    /// The shared lookup of a vertex's definition-based key in the cache.
    pub(super) fn lookup(self: &Arc<Self>, digest: Arc<str>) -> SharedLookup<R> {
        self.shared_once(&self.lookups, digest, |job, d| {
            async move {
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
        })
    }

    /// The shared future of the content-based key a vertex's dependents build on (see
    /// [`Job::compute_alt_key`]); `None` when the vertex is known by its definition alone.
    pub(super) fn alt_key(self: &Arc<Self>, digest: Arc<str>) -> SharedAlt {
        self.shared_once(&self.alts, digest, |job, d| {
            async move { job.compute_alt_key(d).await }.boxed()
        })
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
            let alt = CacheKey::from_bytes(hasher.finalize().into());
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
        if keys.previous.is_none() && keys.deps.iter().any(|d| d.content.is_some()) {
            // No record to hold the inputs' keys against: the content key is the one, and
            // computing it solves the inputs it reads all at once (a chain of such vertices,
            // e.g. `COPY --from` of several stages, starts every stage together).
            return self.content_key(digest).await;
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
    pub(super) async fn inputs_alt_key(
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
        Ok(Some(CacheKey::from_bytes(hasher.finalize().into())))
    }

    /// The shared future of a vertex's key by the content its op reads from its inputs
    /// (a digest of exactly the paths a copy reads), `None` for ops that read none. This
    /// needs those inputs solved.
    pub(super) fn content_key(self: &Arc<Self>, digest: Arc<str>) -> SharedAlt {
        self.shared_once(&self.content_keys, digest, |job, d| {
            async move { job.compute_content_key(d).await }.boxed()
        })
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
                        let input = job.input_result(&edge).await?;
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
                    // An input not read by content that is not in the cache (a copy's
                    // destination stage) runs now, beside the inputs read by content: this
                    // vertex needs it unless it hits by content, which a new input almost
                    // never allows.
                    if job.lookup(edge.vertex.clone()).await?.is_none() {
                        job.edge_result(&edge).await?;
                    }
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
        Ok(Some(CacheKey::from_bytes(hasher.finalize().into())))
    }

    /// Why a vertex with these keys is not in the cache, from the history.
    pub(super) fn miss_reason(&self, keys: &Keys<R>, vertex: &Vertex<R>) -> MissReason {
        let Some(record) = &keys.previous else {
            return match (&keys.lineage, &keys.lineage_before) {
                (Some(lineage), Some(before)) => MissReason::DefinitionChanged {
                    changes: diff_facts(&before.facts, &lineage.facts),
                },
                _ => match place_changes(keys) {
                    Some(changes) => MissReason::DefinitionChanged { changes },
                    None => MissReason::NoRecord,
                },
            };
        };
        let content = keys.content.as_ref().map(|c| c.digest.clone());
        if record.content != content {
            return MissReason::ContentChanged {
                old: record.content.clone().unwrap_or_default(),
                new: content.unwrap_or_default(),
                file: keys.content.as_ref().and_then(|c| c.changed.clone()),
                change: keys.content.as_ref().and_then(|c| c.change.clone()),
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
    pub(super) fn record(
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
        if let Some(lineage) = &keys.lineage {
            history.record_lineage(lineage, &keys.op);
        }
        if let Some(place) = &keys.place {
            let facts = keys.lineage.as_ref().map_or(&[][..], |l| &l.facts[..]);
            history.record_place(&place.id, &keys.op, &place.outline, &place.name, facts);
        }
        if let Some(reason) = miss {
            history.record_miss(digest, reason);
        }
    }
}

/// The place of an op: its kind on these inputs (each input's key; not the selectors, which
/// the op's own definition makes). Two ops at one place differ only in their definitions.
fn place(kind: &str, inputs: &[String]) -> String {
    let mut hasher = Sha256::new();
    hash_field(&mut hasher, b"place");
    hash_field(&mut hasher, kind.as_bytes());
    for part in inputs {
        hash_field(&mut hasher, part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What changed from the op at the same place that this one differs least from, if any op
/// was keyed there. Of those that differ in as many parts, the one whose vertex name shares
/// the longest beginning with this one's (`[stage 2/3] RUN …` names its stage), then the most
/// recently used.
fn place_changes<R>(keys: &Keys<R>) -> Option<Vec<DefinitionChange>> {
    let place = keys.place.as_ref()?;
    let facts = keys.lineage.as_ref().map_or(&[][..], |l| &l.facts[..]);
    let shared = |name: &str| {
        name.chars()
            .zip(place.name.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    keys.place_before
        .iter()
        .map(|before| {
            let mut changes = diff_fields(&before.fields, &place.outline.fields);
            changes.extend(diff_facts(&before.facts, facts));
            let rank = (
                changes.len(),
                Reverse(shared(&before.name)),
                Reverse(before.used),
            );
            (rank, changes)
        })
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, changes)| changes)
}

/// Length-prefixes each field so that no two different field lists hash alike.
fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}
