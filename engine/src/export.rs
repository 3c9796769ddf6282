//! Writes a solved result to the outputs of one build.

use std::sync::Arc;

use kiln_cache::Store;
use kiln_exporters::{
    Attestations, ExportContext, ExportResponse, ImageFormat, Output, PlatformResult,
};
use kiln_llb::pb;
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
        } => !settings.push,
        Output::Image { .. } | Output::Local { .. } | Output::Tar { .. } => true,
    }
}

/// The layer media type a push that converts layers (`force-compression=true`) wants, when
/// `output` is one that reads no bytes otherwise.
fn converts_to(output: &Output) -> Option<&'static str> {
    match output {
        Output::Image { settings, .. } if !reads_bytes(output) && settings.force_compression => {
            Some(settings.compression.media_type())
        }
        _ => None,
    }
}

/// Downloads and unpacks the lazy layers (cache hits, base images: see
/// [`kiln_cache::realize`]) of `results` that `outputs` read, or that an SBOM (`sbom`)
/// scans. An image pushed with `--push` keeps them lazy: a push to the registry they came
/// from downloads nothing, or, with `force-compression=true`, only the blobs of the lazy
/// layers it converts to its compression.
pub async fn realize_results(
    store: &Arc<Store>,
    results: &[&Ref],
    outputs: &[Output],
    sbom: bool,
    pull: &kiln_cache::PullOptions,
) -> Result<(), Error> {
    let keys: Vec<String> = results
        .iter()
        .filter_map(|r| r.key())
        .map(str::to_owned)
        .collect();
    if !sbom && !outputs.iter().any(reads_bytes) {
        // A push that converts layers reads the blobs of the lazy ones in another
        // compression, and leaves the others lazy.
        for media_type in outputs.iter().filter_map(converts_to) {
            kiln_cache::fetch_to_convert(store, &keys, media_type, pull)
                .await
                .map_err(|e| Error::Export(e.into()))?;
        }
        return Ok(());
    }
    for key in &keys {
        kiln_cache::realize(store, key, pull)
            .await
            .map_err(|e| Error::Export(e.into()))?;
    }
    Ok(())
}

/// Writes `result` to each output, with the frontend's image `config` (none for an LLB
/// build) and the registry settings and credentials of `pull` (for a push); answers what each
/// output made, in order. With `inline_cache`, the image config carries the cache of those
/// build keys (`--cache-to type=inline`). With `attestations`, an output that takes them
/// (an OCI layout, a push) gets an image index of the one image and its attestation manifest,
/// as buildx makes; `definition` is the LLB the result was solved from, for its provenance.
#[expect(
    clippy::too_many_arguments,
    reason = "one build's export, wired from two callers"
)]
pub fn export(
    store: &Store,
    result: &Ref,
    outputs: &[Output],
    config: Option<&kiln_frontend::ImageConfig>,
    pull: &kiln_cache::PullOptions,
    inline_cache: Option<&kiln_cache::BuildKeys>,
    attestations: Attestations,
    definition: Option<&pb::Definition>,
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
    let context = context(outputs, pull, inline_cache.is_none(), attestations)?;
    // The platform of the image: its config's, else the host's.
    let platform = config
        .as_ref()
        .and_then(|c| serde_json::from_value::<kiln_llb::Platform>(c.clone()).ok())
        .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
        .unwrap_or_else(kiln_llb::Platform::host);
    outputs
        .iter()
        .map(|output| {
            let exporter = output.resolve(&context);
            match output {
                Output::Image {
                    format, settings, ..
                } if exporter.attests(*format, settings) => exporter.export_platforms(
                    store,
                    &[PlatformResult {
                        platform: &platform,
                        snapshot: result.key(),
                        config: config.as_ref(),
                        definition,
                    }],
                ),
                _ => exporter.export(store, result.key(), config.as_ref()),
            }
            .map_err(Error::Export)
        })
        .collect()
}

/// What the outputs of one build share; `pending` allows an image stored only under its
/// names to keep its manifest pending.
fn context(
    outputs: &[Output],
    pull: &kiln_cache::PullOptions,
    pending: bool,
    attestations: Attestations,
) -> Result<ExportContext, Error> {
    Ok(ExportContext {
        registry: pull.config.clone(),
        credentials: std::sync::Arc::clone(&pull.credentials),
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
        attestations,
        phases: kiln_exporters::PhaseLog::default(),
    })
}

/// Writes one result per platform (`--platform a,b`) to each output: images as an index of
/// one image per platform, files in a folder per platform; answers what each output made.
/// `definitions` are the LLB of each result, in order, for their provenance. Each image config
/// carries the inline cache of the build keys of its own platform's result, `inline_caches[i]`
/// for `results[i]` (`--cache-to type=inline`, as BuildKit embeds one per platform; empty for
/// none).
pub fn export_platforms_inline(
    store: &Store,
    results: &[(kiln_llb::Platform, Ref, Option<kiln_frontend::ImageConfig>)],
    outputs: &[Output],
    pull: &kiln_cache::PullOptions,
    attestations: Attestations,
    definitions: &[Option<&pb::Definition>],
    inline_caches: &[Option<&kiln_cache::BuildKeys>],
) -> Result<Vec<ExportResponse>, Error> {
    if outputs.is_empty() {
        return Ok(Vec::new());
    }
    let mut configs = results
        .iter()
        .map(|(_, _, config)| config.as_ref().map(serde_json::to_value).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::ImageConfig)?;
    for (config, keys) in configs.iter_mut().zip(inline_caches) {
        if let (Some(config), Some(keys)) = (config.as_mut(), keys) {
            crate::cache::add_inline_cache(store, keys, config)?;
        }
    }
    let platform_results: Vec<PlatformResult<'_>> = results
        .iter()
        .zip(&configs)
        .enumerate()
        .map(
            |(position, ((platform, result, _), config))| PlatformResult {
                platform,
                snapshot: result.key(),
                config: config.as_ref(),
                definition: definitions.get(position).copied().flatten(),
            },
        )
        .collect();
    // An index names manifests: every image output makes its blobs.
    let context = context(outputs, pull, false, attestations)?;
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
