//! Storing an exported image in the local image store: the image's snapshots share the
//! build's files through hard links (with the layer's clamped times where it was written with
//! `SOURCE_DATE_EPOCH`), fall back to unpacking, and the stored image's layers are reused by
//! later exports.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_cache::{Compression, LayerOptions, Store};
use kiln_exporters::{ExistingLayers, ImageOptions, build_image, chain_layers, snapshot_chain};

/// A store with a committed build-step snapshot `step` on a committed `base`.
fn store_with_steps() -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let base = store.prepare("active-base", None).unwrap();
    fs_err::write(base.upper.join("base.txt"), "from the base\n").unwrap();
    store.commit("active-base", "base").unwrap();
    let step = store.prepare("active-step", Some("base")).unwrap();
    let dir = step.upper.join("app");
    fs_err::create_dir(&dir).unwrap();
    fs_err::write(dir.join("hello"), "hello\n").unwrap();
    std::os::unix::fs::symlink("hello", dir.join("link")).unwrap();
    fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    xattr::set(&dir, "user.kiln-test", b"kept").unwrap();
    filetime::set_file_mtime(&dir, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
    store.commit("active-step", "step").unwrap();
    (root, store)
}

fn options(epoch: i64) -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip { level: 1 },
        source_date_epoch: Some(epoch),
        threads: 1,
    }
}

#[test]
fn a_stored_image_shares_the_build_snapshots_files() {
    let (_root, store) = store_with_steps();
    let keys = snapshot_chain(&store, "step").unwrap();
    assert_eq!(keys, ["base", "step"]);
    // Without SOURCE_DATE_EPOCH the blob has the snapshot's times: every file is shared.
    let options = LayerOptions {
        source_date_epoch: None,
        ..options(0)
    };
    let layers = chain_layers(&store, &keys, &options, ExistingLayers::Reuse).unwrap();
    let image = build_image(layers, None, &ImageOptions::default()).unwrap();
    let record = store.store_image(&image, "linked:latest").unwrap();

    // The image's snapshots are named by the chain IDs of its layers.
    let bottom = kiln_cache::chain_id(None, &image.layers[0].diff_id);
    let top = kiln_cache::chain_id(Some(&bottom), &image.layers[1].diff_id);
    assert_eq!(record.chain_id, Some(top));
    let lowers = store.lowers(&top.to_string()).unwrap();
    assert_eq!(
        lowers,
        [
            store.committed_dir(&top.to_string()).unwrap(),
            store.committed_dir(&bottom.to_string()).unwrap()
        ]
    );

    // The same inodes as the build's snapshots: the data exists once.
    let built = store.committed_dir("step").unwrap().join("app");
    let image_dir = lowers[0].join("app");
    for name in ["hello", "link"] {
        let a = fs_err::symlink_metadata(built.join(name)).unwrap();
        let b = fs_err::symlink_metadata(image_dir.join(name)).unwrap();
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{name}");
        assert_eq!(b.nlink(), 2, "{name}");
    }
    let base_file = lowers[1].join("base.txt");
    assert_eq!(
        fs_err::metadata(&base_file).unwrap().ino(),
        fs_err::metadata(store.committed_dir("base").unwrap().join("base.txt"))
            .unwrap()
            .ino()
    );
    // Directories are new, with the build's metadata.
    let meta = fs_err::metadata(&image_dir).unwrap();
    assert_ne!(meta.ino(), fs_err::metadata(&built).unwrap().ino());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.mtime(), 1_000_000);
    assert_eq!(
        xattr::get(&image_dir, "user.kiln-test").unwrap().as_deref(),
        Some(b"kept".as_slice())
    );
    assert_eq!(store.check().unwrap(), Vec::<String>::new());

    // Removing the build's snapshot leaves the image whole.
    store.remove_snapshot("step").unwrap();
    assert_eq!(
        fs_err::read_to_string(image_dir.join("hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs_err::read_link(image_dir.join("link")).unwrap(),
        Path::new("hello")
    );
}

/// Every entry under `dir` (relative path) with its mtime in seconds.
fn mtimes(dir: &Path) -> std::collections::BTreeMap<PathBuf, i64> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, i64>) {
        for entry in fs_err::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs_err::symlink_metadata(&path).unwrap();
            out.insert(path.strip_prefix(root).unwrap().to_owned(), meta.mtime());
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_stored_image_has_the_clamped_times_of_its_rewritten_layer() {
    let (_root, store) = store_with_steps();
    let step = store.committed_dir("step").unwrap();
    // An old file stays shared; the new ones (and a second name of one) are later than
    // the epoch.
    let old = step.join("app/old");
    fs_err::write(
        &old, "old
",
    )
    .unwrap();
    filetime::set_file_mtime(&old, FileTime::from_unix_time(1_000, 0)).unwrap();
    fs_err::hard_link(step.join("app/hello"), step.join("hello-again")).unwrap();
    // A directory older than the epoch keeps its time.
    filetime::set_file_mtime(step.join("app"), FileTime::from_unix_time(1_000_000, 0)).unwrap();
    let epoch = 1_500_000_000;
    let built_mtime = fs_err::metadata(step.join("app/hello")).unwrap().mtime();
    assert!(built_mtime > epoch);

    let keys = snapshot_chain(&store, "step").unwrap();
    let layers = chain_layers(&store, &keys, &options(epoch), ExistingLayers::Reuse).unwrap();
    assert_eq!(layers[1].source_date_epoch, Some(epoch));
    let image = build_image(layers, None, &ImageOptions::default()).unwrap();
    let record = store.store_image(&image, "clamped:latest").unwrap();
    let stored = store
        .committed_dir(&record.chain_id.unwrap().to_string())
        .unwrap();

    // The stored snapshot has the times the layer blob has, entry for entry.
    let unpacked = tempfile::tempdir().unwrap();
    kiln_cache::unpack_layer(
        store.open_blob(&image.layers[1].digest).unwrap(),
        unpacked.path(),
        &kiln_cache::UnpackOptions::default(),
    )
    .unwrap();
    let expected = mtimes(unpacked.path());
    assert_eq!(expected[Path::new("app/hello")], epoch);
    assert_eq!(expected[Path::new("app")], 1_000_000);
    assert_eq!(mtimes(&stored), expected);

    // Copied where the time differs, the build's file untouched; shared where it does not.
    let copy = fs_err::metadata(stored.join("app/hello")).unwrap();
    let built = fs_err::metadata(step.join("app/hello")).unwrap();
    assert_ne!(copy.ino(), built.ino());
    assert_eq!(built.mtime(), built_mtime);
    assert_eq!(copy.permissions().mode(), built.permissions().mode());
    assert_eq!(
        fs_err::read_to_string(stored.join("app/hello")).unwrap(),
        "hello\n"
    );
    // The two names of one file stay one file.
    assert_eq!(
        fs_err::metadata(stored.join("hello-again")).unwrap().ino(),
        copy.ino()
    );
    assert_eq!(
        fs_err::metadata(stored.join("app/old")).unwrap().ino(),
        fs_err::metadata(&old).unwrap().ino()
    );
    assert_eq!(
        fs_err::read_link(stored.join("app/link")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn a_missing_build_snapshot_falls_back_to_unpacking() {
    let (_root, store) = store_with_steps();
    let keys = snapshot_chain(&store, "step").unwrap();
    let mut layers = chain_layers(&store, &keys, &options(0), ExistingLayers::Reuse).unwrap();
    layers[1].snapshot = Some("gone".to_owned());
    let image = build_image(layers, None, &ImageOptions::default()).unwrap();
    let record = store.store_image(&image, "unpacked:latest").unwrap();
    let top = store
        .committed_dir(&record.chain_id.unwrap().to_string())
        .unwrap();
    let hello = top.join("app/hello");
    assert_eq!(fs_err::read_to_string(&hello).unwrap(), "hello\n");
    // Unpacked from the blob: a file of its own.
    assert_eq!(fs_err::metadata(&hello).unwrap().nlink(), 1);
    let active = format!("image-link-{}", record.chain_id.unwrap().hex());
    assert!(store.snapshot(&active).unwrap().is_none());
}

#[test]
fn the_stored_images_layers_are_reused_not_rewritten() {
    let (_root, store) = store_with_steps();
    let keys = snapshot_chain(&store, "step").unwrap();
    let layers = chain_layers(&store, &keys, &options(0), ExistingLayers::Reuse).unwrap();
    let image = build_image(layers, None, &ImageOptions::default()).unwrap();
    let record = store.store_image(&image, "base:latest").unwrap();

    // A step on top of the stored image, exported with another epoch: the base image's
    // layers keep their blobs (BuildKit never rewrites a base image's layers), the new
    // step's layer is written with the new epoch.
    let top = record.chain_id.unwrap().to_string();
    let next = store.prepare("active-next", Some(&top)).unwrap();
    fs_err::write(next.upper.join("next.txt"), "next\n").unwrap();
    store.commit("active-next", "next").unwrap();
    let keys = snapshot_chain(&store, "next").unwrap();
    assert_eq!(keys.len(), 3);
    let exported = chain_layers(
        &store,
        &keys,
        &options(1_700_000_000),
        ExistingLayers::Reuse,
    )
    .unwrap();
    assert_eq!(exported[0].digest, image.layers[0].digest);
    assert_eq!(exported[1].digest, image.layers[1].digest);
    let again = chain_layers(&store, &keys[2..], &options(0), ExistingLayers::Reuse).unwrap();
    assert_ne!(exported[2].digest, again[0].digest);
    // And the base image's history is the candidate base history.
    let histories = kiln_exporters::base_histories(&store, &keys).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    let expected: Vec<oci_spec::image::History> =
        serde_json::from_value(config["history"].clone()).unwrap();
    assert_eq!(histories, [expected]);
}
