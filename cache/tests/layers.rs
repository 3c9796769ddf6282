//! Layer unpack (against crafted malicious tars) and layer writing (round trips, determinism).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use kiln_cache::{
    Compression, DiffSource, Error, LayerLimit, LayerOptions, UnpackLimits, UnpackOptions,
    WhiteoutMode, unpack_layer, write_layer,
};
use sha2::Digest as _;
use tar::EntryType;

const MTIME: u64 = 1_600_000_000;

/// Appends an entry with raw name bytes (the tar crate's safe setters refuse `..` and `/`).
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name.fill(0);
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            old.linkname.fill(0);
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn device(b: &mut tar::Builder<Vec<u8>>, path: &str, major: u32, minor: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(EntryType::Char);
    h.set_mode(0o666);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

/// A destination `root` inside a scratch directory, so escapes into the parent are visible.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    fs_err::create_dir(&root).unwrap();
    (base, root)
}

fn unpack(data: &[u8], root: &Path) -> Result<kiln_cache::Unpacked, Error> {
    unpack_layer(data, root, &UnpackOptions::default())
}

fn assert_unsafe(result: Result<kiln_cache::Unpacked, Error>, reason: &str) {
    match result {
        Err(Error::UnsafeEntry { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!("expected an unsafe-entry error ({reason}), got {other:?}"),
    }
}

#[test]
fn dotdot_entry_is_rejected() {
    let (base, root) = scratch();
    let data = tar_of(|b| raw(b, "../escaped", EntryType::Regular, None, b"x"));
    assert_unsafe(unpack(&data, &root), "`..` in path");
    assert!(!base.path().join("escaped").exists());
    let data = tar_of(|b| raw(b, "a/../../escaped2", EntryType::Regular, None, b"x"));
    assert_unsafe(unpack(&data, &root), "`..` in path");
    assert!(!base.path().join("escaped2").exists());
}

#[test]
fn absolute_entry_is_rejected() {
    let (base, root) = scratch();
    let target = base.path().join("absolute-target");
    let data = tar_of(|b| raw(b, target.to_str().unwrap(), EntryType::Regular, None, b"x"));
    assert_unsafe(unpack(&data, &root), "absolute path");
    assert!(!target.exists());
}

#[test]
fn path_through_symlink_stays_inside_the_root() {
    let (base, root) = scratch();
    let outside = base.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    let outside_rel = outside
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let data = tar_of(|b| {
        raw(
            b,
            "abs",
            EntryType::Symlink,
            Some(outside.to_str().unwrap()),
            b"",
        );
        raw(b, "abs/pwned", EntryType::Regular, None, b"one");
        raw(
            b,
            "rel",
            EntryType::Symlink,
            Some("../../../../../../../../.."),
            b"",
        );
        raw(
            b,
            &format!("rel/{outside_rel}/pwned2"),
            EntryType::Regular,
            None,
            b"two",
        );
    });
    unpack(&data, &root).unwrap();
    assert!(
        !outside.join("pwned").exists(),
        "wrote through an absolute symlink"
    );
    assert!(
        !outside.join("pwned2").exists(),
        "wrote through a relative symlink"
    );
    assert_eq!(
        fs_err::read(root.join(&outside_rel).join("pwned")).unwrap(),
        b"one"
    );
    assert_eq!(
        fs_err::read(root.join(&outside_rel).join("pwned2")).unwrap(),
        b"two"
    );
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let (base, root) = scratch();
    let victim = base.path().join("victim.txt");
    fs_err::write(&victim, "original").unwrap();
    let data = tar_of(|b| {
        raw(
            b,
            "link",
            EntryType::Symlink,
            Some(victim.to_str().unwrap()),
            b"",
        );
        raw(b, "link", EntryType::Regular, None, b"replaced");
    });
    unpack(&data, &root).unwrap();
    assert_eq!(fs_err::read_to_string(&victim).unwrap(), "original");
    let meta = fs_err::symlink_metadata(root.join("link")).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs_err::read(root.join("link")).unwrap(), b"replaced");
}

#[test]
fn hard_links_must_stay_inside_the_root() {
    let (base, root) = scratch();
    let secret = base.path().join("secret");
    fs_err::write(&secret, "s").unwrap();
    let nlink = || fs_err::metadata(&secret).unwrap().nlink();

    let data = tar_of(|b| raw(b, "h", EntryType::Link, Some("../secret"), b""));
    assert_unsafe(unpack(&data, &root), "`..` in path");
    let data = tar_of(|b| raw(b, "h", EntryType::Link, Some(secret.to_str().unwrap()), b""));
    assert_unsafe(unpack(&data, &root), "absolute path");
    let data = tar_of(|b| {
        raw(
            b,
            "s",
            EntryType::Symlink,
            Some(base.path().to_str().unwrap()),
            b"",
        );
        raw(b, "h", EntryType::Link, Some("s/secret"), b"");
    });
    // `s/secret` resolves to `<root>/<base>/secret`, which does not exist.
    assert_unsafe(unpack(&data, &root), "a parent does not exist");
    assert_eq!(nlink(), 1, "a hard link to the outside file was made");
    assert!(!root.join("h").exists());

    // A link to an entry inside the root works and shares the inode.
    let data = tar_of(|b| {
        raw(b, "a", EntryType::Regular, None, b"data");
        raw(b, "b", EntryType::Link, Some("a"), b"");
    });
    unpack(&data, &root).unwrap();
    let (a, b) = (
        fs_err::metadata(root.join("a")).unwrap(),
        fs_err::metadata(root.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn device_nodes_only_when_allowed() {
    let (_base, root) = scratch();
    let data = tar_of(|b| device(b, "null", 1, 3));
    assert_unsafe(unpack(&data, &root), "device nodes are not allowed");
    assert!(fs_err::symlink_metadata(root.join("null")).is_err());
    if !common::require(common::is_root(), "root (mknod)") {
        return;
    }
    let options = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    unpack_layer(data.as_slice(), &root, &options).unwrap();
    let meta = fs_err::symlink_metadata(root.join("null")).unwrap();
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
}

#[test]
fn gzip_bomb_stops_before_the_disk_fills() {
    let (_base, root) = scratch();
    // 3 GiB of zeros in about 3 MB of gzip.
    let (bomb, _) = common::gzip_bomb(3 << 30);
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    match unpack(&bomb, &root) {
        Err(Error::LayerLimit {
            limit: LayerLimit::CompressionRatio,
            value,
            max,
            read,
        }) => {
            assert_eq!(max, 100);
            assert!(value > 100, "{value}");
            assert!(read < 128 << 20, "{read} bytes read");
        }
        other => panic!("expected the compression ratio limit, got {other:?}"),
    }
    assert!(
        common::disk_use(&root) < 128 << 20,
        "{} bytes written",
        common::disk_use(&root)
    );
}

#[test]
fn layer_size_and_entry_limits() {
    let data = tar_of(|b| {
        for i in 0..10 {
            raw(b, &format!("f{i}"), EntryType::Regular, None, &[b'x'; 1000]);
        }
    });
    let options = |limits| UnpackOptions {
        limits,
        ..UnpackOptions::default()
    };
    let (_base, root) = scratch();
    let few_entries = UnpackLimits {
        max_layer_entries: 5,
        ..UnpackLimits::default()
    };
    match unpack_layer(data.as_slice(), &root, &options(few_entries)) {
        Err(Error::LayerLimit {
            limit: LayerLimit::Entries,
            value: 6,
            max: 5,
            ..
        }) => {}
        other => panic!("expected the entry limit, got {other:?}"),
    }
    assert!(!root.join("f5").exists());
    let (_base, root) = scratch();
    let small = UnpackLimits {
        max_layer_size: 4096,
        ..UnpackLimits::default()
    };
    match unpack_layer(data.as_slice(), &root, &options(small)) {
        Err(Error::LayerLimit {
            limit: LayerLimit::Size,
            max: 4096,
            ..
        }) => {}
        other => panic!("expected the size limit, got {other:?}"),
    }
    // The same layer within the limits unpacks.
    let (_base, root) = scratch();
    let exact = UnpackLimits {
        max_layer_entries: 10,
        max_layer_size: data.len() as u64,
        ..UnpackLimits::default()
    };
    unpack_layer(data.as_slice(), &root, &options(exact)).unwrap();
    assert!(root.join("f9").exists());
}

#[test]
fn whiteouts_are_applied() {
    let (_base, root) = scratch();
    for (path, content) in [
        ("keep", "k"),
        ("gone", "g"),
        ("dir/old", "o"),
        ("dir/sub/old2", "o2"),
        ("gonedir/x", "x"),
    ] {
        let p = root.join(path);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, content).unwrap();
    }
    let data = tar_of(|b| {
        raw(b, ".wh.gone", EntryType::Regular, None, b"");
        raw(b, ".wh.gonedir", EntryType::Regular, None, b"");
        raw(b, "dir/", EntryType::Directory, None, b"");
        raw(b, "dir/new", EntryType::Regular, None, b"n");
        raw(b, "dir/.wh..wh..opq", EntryType::Regular, None, b"");
    });
    unpack(&data, &root).unwrap();
    assert_eq!(common::list_files(&root), ["dir", "dir/new", "keep"]);
}

#[test]
fn parent_that_is_a_file_is_rejected() {
    let (_base, root) = scratch();
    let data = tar_of(|b| {
        raw(b, "f", EntryType::Regular, None, b"x");
        raw(b, "f/inner", EntryType::Regular, None, b"y");
    });
    assert_unsafe(unpack(&data, &root), "a parent is not a directory");
}

/// A comparable description of a tree: per path, its kind and metadata, plus hard link groups.
fn describe(
    root: &Path,
    with_dir_mtimes: bool,
) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for rel in common::list_files(root) {
        let path = root.join(&rel);
        let m = fs_err::symlink_metadata(&path).unwrap();
        let mut xattrs: Vec<String> = xattr::list(&path)
            .unwrap()
            .map(|n| {
                let v = xattr::get(&path, &n).unwrap().unwrap_or_default();
                format!("{}={}", n.to_string_lossy(), String::from_utf8_lossy(&v))
            })
            .collect();
        xattrs.sort();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("link->{}", fs_err::read_link(&path).unwrap().display())
        } else if ft.is_file() {
            inodes.entry(m.ino()).or_default().push(rel.clone());
            format!(
                "file:{}",
                String::from_utf8_lossy(&fs_err::read(&path).unwrap())
            )
        } else {
            format!("special:{:o}:{}", m.mode() & 0o170000, m.rdev())
        };
        let mtime = if ft.is_dir() && !with_dir_mtimes {
            String::new()
        } else {
            m.mtime().to_string()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.permissions().mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode={mode:o} uid={} gid={} mtime={mtime} xattrs={xattrs:?}",
                m.uid(),
                m.gid()
            ),
        );
    }
    let links = inodes.into_values().filter(|v| v.len() > 1).collect();
    (out, links)
}

fn write(path: &Path, content: &str) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, content).unwrap();
}

fn set_times(root: &Path) {
    // Children before parents, so directory times stick.
    let mut files = common::list_files(root);
    files.reverse();
    for rel in files {
        let t = filetime::FileTime::from_unix_time(MTIME as i64 + rel.len() as i64, 0);
        filetime::set_symlink_file_times(root.join(rel), t, t).unwrap();
    }
}

/// Builds the overlay upper and the expected merged tree by hand.
fn upper_fixture(base: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let lower = base.join("lower");
    let upper = base.join("upper");
    let expected = base.join("expected");
    // The lower layer.
    write(&lower.join("a.txt"), "a");
    write(&lower.join("d/old1"), "old1");
    write(&lower.join("d/sub/old2"), "old2");
    write(&lower.join("keep/x"), "x");
    write(&lower.join("del/inner"), "inner");
    set_times(&lower);
    // The upper: deletions (whiteouts), an opaque dir, hard links, xattrs, a symlink.
    fs_err::create_dir_all(&upper).unwrap();
    nix::sys::stat::mknod(
        &upper.join("a.txt"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    nix::sys::stat::mknod(
        &upper.join("del"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    write(&upper.join("d/new.txt"), "new");
    xattr::set(upper.join("d"), "trusted.overlay.opaque", b"y").unwrap();
    write(&upper.join("h1"), "linked");
    fs_err::hard_link(upper.join("h1"), upper.join("h2")).unwrap();
    write(&upper.join("x.txt"), "with xattr");
    xattr::set(upper.join("x.txt"), "user.kiln.test", b"value").unwrap();
    fs_err::set_permissions(upper.join("x.txt"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    nix::unistd::chown(&upper.join("h1"), Some(1234.into()), Some(5678.into())).unwrap();
    fs_err::os::unix::fs::symlink("keep/x", upper.join("sym")).unwrap();
    write(&upper.join("keep/y"), "y");
    set_times(&upper);
    // The merged view, made without kiln: lower, then the upper's changes.
    write(&expected.join("d/new.txt"), "new");
    write(&expected.join("h1"), "linked");
    fs_err::hard_link(expected.join("h1"), expected.join("h2")).unwrap();
    write(&expected.join("x.txt"), "with xattr");
    xattr::set(expected.join("x.txt"), "user.kiln.test", b"value").unwrap();
    fs_err::set_permissions(
        expected.join("x.txt"),
        std::fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    nix::unistd::chown(&expected.join("h1"), Some(1234.into()), Some(5678.into())).unwrap();
    fs_err::os::unix::fs::symlink("keep/x", expected.join("sym")).unwrap();
    write(&expected.join("keep/x"), "x");
    write(&expected.join("keep/y"), "y");
    set_times(&expected);
    (lower, upper, expected)
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn overlay_upper_round_trips_through_unpack() {
    if !common::require(
        common::is_root(),
        "root (overlay whiteouts, trusted xattrs)",
    ) {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let (lower, upper, expected) = upper_fixture(base.path());
    let options = LayerOptions {
        compression: Compression::Gzip { level: 6 },
        ..LayerOptions::default()
    };
    let (layer, blob) =
        write_layer(&upper, DiffSource::OverlayUpper, &options, Vec::new()).unwrap();

    // Applied on a copy of the lower: the merged tree.
    let merged = base.path().join("merged");
    copy_tree(&lower, &merged);
    let unpacked = unpack_layer(blob.as_slice(), &merged, &UnpackOptions::default()).unwrap();
    assert_eq!(unpacked.diff_id, layer.diff_id);
    let (got, got_links) = describe(&merged, false);
    let (want, want_links) = describe(&expected, false);
    assert_eq!(got, want);
    assert_eq!(got_links, want_links);
    assert_eq!(got_links.len(), 1);

    // Unpacked in overlay form into an empty directory: the upper itself, whiteouts included.
    let again = base.path().join("again");
    fs_err::create_dir(&again).unwrap();
    let options = UnpackOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..UnpackOptions::default()
    };
    unpack_layer(blob.as_slice(), &again, &options).unwrap();
    assert_eq!(describe(&again, true), describe(&upper, true));
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn random_tree(root: &Path) {
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..60 {
        let len = rng.usize(0..200_000);
        let mut data = vec![0u8; len];
        // Half compressible text, half random bytes.
        if i % 2 == 0 {
            rng.fill(&mut data);
        } else {
            data.iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = b"kiln layer "[j % 11]);
        }
        let path = root.join(format!("d{}/f{i}", i % 5));
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, data).unwrap();
    }
    fs_err::os::unix::fs::symlink("d0/f0", root.join("link")).unwrap();
}

#[test]
fn same_directory_gives_identical_blobs_and_correct_digests() {
    let dir = tempfile::tempdir().unwrap();
    random_tree(dir.path());
    for compression in [
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
        Compression::Uncompressed,
    ] {
        let options = LayerOptions {
            compression,
            source_date_epoch: Some(1_000_000),
            threads: 2,
        };
        let (one, blob1) =
            write_layer(dir.path(), DiffSource::Directory, &options, Vec::new()).unwrap();
        let (two, blob2) =
            write_layer(dir.path(), DiffSource::Directory, &options, Vec::new()).unwrap();
        assert!(blob1 == blob2, "{compression:?}: blobs differ");
        assert_eq!(one, two);
        // Digests computed independently of kiln.
        assert_eq!(
            one.digest.to_string(),
            sha256_hex(&blob1),
            "{compression:?}"
        );
        assert_eq!(one.size, blob1.len() as u64);
        let mut plain = Vec::new();
        match compression {
            Compression::Gzip { .. } => {
                assert_eq!(&blob1[..2], [0x1f, 0x8b]);
                flate2::read::MultiGzDecoder::new(blob1.as_slice())
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            Compression::Zstd { .. } => {
                assert_eq!(&blob1[..4], [0x28, 0xb5, 0x2f, 0xfd]);
                plain = zstd::decode_all(blob1.as_slice()).unwrap();
            }
            Compression::Uncompressed => plain = blob1.clone(),
        }
        assert_eq!(
            one.diff_id.to_string(),
            sha256_hex(&plain),
            "{compression:?}"
        );
        assert_eq!(one.uncompressed_size, plain.len() as u64);
        // Entries sorted, mtimes clamped to SOURCE_DATE_EPOCH.
        let mut archive = tar::Archive::new(plain.as_slice());
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert!(entry.header().mtime().unwrap() <= 1_000_000);
            paths.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(paths.first().map(String::as_str), Some("d0"));
        assert!(paths.contains(&"d4/f59".to_owned()) && paths.contains(&"link".to_owned()));
    }
}

#[test]
fn plain_directory_round_trips() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    fs_err::create_dir(&src).unwrap();
    random_tree(&src);
    fs_err::hard_link(src.join("d1/f1"), src.join("d2/hardlink")).unwrap();
    fs_err::set_permissions(src.join("d3"), std::fs::Permissions::from_mode(0o700)).unwrap();
    set_times(&src);
    let options = LayerOptions {
        compression: Compression::Zstd { level: 3 },
        ..LayerOptions::default()
    };
    let (_, blob) = write_layer(&src, DiffSource::Directory, &options, Vec::new()).unwrap();
    let dest = base.path().join("dest");
    fs_err::create_dir(&dest).unwrap();
    unpack_layer(blob.as_slice(), &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(describe(&dest, true), describe(&src, true));
}

/// A path from raw bytes (a Linux file name need not be UTF-8).
fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// A tar entry: its path bytes, kind (the type flag), link target bytes and content.
type TarEntry = (Vec<u8>, u8, Option<Vec<u8>>, Vec<u8>);

/// The entries of a tar stream, sorted.
fn entries_of(tar: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(tar).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let kind = entry.header().entry_type().as_byte();
        out.push((entry.path_bytes().into_owned(), kind, link, content));
    }
    out.sort();
    out
}

#[test]
fn names_that_are_not_utf8_unpack_and_write_back_byte_for_byte() {
    // Longer than the 100 bytes of a tar header's name field: a GNU long name entry.
    let mut long = b"d\xff/".to_vec();
    long.extend(std::iter::repeat_n(0xe9, 120));
    let data = tar_of(|b| {
        let mut entry = |path: &[u8], kind: EntryType, link: Option<&[u8]>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_mtime(MTIME);
            h.set_uid(0);
            h.set_gid(0);
            match link {
                Some(link) => b
                    .append_link(&mut h, bytes_path(path), bytes_path(link))
                    .unwrap(),
                None => b.append_data(&mut h, bytes_path(path), data).unwrap(),
            }
        };
        entry(b"caf\xe9.txt", EntryType::Regular, None, b"latin-1");
        entry(b"d\xff", EntryType::Directory, None, b"");
        entry(b"d\xff/x\xfe", EntryType::Regular, None, b"below");
        entry(&long, EntryType::Regular, None, b"long");
        entry(b"l\xfd", EntryType::Symlink, Some(b"d\xff/x\xfe"), b"");
        entry(b"h\xfc", EntryType::Link, Some(b"caf\xe9.txt"), b"");
    });
    let (_base, root) = scratch();
    unpack(&data, &root).unwrap();
    assert_eq!(
        fs_err::read(root.join(bytes_path(b"caf\xe9.txt"))).unwrap(),
        b"latin-1"
    );
    assert_eq!(fs_err::read(root.join(bytes_path(&long))).unwrap(), b"long");
    assert_eq!(
        fs_err::read_link(root.join(bytes_path(b"l\xfd"))).unwrap(),
        bytes_path(b"d\xff/x\xfe")
    );
    assert_eq!(
        fs_err::read(root.join(bytes_path(b"h\xfc"))).unwrap(),
        b"latin-1"
    );

    let options = LayerOptions {
        compression: Compression::Uncompressed,
        ..LayerOptions::default()
    };
    let (_, written) = write_layer(&root, DiffSource::Directory, &options, Vec::new()).unwrap();
    // The same paths, kinds, link targets and contents (a hard link names the first path of
    // its file in name order, as the crafted one does).
    assert_eq!(entries_of(&written), entries_of(&data));
    assert!(entries_of(&written).contains(&(
        b"l\xfd".to_vec(),
        EntryType::Symlink.as_byte(),
        Some(b"d\xff/x\xfe".to_vec()),
        Vec::new()
    )));
}

#[test]
fn xattr_names_that_are_not_utf8_unpack_and_refuse_to_be_written_back() {
    // A PAX record `SCHILY.xattr.user.\xff=v`, written by hand: the tar crate takes keys as
    // UTF-8, Go's archive/tar writes what it is given.
    let record = b"25 SCHILY.xattr.user.\xff=v\n";
    assert_eq!(record.len(), 25);
    let data = tar_of(|b| {
        let mut pax = tar::Header::new_ustar();
        pax.set_path("PaxHeaders/f").unwrap();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_mode(0o644);
        pax.set_cksum();
        b.append(&pax, record.as_slice()).unwrap();
        raw(b, "f", EntryType::Regular, None, b"x");
    });
    let (_base, root) = scratch();
    unpack(&data, &root).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"user.\xff");
    match xattr::get(root.join("f"), name) {
        Ok(value) => assert_eq!(value.as_deref(), Some(b"v".as_slice())),
        Err(e) => {
            kiln_testdata::skip(&format!("user xattrs on {}: {e}", root.display()));
            return;
        }
    }
    let err = write_layer(
        &root,
        DiffSource::Directory,
        &LayerOptions::default(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::XattrName { name: n, .. } if n == name),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "extended attribute \"user.\\xFF\" of {}: the name is not UTF-8, which a layer \
             cannot hold",
            root.join("f").display()
        )
    );
}

#[test]
fn recompressed_layers_keep_their_tar_stream() {
    let (_dir, root) = scratch();
    random_tree(&root);
    let gzip = LayerOptions {
        compression: Compression::Gzip { level: 6 },
        ..LayerOptions::default()
    };
    let (original, blob) = write_layer(&root, DiffSource::Directory, &gzip, Vec::new()).unwrap();
    let mut tar = Vec::new();
    kiln_cache::decompress(blob.as_slice())
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    for compression in [
        Compression::Zstd { level: 3 },
        Compression::Uncompressed,
        Compression::Gzip { level: 1 },
    ] {
        let options = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (layer, converted) =
            kiln_cache::recompress_layer(blob.as_slice(), &options, Vec::new()).unwrap();
        assert_eq!(layer.diff_id, original.diff_id, "{compression:?}");
        assert_eq!(layer.uncompressed_size, tar.len() as u64);
        assert_eq!(layer.media_type, compression.media_type());
        assert_eq!(sha256_hex(&converted), layer.digest.to_string());
        assert_eq!(layer.size, converted.len() as u64);
        let mut again = Vec::new();
        kiln_cache::decompress(converted.as_slice())
            .unwrap()
            .read_to_end(&mut again)
            .unwrap();
        assert!(again == tar, "{compression:?}: another tar stream");
    }
}
