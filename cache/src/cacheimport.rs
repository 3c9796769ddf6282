//! Reading a cache export (`--cache-from`): the manifest that carries a
//! [`CacheConfig`](crate::cacheconfig::CacheConfig) and the descriptors of its blobs.
//!
//! A cache arrives in one of three forms, all read into one [`ImportedCache`]:
//!
//! - an OCI image manifest whose config is the cache config and whose layers are the blobs
//!   (BuildKit's default, `image-manifest=true`);
//! - an OCI index whose entries are the blobs and, last, the cache config
//!   (`image-manifest=false`);
//! - inline: base64 JSON of the records under `moby.buildkit.cache.v0` in an image config,
//!   with the image's own layers as the blobs.
//!
//! The registry and local-layout (`type=local,src=DIR,tag=…`) transports hand this module the
//! manifest bytes and a way to fetch the config; blobs are fetched later, one by one, only for
//! results that are really used. Everything here is untrusted input: sizes are capped, digests
//! and sizes are verified, and every blob the config names must have a descriptor.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::cacheconfig::{
    ANNOTATION_CREATED_AT, ANNOTATION_UNCOMPRESSED, CACHE_CONFIG_MEDIA_TYPE, CacheConfig,
    INLINE_CACHE_KEY,
};
use crate::error::Error;
use crate::image::{MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_OCI_CONFIG};
use kiln_llb::Digest;

/// The largest manifest or index read (BuildKit's registry client caps manifests alike).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest cache config read.
pub(crate) const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// The annotation naming a manifest's tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A cache graph and the descriptors of the blobs its layers name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCache {
    /// The records and layer chains.
    pub config: CacheConfig,
    /// Every blob the config names, with what its descriptor said.
    pub blobs: BTreeMap<Digest, CacheBlob>,
    /// Inline caches only: the image's layers, bottom first, which result indexes count into.
    pub image_layers: Vec<Digest>,
}

/// What a descriptor says about a cache blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheBlob {
    /// The blob's media type (a layer type).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The digest of its uncompressed tar, if the descriptor names it.
    pub diff_id: Option<Digest>,
    /// When BuildKit made it (RFC 3339), if the descriptor says.
    pub created_at: Option<String>,
}

/// An OCI descriptor, its fields in the order Go's image-spec types write them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidCacheImport {
        reason: reason.into(),
    }
}

impl Descriptor {
    fn size(&self) -> Result<u64, Error> {
        u64::try_from(self.size).map_err(|_| {
            invalid(format!(
                "descriptor of {} has size {}",
                self.digest, self.size
            ))
        })
    }

    fn blob(&self) -> Result<CacheBlob, Error> {
        let diff_id = match self.annotations.get(ANNOTATION_UNCOMPRESSED) {
            Some(text) => Some(text.parse().map_err(|_| {
                invalid(format!(
                    "descriptor of {} has an invalid {ANNOTATION_UNCOMPRESSED} annotation {text:?}",
                    self.digest
                ))
            })?),
            None => None,
        };
        Ok(CacheBlob {
            media_type: self.media_type.clone(),
            size: self.size()?,
            diff_id,
            created_at: self.annotations.get(ANNOTATION_CREATED_AT).cloned(),
        })
    }
}

/// Checks fetched bytes against their descriptor.
pub(crate) fn verify(what: &str, data: &[u8], digest: &Digest, size: u64) -> Result<(), Error> {
    let actual = data.len() as u64;
    if actual != size {
        return Err(Error::SizeMismatch {
            what: what.to_owned(),
            expected: size,
            actual,
        });
    }
    let computed = Digest::from_bytes(data);
    if computed != *digest {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: *digest,
            computed,
        });
    }
    Ok(())
}

impl ImportedCache {
    /// Reads a cache from the manifest (image manifest or index form) a ref points at;
    /// `fetch(digest, size)` returns a blob's bytes (verified here), for the config.
    pub fn from_manifest(
        manifest: &[u8],
        mut fetch: impl FnMut(&Digest, u64) -> Result<Vec<u8>, Error>,
    ) -> Result<Self, Error> {
        let parsed = parse_manifest(manifest)?;
        let (config, blobs) = config_of(&parsed)?;
        let size = config_size(config)?;
        let bytes = fetch(&config.digest, size)?;
        verify("cache config", &bytes, &config.digest, size)?;
        let config = CacheConfig::parse(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut described = BTreeMap::new();
        for descriptor in blobs {
            described.insert(descriptor.digest, descriptor.blob()?);
        }
        Self::new(config, described, Vec::new())
    }

    /// Reads an inline cache from an image config and the image's layer descriptors (JSON
    /// values of its manifest's `layers`); `None` when the config carries none.
    pub fn from_image_config(
        image_config: &[u8],
        layers: &[serde_json::Value],
    ) -> Result<Option<Self>, Error> {
        let value: serde_json::Value = serde_json::from_slice(image_config)
            .map_err(|e| invalid(format!("the image config is not valid JSON: {e}")))?;
        let Some(encoded) = value.get(INLINE_CACHE_KEY) else {
            return Ok(None);
        };
        let encoded = encoded
            .as_str()
            .ok_or_else(|| invalid(format!("{INLINE_CACHE_KEY} is not a string")))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| invalid(format!("{INLINE_CACHE_KEY} is not base64: {e}")))?;
        let config = CacheConfig::parse_inline(&decoded, layers.len())
            .map_err(|e| invalid(e.to_string()))?;
        // Image layer descriptors seldom name their diff IDs: the config's rootfs does.
        let diff_ids: Vec<Option<Digest>> = value
            .pointer("/rootfs/diff_ids")
            .and_then(serde_json::Value::as_array)
            .map(|ids| {
                ids.iter()
                    .map(|id| id.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        // Nor their times: the history's entries of layers do, in order.
        let times: Vec<Option<String>> = value
            .get("history")
            .and_then(serde_json::Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|h| {
                        h.get("empty_layer").and_then(serde_json::Value::as_bool) != Some(true)
                    })
                    .map(|h| h.get("created").and_then(|c| c.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut blobs = BTreeMap::new();
        let mut image_layers = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let descriptor = Descriptor::deserialize(layer)
                .map_err(|e| invalid(format!("an image layer descriptor: {e}")))?;
            image_layers.push(descriptor.digest);
            let mut blob = descriptor.blob()?;
            if blob.diff_id.is_none() {
                blob.diff_id = diff_ids.get(index).copied().flatten();
            }
            if blob.created_at.is_none() {
                blob.created_at = times.get(index).cloned().flatten();
            }
            blobs.insert(descriptor.digest, blob);
        }
        Self::new(config, blobs, image_layers).map(Some)
    }

    /// Reads an inline cache from an image manifest and its config (already verified against
    /// the manifest); `None` when the config carries none.
    pub(crate) fn from_image_manifest(
        manifest: &[u8],
        image_config: &[u8],
    ) -> Result<Option<Self>, Error> {
        let parsed = parse_manifest(manifest)?;
        let layers = parsed
            .layers
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("an image layer descriptor: {e}")))?;
        Self::from_image_config(image_config, &layers)
    }

    /// Reads the cache tagged `tag` from the OCI layout in `dir` (`--cache-from
    /// type=local,src=DIR`).
    pub fn from_local_layout(dir: &Path, tag: &str) -> Result<Self, Error> {
        let (digest, size) = tagged_entry(dir, tag)?;
        let manifest = read_layout_blob(dir, &digest, size)?;
        Self::from_manifest(&manifest, |digest, size| {
            read_layout_blob(dir, digest, size)
        })
    }

    /// The manifest the `index.json` of the OCI layout `dir` tags `tag` (what a client of a
    /// daemon tells it to import, as BuildKit's clients do).
    pub fn tagged_manifest(dir: &Path, tag: &str) -> Result<Digest, Error> {
        tagged_entry(dir, tag).map(|(digest, _)| digest)
    }

    /// Reads the cache of a `--cache-from type=local,src=DIR[,tag=TAG][,digest=DIGEST]`, as
    /// buildx resolves it: the manifest `digest` if given, else the entry tagged `tag`, else
    /// the only entry of the index. Any failure is an [`Error::CacheImport`].
    pub fn from_local(dir: &Path, tag: &str, digest: Option<&Digest>) -> Result<Self, Error> {
        let read = || -> Result<Self, Error> {
            let Some(digest) = digest else {
                return match Self::from_local_layout(dir, tag) {
                    Err(Error::InvalidCacheImport { reason }) => {
                        let index = read_index(dir)?;
                        match index.manifests.as_slice() {
                            [only] => Self::from_layout_manifest(dir, &only.digest),
                            _ => Err(Error::InvalidCacheImport { reason }),
                        }
                    }
                    other => other,
                };
            };
            Self::from_layout_manifest(dir, digest)
        };
        read().map_err(|source| Error::CacheImport {
            from: format!("{}:{tag}", dir.display()),
            source: Box::new(source),
        })
    }

    /// Reads the cache whose manifest is the blob `digest` of the OCI layout in `dir`.
    fn from_layout_manifest(dir: &Path, digest: &Digest) -> Result<Self, Error> {
        let path = layout_blob_path(dir, digest);
        let manifest = read_capped(&path, MAX_MANIFEST_BYTES)?;
        verify(
            &path.display().to_string(),
            &manifest,
            digest,
            manifest.len() as u64,
        )?;
        Self::from_manifest(&manifest, |digest, size| {
            read_layout_blob(dir, digest, size)
        })
    }

    /// The image layers, or [`CacheConfig::layers`], of the chain ending at layer `top` (an
    /// index from a record's results), base first.
    pub fn chain(&self, top: usize) -> Vec<Digest> {
        if self.image_layers.is_empty() {
            self.config.chain(top).iter().map(|l| l.blob).collect()
        } else {
            self.image_layers[..=top].to_vec()
        }
    }

    fn new(
        config: CacheConfig,
        blobs: BTreeMap<Digest, CacheBlob>,
        image_layers: Vec<Digest>,
    ) -> Result<Self, Error> {
        for layer in &config.layers {
            if !blobs.contains_key(&layer.blob) {
                return Err(invalid(format!(
                    "the cache config names blob {} that the manifest does not list",
                    layer.blob
                )));
            }
        }
        Ok(Self {
            config,
            blobs,
            image_layers,
        })
    }
}

/// The descriptor of the cache config a manifest (image manifest or index form) names:
/// what a transport fetches before [`ImportedCache::from_manifest`].
/// For an image manifest that is no cache manifest, its image config's descriptor instead
/// (the config may carry an inline cache), and `false`.
pub(crate) fn config_descriptor(manifest: &[u8]) -> Result<(Digest, u64, bool), Error> {
    let parsed = parse_manifest(manifest)?;
    match (config_of(&parsed), &parsed.config) {
        (Ok((config, _)), _) => Ok((config.digest, config_size(config)?, true)),
        (Err(_), Some(config)) if IMAGE_CONFIG_TYPES.contains(&config.media_type.as_str()) => {
            Ok((config.digest, config_size(config)?, false))
        }
        (Err(e), _) => Err(e),
    }
}

/// For an image index that is no cache index (an image pushed with its attestations, or for
/// several platforms), the digest and platform of each of its images, in order, whose config
/// may carry an inline cache (attestation manifests, `unknown/unknown`, left out); empty for
/// any other manifest.
pub(crate) fn platform_manifests(manifest: &[u8]) -> Vec<(Digest, kiln_llb::Platform)> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        digest: Digest,
        platform: Option<kiln_llb::Platform>,
    }
    let Ok(parsed) = parse_manifest(manifest) else {
        return Vec::new();
    };
    if parsed.manifests.is_empty() || config_of(&parsed).is_ok() {
        return Vec::new();
    }
    let Ok(index) = serde_json::from_slice::<Index>(manifest) else {
        return Vec::new();
    };
    index
        .manifests
        .into_iter()
        .map(|e| {
            let platform = e
                .platform
                .unwrap_or_else(|| kiln_llb::Platform::new("", "", ""));
            (e.digest, platform)
        })
        .filter(|(_, p)| p.os != "unknown")
        .collect()
}

/// The media types of an image config, which may carry an inline cache.
const IMAGE_CONFIG_TYPES: [&str; 2] = [MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG];

fn parse_manifest(manifest: &[u8]) -> Result<Manifest, Error> {
    if manifest.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "the manifest has {} bytes, more than {MAX_MANIFEST_BYTES}",
            manifest.len()
        )));
    }
    serde_json::from_slice(manifest)
        .map_err(|e| invalid(format!("the manifest is not valid JSON: {e}")))
}

/// The cache config descriptor and the blob descriptors: in the image manifest form the
/// config and the layers, in the index form the last entry and the others.
fn config_of(parsed: &Manifest) -> Result<(&Descriptor, &[Descriptor]), Error> {
    match (&parsed.config, parsed.manifests.split_last()) {
        (Some(config), _) if config.media_type == CACHE_CONFIG_MEDIA_TYPE => {
            Ok((config, parsed.layers.as_slice()))
        }
        (None, Some((last, rest))) if last.media_type == CACHE_CONFIG_MEDIA_TYPE => {
            Ok((last, rest))
        }
        _ => Err(invalid(format!(
            "{} is not a cache manifest (no {CACHE_CONFIG_MEDIA_TYPE} config)",
            parsed.media_type.as_deref().unwrap_or("the manifest")
        ))),
    }
}

fn config_size(config: &Descriptor) -> Result<u64, Error> {
    let size = config.size()?;
    if size > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "the cache config has {size} bytes, more than {MAX_CONFIG_BYTES}"
        )));
    }
    Ok(size)
}

/// The `index.json` of the OCI layout in `dir`.
fn read_index(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join("index.json");
    let index = read_capped(&path, MAX_MANIFEST_BYTES)?;
    serde_json::from_slice(&index)
        .map_err(|e| invalid(format!("{} is not valid JSON: {e}", path.display())))
}

/// Reads a whole file of at most `max` bytes.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let file = fs_err::File::open(path)?;
    let mut data = Vec::new();
    file.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(invalid(format!(
            "{} has more than {max} bytes",
            path.display()
        )));
    }
    Ok(data)
}

/// Reads and verifies the blob `digest` of the OCI layout in `dir`.
/// Where the OCI image layout in `dir` keeps the blob `digest`.
pub fn layout_blob_path(dir: &Path, digest: &Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// The digest and size of the manifest the `index.json` of the layout `dir` tags `tag`.
fn tagged_entry(dir: &Path, tag: &str) -> Result<(Digest, u64), Error> {
    let index = read_index(dir)?;
    let entry = index
        .manifests
        .iter()
        .find(|m| m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag))
        .ok_or_else(|| {
            invalid(format!(
                "{} has no cache tagged {tag:?}",
                dir.join("index.json").display()
            ))
        })?;
    Ok((entry.digest, entry.size()?))
}

fn read_layout_blob(dir: &Path, digest: &Digest, size: u64) -> Result<Vec<u8>, Error> {
    let path = layout_blob_path(dir, digest);
    let data = read_capped(&path, size)?;
    verify(&path.display().to_string(), &data, digest, size)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};

    #[test]
    fn an_image_index_with_attestations_gives_its_platform_manifests() {
        let (amd64, attestation) = (Digest::from_bytes(b"amd64"), Digest::from_bytes(b"att"));
        let arm64 = Digest::from_bytes(b"arm64");
        let index = serde_json::json!({
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                { "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": amd64.to_string(), "size": 1,
                  "platform": { "os": "linux", "architecture": "amd64" } },
                { "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": attestation.to_string(),
                  "size": 1, "platform": { "os": "unknown", "architecture": "unknown" } },
                { "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": arm64.to_string(), "size": 1,
                  "platform": { "os": "linux", "architecture": "arm64" } },
            ],
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        assert_eq!(
            platform_manifests(&bytes),
            [
                (amd64, kiln_llb::Platform::new("linux", "amd64", "")),
                (arm64, kiln_llb::Platform::new("linux", "arm64", "")),
            ]
        );
        // A cache index, or an image manifest, is read as it is.
        let manifest = serde_json::json!({ "mediaType": MEDIA_TYPE_OCI_MANIFEST, "layers": [] });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(platform_manifests(&bytes), []);
    }
}
