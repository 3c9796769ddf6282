use std::os::unix::fs::{MetadataExt as _, symlink as ln};

use super::copy::unpack_archive;
use super::*;

#[test]
fn archive_members_stay_inside_the_destination() {
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("secret"), "host").unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    {
        let mut b = tar::Builder::new(fs_err::File::create(&archive).unwrap());
        let mut entry = |path: &str, kind: tar::EntryType, link: Option<&Path>, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, path, data).unwrap();
        };
        entry("up", tar::EntryType::Symlink, Some(Path::new("/")), b"");
        entry("hostdir", tar::EntryType::Symlink, Some(host.path()), b"");
        // Written through the member links: they lead to the destination's own `/`.
        entry("up/through", tar::EntryType::Regular, None, b"inside");
        let secret = host.path().join("secret");
        let secret = secret.strip_prefix("/").unwrap().to_str().unwrap();
        entry("hostdir/written", tar::EntryType::Regular, None, b"x");
        entry(
            "hard",
            tar::EntryType::Link,
            Some(Path::new(&format!("/{secret}"))),
            b"",
        );
        b.finish().unwrap();
    }
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("dest");
    let err = unpack_archive(&archive, root.path(), &dest, None).unwrap_err();
    assert!(err.to_string().contains("hard link"), "{err}");
    assert_eq!(
        fs_err::read_to_string(dest.join("through")).unwrap(),
        "inside"
    );
    // `hostdir` led to a missing directory inside the destination, made there.
    let inside = dest.join(host.path().strip_prefix("/").unwrap());
    assert_eq!(fs_err::read_to_string(inside.join("written")).unwrap(), "x");
    assert!(!host.path().join("written").exists());
    assert!(!dest.join("hard").exists());
    assert_eq!(
        fs_err::read_to_string(host.path().join("secret")).unwrap(),
        "host"
    );
}

fn tree() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs_err::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn copy_action(src: &str, dest: &str) -> pb::FileActionCopy {
    pb::FileActionCopy {
        src: src.into(),
        dest: dest.into(),
        mode: -1,
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        timestamp: -1,
        ..Default::default()
    }
}

#[test]
fn mkdir_with_parents_sets_mode_owner_and_time_on_new_dirs_only() {
    let root = tree();
    fs_err::create_dir(root.path().join("a")).unwrap();
    fs_err::set_permissions(
        root.path().join("a"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let action = pb::FileActionMkDir {
        path: "/a/b/c".into(),
        mode: 0o751,
        make_parents: true,
        owner: None,
        timestamp: 1_000_000_000 * 86_400,
    };
    mkdir(root.path(), &action, Some(Owner { uid: 12, gid: 34 })).unwrap();
    let c = root.path().join("a/b/c");
    assert_eq!(mode(&c), 0o751);
    assert_eq!(mode(&root.path().join("a/b")), 0o751);
    assert_eq!(
        mode(&root.path().join("a")),
        0o700,
        "an existing parent is untouched"
    );
    let meta = fs_err::metadata(&c).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (12, 34));
    assert_eq!(meta.mtime(), 86_400);
    assert_eq!(
        fs_err::metadata(root.path().join("a/b")).unwrap().mtime(),
        86_400
    );
    // Without parents, an existing directory is fine and a missing parent is an error.
    let again = pb::FileActionMkDir {
        make_parents: false,
        ..action.clone()
    };
    mkdir(root.path(), &again, None).unwrap();
    let orphan = pb::FileActionMkDir {
        path: "/x/y".into(),
        ..again
    };
    assert!(matches!(
        mkdir(root.path(), &orphan, None),
        Err(FileError::Io { .. })
    ));
}

#[test]
fn mkfile_writes_data_and_mode() {
    let root = tree();
    let action = pb::FileActionMkFile {
        path: "/f".into(),
        mode: 0o640,
        data: b"hello\n".to_vec(),
        owner: None,
        timestamp: -1,
    };
    mkfile(root.path(), &action, None).unwrap();
    assert_eq!(fs_err::read(root.path().join("f")).unwrap(), b"hello\n");
    assert_eq!(mode(&root.path().join("f")), 0o640);
}

#[test]
fn paths_through_links_stay_inside_the_root() {
    let outside = tree();
    let root = tree();
    ln(outside.path(), root.path().join("escape")).unwrap();
    ln("/../../..", root.path().join("up")).unwrap();
    let action = pb::FileActionMkFile {
        path: "/up/escape-file".into(),
        mode: 0o644,
        data: b"x".to_vec(),
        owner: None,
        timestamp: -1,
    };
    mkfile(root.path(), &action, None).unwrap();
    assert!(root.path().join("escape-file").is_file());
    // An absolute link to a host directory is resolved inside the root, not on the host.
    let action = pb::FileActionMkDir {
        path: "/escape/sub".into(),
        mode: 0o755,
        make_parents: true,
        owner: None,
        timestamp: -1,
    };
    mkdir(root.path(), &action, None).unwrap();
    assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn rm_removes_links_not_their_targets_and_reports_missing() {
    let root = tree();
    fs_err::create_dir(root.path().join("keep")).unwrap();
    fs_err::write(root.path().join("keep/file"), "k").unwrap();
    ln("/keep", root.path().join("link")).unwrap();
    for name in ["a.txt", "b.txt", "c.log"] {
        fs_err::write(root.path().join(name), name).unwrap();
    }
    let rm_action = |path: &str, wildcard: bool, allow_not_found: bool| pb::FileActionRm {
        path: path.into(),
        allow_not_found,
        allow_wildcard: wildcard,
    };
    rm(root.path(), &rm_action("/link", false, false)).unwrap();
    assert!(root.path().join("keep/file").is_file());
    assert!(scoped::lstat(&root.path().join("link")).unwrap().is_none());
    rm(root.path(), &rm_action("/*.txt", true, false)).unwrap();
    assert!(!root.path().join("a.txt").exists() && !root.path().join("b.txt").exists());
    assert!(root.path().join("c.log").exists());
    let err = rm(root.path(), &rm_action("/nope", false, false)).unwrap_err();
    assert_eq!(err.to_string(), "\"/nope\": not found");
    rm(root.path(), &rm_action("/nope", false, true)).unwrap();
    rm(root.path(), &rm_action("/keep", false, false)).unwrap();
    assert!(!root.path().join("keep").exists());
}

#[test]
fn wildcards_copy_and_remove_names_that_are_not_utf8_as_their_bytes() {
    let name = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
    let src = tree();
    let s = src.path();
    fs_err::write(s.join(name(b"caf\xe9")), "e9").unwrap();
    fs_err::write(s.join(name(b"caf\xe8")), "e8").unwrap();
    fs_err::create_dir(s.join(name(b"d\xff"))).unwrap();
    fs_err::write(s.join(name(b"d\xff/in")), "in").unwrap();
    ln(name(b"d\xff"), s.join("link")).unwrap();
    let dest = tree();
    let d = dest.path();
    copy(s, d, &copy_action("/caf*", "/out/"), None).unwrap();
    assert_eq!(fs_err::read(d.join(name(b"out/caf\xe9"))).unwrap(), b"e9");
    assert_eq!(fs_err::read(d.join(name(b"out/caf\xe8"))).unwrap(), b"e8");
    // A link matched by a wildcard and followed leads to its target's bytes.
    copy(s, d, &copy_action("/lin?", "/through/"), None).unwrap();
    assert_eq!(fs_err::read(d.join("through/in")).unwrap(), b"in");
    let rm_action = pb::FileActionRm {
        path: "/out/caf?".into(),
        allow_not_found: false,
        allow_wildcard: true,
    };
    rm(d, &rm_action).unwrap();
    assert_eq!(fs_err::read_dir(d.join("out")).unwrap().count(), 0);
    assert_eq!(
        resolve_in_root(s, Path::new("link")).unwrap(),
        Some(name(b"d\xff"))
    );
}

#[test]
fn copy_follows_docker_destination_rules() {
    let src = tree();
    let s = src.path();
    fs_err::create_dir_all(s.join("dir/sub")).unwrap();
    fs_err::write(s.join("dir/one"), "1").unwrap();
    fs_err::write(s.join("dir/sub/two"), "2").unwrap();
    fs_err::write(s.join("file"), "f").unwrap();
    fs_err::set_permissions(s.join("file"), std::fs::Permissions::from_mode(0o741)).unwrap();
    ln("file", s.join("link")).unwrap();
    let dest = tree();
    let d = dest.path();

    // A file into a path ending in `/`: created as a directory, the file inside it.
    copy(s, d, &copy_action("/file", "/out/"), None).unwrap();
    assert_eq!(fs_err::read_to_string(d.join("out/file")).unwrap(), "f");
    assert_eq!(mode(&d.join("out/file")), 0o741);
    // A file onto a new name.
    copy(s, d, &copy_action("/file", "/renamed"), None).unwrap();
    assert_eq!(fs_err::read_to_string(d.join("renamed")).unwrap(), "f");
    // A directory's contents (dirCopyContents), merged into an existing directory.
    copy(s, d, &copy_action("/dir", "/out"), None).unwrap();
    assert_eq!(fs_err::read_to_string(d.join("out/sub/two")).unwrap(), "2");
    assert_eq!(fs_err::read_to_string(d.join("out/one")).unwrap(), "1");
    // Without dirCopyContents, the directory itself goes into an existing directory.
    let whole = pb::FileActionCopy {
        dir_copy_contents: false,
        ..copy_action("/dir", "/out")
    };
    copy(s, d, &whole, None).unwrap();
    assert_eq!(
        fs_err::read_to_string(d.join("out/dir/sub/two")).unwrap(),
        "2"
    );
    // A followed link copies the target's content under the link's name.
    copy(s, d, &copy_action("/link", "/followed"), None).unwrap();
    assert!(
        fs_err::symlink_metadata(d.join("followed"))
            .unwrap()
            .is_file()
    );
    let kept = pb::FileActionCopy {
        follow_symlink: false,
        ..copy_action("/link", "/kept")
    };
    copy(s, d, &kept, None).unwrap();
    assert_eq!(
        fs_err::read_link(d.join("kept")).unwrap(),
        Path::new("file")
    );
}

#[test]
fn copy_wildcards_owner_mode_and_time() {
    let src = tree();
    let s = src.path();
    for name in ["a.txt", "b.txt", "c.md"] {
        fs_err::write(s.join(name), name).unwrap();
    }
    let dest = tree();
    let d = dest.path();
    let action = pb::FileActionCopy {
        mode: 0o600,
        timestamp: 5_000_000_000,
        ..copy_action("/*.txt", "/t/")
    };
    copy(s, d, &action, Some(Owner { uid: 7, gid: 8 })).unwrap();
    let mut names: Vec<_> = fs_err::read_dir(d.join("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt"]);
    let meta = fs_err::metadata(d.join("t/a.txt")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777, meta.mtime()),
        (7, 8, 0o600, 5)
    );
    // No match: fine when empty wildcards are allowed, an error otherwise.
    copy(s, d, &copy_action("/*.none", "/t/"), None).unwrap();
    let strict = pb::FileActionCopy {
        allow_empty_wildcard: false,
        ..copy_action("/*.none", "/t/")
    };
    let err = copy(s, d, &strict, None).unwrap_err();
    assert_eq!(err.to_string(), "\"/*.none\": not found");
    let err = copy(s, d, &copy_action("/missing", "/t/"), None).unwrap_err();
    assert_eq!(err.to_string(), "\"/missing\": not found");
}

#[test]
fn copy_keeps_source_modes_and_gives_made_directories_a_numeric_mode() {
    let src = tree();
    let s = src.path();
    fs_err::write(s.join("ro"), "r").unwrap();
    fs_err::set_permissions(s.join("ro"), std::fs::Permissions::from_mode(0o444)).unwrap();
    fs_err::create_dir(s.join("dir")).unwrap();
    fs_err::write(s.join("dir/f"), "f").unwrap();
    let dest = tree();
    let d = dest.path();
    fs_err::create_dir(d.join("old")).unwrap();
    fs_err::set_permissions(d.join("old"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // No mode: the source's bits, parents made 0755.
    copy(s, d, &copy_action("/ro", "/plain/sub/ro"), None).unwrap();
    assert_eq!(mode(&d.join("plain/sub/ro")), 0o444);
    assert_eq!(mode(&d.join("plain/sub")), 0o755);
    // A numeric mode: the file and every directory the copy makes get it; an existing
    // parent keeps its own.
    let chmod = |src: &str, dest: &str| pb::FileActionCopy {
        mode: 0o710,
        ..copy_action(src, dest)
    };
    copy(s, d, &chmod("/ro", "/old/new/parent/file"), None).unwrap();
    assert_eq!(mode(&d.join("old/new/parent/file")), 0o710);
    assert_eq!(mode(&d.join("old/new/parent")), 0o710);
    assert_eq!(mode(&d.join("old/new")), 0o710);
    assert_eq!(mode(&d.join("old")), 0o700);
    // A directory's contents into a new directory: that directory gets the mode too.
    copy(s, d, &chmod("/dir", "/made/"), None).unwrap();
    assert_eq!(mode(&d.join("made")), 0o710);
    assert_eq!(mode(&d.join("made/f")), 0o710);
}

#[test]
fn copy_follows_matched_links_under_their_own_names() {
    let src = tree();
    let s = src.path();
    fs_err::create_dir_all(s.join("sub/dir")).unwrap();
    fs_err::write(s.join("sub/file"), "f").unwrap();
    fs_err::write(s.join("sub/dir/g"), "g").unwrap();
    ln("file", s.join("sub/lfile")).unwrap();
    ln("dir", s.join("sub/ldir")).unwrap();
    let dest = tree();
    let d = dest.path();
    // A wildcard: a link to a file is copied as that file under the link's name; a link to a
    // directory has the directory's contents copied, as any directory source.
    copy(s, d, &copy_action("/sub/l*", "/dest/"), None).unwrap();
    let mut names: Vec<_> = fs_err::read_dir(d.join("dest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["g", "lfile"]);
    assert!(
        fs_err::symlink_metadata(d.join("dest/lfile"))
            .unwrap()
            .is_file()
    );
    assert_eq!(fs_err::read_to_string(d.join("dest/lfile")).unwrap(), "f");
    // A link named without a wildcard keeps its name too.
    copy(s, d, &copy_action("/sub/lfile", "/one/"), None).unwrap();
    assert_eq!(fs_err::read_to_string(d.join("one/lfile")).unwrap(), "f");
}

#[test]
fn copy_symbolic_mode_applies_to_each_entry_own_mode() {
    let src = tree();
    let s = src.path();
    fs_err::create_dir(s.join("dir")).unwrap();
    fs_err::write(s.join("dir/plain"), "p").unwrap();
    fs_err::write(s.join("dir/tool"), "t").unwrap();
    let set = |p: &str, m: u32| {
        fs_err::set_permissions(s.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("dir/plain", 0o640);
    set("dir/tool", 0o750);
    set("dir", 0o700);
    let dest = tree();
    let d = dest.path();
    let action = pb::FileActionCopy {
        mode: 0,
        mode_str: "a+X,g-w,o+r".into(),
        ..copy_action("/dir", "/out")
    };
    copy(s, d, &action, None).unwrap();
    // X: execute only where some execute bit was set, and on directories.
    assert_eq!(mode(&d.join("out/plain")), 0o644);
    assert_eq!(mode(&d.join("out/tool")), 0o755);
    // The sources are untouched.
    assert_eq!(mode(&s.join("dir/tool")), 0o750);
    let bad = pb::FileActionCopy {
        mode_str: "u+q".into(),
        ..copy_action("/dir", "/bad")
    };
    let err = copy(s, d, &bad, None).unwrap_err();
    assert_eq!(err.to_string(), "invalid mode \"u+q\": invalid syntax");
    assert!(!d.join("bad").exists());
}

#[test]
fn copy_of_the_root_into_a_directory_copies_its_contents() {
    let src = tree();
    let s = src.path();
    fs_err::write(s.join("top"), "t").unwrap();
    let dest = tree();
    let d = dest.path();
    let action = pb::FileActionCopy {
        dir_copy_contents: false,
        follow_symlink: false,
        allow_wildcard: false,
        ..copy_action("/", "/dst/")
    };
    copy(s, d, &action, None).unwrap();
    assert_eq!(fs_err::read_to_string(d.join("dst/top")).unwrap(), "t");
    let names: Vec<_> = fs_err::read_dir(d.join("dst"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["top"]);
}

#[test]
fn copy_required_paths_must_exist() {
    let src = tree();
    let s = src.path();
    fs_err::create_dir_all(s.join("a/b/c")).unwrap();
    let dest = tree();
    let d = dest.path();
    let ok = pb::FileActionCopy {
        include_patterns: vec!["b/c".into()],
        required_paths: vec!["/a/b/c".into()],
        ..copy_action("/a", "/out/")
    };
    copy(s, d, &ok, None).unwrap();
    let missing = pb::FileActionCopy {
        required_paths: vec!["/a/b/nope".into()],
        ..copy_action("/a", "/other/")
    };
    let err = copy(s, d, &missing, None).unwrap_err();
    // BuildKit's wording: `"/a/b/nope": not found`.
    assert_eq!(err.to_string(), "\"/a/b/nope\": not found");
    assert!(!d.join("other").exists());
}

#[test]
fn copy_keeps_hard_links_together() {
    let src = tree();
    let s = src.path();
    fs_err::create_dir(s.join("d")).unwrap();
    fs_err::write(s.join("d/a"), "same").unwrap();
    fs_err::hard_link(s.join("d/a"), s.join("d/b")).unwrap();
    let dest = tree();
    copy(s, dest.path(), &copy_action("/d", "/x"), None).unwrap();
    let a = fs_err::metadata(dest.path().join("x/a")).unwrap();
    let b = fs_err::metadata(dest.path().join("x/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn owners_by_name_come_from_the_roots_passwd_and_group() {
    let root = tree();
    fs_err::create_dir(root.path().join("etc")).unwrap();
    fs_err::write(
        root.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
    let by_name = |name: &str| pb::UserOpt {
        user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: name.into(),
            input: 0,
        })),
    };
    let root_of = |i: i64| (i == 0).then(|| root.path().to_owned());
    let opt = pb::ChownOpt {
        user: Some(by_name("app")),
        group: None,
    };
    assert_eq!(
        resolve_owner(Some(&opt), root_of).unwrap(),
        Some(Owner {
            uid: 1000,
            gid: 1001
        })
    );
    let opt = pb::ChownOpt {
        user: Some(by_name("app")),
        group: Some(by_name("staff")),
    };
    assert_eq!(
        resolve_owner(Some(&opt), root_of).unwrap(),
        Some(Owner { uid: 1000, gid: 50 })
    );
    let opt = pb::ChownOpt {
        user: Some(by_name("ghost")),
        group: None,
    };
    let err = resolve_owner(Some(&opt), root_of).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user \"ghost\" in /etc/passwd"
    );
    let opt = pb::ChownOpt {
        user: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(33)),
        }),
        group: None,
    };
    assert_eq!(
        resolve_owner(Some(&opt), root_of).unwrap(),
        Some(Owner { uid: 33, gid: 33 })
    );
}
