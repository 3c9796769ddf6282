//! `--output` and `-t`: where a build's result goes (docker buildx syntax).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kiln_cache::{Compression, LayerOptions, Store};
use kiln_exporters::{Image, ImageOptions};
use kiln_solver::Ref;

/// What an image-producing output writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImageFormat {
    /// OCI image layout: a tar file, or a directory with `tar=false`.
    Oci { tar: bool },
    /// docker-archive tar.
    Docker,
    /// The local image store (`type=image`, `-t`).
    Store,
}

/// Image options shared by the image-producing outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImageSettings {
    pub(super) compression: Compression,
    /// `force-compression`: convert stored layers (a base image's) to `compression` too.
    pub(super) force_compression: bool,
    /// `store`: keep the image in the store (`type=image`; `false` with `push=true` only
    /// pushes it).
    pub(super) store: bool,
    pub(super) oci_mediatypes: bool,
    pub(super) rewrite_timestamp: bool,
    pub(super) names: Vec<String>,
    pub(super) push: bool,
}

/// An `--output` request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Output {
    /// The result's file system into a directory.
    Local { dest: PathBuf },
    /// The result's file system as one tar file.
    Tar { dest: PathBuf },
    /// An image.
    Image {
        format: ImageFormat,
        dest: Option<PathBuf>,
        settings: ImageSettings,
    },
}

fn boolean(key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("invalid value {value:?} for {key}: expected true or false"),
    }
}

/// Parses docker buildx's `--output` syntax (`type=oci,dest=out.tar,compression=zstd`, or a
/// bare `DIR`).
pub(super) fn parse(text: &str) -> anyhow::Result<Output> {
    if !text.contains('=') {
        return Ok(Output::Local { dest: text.into() });
    }
    let mut fields = HashMap::new();
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid output option {part:?}: expected KEY=VALUE"))?;
        fields.insert(k.trim(), v.trim());
    }
    let kind = fields
        .remove("type")
        .with_context(|| format!("output {text:?} has no type=..."))?;
    let dest = fields.remove("dest").map(PathBuf::from);
    let need_dest = |dest: Option<PathBuf>, what: &str| {
        dest.with_context(|| format!("output {text:?}: type={kind} needs dest={what}"))
    };
    let mut compression = "gzip";
    let mut level = None;
    let mut oci_mediatypes = None;
    let mut store = None;
    let mut settings = ImageSettings {
        compression: Compression::default(),
        force_compression: false,
        store: true,
        oci_mediatypes: true,
        rewrite_timestamp: false,
        names: Vec::new(),
        push: false,
    };
    let mut tar = true;
    for (key, value) in fields {
        match key {
            "compression" => compression = value,
            "compression-level" => {
                level = Some(value.parse::<i32>().with_context(|| {
                    format!("invalid compression-level {value:?}: expected a number")
                })?);
            }
            "oci-mediatypes" => oci_mediatypes = Some(boolean(key, value)?),
            "rewrite-timestamp" => settings.rewrite_timestamp = boolean(key, value)?,
            "tar" => tar = boolean(key, value)?,
            "name" => settings.names.extend(value.split(';').map(str::to_owned)),
            "push" => settings.push = boolean(key, value)?,
            // An empty value turns it on, as in BuildKit.
            "force-compression" => {
                settings.force_compression = value.is_empty() || boolean(key, value)?;
            }
            "store" => store = Some(boolean(key, value)?),
            _ => bail!("unknown option {key:?} for output type {kind:?}"),
        }
    }
    settings.compression = match compression {
        // Go's gzip levels: -1 is the default, 0 to 9 the others (BuildKit's wording).
        "gzip" => Compression::Gzip {
            level: match level {
                None | Some(-1) => 6,
                Some(l @ 0..=9) => l.unsigned_abs(),
                Some(l) => bail!("gzip: invalid compression level: {l}"),
            },
        },
        // Any level, brought into zstd's range, as BuildKit maps it.
        "zstd" => Compression::Zstd {
            level: level.map_or(3, |l| l.clamp(1, 22)),
        },
        "uncompressed" => Compression::Uncompressed,
        other => bail!("unknown compression {other:?}: expected gzip, zstd or uncompressed"),
    };
    settings.oci_mediatypes = oci_mediatypes.unwrap_or(kind != "docker");
    // Docker's media types have no zstd layer (type=docker defaults to them).
    if !settings.oci_mediatypes && compression == "zstd" {
        bail!("exporter option \"compression=zstd\" conflicts with \"oci-mediatypes=false\"");
    }
    if let Some(store) = store {
        if !matches!(kind, "image" | "registry") {
            bail!("output {text:?}: store=... applies to type=image only");
        }
        settings.store = store;
    }
    match kind {
        "local" => Ok(Output::Local {
            dest: need_dest(dest, "DIR")?,
        }),
        "tar" => Ok(Output::Tar {
            dest: need_dest(dest, "FILE")?,
        }),
        "oci" => Ok(Output::Image {
            format: ImageFormat::Oci { tar },
            dest: Some(need_dest(dest, "FILE")?),
            settings,
        }),
        "docker" => Ok(Output::Image {
            format: ImageFormat::Docker,
            dest: Some(need_dest(dest, "FILE")?),
            settings,
        }),
        "image" | "registry" => {
            if settings.names.is_empty() {
                bail!("output {text:?}: type={kind} needs name=REF");
            }
            settings.push |= kind == "registry";
            if !settings.store && !settings.push {
                bail!("output {text:?}: store=false without push=true exports nothing");
            }
            Ok(Output::Image {
                format: ImageFormat::Store,
                dest: None,
                settings,
            })
        }
        other => bail!("output type {other:?} is not supported"),
    }
}

/// The outputs of `--output` plus `-t NAME` (an image in the store) and `--push`.
pub(super) fn from_args(
    outputs: &[String],
    tags: &[String],
    push: bool,
) -> anyhow::Result<Vec<Output>> {
    let mut parsed = outputs
        .iter()
        .map(|o| parse(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !tags.is_empty() {
        parsed.push(Output::Image {
            format: ImageFormat::Store,
            dest: None,
            settings: ImageSettings {
                compression: Compression::default(),
                force_compression: false,
                store: true,
                oci_mediatypes: true,
                rewrite_timestamp: false,
                names: tags.to_vec(),
                push,
            },
        });
    } else if push {
        bail!("--push needs an image name: pass -t NAME");
    }
    Ok(parsed)
}

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
    registry: &kiln_cache::Config,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    for name in names {
        let digest = runtime.block_on(kiln_exporters::push(
            store,
            image,
            name,
            registry,
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
    registry: &kiln_cache::Config,
) -> anyhow::Result<()> {
    match output {
        Output::Local { dest } => kiln_solver::export_local(store, result, dest)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("exporting to {}", dest.display())),
        Output::Tar { dest } => {
            let out =
                kiln_solver::export_tar(store, result, source_date_epoch()?, create(store, dest)?)
                    .map_err(|e| anyhow::anyhow!(e))
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
                push(store, &image, &names, registry)?;
            }
            tracing::info!(manifest = %image.manifest_digest, "exported the image");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            parse("type=local,dest=out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        assert_eq!(parse("out").unwrap(), Output::Local { dest: "out".into() });
        let err = parse("type=local").unwrap_err().to_string();
        assert!(err.contains("needs dest=DIR"), "{err}");
        let err = parse("type=carrier-pigeon,dest=x").unwrap_err().to_string();
        assert_eq!(err, "output type \"carrier-pigeon\" is not supported");
        let Output::Image {
            format, settings, ..
        } = parse("type=oci,dest=x,tar=false,compression=zstd,compression-level=9").unwrap()
        else {
            panic!("not an image output");
        };
        assert_eq!(format, ImageFormat::Oci { tar: false });
        assert_eq!(settings.compression, Compression::Zstd { level: 9 });
        assert!(settings.oci_mediatypes);
        let Output::Image { settings, .. } = parse("type=docker,dest=x").unwrap() else {
            panic!("not an image output");
        };
        assert!(!settings.oci_mediatypes);
        assert_eq!(settings.compression, Compression::Gzip { level: 6 });
        let err = parse("type=image").unwrap_err().to_string();
        assert!(err.contains("needs name=REF"), "{err}");
        let err = parse("type=oci,dest=x,compression=lz4")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown compression \"lz4\""), "{err}");
    }

    fn settings(text: &str) -> ImageSettings {
        match parse(text).unwrap() {
            Output::Image { settings, .. } => settings,
            other => panic!("not an image output: {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn compression_options_are_checked_as_buildkit_checks_them() {
        assert!(!settings("type=oci,dest=x").force_compression);
        assert!(settings("type=oci,dest=x,force-compression=true").force_compression);
        assert!(settings("type=oci,dest=x,force-compression=").force_compression);
        assert!(!settings("type=oci,dest=x,force-compression=false").force_compression);
        assert_eq!(
            error("type=oci,dest=x,force-compression=maybe"),
            "invalid value \"maybe\" for force-compression: expected true or false"
        );
        // gzip takes Go's levels; out of range is an error, not a quiet clamp.
        assert_eq!(
            settings("type=oci,dest=x,compression-level=-1").compression,
            Compression::Gzip { level: 6 }
        );
        assert_eq!(
            settings("type=oci,dest=x,compression-level=0").compression,
            Compression::Gzip { level: 0 }
        );
        assert_eq!(
            error("type=oci,dest=x,compression-level=10"),
            "gzip: invalid compression level: 10"
        );
        // zstd maps any level into its range, as BuildKit.
        assert_eq!(
            settings("type=oci,dest=x,compression=zstd,compression-level=99").compression,
            Compression::Zstd { level: 22 }
        );
        // Docker media types have no zstd layers.
        assert_eq!(
            error("type=docker,dest=x,compression=zstd"),
            "exporter option \"compression=zstd\" conflicts with \"oci-mediatypes=false\""
        );
        assert_eq!(
            error("type=oci,dest=x,compression=zstd,oci-mediatypes=false"),
            "exporter option \"compression=zstd\" conflicts with \"oci-mediatypes=false\""
        );
        let docker_oci = settings("type=docker,dest=x,compression=zstd,oci-mediatypes=true");
        assert!(docker_oci.oci_mediatypes);
    }

    #[test]
    fn store_applies_to_image_outputs() {
        assert!(settings("type=image,name=a").store);
        let pushed = settings("type=image,name=a,store=false,push=true");
        assert!(!pushed.store && pushed.push);
        assert_eq!(
            error("type=image,name=a,store=false"),
            "output \"type=image,name=a,store=false\": store=false without push=true exports nothing"
        );
        assert_eq!(
            error("type=oci,dest=x,store=true"),
            "output \"type=oci,dest=x,store=true\": store=... applies to type=image only"
        );
    }
}
