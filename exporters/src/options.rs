//! The `--output` grammar (docker buildx's) and `-t`/`--push`: which exporters a build runs.
//!
//! `type=local|tar|oci|docker|image|registry` with `dest`, `name`, `push`, `compression`,
//! `compression-level`, `force-compression`, `oci-mediatypes`, `rewrite-timestamp`, `store`,
//! `tar`; a bare `DIR` (or `-`) is `type=local,dest=DIR`. Options are checked as BuildKit
//! checks them, with its wording.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_cache::Compression;

/// Why an `--output` (or `-t`/`--push`) request is refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A comma-separated part without `=`.
    #[error("invalid output option {part:?}: expected KEY=VALUE")]
    NotKeyValue {
        /// The part.
        part: String,
    },
    /// No `type=`.
    #[error("output {output:?} has no type=...")]
    NoType {
        /// The whole output.
        output: String,
    },
    /// A file or directory output without `dest=`.
    #[error("output {output:?}: type={kind} needs dest={what}")]
    NoDest {
        /// The whole output.
        output: String,
        /// Its type.
        kind: String,
        /// What the destination is (`DIR`, `FILE`).
        what: &'static str,
    },
    /// An image output without `name=`.
    #[error("output {output:?}: type={kind} needs name=REF")]
    NoName {
        /// The whole output.
        output: String,
        /// Its type.
        kind: String,
    },
    /// A boolean option with another value.
    #[error("invalid value {value:?} for {key}: expected true or false")]
    NotABoolean {
        /// The option.
        key: String,
        /// Its value.
        value: String,
    },
    /// `compression-level` that is not a number.
    #[error("invalid compression-level {value:?}: expected a number")]
    BadLevel {
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: std::num::ParseIntError,
    },
    /// A gzip level outside Go's range (-1 to 9).
    #[error("gzip: invalid compression level: {level}")]
    GzipLevel {
        /// The level.
        level: i32,
    },
    /// A compression kiln does not know.
    #[error("unknown compression {compression:?}: expected gzip, zstd or uncompressed")]
    UnknownCompression {
        /// The compression.
        compression: String,
    },
    /// zstd layers with docker media types.
    #[error("exporter option \"compression=zstd\" conflicts with \"oci-mediatypes=false\"")]
    ZstdWithDockerTypes,
    /// An option the output type does not take.
    #[error("unknown option {key:?} for output type {kind:?}")]
    UnknownOption {
        /// The option.
        key: String,
        /// The output type.
        kind: String,
    },
    /// `store=` on an output that is not `type=image`.
    #[error("output {output:?}: store=... applies to type=image only")]
    StoreNotImage {
        /// The whole output.
        output: String,
    },
    /// `store=false` without `push=true`.
    #[error("output {output:?}: store=false without push=true exports nothing")]
    ExportsNothing {
        /// The whole output.
        output: String,
    },
    /// An output type kiln does not have.
    #[error("output type {kind:?} is not supported")]
    UnsupportedType {
        /// The type.
        kind: String,
    },
    /// `--push` without `-t`.
    #[error("--push needs an image name: pass -t NAME")]
    PushWithoutName,
}

/// What an image-producing output writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// OCI image layout: a tar file, or a directory with `tar=false`.
    Oci {
        /// A tar file (`tar=true`, the default) or a directory.
        tar: bool,
    },
    /// docker-archive tar (`type=docker,tar=false` is an OCI layout directory: `Oci`).
    Docker,
    /// The local image store (`type=image`, `-t`).
    Store,
}

/// Image options shared by the image-producing outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// `compression` and `compression-level`: how the build's layers are compressed.
    pub compression: Compression,
    /// `force-compression`: convert stored layers (a base image's) to `compression` too.
    pub force_compression: bool,
    /// `store`: keep the image in the store (`type=image`; `false` with `push=true` only
    /// pushes it).
    pub store: bool,
    /// `oci-mediatypes`: OCI media types (`false`: docker's; the default of `type=docker`).
    pub oci_mediatypes: bool,
    /// `rewrite-timestamp`: the build's layers get `SOURCE_DATE_EPOCH` as their times.
    pub rewrite_timestamp: bool,
    /// `name` (`;`-separated) or `-t`: the image's names.
    pub names: Vec<String>,
    /// `push`: push the image to the registry of each name.
    pub push: bool,
}

impl Default for ImageSettings {
    /// gzip (level 6), OCI media types, stored, nothing else: the settings of `-t NAME`.
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            force_compression: false,
            store: true,
            oci_mediatypes: true,
            rewrite_timestamp: false,
            names: Vec::new(),
            push: false,
        }
    }
}

/// An `--output` request.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// The result's file system into a directory.
    Local {
        /// The directory (made if missing).
        dest: PathBuf,
    },
    /// The result's file system as one tar file.
    Tar {
        /// The tar file.
        dest: PathBuf,
    },
    /// An image.
    Image {
        /// What is written.
        format: ImageFormat,
        /// The file or directory of `type=oci` and `type=docker`.
        dest: Option<PathBuf>,
        /// The image options.
        settings: ImageSettings,
    },
}

fn boolean(key: &str, value: &str) -> Result<bool, OutputError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(OutputError::NotABoolean {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Splits one `--output` value into its type and its other fields, unchecked (a bare `DIR` is
/// `type=local,dest=DIR`): what a client sends a daemon as an exporter and its attributes.
pub fn output_fields(text: &str) -> Result<(&str, BTreeMap<&str, &str>), OutputError> {
    if !text.contains('=') {
        return Ok(("local", BTreeMap::from([("dest", text)])));
    }
    let mut fields = BTreeMap::new();
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| OutputError::NotKeyValue {
                part: part.to_owned(),
            })?;
        fields.insert(k.trim(), v.trim());
    }
    let kind = fields.remove("type").ok_or_else(|| OutputError::NoType {
        output: text.to_owned(),
    })?;
    Ok((kind, fields))
}

/// Parses docker buildx's `--output` syntax (`type=oci,dest=out.tar,compression=zstd`, or a
/// bare `DIR`).
pub fn parse_output(text: &str) -> Result<Output, OutputError> {
    let (kind, mut fields) = output_fields(text)?;
    let dest = fields.remove("dest").map(PathBuf::from);
    let need_dest = |dest: Option<PathBuf>, what: &'static str| {
        dest.ok_or_else(|| OutputError::NoDest {
            output: text.to_owned(),
            kind: kind.to_owned(),
            what,
        })
    };
    let mut compression = "gzip";
    let mut level = None;
    let mut oci_mediatypes = None;
    let mut store = None;
    let mut settings = ImageSettings::default();
    let mut tar = true;
    for (key, value) in fields {
        match key {
            "compression" => compression = value,
            "compression-level" => {
                level = Some(
                    value
                        .parse::<i32>()
                        .map_err(|source| OutputError::BadLevel {
                            value: value.to_owned(),
                            source,
                        })?,
                );
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
            _ => {
                return Err(OutputError::UnknownOption {
                    key: key.to_owned(),
                    kind: kind.to_owned(),
                });
            }
        }
    }
    settings.compression = match compression {
        // Go's gzip levels: -1 is the default, 0 to 9 the others (BuildKit's wording).
        "gzip" => Compression::Gzip {
            level: match level {
                None | Some(-1) => 6,
                Some(l @ 0..=9) => l.unsigned_abs(),
                Some(level) => return Err(OutputError::GzipLevel { level }),
            },
        },
        // Any level, brought into zstd's range, as BuildKit maps it.
        "zstd" => Compression::Zstd {
            level: level.map_or(3, |l| l.clamp(1, 22)),
        },
        "uncompressed" => Compression::Uncompressed,
        other => {
            return Err(OutputError::UnknownCompression {
                compression: other.to_owned(),
            });
        }
    };
    settings.oci_mediatypes = oci_mediatypes.unwrap_or(kind != "docker");
    // Docker's media types have no zstd layer (type=docker defaults to them).
    if !settings.oci_mediatypes && compression == "zstd" {
        return Err(OutputError::ZstdWithDockerTypes);
    }
    if let Some(store) = store {
        if !matches!(kind, "image" | "registry") {
            return Err(OutputError::StoreNotImage {
                output: text.to_owned(),
            });
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
            dest: Some(need_dest(dest, if tar { "FILE" } else { "DIR" })?),
            settings,
        }),
        // As BuildKit's: `tar=false` writes the image (docker's media types by default) as
        // an OCI layout directory, as `type=oci,tar=false` does.
        "docker" if !tar => Ok(Output::Image {
            format: ImageFormat::Oci { tar },
            dest: Some(need_dest(dest, "DIR")?),
            settings,
        }),
        "docker" => Ok(Output::Image {
            format: ImageFormat::Docker,
            dest: Some(need_dest(dest, "FILE")?),
            settings,
        }),
        "image" | "registry" => {
            if settings.names.is_empty() {
                return Err(OutputError::NoName {
                    output: text.to_owned(),
                    kind: kind.to_owned(),
                });
            }
            settings.push |= kind == "registry";
            if !settings.store && !settings.push {
                return Err(OutputError::ExportsNothing {
                    output: text.to_owned(),
                });
            }
            Ok(Output::Image {
                format: ImageFormat::Store,
                dest: None,
                settings,
            })
        }
        other => Err(OutputError::UnsupportedType {
            kind: other.to_owned(),
        }),
    }
}

/// The outputs of `--output` plus `-t NAME` (an image in the store) and `--push`.
pub fn outputs_from_args(
    outputs: &[String],
    tags: &[String],
    push: bool,
) -> Result<Vec<Output>, OutputError> {
    let mut parsed = outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>, _>>()?;
    if !tags.is_empty() {
        parsed.push(Output::Image {
            format: ImageFormat::Store,
            dest: None,
            settings: ImageSettings {
                names: tags.to_vec(),
                push,
                ..ImageSettings::default()
            },
        });
    } else if push {
        return Err(OutputError::PushWithoutName);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            parse_output("type=local,dest=out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        assert_eq!(
            parse_output("out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        let err = parse_output("type=local").unwrap_err().to_string();
        assert!(err.contains("needs dest=DIR"), "{err}");
        let err = parse_output("type=carrier-pigeon,dest=x")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "output type \"carrier-pigeon\" is not supported");
        let Output::Image {
            format, settings, ..
        } = parse_output("type=oci,dest=x,tar=false,compression=zstd,compression-level=9").unwrap()
        else {
            panic!("not an image output");
        };
        assert_eq!(format, ImageFormat::Oci { tar: false });
        assert_eq!(settings.compression, Compression::Zstd { level: 9 });
        assert!(settings.oci_mediatypes);
        let Output::Image { settings, .. } = parse_output("type=docker,dest=x").unwrap() else {
            panic!("not an image output");
        };
        assert!(!settings.oci_mediatypes);
        assert_eq!(settings.compression, Compression::Gzip { level: 6 });
        // A docker image as a layout directory: OCI's layout, docker's media types.
        let Output::Image {
            format, settings, ..
        } = parse_output("type=docker,dest=x,tar=false").unwrap()
        else {
            panic!("not an image output");
        };
        assert_eq!(format, ImageFormat::Oci { tar: false });
        assert!(!settings.oci_mediatypes);
        let err = parse_output("type=docker,tar=false")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs dest=DIR"), "{err}");
        let err = parse_output("type=image").unwrap_err().to_string();
        assert!(err.contains("needs name=REF"), "{err}");
        let err = parse_output("type=oci,dest=x,compression=lz4")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown compression \"lz4\""), "{err}");
    }

    fn settings(text: &str) -> ImageSettings {
        match parse_output(text).unwrap() {
            Output::Image { settings, .. } => settings,
            other => panic!("not an image output: {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        parse_output(text).unwrap_err().to_string()
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
