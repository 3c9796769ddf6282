//! `kiln load`: images from an OCI image layout (directory or tar) or a docker-archive tar
//! into the store ([`Store::load`]).
//!
//! Every blob is copied in through a [`BlobWriter`](crate::BlobWriter) and checked against
//! its digest; a docker archive, which has no manifest, gets one made by [`assemble`] from its
//! config and layers. The images are then stored as [`Store::store_image`] stores a build's.

use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use serde::Deserialize;

use crate::diff::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};
use crate::error::Error;
use crate::image::{Image, Layer, MEDIA_TYPE_OCI_MANIFEST, ManifestDoc, assemble, oci_layer_type};
use crate::store::{ImageRecord, Store};

/// An entry of an OCI index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntryDoc {
    media_type: Option<String>,
    digest: String,
    annotations: Option<std::collections::HashMap<String, String>>,
    platform: Option<PlatformDoc>,
}

#[derive(Deserialize)]
struct PlatformDoc {
    os: String,
    architecture: String,
}

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<IndexEntryDoc>,
}

#[derive(Deserialize)]
struct RootFsDoc {
    diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    created: Option<String>,
    rootfs: RootFsDoc,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = fs_err::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
}

fn blob_file(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs").join(digest.replacen(':', "/", 1))
}

impl Store {
    /// Loads the images of an OCI image layout (directory or tar) or a docker-archive tar
    /// into the store (`kiln load`). An image named only by a tag in an OCI layout is named
    /// after the layout's directory or file (`testdata/images/busybox` with tag `latest` is
    /// `busybox:latest`). Returns the stored records.
    pub fn load(&self, path: &Path) -> Result<Vec<ImageRecord>, Error> {
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".tar").to_owned())
            .unwrap_or_else(|| "image".to_owned());
        let unpacked;
        let dir = if fs_err::metadata(path)?.is_dir() {
            path
        } else {
            unpacked = tempfile::Builder::new()
                .prefix("load-")
                .tempdir_in(self.scratch_dir()?)?;
            tar::Archive::new(fs_err::File::open(path)?).unpack(unpacked.path())?;
            unpacked.path()
        };
        let _lease = self.lease()?;
        if dir.join("manifest.json").is_file() {
            self.load_docker(dir, path)
        } else if dir.join("index.json").is_file() {
            self.load_oci(dir, path, &stem)
        } else {
            Err(Error::UnknownArchive {
                path: path.to_owned(),
            })
        }
    }

    /// Copies a file into the store as a blob, checking its digest when one is expected.
    fn import_blob(
        &self,
        path: &Path,
        expected: Option<&Digest>,
        media_type: Option<&str>,
    ) -> Result<(Digest, u64), Error> {
        let mut writer = self.writer()?;
        writer.copy_from(&mut fs_err::File::open(path)?)?;
        let (digest, size) = writer.commit(expected)?;
        self.record_blob(&digest, size, media_type)?;
        Ok((digest, size))
    }

    fn load_oci(&self, dir: &Path, origin: &Path, stem: &str) -> Result<Vec<ImageRecord>, Error> {
        let index: IndexDoc = read_json(&dir.join("index.json"))?;
        let mut out = Vec::new();
        for entry in index.manifests {
            let annotations = entry.annotations.clone().unwrap_or_default();
            let name = match (
                annotations.get("io.containerd.image.name"),
                annotations.get("org.opencontainers.image.ref.name"),
            ) {
                (Some(full), _) => full.clone(),
                (None, Some(tag)) if tag.contains(['/', ':']) => tag.clone(),
                (None, Some(tag)) => format!("{stem}:{tag}"),
                (None, None) => format!("{stem}:latest"),
            };
            let mut descriptor = entry;
            // An index (several platforms): take linux/amd64.
            if descriptor
                .media_type
                .as_deref()
                .is_some_and(|t| t.contains("index") || t.contains("manifest.list"))
            {
                let nested: IndexDoc = read_json(&blob_file(dir, &descriptor.digest))?;
                descriptor = nested
                    .manifests
                    .into_iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    })
                    .ok_or_else(|| Error::BadArchive {
                        path: origin.to_owned(),
                        reason: "no linux/amd64 manifest in the index".to_owned(),
                    })?;
            }
            out.push(self.load_manifest(dir, &descriptor, &name)?);
        }
        Ok(out)
    }

    fn load_manifest(
        &self,
        dir: &Path,
        descriptor: &IndexEntryDoc,
        name: &str,
    ) -> Result<ImageRecord, Error> {
        let manifest_digest: Digest = descriptor.digest.parse()?;
        let manifest_path = blob_file(dir, &descriptor.digest);
        let manifest: ManifestDoc = read_json(&manifest_path)?;
        let media_type = manifest
            .media_type
            .clone()
            .or_else(|| descriptor.media_type.clone())
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_owned());
        let config_digest: Digest = manifest.config.digest.parse()?;
        let config_path = blob_file(dir, &manifest.config.digest);
        let config: ConfigDoc = read_json(&config_path)?;
        self.import_blob(
            &config_path,
            Some(&config_digest),
            Some(&manifest.config.media_type),
        )?;
        let mut layers = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let digest: Digest = layer.digest.parse()?;
            if !self.has_blob(&digest) {
                self.import_blob(
                    &blob_file(dir, &layer.digest),
                    Some(&digest),
                    Some(&layer.media_type),
                )?;
            }
            layers.push(Layer {
                digest,
                size: layer.size,
                diff_id: *diff_id,
                media_type: oci_layer_type(Some(&layer.media_type)).to_owned(),
                snapshot: None,
                source_date_epoch: None,
            });
        }
        self.import_blob(&manifest_path, Some(&manifest_digest), Some(&media_type))?;
        let image = Image {
            manifest: fs_err::read(&manifest_path)?,
            manifest_digest,
            manifest_media_type: media_type,
            config: fs_err::read(&config_path)?,
            config_digest,
            layers,
            created: config.created,
        };
        self.store_image(&image, name)
    }

    fn load_docker(&self, dir: &Path, origin: &Path) -> Result<Vec<ImageRecord>, Error> {
        let entries: Vec<DockerEntry> = read_json(&dir.join("manifest.json"))?;
        let mut out = Vec::new();
        for entry in entries {
            let config_path = dir.join(&entry.config);
            let config_bytes = fs_err::read(&config_path)?;
            let config: ConfigDoc = serde_json::from_slice(&config_bytes)
                .map_err(|e| Error::json(config_path.display().to_string(), e))?;
            if config.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(Error::BadArchive {
                    path: origin.to_owned(),
                    reason: format!(
                        "{} layers but {} diff IDs in {}",
                        entry.layers.len(),
                        config.rootfs.diff_ids.len(),
                        entry.config
                    ),
                });
            }
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
                let file = dir.join(path);
                let mut head = [0u8; 4];
                let read = std::io::Read::read(&mut fs_err::File::open(&file)?, &mut head)?;
                let media_type = match &head[..read.min(4)] {
                    [0x1f, 0x8b, ..] => MEDIA_TYPE_LAYER_GZIP,
                    [0x28, 0xb5, 0x2f, 0xfd] => MEDIA_TYPE_LAYER_ZSTD,
                    _ => MEDIA_TYPE_LAYER_TAR,
                };
                let expected = (media_type == MEDIA_TYPE_LAYER_TAR).then_some(diff_id);
                let (digest, size) = self.import_blob(&file, expected, Some(media_type))?;
                layers.push(Layer {
                    digest,
                    size,
                    diff_id: *diff_id,
                    media_type: media_type.to_owned(),
                    snapshot: None,
                    source_date_epoch: None,
                });
            }
            let image = assemble(&config_bytes, layers, true)?;
            let image = Image {
                created: config.created,
                ..image
            };
            let tags = entry.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                return Err(Error::BadArchive {
                    path: origin.to_owned(),
                    reason: "an image has no RepoTags".to_owned(),
                });
            }
            for tag in tags {
                out.push(self.store_image(&image, &tag)?);
            }
        }
        Ok(out)
    }
}
