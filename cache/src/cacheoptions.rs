//! The `--cache-to` / `--cache-from` grammar, as `docker buildx build` reads it, into typed
//! requests: [`CacheExportRequest`] and [`CacheImportRequest`].
//!
//! # Overview
//! 1. [`CacheOptionsEntry::parse_all`] reads the flag values as buildx does: each value is one
//!    CSV record of `key=value` fields (quotes allowed), `type` picks the kind and every other
//!    key (lowercased) is an attribute; a value without any `=` is a list of references, each
//!    the short form of `type=registry,ref=REF`. Empty values are skipped and repeated entries
//!    kept once.
//! 2. [`CacheExportRequest::from_entry`] and [`CacheImportRequest::from_entry`] check the
//!    attributes as BuildKit's exporters and importers do, with their wording: `missing ref`,
//!    `local cache exporter requires dest`, `unsupported compression type zstd2`, …
//!
//! BuildKit ignores attributes it does not know and an invalid `mode` or `ignore-error` (it
//! logs them at debug level and exports in `min` mode); so does kiln, with a warning, so that
//! a command line written for buildx means the same here.
//!
//! These types live in kiln-cache because both sides use them: the solver (which depends on
//! kiln-cache but not on kiln-exporters) matches against imported caches, and the exporters
//! write exported ones. The transports are beside them: importing in this crate (it owns the
//! registry client that pulls), exporting in kiln-exporters (which owns pushing).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::diff::Compression;
use crate::registry::parse_reference;
use kiln_llb::Digest;

/// The tag of a local cache when `tag=` is not given.
pub const DEFAULT_LOCAL_TAG: &str = "latest";

/// One `--cache-to` / `--cache-from` value: a type and its attributes, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptionsEntry {
    /// The `type=` value (`registry`, `local`, `inline`, …).
    pub kind: String,
    /// Every other `key=value`, keys lowercased.
    pub attrs: BTreeMap<String, String>,
}

/// Why a cache option was refused. The messages are buildx's and BuildKit's.
#[derive(Debug, thiserror::Error)]
pub enum CacheOptionsError {
    /// The value is not one CSV record.
    #[error("invalid cache option {value:?}: {reason}")]
    Csv {
        /// The whole value.
        value: String,
        /// What the CSV reader reported.
        reason: String,
    },
    /// A field has no `=`.
    #[error("invalid value {field}")]
    InvalidField {
        /// The field.
        field: String,
    },
    /// No `type=` in a value that has attributes.
    #[error("type required for {value:?}")]
    TypeRequired {
        /// The whole value.
        value: String,
    },
    /// `--cache-to type=…` names no exporter kiln has.
    #[error("unknown cache exporter: {kind:?}")]
    UnknownExporter {
        /// The type.
        kind: String,
    },
    /// `--cache-from type=…` names no importer kiln has.
    #[error("unknown cache importer: {kind}")]
    UnknownImporter {
        /// The type.
        kind: String,
    },
    /// A registry cache without `ref=`.
    #[error("missing ref")]
    MissingRef,
    /// `ref=` is not an image reference.
    #[error("invalid reference {reference:?}")]
    InvalidReference {
        /// The value.
        reference: String,
        /// Why.
        #[source]
        source: Box<crate::Error>,
    },
    /// `type=local` export without `dest=`.
    #[error("local cache exporter requires dest")]
    LocalExportRequiresDest,
    /// `type=local` import without `src=`.
    #[error("local cache importer requires src")]
    LocalImportRequiresSrc,
    /// `digest=` is not a digest.
    #[error("invalid digest {digest}")]
    InvalidDigest {
        /// The value.
        digest: String,
        /// Why.
        #[source]
        source: kiln_llb::DigestError,
    },
    /// A boolean attribute is not one (Go's `strconv.ParseBool` spellings are accepted).
    #[error("failed to parse {attribute}: invalid syntax {value:?}")]
    InvalidBool {
        /// The attribute.
        attribute: &'static str,
        /// Its value.
        value: String,
    },
    /// `force-compression=` is not a boolean.
    #[error("non-bool value {value} specified for force-compression")]
    InvalidForceCompression {
        /// Its value.
        value: String,
    },
    /// `compression=` names no compression kiln writes.
    #[error("unsupported compression type {value}")]
    UnsupportedCompression {
        /// Its value.
        value: String,
    },
    /// `compression-level=` is not an integer.
    #[error("non-integer value {value} specified for compression-level")]
    InvalidCompressionLevel {
        /// Its value.
        value: String,
    },
    /// `compression-level=` is out of the compression's range.
    #[error("compression-level {level} is out of range for {compression} ({min} to {max})")]
    CompressionLevelOutOfRange {
        /// The level.
        level: i64,
        /// The compression.
        compression: &'static str,
        /// Its lowest level.
        min: i64,
        /// Its highest level.
        max: i64,
    },
    /// `image-manifest=true` with `oci-mediatypes=false`.
    #[error(
        "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format"
    )]
    ImageManifestRequiresOci,
}

/// Which results an export carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the final result's layers (and the whole cache key graph).
    #[default]
    Min,
    /// Every intermediate result's layers too.
    Max,
}

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheDestination {
    /// `type=registry,ref=REF`: a manifest pushed to a registry.
    Registry {
        /// The normalised reference (`docker.io/library/app:latest` for `app`).
        reference: String,
    },
    /// `type=local,dest=DIR[,tag=TAG]`: an OCI image layout.
    Local {
        /// The layout directory.
        dest: PathBuf,
        /// The tag of the manifest in its `index.json`.
        tag: String,
    },
    /// `type=inline`: the records in the exported image's config.
    Inline,
}

/// A checked `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExportRequest {
    /// Where the cache goes.
    pub destination: CacheDestination,
    /// `mode=` (default `min`).
    pub mode: CacheMode,
    /// `image-manifest=`: an OCI image manifest whose config is the cache config (the
    /// default), or an index listing the blobs and, last, the config.
    pub image_manifest: bool,
    /// `oci-mediatypes=` (default true): OCI media types, or docker ones.
    pub oci_mediatypes: bool,
    /// `compression=` and `compression-level=` for layers compressed for the export.
    pub compression: Compression,
    /// `force-compression=`: compress again layers stored with another compression.
    pub force_compression: bool,
    /// `ignore-error=`: a failed export warns instead of failing the build.
    pub ignore_error: bool,
}

/// A checked `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheImportRequest {
    /// `type=registry,ref=REF` or the short form `REF`: a cache manifest or an image with an
    /// inline cache.
    Registry {
        /// The normalised reference.
        reference: String,
    },
    /// `type=local,src=DIR[,tag=TAG][,digest=DIGEST]`: an OCI image layout.
    Local {
        /// The layout directory.
        src: PathBuf,
        /// The tag to look up in its `index.json` (default `latest`).
        tag: String,
        /// The manifest, when given instead of (or as well as) the tag.
        digest: Option<Digest>,
    },
}

impl CacheOptionsEntry {
    /// Reads one flag value (buildx's `CacheOptionsEntry.UnmarshalText`).
    pub fn parse(value: &str) -> Result<Self, CacheOptionsError> {
        let fields = csv_fields(value)?;
        if let [field] = fields.as_slice()
            && !field.contains('=')
        {
            return Ok(Self::registry(field));
        }
        let mut kind = String::new();
        let mut attrs = BTreeMap::new();
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(CacheOptionsError::InvalidField { field });
            };
            match key.to_lowercase().as_str() {
                "type" => kind = value.to_owned(),
                key => {
                    attrs.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        if kind.is_empty() {
            return Err(CacheOptionsError::TypeRequired {
                value: value.to_owned(),
            });
        }
        Ok(Self { kind, attrs })
    }

    /// Reads every value of a repeated flag (buildx's `ParseCacheEntry`, then its
    /// de-duplication): empty values skipped, a value without `=` a list of references.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Self>, CacheOptionsError> {
        let mut entries: Vec<Self> = Vec::new();
        for value in values.iter().map(AsRef::as_ref) {
            if value.is_empty() {
                continue;
            }
            let parsed = if value.contains('=') {
                vec![Self::parse(value)?]
            } else {
                csv_fields(value)?
                    .iter()
                    .map(|field| Self::parse(field))
                    .collect::<Result<_, _>>()?
            };
            for entry in parsed {
                if !entries.contains(&entry) {
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }

    fn registry(reference: &str) -> Self {
        Self {
            kind: "registry".to_owned(),
            attrs: BTreeMap::from([("ref".to_owned(), reference.to_owned())]),
        }
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }

    /// A boolean attribute, `default` when absent.
    fn bool(&self, attribute: &'static str, default: bool) -> Result<bool, CacheOptionsError> {
        match self.attr(attribute) {
            None => Ok(default),
            Some(value) => parse_bool(value).ok_or_else(|| CacheOptionsError::InvalidBool {
                attribute,
                value: value.to_owned(),
            }),
        }
    }

    fn reference(&self) -> Result<String, CacheOptionsError> {
        let reference = self.attr("ref").unwrap_or_default();
        if reference.is_empty() {
            return Err(CacheOptionsError::MissingRef);
        }
        parse_reference(reference)
            .map(|r| r.whole())
            .map_err(|source| CacheOptionsError::InvalidReference {
                reference: reference.to_owned(),
                source: Box::new(source),
            })
    }

    fn tag(&self) -> String {
        match self.attr("tag") {
            Some(tag) if !tag.is_empty() => tag.to_owned(),
            _ => DEFAULT_LOCAL_TAG.to_owned(),
        }
    }
}

impl CacheExportRequest {
    /// Checks a `--cache-to` entry.
    pub fn from_entry(entry: &CacheOptionsEntry) -> Result<Self, CacheOptionsError> {
        let destination = match entry.kind.as_str() {
            "registry" => CacheDestination::Registry {
                reference: entry.reference()?,
            },
            "local" => match entry.attr("dest") {
                Some(dest) if !dest.is_empty() => CacheDestination::Local {
                    dest: PathBuf::from(dest),
                    tag: entry.tag(),
                },
                _ => return Err(CacheOptionsError::LocalExportRequiresDest),
            },
            "inline" => CacheDestination::Inline,
            kind => {
                return Err(CacheOptionsError::UnknownExporter {
                    kind: kind.to_owned(),
                });
            }
        };
        let (compression, force_compression) = compression(entry)?;
        let oci_mediatypes = entry.bool("oci-mediatypes", true)?;
        let image_manifest = entry.bool("image-manifest", oci_mediatypes)?;
        if image_manifest && !oci_mediatypes {
            return Err(CacheOptionsError::ImageManifestRequiresOci);
        }
        let mode = match entry.attr("mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(other) => {
                tracing::warn!(mode = other, "ignoring an invalid cache export mode");
                CacheMode::Min
            }
        };
        let ignore_error = match entry.attr("ignore-error").map(|v| (v, parse_bool(v))) {
            None => false,
            Some((_, Some(value))) => value,
            Some((value, None)) => {
                tracing::warn!(value, "ignoring an invalid cache export ignore-error");
                false
            }
        };
        Ok(Self {
            destination,
            mode,
            image_manifest,
            oci_mediatypes,
            compression,
            force_compression,
            ignore_error,
        })
    }

    /// Reads and checks every `--cache-to` value.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Self>, CacheOptionsError> {
        CacheOptionsEntry::parse_all(values)?
            .iter()
            .map(Self::from_entry)
            .collect()
    }
}

impl CacheImportRequest {
    /// Checks a `--cache-from` entry.
    pub fn from_entry(entry: &CacheOptionsEntry) -> Result<Self, CacheOptionsError> {
        match entry.kind.as_str() {
            "registry" => Ok(Self::Registry {
                reference: entry.reference()?,
            }),
            "local" => {
                let src = match entry.attr("src") {
                    Some(src) if !src.is_empty() => PathBuf::from(src),
                    _ => return Err(CacheOptionsError::LocalImportRequiresSrc),
                };
                let digest = match entry.attr("digest") {
                    Some(digest) if !digest.is_empty() => Some(digest.parse().map_err(
                        |source| CacheOptionsError::InvalidDigest {
                            digest: digest.to_owned(),
                            source,
                        },
                    )?),
                    _ => None,
                };
                Ok(Self::Local {
                    src,
                    tag: entry.tag(),
                    digest,
                })
            }
            kind => Err(CacheOptionsError::UnknownImporter {
                kind: kind.to_owned(),
            }),
        }
    }

    /// Reads and checks every `--cache-from` value.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<Vec<Self>, CacheOptionsError> {
        CacheOptionsEntry::parse_all(values)?
            .iter()
            .map(Self::from_entry)
            .collect()
    }

    /// How the source is named in messages: the reference or the directory.
    pub fn describe(&self) -> String {
        match self {
            Self::Registry { reference } => reference.clone(),
            Self::Local { src, tag, .. } => format!("{}:{tag}", src.display()),
        }
    }
}

/// The fields of one CSV record.
fn csv_fields(value: &str) -> Result<Vec<String>, CacheOptionsError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(value.as_bytes());
    let mut record = csv::StringRecord::new();
    let read = reader
        .read_record(&mut record)
        .map_err(|e| CacheOptionsError::Csv {
            value: value.to_owned(),
            reason: e.to_string(),
        })?;
    if !read {
        return Ok(Vec::new());
    }
    if reader.read_record(&mut csv::StringRecord::new()).ok() == Some(true) {
        return Err(CacheOptionsError::Csv {
            value: value.to_owned(),
            reason: "more than one line".to_owned(),
        });
    }
    Ok(record.iter().map(str::to_owned).collect())
}

/// Go's `strconv.ParseBool`: the spellings of true and false BuildKit's options accept.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `compression=`, `compression-level=`, `force-compression=` (BuildKit's
/// `compression.ParseAttributes`), levels checked against what the compressors take.
fn compression(entry: &CacheOptionsEntry) -> Result<(Compression, bool), CacheOptionsError> {
    let level =
        match entry.attr("compression-level") {
            None => None,
            Some(value) => Some(value.parse::<i64>().map_err(|_| {
                CacheOptionsError::InvalidCompressionLevel {
                    value: value.to_owned(),
                }
            })?),
        };
    let in_range = |compression, min, max| match level {
        None => Ok(None),
        Some(level) if (min..=max).contains(&level) => Ok(Some(level)),
        Some(level) => Err(CacheOptionsError::CompressionLevelOutOfRange {
            level,
            compression,
            min,
            max,
        }),
    };
    let compression = match entry.attr("compression") {
        None | Some("gzip") => Compression::Gzip {
            level: in_range("gzip", 0, 9)?.map_or(6, |l| l as u32),
        },
        Some("zstd") => Compression::Zstd {
            level: in_range("zstd", 1, 22)?.map_or(3, |l| l as i32),
        },
        Some("uncompressed") => Compression::Uncompressed,
        Some(other) => {
            return Err(CacheOptionsError::UnsupportedCompression {
                value: other.to_owned(),
            });
        }
    };
    let force = match entry.attr("force-compression") {
        None => false,
        Some("") => true,
        Some(value) => {
            parse_bool(value).ok_or_else(|| CacheOptionsError::InvalidForceCompression {
                value: value.to_owned(),
            })?
        }
    };
    Ok((compression, force))
}
