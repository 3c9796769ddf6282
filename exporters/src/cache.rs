//! Writing a cache export (`--cache-to`) out: pushed to a registry, or as an OCI image layout
//! (`type=local`). The manifest and config come from [`kiln_cache::cache_manifest`]; the layer
//! blobs are the store's, sent or copied as they are (never compressed again).
//!
//! Both transports write every blob before the manifest, and the layout's `index.json` last
//! (under a temporary name, renamed into place): a reader sees the old cache or the new one,
//! never a manifest naming a missing blob. Two writers of one tag leave the last one's cache.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use std::sync::Arc;

use kiln_cache::{
    ANNOTATION_REF_NAME, CacheManifest, Config, Credentials, Digest, MEDIA_TYPE_OCI_INDEX, Store,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::output::OutputFile;
use crate::push::{Manifest, push_manifest};

/// Pushes a cache export to `reference` (`--cache-to type=registry,ref=…`): the layer blobs
/// from the store, the cache config, then the manifest. Returns the manifest digest.
pub async fn push_cache(
    store: &Store,
    cache: &CacheManifest,
    reference: &str,
    config: &Config,
    credentials: &Arc<dyn Credentials>,
) -> Result<Digest, Error> {
    push_manifest(
        store,
        &Manifest {
            layers: &cache.layers,
            config: &cache.config,
            config_digest: &cache.config_digest,
            manifest: &cache.manifest,
            manifest_digest: &cache.manifest_digest,
            media_type: cache.media_type,
        },
        reference,
        config,
        credentials,
    )
    .await
}

/// One entry of an `index.json`, in Go's field order.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

/// Writes a cache export into the OCI layout `dir` under `tag` (`--cache-to
/// type=local,dest=DIR,tag=TAG`), as BuildKit's local cache exporter does: blobs under
/// `blobs/sha256` (those present kept), then `index.json` with the manifest replacing any
/// entry of the same tag and keeping the others.
pub fn write_cache_layout(
    store: &Store,
    dir: &Path,
    tag: &str,
    cache: &CacheManifest,
) -> Result<(), Error> {
    let blob_path = |digest: &Digest| kiln_cache::layout_blob_path(dir, digest);
    for layer in &cache.layers {
        let path = blob_path(layer);
        if path.exists() {
            continue;
        }
        let mut file = OutputFile::create(store, &path)?;
        io::copy(&mut store.open_blob(layer)?, &mut file)?;
        file.finish()?;
    }
    for (digest, data) in [
        (&cache.config_digest, &cache.config),
        (&cache.manifest_digest, &cache.manifest),
    ] {
        write_file(store, &blob_path(digest), data)?;
    }
    write_file(
        store,
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let bytes = tagged_index(
        dir,
        tag,
        cache.media_type,
        &cache.manifest_digest,
        cache.manifest.len() as u64,
    )?;
    write_file(store, &dir.join("index.json"), &bytes)
}

/// The `index.json` of the OCI layout `dir` with the manifest `digest` (of `size` bytes and
/// `media_type`) tagged `tag`, replacing any entry of the same tag and keeping the others; a
/// layout without one gets a new index.
pub fn tagged_index(
    dir: &Path,
    tag: &str,
    media_type: &str,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>, Error> {
    let index_path = dir.join("index.json");
    let mut index = match fs_err::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(index_path.display().to_string(), e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Index {
            schema_version: 2,
            media_type: String::new(),
            manifests: Vec::new(),
        },
        Err(e) => return Err(e.into()),
    };
    if index.media_type.is_empty() {
        index.media_type = MEDIA_TYPE_OCI_INDEX.to_owned();
    }
    index
        .manifests
        .retain(|m| m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(tag));
    index.manifests.push(IndexEntry {
        media_type: media_type.to_owned(),
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), tag.to_owned())]),
        platform: None,
    });
    serde_json::to_vec(&index).map_err(|e| Error::json("index.json", e))
}

/// Writes `data` to `path` whole or not at all.
fn write_file(store: &Store, path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut file = OutputFile::create(store, path)?;
    io::Write::write_all(&mut file, data)?;
    file.finish()
}
