//! Snapshot mounts: merged views of snapshots for in-process work (the solver's file and merge
//! ops, seeded cache mounts, the local and tar exporters).
//!
//! A snapshot is a stack of layer directories in overlayfs form, so reading or changing it as
//! one tree needs an overlay mount. The mounts are made on a short-lived thread that first
//! moves into a mount namespace of its own (`unshare(CLONE_NEWNS)`, which also gives it its
//! own working directory): they are invisible to the host and to the rest of the process, and
//! they vanish with the thread even if the work panics, fails or the process is killed. Views
//! that need no mount at all are used in place.
//!
//! [`Store::with_snapshot`] is the read-only case for a committed snapshot chain: it holds the
//! chain in the store's lease while mounted, so garbage collection cannot remove it meanwhile.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::Error;
use crate::lease::Held;
use crate::store::Store;

/// One merged view to mount.
#[derive(Clone, Debug)]
pub struct View {
    /// Read-only layer directories, topmost first.
    pub lowers: Vec<PathBuf>,
    /// A writable upper and work directory; `None` makes the view read-only.
    pub writable: Option<(PathBuf, PathBuf)>,
}

/// Mounts each view in a private mount namespace on a new thread, runs `work` with their
/// mount points (in the order of `views`), and unmounts them.
pub fn with_views<T: Send>(
    scratch: &Path,
    views: &[View],
    work: impl FnOnce(&[PathBuf]) -> T + Send,
) -> io::Result<T> {
    // Views that need no mount (a writable layer with nothing below it, the usual case for
    // file ops on scratch) are used in place: no thread, namespace or scratch directories.
    let direct: Option<Vec<PathBuf>> = views
        .iter()
        .map(|view| match (&view.writable, view.lowers.as_slice()) {
            (Some((upper, _)), []) => Some(upper.clone()),
            _ => None,
        })
        .collect();
    if let Some(points) = direct {
        return Ok(work(&points));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
                let base = tempfile::Builder::new()
                    .prefix("view-")
                    .tempdir_in(scratch)?;
                let mut points = Vec::with_capacity(views.len());
                let mut mounted = Vec::new();
                for (i, view) in views.iter().enumerate() {
                    let point = base.path().join(i.to_string());
                    let empty = base.path().join(format!("{i}.empty"));
                    fs_err::create_dir(&point)?;
                    fs_err::create_dir(&empty)?;
                    match plan(view, &empty) {
                        Plan::Dir(dir) => points.push(dir),
                        Plan::Overlay { options, readonly } => {
                            if let Some((_, work)) = &view.writable {
                                // Made only now: writers on an empty parent need none.
                                fs_err::create_dir_all(work)?;
                            }
                            mount_overlay(view, &empty, &point, &options, readonly).map_err(
                                |e| {
                                    io::Error::other(format!(
                                        "mounting overlay at {}: {e}",
                                        point.display()
                                    ))
                                },
                            )?;
                            mounted.push(point.clone());
                            points.push(point);
                        }
                    }
                }
                let result = work(&points);
                for point in mounted.iter().rev() {
                    umount2(point, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
                }
                Ok(result)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Store {
    /// Mounts the committed snapshot `key` with its ancestors read-only as one merged tree
    /// (`None`: the empty tree), runs `work` with the tree's root, and unmounts it. The chain is
    /// held in the store's lease meanwhile; a mount failure is an error, and nothing stays
    /// mounted after `work` returns, fails or panics.
    pub fn with_snapshot<T: Send>(
        &self,
        key: Option<&str>,
        work: impl FnOnce(&Path) -> T + Send,
    ) -> Result<T, Error> {
        let _lease = self.lease()?;
        let lowers = match key {
            Some(key) => {
                self.holder.hold(&[Held::Snapshot(key.to_owned())])?;
                self.lowers(key)?
            }
            None => Vec::new(),
        };
        let view = View {
            lowers,
            writable: None,
        };
        Ok(with_views(&self.scratch_dir()?, &[view], |points| {
            work(&points[0])
        })?)
    }
}

/// Mounts `view` at `point`: with `options` through `mount(2)` where they fit in a page,
/// otherwise layer by layer through the new mount API.
fn mount_overlay(
    view: &View,
    empty: &Path,
    point: &Path,
    options: &str,
    readonly: bool,
) -> io::Result<()> {
    if options.len() <= kiln_fsutil::MOUNT_DATA_LIMIT {
        let flags = if readonly {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        return mount(
            Some("overlay"),
            point,
            Some("overlay"),
            flags,
            Some(options),
        )
        .map_err(io::Error::from);
    }
    let c = |path: &Path| {
        CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} holds a NUL byte", path.display()),
            )
        })
    };
    let mut lowers = view
        .lowers
        .iter()
        .map(|l| c(l))
        .collect::<io::Result<Vec<_>>>()?;
    if lowers.len() == 1 && view.writable.is_none() {
        lowers.push(c(empty)?);
    }
    let writable = match &view.writable {
        Some((upper, work)) => Some((c(upper)?, c(work)?)),
        None => None,
    };
    kiln_fsutil::mount_layers(
        &c(point)?,
        &lowers,
        writable.as_ref().map(|(u, w)| (u.as_c_str(), w.as_c_str())),
        kiln_fsutil::MountAttributes {
            readonly,
            nodev: false,
        },
    )
    .map_err(io::Error::other)
}

enum Plan {
    /// No mount needed: the directory is the view.
    Dir(PathBuf),
    /// An overlay mount with these options.
    Overlay { options: String, readonly: bool },
}

fn plan(view: &View, empty: &Path) -> Plan {
    match (&view.writable, view.lowers.as_slice()) {
        // Nothing below a writable upper: the upper is the whole tree.
        (Some((upper, _)), []) => Plan::Dir(upper.clone()),
        (None, []) => Plan::Dir(empty.to_owned()),
        (Some((upper, work)), lowers) => Plan::Overlay {
            options: format!(
                "lowerdir={},upperdir={},workdir={}",
                join(lowers),
                escape(upper),
                escape(work)
            ),
            readonly: false,
        },
        // overlayfs needs two lowers when it has no upper.
        (None, [only]) => Plan::Overlay {
            options: format!("lowerdir={}:{}", escape(only), escape(empty)),
            readonly: true,
        },
        (None, lowers) => Plan::Overlay {
            options: format!("lowerdir={}", join(lowers)),
            readonly: true,
        },
    }
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| escape(d)).collect::<Vec<_>>().join(":")
}

/// Escapes the characters overlayfs's option parser treats specially.
fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a test that mounts `what` must be skipped (not root), saying why.
    fn skip_unless_root(what: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return false;
        }
        kiln_testdata::skip(&format!("{what} need root"));
        true
    }

    #[test]
    fn overlay_views_merge_layers_and_write_to_the_upper_only() {
        if skip_unless_root("overlay views") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["lower1", "lower2", "upper", "work", "scratch"] {
            fs_err::create_dir(d.join(sub)).unwrap();
        }
        fs_err::write(d.join("lower1/a"), "bottom").unwrap();
        fs_err::write(d.join("lower2/a"), "top").unwrap();
        fs_err::write(d.join("lower1/b"), "b").unwrap();
        let writable = View {
            lowers: vec![d.join("lower2"), d.join("lower1")],
            writable: Some((d.join("upper"), d.join("work"))),
        };
        let readonly = View {
            lowers: vec![d.join("lower1")],
            writable: None,
        };
        let seen = with_views(&d.join("scratch"), &[writable, readonly], |points| {
            fs_err::write(points[0].join("new"), "n").unwrap();
            let a = fs_err::read_to_string(points[0].join("a")).unwrap();
            let ro = fs_err::read_to_string(points[1].join("a")).unwrap();
            let ro_write = fs_err::write(points[1].join("x"), "x").is_err();
            (a, ro, ro_write)
        })
        .unwrap();
        assert_eq!(seen, ("top".to_owned(), "bottom".to_owned(), true));
        assert_eq!(fs_err::read_to_string(d.join("upper/new")).unwrap(), "n");
        assert!(!d.join("lower2/new").exists());
        let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&*d.to_string_lossy()),
            "no mount is left behind"
        );
        assert_eq!(fs_err::read_dir(d.join("scratch")).unwrap().count(), 0);
    }

    #[test]
    fn views_deeper_than_a_page_of_options_mount_layer_by_layer() {
        if skip_unless_root("deep overlay views") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lowers: Vec<PathBuf> = (0..200)
            .map(|i| d.join(format!("{i:03}-{}", "s".repeat(64))))
            .collect();
        for (i, lower) in lowers.iter().enumerate() {
            fs_err::create_dir(lower).unwrap();
            fs_err::write(lower.join(format!("f{i}")), "x").unwrap();
        }
        for sub in ["upper", "work", "scratch"] {
            fs_err::create_dir(d.join(sub)).unwrap();
        }
        let writable = View {
            lowers: lowers.clone(),
            writable: Some((d.join("upper"), d.join("work"))),
        };
        let readonly = View {
            lowers,
            writable: None,
        };
        let seen = with_views(&d.join("scratch"), &[writable, readonly], |points| {
            fs_err::write(points[0].join("new"), "n").unwrap();
            let count = |p: &Path| fs_err::read_dir(p).unwrap().count();
            let ro_write = fs_err::write(points[1].join("x"), "x").is_err();
            (count(&points[0]), count(&points[1]), ro_write)
        })
        .unwrap();
        assert_eq!(seen, (201, 200, true));
        assert_eq!(fs_err::read_to_string(d.join("upper/new")).unwrap(), "n");
    }

    #[test]
    fn a_snapshot_chain_mounts_read_only_as_one_tree_and_is_unmounted_after() {
        if skip_unless_root("snapshot mounts") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let base = store.prepare("base-active", None).unwrap();
        fs_err::write(base.upper.join("a"), "bottom").unwrap();
        fs_err::write(base.upper.join("b"), "b").unwrap();
        store.commit("base-active", "base").unwrap();
        let top = store.prepare("top-active", Some("base")).unwrap();
        fs_err::write(top.upper.join("a"), "top").unwrap();
        store.commit("top-active", "top").unwrap();
        let (seen, mounted_at) = store
            .with_snapshot(Some("top"), |tree| {
                let a = fs_err::read_to_string(tree.join("a")).unwrap();
                let b = fs_err::read_to_string(tree.join("b")).unwrap();
                let refused = fs_err::write(tree.join("new"), "x").is_err();
                ((a, b, refused), tree.to_owned())
            })
            .unwrap();
        assert_eq!(seen, ("top".to_owned(), "b".to_owned(), true));
        let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(&*mounted_at.to_string_lossy()));
        // The empty result is an empty tree; a missing snapshot is an error.
        let count = store
            .with_snapshot(None, |tree| fs_err::read_dir(tree).unwrap().count())
            .unwrap();
        assert_eq!(count, 0);
        assert!(store.with_snapshot(Some("missing"), |_| ()).is_err());
    }
}
