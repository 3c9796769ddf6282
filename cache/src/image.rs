//! Images in the store: what one is made of ([`Image`], [`Layer`]), its manifest
//! ([`assemble`]), and the records that name images ([`Store::store_image`],
//! [`Store::find_image`], [`Store::tag_image`], [`Store::stored_image`]).
//!
//! A stored image is its manifest and config blobs, its layer blobs, the committed snapshots
//! named by its layers' chain IDs (what `FROM name` and `kiln run name` use) and an
//! [`ImageRecord`] under its normalised name. A layer made by a build step shares that step's
//! snapshot files through hard links (the `link` module) instead of being unpacked again.

use kiln_llb::Digest;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use crate::diff::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};
use crate::error::Error;
use crate::link::link_snapshot;
use crate::registry::parse_reference;
use crate::snapshot::chain_id;
use crate::store::{ImageRecord, PendingManifest, Store, now};

/// OCI image manifest media type.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest (schema 2) media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// One layer of an image: a blob in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the (possibly compressed) blob.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The OCI media type (`application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]`).
    pub media_type: String,
    /// The committed snapshot that holds this layer's content (in overlay form, on the
    /// snapshot of the layer below), when the layer came from one: storing the image reuses
    /// it instead of unpacking the blob again.
    pub snapshot: Option<String>,
    /// The `SOURCE_DATE_EPOCH` the blob's mtimes were clamped to when it was written from
    /// [`Layer::snapshot`]: where the snapshot holds later times, the blob differs from it, and
    /// storing the image gives those entries the clamped times too.
    pub source_date_epoch: Option<i64>,
}

/// One layer of an image stored with its manifest pending ([`Store::store_pending_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLayer {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The blob, when the layer has one already (a base image's).
    pub blob: Option<Digest>,
    /// The committed snapshot that holds this layer's content (see [`Layer::snapshot`]).
    pub snapshot: Option<String>,
    /// The `SOURCE_DATE_EPOCH` the diff ID was computed with (see
    /// [`Layer::source_date_epoch`]).
    pub source_date_epoch: Option<i64>,
}

/// An assembled image: manifest and config bytes plus the layer blobs they name.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Its media type.
    pub manifest_media_type: String,
    /// The config JSON.
    pub config: Vec<u8>,
    /// Its digest.
    pub config_digest: Digest,
    /// The layers, bottom first, with the media types the manifest names.
    pub layers: Vec<Layer>,
    /// The config's `created` time, if any.
    pub created: Option<String>,
}

/// The OCI media type of a layer blob stored under `media_type` (docker names mapped).
pub fn oci_layer_type(media_type: Option<&str>) -> &'static str {
    match media_type {
        Some(t) if t.ends_with("zstd") => MEDIA_TYPE_LAYER_ZSTD,
        Some(t) if t.ends_with(".tar") || t.ends_with("tar.v1") => MEDIA_TYPE_LAYER_TAR,
        _ => MEDIA_TYPE_LAYER_GZIP,
    }
}

/// The docker media type of an OCI layer media type.
pub(crate) fn docker_layer_type(oci: &str) -> &'static str {
    match oci {
        MEDIA_TYPE_LAYER_TAR => "application/vnd.docker.image.rootfs.diff.tar",
        MEDIA_TYPE_LAYER_ZSTD => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        _ => "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
}

/// Serialises with object keys sorted, so the bytes do not depend on map iteration order
/// (equal documents get equal digests). `what` names the document in errors.
pub fn canonical_json(value: &impl serde::Serialize, what: &str) -> Result<Vec<u8>, Error> {
    fn sort(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let value = serde_json::to_value(value).map_err(|e| Error::json(what, e))?;
    serde_json::to_vec(&sort(value)).map_err(|e| Error::json(what, e))
}

/// Assembles the image of `layers` with `config` (already finished, or raw bytes).
pub fn assemble(config: &[u8], layers: Vec<Layer>, oci_mediatypes: bool) -> Result<Image, Error> {
    let config_digest = Digest::from_bytes(config);
    let (manifest_type, config_type) = if oci_mediatypes {
        (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG)
    } else {
        (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG)
    };
    let digest = |d: &Digest| -> Result<oci_spec::image::Digest, Error> {
        d.to_string().parse().map_err(Error::spec("digest"))
    };
    let layer_descriptors = layers
        .iter()
        .map(|layer| {
            let media_type = if oci_mediatypes {
                layer.media_type.as_str()
            } else {
                docker_layer_type(&layer.media_type)
            };
            DescriptorBuilder::default()
                .media_type(MediaType::from(media_type))
                .size(layer.size)
                .digest(digest(&layer.digest)?)
                .build()
                .map_err(Error::spec("layer descriptor"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(manifest_type))
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::from(config_type))
                .size(config.len() as u64)
                .digest(digest(&config_digest)?)
                .build()
                .map_err(Error::spec("config descriptor"))?,
        )
        .layers(layer_descriptors)
        .build()
        .map_err(Error::spec("manifest"))?;
    let manifest = canonical_json(&manifest, "the manifest")?;
    let created = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v.get("created")?.as_str().map(str::to_owned));
    Ok(Image {
        manifest_digest: Digest::from_bytes(&manifest),
        manifest,
        manifest_media_type: manifest_type.to_owned(),
        config: config.to_vec(),
        config_digest,
        layers,
        created,
    })
}

/// The normalised form of an image name (`busybox` is `docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String, Error> {
    Ok(parse_reference(name)?.whole())
}

/// The parts of a manifest [`Store::stored_image`] reads.
#[derive(Deserialize)]
pub(crate) struct ManifestDoc {
    #[serde(rename = "mediaType")]
    pub(crate) media_type: Option<String>,
    pub(crate) config: DescriptorDoc,
    pub(crate) layers: Vec<DescriptorDoc>,
}

/// A descriptor in a manifest.
#[derive(Deserialize)]
pub(crate) struct DescriptorDoc {
    #[serde(rename = "mediaType")]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
}

impl Store {
    /// Stores `image` under `name` (normalised): writes its manifest and config as blobs,
    /// makes the snapshots of its layers' chain IDs so `FROM name` and `kiln run name` find
    /// them, and records it. A layer whose [`Layer::snapshot`] holds its content (a build
    /// step's) shares that snapshot's files through hard links; any other layer is unpacked
    /// from its blob.
    pub fn store_image(&self, image: &Image, name: &str) -> Result<ImageRecord, Error> {
        self.store_image_in(image, None, name)
    }

    /// Stores `image`, one platform's image of the multi-platform image whose index blob is
    /// `index`, under `name` as [`Store::store_image`] does; the record keeps the index, so
    /// a push of the name sends every platform's image.
    pub fn store_image_of_index(
        &self,
        image: &Image,
        index: &Digest,
        name: &str,
    ) -> Result<ImageRecord, Error> {
        self.store_image_in(image, Some(*index), name)
    }

    fn store_image_in(
        &self,
        image: &Image,
        index: Option<Digest>,
        name: &str,
    ) -> Result<ImageRecord, Error> {
        let name = normalize_name(name)?;
        self.store_config(&image.config, &image.config_digest)?;
        let layers: Vec<PendingLayer> = image
            .layers
            .iter()
            .map(|l| PendingLayer {
                diff_id: l.diff_id,
                blob: Some(l.digest),
                snapshot: l.snapshot.clone(),
                source_date_epoch: l.source_date_epoch,
            })
            .collect();
        let (chain, size) = self.store_layers(&layers)?;
        self.put_blob(
            &image.manifest,
            &image.manifest_digest,
            Some(&image.manifest_media_type),
        )?;
        let record = ImageRecord {
            name,
            manifest: image.manifest_digest,
            manifest_media_type: image.manifest_media_type.clone(),
            index,
            config: image.config_digest,
            layers: image.layers.iter().map(|l| l.digest).collect(),
            diff_ids: image.layers.iter().map(|l| l.diff_id).collect(),
            chain_id: chain,
            size,
            created: image.created.clone(),
            last_used: now(),
            pending: None,
            config_id: false,
        };
        self.put_image(&record)?;
        tracing::info!(image = %record.name, manifest = %record.manifest, "stored the image");
        Ok(record)
    }

    /// Stores the image of `config` and `layers` under `name` (normalised) with its manifest
    /// pending: the config blob, the chain-ID snapshots of the layers (shared with the build's
    /// as [`Store::store_image`] does) and a record whose ID is the config digest. No layer
    /// blob is written; [`Store::complete_image`] records the manifest once one is made.
    pub fn store_pending_image(
        &self,
        config: &[u8],
        layers: &[PendingLayer],
        pending: PendingManifest,
        name: &str,
    ) -> Result<ImageRecord, Error> {
        let name = normalize_name(name)?;
        let config_digest = Digest::from_bytes(config);
        self.store_config(config, &config_digest)?;
        let (chain, size) = self.store_layers(layers)?;
        let created = serde_json::from_slice::<serde_json::Value>(config)
            .ok()
            .and_then(|v| v.get("created")?.as_str().map(str::to_owned));
        let record = ImageRecord {
            name,
            manifest: config_digest,
            manifest_media_type: if pending.oci_mediatypes {
                MEDIA_TYPE_OCI_MANIFEST
            } else {
                MEDIA_TYPE_DOCKER_MANIFEST
            }
            .to_owned(),
            index: None,
            config: config_digest,
            layers: layers.iter().filter_map(|l| l.blob).collect(),
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
            chain_id: chain,
            size,
            created,
            last_used: now(),
            pending: Some(pending),
            config_id: true,
        };
        self.put_image(&record)?;
        tracing::info!(image = %record.name, config = %record.config, "stored the image, its manifest pending");
        Ok(record)
    }

    /// Records the manifest made for the pending image `image` (its layer blobs written
    /// already) in every record of the same config whose manifest is pending. Answers the
    /// updated record of `record`'s name.
    pub fn complete_image(
        &self,
        record: &ImageRecord,
        image: &Image,
    ) -> Result<ImageRecord, Error> {
        self.put_blob(
            &image.manifest,
            &image.manifest_digest,
            Some(&image.manifest_media_type),
        )?;
        let mut updated = record.clone();
        for mut other in self.images()? {
            if other.config != record.config || other.pending != record.pending {
                continue;
            }
            other.manifest = image.manifest_digest;
            other
                .manifest_media_type
                .clone_from(&image.manifest_media_type);
            other.layers = image.layers.iter().map(|l| l.digest).collect();
            other.pending = None;
            self.put_image(&other)?;
            if other.name == record.name {
                updated = other;
            }
        }
        Ok(updated)
    }

    /// Writes and records an image's config blob.
    fn store_config(&self, config: &[u8], digest: &Digest) -> Result<(), Error> {
        self.put_blob(config, digest, Some(MEDIA_TYPE_OCI_CONFIG))
    }

    /// Makes the snapshots of `layers`' chain IDs so `FROM name` and `kiln run name` find
    /// them: a layer whose snapshot holds its content (a build step's) shares that
    /// snapshot's files through hard links; any other layer is unpacked from its blob.
    /// Answers the top chain ID and the snapshots' size.
    fn store_layers(&self, layers: &[PendingLayer]) -> Result<(Option<Digest>, u64), Error> {
        let mut parent = None;
        let mut size = 0;
        for layer in layers {
            let chain = chain_id(parent.as_ref(), &layer.diff_id);
            let key = chain.to_string();
            let linked = match &layer.snapshot {
                Some(source) if *source != key && self.snapshot(&key)?.is_none() => {
                    match link_snapshot(
                        self,
                        parent.as_ref(),
                        &chain,
                        source,
                        layer.source_date_epoch,
                    ) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(
                                snapshot = %source,
                                error = %e,
                                "cannot share the build's snapshot; unpacking the layer instead"
                            );
                            false
                        }
                    }
                }
                _ => false,
            };
            if !linked {
                match &layer.blob {
                    // A lazy layer (see `crate::realize`) stays lazy until it is read.
                    Some(blob)
                        if self
                            .snapshot(&key)?
                            .is_some_and(|s| s.remote.is_some() && s.blob == Some(*blob)) => {}
                    Some(blob) => {
                        self.unpack_snapshot(parent.as_ref(), blob, &layer.diff_id)?;
                    }
                    None if self.snapshot(&key)?.is_some() => {}
                    None => {
                        return Err(Error::SnapshotNotFound { key });
                    }
                }
            }
            size += self.snapshot(&key)?.map_or(0, |s| s.size);
            parent = Some(chain);
        }
        Ok((parent, size))
    }

    /// The stored image called `name` (normalised, or exactly as stored).
    pub fn find_image(&self, name: &str) -> Result<ImageRecord, Error> {
        if let Some(record) = self.image(name)? {
            return Ok(record);
        }
        let normal = normalize_name(name).ok();
        if let Some(record) = normal
            .as_deref()
            .map(|n| self.image(n))
            .transpose()?
            .flatten()
        {
            return Ok(record);
        }
        Err(Error::ImageNotFound {
            name: name.to_owned(),
        })
    }

    /// Gives the image `source` the additional name `target` (`kiln tag`).
    pub fn tag_image(&self, source: &str, target: &str) -> Result<ImageRecord, Error> {
        let mut record = self.find_image(source)?;
        record.name = normalize_name(target)?;
        self.put_image(&record)?;
        Ok(record)
    }

    /// The stored image as an [`Image`] (to export or push it). An image whose manifest is
    /// pending has none yet: `kiln_exporters::stored_image` makes it.
    pub fn stored_image(&self, record: &ImageRecord) -> Result<Image, Error> {
        if record.pending.is_some() {
            return Err(Error::ManifestPending {
                name: record.name.clone(),
            });
        }
        let manifest = self.read_blob(&record.manifest)?;
        let config = self.read_blob(&record.config)?;
        let parsed: ManifestDoc = serde_json::from_slice(&manifest)
            .map_err(|e| Error::json(format!("manifest {}", record.manifest), e))?;
        let layers = parsed
            .layers
            .iter()
            .zip(&record.diff_ids)
            .map(|(d, diff_id)| {
                Ok(Layer {
                    digest: d.digest.parse()?,
                    size: d.size,
                    diff_id: *diff_id,
                    media_type: oci_layer_type(Some(&d.media_type)).to_owned(),
                    snapshot: None,
                    source_date_epoch: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Image {
            manifest_digest: record.manifest,
            manifest,
            manifest_media_type: record.manifest_media_type.clone(),
            config,
            config_digest: record.config,
            layers,
            created: record.created.clone(),
        })
    }
}
