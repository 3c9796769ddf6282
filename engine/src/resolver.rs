//! The frontend's [`ImageMetaResolver`] seam, backed by the content store: `FROM` pulls the
//! base image into the store and reads its configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_cache::{PullOptions, Store};
use kiln_frontend::{ImageMetaResolver, ResolvedImage};
use kiln_llb::pb;

/// Resolves base images by pulling them into the store and reading their configuration.
/// Each reference is resolved once per platform (as BuildKit's resolver caches its answers):
/// two stages `FROM` one image ask its registry once.
///
/// [`ImageMetaResolver::resolve`] is synchronous: it blocks on `runtime`, so it must be called
/// outside of that runtime's worker threads (from `spawn_blocking` or a plain thread).
pub struct StoreResolver {
    store: Arc<Store>,
    pull: PullOptions,
    runtime: tokio::runtime::Handle,
    /// The answers so far, by reference and platform.
    resolved: Mutex<HashMap<(String, String), ResolvedImage>>,
}

impl StoreResolver {
    /// A resolver pulling into `store` with `pull`'s settings, on `runtime`.
    pub fn new(store: Arc<Store>, pull: PullOptions, runtime: tokio::runtime::Handle) -> Self {
        Self {
            store,
            pull,
            runtime,
            resolved: Mutex::new(HashMap::new()),
        }
    }
}

impl ImageMetaResolver for StoreResolver {
    fn resolve(
        &self,
        reference: &str,
        platform: &pb::Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
        let platform = kiln_llb::Platform::from_pb(platform);
        let key = (reference.to_owned(), platform.to_string());
        let resolved = || self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(image) = resolved().get(&key) {
            return Ok(image.clone());
        }
        let options = self.pull.for_platform(&platform);
        let pulled = self.runtime.block_on(kiln_cache::pull(
            self.store.clone(),
            reference,
            &options,
            &(),
        ))?;
        let config = self.store.read_blob(&pulled.image.config)?;
        let image = ResolvedImage {
            // An image built here with its manifest pending has no manifest digest to pin
            // it by (and gets one later): it stays named by its tag.
            digest: if pulled.image.config_id {
                String::new()
            } else {
                pulled.image.manifest.to_string()
            },
            config,
        };
        resolved().insert(key, image.clone());
        Ok(image)
    }
}
