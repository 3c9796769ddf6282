//! The content store, metadata, snapshots, garbage collection; concurrency and crash safety.

mod common;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_cache::{
    CacheRecord, Digest, DiskSpace, Error, GcPolicy, ImageRecord, PruneOptions, SnapshotKind, Store,
};
use sha2::Digest as _;

fn sha(data: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
        .parse()
        .unwrap()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0; len];
    rng.fill(&mut data);
    data
}

fn ingest_is_empty(store: &Store) -> bool {
    fs_err::read_dir(store.root().join("ingest"))
        .unwrap()
        .next()
        .is_none()
}

#[test]
fn blob_is_verified_before_it_is_stored() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let data = b"some content";
    let wrong = sha(b"other content");
    match store.write_blob(data, Some(&wrong)) {
        Err(Error::DigestMismatch {
            expected, computed, ..
        }) => {
            assert_eq!(expected, wrong);
            assert_eq!(computed, sha(data));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&sha(data)));
    assert!(!store.has_blob(&wrong));
    assert!(ingest_is_empty(&store));
    let digest = store.write_blob(data, Some(&sha(data))).unwrap();
    assert_eq!(digest, sha(data));
    assert_eq!(
        fs_err::read(root.path().join("blobs/sha256").join(digest.hex())).unwrap(),
        data
    );
}

#[test]
fn threads_writing_the_same_blob_concurrently() {
    let root = tempfile::tempdir().unwrap();
    let data = Arc::new(random(4 << 20, 1));
    let expected = sha(&data);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let data = Arc::clone(&data);
            let path = root.path().to_owned();
            std::thread::spawn(move || {
                // Two stores on one root, as two processes would have.
                let store = Store::open(path).unwrap();
                let mut w = store.writer().unwrap();
                for chunk in data.chunks(64 << 10 | i) {
                    w.write_all(chunk).unwrap();
                }
                let (digest, size) = w.commit(Some(&expected)).unwrap();
                store.record_blob(&digest, size, None).unwrap();
                digest
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.read_blob(&expected).unwrap(), *data);
    assert!(ingest_is_empty(&store));
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// The child side of the multi-process tests: does nothing unless the parent asked for it.
#[test]
fn child_process_entry() {
    let Ok(task) = std::env::var("KILN_CACHE_TEST_CHILD") else {
        return;
    };
    let root = std::env::var("KILN_CACHE_TEST_ROOT").unwrap();
    let store = Store::open(&root).unwrap();
    match task.as_str() {
        "same-blob" => {
            let data = random(8 << 20, 2);
            for _ in 0..5 {
                let digest = store.write_blob(&data, Some(&sha(&data))).unwrap();
                store.record_blob(&digest, data.len() as u64, None).unwrap();
            }
            let id = std::process::id();
            for i in 0..30 {
                let record = CacheRecord {
                    id: format!("{id}-{i}"),
                    description: String::new(),
                    blobs: vec![sha(&data)],
                    snapshots: Vec::new(),
                    size: 1,
                    created: 0,
                    last_used: 0,
                };
                store.put_cache_record(&record).unwrap();
            }
        }
        "ingest-forever" => {
            let _lease = store.lease().unwrap();
            for seed in 100.. {
                let data = random(3 << 20, seed);
                let mut w = store.writer().unwrap();
                for chunk in data.chunks(256 << 10) {
                    w.write_all(chunk).unwrap();
                }
                let (digest, size) = w.commit(Some(&sha(&data))).unwrap();
                store.record_blob(&digest, size, None).unwrap();
                store
                    .put_cache_record(&CacheRecord {
                        id: format!("record-{seed}"),
                        description: String::new(),
                        blobs: vec![digest],
                        snapshots: Vec::new(),
                        size,
                        created: 0,
                        last_used: 0,
                    })
                    .unwrap();
            }
        }
        "busy" => {
            // Never idle for long: the store must still be handed over to the parent.
            let start = Instant::now();
            let mut i = 0;
            while start.elapsed() < Duration::from_secs(4) {
                let id = format!("busy-{i}");
                store.put_cache_record(&snapshot_record(&id, "")).unwrap();
                assert!(store.cache_record(&id).unwrap().is_some());
                i += 1;
            }
            fs_err::write(marker(&root), i.to_string()).unwrap();
        }
        "snapshots-forever" => {
            let _lease = store.lease().unwrap();
            let mut parent: Option<String> = None;
            let id = std::process::id();
            for i in 0.. {
                let active = format!("active-{id}-{i}");
                let mounts = store.prepare(&active, parent.as_deref()).unwrap();
                fs_err::write(mounts.upper.join(format!("f{i}")), format!("content {i}")).unwrap();
                let key = format!("step-{id}-{i}");
                store.commit(&active, &key).unwrap();
                store
                    .put_cache_record(&snapshot_record(&key, &key))
                    .unwrap();
                // Every third step is thrown away again, as a failed step's snapshot is.
                if i % 3 == 2 {
                    let scrap = format!("scrap-{id}-{i}");
                    store.prepare(&scrap, Some(&key)).unwrap();
                    store.remove_snapshot(&scrap).unwrap();
                }
                parent = Some(key);
            }
        }
        "durable-then-sleep" => {
            store
                .put_cache_record(&snapshot_record("flushed", ""))
                .unwrap();
            store.flush().unwrap();
            let blobs: Vec<Digest> = (0..3)
                .map(|i| {
                    store
                        .write_blob(format!("blob {i}").as_bytes(), None)
                        .unwrap()
                })
                .collect();
            store.put_image(&image("durable", &blobs, None)).unwrap();
            fs_err::write(marker(&root), "ready").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "lease-and-sleep" => {
            // A build that holds a lease, killed in the middle of everything.
            let _lease = store.lease().unwrap();
            let _blob = store.write_blob(&random(1 << 20, 7), None).unwrap();
            let mounts = store.prepare("held-active", None).unwrap();
            fs_err::write(mounts.upper.join("f"), random(1 << 20, 8)).unwrap();
            store.commit("held-active", "held").unwrap();
            store.prepare("held-active", Some("held")).unwrap();
            let mut unfinished = store.writer().unwrap();
            unfinished.write_all(&random(1 << 20, 9)).unwrap();
            unfinished.flush().unwrap();
            let scratch = store.scratch_dir().unwrap();
            fs_err::write(scratch.join("view"), "scratch").unwrap();
            let unpacking = tempfile::Builder::new()
                .prefix(&format!("tmp-{}-", kiln_cache::Owner::current().tag()))
                .tempdir_in(store.root().join("snapshots"))
                .unwrap()
                .keep();
            fs_err::write(unpacking.join("layer"), "partial").unwrap();
            store.flush().unwrap();
            fs_err::write(marker(&root), "ready").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(unfinished);
        }
        "export-and-sleep" => {
            // An export killed half way: a temporary file beside its destination, outside
            // the store.
            let dest = std::path::Path::new(&root)
                .parent()
                .unwrap()
                .join("out/image.tar");
            let mut partial = store.temp_file_beside(&dest).unwrap();
            partial.write_all(&random(1 << 20, 10)).unwrap();
            partial.flush().unwrap();
            fs_err::write(marker(&root), "ready").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(partial);
        }
        other => panic!("unknown child task {other}"),
    }
}

/// A file the child writes to tell the parent it got somewhere.
fn marker(root: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    root.as_ref().with_extension("marker")
}

fn snapshot_record(id: &str, snapshot: &str) -> CacheRecord {
    CacheRecord {
        id: id.to_owned(),
        description: String::new(),
        blobs: Vec::new(),
        snapshots: if snapshot.is_empty() {
            Vec::new()
        } else {
            vec![snapshot.to_owned()]
        },
        size: 0,
        created: 0,
        last_used: 0,
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn child(task: &str, root: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_CACHE_TEST_CHILD", task)
        .env("KILN_CACHE_TEST_ROOT", root)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn processes_writing_the_same_blob_and_metadata_concurrently() {
    let root = tempfile::tempdir().unwrap();
    Store::open(root.path()).unwrap();
    let children: Vec<_> = (0..3).map(|_| child("same-blob", root.path())).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(root.path()).unwrap();
    let data = random(8 << 20, 2);
    assert_eq!(store.read_blob(&sha(&data)).unwrap(), data);
    assert_eq!(
        store.cache_records().unwrap().len(),
        90,
        "every process's records committed"
    );
    assert!(ingest_is_empty(&store));
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn kill_during_ingest_leaves_a_consistent_store() {
    let root = tempfile::tempdir().unwrap();
    Store::open(root.path()).unwrap();
    for round in 0..3 {
        let mut c = child("ingest-forever", root.path());
        let start = Instant::now();
        // Let it get some blobs in, then kill it at an arbitrary moment.
        while fs_err::read_dir(root.path().join("blobs/sha256"))
            .unwrap()
            .count()
            < 2 * (round + 1)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "child made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        let store = Store::open(root.path()).unwrap();
        assert_eq!(
            store.check().unwrap(),
            Vec::<String>::new(),
            "round {round}"
        );
        for record in store.cache_records().unwrap() {
            for blob in record.blobs {
                assert!(
                    store.has_blob(&blob),
                    "record {} names missing {blob}",
                    record.id
                );
            }
        }
        // Leftovers are unreferenced; collection clears them and keeps what is recorded.
        let kept = store.cache_records().unwrap().len();
        store.gc().unwrap();
        assert!(ingest_is_empty(&store));
        assert_eq!(store.cache_records().unwrap().len(), kept);
        assert_eq!(store.check().unwrap(), Vec::<String>::new());
    }
    // The next pull into the same store succeeds.
    if common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        let store = Arc::new(Store::open(root.path()).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = kiln_cache::PullOptions {
            credentials: std::sync::Arc::new(kiln_cache::DockerConfigFile::anonymous()),
            ..kiln_cache::PullOptions::default()
        };
        let pulled = rt
            .block_on(kiln_cache::pull(
                Arc::clone(&store),
                "127.0.0.1:5000/library/busybox",
                &options,
                &(),
            ))
            .unwrap();
        assert_eq!(
            pulled.image.manifest.to_string(),
            kiln_testdata::BUSYBOX_MANIFEST_DIGEST
        );
        assert_eq!(store.check().unwrap(), Vec::<String>::new());
    }
}

fn image(name: &str, blobs: &[Digest], chain: Option<Digest>) -> ImageRecord {
    ImageRecord {
        name: name.to_owned(),
        manifest: blobs[0],
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        index: None,
        config: blobs[1],
        layers: blobs[2..].to_vec(),
        diff_ids: Vec::new(),
        chain_id: chain,
        size: 0,
        created: None,
        last_used: 0,
        pending: None,
        config_id: false,
    }
}

fn record(id: &str, blob: Digest, size: u64, last_used: u64) -> CacheRecord {
    CacheRecord {
        id: id.to_owned(),
        description: format!("step {id}"),
        blobs: vec![blob],
        snapshots: Vec::new(),
        size,
        created: last_used,
        last_used,
    }
}

#[test]
fn gc_keeps_roots_and_removes_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let put = |data: &[u8]| {
        let d = store.write_blob(data, None).unwrap();
        store.record_blob(&d, data.len() as u64, None).unwrap();
        d
    };
    let image_blobs: Vec<Digest> = (0..3)
        .map(|i| put(format!("image blob {i}").as_bytes()))
        .collect();
    let cached = put(b"cache blob");
    let orphan = put(b"orphan blob");
    let unrecorded = store.write_blob(b"never recorded", None).unwrap();

    // Snapshots: a committed chain for the image, an active one on it, an orphan.
    let base = store.prepare("build-1", None).unwrap();
    fs_err::write(base.upper.join("file"), "base").unwrap();
    store.commit("build-1", "base").unwrap();
    let active = store.prepare("running", Some("base")).unwrap();
    assert_eq!(active.lowers, [store.committed_dir("base").unwrap()]);
    store.prepare("orphan-active", None).unwrap();
    store.commit("orphan-active", "orphan").unwrap();
    fs_err::create_dir_all(root.path().join("snapshots/tmp-leftover/x")).unwrap();
    fs_err::write(root.path().join("ingest/blob-leftover"), "partial").unwrap();

    store
        .put_image(&image("example/app:1", &image_blobs, None))
        .unwrap();
    store
        .put_cache_record(&record("r1", cached, 10, 1))
        .unwrap();

    let report = store.gc().unwrap();
    let mut removed = vec![orphan, unrecorded];
    removed.sort();
    assert_eq!(report.removed_blobs, removed);
    assert_eq!(report.removed_snapshots, ["orphan"]);
    assert_eq!(report.removed_temporary, 2);
    for d in image_blobs.iter().chain([&cached]) {
        assert!(store.has_blob(d));
    }
    assert!(!store.has_blob(&orphan));
    assert!(store.snapshot("orphan").unwrap().is_none());
    // "base" is kept as the parent of the active snapshot.
    assert_eq!(
        store.snapshot("base").unwrap().unwrap().kind,
        SnapshotKind::Committed
    );
    assert_eq!(
        fs_err::read_to_string(store.committed_dir("base").unwrap().join("file")).unwrap(),
        "base"
    );
    assert_eq!(store.check().unwrap(), Vec::<String>::new());

    // Finishing the build and dropping the image frees everything but the cache record.
    store.remove_snapshot("running").unwrap();
    assert!(store.remove_image("example/app:1").unwrap());
    let report = store.gc().unwrap();
    assert_eq!(report.removed_blobs.len(), 3);
    assert_eq!(report.removed_snapshots, ["base"]);
    assert!(store.has_blob(&cached));
}

#[test]
fn gc_keeps_what_a_lease_holds_until_it_is_released() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let other = Store::open(root.path()).unwrap();
    // A step result and its cache record, made before the build started.
    let old = store.prepare("old-active", None).unwrap();
    fs_err::write(old.upper.join("old"), "old").unwrap();
    store.commit("old-active", "old").unwrap();
    store
        .put_cache_record(&snapshot_record("old-record", "old"))
        .unwrap();

    let lease = store.lease().unwrap();
    // Everything this build writes or finds is held: a blob no record names, a committed
    // snapshot no record names, an active snapshot, and the cache record it hit.
    let unrecorded = store.write_blob(b"in flight", None).unwrap();
    let step = store.prepare("step-active", Some("old")).unwrap();
    fs_err::write(step.upper.join("new"), "new").unwrap();
    store.commit("step-active", "step").unwrap();
    store.prepare("running", Some("step")).unwrap();
    assert!(store.cache_record("old-record").unwrap().is_some());
    // Another process prunes everything meanwhile: it does not wait, and removes none of it.
    let report = other
        .prune(&PruneOptions {
            all: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(report.removed_records.is_empty(), "{report:?}");
    assert!(report.gc.removed_blobs.is_empty(), "{report:?}");
    assert!(report.gc.removed_snapshots.is_empty(), "{report:?}");
    assert!(store.has_blob(&unrecorded));
    for key in ["old", "step"] {
        assert_eq!(
            store.snapshot(key).unwrap().unwrap().kind,
            SnapshotKind::Committed
        );
    }
    assert_eq!(
        store.lowers("step").unwrap(),
        [
            store.committed_dir("step").unwrap(),
            store.committed_dir("old").unwrap()
        ]
    );
    assert!(store.cache_record("old-record").unwrap().is_some());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());

    // Released (and the step finished), the same prune removes all of it.
    store.remove_snapshot("running").unwrap();
    store.flush().unwrap();
    drop(lease);
    let report = other
        .prune(&PruneOptions {
            all: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, ["old-record"]);
    assert_eq!(report.gc.removed_blobs, [unrecorded]);
    assert_eq!(report.gc.removed_snapshots, ["old", "step"]);
    assert!(!store.has_blob(&unrecorded));
    assert!(store.snapshot("step").unwrap().is_none());
    assert!(!store.committed_dir("old").unwrap().exists());
    // "in flight" (9 bytes) + "old" + "new" (3 each), each file once.
    assert_eq!(report.gc.freed, 15);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn a_killed_export_leaves_nothing_beside_its_destination_after_gc() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let out = dir.path().join("out");
    let store = Store::open(&root).unwrap();
    // Atomic writes of older versions (the cache key history, local checksums), which made
    // untagged temporary names in the store.
    fs_err::write(root.join(".tmpAbC123"), "history").unwrap();
    fs_err::create_dir_all(root.join("local-checksums")).unwrap();
    fs_err::write(root.join("local-checksums/.tmpXyZ789"), "checksums").unwrap();
    fs_err::write(root.join("local-checksums/0123abcd"), "kept").unwrap();
    let mut c = child("export-and-sleep", &root);
    wait_for("the child", Duration::from_secs(30), || {
        marker(&root).exists()
    });
    // The destination's directory also holds files that are not the child's.
    fs_err::write(out.join("image.tar"), "the previous export").unwrap();
    fs_err::write(out.join(".image.tar.tmp-abc"), "someone else's").unwrap();
    let mine = store.temp_file_beside(&out.join("image.tar")).unwrap();
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let partial = names(&out)
        .into_iter()
        .find(|n| n.contains(&format!(".tmp-p{}s", c.id())))
        .expect("the child's temporary file");
    assert!(partial.starts_with(".image.tar.tmp-"), "{partial}");

    // While it lives, its temporary file stays.
    let report = store.gc().unwrap();
    assert_eq!(report.removed_temporary, 2, "{report:?}");
    assert!(out.join(&partial).is_file());
    assert!(!root.join(".tmpAbC123").exists());
    assert_eq!(names(&root.join("local-checksums")), ["0123abcd"]);

    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let report = store.gc().unwrap();
    // The partial file and the child's scratch directory.
    assert_eq!(report.removed_temporary, 2, "{report:?}");
    let mut expected = vec![
        ".image.tar.tmp-abc".to_owned(),
        "image.tar".to_owned(),
        mine.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ];
    expected.sort();
    assert_eq!(names(&out), expected);
    assert_eq!(
        fs_err::read_to_string(out.join("image.tar")).unwrap(),
        "the previous export"
    );
    drop(mine);
}

#[test]
fn a_killed_process_leaves_nothing_after_gc() {
    let root = tempfile::tempdir().unwrap();
    drop(Store::open(root.path()).unwrap());
    let mut c = child("lease-and-sleep", root.path());
    wait_for("the child", Duration::from_secs(30), || {
        marker(root.path()).exists()
    });
    // While it lives, a collection keeps what it holds and writes.
    let store = Store::open(root.path()).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.void_leases, 0);
    assert!(report.removed_snapshots.is_empty(), "{report:?}");
    assert_eq!(report.removed_temporary, 0);
    let ingest = fs_err::read_dir(root.path().join("ingest"))
        .unwrap()
        .count();
    assert_eq!(ingest, 1, "the child's unfinished blob");
    assert!(root.path().join("snapshots/active/held-active").is_dir());

    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.void_leases, 1);
    assert_eq!(report.removed_snapshots, ["held", "held-active"]);
    assert_eq!(report.removed_blobs.len(), 1);
    // The unfinished blob, the unpack directory and the scratch directory.
    assert_eq!(report.removed_temporary, 3);
    assert!(report.freed >= 3 << 20, "{report:?}");
    let mut left = kiln_cache::Files::new();
    for dir in ["blobs", "ingest", "snapshots", "tmp"] {
        left.add(&root.path().join(dir)).unwrap();
    }
    assert_eq!(left.bytes(), 0, "left behind");
    assert!(store.snapshots().unwrap().is_empty());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Cache records `r0`, `r1`, ... last used the given days ago, each naming a blob of random
/// bytes (seeded from `seed`) of the given size; returns the blobs.
fn aged_records(store: &Store, ages_and_sizes: &[(u64, usize)], seed: u64) -> Vec<Digest> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut blobs = Vec::new();
    for (i, (age_days, size)) in ages_and_sizes.iter().enumerate() {
        let data = random(*size, seed + i as u64);
        let d = store.write_blob(&data, None).unwrap();
        store.record_blob(&d, *size as u64, None).unwrap();
        store
            .put_cache_record(&record(
                &format!("r{i}"),
                d,
                *size as u64,
                now - age_days * 86400,
            ))
            .unwrap();
        blobs.push(d);
    }
    blobs
}

#[test]
fn prune_filters_and_du() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let blobs = aged_records(&store, &[(30, 1000), (10, 2000), (2, 3000), (0, 4000)], 0);
    // Using r0 again makes it the most recently used: the age filter keeps it.
    assert!(store.touch_cache_record("r0").unwrap());
    assert!(!store.touch_cache_record("missing").unwrap());
    let usage = store.du().unwrap();
    let sizes: Vec<(&str, u64)> = usage
        .entries
        .iter()
        .map(|e| (e.id.as_str(), e.size))
        .collect();
    assert_eq!(
        sizes,
        [("r3", 4000), ("r2", 3000), ("r1", 2000), ("r0", 1000)]
    );
    assert!(usage.total >= 10_000);

    // Older than a week: r0 and r1.
    let report = store
        .prune(&PruneOptions {
            older_than: Some(Duration::from_secs(7 * 86400)),
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, ["r1"]);
    assert!(!store.has_blob(&blobs[1]));
    assert!(store.has_blob(&blobs[0]) && store.has_blob(&blobs[2]));

    // Keep at most 5000 bytes: the least recently used (r2) goes.
    let report = store
        .prune(&PruneOptions {
            keep_bytes: Some(5000),
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, ["r2"]);
    assert_eq!(report.gc.freed, 3000);
    assert!(store.has_blob(&blobs[3]));

    let report = store
        .prune(&PruneOptions {
            all: true,
            ..PruneOptions::default()
        })
        .unwrap();
    let mut removed = report.removed_records.clone();
    removed.sort();
    assert_eq!(removed, ["r0", "r3"]);
    assert!(store.cache_records().unwrap().is_empty());
    assert_eq!(store.du().unwrap().total, 0);
}

#[test]
fn gc_policies_remove_least_recently_used_records_until_under_the_limit_and_keep_what_leases_hold()
{
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let other = Store::open(root.path()).unwrap();
    // r0 is the oldest, r3 the newest.
    let blobs = aged_records(
        &store,
        &[(40, 1000), (30, 2000), (20, 3000), (1, 4000)],
        100,
    );
    store.flush().unwrap();
    // A build holds r0, the least recently used.
    let lease = store.lease().unwrap();
    assert!(store.cache_record("r0").unwrap().is_some());

    // At most 5000 bytes: the least recently used records no lease holds go, until the rest
    // fit.
    let at_most = |bytes| GcPolicy {
        max_used_space: Some(DiskSpace::Bytes(bytes)),
        ..GcPolicy::default()
    };
    let reports = other.apply_gc_policies(&[at_most(5000)]).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].removed_records, ["r1", "r2"]);
    assert_eq!(reports[0].gc.freed, 5000);
    assert!(!store.has_blob(&blobs[1]) && !store.has_blob(&blobs[2]));
    assert!(store.has_blob(&blobs[0]) && store.has_blob(&blobs[3]));
    // Under the limit, nothing more goes.
    let reports = other.apply_gc_policies(&[at_most(5000)]).unwrap();
    assert!(reports[0].removed_records.is_empty());

    // Released, r0 goes first; with keep-duration only what is unused that long.
    drop(lease);
    let unused_for = |days: u64, bytes| GcPolicy {
        keep_duration: Some(Duration::from_secs(days * 86400)),
        ..at_most(bytes)
    };
    let reports = other.apply_gc_policies(&[unused_for(50, 0)]).unwrap();
    assert!(reports[0].removed_records.is_empty());
    let reports = other
        .apply_gc_policies(&[unused_for(10, 0), at_most(4000)])
        .unwrap();
    assert_eq!(reports[0].removed_records, ["r0"]);
    assert!(reports[1].removed_records.is_empty());
    let ids: Vec<String> = store
        .cache_records()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r3"]);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn snapshot_lifecycle_and_mounts() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let m = store.prepare("step-1", None).unwrap();
    assert!(m.lowers.is_empty() && m.upper.is_dir() && m.work.is_dir());
    fs_err::write(m.upper.join("a"), "1").unwrap();
    store.commit("step-1", "layer-1").unwrap();
    let m = store.prepare("step-2", Some("layer-1")).unwrap();
    fs_err::write(m.upper.join("b"), "2").unwrap();
    store.commit("step-2", "layer-2").unwrap();
    let m = store.prepare("step-3", Some("layer-2")).unwrap();
    assert_eq!(m, store.mounts("step-3").unwrap());
    assert_eq!(
        m.lowers,
        [
            store.committed_dir("layer-2").unwrap(),
            store.committed_dir("layer-1").unwrap()
        ]
    );
    assert!(matches!(
        store.prepare("step-3", None),
        Err(Error::SnapshotExists { .. })
    ));
    assert!(matches!(
        store.prepare("x", Some("missing")),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        store.prepare("../evil", None),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert_eq!(
        store
            .snapshot("layer-2")
            .unwrap()
            .unwrap()
            .parent
            .as_deref(),
        Some("layer-1")
    );
    store.remove_snapshot("step-3").unwrap();
    // The directory goes once the removal is durable.
    store.flush().unwrap();
    assert!(!m.upper.exists());
    assert!(matches!(
        store.mounts("step-3"),
        Err(Error::SnapshotNotFound { .. })
    ));
}

#[test]
fn layers_unpack_into_chain_snapshots_with_checked_diff_ids() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let src = tempfile::tempdir().unwrap();
    fs_err::create_dir(src.path().join("d")).unwrap();
    fs_err::write(src.path().join("d/b"), "bee").unwrap();
    fs_err::write(src.path().join("a"), "ay").unwrap();
    let zstd = kiln_cache::LayerOptions {
        compression: kiln_cache::Compression::Zstd { level: 3 },
        ..kiln_cache::LayerOptions::default()
    };
    let layer = store
        .write_layer(src.path(), kiln_cache::DiffSource::Directory, &zstd)
        .unwrap();
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(sha(&store.read_blob(&layer.digest).unwrap()), layer.digest);

    // A diff ID that does not match: nothing recorded, nothing left behind.
    let wrong = sha(b"wrong");
    match store.unpack_snapshot(None, &layer.digest, &wrong) {
        Err(Error::DigestMismatch { computed, .. }) => assert_eq!(computed, layer.diff_id),
        other => panic!("expected a diff ID mismatch, got {other:?}"),
    }
    assert!(store.snapshots().unwrap().is_empty());
    let names: Vec<_> = fs_err::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("tmp-")), "{names:?}");

    let chain = store
        .unpack_snapshot(None, &layer.digest, &layer.diff_id)
        .unwrap();
    assert_eq!(chain, layer.diff_id, "the first chain ID is the diff ID");
    let dir = store.committed_dir(&chain.to_string()).unwrap();
    assert_eq!(fs_err::read_to_string(dir.join("d/b")).unwrap(), "bee");
    assert!(dir.ends_with(format!("sha256-{}", chain.hex())));

    // A second layer stacks on the first, keyed by the OCI chain ID.
    let src2 = tempfile::tempdir().unwrap();
    fs_err::write(src2.path().join("c"), "sea").unwrap();
    let layer2 = store
        .write_layer(
            src2.path(),
            kiln_cache::DiffSource::Directory,
            &kiln_cache::LayerOptions::default(),
        )
        .unwrap();
    let chain2 = store
        .unpack_snapshot(Some(&chain), &layer2.digest, &layer2.diff_id)
        .unwrap();
    assert_eq!(
        chain2,
        sha(format!("{chain} {}", layer2.diff_id).as_bytes())
    );
    assert_eq!(
        store.lowers(&chain2.to_string()).unwrap(),
        [
            store.committed_dir(&chain2.to_string()).unwrap(),
            dir.clone()
        ]
    );
    // Unpacked once: a second call finds it.
    let before = fs_err::metadata(&dir).unwrap().ino();
    assert_eq!(
        store
            .unpack_snapshot(None, &layer.digest, &layer.diff_id)
            .unwrap(),
        chain
    );
    assert_eq!(fs_err::metadata(&dir).unwrap().ino(), before);

    // The flattened root file system.
    let rootfs = root.path().join("rootfs");
    store
        .export_rootfs(&[layer.digest, layer2.digest], &rootfs)
        .unwrap();
    assert_eq!(common::list_files(&rootfs), ["a", "c", "d", "d/b"]);
}

#[test]
fn concurrent_unpacks_of_one_layer_agree() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let src = tempfile::tempdir().unwrap();
    for i in 0..200 {
        fs_err::write(src.path().join(format!("f{i}")), random(20_000, i)).unwrap();
    }
    let layer = store
        .write_layer(
            src.path(),
            kiln_cache::DiffSource::Directory,
            &kiln_cache::LayerOptions::default(),
        )
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            let layer = layer.clone();
            std::thread::spawn(move || {
                store
                    .unpack_snapshot(None, &layer.digest, &layer.diff_id)
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), layer.diff_id);
    }
    let names: Vec<_> = fs_err::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("tmp-")), "{names:?}");
    let dir = store.committed_dir(&layer.diff_id.to_string()).unwrap();
    assert_eq!(common::list_files(&dir).len(), 200);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Mounts an overlay for `m` at `target`; unmounts on drop.
struct Overlay(std::path::PathBuf);

impl Overlay {
    fn mount(m: &kiln_cache::Mounts, target: &std::path::Path) -> nix::Result<Self> {
        let lowers: Vec<String> = m.lowers.iter().map(|p| p.display().to_string()).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            m.upper.display(),
            m.work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )?;
        Ok(Self(target.to_owned()))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

#[test]
fn serial_snapshots_stack_under_a_real_overlay_mount() {
    if !common::require(common::is_root(), "root (overlay mounts)") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let src = tempfile::tempdir().unwrap();
    for f in ["a", "d/x", "d/y", "gone"] {
        let p = src.path().join(f);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, f).unwrap();
    }
    let options = kiln_cache::LayerOptions::default();
    let layer1 = store
        .write_layer(src.path(), kiln_cache::DiffSource::Directory, &options)
        .unwrap();
    let chain1 = store
        .unpack_snapshot(None, &layer1.digest, &layer1.diff_id)
        .unwrap();

    // A step changes the tree through overlayfs.
    let mounts = store.prepare("step", Some(&chain1.to_string())).unwrap();
    let merged = root.path().join("merged");
    fs_err::create_dir(&merged).unwrap();
    {
        let _mount = Overlay::mount(&mounts, &merged).unwrap();
        fs_err::remove_file(merged.join("gone")).unwrap();
        fs_err::remove_dir_all(merged.join("d")).unwrap();
        fs_err::create_dir(merged.join("d")).unwrap();
        fs_err::write(merged.join("d/new"), "new").unwrap();
        fs_err::write(merged.join("b"), "b").unwrap();
    }
    let layer2 = store
        .write_layer(
            &mounts.upper,
            kiln_cache::DiffSource::OverlayUpper,
            &options,
        )
        .unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut kiln_cache::decompress(store.open_blob(&layer2.digest).unwrap()).unwrap(),
        &mut plain,
    )
    .unwrap();
    let mut paths: Vec<String> = tar::Archive::new(plain.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, [".wh.gone", "b", "d", "d/.wh..wh..opq", "d/new"]);
    store.commit("step", "step-result").unwrap();

    // Flattened: the merged view.
    let rootfs = root.path().join("rootfs");
    store
        .export_rootfs(&[layer1.digest, layer2.digest], &rootfs)
        .unwrap();
    assert_eq!(common::list_files(&rootfs), ["a", "b", "d", "d/new"]);

    // Unpacked as overlay snapshots and mounted again: the same view.
    let chain2 = store
        .unpack_snapshot(Some(&chain1), &layer2.digest, &layer2.diff_id)
        .unwrap();
    let mounts = store.prepare("check", Some(&chain2.to_string())).unwrap();
    let _mount = Overlay::mount(&mounts, &merged).unwrap();
    assert_eq!(common::list_files(&merged), ["a", "b", "d", "d/new"]);
    assert_eq!(fs_err::read_to_string(merged.join("d/new")).unwrap(), "new");
}

#[test]
fn a_busy_process_hands_the_metadata_over() {
    let root = tempfile::tempdir().unwrap();
    drop(Store::open(root.path()).unwrap());
    let mut busy = child("busy", root.path());
    // Let the child take the database and keep it busy.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let store = Store::open(root.path()).unwrap();
    store
        .put_cache_record(&snapshot_record("parent", ""))
        .unwrap();
    let waited = start.elapsed();
    drop(store);
    assert!(
        busy.try_wait().unwrap().is_none(),
        "the child finished before the parent got in: the test proves nothing"
    );
    assert!(
        waited < Duration::from_secs(2),
        "the parent waited {waited:?} for a busy holder"
    );
    assert!(busy.wait().unwrap().success());
    let written: usize = fs_err::read_to_string(marker(root.path()))
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(root.path()).unwrap();
    let records = store.cache_records().unwrap();
    assert!(records.iter().any(|r| r.id == "parent"));
    assert_eq!(
        records.iter().filter(|r| r.id.starts_with("busy-")).count(),
        written,
        "every record of the busy process is kept"
    );
}

#[test]
fn lazy_records_are_durable_when_the_store_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mounts = store.prepare("active", None).unwrap();
    fs_err::write(mounts.upper.join("f"), "data").unwrap();
    store.commit("active", "done").unwrap();
    store
        .put_cache_record(&snapshot_record("key", "done"))
        .unwrap();
    store.remove_snapshot("done").ok();
    let active_dir = root.path().join("snapshots/active/active");
    drop(store);
    assert!(
        !active_dir.exists(),
        "the committed active directory is removed"
    );
    let store = Store::open(root.path()).unwrap();
    assert_eq!(
        store.cache_record("key").unwrap().unwrap().snapshots,
        ["done"]
    );
    assert!(store.snapshot("done").unwrap().is_none());
    assert!(!store.committed_dir("done").unwrap().exists());
    let leftovers: Vec<_> = fs_err::read_dir(root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn kill_during_snapshot_commits_leaves_a_consistent_store() {
    let root = tempfile::tempdir().unwrap();
    drop(Store::open(root.path()).unwrap());
    for round in 0..3_usize {
        let mut c = child("snapshots-forever", root.path());
        let committed = root.path().join("snapshots/committed");
        let before = fs_err::read_dir(&committed).unwrap().count();
        wait_for("the child's snapshots", Duration::from_secs(30), || {
            fs_err::read_dir(&committed).unwrap().count() >= before + 20
        });
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..1500)));
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        let store = Store::open(root.path()).unwrap();
        assert_eq!(
            store.check().unwrap(),
            Vec::<String>::new(),
            "round {round}"
        );
        for record in store.cache_records().unwrap() {
            for key in &record.snapshots {
                let i = key.rsplit('-').next().unwrap();
                let dir = store.committed_dir(key).unwrap();
                assert_eq!(
                    fs_err::read_to_string(dir.join(format!("f{i}"))).unwrap(),
                    format!("content {i}"),
                    "record {} names an incomplete snapshot",
                    record.id
                );
                assert_eq!(store.lowers(key).unwrap()[0], dir);
            }
        }
        store.gc().unwrap();
        assert_eq!(store.check().unwrap(), Vec::<String>::new());
        // Collected: only recorded snapshots and no leftovers remain.
        let recorded: Vec<String> = store
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect();
        for entry in fs_err::read_dir(&committed).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(recorded.contains(&name), "unrecorded {name} survived gc");
        }
        let tmp = fs_err::read_dir(root.path().join("snapshots"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("tmp-")
            })
            .count();
        assert_eq!(tmp, 0);
    }
}

#[test]
fn durable_writes_survive_a_kill() {
    let root = tempfile::tempdir().unwrap();
    drop(Store::open(root.path()).unwrap());
    let mut c = child("durable-then-sleep", root.path());
    wait_for("the child", Duration::from_secs(30), || {
        marker(root.path()).exists()
    });
    c.kill().unwrap(); // SIGKILL, while it may still hold the database
    c.wait().unwrap();
    let store = Store::open(root.path()).unwrap();
    assert!(store.image("durable").unwrap().is_some());
    assert!(store.cache_record("flushed").unwrap().is_some());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Bytes of the regular files and symbolic links under `dirs`, each inode once, as `find`
/// lists them: the file system's own answer.
fn find_bytes(root: &std::path::Path) -> u64 {
    let dirs: Vec<std::path::PathBuf> = Store::MEASURED_DIRS
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.exists())
        .collect();
    let out = Command::new("find")
        .args(&dirs)
        .args([
            "(",
            "-type",
            "f",
            "-o",
            "-type",
            "l",
            ")",
            "-printf",
            "%D:%i %s\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut seen = std::collections::HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (inode, size) = line.split_once(' ').unwrap();
        seen.insert(inode.to_owned(), size.parse::<u64>().unwrap());
    }
    seen.values().sum()
}

#[test]
fn prune_frees_what_the_measure_of_du_says_and_cache_mounts_go_unless_held() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // A cached step whose file has two names, and a second snapshot hard-linking it (as a
    // stored image's snapshot does): the file counts once, before and when freed.
    let step = store.prepare("step-active", None).unwrap();
    fs_err::write(step.upper.join("big"), random(300_000, 1)).unwrap();
    fs_err::hard_link(step.upper.join("big"), step.upper.join("big2")).unwrap();
    fs_err::write(step.upper.join("own"), random(50_000, 2)).unwrap();
    store.commit("step-active", "step").unwrap();
    store
        .put_cache_record(&snapshot_record("step-record", "step"))
        .unwrap();
    let linked = store.prepare("linked-active", None).unwrap();
    fs_err::hard_link(
        store.committed_dir("step").unwrap().join("big"),
        linked.upper.join("big"),
    )
    .unwrap();
    store.commit("linked-active", "linked").unwrap();
    let blob = store.write_blob(&random(20_000, 3), None).unwrap();
    store
        .put_image(&ImageRecord {
            chain_id: None,
            ..image("kept:1", &[blob, blob, blob], None)
        })
        .unwrap();
    store
        .put_cache_record(&snapshot_record("linked-record", "linked"))
        .unwrap();
    // Two cache mounts; a build holds one of them.
    let user = Store::open(root.path()).unwrap();
    let lease = user.lease().unwrap();
    let held = user.cache_mount_dir("held").unwrap();
    assert!(held.created);
    assert!(!user.cache_mount_dir("held").unwrap().created);
    let held = held.path;
    fs_err::write(held.join("data"), random(70_000, 4)).unwrap();
    let free = store.cache_mount_dir("free").unwrap().path;
    fs_err::write(free.join("data"), random(90_000, 5)).unwrap();
    store.flush().unwrap();

    let before = store.disk_files().unwrap().bytes();
    assert_eq!(before, find_bytes(root.path()));
    assert_eq!(before, 300_000 + 50_000 + 20_000 + 70_000 + 90_000);

    // Cache mounts only: the free one goes, the held one stays, no record goes.
    let report = store
        .prune(&PruneOptions {
            kind: Some(kiln_cache::CacheKind::CacheMount),
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(report.removed_records.is_empty());
    assert_eq!(report.gc.removed_cache_mounts, ["free"]);
    assert_eq!(report.gc.freed, 90_000);
    assert_eq!(store.cache_mounts().unwrap(), ["held"]);
    let after = store.disk_files().unwrap().bytes();
    assert_eq!(after, find_bytes(root.path()));
    assert_eq!(before - after, report.gc.freed);

    // Both records: every name of `big` goes (counted once, not three times), and `own`.
    let report = store
        .prune(&PruneOptions {
            older_than: Some(Duration::ZERO),
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, ["linked-record", "step-record"]);
    let left = store.disk_files().unwrap().bytes();
    assert_eq!(left, find_bytes(root.path()));
    assert_eq!(after - left, report.gc.freed);
    assert_eq!(report.gc.freed, 350_000);
    assert_eq!(store.cache_mounts().unwrap(), ["held"]);

    // Released, `--all` takes the last cache mount too.
    drop(lease);
    let report = store
        .prune(&PruneOptions {
            all: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(report.gc.removed_cache_mounts, ["held"]);
    assert_eq!(report.gc.freed, 70_000);
    assert_eq!(store.disk_files().unwrap().bytes(), 20_000);
    assert_eq!(find_bytes(root.path()), 20_000);
}
