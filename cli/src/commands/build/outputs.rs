//! Runs the exporters of `--output` and `-t` (parsed by `kiln_exporters::outputs_from_args`).

use std::path::Path;

use anyhow::Context as _;
use kiln_cache::{LayerOptions, Store};
use kiln_exporters::{Image, ImageFormat, ImageOptions, ImageSettings, Output};
use kiln_solver::Ref;

/// `SOURCE_DATE_EPOCH`, if set.
fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => Ok(Some(text.parse().with_context(|| {
            format!("invalid SOURCE_DATE_EPOCH {text:?}: expected seconds since 1970")
        })?)),
        _ => Ok(None),
    }
}

/// Pushes `image` to the registry of each name.
fn push(
    store: &Store,
    image: &Image,
    names: &[String],
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let registry = crate::commands::pull::load_config(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    for name in names {
        let digest = runtime.block_on(kiln_exporters::push(
            store,
            image,
            name,
            &registry,
            kiln_cache::docker_config_path().as_deref(),
        ))?;
        tracing::info!(image = %name, manifest = %digest, "pushed");
    }
    Ok(())
}

/// The time of this build (the same for every output, so they describe one image).
fn build_time() -> i64 {
    static TIME: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *TIME.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    })
}

/// Builds the image of `result`.
fn image(
    store: &Store,
    result: &Ref,
    config: Option<&kiln_frontend::ImageConfig>,
    settings: &ImageSettings,
    epoch: Option<i64>,
) -> anyhow::Result<Image> {
    let keys = match result.key() {
        Some(key) => kiln_exporters::snapshot_chain(store, key)?,
        None => Vec::new(),
    };
    let layer_options = LayerOptions {
        compression: settings.compression,
        source_date_epoch: epoch.filter(|_| settings.rewrite_timestamp),
        threads: 0,
    };
    let existing = if settings.force_compression {
        kiln_exporters::ExistingLayers::Recompress
    } else {
        kiln_exporters::ExistingLayers::Reuse
    };
    let layers = kiln_exporters::chain_layers(store, &keys, &layer_options, existing)
        .context("writing the image layers")?;
    let options = ImageOptions {
        oci_mediatypes: settings.oci_mediatypes,
        source_date_epoch: epoch,
        build_time: Some(build_time()),
        base_histories: kiln_exporters::base_histories(store, &keys)
            .context("reading the base image's history")?,
    };
    Ok(match config {
        Some(config) => {
            let json = serde_json::to_value(config).context("serialising the image config")?;
            kiln_exporters::build_image_from_json(layers, &json, &options)?
        }
        None => kiln_exporters::build_image(layers, None, &options)?,
    })
}

/// A buffered export file that appears under `dest` only once finished (see
/// [`kiln_exporters::OutputFile`]).
fn create(
    store: &Store,
    dest: &Path,
) -> anyhow::Result<std::io::BufWriter<kiln_exporters::OutputFile>> {
    Ok(std::io::BufWriter::new(kiln_exporters::OutputFile::create(
        store, dest,
    )?))
}

/// Writes the result to one output, with the frontend's image config (none for `--llb`).
pub(super) fn export(
    store: &Store,
    result: &Ref,
    output: &Output,
    config: Option<&kiln_frontend::ImageConfig>,
    kiln_config: Option<&Path>,
) -> anyhow::Result<()> {
    match output {
        Output::Local { dest } => Ok(kiln_exporters::export_local(store, result.key(), dest)?),
        Output::Tar { dest } => {
            let out = kiln_exporters::export_tar(
                store,
                result.key(),
                source_date_epoch()?,
                create(store, dest)?,
            )
            .with_context(|| format!("writing {}", dest.display()))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", dest.display()))?
                .finish()
                .with_context(|| format!("writing {}", dest.display()))?;
            Ok(())
        }
        Output::Image {
            format,
            dest,
            settings,
        } => {
            let epoch = source_date_epoch()?;
            let image = image(store, result, config, settings, epoch)?;
            let mtime = epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0);
            let names = settings
                .names
                .iter()
                .map(|n| kiln_cache::normalize_name(n))
                .collect::<Result<Vec<_>, _>>()?;
            match (format, dest) {
                (ImageFormat::Oci { tar: true }, Some(dest)) => {
                    let out = kiln_exporters::write_oci_tar(
                        store,
                        &image,
                        names.first().map(String::as_str),
                        create(store, dest)?,
                        mtime,
                    )?;
                    out.into_inner().map_err(|e| e.into_error())?.finish()?;
                }
                (ImageFormat::Oci { tar: false }, Some(dest)) => {
                    kiln_exporters::write_oci_dir(
                        store,
                        &image,
                        names.first().map(String::as_str),
                        dest,
                    )?;
                }
                (ImageFormat::Docker, Some(dest)) => {
                    let out = kiln_exporters::write_docker_tar(
                        store,
                        &image,
                        &names,
                        create(store, dest)?,
                        mtime,
                    )?;
                    out.into_inner().map_err(|e| e.into_error())?.finish()?;
                }
                _ => {}
            }
            if *format == ImageFormat::Store && settings.store {
                for name in &names {
                    store
                        .store_image(&image, name)
                        .with_context(|| format!("storing the image {name}"))?;
                }
            }
            if settings.push {
                push(store, &image, &names, kiln_config)?;
            }
            tracing::info!(manifest = %image.manifest_digest, "exported the image");
            Ok(())
        }
    }
}
