//! Writing a cache export (`--cache-to`): the manifest or index that carries a
//! [`CacheConfig`] and the descriptors of its blobs, and the inline image config value.
//!
//! These are pure functions of the graph and the blob descriptors; the transports (registry
//! push, local OCI layout) write the bytes they return. The JSON is what BuildKit's
//! `remotecache.contentCacheExporter.Finalize` writes: Go's image-spec field order
//! (`schemaVersion`, `mediaType`, `config`, `layers` / `manifests`; each descriptor
//! `mediaType`, `digest`, `size`, `annotations` with sorted keys), the layers in the order of
//! [`CacheConfig::layers`], each annotated with `containerd.io/uncompressed` and
//! `buildkit/createdat` when known. Go's encoder also escapes `<`, `>` and `&` in strings;
//! nothing kiln writes here (digests, media types, RFC 3339 times) contains them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use crate::cacheconfig::{
    ANNOTATION_CREATED_AT, ANNOTATION_UNCOMPRESSED, CACHE_CONFIG_MEDIA_TYPE, CacheConfig,
};
use crate::cacheimport::{CacheBlob, Descriptor};
use crate::error::Error;
use crate::image::{
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, docker_layer_type, oci_layer_type,
};
use kiln_llb::Digest;

/// Docker manifest list media type.
const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// How the cache config and blobs are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheManifestForm {
    /// An OCI image manifest whose config is the cache config (`image-manifest=true`).
    ImageManifest,
    /// An index listing the blobs and, last, the cache config (`image-manifest=false`), with
    /// OCI or (`oci` false) docker media types.
    Index {
        /// OCI media types.
        oci: bool,
    },
}

/// A cache export ready to write: the manifest and the config blob it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheManifest {
    /// The manifest or index JSON.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Its media type.
    pub media_type: &'static str,
    /// The cache config JSON.
    pub config: Vec<u8>,
    /// Its digest.
    pub config_digest: Digest,
    /// The layer blobs, in manifest order.
    pub layers: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

fn size(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The descriptor of a blob as BuildKit writes it in a cache manifest.
fn blob_descriptor(digest: Digest, blob: &CacheBlob, oci: bool) -> Descriptor {
    let mut annotations = BTreeMap::new();
    if let Some(created_at) = &blob.created_at {
        annotations.insert(ANNOTATION_CREATED_AT.to_owned(), created_at.clone());
    }
    if let Some(diff_id) = &blob.diff_id {
        annotations.insert(ANNOTATION_UNCOMPRESSED.to_owned(), diff_id.to_string());
    }
    let oci_type = oci_layer_type(Some(&blob.media_type));
    Descriptor {
        media_type: if oci {
            oci_type
        } else {
            docker_layer_type(oci_type)
        }
        .to_owned(),
        digest,
        size: size(blob.size),
        annotations,
    }
}

/// The manifest (or index) of the cache `config`, whose every layer blob must be described in
/// `blobs`.
pub fn cache_manifest(
    config: &CacheConfig,
    blobs: &BTreeMap<Digest, CacheBlob>,
    form: CacheManifestForm,
) -> Result<CacheManifest, Error> {
    let oci = match form {
        CacheManifestForm::ImageManifest => true,
        CacheManifestForm::Index { oci } => oci,
    };
    let mut layers = Vec::with_capacity(config.layers.len());
    for layer in &config.layers {
        let blob = blobs
            .get(&layer.blob)
            .ok_or(Error::CacheBlobMissing { digest: layer.blob })?;
        layers.push(blob_descriptor(layer.blob, blob, oci));
    }
    let config_bytes = config.to_json();
    let config_digest = Digest::from_bytes(&config_bytes);
    let config_descriptor = Descriptor {
        media_type: CACHE_CONFIG_MEDIA_TYPE.to_owned(),
        digest: config_digest,
        size: size(config_bytes.len() as u64),
        annotations: BTreeMap::new(),
    };
    let layer_digests = layers.iter().map(|d| d.digest).collect();
    let (manifest, media_type) = match form {
        CacheManifestForm::ImageManifest => (
            serde_json::to_vec(&ImageManifest {
                schema_version: 2,
                media_type: MEDIA_TYPE_OCI_MANIFEST,
                config: config_descriptor,
                layers,
            }),
            MEDIA_TYPE_OCI_MANIFEST,
        ),
        CacheManifestForm::Index { oci } => {
            let media_type = if oci {
                MEDIA_TYPE_OCI_INDEX
            } else {
                MEDIA_TYPE_DOCKER_MANIFEST_LIST
            };
            layers.push(config_descriptor);
            (
                serde_json::to_vec(&Index {
                    schema_version: 2,
                    media_type,
                    manifests: layers,
                }),
                media_type,
            )
        }
    };
    let manifest = manifest.map_err(|e| Error::json("cache manifest", e))?;
    Ok(CacheManifest {
        manifest_digest: Digest::from_bytes(&manifest),
        manifest,
        media_type,
        config: config_bytes,
        config_digest,
        layers: layer_digests,
    })
}

/// The value of the `moby.buildkit.cache.v0` image config key for an inline cache: base64
/// of the bare records array, whose result layer indexes count into the image's layers.
pub fn inline_cache_value(config: &CacheConfig) -> String {
    base64::engine::general_purpose::STANDARD.encode(config.inline_json())
}
