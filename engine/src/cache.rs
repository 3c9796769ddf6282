//! The remote cache of a build: `--cache-from` opened before it, `--cache-to` written after.
//!
//! Imports never fail a build: a cache that cannot be read is reported and left out, as in
//! BuildKit. An export that fails fails the build unless its `ignore-error=true`.

use std::sync::Arc;

use kiln_cache::{
    BuildKeys, CacheDestination, CacheExportRequest, CacheImportRequest, CacheManifestForm,
    CacheSource, LayerOptions, PullOptions, Store,
};
use kiln_exporters::ExistingLayers;

use crate::error::Error;

/// The caches of `requests` that could be read, in order, and why the others could not.
pub async fn open_cache_imports(
    requests: &[CacheImportRequest],
    pull: &PullOptions,
) -> (Vec<Arc<CacheSource>>, Vec<kiln_cache::Error>) {
    let opened = futures::future::join_all(
        requests
            .iter()
            .map(|request| CacheSource::open(request, pull)),
    )
    .await;
    let mut sources = Vec::new();
    let mut failures = Vec::new();
    for result in opened {
        match result {
            Ok(opened) => sources.extend(opened.into_iter().map(Arc::new)),
            Err(error) => failures.push(error),
        }
    }
    (sources, failures)
}

/// Whether `request` puts the cache into the image config (`type=inline`).
pub fn is_inline(request: &CacheExportRequest) -> bool {
    request.destination == CacheDestination::Inline
}

/// Adds the inline cache of `keys` to the image `config` (JSON) of a build whose result is
/// exported as an image.
pub fn add_inline_cache(
    store: &Store,
    keys: &BuildKeys,
    config: &mut serde_json::Value,
) -> Result<(), Error> {
    let cache = kiln_exporters::inline_cache_config(store, keys).map_err(Error::CacheExport)?;
    if let serde_json::Value::Object(map) = config {
        map.insert(
            kiln_cache::cacheconfig::INLINE_CACHE_KEY.to_owned(),
            kiln_cache::inline_cache_value(&cache).into(),
        );
    }
    Ok(())
}

/// Writes the cache of `keys` where `request` says (registry or local layout; an inline
/// request is written with the image instead, see [`add_inline_cache`]).
pub async fn export_cache(
    store: &Arc<Store>,
    keys: &BuildKeys,
    request: &CacheExportRequest,
    pull: &PullOptions,
) -> Result<(), Error> {
    let options = LayerOptions {
        compression: request.compression,
        source_date_epoch: None,
        threads: 0,
    };
    let existing = match request.force_compression {
        true => ExistingLayers::Recompress,
        false => ExistingLayers::Reuse,
    };
    if request.force_compression && matches!(request.destination, CacheDestination::Registry { .. })
    {
        // The lazy layers in another compression are converted: their blobs are read, not
        // their files (a local layout downloads every lazy result below anyway).
        let snapshots = kiln_exporters::cache_snapshots(store, keys, request.mode)
            .map_err(Error::CacheExport)?;
        kiln_cache::fetch_to_convert(store, &snapshots, request.compression.media_type(), pull)
            .await
            .map_err(|e| Error::CacheExport(e.into()))?;
    }
    let graph = kiln_exporters::cache_graph(store, keys, request.mode, &options, existing)
        .map_err(Error::CacheExport)?;
    let form = match request.image_manifest {
        true => CacheManifestForm::ImageManifest,
        false => CacheManifestForm::Index {
            oci: request.oci_mediatypes,
        },
    };
    let manifest = kiln_cache::cache_manifest(&graph.config, &graph.blobs, form)
        .map_err(|e| Error::CacheExport(e.into()))?;
    match &request.destination {
        CacheDestination::Registry { reference } => {
            kiln_exporters::push_cache(
                store,
                &manifest,
                reference,
                &pull.config,
                &pull.credentials,
            )
            .await
            .map_err(Error::CacheExport)?;
        }
        CacheDestination::Local { dest, tag } => {
            // The layout gets the blobs' bytes: lazy results are downloaded first.
            let snapshots: Vec<String> = keys
                .nodes
                .iter()
                .filter_map(|n| n.outputs.clone())
                .flatten()
                .flatten()
                .collect();
            for snapshot in &snapshots {
                if store
                    .is_lazy(snapshot)
                    .map_err(|e| Error::CacheExport(e.into()))?
                {
                    kiln_cache::realize(store, snapshot, pull)
                        .await
                        .map_err(|e| Error::CacheExport(e.into()))?;
                }
            }
            kiln_exporters::write_cache_layout(store, dest, tag, &manifest)
                .map_err(Error::CacheExport)?;
        }
        CacheDestination::Inline => {}
    }
    Ok(())
}
