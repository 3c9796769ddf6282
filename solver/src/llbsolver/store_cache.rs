//! The scheduler's cache in the store: a step's results found by its cache key (the store's
//! cache records first, then the imported caches, recorded in the store when found there),
//! the records saved after a step runs, and the key history `kiln explain` reads.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryFutureExt as _;
use futures::future::{BoxFuture, FutureExt};
use kiln_cache::{CacheRecord, CacheSource, Store};

use super::{Ref, blocking, cache_key_digest, source};
use crate::cache_key::CacheKey;
use crate::error::Error;
use crate::history::History;
use crate::scheduler::{CacheStore, OpError};

/// The name of the scheduler's key history (how ops were keyed, why vertices missed) among
/// the store's documents.
const HISTORY_DOCUMENT: &str = "cache-key-history";

/// Where older versions kept the history: read once, then moved into the store's database.
fn legacy_history_file(store: &Store) -> PathBuf {
    store.root().join("cache-history.json")
}

/// The cache key history of the builds made with `store`: how each op was keyed and why
/// vertices missed the cache (what `kiln explain` shows).
pub fn load_history(store: &Store) -> History {
    match store.document(HISTORY_DOCUMENT) {
        Ok(Some(bytes)) => History::from_json(&bytes),
        Ok(None) => fs_err::read(legacy_history_file(store))
            .map_or_else(|_| History::default(), |b| History::from_json(&b)),
        Err(error) => {
            tracing::warn!(%error, "reading the cache key history");
            History::default()
        }
    }
}

/// The scheduler's cache, kept as cache records in the store; what the store lacks is looked
/// up in the imported caches, whose results are then recorded in the store (lazily: a
/// registry's layers are downloaded and unpacked only when an op reads them, see
/// [`kiln_cache::realize`]).
pub(super) struct StoreCache {
    pub(super) store: Arc<Store>,
    pub(super) imports: Vec<Arc<CacheSource>>,
    /// Registry settings and credentials for realizing lazy results.
    pub(super) pull: kiln_cache::PullOptions,
}

/// The outputs saved under `id` in the store, if all are still there.
fn load_local(store: &Store, id: &str) -> Result<Option<Vec<Ref>>, Error> {
    let Some(record) = store.cache_record(id)? else {
        return Ok(None);
    };
    let mut refs = Vec::with_capacity(record.snapshots.len());
    for key in &record.snapshots {
        if key.is_empty() {
            refs.push(Ref::scratch());
        } else if store.chain_is_whole(key)? {
            refs.push(Ref::snapshot(key.as_str()));
        } else {
            return Ok(None); // pruned (or a lazy layer below it proved false): run again
        }
    }
    Ok(Some(refs))
}

/// The outputs of `key` in the imported caches, recorded in the store; `None` when no cache
/// has them or recording them failed (the step then runs: an import never fails a build).
async fn load_imported(
    store: &Arc<Store>,
    imports: &[Arc<CacheSource>],
    key: &CacheKey,
) -> Option<Vec<Ref>> {
    let digest = cache_key_digest(key)?;
    for import in imports {
        let Some(chains) = import.lookup(&digest) else {
            continue;
        };
        let mut refs = Vec::with_capacity(chains.len());
        for chain in &chains {
            match import.record(store, chain).await {
                Ok(Some(snapshot)) => refs.push(Ref::snapshot(snapshot)),
                Ok(None) => refs.push(Ref::scratch()),
                Err(error) => {
                    tracing::warn!(cache = import.name(), %key, %error, "fetching a cached result");
                    refs.clear();
                    break;
                }
            }
        }
        if refs.len() == chains.len() {
            tracing::debug!(cache = import.name(), %key, "imported cache hit");
            return Some(refs);
        }
    }
    None
}

impl CacheStore<Ref> for StoreCache {
    fn load(&self, key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<Ref>>, OpError>> {
        let store = self.store.clone();
        let imports = self.imports.clone();
        let key = *key;
        async move {
            let local_store = store.clone();
            let id = key.to_string();
            if let Some(refs) = blocking(move || load_local(&local_store, &id)).await? {
                return Ok(Some(refs));
            }
            let Some(refs) = load_imported(&store, &imports, &key).await else {
                return Ok(None);
            };
            // Recorded in the store, so the next build finds it there.
            save_record(store, key.to_string(), &refs).await?;
            Ok::<_, Error>(Some(refs))
        }
        .map_err(OpError::from)
        .boxed()
    }

    fn load_history(&self) -> History {
        load_history(&self.store)
    }

    fn save_history(&self, history: &mut History) {
        // Merged into the stored history under the database's lock: what other builds saved
        // meanwhile stays, and this build's entries are added.
        let legacy = legacy_history_file(&self.store);
        let saved = self.store.update_document(HISTORY_DOCUMENT, |stored| {
            let stored = match stored {
                Some(bytes) => History::from_json(bytes),
                None => fs_err::read(&legacy)
                    .map_or_else(|_| History::default(), |b| History::from_json(&b)),
            };
            history.merge_into(stored);
            (history.to_json(), ())
        });
        if let Err(error) = saved {
            tracing::warn!(%error, "saving the cache key history");
            return;
        }
        history.mark_saved();
        if let Err(error) = fs_err::remove_file(&legacy) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "removing the old cache key history file");
            }
        }
    }

    fn save(&self, key: &CacheKey, outputs: &[Ref]) -> BoxFuture<'static, Result<(), OpError>> {
        save_record(self.store.clone(), key.to_string(), outputs)
            .map_err(OpError::from)
            .boxed()
    }

    fn realize(
        &self,
        result: &Ref,
        ctx: crate::OpContext,
    ) -> BoxFuture<'static, Result<(), OpError>> {
        let Some(key) = result.key().map(str::to_owned) else {
            return futures::future::ready(Ok(())).boxed();
        };
        let (store, pull) = (self.store.clone(), self.pull.clone());
        async move {
            kiln_cache::realize_with_progress(&store, &key, &pull, &source::VertexLog(ctx))
                .await
                .map_err(Error::from)
        }
        .map_err(OpError::from)
        .boxed()
    }
}

/// Records `outputs` under the cache key `id`.
fn save_record(
    store: Arc<Store>,
    id: String,
    outputs: &[Ref],
) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
    let snapshots: Vec<String> = outputs
        .iter()
        .map(|r| r.key().unwrap_or_default().to_owned())
        .collect();
    blocking(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        store.put_cache_record(&CacheRecord {
            id,
            description: String::new(),
            blobs: Vec::new(),
            snapshots,
            size: 0,
            created: now,
            last_used: now,
        })?;
        Ok(())
    })
}
