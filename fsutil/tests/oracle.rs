//! The resolver against the kernel: on seeded random trees of directories, files and links
//! (relative, absolute, `..`-heavy, loops), [`Root::resolve`] must give what
//! `openat2(RESOLVE_IN_ROOT)` gives — on one plain directory, and (as root) on a read-only
//! overlay mount of several layers with whiteouts and opaque directories.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use kiln_fsutil::{Error, Root, overlay};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

const NAMES: &[&str] = &["a", "b", "c", "d"];
const TREES: u64 = 150;
const QUERIES: usize = 60;

fn random_relative(rng: &mut fastrand::Rng, max: usize) -> String {
    let len = rng.usize(1..=max);
    (0..len)
        .map(|_| match rng.u8(0..10) {
            0..=2 => "..",
            3 => ".",
            _ => NAMES[rng.usize(..NAMES.len())],
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn random_target(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..8) {
        0 => "/".to_owned(),
        1 | 2 => format!("/{}", random_relative(rng, 4)),
        3 => "../../..".to_owned(),
        4 => NAMES[rng.usize(..NAMES.len())].to_owned(),
        _ => {
            let mut t = random_relative(rng, 4);
            if rng.bool() {
                t.push('/');
            }
            t
        }
    }
}

/// What to put in a random tree besides directories, files and links.
#[derive(Clone, Copy)]
struct Extras {
    whiteouts: bool,
    opaque: bool,
}

/// Fills `dir` with a random tree of depth at most 3.
fn random_tree(rng: &mut fastrand::Rng, dir: &Path, depth: usize, extras: Extras) {
    for name in NAMES {
        let path = dir.join(name);
        match rng.u8(0..10) {
            0..=2 if depth < 3 => {
                fs_err::create_dir(&path).unwrap();
                if extras.opaque && rng.u8(0..5) == 0 {
                    xattr::set(&path, overlay::OPAQUE_XATTR, b"y").unwrap();
                }
                random_tree(rng, &path, depth + 1, extras);
            }
            3 | 4 => fs_err::write(&path, path.to_string_lossy().as_bytes()).unwrap(),
            5..=7 => fs_err::os::unix::fs::symlink(random_target(rng), &path).unwrap(),
            8 if extras.whiteouts => nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap(),
            _ => {}
        }
    }
}

fn random_query(rng: &mut fastrand::Rng) -> String {
    let mut q = random_relative(rng, 6);
    if rng.bool() {
        q.insert(0, '/');
    }
    if rng.u8(0..6) == 0 {
        q.push('/');
    }
    q
}

/// A listing of a tree for failure messages: each path with its type, link target, device
/// number and opaque attribute.
fn dump(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs_err::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        if rel.starts_with("merged") {
            continue;
        }
        let kind = if meta.is_dir() {
            let opaque = overlay::has_opaque_xattr(&path, overlay::OPAQUE_XATTR).unwrap();
            let mut names: Vec<_> = fs_err::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            names.reverse();
            stack.extend(names);
            if opaque {
                "dir (opaque)".to_owned()
            } else {
                "dir".to_owned()
            }
        } else if meta.file_type().is_symlink() {
            format!("-> {}", fs_err::read_link(&path).unwrap().display())
        } else if overlay::is_whiteout(&meta) {
            "whiteout".to_owned()
        } else {
            "file".to_owned()
        };
        out.push_str(&format!("  {rel} {kind}\n"));
    }
    out
}

/// The kernel's answer: the opened path, or the errno.
fn kernel(root: &OwnedFd, path: impl AsRef<Path>, follow: bool) -> Result<PathBuf, Errno> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    // With `..` in the path the kernel answers EAGAIN when any rename or mount happened on
    // the system meanwhile (other tests mount all the time): ask again.
    let mut attempts = 0;
    let fd = loop {
        match openat2(root.as_fd(), path.as_ref(), how) {
            Err(Errno::EAGAIN) if attempts < 10_000 => attempts += 1,
            other => break other?,
        }
    };
    use std::os::fd::AsRawFd as _;
    Ok(fs_err::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
}

fn open_dir(path: &Path) -> OwnedFd {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap()
}

/// Checks one query; `mounted` is where the kernel sees the root (the layer itself for a
/// plain root, the overlay mount for layers). Answers the resolved container path when both
/// found something.
fn check(
    root: &Root,
    mounted: &Path,
    fd: &OwnedFd,
    query: &str,
    follow: bool,
    what: &str,
) -> Option<PathBuf> {
    let ours = root.resolve(query, follow);
    let theirs = kernel(fd, query, follow);
    let context = format!("{what}: {query:?} (follow: {follow}): ours {ours:?}, kernel {theirs:?}");
    match theirs {
        Ok(host) => {
            let ours = ours.expect(&context);
            let entry = ours.entry.as_ref().expect(&context);
            let expected = if host == mounted {
                PathBuf::from("/")
            } else {
                Path::new("/").join(host.strip_prefix(mounted).expect(&context))
            };
            assert_eq!(ours.path, expected, "{context}");
            let kernel_meta = fs_err::symlink_metadata(&host).unwrap();
            assert_eq!(
                entry.metadata.file_type(),
                kernel_meta.file_type(),
                "{context}"
            );
            if kernel_meta.is_file() {
                assert_eq!(
                    fs_err::read(&entry.host).unwrap(),
                    fs_err::read(&host).unwrap(),
                    "{context}"
                );
            }
            Some(ours.path)
        }
        Err(Errno::ENOENT) => {
            assert!(ours.expect(&context).entry.is_none(), "{context}");
            None
        }
        Err(Errno::ELOOP) => {
            assert!(matches!(ours, Err(Error::TooManyLinks { .. })), "{context}");
            None
        }
        Err(Errno::ENOTDIR) => {
            assert!(
                matches!(ours, Err(Error::NotADirectory { .. })),
                "{context}"
            );
            None
        }
        Err(other) => panic!("{context}: unexpected kernel error {other}"),
    }
}

#[test]
fn one_layer_resolution_matches_openat2_resolve_in_root() {
    let mut found = 0;
    for seed in 0..TREES {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let base = fs_err::canonicalize(dir.path()).unwrap();
        let extras = Extras {
            whiteouts: false,
            opaque: false,
        };
        random_tree(&mut rng, &base, 0, extras);
        let root = Root::new(&base);
        let fd = open_dir(&base);
        for _ in 0..QUERIES {
            let query = random_query(&mut rng);
            for follow in [true, false] {
                let what = format!("seed {seed}");
                found += usize::from(check(&root, &base, &fd, &query, follow, &what).is_some());
            }
        }
    }
    // The trees are not degenerate: many queries find something.
    assert!(found > 1000, "only {found} queries resolved");
}

#[test]
fn layered_resolution_matches_a_read_only_overlay_mount() {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("mounting an overlay needs root");
        return;
    }
    // A private mount namespace for this thread: the mounts vanish with the test process.
    kiln_testdata::private_mount_namespace();
    let mut found = 0;
    for seed in 0..TREES / 3 {
        let mut rng = fastrand::Rng::with_seed(1000 + seed);
        let dir = tempfile::tempdir().unwrap();
        let base = fs_err::canonicalize(dir.path()).unwrap();
        let layers: Vec<PathBuf> = ["top", "middle", "bottom"]
            .iter()
            .map(|n| base.join(n))
            .collect();
        for (index, layer) in layers.iter().enumerate() {
            fs_err::create_dir(layer).unwrap();
            // Whiteouts and opaque directories only above the bottom layer.
            let lower = index + 1 < layers.len();
            let extras = Extras {
                whiteouts: lower,
                opaque: lower,
            };
            random_tree(&mut rng, layer, 0, extras);
        }
        let merged = base.join("merged");
        fs_err::create_dir(&merged).unwrap();
        let lowerdir = layers
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lowerdir}").as_str()),
        )
        .unwrap();
        let root = Root::layered(layers.clone());
        let fd = open_dir(&merged);
        for _ in 0..QUERIES {
            let query = random_query(&mut rng);
            for follow in [true, false] {
                let what = format!("seed {}", 1000 + seed);
                let Some(path) = check(&root, &merged, &fd, &query, follow, &what) else {
                    continue;
                };
                found += 1;
                // A directory's layers hold exactly what the overlay lists.
                let entry = root.resolve(&path, false).unwrap().entry.unwrap();
                if !entry.metadata.is_dir() {
                    continue;
                }
                let kernel_names: BTreeSet<_> =
                    fs_err::read_dir(merged.join(path.strip_prefix("/").unwrap()))
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        // overlayfs lists the whiteouts of a directory that is not merged,
                        // but a lookup does not find them.
                        .filter(|name| kernel(&fd, path.join(name), false).is_ok())
                        .collect();
                let ours: BTreeSet<_> = entry
                    .layers
                    .iter()
                    .flat_map(|l| fs_err::read_dir(l).unwrap().map(|e| e.unwrap().file_name()))
                    .filter(|name| {
                        root.resolve(path.join(name), false)
                            .unwrap()
                            .entry
                            .is_some()
                    })
                    .collect();
                assert_eq!(
                    ours,
                    kernel_names,
                    "seed {}: {path:?} in\n{}",
                    1000 + seed,
                    dump(&base)
                );
            }
        }
        nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    assert!(found > 300, "only {found} queries resolved");
}
