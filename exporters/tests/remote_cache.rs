//! Cache export transports: an OCI layout and the test registry, read back with kiln-cache's
//! importers, from BuildKit's example export in testdata/remote-cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_cache::{
    CacheManifest, CacheManifestForm, Config, Digest, Error, ImportedCache, PullOptions,
    RemoteCache, Store, cache_manifest,
};
use kiln_exporters::{push_cache, write_cache_layout};

const LOCAL_CONFIG: &str =
    "sha256:c1f7341eaaa2a2a9b78ece194d1537a2b9b48b04e607b7aa0027b7a01a285197";

fn data(name: &str) -> Vec<u8> {
    fs_err::read(kiln_testdata::remote_cache_dir().join(name)).unwrap()
}

fn local_blob(digest: &Digest) -> PathBuf {
    kiln_testdata::remote_cache_dir()
        .join("local-max/blobs/sha256")
        .join(digest.hex())
}

/// BuildKit's min export (the graph of local-max) and a store holding its blobs: those of
/// the local layout, and the busybox base layer from the busybox fixture.
fn example() -> (tempfile::TempDir, Store, ImportedCache) {
    let config = fs_err::read(local_blob(&LOCAL_CONFIG.parse().unwrap())).unwrap();
    let cache = ImportedCache::from_manifest(&data("min.manifest.json"), |_, _| Ok(config.clone()))
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    for digest in cache.blobs.keys() {
        let path = local_blob(digest);
        let path = if path.exists() {
            path
        } else {
            kiln_testdata::busybox_layout()
                .join("blobs/sha256")
                .join(digest.hex())
        };
        store
            .write_blob(&fs_err::read(path).unwrap(), Some(digest))
            .unwrap();
    }
    (root, store, cache)
}

/// Whether the test registry answers; a skip (or, in CI, a failure) when it does not.
fn registry_up() -> bool {
    let up = kiln_testdata::registry_up();
    if !up {
        kiln_testdata::skip(
            "the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)",
        );
    }
    up
}

/// Pull options without the user's Docker credentials.
fn pull_options() -> PullOptions {
    PullOptions {
        credentials: std::sync::Arc::new(kiln_cache::DockerConfigFile::anonymous()),
        ..PullOptions::default()
    }
}

fn written(cache: &ImportedCache, form: CacheManifestForm) -> CacheManifest {
    cache_manifest(&cache.config, &cache.blobs, form).unwrap()
}

fn same_cache(read: &ImportedCache, cache: &ImportedCache) {
    assert_eq!(read.config, cache.config);
    assert_eq!(read.blobs, cache.blobs);
}

#[test]
fn local_layout_is_buildkits_and_reads_back() {
    let (_root, store, cache) = example();
    let out = tempfile::tempdir().unwrap();
    let manifest = written(&cache, CacheManifestForm::ImageManifest);
    write_cache_layout(&store, out.path(), "latest", &manifest).unwrap();
    // BuildKit's local export of the same graph: the same index.json and manifest.
    assert_eq!(
        String::from_utf8(fs_err::read(out.path().join("index.json")).unwrap()).unwrap(),
        String::from_utf8(data("local-max/index.json")).unwrap()
    );
    let blob =
        |dir: &Path, digest: &Digest| fs_err::read(dir.join("blobs/sha256").join(digest.hex()));
    assert_eq!(
        blob(out.path(), &manifest.manifest_digest).unwrap(),
        fs_err::read(local_blob(&manifest.manifest_digest)).unwrap()
    );
    assert_eq!(
        fs_err::read(out.path().join("oci-layout")).unwrap(),
        data("local-max/oci-layout")
    );
    for digest in cache.blobs.keys() {
        assert_eq!(
            blob(out.path(), digest).unwrap(),
            store.read_blob(digest).unwrap()
        );
    }
    same_cache(
        &ImportedCache::from_local_layout(out.path(), "latest").unwrap(),
        &cache,
    );
}

#[test]
fn local_layout_keeps_other_tags_and_replaces_its_own() {
    let (_root, store, cache) = example();
    let out = tempfile::tempdir().unwrap();
    let image = written(&cache, CacheManifestForm::ImageManifest);
    let index = written(&cache, CacheManifestForm::Index { oci: true });
    write_cache_layout(&store, out.path(), "a", &image).unwrap();
    write_cache_layout(&store, out.path(), "b", &image).unwrap();
    write_cache_layout(&store, out.path(), "a", &index).unwrap();
    let value: serde_json::Value =
        serde_json::from_slice(&fs_err::read(out.path().join("index.json")).unwrap()).unwrap();
    let entries: Vec<(String, String)> = value["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("b".to_owned(), image.manifest_digest.to_string()),
            ("a".to_owned(), index.manifest_digest.to_string()),
        ]
    );
    same_cache(
        &ImportedCache::from_local_layout(out.path(), "a").unwrap(),
        &cache,
    );
    same_cache(
        &ImportedCache::from_local_layout(out.path(), "b").unwrap(),
        &cache,
    );
    // No temporary file is left beside the layout's files.
    let names: BTreeMap<String, ()> = fs_err::read_dir(out.path())
        .unwrap()
        .map(|e| (e.unwrap().file_name().to_string_lossy().into_owned(), ()))
        .collect();
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        ["blobs", "index.json", "oci-layout"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_round_trip_fetches_blobs_only_when_asked() {
    if !registry_up() {
        return;
    }
    let (_root, store, cache) = example();
    let options = pull_options();
    for form in [
        CacheManifestForm::ImageManifest,
        CacheManifestForm::Index { oci: true },
    ] {
        let manifest = written(&cache, form);
        let reference = format!(
            "127.0.0.1:5000/kiln-test/remote-cache:{}",
            fastrand::u64(..)
        );
        let pushed = push_cache(
            &store,
            &manifest,
            &reference,
            &Config::default(),
            &pull_options().credentials,
        )
        .await
        .unwrap();
        assert_eq!(pushed, manifest.manifest_digest);

        let remote = RemoteCache::fetch(&reference, &options).await.unwrap();
        assert_eq!(remote.manifest_digest, manifest.manifest_digest);
        same_cache(&remote.cache, &cache);

        // Reading the cache downloaded no blob; each is fetched when asked, verified.
        let fresh_root = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_root.path()).unwrap();
        let wanted = cache.config.layers[0].blob;
        for digest in cache.blobs.keys() {
            assert!(!fresh.has_blob(digest), "{digest}");
        }
        remote.fetch_blob(&fresh, &wanted).await.unwrap();
        assert_eq!(
            fresh.read_blob(&wanted).unwrap(),
            store.read_blob(&wanted).unwrap()
        );
        for digest in cache.blobs.keys().filter(|d| **d != wanted) {
            assert!(!fresh.has_blob(digest), "{digest} came along");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_registry_cache_is_a_cache_import_error() {
    if !registry_up() {
        return;
    }
    let reference = "127.0.0.1:5000/kiln-test/remote-cache:absent";
    let options = pull_options();
    match RemoteCache::fetch(reference, &options).await {
        Err(Error::CacheImport { from, .. }) => assert_eq!(from, reference),
        other => panic!("expected a cache import error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_image_with_an_inline_cache_is_read_as_a_cache() {
    if !registry_up() {
        return;
    }
    let (_root, store, _) = example();
    // BuildKit's image exported with --export-cache type=inline, pushed as it is.
    let manifest = data("inline.manifest.json");
    let config = data("inline.imageconfig.json");
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let image_config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let layers: Vec<kiln_exporters::Layer> = parsed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(image_config["rootfs"]["diff_ids"].as_array().unwrap())
        .map(|(layer, diff_id)| kiln_exporters::Layer {
            digest: layer["digest"].as_str().unwrap().parse().unwrap(),
            size: layer["size"].as_u64().unwrap(),
            diff_id: diff_id.as_str().unwrap().parse().unwrap(),
            media_type: layer["mediaType"].as_str().unwrap().to_owned(),
            snapshot: None,
            source_date_epoch: None,
        })
        .collect();
    let image = kiln_exporters::Image {
        manifest_digest: Digest::from_bytes(&manifest),
        manifest,
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        config_digest: Digest::from_bytes(&config),
        config: config.clone(),
        layers: layers.clone(),
        created: None,
    };
    let reference = format!(
        "127.0.0.1:5000/kiln-test/remote-cache:inline-{}",
        fastrand::u64(..)
    );
    kiln_exporters::push(
        &store,
        &image,
        &reference,
        &Config::default(),
        &pull_options().credentials,
    )
    .await
    .unwrap();
    let options = pull_options();
    let remote = RemoteCache::fetch(&reference, &options).await.unwrap();
    let digests: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
    assert_eq!(remote.cache.image_layers, digests);
    let decoded = data("inline.cacheconfig.decoded.json");
    assert_eq!(
        remote.cache.config,
        kiln_cache::cacheconfig::CacheConfig::parse_inline(&decoded, digests.len()).unwrap()
    );
}
