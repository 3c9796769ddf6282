//! Importing a cache from a registry (`--cache-from type=registry,ref=REF`), lazily.
//!
//! # Overview
//! 1. [`RemoteCache::fetch`] asks the sources of the reference (its mirrors, then the
//!    registry, as a pull does) for the manifest, then fetches the cache config it names into
//!    memory and reads both into an [`ImportedCache`]; a ref naming an image instead reads
//!    the inline cache of its config, as BuildKit's registry importer does, and one naming an
//!    image index that of its host's image ([`RemoteCache::fetch`]) or of each platform's
//!    ([`RemoteCache::fetch_each`], as BuildKit reads every manifest of an index). No layer
//!    blob is downloaded.
//! 2. [`RemoteCache::fetch_blob`] downloads one blob into the store, verified, when a result
//!    is really used.
//!
//! Every failure of step 1 is an [`Error::CacheImport`], which a build turns into a warning
//! (a missing or unreadable `--cache-from` does not stop it, as in BuildKit).

use futures::TryStreamExt as _;
use kiln_llb::Digest;
use oci_client::manifest::OciDescriptor;

use crate::cacheimport::{ImportedCache, config_descriptor, verify};
use crate::error::Error;
use crate::pull::{PullOptions, Source, sources};
use crate::registry::parse_reference;
use crate::store::Store;

/// A cache read from a registry: its graph, and where to fetch its blobs from.
pub struct RemoteCache {
    /// The graph and the blob descriptors.
    pub cache: ImportedCache,
    /// The digest of the manifest read.
    pub manifest_digest: Digest,
    /// The reference read, normalised (`host/repository:tag`): the repository its blobs
    /// are in, whichever mirror answered.
    pub reference: String,
    source: Source,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCache")
            .field("reference", &self.source.reference.whole())
            .field("host", &self.source.host)
            .field("manifest_digest", &self.manifest_digest)
            .finish_non_exhaustive()
    }
}

/// Which images of an image index (one per platform) a fetch reads the inline cache of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Images {
    /// The host's platform's, as BuildKit's registry importer picks one.
    Host,
    /// Every platform's, as BuildKit reads an inline cache of several platforms.
    Each,
}

impl RemoteCache {
    /// Reads the cache manifest and config `reference` names, trying its mirrors first. For
    /// an image index, the inline cache of the host's platform's image.
    pub async fn fetch(reference: &str, options: &PullOptions) -> Result<Self, Error> {
        let mut caches = Self::fetch_images(reference, options, Images::Host).await?;
        Ok(caches.remove(0))
    }

    /// As [`RemoteCache::fetch`], but for an image index (an image of several platforms, as
    /// `--cache-to type=inline` pushes one) the inline cache of each platform's image that
    /// has one, in the index's order: each image carries the cache of its own platform's
    /// steps. Never empty.
    pub async fn fetch_each(reference: &str, options: &PullOptions) -> Result<Vec<Self>, Error> {
        Self::fetch_images(reference, options, Images::Each).await
    }

    async fn fetch_images(
        reference: &str,
        options: &PullOptions,
        images: Images,
    ) -> Result<Vec<Self>, Error> {
        let wrap = |source: Error| Error::CacheImport {
            from: reference.to_owned(),
            source: Box::new(source),
        };
        let parsed = parse_reference(reference).map_err(wrap)?;
        let mut last_error = None;
        for source in sources(&parsed, options).await.map_err(wrap)? {
            match Self::fetch_from(source, images).await {
                Ok(mut caches) => {
                    for cache in &mut caches {
                        cache.reference = parsed.whole();
                    }
                    return Ok(caches);
                }
                Err(e) => {
                    tracing::debug!(reference, error = %e, "cache source failed");
                    last_error = Some(e);
                }
            }
        }
        Err(wrap(last_error.unwrap_or_else(|| {
            Error::InvalidCacheImport {
                reason: "no source to ask".to_owned(),
            }
        })))
    }

    async fn fetch_from(source: Source, images: Images) -> Result<Vec<Self>, Error> {
        source.authenticate().await?;
        let (manifest, manifest_digest) = source.manifest(&source.reference, None).await?;
        let offered = crate::cacheimport::platform_manifests(&manifest);
        if offered.is_empty() {
            let cache = Self::read(&source, &manifest).await?;
            return Ok(vec![Self {
                cache,
                manifest_digest,
                reference: source.reference.whole(),
                source,
            }]);
        }
        let chosen: Vec<Digest> = match images {
            Images::Host => {
                let platforms: Vec<kiln_llb::Platform> =
                    offered.iter().map(|(_, p)| p.clone()).collect();
                let best = kiln_llb::Platform::host()
                    .best_match(&platforms)
                    .ok_or_else(|| Error::InvalidCacheImport {
                        reason: format!(
                            "the image index has no image for {}",
                            kiln_llb::Platform::host()
                        ),
                    })?;
                vec![offered[best].0]
            }
            Images::Each => offered.iter().map(|(digest, _)| *digest).collect(),
        };
        let mut caches = Vec::with_capacity(chosen.len());
        let mut last_error = None;
        for digest in chosen {
            let by_digest = source.reference.clone_with_digest(digest.to_string());
            let (manifest, manifest_digest) = source.manifest(&by_digest, Some(&digest)).await?;
            match Self::read(&source, &manifest).await {
                Ok(cache) => caches.push(Self {
                    cache,
                    manifest_digest,
                    reference: source.reference.whole(),
                    source: source.clone(),
                }),
                // One platform's image without an inline cache leaves the others usable.
                Err(e @ Error::InvalidCacheImport { .. }) if images == Images::Each => {
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match last_error {
            Some(e) if caches.is_empty() => Err(e),
            _ => Ok(caches),
        }
    }

    /// The cache of one manifest: a cache manifest's config, or the inline cache in an image
    /// manifest's config.
    async fn read(source: &Source, manifest: &[u8]) -> Result<ImportedCache, Error> {
        let (digest, size, is_cache) = config_descriptor(manifest)?;
        let descriptor = OciDescriptor {
            media_type: crate::cacheconfig::CACHE_CONFIG_MEDIA_TYPE.to_owned(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        // Read into memory, stopping as soon as the registry sends more than announced.
        let mut stream = source
            .client
            .pull_blob_stream(&source.reference, &descriptor)
            .await
            .map_err(|e| source.registry_error(format!("fetching config {digest}"), e))?;
        let mut config = Vec::new();
        while let Some(chunk) = stream.try_next().await.map_err(|e| Error::Download {
            registry: source.host.clone(),
            digest,
            source: e,
        })? {
            let actual = (config.len() + chunk.len()) as u64;
            if actual > size {
                return Err(Error::SizeMismatch {
                    what: format!("config {digest} from {}", source.host),
                    expected: size,
                    actual,
                });
            }
            config.extend_from_slice(&chunk);
        }
        if is_cache {
            ImportedCache::from_manifest(manifest, |_, _| Ok(config.clone()))
        } else {
            verify("image config", &config, &digest, size)?;
            ImportedCache::from_image_manifest(manifest, &config)?.ok_or_else(|| {
                Error::InvalidCacheImport {
                    reason: format!(
                        "the image config carries no {}",
                        crate::cacheconfig::INLINE_CACHE_KEY
                    ),
                }
            })
        }
    }

    /// Downloads the blob `digest` of this cache into `store` (verified) unless it is there.
    pub async fn fetch_blob(&self, store: &Store, digest: &Digest) -> Result<(), Error> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let blob = self
            .cache
            .blobs
            .get(digest)
            .ok_or(Error::CacheBlobMissing { digest: *digest })?;
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: digest.to_string(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        self.source.blob(store, &descriptor, digest).await?;
        Ok(())
    }
}
