//! `kiln du` and `kiln prune` on a store of their own: busybox pulled from the test registry
//! (127.0.0.1:5000), then, as root, a build that leaves build cache records behind.
//!
//! Needs the registry (and root for the build part); skips saying why, or fails under
//! `KILN_TEST_REQUIRE_ALL=1`.

use kiln_testdata::{is_root, registry_up, skip};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::context_with;

const IMAGE: &str = "127.0.0.1:5000/library/busybox:latest";

fn kiln(root: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("KILN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs kiln, asserts success and returns stdout.
fn ok(root: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kiln(root, args, stdin);
    assert!(
        out.status.success(),
        "kiln {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The data rows of `kiln du`'s table: (ID, RECLAIMABLE, SIZE).
fn du_rows(text: &str) -> Vec<(String, String, String)> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if !header.starts_with("ID ") {
        return Vec::new();
    }
    assert!(
        header.contains(" RECLAIMABLE ")
            && header.contains(" SIZE ")
            && header.ends_with("LAST ACCESSED"),
        "{header}"
    );
    lines
        .take_while(|l| !l.is_empty() && !l.starts_with("Total:"))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (
                cells[0].to_owned(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

fn total_line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} line in {text}"))
        .trim()
}

/// Bytes of regular files under `dir`, summed independently of the store's own accounting.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs_err::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            total += tree_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

#[test]
fn serial_du_and_prune_on_a_pulled_image_and_build_cache() {
    if !registry_up() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");

    // An empty store.
    let empty = ok(&root, &["du"], None);
    assert_eq!(du_rows(&empty), Vec::new());
    assert_eq!(total_line(&empty, "Total:"), "0B");

    ok(&root, &["pull", "-q", IMAGE], None);
    let du = ok(&root, &["du"], None);
    let rows = du_rows(&du);
    assert_eq!(rows.len(), 1, "{du}");
    assert_eq!(rows[0].0, IMAGE);
    assert_eq!(rows[0].1, "false");
    assert_ne!(rows[0].2, "0B");
    assert_eq!(total_line(&du, "Reclaimable:"), "0B");
    assert_ne!(total_line(&du, "Total:"), "0B");
    let blobs_before = tree_bytes(&root.join("blobs"));
    assert!(blobs_before > 0);

    // Pruning never removes images.
    let pruned = ok(&root, &["prune", "--all", "--force"], None);
    assert_eq!(pruned, "Total:\t0B\n");
    assert_eq!(tree_bytes(&root.join("blobs")), blobs_before);
    assert_eq!(du_rows(&ok(&root, &["du"], None)), rows);

    if !is_root() {
        skip("the build-cache part needs root to run containers");
        return;
    }
    // A build leaves cache records (its RUN step's snapshot among them).
    let vector = kiln_testdata::llb_vectors_dir().join("045-workdir-run-pwd/def.pb");
    let context = dir.path().join("context");
    let output = dir.path().join("out");
    fs_err::create_dir_all(&context).unwrap();
    ok(
        &root,
        &[
            "build",
            "--llb",
            vector.to_str().unwrap(),
            "--local",
            &format!("context={}", context.display()),
            "--output",
            &format!("type=local,dest={}", output.display()),
        ],
        None,
    );
    assert_eq!(
        fs_err::read_to_string(output.join("pwd")).unwrap(),
        "/test1/test2"
    );
    let du = ok(&root, &["du"], None);
    let rows = du_rows(&du);
    let cache: Vec<&(String, String, String)> = rows.iter().filter(|r| r.0 != IMAGE).collect();
    assert!(!cache.is_empty(), "{du}");
    assert!(cache.iter().all(|r| r.1 == "true"), "{du}");
    assert!(rows.iter().any(|r| r.0 == IMAGE && r.1 == "false"), "{du}");
    let snapshots_before = tree_bytes(&root.join("snapshots"));

    // Recent records survive an age filter; declining the prompt removes nothing.
    assert_eq!(
        ok(&root, &["prune", "-f", "--filter", "until=1h"], None),
        "Total:\t0B\n"
    );
    let declined = ok(&root, &["prune", "-a"], Some("n\n"));
    assert_eq!(
        declined,
        "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] "
    );
    assert_eq!(du_rows(&ok(&root, &["du"], None)), rows);

    // Confirmed: every cache record goes, listed by ID, and their snapshots with them.
    let pruned = ok(&root, &["prune", "-a"], Some("y\n"));
    let body = pruned
        .strip_prefix(
            "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] ",
        )
        .unwrap();
    let removed = du_rows(body);
    let mut removed_ids: Vec<&str> = removed.iter().map(|r| r.0.as_str()).collect();
    let mut cache_ids: Vec<&str> = cache.iter().map(|r| r.0.as_str()).collect();
    removed_ids.sort_unstable();
    cache_ids.sort_unstable();
    assert_eq!(removed_ids, cache_ids);
    assert_ne!(total_line(body, "Total:"), "0B");
    let after = ok(&root, &["du"], None);
    let left = du_rows(&after);
    assert_eq!(left.len(), 1, "{after}");
    assert_eq!(left[0].0, IMAGE);
    assert_eq!(total_line(&after, "Reclaimable:"), "0B");
    assert!(tree_bytes(&root.join("snapshots")) < snapshots_before);
    assert_eq!(tree_bytes(&root.join("blobs")), blobs_before);
    // The image is still usable: pulling again finds every layer present.
    let pull = ok(&root, &["pull", IMAGE], None);
    assert!(!pull.contains("Pull complete"), "{pull}");
}

#[test]
fn bad_prune_arguments_fail_before_touching_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    for (args, message) in [
        (
            &["prune", "-f", "--filter", "label=x"][..],
            "unsupported filter \"label\"",
        ),
        (
            &["prune", "-f", "--filter", "type=source.git.checkout"][..],
            "unsupported type in filter \"type=source.git.checkout\"",
        ),
        (
            &["prune", "-f", "--filter", "until=3d"][..],
            "invalid duration in filter \"until=3d\"",
        ),
        (
            &["prune", "-f", "--keep-storage", "lots"][..],
            "invalid --keep-storage value \"lots\"",
        ),
        (
            &["prune", "-f", "--max-used-space", "10XB"][..],
            "invalid --max-used-space value \"10XB\"",
        ),
    ] {
        let out = kiln(&root, args, None);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!root.exists(), "{args:?} created the store");
    }
}

/// Bytes of the regular files and symbolic links under `dirs`, each inode once, as `find`
/// lists them.
fn distinct_bytes(dirs: &[&Path]) -> u64 {
    let out = Command::new("find")
        .args(dirs)
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

/// A size as docker prints it (`4.26MB`, `123kB`, `999B`), in bytes.
fn parse_size(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => panic!("unit {unit}"),
    };
    number.parse::<f64>().unwrap() * scale
}

/// Whether docker's three significant digits of `shown` can be `bytes`.
fn about(shown: &str, bytes: u64) -> bool {
    let shown = parse_size(shown);
    (shown - bytes as f64).abs() <= bytes as f64 * 0.01
}

/// The SIZE column of `kiln images` for the repository `repository`.
fn image_size(root: &Path, repository: &str) -> String {
    let images = ok(root, &["images"], None);
    let line = images
        .lines()
        .find(|l| l.split_whitespace().next() == Some(repository))
        .unwrap_or_else(|| panic!("no {repository} in {images}"));
    line.split_whitespace().last().unwrap().to_owned()
}

#[test]
fn serial_hard_linked_files_count_once_in_images_and_du() {
    if !registry_up() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    ok(&root, &["pull", "-q", IMAGE], None);
    // The image's size is its files' bytes (all of them in the store's one snapshot).
    let snapshots = root.join("snapshots");
    let busybox = distinct_bytes(&[&snapshots]);
    let size = image_size(&root, "127.0.0.1:5000/library/busybox");
    assert!(about(&size, busybox), "{size} is not {busybox} bytes");
    let du = ok(&root, &["du"], None);
    let total = distinct_bytes(&[&root.join("blobs"), &snapshots]);
    assert!(about(total_line(&du, "Total:"), total), "{total}: {du}");
    assert!(!du.contains("Shared:"), "{du}");

    if !is_root() {
        skip("the hard-link part needs root to build");
        return;
    }
    // A layer with three names of one 500 kB file, stored as an image: the image counts the
    // file once, and its snapshot hard-links the build's, so du counts it once in the total
    // and as shared between the image and the build cache.
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nRUN dd if=/dev/zero of=/big bs=1000 count=500 && ln /big /big2 && ln /big /big3\n"
        ),
    )
    .unwrap();
    ok(
        &root,
        &["build", "-t", "linked:1", context.to_str().unwrap()],
        None,
    );
    let size = image_size(&root, "linked");
    assert!(about(&size, busybox + 500_000), "{size}");
    let du = ok(&root, &["du"], None);
    let total = distinct_bytes(&[&root.join("blobs"), &snapshots]);
    assert!(about(total_line(&du, "Total:"), total), "{total}: {du}");
    let shared = parse_size(total_line(&du, "Shared:"));
    let private = parse_size(total_line(&du, "Private:"));
    assert!(shared >= 500_000.0, "{du}");
    assert!(
        (shared + private - total as f64).abs() <= total as f64 * 0.02,
        "{du}"
    );
    let sizes: f64 = du_rows(&du).iter().map(|r| parse_size(&r.2)).sum();
    assert!(
        sizes > total as f64,
        "shared files not in every entry: {du}"
    );
}

/// Bytes of the store's data as `find` sees it, each inode once: the directories `kiln du`
/// totals (`kiln_cache::Store::MEASURED_DIRS`).
fn store_bytes(root: &Path) -> u64 {
    let dirs: Vec<std::path::PathBuf> = ["blobs", "ingest", "snapshots", "tmp", "cache-mounts"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.exists())
        .collect();
    distinct_bytes(&dirs.iter().map(|d| d.as_path()).collect::<Vec<_>>())
}

/// With the registry up and as root (else skipping, saying `why` root is needed), a
/// temporary directory and the store's root in it.
fn registry_and_root(why: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !registry_up() {
        return None;
    }
    if !is_root() {
        skip(why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Some((dir, root))
}

/// `kiln du --format json`, parsed.
fn du_json(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(root, &["du", "--format", "json"], None)).unwrap()
}

/// The entries of a JSON document's list `key`, as (id, type, reclaimable, size).
pub(crate) fn json_entries(
    document: &serde_json::Value,
    key: &str,
) -> Vec<(String, String, bool, u64)> {
    let mut entries: Vec<_> = document[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
                e["reclaimable"].as_bool().unwrap(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn serial_du_sizes_are_what_prune_frees_and_what_is_on_disk() {
    let Some((dir, root)) =
        registry_and_root("du's exact sizes need a build, which needs root to run containers")
    else {
        return;
    };
    // An image sharing files with the build cache (its snapshot hard-links the build's), a
    // file of three names, and a cache mount.
    let context = context_with(
        dir.path(),
        &format!(
            "FROM {IMAGE}\n\
             RUN head -c 300000 /dev/urandom > /big && ln /big /big2 && ln /big /big3\n\
             RUN --mount=type=cache,target=/cache head -c 70000 /dev/urandom > /cache/data\n\
             RUN head -c 5000 /dev/urandom > /small\n"
        ),
    );
    ok(
        &root,
        &["build", "-t", "exact:1", context.to_str().unwrap()],
        None,
    );

    let before = du_json(&root);
    let on_disk = store_bytes(&root);
    assert_eq!(before["total"].as_u64().unwrap(), on_disk, "{before:#}");
    let entries = json_entries(&before, "entries");
    let image = entries
        .iter()
        .find(|e| e.0 == "docker.io/library/exact:1")
        .unwrap_or_else(|| panic!("no image entry: {before:#}"));
    assert_eq!((image.1.as_str(), image.2), ("image", false));
    let mount = entries
        .iter()
        .find(|e| e.1 == "exec.cachemount")
        .unwrap_or_else(|| panic!("no cache mount entry: {before:#}"));
    assert_eq!(
        mount.3,
        distinct_bytes(&[&root.join("cache-mounts").join(&mount.0)])
    );
    assert!(mount.3 >= 70_000, "{before:#}");
    assert!(
        entries.iter().any(|e| e.1 == "regular" && e.2),
        "{before:#}"
    );
    // The image shares the build's files: counted once in the total, in both entries.
    assert!(before["shared"].as_u64().unwrap() >= 305_000, "{before:#}");
    assert_eq!(
        before["shared"].as_u64().unwrap() + before["private"].as_u64().unwrap(),
        on_disk
    );
    // The table lists the same entries.
    let table = ok(&root, &["du"], None);
    let mut rows: Vec<(String, bool)> = du_rows(&table)
        .into_iter()
        .map(|r| (r.0, r.1 == "true"))
        .collect();
    rows.sort();
    let listed: Vec<(String, bool)> = entries.iter().map(|e| (e.0.clone(), e.2)).collect();
    assert_eq!(rows, listed, "{table}");

    // Pruning everything removes exactly the reclaimable entries, with the sizes du gave
    // them, and frees what du called reclaimable: the bytes that leave the disk.
    let pruned: serde_json::Value =
        serde_json::from_str(&ok(&root, &["prune", "-a", "-f", "--format", "json"], None)).unwrap();
    let reclaimable: Vec<_> = entries.iter().filter(|e| e.2).cloned().collect();
    assert_eq!(json_entries(&pruned, "removed"), reclaimable, "{pruned:#}");
    let freed = pruned["freed"].as_u64().unwrap();
    assert_eq!(freed, before["reclaimable"].as_u64().unwrap(), "{before:#}");
    let left = store_bytes(&root);
    assert_eq!(on_disk - left, freed);

    // What is left is the images (the build's and the busybox it pulled), as du measured
    // them before, and nothing else: two entries whose shared files count once make up the
    // whole of the disk.
    let after = du_json(&root);
    let images: Vec<_> = entries.iter().filter(|e| !e.2).cloned().collect();
    assert_eq!(json_entries(&after, "entries"), images, "{after:#}");
    assert_eq!(images.len(), 2, "{after:#}");
    assert_eq!(after["total"].as_u64().unwrap(), left);
    assert_eq!(after["reclaimable"].as_u64().unwrap(), 0);
    let shared = after["shared"].as_u64().unwrap();
    assert!(shared > 0, "{after:#}");
    assert_eq!(images[0].3 + images[1].3 - shared, left, "{after:#}");
}

#[test]
fn serial_prune_keep_storage_removes_least_recently_used_cache_until_the_rest_fits() {
    let Some((dir, root)) =
        registry_and_root("build cache records need a build, which needs root to run containers")
    else {
        return;
    };
    let context = context_with(
        dir.path(),
        &format!(
            "FROM {IMAGE}\n\
             RUN head -c 400000 /dev/urandom > /a\n\
             RUN head -c 200000 /dev/urandom > /b\n"
        ),
    );
    let out = dir.path().join("out");
    ok(
        &root,
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        None,
    );
    let before = du_json(&root);
    let records: Vec<_> = json_entries(&before, "entries")
        .into_iter()
        .filter(|e| e.1 == "regular")
        .collect();
    assert!(records.len() >= 2, "{before:#}");
    let prune = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["prune", "-f", "--format", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(&root, &all, None)).unwrap()
    };

    // Everything fits in 10GB, as in the limits BuildKit's policies take: nothing goes.
    for args in [
        &["--keep-storage", "10GB"][..],
        &["--max-used-space", "10GB"],
        &["--reserved-space", "10GB"],
        &["--keep-storage", "1", "--filter", "until=24h"],
    ] {
        let pruned = prune(args);
        assert_eq!(pruned["removed"], serde_json::json!([]), "{args:?}");
        assert_eq!(pruned["freed"], 0, "{args:?}");
    }
    assert_eq!(du_json(&root)["entries"], before["entries"]);

    // One byte: every record goes, with the size du gave it, and the bytes leave the disk.
    let on_disk = store_bytes(&root);
    let pruned = prune(&["--keep-storage", "1"]);
    assert_eq!(json_entries(&pruned, "removed"), records, "{pruned:#}");
    let freed = pruned["freed"].as_u64().unwrap();
    assert!(freed >= 600_000, "{pruned:#}");
    assert_eq!(on_disk - store_bytes(&root), freed);
    let after = du_json(&root);
    assert!(
        json_entries(&after, "entries")
            .iter()
            .all(|e| e.1 != "regular"),
        "{after:#}"
    );
}

#[test]
fn serial_a_build_applies_the_gc_policies_of_the_configuration() {
    let Some((dir, root)) =
        registry_and_root("build cache records need a build, which needs root to run containers")
    else {
        return;
    };
    let context = context_with(
        dir.path(),
        &format!("FROM {IMAGE}\nRUN head -c 100000 /dev/urandom > /a\n"),
    );
    let build = |config: &Path| {
        let out = dir.path().join("out");
        ok(
            &root,
            &[
                "--config",
                config.to_str().unwrap(),
                "build",
                "--output",
                &format!("type=local,dest={}", out.display()),
                context.to_str().unwrap(),
            ],
            None,
        )
    };
    let regular = || {
        json_entries(&du_json(&root), "entries")
            .into_iter()
            .filter(|e| e.1 == "regular")
            .count()
    };
    // Disabled, the build's records stay.
    let disabled = dir.path().join("disabled.toml");
    fs_err::write(
        &disabled,
        "[gc]\nenabled = false\n[[gc.policy]]\nmaxUsedSpace = 1\n",
    )
    .unwrap();
    build(&disabled);
    assert!(regular() > 0);
    // Enabled, a policy of at most one byte leaves none once the build is done.
    let enabled = dir.path().join("enabled.toml");
    fs_err::write(
        &enabled,
        "[gc]\nenabled = true\n[[gc.policy]]\nmax-used-space = 1\n",
    )
    .unwrap();
    build(&enabled);
    assert_eq!(regular(), 0);
    // A bad policy fails the command, naming the file and the value.
    let bad = dir.path().join("bad.toml");
    fs_err::write(&bad, "[[gc.policy]]\nkeep-duration = \"3d\"\n").unwrap();
    let out = kiln(
        &root,
        &["--config", bad.to_str().unwrap(), "build", "."],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("loading configuration {}", bad.display()))
            && stderr.contains("unknown unit \"d\" in \"3d\""),
        "{stderr}"
    );
}
