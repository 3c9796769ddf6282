//! The local image store: storing built images, `kiln load`, `kiln tag`.

use std::path::Path;

use kiln_cache::{Digest, ImageRecord, Store};
use oci_spec::image::History;
use serde::Deserialize;

use crate::error::Error;
use crate::image::{Image, MEDIA_TYPE_OCI_MANIFEST, assemble};
use crate::layers::{Layer, oci_layer_type};
use crate::link::link_snapshot;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The normalised form of an image name (`busybox` is `docker.io/library/busybox:latest`).
pub fn normalize_name(name: &str) -> Result<String, Error> {
    Ok(kiln_cache::parse_reference(name)?.whole())
}

/// Stores `image` under `name` (normalised): writes its manifest and config as blobs, makes
/// the snapshots of its layers' chain IDs so `FROM name` and `kiln run name` find them, and
/// records it. A layer whose [`Layer::snapshot`] holds its content (a build step's) shares
/// that snapshot's files through hard links; any other layer is unpacked from its blob.
pub fn store_image(store: &Store, image: &Image, name: &str) -> Result<ImageRecord, Error> {
    let name = normalize_name(name)?;
    store.write_blob(&image.config, Some(&image.config_digest))?;
    store.record_blob(
        &image.config_digest,
        image.config.len() as u64,
        Some(crate::image::MEDIA_TYPE_OCI_CONFIG),
    )?;
    let mut parent = None;
    let mut size = 0;
    for layer in &image.layers {
        let chain = kiln_cache::chain_id(parent.as_ref(), &layer.diff_id);
        let key = chain.to_string();
        let linked = match &layer.snapshot {
            Some(source) if *source != key && store.snapshot(&key)?.is_none() => {
                match link_snapshot(
                    store,
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
            store.unpack_snapshot(parent.as_ref(), &layer.digest, &layer.diff_id)?;
        }
        size += store.snapshot(&key)?.map_or(0, |s| s.size);
        parent = Some(chain);
    }
    store.write_blob(&image.manifest, Some(&image.manifest_digest))?;
    store.record_blob(
        &image.manifest_digest,
        image.manifest.len() as u64,
        Some(&image.manifest_media_type),
    )?;
    let record = ImageRecord {
        name,
        manifest: image.manifest_digest,
        manifest_media_type: image.manifest_media_type.clone(),
        index: None,
        config: image.config_digest,
        layers: image.layers.iter().map(|l| l.digest).collect(),
        diff_ids: image.layers.iter().map(|l| l.diff_id).collect(),
        chain_id: parent,
        size,
        created: image.created.clone(),
        last_used: now(),
    };
    store.put_image(&record)?;
    tracing::info!(image = %record.name, manifest = %record.manifest, "stored the image");
    Ok(record)
}

/// The histories of the stored images a result on the snapshot chain `keys` (bottom first) is
/// built on: those whose top snapshot is the highest of `keys` that is any image's top. These
/// are the candidates for [`crate::ImageOptions::base_histories`].
pub fn base_histories(store: &Store, keys: &[String]) -> Result<Vec<Vec<History>>, Error> {
    let images = store.images()?;
    for key in keys.iter().rev() {
        let mut histories = Vec::new();
        for image in images
            .iter()
            .filter(|i| i.chain_id.is_some_and(|c| c.to_string() == *key))
        {
            let bytes = store.read_blob(&image.config)?;
            let config: HistoryDoc = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("config {}", image.config), e))?;
            histories.push(config.history);
        }
        if !histories.is_empty() {
            return Ok(histories);
        }
    }
    Ok(Vec::new())
}

/// Gives the image `source` the additional name `target` (`kiln tag`).
pub fn tag_image(store: &Store, source: &str, target: &str) -> Result<ImageRecord, Error> {
    let mut record = find_image(store, source)?;
    record.name = normalize_name(target)?;
    store.put_image(&record)?;
    Ok(record)
}

/// The stored image called `name` (normalised, or exactly as stored).
pub fn find_image(store: &Store, name: &str) -> Result<ImageRecord, Error> {
    if let Some(record) = store.image(name)? {
        return Ok(record);
    }
    let normal = normalize_name(name).ok();
    if let Some(record) = normal
        .as_deref()
        .map(|n| store.image(n))
        .transpose()?
        .flatten()
    {
        return Ok(record);
    }
    Err(Error::ImageNotFound {
        name: name.to_owned(),
    })
}

/// The stored image as an [`Image`] (to export or push it).
pub fn stored_image(store: &Store, record: &ImageRecord) -> Result<Image, Error> {
    let manifest = store.read_blob(&record.manifest)?;
    let config = store.read_blob(&record.config)?;
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
        .collect::<Result<Vec<_>, kiln_cache::Error>>()?;
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorDoc {
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
    manifests: Vec<DescriptorDoc>,
}

#[derive(Deserialize)]
struct LayerDoc {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: LayerDoc,
    layers: Vec<LayerDoc>,
}

#[derive(Deserialize)]
struct HistoryDoc {
    #[serde(default)]
    history: Vec<History>,
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

/// Copies a file into the store as a blob, checking its digest when one is expected.
fn import_blob(
    store: &Store,
    path: &Path,
    expected: Option<&Digest>,
    media_type: Option<&str>,
) -> Result<(Digest, u64), Error> {
    let mut writer = store.writer()?;
    writer.copy_from(&mut fs_err::File::open(path)?)?;
    let (digest, size) = writer.commit(expected)?;
    store.record_blob(&digest, size, media_type)?;
    Ok((digest, size))
}

/// Loads the images of an OCI image layout (directory or tar) or a docker-archive tar into the
/// store (`kiln load`). An image named only by a tag in an OCI layout is named after the
/// layout's directory or file (`testdata/images/busybox` with tag `latest` is
/// `busybox:latest`). Returns the stored records.
pub fn load(store: &Store, path: &Path) -> Result<Vec<ImageRecord>, Error> {
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
            .tempdir_in(store.scratch_dir()?)?;
        tar::Archive::new(fs_err::File::open(path)?).unpack(unpacked.path())?;
        unpacked.path()
    };
    let _lease = store.lease()?;
    if dir.join("manifest.json").is_file() {
        load_docker(store, dir, path)
    } else if dir.join("index.json").is_file() {
        load_oci(store, dir, path, &stem)
    } else {
        Err(Error::UnknownArchive {
            path: path.to_owned(),
        })
    }
}

fn blob_file(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs").join(digest.replacen(':', "/", 1))
}

fn load_oci(
    store: &Store,
    dir: &Path,
    origin: &Path,
    stem: &str,
) -> Result<Vec<ImageRecord>, Error> {
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
        out.push(load_manifest(store, dir, &descriptor, &name)?);
    }
    Ok(out)
}

fn load_manifest(
    store: &Store,
    dir: &Path,
    descriptor: &DescriptorDoc,
    name: &str,
) -> Result<ImageRecord, Error> {
    let manifest_digest: Digest = descriptor.digest.parse().map_err(kiln_cache::Error::from)?;
    let manifest_path = blob_file(dir, &descriptor.digest);
    let manifest: ManifestDoc = read_json(&manifest_path)?;
    let media_type = manifest
        .media_type
        .clone()
        .or_else(|| descriptor.media_type.clone())
        .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_owned());
    let config_digest: Digest = manifest
        .config
        .digest
        .parse()
        .map_err(kiln_cache::Error::from)?;
    let config_path = blob_file(dir, &manifest.config.digest);
    let config: ConfigDoc = read_json(&config_path)?;
    import_blob(
        store,
        &config_path,
        Some(&config_digest),
        Some(&manifest.config.media_type),
    )?;
    let mut layers = Vec::new();
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let digest: Digest = layer.digest.parse().map_err(kiln_cache::Error::from)?;
        if !store.has_blob(&digest) {
            import_blob(
                store,
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
    import_blob(
        store,
        &manifest_path,
        Some(&manifest_digest),
        Some(&media_type),
    )?;
    let image = Image {
        manifest: fs_err::read(&manifest_path)?,
        manifest_digest,
        manifest_media_type: media_type,
        config: fs_err::read(&config_path)?,
        config_digest,
        layers,
        created: config.created,
    };
    store_image(store, &image, name)
}

fn load_docker(store: &Store, dir: &Path, origin: &Path) -> Result<Vec<ImageRecord>, Error> {
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
                [0x1f, 0x8b, ..] => kiln_cache::MEDIA_TYPE_LAYER_GZIP,
                [0x28, 0xb5, 0x2f, 0xfd] => kiln_cache::MEDIA_TYPE_LAYER_ZSTD,
                _ => kiln_cache::MEDIA_TYPE_LAYER_TAR,
            };
            let expected = (media_type == kiln_cache::MEDIA_TYPE_LAYER_TAR).then_some(diff_id);
            let (digest, size) = import_blob(store, &file, expected, Some(media_type))?;
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
            out.push(store_image(store, &image, &tag)?);
        }
    }
    Ok(out)
}
