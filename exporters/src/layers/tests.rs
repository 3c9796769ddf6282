//! Tests of the layers of a snapshot chain.

use super::*;
use kiln_cache::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};

/// A store with one committed snapshot `step` holding `/hello`.
fn store_with_step() -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mounts = store.prepare("active", None).unwrap();
    fs_err::write(mounts.upper.join("hello"), "hello\n").unwrap();
    store.commit("active", "step").unwrap();
    (root, store)
}

#[test]
fn a_step_layer_is_compressed_once_per_compression() {
    let (_root, store) = store_with_step();
    let keys = snapshot_chain(&store, "step").unwrap();
    assert_eq!(keys, ["step"]);
    let gzip = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let first = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].media_type, MEDIA_TYPE_LAYER_GZIP);
    assert!(store.has_blob(&first[0].digest));
    let uncompressed = LayerOptions {
        compression: Compression::Uncompressed,
        ..gzip
    };
    let plain = chain_layers(&store, &keys, &uncompressed, ExistingLayers::Reuse).unwrap();
    // The same tar either way: equal diff IDs; the uncompressed blob is the tar itself.
    assert_eq!(plain[0].diff_id, first[0].diff_id);
    assert_eq!(plain[0].digest, plain[0].diff_id);
    assert_eq!(plain[0].media_type, MEDIA_TYPE_LAYER_TAR);
    let bytes = store.read_blob(&plain[0].digest).unwrap();
    assert_eq!(Digest::from_bytes(&bytes), plain[0].diff_id);

    // Change the snapshot behind the exporter's back: a second export still returns the
    // recorded blob, which shows it was not written again.
    fs_err::write(store.committed_dir("step").unwrap().join("extra"), "x").unwrap();
    let again = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
    assert_eq!(again, first);
    // Another epoch is another layer.
    let other = chain_layers(
        &store,
        &keys,
        &LayerOptions {
            source_date_epoch: Some(1),
            ..gzip
        },
        ExistingLayers::Reuse,
    )
    .unwrap();
    assert_ne!(other[0].diff_id, first[0].diff_id);
}

#[test]
fn forced_compression_converts_stored_layers_once() {
    let (_root, store) = store_with_step();
    let gzip = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let keys = snapshot_chain(&store, "step").unwrap();
    let layers = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
    let image = crate::build_image(layers, None, &crate::ImageOptions::default()).unwrap();
    let record = store.store_image(&image, "base:latest").unwrap();
    // The stored image's snapshot, as a build on it names its base.
    let keys = vec![record.chain_id.unwrap().to_string()];
    let stored = &image.layers[0];

    let zstd = LayerOptions {
        compression: Compression::Zstd { level: 3 },
        ..gzip
    };
    // Reused as it is by default, whatever the export's compression.
    let reused = chain_layers(&store, &keys, &zstd, ExistingLayers::Reuse).unwrap();
    assert_eq!(reused[0].digest, stored.digest);
    assert_eq!(reused[0].media_type, MEDIA_TYPE_LAYER_GZIP);
    // Forced: the same tar stream in zstd.
    let forced = chain_layers(&store, &keys, &zstd, ExistingLayers::Recompress).unwrap();
    assert_eq!(forced[0].media_type, MEDIA_TYPE_LAYER_ZSTD);
    assert_eq!(forced[0].diff_id, stored.diff_id);
    assert_ne!(forced[0].digest, stored.digest);
    let blob = store.read_blob(&forced[0].digest).unwrap();
    assert_eq!(blob.len() as u64, forced[0].size);
    assert!(blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a zstd frame");
    // Converted once: the next export finds the blob through its record.
    let converted = store
        .cache_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.id.starts_with(CONVERTED_PREFIX))
        .count();
    assert_eq!(converted, 1);
    let again = chain_layers(&store, &keys, &zstd, ExistingLayers::Recompress).unwrap();
    assert_eq!(again, forced);
    // Uncompressed: the blob is the tar itself. Same compression: nothing to convert.
    let plain = LayerOptions {
        compression: Compression::Uncompressed,
        ..gzip
    };
    let plain = chain_layers(&store, &keys, &plain, ExistingLayers::Recompress).unwrap();
    assert_eq!(plain[0].digest, stored.diff_id);
    assert_eq!(plain[0].media_type, MEDIA_TYPE_LAYER_TAR);
    let same = chain_layers(&store, &keys, &gzip, ExistingLayers::Recompress).unwrap();
    assert_eq!(same[0].digest, stored.digest);
}

/// The blob files in the store (not the records: a blob's file is what a push reads).
fn blob_files(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = walkdir(&store.root().join("blobs"));
    names.sort();
    names
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn a_pending_image_gets_the_blobs_and_manifest_an_export_makes() {
    let (_root, store) = store_with_step();
    // A second step with what a layer may hold besides files: directories with their own
    // times, a symbolic link and a hard link, so that the image's snapshot (links to
    // these) must give the same tar.
    let mounts = store.prepare("active2", Some("step")).unwrap();
    let dir = mounts.upper.join("d/e");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("f"), "f\n").unwrap();
    fs_err::hard_link(dir.join("f"), mounts.upper.join("d/g")).unwrap();
    std::os::unix::fs::symlink("e/f", mounts.upper.join("d/link")).unwrap();
    for (path, time) in [("d/e", 1_000), ("d", 2_000)] {
        let time = filetime::FileTime::from_unix_time(time, 0);
        filetime::set_file_times(mounts.upper.join(path), time, time).unwrap();
    }
    store.commit("active2", "step2").unwrap();
    let keys = snapshot_chain(&store, "step2").unwrap();
    assert_eq!(keys, ["step", "step2"]);
    let gzip = LayerOptions::default();
    let image_options = crate::ImageOptions {
        build_time: Some(0),
        ..crate::ImageOptions::default()
    };
    let before = blob_files(&store);

    // Stored with its manifest pending: the diff ID, no layer blob.
    let pending_layers = chain_diff_ids(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
    assert_eq!(pending_layers.len(), 2);
    assert!(pending_layers.iter().all(|l| l.blob.is_none()));
    let diff_ids: Vec<Digest> = pending_layers.iter().map(|l| l.diff_id).collect();
    let config = crate::image_config(&diff_ids, None, &image_options).unwrap();
    let pending = kiln_cache::PendingManifest {
        blobs: vec![None, None],
        compression: gzip.compression,
        source_date_epoch: None,
        oci_mediatypes: image_options.oci_mediatypes,
    };
    let record = store
        .store_pending_image(&config, &pending_layers, pending, "lazy:1")
        .unwrap();
    store.tag_image("lazy:1", "lazy:2").unwrap();
    assert_eq!(record.id(), Digest::from_bytes(&config));
    assert!(record.layers.is_empty());
    // Only the config blob is new.
    let after = blob_files(&store);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.contains(&record.config.hex()));
    assert!(store.stored_image(&record).is_err());

    // Made when needed: the blob and manifest of an export of the same chain.
    let made = stored_image(&store, &record).unwrap();
    // What an export wrote at build time: the build steps' snapshots, compressed.
    let exported: Vec<Layer> = ["step", "step2"]
        .into_iter()
        .map(|key| {
            let (written, _) = kiln_cache::write_layer(
                &store.committed_dir(key).unwrap(),
                DiffSource::OverlayUpper,
                &gzip,
                Vec::new(),
            )
            .unwrap();
            Layer {
                digest: written.digest,
                size: written.size,
                diff_id: written.diff_id,
                media_type: written.media_type.to_owned(),
                snapshot: None,
                source_date_epoch: None,
            }
        })
        .collect();
    let exported = crate::build_image(exported, None, &image_options).unwrap();
    let blobs = |layers: &[Layer]| -> Vec<(Digest, Digest, u64)> {
        layers
            .iter()
            .map(|l| (l.digest, l.diff_id, l.size))
            .collect()
    };
    assert_eq!(blobs(&made.layers), blobs(&exported.layers));
    assert_eq!(made.manifest_digest, exported.manifest_digest);
    assert!(made.layers.iter().all(|l| store.has_blob(&l.digest)));
    // Both names are complete now, their ID unchanged; the blob is not written again.
    for name in ["lazy:1", "lazy:2"] {
        let now = store.find_image(name).unwrap();
        assert_eq!(now.pending, None);
        assert_eq!(now.manifest, made.manifest_digest);
        assert_eq!(now.id(), record.id());
        assert_eq!(now.layers, [made.layers[0].digest, made.layers[1].digest]);
    }
    // An export of the build's snapshot finds the blob through the diff ID: change the
    // snapshot behind its back and it still answers the blob, not a new one.
    fs_err::write(store.committed_dir("step").unwrap().join("extra"), "x").unwrap();
    let files = blob_files(&store);
    let again = chain_layers(&store, &keys, &gzip, ExistingLayers::Reuse).unwrap();
    assert_eq!(again[0].digest, made.layers[0].digest);
    assert_eq!(blob_files(&store), files);
}

#[test]
fn docker_layer_types_map_to_oci() {
    assert_eq!(
        oci_layer_type(Some("application/vnd.docker.image.rootfs.diff.tar.gzip")),
        MEDIA_TYPE_LAYER_GZIP
    );
    assert_eq!(
        oci_layer_type(Some("application/vnd.oci.image.layer.v1.tar+zstd")),
        MEDIA_TYPE_LAYER_ZSTD
    );
    assert_eq!(
        oci_layer_type(Some("application/vnd.oci.image.layer.v1.tar")),
        MEDIA_TYPE_LAYER_TAR
    );
}
