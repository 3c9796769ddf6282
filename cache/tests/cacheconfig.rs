//! The cache export format against exports made by BuildKit (testdata/remote-cache).

use std::path::PathBuf;

use base64::Engine as _;
use kiln_cache::cacheconfig::{
    CACHE_CONFIG_MEDIA_TYPE, CacheConfig, CacheConfigError, INLINE_CACHE_KEY,
};
use kiln_cache::{Digest, ImportedCache};

fn data(name: &str) -> Vec<u8> {
    fs_err::read(kiln_testdata::remote_cache_dir().join(name)).unwrap()
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&data(name)).unwrap()
}

fn local_blob(digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    kiln_testdata::remote_cache_dir()
        .join("local-max/blobs/sha256")
        .join(hex)
}

/// Every config blob BuildKit wrote: registry max, min, min after a prune, the index form's
/// and the local layout's.
fn config_blobs() -> Vec<(String, Vec<u8>)> {
    let mut blobs: Vec<(String, Vec<u8>)> = [
        "max.cacheconfig.json",
        "min.cacheconfig.json",
        "min-fresh.cacheconfig.json",
    ]
    .iter()
    .map(|name| ((*name).to_owned(), data(name)))
    .collect();
    let index = json("maxindex.manifest.json");
    let last = index["manifests"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    let local_index = json("local-max/index.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs_err::read(local_blob(
            local_index["manifests"][0]["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    let digest = manifest["config"]["digest"].as_str().unwrap();
    blobs.push((
        "local-max config".to_owned(),
        fs_err::read(local_blob(digest)).unwrap(),
    ));
    // The index form names the same config bytes as the local layout.
    assert_eq!(last["digest"].as_str().unwrap(), digest);
    blobs
}

#[test]
fn buildkit_configs_parse_and_serialise_to_the_same_bytes() {
    for (name, bytes) in config_blobs() {
        let config = CacheConfig::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!config.records.is_empty(), "{name}");
        assert_eq!(
            String::from_utf8(config.to_json()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn buildkit_orders_layers_and_records_as_sort_does() {
    for (name, bytes) in config_blobs() {
        let mut config = CacheConfig::parse(&bytes).unwrap();
        config.sort();
        assert_eq!(
            String::from_utf8(config.to_json()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn sort_renumbers_parents_results_and_links() {
    let mut config = CacheConfig::parse(&data("max.cacheconfig.json")).unwrap();
    let chains_before: Vec<Vec<Digest>> = config
        .records
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| config.chain(r.layer_index).iter().map(|l| l.blob).collect())
        .collect();
    let original = config.clone();
    config.layers.reverse();
    config.records.reverse();
    // Reversed without renumbering, the graph is scrambled; sort renumbers as it reorders.
    let (n, m) = (config.layers.len(), config.records.len());
    for layer in &mut config.layers {
        if let Ok(parent) = usize::try_from(layer.parent) {
            layer.parent = i64::try_from(n - 1 - parent).unwrap();
        }
    }
    for record in &mut config.records {
        for result in &mut record.results {
            result.layer_index = n - 1 - result.layer_index;
        }
        for input in record.inputs.iter_mut().flatten() {
            input.link_index = m - 1 - input.link_index;
        }
    }
    config.sort();
    assert_eq!(config, original);
    let chains_after: Vec<Vec<Digest>> = config
        .records
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| config.chain(r.layer_index).iter().map(|l| l.blob).collect())
        .collect();
    assert_eq!(chains_after, chains_before);
}

#[test]
fn the_registry_manifest_lists_exactly_the_config_layers() {
    let bytes = data("max.cacheconfig.json");
    let config = CacheConfig::parse(&bytes).unwrap();
    let manifest = json("max.manifest.json");
    assert_eq!(manifest["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(
        manifest["config"]["digest"].as_str().unwrap(),
        Digest::from_bytes(&bytes).to_string()
    );
    let listed: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let blobs: Vec<String> = config.layers.iter().map(|l| l.blob.to_string()).collect();
    assert_eq!(listed, blobs);
}

#[test]
fn chains_follow_parents_down_to_the_base() {
    let config = CacheConfig::parse(&data("max.cacheconfig.json")).unwrap();
    let chain: Vec<String> = config
        .chain(3)
        .iter()
        .map(|l| l.blob.hex()[..6].to_owned())
        .collect();
    assert_eq!(chain, ["76008c", "245395", "b51d07"]);
    // The RUN record's result is the context copy over the base.
    let run = config
        .records
        .iter()
        .find(|r| r.digest.hex().starts_with("931de1"))
        .unwrap();
    assert_eq!(run.results.len(), 1);
    assert_eq!(config.chain(run.results[0].layer_index).len(), 2);
    // min after a prune: layer 1 has no "parent" key, which is parent 0.
    let fresh = CacheConfig::parse(&data("min-fresh.cacheconfig.json")).unwrap();
    assert_eq!(fresh.layers[1].parent, 0);
    assert_eq!(fresh.chain(2).len(), 3);
    let run = fresh
        .records
        .iter()
        .find(|r| r.digest.hex().starts_with("931de1"))
        .unwrap();
    assert!(run.results.is_empty());
}

#[test]
fn inline_cache_records_count_into_the_image_layers() {
    let image_config = json("inline.imageconfig.json");
    let encoded = image_config[INLINE_CACHE_KEY].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, data("inline.cacheconfig.decoded.json"));
    let layers = json("inline.manifest.json")["layers"]
        .as_array()
        .unwrap()
        .len();
    let config = CacheConfig::parse_inline(&decoded, layers).unwrap();
    assert!(config.layers.is_empty());
    assert_eq!(config.inline_json(), decoded);
    let top = config
        .records
        .iter()
        .flat_map(|r| &r.results)
        .map(|r| r.layer_index)
        .max()
        .unwrap();
    assert_eq!(top, layers - 1);
    // One layer fewer in the image and the topmost result is out of range.
    assert_eq!(
        CacheConfig::parse_inline(&decoded, layers - 1).unwrap_err(),
        CacheConfigError::BadResult {
            record: 4,
            layer: layers - 1,
            count: layers - 1
        }
    );
}

const D: &str = "sha256:76008c3c9030e1cb7379b2e286d4afc1f901273856530ed42dd337073151af24";

fn refused(config: &str) -> String {
    CacheConfig::parse(config.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn hostile_configs_are_refused_with_the_reason() {
    assert_eq!(
        refused(&format!(r#"{{"layers":[{{"blob":"{D}","parent":1}}]}}"#)),
        "cache layer 0 names parent 1, but there are 1 layers"
    );
    assert_eq!(
        refused(&format!(r#"{{"layers":[{{"blob":"{D}","parent":-2}}]}}"#)),
        "cache layer 0 names parent -2, but there are 1 layers"
    );
    // A missing parent key is 0: a lone layer would be its own parent.
    assert_eq!(
        refused(&format!(r#"{{"layers":[{{"blob":"{D}"}}]}}"#)),
        "cache layer 0 names parent 0, but there are 1 layers"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"layers":[{{"blob":"{D}","parent":1}},{{"blob":"{D}"}}]}}"#
        )),
        "cache layer 0 is its own ancestor"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"records":[{{"digest":"{D}","layers":[{{"layer":0}}]}}]}}"#
        )),
        "cache record 0 names layer 0, but there are 0 layers"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"records":[{{"digest":"{D}","chains":[{{"layers":[0,7]}}]}}],"layers":[{{"blob":"{D}","parent":-1}}]}}"#
        )),
        "cache record 0 names layer 7, but there are 1 layers"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"records":[{{"digest":"{D}","inputs":[[{{"link":3}}]]}}]}}"#
        )),
        "cache record 0 links to record 3, but there are 1 records"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"records":[{{"digest":"{D}","inputs":[[{{"link":1}}]]}},{{"digest":"{D}","inputs":[[],[{{"link":0}}]]}}]}}"#
        )),
        "cache record 0 is its own input"
    );
    assert!(
        refused(r#"{"records":[{"digest":"md5:00"}]}"#).starts_with("malformed cache config: "),
        "{}",
        refused(r#"{"records":[{"digest":"md5:00"}]}"#)
    );
    assert!(refused(r#"{"layers":[{"blob":"#).starts_with("malformed cache config: "));
    assert!(
        refused(r#"{"records":[{"digest":"x","inputs":[[{"link":-1}]]}]}"#)
            .starts_with("malformed")
    );
}

#[test]
fn deep_graphs_are_checked_without_recursion() {
    // 200,000 layers in one chain and 200,000 records in one line of links.
    let n = 200_000;
    let layers: Vec<String> = (0..n)
        .map(|i| {
            let parent = i64::try_from(i).unwrap() - 1;
            format!(r#"{{"blob":"{D}","parent":{parent}}}"#)
        })
        .collect();
    let records: Vec<String> = (0..n)
        .map(|i| {
            if i == 0 {
                format!(r#"{{"digest":"{D}"}}"#)
            } else {
                format!(r#"{{"digest":"{D}","inputs":[[{{"link":{}}}]]}}"#, i - 1)
            }
        })
        .collect();
    let text = format!(
        r#"{{"layers":[{}],"records":[{}]}}"#,
        layers.join(","),
        records.join(",")
    );
    let config = CacheConfig::parse(text.as_bytes()).unwrap();
    assert_eq!(config.chain(n - 1).len(), n);
    // Close the line of records into a loop: found, not overflowed.
    let looped = text.replacen(
        &format!(r#"{{"digest":"{D}"}}"#),
        &format!(r#"{{"digest":"{D}","inputs":[[{{"link":{}}}]]}}"#, n - 1),
        1,
    );
    assert!(matches!(
        CacheConfig::parse(looped.as_bytes()),
        Err(CacheConfigError::RecordCycle { .. })
    ));
}

fn fetch_from(
    files: &'static [(&'static str, &'static str)],
) -> impl FnMut(&Digest, u64) -> Result<Vec<u8>, kiln_cache::Error> {
    move |digest, _size| {
        let name = files
            .iter()
            .find(|(d, _)| digest.to_string() == *d)
            .map(|(_, name)| *name)
            .unwrap_or_else(|| panic!("unexpected fetch of {digest}"));
        Ok(data(name))
    }
}

const MAX_CONFIG: &str = "sha256:0729b9e8a9ed936314757e79c9e41bec73333f749359e3629e5b6cb00a3d75ed";

#[test]
fn an_image_manifest_cache_reads_its_config_and_blob_descriptors() {
    let cache = ImportedCache::from_manifest(
        &data("max.manifest.json"),
        fetch_from(&[(MAX_CONFIG, "max.cacheconfig.json")]),
    )
    .unwrap();
    assert_eq!(
        cache.config,
        CacheConfig::parse(&data("max.cacheconfig.json")).unwrap()
    );
    assert_eq!(cache.blobs.len(), 4);
    let top: Vec<String> = cache
        .chain(3)
        .iter()
        .map(|d| d.hex()[..6].to_owned())
        .collect();
    assert_eq!(top, ["76008c", "245395", "b51d07"]);
    let base = &cache.blobs[&cache.chain(3)[0]];
    assert_eq!(base.size, 1_031_671);
    assert_eq!(
        base.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        base.diff_id.unwrap().to_string(),
        "sha256:e316788416080f27f065d4331bcc37d99873357df5e0805c88fa9f26a42907b1"
    );
    assert_eq!(
        base.created_at.as_deref(),
        Some("2026-11-23T08:52:26.576193411Z")
    );
}

fn local_layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = kiln_testdata::remote_cache_dir().join("local-max");
    fs_err::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    for name in ["index.json", "oci-layout"] {
        fs_err::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    for entry in fs_err::read_dir(src.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        fs_err::copy(
            entry.path(),
            dir.path().join("blobs/sha256").join(entry.file_name()),
        )
        .unwrap();
    }
    dir
}

#[test]
fn the_index_form_and_the_local_layout_read_the_same_cache() {
    let layout = local_layout();
    let local = ImportedCache::from_local_layout(layout.path(), "latest").unwrap();
    let index = ImportedCache::from_manifest(&data("maxindex.manifest.json"), |digest, _| {
        Ok(fs_err::read(local_blob(&digest.to_string())).unwrap())
    })
    .unwrap();
    assert_eq!(local, index);
    let config = "c1f7341eaaa2a2a9b78ece194d1537a2b9b48b04e607b7aa0027b7a01a285197";
    let path = layout.path().join("blobs/sha256").join(config);
    assert_eq!(
        local.config,
        CacheConfig::parse(&fs_err::read(&path).unwrap()).unwrap()
    );
    assert_eq!(local.blobs.len(), local.config.layers.len());
    let err = ImportedCache::from_local_layout(layout.path(), "v2").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid cache import: {} has no cache tagged \"v2\"",
            layout.path().join("index.json").display()
        )
    );
    // A config blob altered on disk is refused.
    let mut bytes = fs_err::read(&path).unwrap();
    bytes[10] ^= 1;
    fs_err::write(&path, &bytes).unwrap();
    let err = ImportedCache::from_local_layout(layout.path(), "latest").unwrap_err();
    assert!(
        matches!(err, kiln_cache::Error::DigestMismatch { .. }),
        "{err}"
    );
    bytes.push(b' ');
    fs_err::write(&path, &bytes).unwrap();
    let err = ImportedCache::from_local_layout(layout.path(), "latest").unwrap_err();
    assert!(
        err.to_string().contains("has more than 1392 bytes"),
        "{err}"
    );
}

#[test]
fn an_inline_cache_counts_into_the_image_layers() {
    let manifest = json("inline.manifest.json");
    let layers = manifest["layers"].as_array().unwrap();
    let cache = ImportedCache::from_image_config(&data("inline.imageconfig.json"), layers)
        .unwrap()
        .unwrap();
    assert_eq!(cache.image_layers.len(), layers.len());
    assert_eq!(cache.chain(1), cache.image_layers[..2].to_vec());
    // An image config without the key carries no cache.
    let busybox = kiln_testdata::busybox_layout()
        .join("blobs/sha256/20985db6718a7603d0553d1e2e2cdc04c65203700ec65fd5cfff760aa2f7dd24");
    let plain = fs_err::read(busybox).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&plain).unwrap()["rootfs"].is_object());
    assert_eq!(
        ImportedCache::from_image_config(&plain, layers).unwrap(),
        None
    );
}

#[test]
fn manifests_that_are_no_cache_or_lie_are_refused() {
    let manifest = data("max.manifest.json");
    // A descriptor size that differs from the config's.
    let err = ImportedCache::from_manifest(&manifest, |_, _| {
        let mut bytes = data("max.cacheconfig.json");
        bytes.push(b'\n');
        Ok(bytes)
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "size mismatch for cache config: its descriptor says 1477 bytes, it has 1478"
    );
    // One blob missing from the manifest's layers.
    let mut value: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    value["layers"].as_array_mut().unwrap().remove(0);
    let err = ImportedCache::from_manifest(
        &serde_json::to_vec(&value).unwrap(),
        fetch_from(&[(MAX_CONFIG, "max.cacheconfig.json")]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cache import: the cache config names blob \
         sha256:1203fc2b7238b0d6994e68624e1abac8a5f117ab33e7db6f9587a4bbb3f6125f \
         that the manifest does not list"
    );
    // An image's manifest.
    let err = ImportedCache::from_manifest(&data("inline.manifest.json"), |_, _| {
        panic!("nothing is fetched")
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cache import: application/vnd.oci.image.manifest.v1+json is not a cache \
         manifest (no application/vnd.buildkit.cacheconfig.v0 config)"
    );
}

#[test]
fn local_import_resolves_digest_tag_or_single_entry_as_buildx() {
    let dir = kiln_testdata::remote_cache_dir().join("local-max");
    let manifest: Digest =
        "sha256:2f59c729682289377222b58ac40ba483388d710069fcbd122d4c47a401aca480"
            .parse()
            .unwrap();
    let by_tag = ImportedCache::from_local(&dir, "latest", None).unwrap();
    assert_eq!(by_tag.config.layers.len(), 4);
    // An unknown tag falls back to the only entry of the index; a digest needs no tag.
    assert_eq!(
        ImportedCache::from_local(&dir, "other", None).unwrap(),
        by_tag
    );
    assert_eq!(
        ImportedCache::from_local(&dir, "other", Some(&manifest)).unwrap(),
        by_tag
    );
    // A digest the layout lacks and a missing directory are import errors to warn about.
    let absent = Digest::from_bytes(b"absent");
    for (dir, digest) in [(dir.clone(), Some(&absent)), (dir.join("missing"), None)] {
        match ImportedCache::from_local(&dir, "latest", digest) {
            Err(kiln_cache::Error::CacheImport { from, .. }) => {
                assert_eq!(from, format!("{}:latest", dir.display()));
            }
            other => panic!("expected a cache import error, got {other:?}"),
        }
    }
}
