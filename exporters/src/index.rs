//! Multi-platform images: one image per platform, tied together by an image index (OCI) or
//! a manifest list (docker media types), as `buildx build --platform a,b` makes.
//!
//! The index names each platform's manifest with its `platform` (os, architecture, variant),
//! in the order the platforms were asked for; it is stored as a blob beside the manifests.

use kiln_cache::{Digest, Image, MEDIA_TYPE_OCI_INDEX, Store, canonical_json};
use kiln_llb::Platform;
use serde_json::json;

use crate::error::Error;

/// The docker media type of a manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Images for several platforms and the index naming them.
#[derive(Debug, Clone)]
pub struct ImageIndex {
    /// Each platform's image, in the order asked for.
    pub images: Vec<(Platform, Image)>,
    /// The index JSON.
    pub index: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// Its media type (OCI index or docker manifest list).
    pub media_type: String,
    /// The attestation manifests, each with the manifest digest of the image it describes,
    /// named by the index after the images (BuildKit's layout).
    pub attestations: Vec<(Digest, Image)>,
}

impl ImageIndex {
    /// The index of `images` (OCI media types, or docker's with `oci_mediatypes` false),
    /// written to the store as a blob.
    pub fn new(
        store: &Store,
        images: Vec<(Platform, Image)>,
        oci_mediatypes: bool,
    ) -> Result<Self, Error> {
        Self::with_attestations(store, images, Vec::new(), oci_mediatypes)
    }

    /// The index of `images` and of the attestation manifests about them (each with the
    /// manifest digest of its image): entries of platform `unknown/unknown` annotated with
    /// `vnd.docker.reference.digest` and `vnd.docker.reference.type=attestation-manifest`.
    pub fn with_attestations(
        store: &Store,
        images: Vec<(Platform, Image)>,
        attestations: Vec<(Digest, Image)>,
        oci_mediatypes: bool,
    ) -> Result<Self, Error> {
        let media_type = if oci_mediatypes {
            MEDIA_TYPE_OCI_INDEX
        } else {
            MEDIA_TYPE_DOCKER_MANIFEST_LIST
        };
        let mut manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|(platform, image)| {
                let mut described = json!({
                    "os": platform.os,
                    "architecture": platform.architecture,
                });
                if !platform.variant.is_empty() {
                    described["variant"] = json!(platform.variant);
                }
                json!({
                    "mediaType": image.manifest_media_type,
                    "digest": image.manifest_digest.to_string(),
                    "size": image.manifest.len(),
                    "platform": described,
                })
            })
            .collect();
        for (subject, attestation) in &attestations {
            manifests.push(json!({
                "mediaType": attestation.manifest_media_type,
                "digest": attestation.manifest_digest.to_string(),
                "size": attestation.manifest.len(),
                "annotations": {
                    crate::attestation::ANNOTATION_REFERENCE_DIGEST: subject.to_string(),
                    crate::attestation::ANNOTATION_REFERENCE_TYPE: "attestation-manifest",
                },
                "platform": { "architecture": "unknown", "os": "unknown" },
            }));
        }
        let index = canonical_json(
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type,
                "manifests": manifests,
            }),
            "image index",
        )?;
        let digest = Digest::from_bytes(&index);
        store.put_blob(&index, &digest, Some(media_type))?;
        for (_, image) in &images {
            // Every manifest and config is a blob of the store, found by the index's digests.
            store.put_blob(
                &image.manifest,
                &image.manifest_digest,
                Some(&image.manifest_media_type),
            )?;
            store.write_blob(&image.config, Some(&image.config_digest))?;
        }
        Ok(Self {
            images,
            index,
            digest,
            media_type: media_type.to_owned(),
            attestations,
        })
    }

    /// The multi-platform image a stored record belongs to (`kiln build --platform a,b -t`):
    /// its index blob and every platform's image it names, all in the store; `None` when the
    /// record has no index or the store lacks part of it (a pulled image keeps only its own
    /// platform's).
    pub fn stored(store: &Store, record: &kiln_cache::ImageRecord) -> Result<Option<Self>, Error> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            #[serde(default)]
            manifests: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            digest: Digest,
            platform: Option<Platform>,
        }
        let Some(digest) = record.index else {
            return Ok(None);
        };
        if !store.has_blob(&digest) {
            return Ok(None);
        }
        let bytes = store.read_blob(&digest)?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("image index {digest}"),
            source,
        })?;
        let records = store.images()?;
        let mut images = Vec::with_capacity(index.manifests.len());
        for entry in index.manifests {
            let (Some(platform), Some(found)) = (
                entry.platform,
                records.iter().find(|r| r.manifest == entry.digest),
            ) else {
                return Ok(None);
            };
            images.push((platform, crate::stored_image(store, found)?));
        }
        Ok(Some(Self {
            images,
            index: bytes,
            digest,
            media_type: index.media_type,
            attestations: Vec::new(),
        }))
    }

    /// The image of the platform this host runs best, else the first.
    pub fn host_image(&self) -> &Image {
        let host = Platform::host();
        let platforms: Vec<Platform> = self.images.iter().map(|(p, _)| p.clone()).collect();
        let best = host.best_match(&platforms).unwrap_or(0);
        &self.images[best].1
    }
}
