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

/// The blob `digest` of the OCI layout `dir` (see [`member`]).
fn blob_file(dir: &Path, origin: &Path, digest: &Digest) -> Result<PathBuf, Error> {
    member(dir, origin, &format!("blobs/sha256/{}", digest.hex()))
}

/// The file an archive's `index.json` or `manifest.json` names (`name`, from outside):
/// resolved inside the unpacked archive `dir` as if it were `/` (links followed within it), so
/// no name reaches a file of the host.
fn member(dir: &Path, origin: &Path, name: &str) -> Result<PathBuf, Error> {
    let bad = |reason: String| Error::BadArchive {
        path: origin.to_owned(),
        reason,
    };
    let resolved = kiln_fsutil::Root::new(dir)
        .resolve(name, true)
        .map_err(|e| bad(format!("{name:?}: {e}")))?;
    match resolved.entry {
        Some(entry) if entry.metadata.is_file() => Ok(entry.host),
        _ => Err(bad(format!("{name:?} is not a file in the archive"))),
    }
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
                let digest: Digest = descriptor.digest.parse()?;
                let nested: IndexDoc = read_json(&blob_file(dir, origin, &digest)?)?;
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
            out.push(self.load_manifest(dir, origin, &descriptor, &name)?);
        }
        Ok(out)
    }

    fn load_manifest(
        &self,
        dir: &Path,
        origin: &Path,
        descriptor: &IndexEntryDoc,
        name: &str,
    ) -> Result<ImageRecord, Error> {
        let manifest_digest: Digest = descriptor.digest.parse()?;
        let manifest_path = blob_file(dir, origin, &manifest_digest)?;
        let manifest: ManifestDoc = read_json(&manifest_path)?;
        let media_type = manifest
            .media_type
            .clone()
            .or_else(|| descriptor.media_type.clone())
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_owned());
        let config_digest: Digest = manifest.config.digest.parse()?;
        let config_path = blob_file(dir, origin, &config_digest)?;
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
                    &blob_file(dir, origin, &digest)?,
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
            let config_path = member(dir, origin, &entry.config)?;
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
                let file = member(dir, origin, path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker archive whose `manifest.json` names `config` and `layers` as given, holding a
    /// config of one diff ID and the members `files` (path, content) and `links` (path, target).
    fn docker_archive(
        dir: &Path,
        layers: &[&str],
        files: &[(&str, &[u8])],
        links: &[(&str, &Path)],
    ) -> PathBuf {
        let path = dir.join("archive.tar");
        let mut b = tar::Builder::new(fs_err::File::create(&path).unwrap());
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": ["evil:latest"],
            "Layers": layers,
        }]);
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::from_bytes(b"x").to_string()]},
        });
        let manifest = manifest.to_string();
        let config = config.to_string();
        let mut members: Vec<(&str, &[u8])> = vec![
            ("manifest.json", manifest.as_bytes()),
            ("config.json", config.as_bytes()),
        ];
        members.extend_from_slice(files);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        for (name, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn a_docker_archive_cannot_name_a_file_of_the_host() {
        let host = tempfile::tempdir().unwrap();
        // A gzip file of the host: a layer that is not checked against its diff ID.
        let secret = host.path().join("secret.gz");
        fs_err::write(&secret, b"\x1f\x8bhost secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("store")).unwrap();
        let work = tempfile::tempdir().unwrap();

        let absolute = secret.to_str().unwrap();
        let dotdot = format!("../../../../../../..{absolute}");
        for layer in [absolute, dotdot.as_str(), "link.gz"] {
            let archive = docker_archive(work.path(), &[layer], &[], &[("link.gz", &secret)]);
            let err = store.load(&archive).unwrap_err();
            assert!(
                matches!(&err, Error::BadArchive { reason, .. } if reason.contains("is not a file in the archive")),
                "{layer}: {err}"
            );
        }
        assert!(store.images().unwrap().is_empty());
        let blobs = root.path().join("store/blobs/sha256");
        for blob in fs_err::read_dir(&blobs).into_iter().flatten() {
            let content = fs_err::read(blob.unwrap().path()).unwrap();
            assert_ne!(
                content, b"\x1f\x8bhost secret",
                "the host file was imported"
            );
        }
    }
}
