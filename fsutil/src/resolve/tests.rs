use std::os::unix::ffi::OsStrExt as _;

use super::*;

fn write(path: &Path, text: &str) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, text).unwrap();
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    fs_err::create_dir_all(link.parent().unwrap()).unwrap();
    fs_err::os::unix::fs::symlink(target, link).unwrap();
}

fn read(root: &Root, path: &str) -> Option<String> {
    root.read_file(path)
        .unwrap()
        .map(|b| String::from_utf8(b).unwrap())
}

struct Stack {
    _dir: tempfile::TempDir,
    top: PathBuf,
    middle: PathBuf,
    bottom: PathBuf,
}

fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let [top, middle, bottom] = ["top", "middle", "bottom"].map(|n| dir.path().join(n));
    for layer in [&top, &middle, &bottom] {
        fs_err::create_dir_all(layer).unwrap();
    }
    Stack {
        _dir: dir,
        top,
        middle,
        bottom,
    }
}

impl Stack {
    fn root(&self) -> Root {
        Root::layered(vec![
            self.top.clone(),
            self.middle.clone(),
            self.bottom.clone(),
        ])
    }
}

#[test]
fn absolute_and_relative_links_stay_in_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path();
    fs_err::create_dir_all(root_dir.join("a/b")).unwrap();
    symlink("/a", &root_dir.join("abs"));
    symlink("../../../../etc", &root_dir.join("a/b/up"));
    symlink("b", &root_dir.join("a/rel"));
    symlink("/", &root_dir.join("hostroot"));
    let root = Root::new(root_dir);

    let r = root.resolve("/abs/b", true).unwrap();
    assert_eq!(r.path, Path::new("/a/b"));
    assert_eq!(r.entry.unwrap().host, root_dir.join("a/b"));
    // `..` in a link and in the path stop at the root.
    let r = root.resolve("a/b/up/passwd", true).unwrap();
    assert_eq!(r.path, Path::new("/etc/passwd"));
    assert!(r.entry.is_none());
    assert_eq!(r.host_in(root_dir), root_dir.join("etc/passwd"));
    assert_eq!(
        root.resolve("/../../x", true).unwrap().path,
        Path::new("/x")
    );
    assert_eq!(
        root.resolve("hostroot/../..", true).unwrap().path,
        Path::new("/")
    );
    // The last link is followed only on request.
    assert_eq!(
        root.resolve("/a/rel", true).unwrap().path,
        Path::new("/a/b")
    );
    let link = root.resolve("/a/rel", false).unwrap();
    assert_eq!(link.path, Path::new("/a/rel"));
    assert!(link.entry.unwrap().metadata.file_type().is_symlink());
    // A trailing slash or `.` follows it.
    assert_eq!(
        root.resolve("/a/rel/", false).unwrap().path,
        Path::new("/a/b")
    );
    assert_eq!(
        root.resolve("/a/rel/.", false).unwrap().path,
        Path::new("/a/b")
    );
    // The root itself, by any name.
    let r = root.resolve("hostroot", true).unwrap();
    assert_eq!(r.path, Path::new("/"));
    assert_eq!(r.entry.unwrap().host, root_dir);
}

#[test]
fn a_link_to_a_host_path_never_reaches_the_host() {
    let host = tempfile::tempdir().unwrap();
    write(&host.path().join("secret"), "host secret");
    let dir = tempfile::tempdir().unwrap();
    symlink(host.path(), &dir.path().join("escape"));
    symlink(host.path().join("secret"), &dir.path().join("file"));
    let root = Root::new(dir.path());
    let r = root.resolve("escape/secret", true).unwrap();
    assert_eq!(r.path, host.path().join("secret"));
    assert!(r.entry.is_none(), "the host's file is not in the root");
    assert_eq!(read(&root, "file"), None);
}

#[test]
fn link_loops_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    symlink("loop", &dir.path().join("loop"));
    symlink("b", &dir.path().join("a"));
    symlink("a", &dir.path().join("b"));
    let root = Root::new(dir.path());
    for path in ["/loop", "a/x", "b"] {
        let err = root.resolve(path, true).unwrap_err();
        assert!(matches!(err, Error::TooManyLinks { .. }), "{path}: {err}");
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert!(
            err.to_string()
                .contains("too many levels of symbolic links"),
            "{err}"
        );
    }
    // Not following the last link, a loop is just a link.
    assert!(root.resolve("/loop", false).unwrap().entry.is_some());
    // 40 links are fine, 41 are not.
    let chain = tempfile::tempdir().unwrap();
    fs_err::create_dir(chain.path().join("end")).unwrap();
    for n in 0..41 {
        let target = if n == 0 {
            "end".to_owned()
        } else {
            format!("l{}", n - 1)
        };
        symlink(target, &chain.path().join(format!("l{n}")));
    }
    let root = Root::new(chain.path());
    assert_eq!(root.resolve("l39", true).unwrap().path, Path::new("/end"));
    assert!(matches!(
        root.resolve("l40", true),
        Err(Error::TooManyLinks { .. })
    ));
}

#[test]
fn a_file_on_the_way_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("f"), "x");
    let root = Root::new(dir.path());
    let err = root.resolve("/f/x", true).unwrap_err();
    assert!(
        matches!(&err, Error::NotADirectory { component, .. } if component == Path::new("/f")),
        "{err}"
    );
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    // Missing directories on the way: no entry, the rest resolved lexically.
    let r = root.resolve("/m/n/../o", true).unwrap();
    assert_eq!(r.path, Path::new("/m/o"));
    assert!(r.entry.is_none());
    assert_eq!(r.existing, 0);
    // A path through a missing directory does not exist even when `..` comes back.
    assert!(root.resolve("/m/../f", true).unwrap().entry.is_none());
}

#[test]
fn non_utf8_names_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"caf\xe9");
    fs_err::create_dir(dir.path().join(name)).unwrap();
    write(&dir.path().join(name).join("f"), "latin-1");
    let mut target = b"/".to_vec();
    target.extend_from_slice(name.as_bytes());
    symlink(OsStr::from_bytes(&target), &dir.path().join("link"));
    let root = Root::new(dir.path());
    let r = root.resolve("link/f", true).unwrap();
    assert_eq!(r.path, Path::new("/").join(name).join("f"));
    assert_eq!(read(&root, "link/f").as_deref(), Some("latin-1"));
}

#[test]
fn a_plain_root_has_no_overlay_markers() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a"), "a");
    write(&dir.path().join(".wh.a"), "");
    let plain = Root::new(dir.path());
    assert_eq!(read(&plain, "a").as_deref(), Some("a"));
    assert_eq!(read(&plain, ".wh.a").as_deref(), Some(""));
    let layered = Root::layered(vec![dir.path().to_owned()]);
    assert_eq!(read(&layered, "a"), None);
    assert_eq!(read(&layered, ".wh.a"), None);
}

#[test]
fn topmost_layer_wins_and_directories_merge() {
    let s = stack();
    write(&s.bottom.join("etc/a"), "bottom a");
    write(&s.bottom.join("etc/b"), "bottom b");
    write(&s.middle.join("etc/b"), "middle b");
    write(&s.top.join("etc/c"), "top c");
    fs_err::create_dir_all(s.middle.join("only-middle")).unwrap();
    let root = s.root();
    assert_eq!(read(&root, "/etc/a").as_deref(), Some("bottom a"));
    assert_eq!(read(&root, "/etc/b").as_deref(), Some("middle b"));
    assert_eq!(read(&root, "/etc/c").as_deref(), Some("top c"));
    assert_eq!(read(&root, "/etc/d"), None);
    let etc = root.resolve("/etc", true).unwrap().entry.unwrap();
    assert_eq!(
        etc.layers,
        [
            s.top.join("etc"),
            s.middle.join("etc"),
            s.bottom.join("etc")
        ]
    );
    let only = root.resolve("only-middle", true).unwrap().entry.unwrap();
    assert_eq!(only.layers, [s.middle.join("only-middle")]);
    assert_eq!(only.host, s.middle.join("only-middle"));
    let root_dir = root.resolve("/", true).unwrap().entry.unwrap();
    assert_eq!(
        root_dir.layers,
        [s.top.clone(), s.middle.clone(), s.bottom.clone()]
    );
    let missing = root.resolve("/etc/x/y", true).unwrap();
    assert_eq!(missing.path, Path::new("/etc/x/y"));
    assert_eq!(missing.existing, 1);
    assert!(missing.entry.is_none());
}

#[test]
fn oci_whiteouts_and_opaque_markers_hide_lower_entries() {
    let s = stack();
    write(&s.bottom.join("etc/passwd"), "bottom");
    write(&s.bottom.join("etc/group"), "bottom group");
    write(&s.bottom.join("opt/kept"), "kept");
    write(&s.top.join("etc/.wh.passwd"), "");
    write(&s.middle.join("opt/.wh..wh..opq"), "");
    write(&s.middle.join("opt/new"), "new");
    let root = s.root();
    assert_eq!(read(&root, "/etc/passwd"), None);
    assert_eq!(read(&root, "/etc/group").as_deref(), Some("bottom group"));
    assert_eq!(read(&root, "/opt/kept"), None);
    assert_eq!(read(&root, "/opt/new").as_deref(), Some("new"));
    assert_eq!(read(&root, "/etc/.wh.passwd"), None);
    let opt = root.resolve("/opt", true).unwrap().entry.unwrap();
    assert_eq!(opt.layers, [s.middle.join("opt")]);
}

#[test]
fn links_through_whiteouts_and_opaque_directories_across_layers() {
    let s = stack();
    // A link in the top layer into a directory the middle layer made opaque: the bottom
    // layer's file behind it is gone, the middle one's is seen.
    write(&s.bottom.join("data/old"), "old");
    write(&s.middle.join("data/.wh..wh..opq"), "");
    write(&s.middle.join("data/new"), "new");
    symlink("../data", &s.top.join("bin/d"));
    // A link in the bottom layer whose target the middle layer whited out, and a link the top
    // layer whited out.
    write(&s.bottom.join("real/file"), "real");
    symlink("/real/file", &s.bottom.join("to-real"));
    write(&s.middle.join(".wh.real"), "");
    symlink("/data/new", &s.bottom.join("hidden-link"));
    write(&s.top.join(".wh.hidden-link"), "");
    // A lower link replaced by an upper directory: the directory wins.
    symlink("/data", &s.bottom.join("swap"));
    write(&s.top.join("swap/mine"), "mine");
    let root = s.root();
    assert_eq!(read(&root, "/bin/d/new").as_deref(), Some("new"));
    assert_eq!(read(&root, "/bin/d/old"), None);
    let d = root.resolve("/bin/d", true).unwrap();
    assert_eq!(d.path, Path::new("/data"));
    assert_eq!(d.entry.unwrap().layers, [s.middle.join("data")]);
    assert_eq!(read(&root, "/to-real"), None);
    assert_eq!(
        root.resolve("/to-real", true).unwrap().path,
        Path::new("/real/file")
    );
    assert!(root.resolve("/hidden-link", false).unwrap().entry.is_none());
    assert_eq!(read(&root, "/swap/mine").as_deref(), Some("mine"));
    assert_eq!(
        root.resolve("/swap", true).unwrap().entry.unwrap().layers,
        [s.top.join("swap")]
    );
}

#[test]
fn a_lower_non_directory_stops_the_merge() {
    let s = stack();
    write(&s.bottom.join("data/old"), "old");
    write(&s.middle.join("data"), "a file");
    write(&s.top.join("data/new"), "new");
    let root = s.root();
    assert_eq!(read(&root, "/data/new").as_deref(), Some("new"));
    assert_eq!(read(&root, "/data/old"), None);
}

#[test]
fn device_whiteouts_and_opaque_attributes_need_root() {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("whiteout devices and trusted.* attributes need root");
        return;
    }
    let s = stack();
    write(&s.bottom.join("gone/file"), "gone");
    nix::sys::stat::mknod(
        &s.middle.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    write(&s.bottom.join("opq/old"), "old");
    write(&s.top.join("opq/new"), "new");
    xattr::set(s.top.join("opq"), overlay::OPAQUE_XATTR, b"y").unwrap();
    symlink("/opq/old", &s.top.join("to-old"));
    let root = s.root();
    assert!(root.resolve("/gone", true).unwrap().entry.is_none());
    assert_eq!(read(&root, "/gone/file"), None);
    assert_eq!(read(&root, "/opq/new").as_deref(), Some("new"));
    assert_eq!(read(&root, "/to-old"), None);
    assert_eq!(
        root.resolve("/opq", true).unwrap().entry.unwrap().layers,
        [s.top.join("opq")]
    );
}

/// What a resolution answers, to compare two roots by.
fn answer(root: &Root, path: &str, follow: bool) -> String {
    use std::os::unix::fs::MetadataExt as _;
    match root.resolve(path, follow) {
        Ok(r) => format!(
            "{} {} {:?}",
            r.path.display(),
            r.existing,
            r.entry.map(|e| (e.host, e.layers, e.metadata.ino()))
        ),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn a_remembering_root_answers_as_the_host_does_and_asks_the_host_once() {
    let s = stack();
    write(&s.bottom.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
    write(&s.bottom.join("etc/group"), "root:x:0:\n");
    write(&s.middle.join("etc/.wh.group"), "");
    write(&s.bottom.join("data/old"), "old");
    write(&s.middle.join("data/.wh..wh..opq"), "");
    write(&s.middle.join("data/new"), "new");
    symlink("../data", &s.top.join("bin/d"));
    symlink("/etc/passwd", &s.top.join("pw"));
    symlink("loop", &s.top.join("loop"));
    write(&s.top.join("file"), "");
    let paths = [
        "/",
        "/etc",
        "/etc/passwd",
        "/etc/group",
        "/etc/.wh.group",
        "/data",
        "/data/old",
        "/data/new",
        "/bin/d/new",
        "/bin/d/../etc/passwd",
        "/pw",
        "/loop",
        "/file/x",
        "/missing/../etc/passwd",
        "/proc",
        "/dev/shm",
    ];
    let remembering = s.root().remembering();
    // Twice over: the second round is answered from memory.
    for _ in 0..2 {
        for path in paths {
            for follow in [true, false] {
                assert_eq!(
                    answer(&remembering, path, follow),
                    answer(&s.root(), path, follow),
                    "{path} {follow}"
                );
            }
        }
    }
    // It does not ask again: an entry removed since is still there for it (which is why it
    // is only for layers nothing changes), and gone for a root that asks the host.
    fs_err::remove_file(s.bottom.join("etc/passwd")).unwrap();
    assert!(
        remembering
            .resolve("/etc/passwd", true)
            .unwrap()
            .entry
            .is_some()
    );
    assert!(
        s.root()
            .resolve("/etc/passwd", true)
            .unwrap()
            .entry
            .is_none()
    );
}
