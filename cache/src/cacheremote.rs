//! Importing a cache from a registry (`--cache-from type=registry,ref=REF`), lazily.
//!
//! # Overview
//! 1. [`RemoteCache::fetch`] asks the sources of the reference (its mirrors, then the
//!    registry, as a pull does) for the manifest, then fetches the cache config it names into
//!    memory and reads both into an [`ImportedCache`]; a ref naming an image instead reads
//!    the inline cache of its config, as BuildKit's registry importer does. No layer blob is
//!    downloaded.
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

impl RemoteCache {
    /// Reads the cache manifest and config `reference` names, trying its mirrors first.
    pub async fn fetch(reference: &str, options: &PullOptions) -> Result<Self, Error> {
        let wrap = |source: Error| Error::CacheImport {
            from: reference.to_owned(),
            source: Box::new(source),
        };
        let parsed = parse_reference(reference).map_err(wrap)?;
        let mut last_error = None;
        for source in sources(&parsed, options).await.map_err(wrap)? {
            match Self::fetch_from(source).await {
                Ok(mut cache) => {
                    cache.reference = parsed.whole();
                    return Ok(cache);
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

    async fn fetch_from(source: Source) -> Result<Self, Error> {
        source.authenticate().await?;
        let (mut manifest, mut manifest_digest) = source.manifest(&source.reference, None).await?;
        // An image index: the inline cache is in the config of the host's image.
        if let Some(digest) =
            crate::cacheimport::platform_manifest(&manifest, &kiln_llb::Platform::host())
        {
            let by_digest = source.reference.clone_with_digest(digest.to_string());
            (manifest, manifest_digest) = source.manifest(&by_digest, Some(&digest)).await?;
        }
        let (digest, size, is_cache) = config_descriptor(&manifest)?;
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
        let cache = if is_cache {
            ImportedCache::from_manifest(&manifest, |_, _| Ok(config.clone()))?
        } else {
            verify("image config", &config, &digest, size)?;
            ImportedCache::from_image_manifest(&manifest, &config)?.ok_or_else(|| {
                Error::InvalidCacheImport {
                    reason: format!(
                        "the image config carries no {}",
                        crate::cacheconfig::INLINE_CACHE_KEY
                    ),
                }
            })?
        };
        Ok(Self {
            cache,
            manifest_digest,
            reference: source.reference.whole(),
            source,
        })
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
