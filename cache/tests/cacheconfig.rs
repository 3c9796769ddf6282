//! The cache export format against exports made by BuildKit (testdata/remote-cache).

use std::path::PathBuf;

use base64::Engine as _;
use kiln_cache::Digest;
use kiln_cache::cacheconfig::{
    CACHE_CONFIG_MEDIA_TYPE, CacheConfig, CacheConfigError, INLINE_CACHE_KEY,
};

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
fn the_registry_manifest_lists_exactly_the_config_layers() {
    let bytes = data("max.cacheconfig.json");
    let config = CacheConfig::parse(&bytes).unwrap();
    let manifest = json("max.manifest.json");
    assert_eq!(manifest["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(
        manifest["config"]["digest"].as_str().unwrap(),
        Digest::of(&bytes).to_string()
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
