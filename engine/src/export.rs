//! Writes a solved result to the outputs of one build.

use std::sync::Arc;

use kiln_cache::Store;
use kiln_exporters::{ExportContext, ExportResponse, ImageFormat, Output, PlatformResult};
use kiln_solver::Ref;

use crate::error::Error;

/// `SOURCE_DATE_EPOCH`, if set.
fn source_date_epoch() -> Result<Option<i64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => match text.parse() {
            Ok(seconds) => Ok(Some(seconds)),
            Err(source) => Err(Error::SourceDateEpoch {
                value: text,
                source,
            }),
        },
        _ => Ok(None),
    }
}

/// The time of this build (the same for every output, so they describe one image).
fn build_time() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Whether `output` reads the result's files or layer bytes: all do but a push that does
/// not keep the image runnable here, which mounts or downloads each lazy layer itself.
fn reads_bytes(output: &Output) -> bool {
    match output {
        Output::Image {
            format: ImageFormat::Store,
            dest: None,
            settings,
        } => !settings.push || settings.force_compression,
        Output::Image { .. } | Output::Local { .. } | Output::Tar { .. } => true,
    }
}

/// Downloads and unpacks the lazy layers (cache hits, base images: see
/// [`kiln_cache::realize`]) of `results` that `outputs` read. An image pushed with `--push`
/// keeps them lazy: a push to the registry they came from downloads nothing.
pub async fn realize_results(
    store: &Arc<Store>,
    results: &[&Ref],
    outputs: &[Output],
    pull: &kiln_cache::PullOptions,
) -> Result<(), Error> {
    if !outputs.iter().any(reads_bytes) {
        return Ok(());
    }
    for key in results.iter().filter_map(|r| r.key()) {
        kiln_cache::realize(store, key, pull)
            .await
            .map_err(|e| Error::Export(e.into()))?;
    }
    Ok(())
}

/// Writes `result` to each output, with the frontend's image `config` (none for an LLB
/// build) and the registry settings of kiln's configuration (for a push); answers what each
/// output made, in order. With `inline_cache`, the image config carries the cache of those
/// build keys (`--cache-to type=inline`).
pub fn export(
    store: &Store,
    result: &Ref,
    outputs: &[Output],
    config: Option<&kiln_frontend::ImageConfig>,
    registry: &kiln_cache::Config,
    inline_cache: Option<&kiln_cache::BuildKeys>,
) -> Result<Vec<ExportResponse>, Error> {
    if outputs.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = config
        .map(serde_json::to_value)
        .transpose()
        .map_err(Error::ImageConfig)?;
    if let (Some(keys), Some(config)) = (inline_cache, config.as_mut()) {
        crate::cache::add_inline_cache(store, keys, config)?;
    }
    let context = context(outputs, registry, inline_cache.is_none())?;
    outputs
        .iter()
        .map(|output| {
            output
                .resolve(&context)
                .export(store, result.key(), config.as_ref())
                .map_err(Error::Export)
        })
        .collect()
}

/// What the outputs of one build share; `pending` allows an image stored only under its
/// names to keep its manifest pending.
fn context(
    outputs: &[Output],
    registry: &kiln_cache::Config,
    pending: bool,
) -> Result<ExportContext, Error> {
    Ok(ExportContext {
        registry: registry.clone(),
        docker_config: kiln_cache::docker_config_path(),
        // Read only by the outputs that use it (a local export keeps the files' own times).
        source_date_epoch: if outputs.iter().all(|o| matches!(o, Output::Local { .. })) {
            None
        } else {
            source_date_epoch()?
        },
        build_time: Some(build_time()),
        // `-t` alone makes no compressed blob; any output or inline cache that needs the
        // blobs makes all of them, so every output names one image.
        pending_manifest: pending
            && outputs.iter().all(|o| match o {
                Output::Image {
                    format: ImageFormat::Store,
                    dest: None,
                    settings,
                } => !settings.push,
                Output::Image { .. } => false,
                Output::Local { .. } | Output::Tar { .. } => true,
            }),
    })
}

/// Writes one result per platform (`--platform a,b`) to each output: images as an index of
/// one image per platform, files in a folder per platform; answers what each output made.
pub fn export_platforms(
    store: &Store,
    results: &[(kiln_llb::Platform, Ref, Option<kiln_frontend::ImageConfig>)],
    outputs: &[Output],
    registry: &kiln_cache::Config,
) -> Result<Vec<ExportResponse>, Error> {
    if outputs.is_empty() {
        return Ok(Vec::new());
    }
    let configs = results
        .iter()
        .map(|(_, _, config)| config.as_ref().map(serde_json::to_value).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::ImageConfig)?;
    let platform_results: Vec<PlatformResult<'_>> = results
        .iter()
        .zip(&configs)
        .map(|((platform, result, _), config)| PlatformResult {
            platform,
            snapshot: result.key(),
            config: config.as_ref(),
        })
        .collect();
    // An index names manifests: every image output makes its blobs.
    let context = context(outputs, registry, false)?;
    outputs
        .iter()
        .map(|output| {
            output
                .resolve(&context)
                .export_platforms(store, &platform_results)
                .map_err(Error::Export)
        })
        .collect()
}
