//! A `--cache-from`, opened for a build: its records indexed by digest, its blobs fetched only
//! when a result is really used.
//!
//! # Overview
//! 1. [`CacheSource::open`] reads the cache graph of a [`CacheImportRequest`] (a registry ref:
//!    a cache manifest or an image with an inline cache, a source per platform's image for an
//!    image index; or a local OCI layout). No layer blob is read.
//! 2. [`CacheSource::lookup`] answers, from the graph alone, whether the outputs of a cache key
//!    are in the cache (records named by [`output_record_digest`]) and which layer chains
//!    they are.
//! 3. [`CacheSource::record`] makes one chain a result in the store: from a registry, as lazy
//!    snapshots keyed by chain ID ([`Store::put_lazy_chain`]), downloaded and unpacked only
//!    when something reads them ([`crate::realize`]); a push to the same registry mounts
//!    their blobs and downloads nothing. From a local layout, [`CacheSource::materialize`]
//!    copies the blobs of the chain the store lacks, verified, and unpacks them at once.
//!    Each snapshot remembers its blob, so exporting it again reuses the blob.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_llb::Digest;

use crate::buildkeys::output_record_digest;
use crate::cacheimport::{ImportedCache, layout_blob_path};
use crate::cacheoptions::CacheImportRequest;
use crate::cacheremote::RemoteCache;
use crate::error::Error;
use crate::lazy::{LazyLayer, RemoteLayer};
use crate::pull::PullOptions;
use crate::store::Store;

/// One layer of an imported result: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedLayer {
    /// The compressed blob.
    pub blob: Digest,
    /// Its diff ID.
    pub diff_id: Digest,
    /// When it was made (seconds since the epoch), if the cache says.
    pub created: Option<u64>,
}

/// Where an opened cache's blobs come from.
enum Blobs {
    Registry(Box<RemoteCache>),
    Layout(PathBuf),
}

/// A cache to import from, opened.
pub struct CacheSource {
    name: String,
    cache: ImportedCache,
    blobs: Blobs,
    /// Record index by digest.
    records: HashMap<Digest, usize>,
}

impl std::fmt::Debug for CacheSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSource")
            .field("name", &self.name)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl CacheSource {
    /// Reads the cache graphs `request` names: one, or for a registry image of several
    /// platforms (an inline cache) one per platform's image. Every failure is an
    /// [`Error::CacheImport`], which a build reports as a warning before going on without
    /// this cache.
    pub async fn open(
        request: &CacheImportRequest,
        pull: &PullOptions,
    ) -> Result<Vec<Self>, Error> {
        let name = request.describe();
        let (cache, blobs) = match request {
            CacheImportRequest::Registry { reference } => {
                let remotes = RemoteCache::fetch_each(reference, pull).await?;
                let several = remotes.len() > 1;
                return Ok(remotes
                    .into_iter()
                    .map(|remote| {
                        let name = if several {
                            format!("{name}@{}", remote.manifest_digest)
                        } else {
                            name.clone()
                        };
                        Self::new(
                            name,
                            remote.cache.clone(),
                            Blobs::Registry(Box::new(remote)),
                        )
                    })
                    .collect());
            }
            CacheImportRequest::Local { src, tag, digest } => {
                let src = src.clone();
                let tag = tag.clone();
                let digest = *digest;
                let dir = src.clone();
                let cache = tokio::task::spawn_blocking(move || {
                    ImportedCache::from_local(&dir, &tag, digest.as_ref())
                })
                .await
                .map_err(|e| Error::CacheImport {
                    from: name.clone(),
                    source: Box::new(Error::Io(std::io::Error::other(e))),
                })??;
                (cache, Blobs::Layout(src))
            }
        };
        Ok(vec![Self::new(name, cache, blobs)])
    }

    fn new(name: String, cache: ImportedCache, blobs: Blobs) -> Self {
        let records = cache
            .config
            .records
            .iter()
            .enumerate()
            .map(|(index, record)| (record.digest, index))
            .collect();
        Self {
            name,
            cache,
            blobs,
            records,
        }
    }

    /// What the cache was opened from (a reference, or `DIR:TAG`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many records the cache has.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the cache has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The layer chains (base first) of the outputs `0, 1, …` of the cache key `key`; `None`
    /// unless the cache has a result for every output it has a record of, and one at least.
    /// Results made of several chains are not used.
    pub fn lookup(&self, key: &Digest) -> Option<Vec<Vec<ImportedLayer>>> {
        let mut outputs = Vec::new();
        while let Some(&index) = self.records.get(&output_record_digest(key, outputs.len())) {
            let record = &self.cache.config.records[index];
            let top = record.results.first()?.layer_index;
            let chain = match self.cache.image_layers.is_empty() {
                // A layer's own annotations, where the config has them, date it best: a blob
                // may serve layers made at different times.
                true => self
                    .cache
                    .config
                    .chain(top)
                    .into_iter()
                    .map(|layer| {
                        let described = self.cache.blobs.get(&layer.blob)?;
                        let created = layer
                            .annotations
                            .as_ref()
                            .and_then(|a| a.created_at.as_deref())
                            .or(described.created_at.as_deref());
                        Some(ImportedLayer {
                            blob: layer.blob,
                            diff_id: described.diff_id?,
                            created: created.and_then(seconds),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
                false => self
                    .cache
                    .chain(top)
                    .into_iter()
                    .map(|blob| {
                        let described = self.cache.blobs.get(&blob)?;
                        Some(ImportedLayer {
                            blob,
                            diff_id: described.diff_id?,
                            created: described.created_at.as_deref().and_then(seconds),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            };
            outputs.push(chain);
        }
        (!outputs.is_empty()).then_some(outputs)
    }

    /// Makes `chain` a result in the store; returns the snapshot key of its top (`None` for
    /// an empty chain: the empty file system). A registry's chain is recorded lazily: nothing
    /// is downloaded until something reads it.
    pub async fn record(
        &self,
        store: &Arc<Store>,
        chain: &[ImportedLayer],
    ) -> Result<Option<String>, Error> {
        let Blobs::Registry(remote) = &self.blobs else {
            return self.materialize(store, chain).await;
        };
        let lazy = chain
            .iter()
            .map(|layer| {
                let blob = self
                    .cache
                    .blobs
                    .get(&layer.blob)
                    .ok_or(Error::CacheBlobMissing { digest: layer.blob })?;
                Ok(LazyLayer {
                    blob: layer.blob,
                    diff_id: layer.diff_id,
                    created: layer.created,
                    remote: RemoteLayer {
                        reference: remote.reference.clone(),
                        media_type: blob.media_type.clone(),
                        size: blob.size,
                    },
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.put_lazy_chain(&lazy))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .map(|top| top.map(|t| t.to_string()))
    }

    /// Fetches the blobs of `chain` the store lacks and unpacks the chain; returns the snapshot
    /// key of its top (`None` for an empty chain: the empty file system).
    pub async fn materialize(
        &self,
        store: &Arc<Store>,
        chain: &[ImportedLayer],
    ) -> Result<Option<String>, Error> {
        for layer in chain {
            self.fetch_blob(store, &layer.blob).await?;
        }
        let store = store.clone();
        let chain = chain.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut parent = None;
            for layer in &chain {
                parent = Some(store.unpack_snapshot_made_at(
                    parent.as_ref(),
                    &layer.blob,
                    &layer.diff_id,
                    layer.created,
                )?);
            }
            Ok(parent.map(|p| p.to_string()))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    async fn fetch_blob(&self, store: &Arc<Store>, digest: &Digest) -> Result<(), Error> {
        if store.has_blob(digest) {
            return Ok(());
        }
        match &self.blobs {
            Blobs::Registry(remote) => remote.fetch_blob(store, digest).await,
            Blobs::Layout(dir) => {
                let blob = self
                    .cache
                    .blobs
                    .get(digest)
                    .ok_or(Error::CacheBlobMissing { digest: *digest })?
                    .clone();
                let store = store.clone();
                let path = layout_blob_path(dir, digest);
                let digest = *digest;
                tokio::task::spawn_blocking(move || {
                    let mut file = fs_err::File::open(&path)?;
                    let mut writer = store.writer()?;
                    let written = writer.copy_from(&mut std::io::Read::take(
                        &mut file,
                        blob.size.saturating_add(1),
                    ))?;
                    if written != blob.size {
                        return Err(Error::SizeMismatch {
                            what: path.display().to_string(),
                            expected: blob.size,
                            actual: written,
                        });
                    }
                    let (_, size) = writer.commit(Some(&digest))?;
                    store.record_blob(&digest, size, Some(&blob.media_type))
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?
            }
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn seconds(text: &str) -> Option<u64> {
    let time: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(time.as_second()).ok()
}
