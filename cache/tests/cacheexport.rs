//! Cache export writing against exports made by BuildKit (testdata/remote-cache): rebuilding
//! each manifest from its parsed config and descriptors gives BuildKit's bytes.

use std::collections::BTreeMap;

use kiln_cache::cacheconfig::INLINE_CACHE_KEY;
use kiln_cache::{CacheManifestForm, Digest, Error, ImportedCache, cache_manifest};

fn data(name: &str) -> Vec<u8> {
    fs_err::read(kiln_testdata::remote_cache_dir().join(name)).unwrap()
}

/// The cache a manifest names, its config read from `config_file`.
fn imported(manifest: &str, config_file: &str) -> ImportedCache {
    let config = data(config_file);
    ImportedCache::from_manifest(&data(manifest), |_, _| Ok(config.clone())).unwrap()
}

#[test]
fn image_manifests_are_rebuilt_byte_for_byte() {
    for (manifest, config) in [
        ("max.manifest.json", "max.cacheconfig.json"),
        ("min.manifest.json", "min.cacheconfig.json"),
        ("min-fresh.manifest.json", "min-fresh.cacheconfig.json"),
    ] {
        let cache = imported(manifest, config);
        let written = cache_manifest(
            &cache.config,
            &cache.blobs,
            CacheManifestForm::ImageManifest,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(written.manifest.clone()).unwrap(),
            String::from_utf8(data(manifest)).unwrap(),
            "{manifest}"
        );
        assert_eq!(written.config, data(config), "{config}");
        assert_eq!(written.config_digest, Digest::from_bytes(&data(config)));
        assert_eq!(written.manifest_digest, Digest::from_bytes(&data(manifest)));
        assert_eq!(
            written.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        let layers: Vec<Digest> = cache.config.layers.iter().map(|l| l.blob).collect();
        assert_eq!(written.layers, layers);
    }
    // The registry's digest of the max manifest, from its response headers.
    let headers = String::from_utf8(data("max.manifest.headers")).unwrap();
    let written = {
        let cache = imported("max.manifest.json", "max.cacheconfig.json");
        cache_manifest(
            &cache.config,
            &cache.blobs,
            CacheManifestForm::ImageManifest,
        )
        .unwrap()
    };
    assert!(headers.contains(&format!(
        "Docker-Content-Digest: {}",
        written.manifest_digest
    )));
}

#[test]
fn the_index_form_is_rebuilt_byte_for_byte() {
    // The index form's config is the local layout's (the same graph as min).
    let cache = imported(
        "maxindex.manifest.json",
        "local-max/blobs/sha256/c1f7341eaaa2a2a9b78ece194d1537a2b9b48b04e607b7aa0027b7a01a285197",
    );
    let written = cache_manifest(
        &cache.config,
        &cache.blobs,
        CacheManifestForm::Index { oci: true },
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(written.manifest).unwrap(),
        String::from_utf8(data("maxindex.manifest.json")).unwrap()
    );
    assert_eq!(
        written.media_type,
        "application/vnd.oci.image.index.v1+json"
    );
}

#[test]
fn docker_media_types_make_a_manifest_list_that_reads_back() {
    let cache = imported("max.manifest.json", "max.cacheconfig.json");
    let written = cache_manifest(
        &cache.config,
        &cache.blobs,
        CacheManifestForm::Index { oci: false },
    )
    .unwrap();
    assert_eq!(
        written.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let value: serde_json::Value = serde_json::from_slice(&written.manifest).unwrap();
    assert_eq!(value["mediaType"], written.media_type);
    let entries = value["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), cache.config.layers.len() + 1);
    for entry in &entries[..entries.len() - 1] {
        assert_eq!(
            entry["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    let config = written.config.clone();
    let back = ImportedCache::from_manifest(&written.manifest, |_, _| Ok(config.clone())).unwrap();
    assert_eq!(back.config, cache.config);
    assert_eq!(
        back.blobs.keys().collect::<Vec<_>>(),
        cache.blobs.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_blob_without_a_descriptor_is_refused() {
    let cache = imported("max.manifest.json", "max.cacheconfig.json");
    let missing = cache.config.layers[0].blob;
    let mut blobs = cache.blobs.clone();
    blobs.remove(&missing);
    match cache_manifest(&cache.config, &blobs, CacheManifestForm::ImageManifest) {
        Err(Error::CacheBlobMissing { digest }) => assert_eq!(digest, missing),
        other => panic!("expected a missing blob, got {other:?}"),
    }
    let empty = BTreeMap::new();
    assert!(cache_manifest(&cache.config, &empty, CacheManifestForm::ImageManifest).is_err());
}

#[test]
fn the_inline_value_is_buildkits() {
    let image_config = data("inline.imageconfig.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&data("inline.manifest.json")).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let cache = ImportedCache::from_image_config(&image_config, layers)
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&image_config).unwrap();
    assert_eq!(
        kiln_cache::inline_cache_value(&cache.config),
        value[INLINE_CACHE_KEY].as_str().unwrap()
    );
}
